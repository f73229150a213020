"""Empirical bias correction: the int8 model's mean per-channel error goes down, the output error too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builder import GraphBuilder
from onnx import numpy_helper

from edgeq.accuracy import correct_bias
from edgeq.calibrate import calibrate
from edgeq.config import load_target
from edgeq.errors import ConfigError, ModelError
from edgeq.onnxutil import ort_session
from edgeq.quantize import quantize

PER_TENSOR = """
name = "test-per-tensor"
description = "x86 onnxruntime with per-tensor int8 weights (coarse: a systematic error per channel)"
kind = "desktop"
runtimes = ["onnxruntime"]

[hardware]
cpu = "x86-64"
arch = "x86_64"

[quantization]
activations = "uint8"
per_channel = false
"""


@pytest.fixture(scope="module")
def per_tensor(tmp_path_factory):
    path = tmp_path_factory.mktemp("targets") / "per-tensor.toml"
    path.write_text(PER_TENSOR)
    return load_target(path)


def model_and_data(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """conv → ReLU → depthwise (channel ranges 100× apart) → ReLU → pointwise (no bias) → GAP → Gemm."""
    g = GraphBuilder("input", (1, 3, 8, 8), seed=seed)
    x = g.relu(g.conv(g.input, 3, 8, 3))
    x = g.relu(g.conv(x, 8, 8, 3, group=8))
    x = g.conv(x, 8, 8, 1, bias=False)
    model = g.build(g.gemm(g.flatten(g.gap(x)), 8, 4))
    dw = [n for n in model.graph.node if n.op_type == "Conv"][1]
    t = next(t for t in model.graph.initializer if t.name == dw.input[1])
    w = numpy_helper.to_array(t) * np.geomspace(0.01, 1.0, 8, dtype=np.float32)[:, None, None, None]
    t.CopyFrom(numpy_helper.from_array(w.astype(np.float32), t.name))
    x = np.random.default_rng(seed).uniform(0, 1, (64, 3, 8, 8)).astype(np.float32)
    return model, x


def channel_mean_error(float_model, qdq_model, node: str, x: np.ndarray) -> np.ndarray:
    """|E[y_int8 - y_float]| per output channel of ``node`` (fake-quant QDQ, pre-activation)."""

    def fetch(model):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        out = next(n for n in m.graph.node if n.name == node).output[0]
        m.graph.output.append(onnx.ValueInfoProto(name=out))
        s = ort_session(m, optimize=False)
        return np.stack([s.run([out], {"input": x[i : i + 1]})[0][0] for i in range(len(x))])

    err = fetch(qdq_model).astype(np.float64) - fetch(float_model)
    return np.abs(err.mean(axis=(0, 2, 3)))


def test_bias_correction_reduces_the_mean_per_channel_error(per_tensor):
    model, x = model_and_data(seed=2)
    table = calibrate(model, x)
    result = correct_bias(model, table, x, target=per_tensor)
    assert [c.applied for c in result.layers] == [True] * 4, result.text()
    for c in result.layers:
        assert c.error_after < 0.1 * c.error_before, c
    # checked independently on the first layer (measured before any other correction)
    first = result.layers[0].node
    before = channel_mean_error(model, quantize(model, table, target=per_tensor).model, first, x)
    after = channel_mean_error(
        model, quantize(result.model, table.ranges(), target=per_tensor).model, first, x
    )
    assert after.mean() < 0.2 * before.mean()
    assert result.num_samples == 64
    assert "bias correction" in result.text()


def test_bias_correction_lowers_the_output_error(per_tensor):
    model, x = model_and_data(seed=1)
    table = calibrate(model, x)
    corrected = correct_bias(model, table, x, target=per_tensor).model
    float_out = ort_session(model).run(None, {"input": x[:1]})[0]
    s_plain = ort_session(quantize(model, table, target=per_tensor).model)
    s_corr = ort_session(quantize(corrected, table.ranges(), target=per_tensor).model)
    f = np.concatenate([ort_session(model).run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    p = np.concatenate([s_plain.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    c = np.concatenate([s_corr.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    assert float_out.shape == (1, 4)
    assert np.mean((c - f) ** 2) < np.mean((p - f) ** 2)


def test_a_conv_without_bias_gets_one_and_the_input_is_unchanged(per_tensor):
    model, x = model_and_data()
    before = model.SerializeToString()
    result = correct_bias(model, calibrate(model, x), x, target=per_tensor)
    assert model.SerializeToString() == before
    pointwise = [n for n in result.model.graph.node if n.op_type == "Conv"][2]
    if any(c.node == pointwise.name and c.applied for c in result.layers):
        assert len(pointwise.input) == 3 and pointwise.input[2]
        bias = next(t for t in result.model.graph.initializer if t.name == pointwise.input[2])
        assert numpy_helper.to_array(bias).shape == (8,)
    onnx.checker.check_model(result.model)


def test_per_channel_digits_example_output_error_does_not_grow():
    from pathlib import Path

    from edgeq.onnxutil import load_model

    example = Path(__file__).resolve().parent.parent / "examples" / "digits"
    model = load_model(example / "digits_cnn.onnx")
    with np.load(example / "calibration.npz") as data:
        x = data["input"][:200]
    table = calibrate(model, x)
    result = correct_bias(model, table, x, target="cpu-x86")
    # every correction kept lowered the output error on these samples (the guard); none raised it
    assert all(c.error_after <= c.error_before * 1.01 or not c.applied for c in result.layers)


def test_table_of_another_model_is_refused(per_tensor):
    model, x = model_and_data()
    other, _ = model_and_data(seed=5)
    with pytest.raises(ModelError, match="another model"):
        correct_bias(model, calibrate(other, x), x, target=per_tensor)


def test_bad_sample_count(per_tensor):
    model, x = model_and_data()
    with pytest.raises(ConfigError, match="num_samples"):
        correct_bias(model, calibrate(model, x), x, target=per_tensor, num_samples=0)
