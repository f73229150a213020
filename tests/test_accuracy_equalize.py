"""Cross-layer equalization: the float function is unchanged (for every input), the ranges are equalized."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from builder import GraphBuilder
from onnx import TensorProto, helper, numpy_helper

from edgeq.accuracy import equalize
from edgeq.errors import ConfigError
from edgeq.onnxutil import load_model, ort_session

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"


@pytest.fixture(scope="module")
def example_model() -> onnx.ModelProto:
    return load_model(EXAMPLE / "digits_cnn.onnx")


@pytest.fixture(scope="module")
def example_data() -> np.ndarray:
    with np.load(EXAMPLE / "test.npz") as data:
        return data["input"]


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort_session(model)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def relative_change(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray) -> float:
    fa, fb = run(a, x), run(b, x)
    return float(np.max(np.abs(fa - fb)) / np.max(np.abs(fa)))


def arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def set_array(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))


def relu_chain(seed: int = 0) -> onnx.ModelProto:
    """conv-relu → depthwise-relu → pointwise-relu → maxpool → conv-relu → GAP → flatten → gemm, with the
    channels of each pair rescaled by factors 1e-2 … 1e2 (function unchanged): what BN folding can leave."""
    g = GraphBuilder("input", (1, 3, 12, 12), seed=seed)
    x = g.relu(g.conv(g.input, 3, 8, 3))
    x = g.relu(g.conv(x, 8, 8, 3, group=8))
    x = g.relu(g.conv(x, 8, 16, 1))
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.relu(g.conv(x, 16, 16, 3))
    x = g.flatten(g.gap(x))
    model = g.build(g.gemm(x, 16, 5))
    rng = np.random.default_rng(seed + 1)
    w = arrays(model)
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    for a, b in itertools.pairwise(convs):
        s = np.exp(rng.uniform(-np.log(100), np.log(100), w[a.input[1]].shape[0]))
        w[a.input[1]] = w[a.input[1]] * s[:, None, None, None]
        w[a.input[2]] = w[a.input[2]] * s
        wb = w[b.input[1]]
        if b.op_type == "Gemm":
            w[b.input[1]] = wb / s[None, :]
        elif wb.shape[1] == 1:  # depthwise
            w[b.input[1]] = wb / s[:, None, None, None]
        else:
            w[b.input[1]] = wb / s[None, :, None, None]
    for name, value in w.items():
        set_array(model, name, value)
    return model


def test_equalization_keeps_the_function_and_equalizes_the_ranges(rng):
    model = relu_chain()
    result = equalize(model)
    x = rng.normal(0, 1, (16, 1, 3, 12, 12)).astype(np.float32).reshape(16, 3, 12, 12)
    assert relative_change(model, result.model, x) < 1e-5
    layers = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert [(p.producer, p.consumer) for p in result.pairs] == list(itertools.pairwise(layers))
    assert result.pairs[3].via == ("Relu", "GlobalAveragePool", "Flatten")
    assert result.pairs[2].via == ("Relu", "MaxPool")
    for p in result.pairs:
        assert p.spread_before > 10 and p.spread_after < p.spread_before / 5
    assert model.graph.node == result.model.graph.node  # only initializers change
    assert "4 layer pairs" in result.text()


def test_equalization_with_data_uses_activation_ranges(rng):
    model = relu_chain(seed=3)
    x = rng.uniform(0, 1, (32, 3, 12, 12)).astype(np.float32)
    result = equalize(model, data=x)
    assert relative_change(model, result.model, x) < 1e-5
    # the measured activation range of each channel where the consumer reads it, before and after
    for p in result.pairs:
        assert p.spread_before > 10 and p.spread_after < p.spread_before / 5


def test_input_model_is_not_modified():
    model = relu_chain()
    before = model.SerializeToString()
    equalize(model)
    assert model.SerializeToString() == before


def bounded_relu6_model(seed: int = 0) -> onnx.ModelProto:
    """input → ReLU6 → conv → ReLU6 → conv: the first conv's input is provably in [0, 6]."""
    g = GraphBuilder("input", (1, 4, 6, 6), seed=seed)
    x = g.relu6(g.input)
    x = g.relu6(g.conv(x, 4, 6, 1))
    return g.build(g.conv(x, 6, 3, 1))


