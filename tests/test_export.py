"""The export stage: torch → ONNX and the ONNX intake, checked against onnxruntime on the original model."""

from __future__ import annotations

import logging
import sys

import numpy as np
import onnx
import pytest
from builder import GraphBuilder, small_cnn
from onnx import TensorProto, helper, numpy_helper

from edgeq import onnxutil
from edgeq.errors import ConfigError, EdgeqError, ModelError, OutputExistsError, UnsupportedError
from edgeq.export import MIN_OPSET, export, max_opset

RTOL = 1e-5  # the brief's bar: outputs within 1e-5 relative (to the output's largest magnitude)


def run(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    # Graph optimizations off: the comparison is between the models as written, not ORT's own fusions.
    return onnxutil.ort_session(model, optimize=False).run(None, feeds)


def assert_same_outputs(original, exported, feeds: dict[str, np.ndarray]) -> None:
    for want, got in zip(run(original, feeds), run(exported, feeds), strict=True):
        assert got.shape == want.shape
        scale = float(np.max(np.abs(want))) or 1.0
        np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * scale)


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def with_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", version))
    return model


def conv_bn(rng, *, transpose: bool = False, group: int = 1, bias: bool = True, extra_reader: bool = False):
    """input → Conv or ConvTranspose → BatchNormalization (random, non-trivial statistics) → Relu."""
    g = GraphBuilder("input", (1, 4, 6, 6), seed=1)
    cin, cout = 4, 6
    if transpose:
        w = rng.normal(0, 0.5, (cin, cout // group, 3, 3)).astype(np.float32)
        ins = [g.input, g.const(w)] + (
            [g.const(rng.normal(0, 0.3, cout).astype(np.float32), "b")] if bias else []
        )
        y = g.op("ConvTranspose", ins, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=group)
    else:
        y = g.conv(g.input, cin, cout, 3, bias=bias)
    params = [
        rng.uniform(0.5, 2.0, cout),  # gamma
        rng.normal(0, 0.5, cout),  # beta
        rng.normal(0, 1.0, cout),  # mean
        rng.uniform(0.01, 3.0, cout),  # var: small variances make the scale large and rounding visible
    ]
    bn = g.op("BatchNormalization", [y] + [g.const(p.astype(np.float32), "bn") for p in params], epsilon=1e-3)
    outs = [g.relu(bn)]
    if extra_reader:
        outs.append(g.op("Sigmoid", [y]))
    return g.build(*outs), params


# ---------------------------------------------------------------------------------------------- torch


@pytest.fixture(scope="module")
def torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is installed where edgeq's tests run
        print(f"SKIP reason: torch is not importable ({e}); install it with pip install 'edgeq[torch]'")
        pytest.skip(f"torch is not importable: {e}")
    torch.manual_seed(0)
    return torch


def test_torch_module_exports_static_folded_and_equal(torch):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.drop = nn.Dropout(0.3)
            self.fc = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            y = self.drop(nn.functional.relu6(self.bn(self.conv(x))))
            return self.fc(y.view(y.size(0), -1))  # Shape → Gather → Concat → Reshape: folded away

    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.2, 3)
        net.bn.weight.uniform_(0.5, 2)
    net.train()  # export must trace in eval mode whatever mode the module is in, and leave it as it was
    model = export(net, example_inputs=torch.zeros(1, 1, 8, 8), output_names=["logits"])
    assert net.training

    assert ops(model) == ["Conv", "Clip", "Reshape", "Gemm"]
    assert [(s.name, s.shape) for s in onnxutil.input_specs(model)] == [("input", (1, 1, 8, 8))]
    assert [(s.name, s.shape) for s in onnxutil.output_specs(model)] == [("logits", (1, 10))]
    x = np.random.default_rng(0).normal(size=(1, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(x)).numpy()
    (got,) = run(model, {"input": x})
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * np.abs(want).max())


def test_torch_default_names(torch):
    class TwoHeads(torch.nn.Module):
        def forward(self, a, b):
            return a + b, a * b

    model = export(TwoHeads(), example_inputs=(torch.zeros(1, 3), torch.ones(1, 3)))
    assert [s.name for s in onnxutil.input_specs(model)] == ["input_0", "input_1"]
    assert [s.name for s in onnxutil.output_specs(model)] == ["output_0", "output_1"]
    a, b = np.float32([[1, 2, 3]]), np.float32([[4, 5, 6]])
    got = run(model, {"input_0": a, "input_1": b})
    np.testing.assert_array_equal(got[0], a + b)
    np.testing.assert_array_equal(got[1], a * b)


def test_torch_needs_example_inputs(torch):
    with pytest.raises(ModelError, match="example_inputs"):
        export(torch.nn.Linear(3, 2))


def test_torch_export_failure_is_a_model_error(torch):
    class Untraceable(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0].real  # no ONNX symbolic for eig

    with pytest.raises(ModelError, match=r"torch\.onnx\.export failed"):
        export(Untraceable(), example_inputs=torch.zeros(2, 2))


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(UnsupportedError, match=r"pip install 'edgeq\[torch\]'"):
        export(object())


# ---------------------------------------------------------------------------------------------- BN folding


@pytest.mark.parametrize(
    ("transpose", "group", "bias"),
    [(False, 1, True), (False, 1, False), (True, 1, True), (True, 2, False)],
    ids=["conv", "conv-no-bias", "conv-transpose", "conv-transpose-grouped"],
)
def test_batchnorm_folds_exactly(rng, transpose, group, bias):
    model, params = conv_bn(rng, transpose=transpose, group=group, bias=bias)
    folded = export(model)
    assert "BatchNormalization" not in ops(folded)
    assert ops(folded)[0] == ("ConvTranspose" if transpose else "Conv")

    # The folded weights are the float64 formula rounded once to float32.
    gamma, beta, mean, var = (p.astype(np.float32).astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + np.float64(np.float32(1e-3)))
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = model.graph.node[0]
    w = original[conv.input[1]].astype(np.float64)
    b = original[conv.input[2]].astype(np.float64) if bias else 0.0
    if transpose:
        w = (
            w.reshape(group, 4 // group, 6 // group, 3, 3) * scale.reshape(group, 1, 6 // group, 1, 1)
        ).reshape(w.shape)
    else:
        w = w * scale[:, None, None, None]
    new = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    node = folded.graph.node[0]
    assert np.array_equal(new[node.input[1]], w.astype(np.float32))
    assert np.array_equal(new[node.input[2]], ((b - mean) * scale + beta).astype(np.float32))

    x = rng.normal(size=(1, 4, 6, 6)).astype(np.float32)
    assert_same_outputs(model, folded, {"input": x})


def test_batchnorm_with_a_shared_conv_output_stays(rng):
    model, _ = conv_bn(rng, extra_reader=True)
    result = export(model)
    assert "BatchNormalization" in ops(result)
    assert_same_outputs(model, result, {"input": rng.normal(size=(1, 4, 6, 6)).astype(np.float32)})


def test_per_channel_mul_add_after_conv_fold(rng):
    # tf2onnx leaves a depthwise conv's BatchNorm as Mul and Add by per-channel constants.
    g = GraphBuilder("input", (1, 4, 6, 6), seed=2)
    y = g.conv(g.input, 4, 4, 3, group=4, bias=False)
    y = g.op("Mul", [y, g.const(rng.uniform(0.5, 2, (4, 1, 1)).astype(np.float32))])
    y = g.op("Add", [g.const(rng.normal(0, 1, (1, 4, 1, 1)).astype(np.float32)), y])
    y = g.op("Sub", [y, g.const(np.float32(0.25))])
    z = g.op(
        "Mul", [g.relu(y), g.const(rng.uniform(0.5, 2, (4, 6, 6)).astype(np.float32))]
    )  # not per-channel
    model = g.build(z)
    result = export(model)
    assert ops(result) == ["Conv", "Relu", "Mul"]
    assert_same_outputs(model, result, {"input": rng.normal(size=(1, 4, 6, 6)).astype(np.float32)})


# ---------------------------------------------------------------------------------------------- intake


def test_constant_nodes_become_initializers(rng):
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["shape"], value_ints=[1, -1]),
        helper.make_node("Constant", [], ["k"], value_float=0.5),
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Mul", ["c", "k"], ["m"], name="mul"),
        helper.make_node("Reshape", ["m", "shape"], ["output"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "consts",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model = onnx.shape_inference.infer_shapes(model)
    result = export(model)
    assert "Constant" not in ops(result)
    inits = {t.name: numpy_helper.to_array(t) for t in result.graph.initializer}
    conv = result.graph.node[0]
    assert conv.op_type == "Conv" and conv.input[1] in inits
    assert np.array_equal(inits[conv.input[1]], w * np.float32(0.5))  # the Mul by a scalar folds in too
    assert onnxutil.output_specs(result)[0].shape == (1, 100)
    assert_same_outputs(model, result, {"input": rng.normal(size=(1, 3, 5, 5)).astype(np.float32)})


def dynamic_model(batch: str | None = "N", height: str | None = None) -> onnx.ModelProto:
    g = GraphBuilder("input", (1, 3, 8, 8), seed=3)
    model = g.build(g.flatten(g.gap(g.relu(g.conv(g.input, 3, 4, 3)))))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for index, param in ((0, batch), (2, height)):
        if param is not None:
            dims[index].Clear()
            dims[index].dim_param = param
    del model.graph.value_info[:]
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    out_dims[0].Clear()
    out_dims[0].dim_param = batch or "N"
    return model


def test_dynamic_batch_defaults_to_one_with_a_note(rng, caplog):
    model = dynamic_model(batch="N")
    with caplog.at_level(logging.WARNING, logger="edgeq.export"):
        result = export(model)
    assert "dynamic batch dimension 'N' fixed to 1" in caplog.text
    assert onnxutil.input_specs(result)[0].shape == (1, 3, 8, 8)
    assert onnxutil.output_specs(result)[0].shape == (1, 4)
    assert all(d.HasField("dim_value") for v in result.graph.value_info for d in v.type.tensor_type.shape.dim)


def test_dynamic_dims_fixed_from_input_shapes(rng):
    model = dynamic_model(batch="N", height="H")
    with pytest.raises(
        ModelError, match=r"input 'input' \[N, 3, H, 8\] has dynamic dimension 2.*input_shapes"
    ):
        export(model)
    result = export(model, input_shapes={"input": [2, 3, 6, 8]})
    assert onnxutil.input_specs(result)[0].shape == (2, 3, 6, 8)
    assert onnxutil.output_specs(result)[0].shape == (2, 4)
    x = rng.normal(size=(2, 3, 6, 8)).astype(np.float32)
    assert_same_outputs(model, result, {"input": x})


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"image": [1, 3, 8, 8]}, r"'image', which is not a model input; the inputs are 'input'"),
        ({"input": [1, 3, 8]}, r"has rank 3 but the input has rank 4"),
        ({"input": [1, 4, 8, 8]}, r"sets dimension 1 to 4, but the model fixes it to 3"),
        ({"input": [1, 3, 0, 8]}, r"positive integer"),
    ],
)
def test_bad_input_shapes_are_named(shapes, message):
    with pytest.raises(ModelError, match=message):
        export(dynamic_model(), input_shapes=shapes)


