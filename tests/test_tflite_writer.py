"""The .tflite file itself: format, versions, signature, metadata, padding, float I/O, errors, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from test_tflite_util import Prog, f32, litert

from edgeq.backends.tflite import activation_range, describe, read_metadata, write_tflite
from edgeq.backends.tflite.padding import plan_padding
from edgeq.errors import ConfigError, ModelError, UnsupportedError
from edgeq.lower import kernels as K
from edgeq.lower import options as O
from edgeq.lower import program as P
from edgeq.lower.reference import run


def conv_program(
    seed: int = 0, *, pad=(1, 1, 1, 1), stride=(1, 1), act=P.FusedActivation.RELU6, depthwise: bool = False
) -> P.Program:
    g = Prog(seed)
    x = g.input((1, 8, 8, 4))
    in_qp = g.tensors[x].qparams
    out_qp = g.qp(0.02, 0.05, zp=0) if act is P.FusedActivation.NONE else P.QParams.per_tensor(6 / 255, -128)
    if depthwise:
        w, w_qp = g.weights((1, 3, 3, 4), axis=3)
        opts = P.DepthwiseConv2DOptions(
            stride, (1, 1), pad, 1, O.activation(act, out_qp), O.conv_requant(in_qp, w_qp, out_qp, 4)
        )
        kind, cout = P.OpKind.DEPTHWISE_CONV_2D, 4
    else:
        w, w_qp = g.weights((6, 3, 3, 4), axis=0)
        opts = P.Conv2DOptions(
            stride, (1, 1), pad, O.activation(act, out_qp), O.conv_requant(in_qp, w_qp, out_qp, 6)
        )
        kind, cout = P.OpKind.CONV_2D, 6
    oh = (8 + pad[0] + pad[2] - 3) // stride[0] + 1
    ow = (8 + pad[1] + pad[3] - 3) // stride[1] + 1
    g.op(kind, [x, w, g.bias(cout, in_qp, w_qp)], (1, oh, ow, cout), opts, out_qp)
    program = g.build()
    binding = P.IOBinding(x, "images", (1, 4, 8, 8), (0, 2, 3, 1))
    return P.Program(program.tensors, program.ops, program.inputs, program.outputs, (binding,))


def test_flatbuffer_basics():
    data = write_tflite(conv_program())
    assert data[4:8] == b"TFL3"
    model = fb.Model.GetRootAs(data, 0)
    assert model.Version() == 3
    assert model.Buffers(0).DataLength() == 0  # the empty sentinel
    for i in range(1, model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, f"buffer {i} data starts at {start}, not 16-byte aligned"
    s = describe(data)
    assert s.operator_codes == (("CONV_2D", 3),)
    codes = fb.ModelT.InitFromPackedBuf(bytearray(data), 0).operatorCodes
    assert codes[0].deprecatedBuiltinCode == codes[0].builtinCode == fb.BuiltinOperator.CONV_2D
    assert s.metadata["min_runtime_version"] == b"1.14.0".ljust(16, b"\0")
    assert s.signatures == {"serving_default": {"inputs": ("images",), "outputs": ("out0",)}}


def test_per_channel_weight_and_bias_quantization():
    for depthwise, dim in ((False, 0), (True, 3)):
        program = conv_program(depthwise=depthwise)
        m = fb.ModelT.InitFromPackedBuf(bytearray(write_tflite(program)), 0)
        tensors = {t.name.decode(): t for t in m.subgraphs[0].tensors}
        w, b, x = tensors["w"], tensors["b"], tensors["in0"]
        assert w.type == fb.TensorType.INT8 and w.quantization.quantizedDimension == dim
        assert list(w.quantization.zeroPoint) == [0] * len(w.quantization.scale)
        assert b.type == fb.TensorType.INT32
        want = np.float32(x.quantization.scale[0]) * np.asarray(w.quantization.scale, np.float32)
        np.testing.assert_array_equal(np.asarray(b.quantization.scale, np.float32), want)
        assert list(np.asarray(w.shape)) == list(program.tensors["w"].shape)


def test_identical_inputs_give_identical_bytes():
    a = write_tflite(conv_program(3), metadata={"labels": ["a", "b"]})
    assert a == write_tflite(conv_program(3), metadata={"labels": ["a", "b"]})
    assert a != write_tflite(conv_program(3), metadata={"labels": ["a", "c"]})


def test_metadata_round_trip():
    pre = {"scale": 1 / 255, "mean": [0.5], "layout": "nchw"}
    data = write_tflite(conv_program(), metadata={"preprocess": pre, "labels": [str(i) for i in range(10)]})
    meta = read_metadata(data)
    assert meta["preprocess"] == pre and meta["labels"][3] == "3"
    assert meta["producer"].startswith("edgeq ")
    (inp,) = meta["inputs"]
    assert (
        inp["onnx_name"] == "images"
        and inp["perm_from_onnx"] == [0, 2, 3, 1]
        and inp["shape"] == [1, 8, 8, 4]
    )
    with pytest.raises(ConfigError, match="key 'inputs' is reserved"):
        write_tflite(conv_program(), metadata={"inputs": 1})
    with pytest.raises(ConfigError, match="not JSON-serialisable"):
        write_tflite(conv_program(), metadata={"labels": {1, 2}})
    with pytest.raises(ModelError, match="no edgeq metadata"):
        read_metadata(_strip_metadata(data))
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        describe(b"garbage!")


def _strip_metadata(data: bytes) -> bytes:
    import flatbuffers

    m = fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    m.metadata = [e for e in m.metadata if e.name != b"edgeq"]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize(
    ("explicit", "stride", "expect"),
    [
        ((1, 1, 1, 1), (1, 1), "SAME"),  # 3×3 stride 1: ONNX pads [1, 1, 1, 1] is SAME
        ((0, 0, 0, 0), (1, 1), "VALID"),
        ((0, 0, 1, 1), (2, 2), "SAME"),  # TF's stride-2 SAME puts the odd pixel at the end
        ((1, 1, 1, 1), (2, 2), "PAD"),  # PyTorch's stride-2 padding=1 is not SAME on an even input
        ((2, 0, 0, 1), (1, 1), "PAD"),
    ],
)
def test_padding_plan(explicit, stride, expect):
    plan = plan_padding((8, 8), (3, 3), stride, (1, 1), explicit)
    if expect == "PAD":
        assert plan.pad is not None and plan.padding == fb.Padding.VALID
    else:
        assert plan.pad is None and plan.padding == getattr(fb.Padding, expect)


def test_unexpressible_padding_becomes_a_pad_with_the_zero_point():
    program = conv_program(pad=(1, 1, 1, 1), stride=(2, 2), act=P.FusedActivation.NONE)
    data = write_tflite(program)
    assert describe(data).operators == ("PAD", "CONV_2D")
    it = litert(data)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(-128, 128, (1, 8, 8, 4)).astype(np.int8)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        np.testing.assert_array_equal(
            it.get_tensor(it.get_output_details()[0]["index"]), run(program, {"in0": x})["out0"]
        )


def test_float_io_adds_quantize_and_dequantize_and_stays_bit_exact():
    program = conv_program(5, act=P.FusedActivation.NONE)
    data = write_tflite(program, io_type="float32")
    s = describe(data)
    assert s.operators == ("QUANTIZE", "CONV_2D", "DEQUANTIZE")
    assert s.inputs[0].dtype == "float32" and s.outputs[0].dtype == "float32"
    x_qp, y_qp = program.tensors["in0"].qparams, program.tensors["out0"].qparams
    it = litert(data)
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.normal(0, 2, (1, 8, 8, 4)).astype(np.float32)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        q = K.quantize_float(x, x_qp.scale[0], x_qp.zero_point[0])  # TFLite rounds half away from zero
        want = K.dequantize(run(program, {"in0": q})["out0"], y_qp.scale[0], y_qp.zero_point[0])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match="io_type 'uint8' is not one of: int8, float32"):
        write_tflite(program, io_type="uint8")


def test_activation_range_matches_the_lowering():
    rng = np.random.default_rng(0)
    for _ in range(300):
        qp = P.QParams.per_tensor(f32(10 ** rng.uniform(-4, 0)), int(rng.integers(-128, 128)))
        for kind in P.FusedActivation:
            act = O.activation(kind, qp)
            assert activation_range(kind, qp) == (act.min, act.max)


def test_clamp_tflite_cannot_express_is_unsupported():
    program = conv_program(act=P.FusedActivation.NONE)
    op = program.ops[0]
    bad = P.Op(
        op.kind,
        op.inputs,
        op.outputs,
        P.Conv2DOptions(
            op.options.stride,
            op.options.dilation,
            op.options.padding,
            P.Activation(P.FusedActivation.NONE, -100, 100),
            op.options.requant,
        ),
        "conv_7",
    )
    program = P.Program(program.tensors, (bad,), program.inputs, program.outputs)
    with pytest.raises(UnsupportedError, match=r"node 'conv_7' \(CONV_2D\): its output clamp \[-100, 100\]"):
        write_tflite(program)


def test_average_pool_with_uncounted_asymmetric_padding_is_unsupported():
    g = Prog(0)
    qp = g.qp()
    x = g.input((1, 6, 6, 2), qp)
    g.op(P.OpKind.AVERAGE_POOL_2D, [x], (1, 7, 7, 2), P.Pool2DOptions((2, 2), (1, 1), (1, 1, 0, 0)), qp)
    with pytest.raises(
        UnsupportedError, match=r"node 'node_average_pool_2d' \(AVERAGE_POOL_2D\): explicit padding"
    ):
        write_tflite(g.build())


def test_int16_activations_are_unsupported():
    g = Prog(0)
    x = g.input((1, 4))
    t = g.tensors[x]
    g.tensors[x] = P.TensorInfo(t.name, t.shape, P.DType.INT16, P.QParams.per_tensor(0.001, 0))
    out_qp = g.qp()
    g.op(P.OpKind.QUANTIZE, [x], (1, 4), O.requantize_options(g.tensors[x].qparams, out_qp), out_qp)
    with pytest.raises(UnsupportedError, match="tensor 'in0' is int16"):
        write_tflite(g.build())


def test_xnnpack_drift_is_reported_apart():
    """LiteRT's default CPU path (XNNPACK) is not TFLite's reference arithmetic: measure, do not require."""
    program = conv_program(2, act=P.FusedActivation.NONE)
    data = write_tflite(program)
    ref, xnn = litert(data), litert(data, reference=False)
    rng = np.random.default_rng(2)
    diffs = []
    for _ in range(10):
        x = rng.integers(-128, 128, (1, 8, 8, 4)).astype(np.int8)
        outs = []
        for it in (ref, xnn):
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            outs.append(it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int64))
        diffs.append(np.abs(outs[0] - outs[1]))
    d = np.concatenate([a.ravel() for a in diffs])
    print(
        f"\nXNNPACK vs builtin reference on a 3×3 int8 conv: {100 * (d > 0).mean():.1f} % of outputs differ, "
        f"max {d.max()} LSB"
    )
    assert d.max() <= 8


def test_grouped_convolution_is_unsupported():
    g = Prog(0)
    x = g.input((1, 6, 6, 4))
    in_qp, out_qp = g.tensors[x].qparams, g.qp()
    w, w_qp = g.weights((4, 3, 3, 2), axis=0)  # 2 input channels per group on a 4-channel input
    opts = P.Conv2DOptions(
        (1, 1), (1, 1), (1, 1, 1, 1), O.activation("NONE", out_qp), O.conv_requant(in_qp, w_qp, out_qp, 4)
    )
    g.op(P.OpKind.CONV_2D, [x, w, g.bias(4, in_qp, w_qp)], (1, 6, 6, 4), opts, out_qp)
    with pytest.raises(UnsupportedError, match=r"node 'node_conv_2d' \(CONV_2D\): grouped convolution"):
        write_tflite(g.build())


def test_rescaling_through_a_copying_op_is_unsupported():
    g = Prog(0)
    x = g.input((1, 6, 6, 2))
    g.op(P.OpKind.MAX_POOL_2D, [x], (1, 3, 3, 2), P.Pool2DOptions((2, 2), (2, 2), (0, 0, 0, 0)), g.qp())
    with pytest.raises(UnsupportedError, match=r"\(MAX_POOL_2D\): input 'in0' .* quantized differently"):
        write_tflite(g.build())
