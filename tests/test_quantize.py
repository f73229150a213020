"""The quantize stage: QDQ rewriting checked with real onnxruntime on tiny seeded models.

Ranges are built here the way the calibration stage does it (min/max of every float tensor over seeded random
inputs, run in onnxruntime with all intermediate tensors as outputs), so these tests do not depend on it.
Numeric tolerances are in quantization steps of the tensor compared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builder import GraphBuilder, small_cnn
from onnx import TensorProto, helper, numpy_helper

from edgeq import onnxutil
from edgeq.config import load_target
from edgeq.errors import ConfigError, DataError, EdgeqError, ModelError
from edgeq.quantize import QuantType, quantize
from edgeq.quantize.params import activation_params, fit_bias, quantize_bias, weight_scales

# -- helpers -----------------------------------------------------------------------------------------------


def minmax_ranges(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> dict[str, tuple]:
    """(lo, hi) including 0 of every float tensor (graph inputs and node outputs) over ``samples``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    declared = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for name in node.output:
            if name and name not in declared:
                m.graph.output.add(name=name)
                declared.add(name)
    sess = onnxutil.ort_session(m, optimize=False)
    names = [o.name for o in sess.get_outputs()]
    ranges: dict[str, tuple[float, float]] = {}
    for feed in samples:
        pairs = list(feed.items()) + list(zip(names, sess.run(None, feed), strict=True))
        for name, value in pairs:
            if value.dtype != np.float32:
                continue
            lo, hi = ranges.get(name, (0.0, 0.0))
            ranges[name] = (min(lo, float(value.min())), max(hi, float(value.max())))
    return ranges