def test_opset_11_is_upgraded(rng, caplog):
    # Ops whose signature changed at 13: ReduceMean/Squeeze axes and Softmax's semantics, Clip via inputs.
    g = GraphBuilder("input", (1, 3, 8, 8), seed=4, opset=11)
    y = g.relu6(g.conv(g.input, 3, 6, 3))
    y = g.op("ReduceMean", [y], axes=[2, 3], keepdims=1)
    y = g.op("Squeeze", [y], axes=[2, 3])
    y = g.op("Softmax", [g.gemm(y, 6, 5)], axis=1)
    model = g.build(y)
    with caplog.at_level(logging.WARNING, logger="edgeq.export"):
        result = export(model)
    assert "upgraded the model from opset 11 to 17" in caplog.text
    assert [o.version for o in result.opset_import if o.domain == ""] == [17]
    assert result.ir_version >= 8
    assert_same_outputs(model, result, {"input": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)})


@pytest.mark.parametrize("version", [5, 99])
def test_unsupported_opset_error(version):
    model = with_opset(small_cnn(), version)
    with pytest.raises(ModelError, match=rf"unsupported opset {version}: .*re-export .* opset {MIN_OPSET}–"):
        export(model)


def test_requested_opset_is_checked():
    with pytest.raises(ModelError, match=rf"opset=11 .*choose {MIN_OPSET}–{max_opset()}"):
        export(small_cnn(), opset=11)


