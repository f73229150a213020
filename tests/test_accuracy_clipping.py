"""Weight clipping search and float outputs: what the quantizer then does is exactly what they assumed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builder import GraphBuilder
from onnx import numpy_helper

from edgeq.accuracy import clip_weights, float_outputs
from edgeq.accuracy.clipping import mse_limits
from edgeq.calibrate import calibrate
from edgeq.errors import ConfigError
from edgeq.onnxutil import ort_session
from edgeq.quantize import quantize


def int8_error(rows: np.ndarray, limit: np.ndarray) -> np.ndarray:
    scale = (limit / 127).astype(np.float32).astype(np.float64)
    q = np.clip(np.rint(rows / scale[:, None]), -127, 127)
    return np.sum((rows - q * scale[:, None]) ** 2, axis=1)


def test_mse_limit_clips_where_it_pays_and_never_loses(rng):
    # At 8 bits the rounding error is small: clipping one large weight pays only when it buys a finer step
    # for very many others (row 0: 100k weights), not in a small channel (row 1: 36 weights, 20σ outlier).
    big = rng.uniform(-1, 1, (1, 100_000))
    big[0, 0] = 5.0
    small = rng.normal(0, 1, (1, 36))
    small[0, 3] = 20.0
    for rows, clipped in ((big, True), (small, False)):
        limit = mse_limits(rows)
        absmax = np.abs(rows).max(axis=1)
        assert bool(limit[0] < 0.8 * absmax[0]) == clipped
        assert limit[0] <= absmax[0]
        assert int8_error(rows, limit)[0] <= int8_error(rows, absmax)[0]
    assert int8_error(big, mse_limits(big))[0] < 0.75 * int8_error(big, np.abs(big).max(axis=1))[0]
    assert mse_limits(np.zeros((1, 5)))[0] == 0.0


K = 40_000


def wide_gemm() -> onnx.ModelProto:
    """A (K → 3) Gemm whose rows each carry one weight 4× the others: clipping pays for rows this wide."""
    g = GraphBuilder("input", (1, K), seed=3)
    model = g.build(g.gemm(g.input, K, 3))
    t = next(t for t in model.graph.initializer if t.name == model.graph.node[0].input[1])
    w = np.random.default_rng(4).uniform(-0.01, 0.01, (3, K)).astype(np.float32)
    w[:, 5] = 0.04
    t.CopyFrom(numpy_helper.from_array(w, t.name))
    return model


def test_clipped_weights_quantize_exactly_as_searched(rng):
    model = wide_gemm()
    result = clip_weights(model)
    (gemm,) = result.weights
    assert gemm.clipped == 3 and gemm.error_after < 0.9 * gemm.error_before
    assert "1 of 1 weight tensors clipped" in result.text()
    w0 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == gemm.weight))
    w1 = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == gemm.weight))
    limits = mse_limits(w0.astype(np.float64))
    assert np.array_equal(np.abs(w1).max(axis=1), limits.astype(np.float32))
    # the quantizer reads max|w| of the clipped weights: its scale is the searched limit / 127, bit for bit
    x = rng.uniform(0, 1, (4, K)).astype(np.float32)
    q = quantize(result.model, calibrate(model, x).ranges(), target="cpu-x86").model
    scales = next(numpy_helper.to_array(t) for t in q.graph.initializer if t.name == f"{gemm.weight}_scale")
    assert np.array_equal(scales, (limits / 127).astype(np.float32))


def test_per_tensor_clipping_and_switches():
    model = wide_gemm()
    result = clip_weights(model, per_channel=False)
    assert result.weights[0].channels == 1 and result.weights[0].clipped == 1
    unchanged = clip_weights(model, method="none")
    assert unchanged.weights == () and unchanged.model.SerializeToString() == model.SerializeToString()
    with pytest.raises(ConfigError, match="unknown method 'max'; known: none, mse"):
        clip_weights(model, method="max")


def classifier(seed: int = 0) -> onnx.ModelProto:
    g = GraphBuilder("input", (1, 3, 6, 6), seed=seed)
    x = g.relu(g.conv(g.input, 3, 8, 3))
    return g.build(g.gemm(g.flatten(g.gap(x)), 8, 5))


def test_float_outputs_keep_int8_compute_and_drop_the_output_rounding(rng, tmp_path):
    import onnxruntime as ort

    model = classifier()
    x = rng.uniform(0, 1, (40, 3, 6, 6)).astype(np.float32)
    full = quantize(model, calibrate(model, x), target="cpu-x86")
    result = float_outputs(full)
    out = model.graph.output[0].name
    assert result.outputs == (out,)
    producer = {o: n for n in result.model.graph.node for o in n.output}
    assert producer[out].op_type == "Gemm"
    onnx.checker.check_model(result.model)
    # onnxruntime still runs the Gemm in int8: a QGemm with float output
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(result.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "QGemm" in ops and "Gemm" not in ops
    # and the output error is at most the quantized one's (it only lost its last rounding)
    f = np.concatenate([ort_session(model).run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    s_full, s_float = ort_session(full.model), ort_session(result.model)
    e_full = np.concatenate([s_full.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))]) - f
    e_float = np.concatenate([s_float.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))]) - f
    assert np.mean(e_float**2) < np.mean(e_full**2)
    assert float_outputs(result.model).outputs == ()  # idempotent


def test_conv_outputs_stay_quantized(rng):
    g = GraphBuilder("input", (1, 3, 6, 6), seed=0)
    model = g.build(g.conv(g.input, 3, 4, 3))
    x = rng.uniform(0, 1, (10, 3, 6, 6)).astype(np.float32)
    q = quantize(model, calibrate(model, x), target="cpu-x86").model
    assert float_outputs(q).outputs == ()