def samples_for(model: onnx.ModelProto, n: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    specs = onnxutil.input_specs(model)
    return [{s.name: rng.normal(size=s.shape).astype(np.float32) for s in specs} for _ in range(n)]


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray], *, optimize: bool = True) -> list[np.ndarray]:
    return onnxutil.ort_session(model, optimize=optimize).run(None, feed)


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def node_by_output(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if name in n.output)


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def qparams_of(model: onnx.ModelProto, dq_output: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of the DequantizeLinear writing ``dq_output``."""
    dq = node_by_output(model, dq_output)
    assert dq.op_type == "DequantizeLinear"
    values = inits(model)
    return values[dq.input[1]], values[dq.input[2]]


def tensor_qparams(result, float_name: str) -> tuple[float, int]:
    scale, zp = qparams_of(result.model, result.summary.tensor_map[float_name])
    return float(scale), int(zp)


def optimized_ops(model: onnx.ModelProto) -> list[str]:
    """Op types of the graph onnxruntime runs (ORT_ENABLE_ALL, saved via optimized_model_filepath)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        opts.optimized_model_filepath = path
        ort.InferenceSession(onnxutil.serialize(model), opts, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(path).graph.node]


def weight_dq(model: onnx.ModelProto, node_op: str, index: int = 0, slot: int = 1) -> onnx.NodeProto:
    node = [n for n in model.graph.node if n.op_type == node_op][index]
    return node_by_output(model, node.input[slot])


def with_scheme(target_name: str, **changes):
    t = load_target(target_name)
    return dataclasses.replace(t, quantization=dataclasses.replace(t.quantization, **changes))


@pytest.fixture(scope="module")
def cnn():
    model = small_cnn(seed=0)
    return model, minmax_ranges(model, samples_for(model, 16))


# -- scale / zero-point math -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [QuantType.UINT8, QuantType.INT8])
@pytest.mark.parametrize(("lo", "hi"), [(-1.3, 2.7), (0.0, 6.0), (-5.0, 0.0), (-1e-3, 1e3), (0.1, 0.2)])
def test_activation_params_make_zero_exact(dtype, lo, hi):
    p = activation_params(lo, hi, dtype)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    assert p.scale[0] == np.float32((hi - lo) / (dtype.qmax - dtype.qmin))
    assert dtype.qmin <= p.zero_point[0] <= dtype.qmax
    assert p.quantize(np.float32(0.0)) == p.zero_point[0]  # real 0 is an integer: padding, ReLU exact
    qlo, qhi = p.representable()
    assert qlo <= lo + p.scale[0] / 2 and qhi >= hi - p.scale[0] / 2  # the range is covered up to the nudge
    if lo == 0.0:
        assert p.zero_point[0] == dtype.qmin


def test_bias_that_would_overflow_int32_raises_the_weight_scale():
    w = np.array([[1e-3, -1e-3], [0.5, 0.25]])
    b = np.array([1e4, 0.1])
    s_in = 1e-7
    scales = weight_scales(w, 0)
    fitted = fit_bias(b, s_in, scales)
    assert fitted[1] == scales[1]  # a channel that fits keeps its scale bit for bit
    assert fitted[0] > scales[0]
    bq = quantize_bias(b, np.float32(s_in) * fitted)
    assert np.all(np.abs(bq.astype(np.int64)) < 2**31 - 1)
    assert abs(bq[0] * float(np.float32(s_in) * fitted[0]) - b[0]) <= float(np.float32(s_in) * fitted[0])


# -- numerics against float --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["cpu-x86", "android-arm64", "raspberry-pi-4"])
def test_qdq_output_matches_float_within_a_few_steps(cnn, target):
    model, ranges = cnn
    result = quantize(model, ranges, target=target)
    onnx.checker.check_model(result.model, full_check=True)
    out = model.graph.output[0].name
    scale, _ = tensor_qparams(result, out)
    for feed in samples_for(model, 8):
        (ref,) = run(model, feed)
        (got,) = run(result.model, feed)
        assert np.max(np.abs(got - ref)) <= 3 * scale


def test_fused_int8_kernels_agree_with_the_qdq_reference_within_one_step(cnn):
    """onnxruntime's QLinearConv/QGemm use the int32 bias as is: they agree with the DQ→float→Q reading of the
    same graph only if bias scale = input scale × weight scale and the layout is what ORT expects."""
    model, ranges = cnn
    result = quantize(model, ranges, target="cpu-x86")
    scale, _ = tensor_qparams(result, model.graph.output[0].name)
    for feed in samples_for(model, 8):
        (fused,) = run(result.model, feed, optimize=True)
        (reference,) = run(result.model, feed, optimize=False)
        assert np.max(np.abs(fused - reference)) <= 1.01 * scale


def test_weights_dequantize_within_half_a_step_per_channel(cnn):
    model, ranges = cnn
    result = quantize(model, ranges, target="cpu-x86")
    values = inits(result.model)
    originals = inits(model)
    float_convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    quant_convs = [n for n in result.model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(float_convs) == len(quant_convs) == 4
    for fnode, qnode in zip(float_convs, quant_convs, strict=True):
        w = originals[fnode.input[1]]
        dq = node_by_output(result.model, qnode.input[1])
        q, s, z = (values[t] for t in dq.input)
        axis = helper.get_attribute_value(dq.attribute[0])
        assert axis == 0  # Conv (M, C, kH, kW) and Gemm transB=1 (N, K): output channels on axis 0
        assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
        assert z.dtype == np.int8 and not z.any() and s.shape == (w.shape[0],)
        shape = (-1,) + (1,) * (w.ndim - 1)
        err = np.abs(q.astype(np.float64) * s.reshape(shape) - w)
        assert np.all(err <= s.reshape(shape) / 2 * (1 + 1e-6))
        np.testing.assert_allclose(np.max(np.abs(q.reshape(w.shape[0], -1)), axis=1), 127)


def test_bias_is_int32_with_scale_input_times_weight(cnn):
    model, ranges = cnn
    result = quantize(model, ranges, target="cpu-x86")
    values = inits(result.model)
    originals = inits(model)
    fnodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    qnodes = [n for n in result.model.graph.node if n.op_type in ("Conv", "Gemm")]
    for fnode, qnode in zip(fnodes, qnodes, strict=True):
        x_scale, _ = qparams_of(result.model, qnode.input[0])
        w_scale = values[node_by_output(result.model, qnode.input[1]).input[1]]
        bq, bs, bz = (values[t] for t in node_by_output(result.model, qnode.input[2]).input)
        assert bq.dtype == np.int32 and bz.dtype == np.int32 and not bz.any()
        np.testing.assert_array_equal(bs, np.float32(x_scale) * w_scale)  # bit for bit, float32 product
        b = originals[fnode.input[2]]
        assert np.all(np.abs(bq * bs.astype(np.float64) - b) <= bs / 2 * (1 + 1e-6))


def test_per_tensor_weights_when_the_scheme_says_so(cnn):
    model, ranges = cnn
    result = quantize(model, ranges, target=with_scheme("cpu-x86", per_channel=False))
    dq = weight_dq(result.model, "Conv")
    values = inits(result.model)
    assert values[dq.input[1]].shape == () and not dq.attribute
    bias_dq = weight_dq(result.model, "Conv", slot=2)
    assert values[bias_dq.input[1]].shape == ()
    (ref,) = run(model, samples_for(model, 1)[0])
    (got,) = run(result.model, samples_for(model, 1)[0])
    assert np.max(np.abs(got - ref)) <= 4 * tensor_qparams(result, model.graph.output[0].name)[0]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_and_matmul_weights_use_the_output_axis(trans_b):
    rng = np.random.default_rng(3)
    g = GraphBuilder("x", (2, 6), seed=3)
    w = rng.normal(size=(5, 6) if trans_b else (6, 5)).astype(np.float32)
    # One output channel ten times larger: per-channel scales keep the others fine.
    if trans_b:
        w[0] *= 10
    else:
        w[:, 0] *= 10
    y = g.op(
        "Gemm",
        [g.input, g.const(w), g.const(rng.normal(size=5).astype(np.float32), "b")],
        transB=trans_b,
        alpha=0.5,
        beta=2.0,
    )
    z = g.op("MatMul", [y, g.const(rng.normal(size=(5, 4)).astype(np.float32))])
    model = g.build(z)
    ranges = minmax_ranges(model, samples_for(model, 16))
    result = quantize(model, ranges, target="cpu-x86")
    gemm_dq = weight_dq(result.model, "Gemm")
    assert helper.get_attribute_value(gemm_dq.attribute[0]) == (0 if trans_b else 1)
    assert helper.get_attribute_value(weight_dq(result.model, "MatMul").attribute[0]) == 1
    gemm = next(n for n in result.model.graph.node if n.op_type == "Gemm")
    assert not any(a.name in ("alpha", "beta") for a in gemm.attribute)  # folded into weight and bias
    scale, _ = tensor_qparams(result, z)
    for feed in samples_for(model, 4):
        assert np.max(np.abs(run(result.model, feed)[0] - run(model, feed)[0])) <= 3 * scale
    ops = optimized_ops(result.model)
    assert "QGemm" in ops and "QLinearMatMul" in ops and "Gemm" not in ops and "MatMul" not in ops


def test_matmul_of_two_activations():
    g = GraphBuilder("x", (1, 4, 6), seed=5)
    a = g.op("MatMul", [g.input, g.const(g.rng.normal(size=(6, 6)).astype(np.float32))])
    y = g.op("MatMul", [a, g.op("Transpose", [g.input], perm=[0, 2, 1])])
    model = g.build(y)
    result = quantize(model, minmax_ranges(model, samples_for(model, 16)), target="cpu-x86")
    mm = [n for n in result.model.graph.node if n.op_type == "MatMul"][1]
    assert all(node_by_output(result.model, t).op_type == "DequantizeLinear" for t in mm.input)
    assert optimized_ops(result.model).count("QLinearMatMul") == 2


# -- activation folding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["cpu-x86", "android-arm64"])
def test_relu_and_clip_fold_into_the_producer(cnn, target):
    model, ranges = cnn
    result = quantize(model, ranges, target=target)
    ops = [n.op_type for n in result.model.graph.node]
    assert "Relu" not in ops and "Clip" not in ops
    assert sorted(f.op_type for f in result.summary.folded) == ["Clip", "Relu"]
    qmin = QuantType.UINT8.qmin if target == "cpu-x86" else QuantType.INT8.qmin
    relu_out = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    clip_out = next(n.output[0] for n in model.graph.node if n.op_type == "Clip")
    for name in (relu_out, clip_out):
        scale, zp = tensor_qparams(result, name)
        assert zp == qmin  # lo = 0 exactly: the int8 clamp at qmin is the ReLU
        # The QuantizeLinear reads the producer's (pre-activation) output directly.
        q = node_by_output(
            result.model, node_by_output(result.model, result.summary.tensor_map[name]).input[0]
        )
        assert q.op_type == "QuantizeLinear"
        assert node_by_output(result.model, q.input[0]).op_type == "Conv"
    _, hi = ranges[clip_out]
    scale, _ = tensor_qparams(result, clip_out)
    assert scale == np.float32(hi / 255)


def test_clip_fold_never_goes_past_the_clip_bounds():
    g = GraphBuilder("x", (1, 2, 4, 4), seed=6)
    y = g.relu6(g.conv(g.input, 2, 4, 3))
    model = g.build(y)
    ranges = minmax_ranges(model, samples_for(model, 4))
    ranges[y] = (-1.0, 9.0)  # a sloppy table: the clip's bounds win, so the clamp stays exact
    ranges["x"] = (-50.0, 50.0)
    result = quantize(model, ranges, target="cpu-x86")
    scale, zp = tensor_qparams(result, y)
    assert zp == 0 and scale == np.float32(6 / 255)
    feed = {"x": np.random.default_rng(0).uniform(-50, 50, (1, 2, 4, 4)).astype(np.float32)}
    (got,), (ref,) = run(result.model, feed), run(model, feed)
    assert got.max() <= np.float32(6.0) * (1 + 1e-6) and got.min() == 0.0
    np.testing.assert_allclose(got[ref >= 6.5], 6.0, rtol=1e-6)


def test_relu_is_not_folded_when_the_producer_output_has_other_consumers():
    g = GraphBuilder("x", (1, 2, 4, 4), seed=7)
    c = g.conv(g.input, 2, 2, 3)
    y = g.add(g.relu(c), c)
    model = g.build(y)
    result = quantize(model, minmax_ranges(model, samples_for(model, 8)), target="cpu-x86")
    assert not result.summary.folded and result.summary.quantized["Relu"] == 1
    assert c in result.summary.tensor_map  # the conv output is quantized on its own


def test_conv_followed_by_hardswish_still_gets_an_int8_conv():
    g = GraphBuilder("x", (1, 3, 8, 8), seed=8)
    h = g.op("HardSwish", [g.conv(g.input, 3, 8, 3)])
    y = g.conv(h, 8, 4, 1)
    model = g.build(y)
    ranges = minmax_ranges(model, samples_for(model, 8))
    result = quantize(model, ranges, target="cpu-x86")
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv").output[0]
    q = consumers(result.model, first_conv)
    assert [n.op_type for n in q] == ["QuantizeLinear"]  # the conv's only consumer: fusable
    float_ops = {(f.op_type, f.reason) for f in result.summary.float_ops}
    assert ("HardSwish", "onnxruntime has no int8 kernel for HardSwish") in float_ops
    ops = optimized_ops(result.model)
    assert ops.count("QLinearConv") == 2 and "Conv" not in ops  # ORT runs HardSwish as HardSigmoid·x
    scale, _ = tensor_qparams(result, y)
    for feed in samples_for(model, 4):
        assert np.max(np.abs(run(result.model, feed)[0] - run(model, feed)[0])) <= 3 * scale
    # On a TFLite target HARD_SWISH has an int8 kernel: quantized with its own range.
    tfl = quantize(model, ranges, target="android-arm64")
    assert tfl.summary.quantized["HardSwish"] == 1 and not tfl.summary.float_ops


# -- onnxruntime fusion ------------------------------------------------------------------------------------


def test_ort_fuses_the_conv_net_into_int8_kernels(cnn):
    model, ranges = cnn
    result = quantize(model, ranges, target="cpu-x86")
    ops = optimized_ops(result.model)
    assert ops.count("QLinearConv") == 3
    assert {"QLinearAdd", "QLinearGlobalAveragePool", "QGemm"} <= set(ops)
    assert not {"Conv", "Add", "Gemm", "GlobalAveragePool", "Relu", "Clip"} & set(ops)
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1  # only at the edges


def test_data_movement_shares_parameters_and_fuses():
    g = GraphBuilder("x", (1, 4, 8, 8), seed=10)
    c = g.relu(g.conv(g.input, 4, 8, 3))
    p = g.op("MaxPool", [c], kernel_shape=[2, 2], strides=[2, 2])
    t = g.op("Transpose", [p], perm=[0, 1, 3, 2])
    r = g.op("Reshape", [t, g.const(np.array([1, 8, 16], np.int64), "shape")])
    u = g.op("Unsqueeze", [r, g.const(np.array([3], np.int64), "axes")])
    y = g.conv(u, 8, 4, 1)
    model = g.build(y)
    result = quantize(model, minmax_ranges(model, samples_for(model, 8)), target="cpu-x86")
    params = [tensor_qparams(result, name) for name in (c, p, t, r, u)]
    assert len(set(params)) == 1  # one scale and zero point along the whole data-movement chain
    ops = optimized_ops(result.model)
    assert ops.count("QLinearConv") == 2 and ops.count("DequantizeLinear") == 1


def test_every_covered_op_runs_in_int8_in_onnxruntime():
    g = GraphBuilder("x", (1, 4, 8, 8), seed=21)
    c = g.conv(g.input, 4, 8, 3)
    lr = g.op("LeakyRelu", [c], alpha=0.1)
    ap = g.op("AveragePool", [lr], kernel_shape=[2, 2], strides=[2, 2])
    sg = g.op("Sigmoid", [ap])
    pd = g.op("Pad", [sg, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")])
    rs = g.op("Resize", [pd, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    cat = g.op("Concat", [g.conv(rs, 8, 8, 1), g.conv(rs, 8, 8, 1)], axis=1)
    mp = g.op("MaxPool", [cat], kernel_shape=[2, 2], strides=[2, 2])
    sq = g.op("Squeeze", [g.gap(mp), g.const(np.array([2, 3], np.int64), "axes")])
    sm = g.op("Softmax", [g.gemm(sq, 16, 10)], axis=-1)
    model = g.build(sm)
    feeds = samples_for(model, 8)
    result = quantize(model, minmax_ranges(model, feeds), target="cpu-x86")
    assert not result.summary.float_ops and result.summary.num_quantized == len(model.graph.node)
    assert tensor_qparams(result, sm) == (np.float32(1 / 255), 0)  # softmax: [0, 1] whatever was seen
    assert tensor_qparams(result, pd) == tensor_qparams(result, sg) == tensor_qparams(result, rs)
    ops = optimized_ops(result.model)
    fused = {"QLinearLeakyRelu", "QLinearAveragePool", "QLinearSigmoid", "QLinearConcat", "QLinearSoftmax"}
    assert fused <= set(ops) and ops.count("QLinearConv") == 3
    # Float kernels left: only Pad, which onnxruntime has no QDQ rule for (it runs between its DQ and Q).
    assert not {"Conv", "LeakyRelu", "AveragePool", "Sigmoid", "Concat", "MaxPool", "Softmax", "Gemm"} & set(
        ops
    )
    assert ops.count("DequantizeLinear") == 2 and "Pad" in ops
    for feed in feeds:
        assert np.max(np.abs(run(result.model, feed)[0] - run(model, feed)[0])) <= 3 / 255


# -- TFLite constraints ------------------------------------------------------------------------------------


def tflite_model():
    g = GraphBuilder("x", (1, 3, 8, 8), seed=11)
    a = g.relu(g.conv(g.input, 3, 4, 3))
    b = g.conv(g.input, 3, 4, 3)
    pool = g.op("AveragePool", [b], kernel_shape=[1, 1])
    cat = g.op("Concat", [a, pool], axis=1)
    mp = g.op("MaxPool", [cat], kernel_shape=[2, 2], strides=[2, 2])
    flat = g.flatten(mp)
    logits = g.gemm(flat, 128, 10)
    sm = g.op("Softmax", [logits], axis=-1)
    sg = g.op("Sigmoid", [logits])
    th = g.op("Tanh", [logits])
    return g.build(sm, sg, th), dict(
        a=a, b=b, pool=pool, cat=cat, mp=mp, flat=flat, logits=logits, sm=sm, sg=sg, th=th
    )


def test_tflite_rules_are_applied_while_quantizing():
    model, t = tflite_model()
    ranges = minmax_ranges(model, samples_for(model, 16))
    result = quantize(model, ranges, target="android-arm64")
    assert result.summary.activation_type == "int8" and not result.summary.float_ops
    q = {k: tensor_qparams(result, name) for k, name in t.items()}
    assert q["sm"] == (1 / 256, -128) and q["sg"] == (1 / 256, -128) and q["th"] == (1 / 128, 0)
    assert q["b"] == q["pool"]  # AVERAGE_POOL_2D does not rescale
    assert q["pool"] == q["cat"] == q["mp"] == q["flat"]  # concat inputs take the output's; pools share
    # The folded ReLU branch cannot join the signed concat range (its clamp needs zero point -128): it keeps
    # its own parameters and is re-quantized in front of the concat instead.
    assert q["a"][1] == -128 and q["cat"][1] != -128
    cat_node = next(n.name for n in model.graph.node if n.op_type == "Concat")
    assert [(r.node, r.tensor) for r in result.summary.requantized] == [(cat_node, t["a"])]
    values = inits(result.model)
    for dq in (n for n in result.model.graph.node if n.op_type == "DequantizeLinear"):
        zp = values[dq.input[2]]
        assert zp.dtype in (np.int8, np.int32)  # int8 activations/weights, int32 bias: no uint8 anywhere
    # Softmax, logistic and tanh have slopes ≤ 1: their error is the logits' error plus their own step.
    logits_scale = tensor_qparams(result, t["logits"])[0]
    for feed in samples_for(model, 4):
        outs = zip(run(result.model, feed), run(model, feed), (t["sm"], t["sg"], t["th"]), strict=True)
        for got, ref, name in outs:
            assert np.max(np.abs(got - ref)) <= 3 * logits_scale + tensor_qparams(result, name)[0]


def test_tflite_concat_of_conflicting_fixed_parameters_requantizes():
    g = GraphBuilder("x", (1, 6), seed=13)
    y = g.op("Concat", [g.op("Sigmoid", [g.input]), g.op("Tanh", [g.input])], axis=1)
    model = g.build(y)
    feeds = samples_for(model, 8)
    result = quantize(model, minmax_ranges(model, feeds), target="cortex-m4")
    # The concat's calibrated range is signed: LOGISTIC's fixed [0, 1) cannot hold it, TANH's [-1, 1) can.
    sigmoid, tanh = (n.output[0] for n in model.graph.node[:2])
    assert [r.tensor for r in result.summary.requantized] == [sigmoid]
    assert tensor_qparams(result, y) == tensor_qparams(result, tanh) == (1 / 128, 0)
    assert tensor_qparams(result, sigmoid) == (1 / 256, -128)
    for feed in feeds:  # inside the calibrated input range: no clipping of x
        got, ref = run(result.model, feed)[0], run(model, feed)[0]
        assert np.max(np.abs(ref - got)) <= 1.5 / 128  # two roundings on the sigmoid half


# -- exclusion, op_types, summary, metadata, determinism ---------------------------------------------------


def test_exclude_keeps_nodes_in_float_and_lists_them(cnn):
    model, ranges = cnn
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]  # the depthwise conv
    result = quantize(model, ranges, target="cpu-x86", exclude=[conv.name])
    assert "excluded" in {f.reason for f in result.summary.float_ops if f.node == conv.name}
    qconv = next(n for n in result.model.graph.node if n.name == conv.name)
    assert qconv.input[1] == conv.input[1]  # still the float weight initializer
    assert inits(result.model)[conv.input[1]].dtype == np.float32
    assert result.summary.quantized["Conv"] == 2
    assert "excluded" in result.summary.text() and conv.name in result.summary.text()
    for feed in samples_for(model, 4):
        (ref,), (got,) = run(model, feed), run(result.model, feed)
        assert np.max(np.abs(got - ref)) <= 3 * tensor_qparams(result, model.graph.output[0].name)[0]


def test_summary_lists_every_float_op_with_a_reason():
    g = GraphBuilder("x", (1, 3, 8, 8), seed=16)
    c = g.conv(g.input, 3, 4, 3)
    hs = g.op("HardSigmoid", [c])
    e = g.op("Exp", [hs])
    t = g.op("Transpose", [e], perm=[0, 1, 3, 2])
    y = g.conv(t, 4, 4, 1)
    model = g.build(y)
    result = quantize(model, minmax_ranges(model, samples_for(model, 4)), target="cpu-x86")
    assert [(f.op_type, f.reason) for f in result.summary.float_ops] == [
        ("HardSigmoid", "onnxruntime has no int8 kernel for HardSigmoid"),
        ("Exp", "onnxruntime has no int8 kernel for Exp"),
        ("Transpose", f"its input '{e}' comes from float node '{e}_node'"),
    ]
    assert t in result.summary.tensor_map  # quantized anyway: the next conv reads it in int8
    text = result.summary.text()
    assert "HardSigmoid" in text and "Exp" in text and "Conv 2" in text


def test_op_types_restricts_what_is_quantized(cnn):
    model, ranges = cnn
    result = quantize(model, ranges, target="cpu-x86", op_types=["Conv"])
    assert dict(result.summary.quantized) == {"Conv": 3}
    reasons = {f.op_type: f.reason for f in result.summary.float_ops}
    assert reasons["Gemm"] == "op type not selected (op_types)"
    with pytest.raises(ConfigError, match="HardSwish cannot be quantized for target 'cpu-x86'"):
        quantize(model, ranges, target="cpu-x86", op_types=["HardSwish"])


def test_metadata_pairs_every_quantized_tensor_with_its_float_twin(cnn):
    model, ranges = cnn
    result = quantize(model, ranges, target="android-arm64")
    meta = {p.key: p.value for p in result.model.metadata_props}
    assert meta["edgeq.target"] == "android-arm64" and meta["edgeq.activation_type"] == "int8"
    tensor_map = json.loads(meta["edgeq.tensor_map"])
    assert tensor_map == dict(result.summary.tensor_map)
    float_tensors = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    dq_outputs = {n.output[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    assert set(tensor_map) <= float_tensors and set(tensor_map.values()) <= dq_outputs
    assert tensor_map["input"] == "input_dq"
    assert tensor_map[model.graph.output[0].name] == model.graph.output[0].name  # graph output keeps its name
    # Every DQ output named in the map can be fetched next to the float model's tensor (validation does this).
    m = onnx.ModelProto()
    m.CopyFrom(result.model)
    for name in tensor_map.values():
        if name not in {o.name for o in m.graph.output}:
            m.graph.output.add(name=name)
    assert len(run(m, samples_for(model, 1)[0], optimize=False)) == len(m.graph.output)


def test_same_inputs_give_identical_bytes(cnn):
    model, ranges = cnn
    a = quantize(model, ranges, target="cpu-x86")
    shuffled = dict(reversed(list(ranges.items())))
    reloaded = onnx.load_from_string(onnxutil.serialize(model))
    b = quantize(reloaded, shuffled, target=load_target("cpu-x86"))
    assert onnxutil.serialize(a.model) == onnxutil.serialize(b.model)
    assert a.summary == b.summary


def test_save_writes_atomically_and_refuses_to_overwrite(cnn, tmp_path):
    model, ranges = cnn
    result = quantize(model, ranges, target="cpu-x86")
    path = result.save(tmp_path / "model.int8.onnx")
    assert path.read_bytes() == onnxutil.serialize(result.model)
    with pytest.raises(EdgeqError, match="output exists"):
        result.save(path)
    result.save(path, force=True)


def test_the_input_model_is_not_modified(cnn):
    model, ranges = cnn
    before = onnxutil.serialize(model)
    quantize(model, ranges, target="cpu-x86")
    assert onnxutil.serialize(model) == before


def test_a_constant_operand_is_quantized_like_an_activation():
    g = GraphBuilder("x", (1, 4, 4, 4), seed=17)
    c = g.conv(g.input, 4, 4, 3)
    m = g.op("Mul", [c, g.const(g.rng.uniform(0.5, 2.0, (1, 4, 1, 1)).astype(np.float32), "gamma")])
    y = g.op("Add", [m, g.const(np.float32(0.25), "beta")])
    model = g.build(y)
    result = quantize(model, minmax_ranges(model, samples_for(model, 8)), target="cpu-x86")
    mul = next(n for n in result.model.graph.node if n.op_type == "Mul")
    gamma_dq = node_by_output(result.model, mul.input[1])
    assert inits(result.model)[gamma_dq.input[0]].dtype == np.uint8
    ops = optimized_ops(result.model)
    assert {"QLinearMul", "QLinearAdd"} <= set(ops) and "Mul" not in ops and "Add" not in ops
    scale, _ = tensor_qparams(result, y)
    for feed in samples_for(model, 4):
        assert np.max(np.abs(run(result.model, feed)[0] - run(model, feed)[0])) <= 3 * scale


def test_a_huge_bias_on_a_tiny_input_range_still_fits_int32():
    g = GraphBuilder("x", (1, 1, 4, 4), seed=19)
    w = np.full((2, 1, 1, 1), 1e-3, np.float32)
    y = g.op(
        "Conv", [g.input, g.const(w), g.const(np.array([5e3, -1.0], np.float32), "b")], kernel_shape=[1, 1]
    )
    model = g.build(y)
    ranges = {"x": (0.0, 1e-4), y: (-1.1, 5e3 + 1)}
    result = quantize(model, ranges, target="cpu-x86")
    bq = inits(result.model)[weight_dq(result.model, "Conv", slot=2).input[0]]
    assert bq.dtype == np.int32
    feed = {"x": np.full((1, 1, 4, 4), 5e-5, np.float32)}
    scale, _ = tensor_qparams(result, y)
    assert np.max(np.abs(run(result.model, feed)[0] - run(model, feed)[0])) <= scale


def test_tensors_read_inside_subgraphs_survive():
    g = GraphBuilder("x", (1, 2, 4, 4), seed=22)
    r = g.relu(g.conv(g.input, 2, 2, 3))
    branch = helper.make_graph(
        [helper.make_node("Identity", [r], ["branch_out"])], "branch", [],
        [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    cond = g.const(np.array(True), "cond")
    g.nodes.append(
        helper.make_node("If", [cond], ["if_out"], name="if", then_branch=branch, else_branch=branch)
    )
    y = g.conv(g.op("Add", ["if_out", r]), 2, 2, 1)
    model = g.build(y)
    feeds = samples_for(model, 4)
    result = quantize(model, minmax_ranges(model, feeds), target="cpu-x86")
    assert not result.summary.folded  # the Relu's output is read by name inside the If: it must keep existing
    onnx.checker.check_model(result.model)
    scale, _ = tensor_qparams(result, y)
    for feed in feeds:
        assert np.max(np.abs(run(result.model, feed)[0] - run(model, feed)[0])) <= 3 * scale


# -- errors ------------------------------------------------------------------------------------------------


def test_missing_range_names_the_tensor(cnn):
    model, ranges = cnn
    add_out = next(n.output[0] for n in model.graph.node if n.op_type == "Add")
    folded_conv_out = model.graph.node[2].output[0]  # Conv → Clip: only the Clip's range is needed
    quantize(model, {k: v for k, v in ranges.items() if k != folded_conv_out}, target="cpu-x86")
    partial = {k: v for k, v in ranges.items() if k != add_out}
    with pytest.raises(
        ModelError, match=f"tensor '{add_out}' has no calibrated range.*re-run edgeq calibrate"
    ):
        quantize(model, partial, target="cpu-x86")


def test_invalid_range_and_table_type(cnn):
    model, ranges = cnn
    bad = dict(ranges, input=(float("nan"), 1.0))
    with pytest.raises(DataError, match="tensor 'input': calibrated range"):
        quantize(model, bad, target="cpu-x86")
    with pytest.raises(DataError, match="expected a CalibrationTable"):
        quantize(model, [1, 2], target="cpu-x86")  # type: ignore[arg-type]


def test_a_table_object_with_ranges_is_accepted(cnn):
    model, ranges = cnn

    class Table:
        def ranges(self):
            return ranges

    assert onnxutil.serialize(quantize(model, Table(), target="cpu-x86").model) == onnxutil.serialize(
        quantize(model, ranges, target="cpu-x86").model
    )


def test_unknown_excluded_node_is_a_clear_error(cnn):
    model, ranges = cnn
    name = model.graph.node[0].name
    with pytest.raises(ConfigError, match=f"no node named '{name}x'; did you mean '{name}'"):
        quantize(model, ranges, target="cpu-x86", exclude=[name + "x"])


def test_old_opset_and_already_quantized_models_are_refused(cnn):
    model, ranges = cnn
    old = onnx.ModelProto()
    old.CopyFrom(model)
    old.opset_import[0].version = 12
    with pytest.raises(ModelError, match="opset 12.*run edgeq export"):
        quantize(old, ranges, target="cpu-x86")
    qdq = quantize(model, ranges, target="cpu-x86").model
    with pytest.raises(ModelError, match="already quantized"):
        quantize(qdq, ranges, target="cpu-x86")


def test_non_float_tensors_stay_float():
    g = GraphBuilder("x", (1, 4), seed=20)
    x16 = g.op("Cast", [g.input], to=TensorProto.FLOAT16)
    y = g.op("Cast", [g.op("Add", [x16, x16])], to=TensorProto.FLOAT)
    model = g.build(y)
    result = quantize(model, minmax_ranges(model, samples_for(model, 2)), target="cpu-x86")
    reasons = {f.op_type: f.reason for f in result.summary.float_ops}
    assert "float16, not float32" in reasons["Add"]


# -- the benchmark models ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "calibration_samples"), [("digits", 300), pytest.param("mbv2_32", 200, marks=pytest.mark.slow)]
)
def test_benchmark_model_is_fully_fused_and_keeps_its_accuracy(shared_models, name, calibration_samples):
    model = onnx.load(str(shared_models / f"{name}_float_nhwc.onnx"))
    x = np.load(shared_models / f"{name}_test_inputs.npy", allow_pickle=False).astype(np.float32)
    labels = np.load(shared_models / "test_labels.npy", allow_pickle=False)
    ranges = minmax_ranges(model, [{"input": s[None]} for s in x[:calibration_samples]])
    result = quantize(model, ranges, target="cpu-x86")
    assert not result.summary.float_ops
    ops = optimized_ops(result.model)
    assert not {"Conv", "Gemm", "MatMul", "Add", "Mul", "Clip"} & set(ops)
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 1
    fsess, qsess = onnxutil.ort_session(model), onnxutil.ort_session(result.model)
    f = np.array([fsess.run(None, {"input": s[None]})[0][0].argmax() for s in x])
    q = np.array([qsess.run(None, {"input": s[None]})[0][0].argmax() for s in x])
    assert np.mean(f == q) >= 0.98
    assert np.mean(q == labels) >= np.mean(f == labels) - 0.01


def test_with_a_real_calibration_table():
    from conftest import EXAMPLE

    if not (EXAMPLE / "digits_cnn.onnx").is_file():
        pytest.skip(f"the digits example is not built yet ({EXAMPLE / 'digits_cnn.onnx'} missing)")
    from edgeq.calibrate import calibrate

    model = onnx.load(str(EXAMPLE / "digits_cnn.onnx"))
    table = calibrate(model, str(EXAMPLE / "calibration.npz"), progress=False)
    result = quantize(model, table, target="cortex-m4")
    assert not result.summary.float_ops
    test = np.load(EXAMPLE / "test.npz", allow_pickle=False)
    fsess, qsess = onnxutil.ort_session(model), onnxutil.ort_session(result.model)
    f = np.array([fsess.run(None, {"input": s[None]})[0].argmax() for s in test["input"]])
    q = np.array([qsess.run(None, {"input": s[None]})[0].argmax() for s in test["input"]])
    assert np.mean(f == q) >= 0.98
    other = small_cnn(seed=1, shape=(1, 1, 8, 8))
    with pytest.raises(ModelError, match="re-run edgeq calibrate"):
        quantize(other, table, target="cortex-m4")  # the table's fingerprint is of another model