def test_truncated_file_error(tmp_path):
    path = tmp_path / "model.onnx"
    data = onnxutil.serialize(small_cnn())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"model\.onnx: .*truncated"):
        export(path)


def test_checker_rejection_names_the_problem():
    model = small_cnn()
    model.graph.node[0].input[1] = "no_such_weight"
    with pytest.raises(ModelError, match=r"ONNX checker rejects the model: .*no_such_weight"):
        export(model)


def test_custom_domain_names_the_node():
    model = small_cnn()
    model.graph.node[1].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    name = model.graph.node[1].name
    with pytest.raises(ModelError, match=rf"node '{name}' \(Relu\) is in operator domain 'com\.microsoft'"):
        export(model)


def test_folding_identity_dropout_and_unused(rng):
    g = GraphBuilder("input", (1, 3, 4, 4), seed=5)
    w = g.const(rng.normal(size=(3, 4, 3, 3)).astype(np.float32))  # stored transposed: folded at export
    wt = g.op("Transpose", [w], perm=[1, 0, 2, 3])
    g.const(np.zeros(1000, np.float32), "unused")
    y = g.op("Conv", [g.input, wt], pads=[1, 1, 1, 1])
    y = g.op("Identity", [y])
    y = g.op("Dropout", [y])
    size = g.op("Size", [y])  # static: folded to a constant, and with it the Cast and the Div
    y = g.op("Div", [y, g.op("Cast", [size], to=TensorProto.FLOAT)])
    out = g.op("Identity", [g.relu(y)])  # a graph output through an Identity keeps its name
    model = g.build(out)
    result = export(model)
    assert ops(result) == ["Conv", "Relu"]  # the Div by the folded constant folds into the conv
    assert result.graph.output[0].name == out
    assert "unused_3" not in {t.name for t in result.graph.initializer}
    names = [n.name for n in result.graph.node]
    assert len(set(names)) == len(names) and all(names)
    assert_same_outputs(model, result, {"input": rng.normal(size=(1, 3, 4, 4)).astype(np.float32)})


