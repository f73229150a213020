"""Whole models as .tflite in LiteRT: the digits CNNs and a 32×32 MobileNetV2-style net (depthwise, residual
adds, ReLU6), quantized to QDQ int8, lowered, written, and run with LiteRT's builtin reference kernels.

Required: every output element within 1 LSB of edgeq's reference interpreter, and top-1 agreement with the
float model ≥ 99 %. XNNPACK (LiteRT's default CPU path, what a phone runs) is measured and reported, not
required to match bit for bit.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE, SHARED_MODELS
from test_tflite_util import digits_images, litert, quantize_qdq, upsample_rgb

from edgeq.backends.tflite import describe, read_metadata, write_tflite
from edgeq.lower import lower, run
from edgeq.onnxutil import ort_session


@dataclass(frozen=True)
class Case:
    float_model: Path
    calibration: np.ndarray  # float samples, model layout, no batch axis
    test: np.ndarray
    labels: np.ndarray
    litert_samples: int  # test images run through LiteRT's reference kernels
    reference_samples: int  # of which also through edgeq's (slower) numpy reference


def _case(name: str) -> Case:
    if name == "digits_example":
        if not (EXAMPLE / "digits_cnn.onnx").is_file():
            pytest.skip(f"the digits example is not built yet ({EXAMPLE / 'digits_cnn.onnx'} missing)")
        calib = np.load(EXAMPLE / "calibration.npz", allow_pickle=False)["input"][:, 0]
        test = np.load(EXAMPLE / "test.npz", allow_pickle=False)
        return Case(EXAMPLE / "digits_cnn.onnx", calib[:400], test["input"][:, 0], test["labels"], 360, 360)
    if not (SHARED_MODELS / "digits_float_nhwc.onnx").is_file():
        pytest.skip(
            f"benchmark models not found at {SHARED_MODELS} (they sit beside the repository in shared/)"
        )
    xtr, _, _, _ = digits_images()
    labels = np.load(SHARED_MODELS / "test_labels.npy", allow_pickle=False)
    if name == "digits":
        test = np.load(SHARED_MODELS / "digits_test_inputs.npy", allow_pickle=False)
        return Case(SHARED_MODELS / "digits_float_nhwc.onnx", xtr[:400], test, labels, 360, 360)
    test = np.load(SHARED_MODELS / "mbv2_32_test_inputs.npy", allow_pickle=False)
    return Case(SHARED_MODELS / "mbv2_32_float_nhwc.onnx", upsample_rgb(xtr[:200]), test, labels, 200, 4)


def _invoke(it, x: np.ndarray) -> np.ndarray:
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize(
    "name", ["digits", "digits_example", pytest.param("mbv2_32", marks=pytest.mark.slow)]
)
def test_model_in_litert(name, tmp_path):
    case = _case(name)
    start = time.perf_counter()
    calib = case.calibration if name != "digits_example" else case.calibration[:, None]
    qdq = quantize_qdq(case.float_model, calib, tmp_path / "model.qdq.onnx", preprocess=True)
    program = lower(qdq)
    data = write_tflite(program, metadata={"labels": [str(i) for i in range(10)]})
    summary = describe(data)
    assert read_metadata(data)["labels"][9] == "9"
    (x_name,), (y_name,) = program.inputs, program.outputs

    test = case.test if name != "digits_example" else case.test[:, None]
    sess = ort_session(case.float_model)
    float_in = sess.get_inputs()[0].name
    float_top1 = np.array(
        [sess.run(None, {float_in: x[None]})[0].argmax() for x in test[: case.litert_samples]]
    )

    ref_it, xnn_it = litert(data), litert(data, reference=False)
    int8_top1, xnn_top1, diffs, xnn_diffs = [], [], [], []
    for i, x in enumerate(test[: case.litert_samples]):
        q = program.quantize_input(x_name, x[None])
        got = _invoke(ref_it, q)
        xnn = _invoke(xnn_it, q)
        if i < case.reference_samples:
            want = run(program, {x_name: q})[y_name]
            diffs.append(np.abs(got.astype(np.int64) - want).ravel())
        xnn_diffs.append(np.abs(xnn.astype(np.int64) - got).ravel())
        int8_top1.append(program.dequantize_output(y_name, got).argmax())
        xnn_top1.append(program.dequantize_output(y_name, xnn).argmax())
    d, xd = np.concatenate(diffs), np.concatenate(xnn_diffs)
    int8_top1, xnn_top1 = np.array(int8_top1), np.array(xnn_top1)
    agreement = float((int8_top1 == float_top1).mean())
    labels = case.labels[: case.litert_samples]
    ops = summary.operators
    acc_float, acc_int8 = (float_top1 == labels).mean(), (int8_top1 == labels).mean()
    exact, n_ref, n_lite = 100 * (d == 0).mean(), case.reference_samples, case.litert_samples
    xnn_agree = 100 * (xnn_top1 == float_top1).mean()
    report = [
        f"{name}: .tflite {len(data)} B, {ops.count('CONV_2D')} conv, {ops.count('DEPTHWISE_CONV_2D')} dw, "
        f"{ops.count('ADD')} add, {len(ops)} ops",
        f"  LiteRT builtin-ref vs edgeq reference ({n_ref} images): {exact:.2f} % exact, max {d.max()} LSB",
        f"  top-1 agreement with float ({n_lite} images): {100 * agreement:.2f} %; "
        f"accuracy float {100 * acc_float:.2f} %, int8 {100 * acc_int8:.2f} %",
        f"  XNNPACK vs builtin-ref: {100 * (xd > 0).mean():.1f} % of outputs differ, max {xd.max()} LSB; "
        f"top-1 agreement with float {xnn_agree:.2f} %",
        f"  {time.perf_counter() - start:.1f} s",
    ]
    print("\n" + "\n".join(report), file=sys.stderr)
    assert d.max() <= 1
    assert agreement >= 0.99
