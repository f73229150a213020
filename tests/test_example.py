"""The committed digits example (examples/digits/): loadable, as described, and as accurate as it claims."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from conftest import EXAMPLE

from edgeq import onnxutil
from edgeq.export import export

FILES = ("digits_cnn.onnx", "calibration.npz", "test.npz", "model.json")


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
