"""The committed digits example (examples/digits/): loadable, as described, as accurate as it claims, and an
int8 model that pays off: within one point of float and faster than float on x86 with the cpu-x86 profile."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import EXAMPLE

from edgeq import onnxutil
from edgeq.export import export

FILES = ("digits_cnn.onnx", "calibration.npz", "test.npz", "model.json")
# README.md reports 1.4-1.7x (medians on a loaded 2-core machine). The bar here is lower so that a busy CI
# runner does not fail it; what it catches is structural: a layer left in float, a lost fusion, a model too
# small for int8 kernels to win (the 1.7 K-parameter predecessor ran at 0.62x).


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((EXAMPLE / "model.json").read_text())


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    with np.load(EXAMPLE / "test.npz", allow_pickle=False) as data:
        return data["input"], data["labels"]


def test_files_are_small():
    assert sum((EXAMPLE / name).stat().st_size for name in FILES) < 1_000_000


def test_model_loads_checks_and_has_the_documented_io(meta):
    model = onnxutil.load_model(EXAMPLE / "digits_cnn.onnx")
    onnx.checker.check_model(model, full_check=True)
    inputs, outputs = onnxutil.input_specs(model), onnxutil.output_specs(model)
    assert [(s.name, s.shape, s.dtype) for s in inputs] == [("input", (1, 1, 8, 8), np.float32)]
    assert [(s.name, s.shape, s.dtype) for s in outputs] == [("logits", (1, 10), np.float32)]
    assert (meta["input"]["name"], meta["input"]["shape"]) == ("input", [1, 1, 8, 8])
    assert (meta["output"]["name"], meta["output"]["shape"]) == ("logits", [1, 10])
    assert meta["classes"] == [str(i) for i in range(10)]
    assert meta["preprocessing"]["scale"] == 1 / 16
    # What the example is for: depthwise-separable convs, a residual add, ReLU6, GAP, a linear classifier,
    # with the training BatchNorms folded away by export.
    op_types = {n.op_type for n in model.graph.node}
    assert {"Conv", "Add", "Clip", "GlobalAveragePool", "Gemm"} <= op_types
    assert "BatchNormalization" not in op_types
    assert any(
        n.op_type == "Conv" and onnx.helper.get_node_attr_value(n, "group") > 1 for n in model.graph.node
    )


def test_model_has_the_documented_architecture(meta):
    """Stem 3×3 → inverted residual (1×1 expand, depthwise 3×3, 1×1 project, add) → strided depthwise 3×3 →
    1×1 → GAP → linear, with the widths model.json gives; every conv but the projection ends in ReLU6."""
    model = onnxutil.load_model(EXAMPLE / "digits_cnn.onnx")
    arch = meta["architecture"]
    width, hidden, head = arch["width"], arch["width"] * arch["expansion"], arch["head"]
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    attr = onnx.helper.get_node_attr_value
    layers = [
        (weights[n.input[1]], attr(n, "group"), tuple(attr(n, "strides")))
        for n in model.graph.node
        if n.op_type == "Conv"
    ]
    assert layers == [
        ((width, 1, 3, 3), 1, (1, 1)),  # stem
        ((hidden, width, 1, 1), 1, (1, 1)),  # expand
        ((hidden, 1, 3, 3), hidden, (1, 1)),  # depthwise
        ((width, hidden, 1, 1), 1, (1, 1)),  # project (linear bottleneck)
        ((width, 1, 3, 3), width, (2, 2)),  # strided depthwise
        ((head, width, 1, 1), 1, (1, 1)),  # pointwise
    ]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Add") == 1 and ops.count("Clip") == 5
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert weights[gemm.input[1]] == (10, head)
    assert arch["activation"] == "ReLU6"
    assert meta["parameters"] > 50_000  # wide enough for int8 to pay off; see MIN_SPEEDUP


def test_committed_model_is_what_export_produces():
    path = EXAMPLE / "digits_cnn.onnx"
    assert onnxutil.serialize(export(path)) == path.read_bytes()


def test_data_files(test_set):
    x_test, labels = test_set
    with np.load(EXAMPLE / "calibration.npz", allow_pickle=False) as data:
        assert list(data) == ["input"]
        calibration = data["input"]
    assert calibration.shape == (1437, 1, 8, 8) and calibration.dtype == np.float32
    assert x_test.shape == (360, 1, 8, 8) and x_test.dtype == np.float32
    assert labels.shape == (360,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    for x in (calibration, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        assert np.array_equal(x * 16, np.round(x * 16))  # pixel counts 0..16, divided by 16


def test_float_accuracy_matches_model_json(meta, test_set):
    x_test, labels = test_set
    session = onnxutil.ort_session(EXAMPLE / "digits_cnn.onnx")
    predictions = np.array([np.argmax(session.run(["logits"], {"input": x[None]})[0]) for x in x_test])
    correct = int((predictions == labels).sum())
    assert correct == meta["test_correct"]
    assert len(labels) == meta["test_samples"]
    assert correct / len(labels) == meta["float_test_accuracy"]
    assert meta["float_test_accuracy"] >= 0.95


@dataclass(frozen=True)
class Pipeline:
    float_path: Path
    int8_path: Path
    summary: object  # edgeq.quantize's QuantizeSummary


@pytest.fixture(scope="module")
def cpu_x86(tmp_path_factory) -> Pipeline:
    """The example through the real pipeline as `edgeq demo` runs it: export, calibrate with the digits-8
    recipe, quantize for cpu-x86 (uint8 activations, per-channel int8 weights), both models saved."""
    from edgeq.calibrate import calibrate
    from edgeq.quantize import quantize

    out = tmp_path_factory.mktemp("digits-cpu-x86")
    float_model = export(EXAMPLE / "digits_cnn.onnx")
    table = calibrate(float_model, EXAMPLE / "calibration.npz", recipe="digits-8", progress=False)
    result = quantize(float_model, table, target="cpu-x86")
    onnxutil.save_model(float_model, out / "float.onnx")
    onnxutil.save_model(result.model, out / "model.int8.onnx")
    return Pipeline(out / "float.onnx", out / "model.int8.onnx", result.summary)


def test_int8_is_within_one_point_of_float_on_cpu_x86(cpu_x86, meta):
    from edgeq.data import load_labels
    from edgeq.validate import Thresholds, validate

    assert not cpu_x86.summary.float_ops  # the whole network runs in int8
    report = validate(
        cpu_x86.float_path,
        cpu_x86.int8_path,
        EXAMPLE / "test.npz",
        labels=load_labels(EXAMPLE / "test.npz"),
        thresholds=Thresholds(max_top1_drop=1.0, min_agreement=99.0),
        latency_runs=0,
        layers=False,
        progress=False,
    )
    assert report.passed, report.failures()
    (logits,) = report.outputs
    assert logits.float_correct == meta["test_correct"]
    assert logits.float_correct / logits.samples >= 0.97
    assert 100 * (logits.float_correct - logits.quant_correct) / logits.samples <= 1.0


def test_int8_runs_fully_fused_on_cpu_x86(cpu_x86, tmp_path):
    """Why the int8 model is faster than float (benchmarks/latency.py measures by how much: speed is a
    benchmark, not a timed test): onnxruntime fuses every Conv and Gemm into an int8 kernel, no float conv
    or matmul is left, and Q/DQ remain only at the model's edges."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(cpu_x86.int8_path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "Conv" not in ops and "Gemm" not in ops and "MatMul" not in ops, ops
    assert ops.count("QLinearConv") == 6, ops
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") <= 1, ops


@pytest.mark.slow
def test_training_reproduces_the_committed_files(tmp_path):
    pytest.importorskip("torch", reason="re-training the example needs torch: pip install 'edgeq[torch]'")
    pytest.importorskip(
        "sklearn", reason="re-training the example needs scikit-learn: pip install 'edgeq[examples]'"
    )
    spec = importlib.util.spec_from_file_location("digits_train", EXAMPLE / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    assert train.main(["--out", str(tmp_path)]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name