def test_local_functions_are_inlined(rng):
    body = [helper.make_node("Mul", ["x", "x"], ["y"])]
    square = helper.make_function("my.layers", "Square", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("Square", ["input"], ["output"], domain="my.layers", name="square")],
        "functions",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("my.layers", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[square], ir_version=8)
    result = export(model)
    assert ops(result) == ["Mul"] and not result.functions
    assert [o.domain for o in result.opset_import] == [""]
    assert_same_outputs(model, result, {"input": rng.normal(size=(1, 3)).astype(np.float32)})


def test_renaming_inputs_and_outputs():
    result = export(small_cnn(), input_names=["image"], output_names=["logits"])
    assert [s.name for s in onnxutil.input_specs(result)] == ["image"]
    assert [s.name for s in onnxutil.output_specs(result)] == ["logits"]
    with pytest.raises(ConfigError, match="input_names has 2 names but the model has 1 input"):
        export(small_cnn(), input_names=["a", "b"])


def test_input_model_is_not_modified():
    model = small_cnn()
    before = onnxutil.serialize(model)
    export(model, input_names=["image"])
    assert onnxutil.serialize(model) == before


def test_example_inputs_only_for_torch():
    with pytest.raises(ConfigError, match="example_inputs is for torch modules only"):
        export(small_cnn(), example_inputs=np.zeros((1, 3, 16, 16), np.float32))


def test_deterministic_and_written_atomically(tmp_path, rng):
    model, _ = conv_bn(rng)
    path = tmp_path / "float.onnx"
    first = export(model, output=path)
    assert path.read_bytes() == onnxutil.serialize(first)
    assert onnxutil.serialize(export(model)) == path.read_bytes()  # byte-identical on a second run
    assert onnxutil.serialize(export(path)) == path.read_bytes()  # and export is idempotent
    with pytest.raises(OutputExistsError):
        export(model, output=path)
    export(model, output=path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["float.onnx"]  # no temporary file left behind


def test_shared_benchmark_models_export_equal(shared_models):
    for name, inputs in (("digits_float_nhwc", "digits"), ("mbv2_32_float_nhwc", "mbv2_32")):
        path = shared_models / f"{name}.onnx"
        result = export(path)
        x = np.load(shared_models / f"{inputs}_test_inputs.npy", allow_pickle=False)[:4]
        for sample in x:
            assert_same_outputs(onnxutil.load_model(path), result, {"input": sample[None]})
    # The Keras/tf2onnx MobileNetV2 left its depthwise BatchNorms as Mul + Add: all folded now.
    assert not {"Mul", "BatchNormalization"} & set(ops(result))


def test_errors_are_one_line(rng):
    for call in (
        lambda: export(with_opset(small_cnn(), 99)),
        lambda: export(dynamic_model(height="H")),
    ):
        with pytest.raises(EdgeqError) as info:
            call()
        assert "\n" not in str(info.value)