def test_relu6_channels_are_scaled_only_where_the_clip_never_engages(rng):
    model = bounded_relu6_model()
    w = arrays(model)
    conv = [n for n in model.graph.node if n.op_type == "Conv"]
    w1, b1 = w[conv[0].input[1]].copy(), w[conv[0].input[2]].copy()
    # channels 0-2: tiny weights, so |pre-activation| ≤ 6·Σ|w| + |b| < 6 for every input; channels 3-5 can
    # reach the clip. Give the tiny channels very different ranges, so equalization wants to move them.
    w1[:3] = w1[:3] * np.array([1e-3, 1e-2, 3e-2])[:, None, None, None]
    b1[:3] = b1[:3] * 1e-3
    set_array(model, conv[0].input[1], w1)
    set_array(model, conv[0].input[2], b1)
    result = equalize(model)
    (pair,) = result.pairs
    assert pair.via == ("Clip",) and pair.pinned == 3
    after = arrays(result.model)[conv[0].input[1]]
    assert np.array_equal(after[3:], w1[3:])  # pinned channels untouched
    assert not np.allclose(after[:3], w1[:3])
    # exact for every input, including ones far outside any calibration range (the clips saturate)
    x = rng.normal(0, 20, (32, 4, 6, 6)).astype(np.float32)
    assert relative_change(model, result.model, x) < 1e-5


def test_relu6_without_provable_bounds_is_left_alone(rng):
    g = GraphBuilder("input", (1, 3, 6, 6), seed=1)
    x = g.relu6(g.conv(g.input, 3, 6, 3))  # the model input is unbounded: the clip may engage anywhere
    model = g.build(g.conv(x, 6, 4, 1))
    result = equalize(model)
    (pair,) = result.pairs
    assert pair.pinned == 6
    assert arrays(result.model).keys() == arrays(model).keys()
    for name, value in arrays(model).items():
        assert np.array_equal(arrays(result.model)[name], value)


def test_shared_weights_and_branches_are_not_equalized():
    g = GraphBuilder("input", (1, 3, 6, 6), seed=2)
    a = g.relu(g.conv(g.input, 3, 4, 3))
    b = g.conv(a, 4, 4, 1)
    c = g.conv(a, 4, 4, 1)  # a has two readers: scaling it would need both to compensate
    model = g.build(g.add(b, c))
    assert equalize(model).pairs == ()


def layernorm_model(seed: int = 0) -> onnx.ModelProto:
    """x → LayerNorm (outlier channels in γ, β) → MatMul → Add → Relu → MatMul; tokens on axis 1."""
    rng = np.random.default_rng(seed)
    d = 8
    gamma = rng.uniform(0.5, 1.5, d)
    beta = rng.normal(0, 0.1, d)
    gamma[[1, 5]] *= 100.0
    beta[[1, 5]] *= 100.0
    w1 = rng.normal(0, 0.3, (d, 12))
    w1[[1, 5], :] /= 100.0
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], name="ln", axis=-1),
        helper.make_node("MatMul", ["n", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for n, a in (
            ("gamma", gamma),
            ("beta", beta),
            ("w1", w1),
            ("b1", rng.normal(0, 0.1, 12)),
            ("w2", rng.normal(0, 0.3, (12, 3))),
        )
    ]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def test_layernorm_outlier_channels_migrate_into_the_next_matmul(rng):
    model = layernorm_model()
    result = equalize(model)
    names = [(p.producer, p.consumer, p.via) for p in result.pairs]
    assert names == [("ln", "mm1", ()), ("mm1", "mm2", ("Add", "Relu"))]
    assert result.pairs[0].spread_before > 50 and result.pairs[0].spread_after < 5
    x = rng.normal(0, 3, (20, 4, 8)).astype(np.float32)
    assert relative_change(model, result.model, x) < 1e-5


def test_digits_example_is_unchanged(example_model, example_data):
    result = equalize(example_model)
    assert relative_change(example_model, result.model, example_data[:100]) < 1e-5
    result = equalize(example_model, data=example_data[:100])
    assert relative_change(example_model, result.model, example_data[:100]) < 1e-5


def test_bad_sweeps():
    with pytest.raises(ConfigError, match="sweeps"):
        equalize(relu_chain(), sweeps=0)
