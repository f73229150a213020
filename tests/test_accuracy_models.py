"""The hard benchmark models and what the accuracy algorithms do on them and on the digits example."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeq.accuracy import DEFAULT_ALGORITHMS, NO_ALGORITHMS, Algorithms, quantize_accurately
from edgeq.onnxutil import load_model, ort_session

ROOT = Path(__file__).resolve().parent.parent
HARD = ROOT / "benchmarks" / "hard_models"
EXAMPLE = ROOT / "examples" / "digits"
sys.path.insert(0, str(HARD))

NAMES = ("dw_ranges", "spectro", "attention")


def top1(model, x: np.ndarray) -> np.ndarray:
    session = ort_session(model)
    return np.array([int(np.argmax(session.run(None, {"input": x[i : i + 1]})[0])) for i in range(len(x))])


class _Datasets(dict):
    """Each model's data, generated on first use (the synthetic audio takes a few seconds)."""

    def __missing__(self, name: str):
        self[name] = __import__(name).dataset()
        return self[name]


@pytest.fixture(scope="module")
def datasets():
    return _Datasets()


@pytest.fixture(scope="module")
def digits():
    with np.load(EXAMPLE / "calibration.npz") as c, np.load(EXAMPLE / "test.npz") as t:
        model = load_model(EXAMPLE / "digits_cnn.onnx")
        cal = c["input"][:400]
        plain = quantize_accurately(model, cal, target="cpu-x86", method="entropy", algorithms=NO_ALGORITHMS)
        return model, cal, t["input"], t["labels"], plain


def accuracy(model, x, y) -> float:
    return float(np.mean(top1(model, x) == y))


@pytest.mark.parametrize("name", NAMES)
def test_hard_model_files(name, datasets):
    path = HARD / f"{name}.onnx"
    meta = json.loads((HARD / f"{name}.json").read_text())
    assert path.stat().st_size < 1_000_000 and meta["onnx_bytes"] == path.stat().st_size
    data = datasets[name]
    correct = int(np.sum(top1(load_model(path), data.test) == data.labels))
    assert correct == meta["test_correct"] and len(data.labels) == meta["test_samples"]
    assert len(data.calibration) == meta["calibration_samples"]


@pytest.mark.parametrize(
    "algorithms",
    [
        Algorithms(equalization=True, bias_correction=False, float_outputs=False),
        Algorithms(equalization=False, bias_correction=True, float_outputs=False),
        DEFAULT_ALGORITHMS,
    ],
    ids=["equalization", "bias-correction", "default"],
)
def test_algorithms_never_make_the_digits_example_worse(digits, algorithms):
    model, cal, x, y, plain = digits
    float_pred = top1(model, x)
    result = quantize_accurately(
        model, cal, target="cpu-x86", method="entropy", algorithms=algorithms, search_samples=400
    )
    assert accuracy(result.model, x, y) >= accuracy(plain.model, x, y)
    assert np.mean(top1(result.model, x) == float_pred) >= np.mean(top1(plain.model, x) == float_pred)
    assert result.score.noise <= plain.score.noise  # what the guards compare, on the calibration samples
    assert "on the calibration samples" in result.text()


def test_equalization_and_bias_correction_fix_the_depthwise_model(datasets):
    data = datasets["dw_ranges"]
    model = load_model(HARD / "dw_ranges.onnx")
    run = {}
    for label, algorithms in (
        ("plain", NO_ALGORITHMS),
        ("equalization", Algorithms(equalization=True, bias_correction=False, float_outputs=False)),
        ("bias correction", Algorithms(equalization=False, bias_correction=True, float_outputs=False)),
    ):
        result = quantize_accurately(
            model, data.calibration[:400], target="cpu-x86", method="entropy", algorithms=algorithms
        )
        run[label] = accuracy(result.model, data.test, data.labels)
        if label != "plain":
            assert [d.kept for d in result.decisions] == [True]
    assert run["plain"] < 0.3  # collapsed: per-tensor activations cannot span the channels
    assert run["equalization"] > 0.97
    assert run["bias correction"] > run["plain"] + 0.1


def test_attention_search_keeps_only_the_layer_reading_the_outliers(datasets):
    data = datasets["attention"]
    model = load_model(HARD / "attention.onnx")
    result = quantize_accurately(
        model,
        data.calibration[:300],
        target="cpu-x86",
        method="entropy",
        algorithms=NO_ALGORITHMS,
        max_drop=0.5,
        search_samples=300,
    )
    search = result.search
    assert search.full.drop > 0.5 >= search.score.drop
    assert search.kept == ("/block/qkv/MatMul",) and search.proven_minimal


@pytest.mark.slow
def test_default_loses_at_most_half_of_onnxruntimes_best(datasets):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from accuracy import ORT_CONFIGS, ort_quantize

    for name in NAMES:
        data = datasets[name]
        path = HARD / f"{name}.onnx"
        model = load_model(path)
        float_acc = accuracy(model, data.test, data.labels)
        ort_best = max(
            accuracy(
                ort_quantize(path, data.calibration, per_channel=w == "per-channel", activations=a),
                data.test,
                data.labels,
            )
            for w, a in ORT_CONFIGS[::2]  # U8 and S8 give the same accuracy here; one of each weight kind
        )
        default = quantize_accurately(model, data.calibration, target="cpu-x86", method="entropy")
        loss = float_acc - accuracy(default.model, data.test, data.labels)
        assert float_acc - ort_best > 0.1, name  # a hard model: onnxruntime loses over 10 points
        assert loss <= (float_acc - ort_best) / 2, name


@pytest.mark.slow
def test_training_reproduces_the_committed_model(tmp_path):
    import dw_ranges

    dw_ranges.main(["--out", str(tmp_path)])
    assert (tmp_path / "dw_ranges.onnx").read_bytes() == (HARD / "dw_ranges.onnx").read_bytes()
    assert json.loads((tmp_path / "dw_ranges.json").read_text()) == json.loads(
        (HARD / "dw_ranges.json").read_text()
    )
