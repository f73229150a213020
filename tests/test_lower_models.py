"""The two benchmark models (/work/shared/models: digits 8×8×1 and a 32×32 MobileNetV2-style net) through
QDQ → integer program: bit-exact with LiteRT's reference kernels, top-1 agreement with the float model, and
the reference interpreter's speed. Also the canonical QDQ form of edgeq.quantize and the product .tflite
writer on a lowered program.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from builder import small_cnn

from edgeq.lower import lower, run
from edgeq.onnxutil import ort_session

tfl = pytest.importorskip("test_lower_tflite_util", reason="ai-edge-litert (LiteRT) is not installed")
quantization = pytest.importorskip("onnxruntime.quantization", reason="onnxruntime.quantization is missing")

MODELS = Path("/work/shared/models")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


def _qdq_from_data(float_path: Path, out: Path, data: np.ndarray) -> Path:
    name = onnx.load(float_path).graph.input[0].name

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.it = iter({name: x[None]} for x in data)

        def get_next(self):
            return next(self.it, None)

    quantization.quantize_static(
        str(float_path),
        str(out),
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        extra_options={"ActivationSymmetric": False},
    )
    return out


def _check_model(float_path: Path, inputs: np.ndarray, tmp_path, *, calib: int, n: int):
    qdq = _qdq_from_data(float_path, tmp_path / "qdq.onnx", inputs[:calib])
    program = lower(qdq)
    assert "TRANSPOSE" not in [op.kind.value for op in program.ops]
    model = tfl.to_tflite(program)
    fsess = ort_session(float_path)
    fname = fsess.get_inputs()[0].name
    test = inputs[-n:]  # not the calibration images
    agree, exact, total, times = 0, 0, 0, []
    for x in test:
        q = program.quantize_input(program.inputs[0], x[None])
        t0 = time.perf_counter()
        out = run(program, {program.inputs[0]: q})[program.outputs[0]]
        times.append(time.perf_counter() - t0)
        lit = tfl.run_litert(model, {program.inputs[0]: q}, list(program.outputs))[program.outputs[0]]
        exact += int((lit == out).sum())
        total += out.size
        ref = fsess.run(None, {fname: x[None]})[0]
        agree += int(np.argmax(ref) == np.argmax(out))
    return program, exact / total, agree / len(test), float(np.median(times))


def test_digits_model_is_bit_exact_with_litert_and_agrees_with_float(tmp_path):
    inputs = np.load(_need(MODELS / "digits_test_inputs.npy"))
    p, exact, agree, t = _check_model(
        _need(MODELS / "digits_float_nhwc.onnx"), inputs, tmp_path, calib=100, n=120
    )
    print(
        f"digits: {len(p.ops)} ops, LiteRT bit-exact {100 * exact:.2f} %, top-1 agreement with float "
        f"{100 * agree:.1f} %, reference {1000 * t:.1f} ms/image"
    )
    assert exact == 1.0
    assert agree >= 0.97


@pytest.mark.slow
def test_mbv2_model_is_bit_exact_with_litert_agrees_and_runs_fast(tmp_path):
    inputs = np.load(_need(MODELS / "mbv2_32_test_inputs.npy"))
    p, exact, agree, t = _check_model(
        _need(MODELS / "mbv2_32_float_nhwc.onnx"), inputs, tmp_path, calib=24, n=20
    )
    print(
        f"mbv2_32: {len(p.ops)} ops, LiteRT bit-exact {100 * exact:.2f} %, top-1 agreement with float "
        f"{100 * agree:.1f} %, reference {1000 * t:.1f} ms/image"
    )
    assert exact == 1.0
    assert agree >= 0.95  # (the reference's speed is printed above, not asserted: speed is for benchmarks)


def _ranges(model: onnx.ModelProto, xs: np.ndarray) -> dict[str, tuple[float, float]]:
    """min/max (always containing 0) of every float tensor, over ``xs``."""
    inferred = onnx.shape_inference.infer_shapes(model)
    names = [v.name for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)]
    probe = onnx.ModelProto()
    probe.CopyFrom(inferred)
    del probe.graph.output[:]
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names
    )
    sess = ort_session(probe)
    lo = dict.fromkeys(names, 0.0)
    hi = dict.fromkeys(names, 0.0)
    for x in xs:
        for n, v in zip(names, sess.run(None, {inferred.graph.input[0].name: x}), strict=True):
            lo[n], hi[n] = min(lo[n], float(v.min())), max(hi[n], float(v.max()))
    return {n: (lo[n], hi[n]) for n in names}


def test_edgeq_quantize_output_for_a_tflite_target_lowers_bit_exactly():
    quantize = pytest.importorskip("edgeq.quantize").quantize
    model = small_cnn(seed=3)
    xs = np.random.default_rng(0).normal(0, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    result = quantize(model, _ranges(model, xs), target="android-arm64")
    p = lower(result.model)
    # TFLite constraints applied while quantizing: no requantizations are needed in the program.
    assert "QUANTIZE" not in [op.kind.value for op in p.ops]
    sess = ort_session(result.model)
    m = tfl.to_tflite(p)
    for x in xs[:4]:
        q = p.quantize_input(p.inputs[0], x)
        out = run(p, {p.inputs[0]: q})[p.outputs[0]]
        lit = tfl.run_litert(m, {p.inputs[0]: q}, list(p.outputs))[p.outputs[0]]
        np.testing.assert_array_equal(out, lit)
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        steps = (
            np.abs(p.dequantize_output(p.outputs[0], out) - ref) / p.tensors[p.outputs[0]].qparams.scale[0]
        )
        assert np.rint(steps).max() <= 1


def test_product_tflite_writer_runs_the_program_bit_exactly(tmp_path):
    write_tflite = pytest.importorskip("edgeq.backends.tflite").write_tflite
    qdq = _qdq_from_data(
        _need(MODELS / "digits_float_nhwc.onnx"),
        tmp_path / "q.onnx",
        np.load(_need(MODELS / "digits_test_inputs.npy"))[:50],
    )
    p = lower(qdq)
    model = write_tflite(p)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rng = np.random.default_rng(5)
    for _ in range(8):
        q = rng.integers(-128, 128, p.tensors[p.inputs[0]].shape).astype(np.int8)
        it.set_tensor(inp["index"], q.reshape(inp["shape"]))
        it.invoke()
        ref = run(p, {p.inputs[0]: q})[p.outputs[0]]
        np.testing.assert_array_equal(it.get_tensor(out["index"]).reshape(ref.shape), ref)
