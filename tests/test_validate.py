"""The validate stage: metric math, thresholds, the report (JSON, HTML, text), validate() on real ORT."""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import sys

import numpy as np
import onnx
import pytest
from builder import small_cnn
from onnx import numpy_helper

from edgeq import onnxutil
from edgeq.errors import ConfigError, DataError, ModelError, OutputExistsError
from edgeq.validate import (
    Environment,
    Latency,
    ModelStats,
    Report,
    Thresholds,
    compare,
    cosine,
    sqnr_db,
    validate,
)
from edgeq.validate.metrics import _HistogramBuilder

SHAPE = (1, 3, 16, 16)


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.normal(size=SHAPE).astype(np.float32)} for _ in range(n)]


def _quantize(float_path, quant_path, calibration) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration)

        def get_next(self):
            return next(self.it, None)

    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice
    quantize_static(
        str(float_path),
        str(quant_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """small_cnn and its ORT QDQ int8 version (uint8 activations, per-channel int8 weights), as files."""
    folder = tmp_path_factory.mktemp("models")
    float_path, quant_path = folder / "float.onnx", folder / "int8.onnx"
    onnx.save(small_cnn(seed=0, shape=SHAPE), float_path)
    _quantize(float_path, quant_path, _samples(16, seed=1))
    return float_path, quant_path


@pytest.fixture(scope="module")
def data():
    return _samples(24, seed=2)


def _ort_outputs(model, samples) -> dict[str, np.ndarray]:
    """Each output of ``model`` on ``samples``, stacked along a new axis 0 (N × output shape)."""
    session = onnxutil.ort_session(onnxutil.load_model(model))
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, s) for s in samples]
    return {n: np.stack([r[i] for r in runs]) for i, n in enumerate(names)}


def _without_timing(d: dict) -> dict:
    for side in ("float_model", "quant_model"):
        d[side] = {**d[side], "latency": None, "peak_rss_bytes": None}
    return d


# --- metric math on known arrays --------------------------------------------------------------------------


def test_sqnr_of_known_noise():
    rng = np.random.default_rng(0)
    signal = np.where(rng.random((50, 1, 64)) < 0.5, -1.0, 1.0).astype(np.float32)
    noise = np.where(rng.random(signal.shape) < 0.5, -0.1, 0.1)
    quant = (signal + noise).astype(np.float32)  # ±1.1 and ±0.9 are not exact in float32
    expected = 10 * np.log10(
        np.sum(signal.astype(np.float64) ** 2) / np.sum((quant.astype(np.float64) - signal) ** 2)
    )
    [m] = compare({"y": signal}, {"y": quant})
    assert abs(m.sqnr_db - 20.0) < 1e-5  # Σs² / Σn² = 1 / 0.01
    assert m.sqnr_db == pytest.approx(expected, abs=1e-12)
    assert m.elements == signal.size and m.samples == 50
    assert m.max_abs_error == pytest.approx(0.1, abs=1e-7)
    assert m.mean_abs_error == pytest.approx(0.1, abs=1e-7)
    assert sqnr_db(4.0, 0.0) == math.inf and sqnr_db(0.0, 1.0) == -math.inf
    assert sqnr_db(1000.0, 1.0) == pytest.approx(30.0)


def test_cosine_and_identical_outputs():
    f = np.tile(np.array([[1.0, 0.0]], np.float32), (5, 1, 1))
    q = np.tile(np.array([[1.0, 1.0]], np.float32), (5, 1, 1))
    [m] = compare({"y": f}, {"y": q})
    assert m.cosine == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    [same] = compare({"y": f}, {"y": f})
    assert same.sqnr_db == math.inf and same.cosine == 1.0 and same.max_abs_error == 0.0
    assert same.error_histogram.counts == (f.size,)
    assert cosine(0.0, 0.0, 0.0) == 1.0 and cosine(0.0, 1.0, 0.0) == 0.0


def test_top1_agreement_and_accuracy():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(10, 4)).astype(np.float32)
    q = f.copy()
    flipped = [2, 5, 7]
    for i in flipped:  # swap the top class with another one: int8 now picks a different class
        top, other = int(np.argmax(f[i])), (int(np.argmax(f[i])) + 1) % 4
        q[i, [top, other]] = f[i, [other, top]]
    labels = np.argmax(f, axis=1)
    labels[0] = (labels[0] + 1) % 4  # float and int8 both wrong on sample 0
    [m] = compare({"logits": f}, {"logits": q}, labels=labels)
    assert m.classifier and m.shape == (1, 4)  # an N×C array is N batch-1 outputs
    assert (m.predictions, m.agree) == (10, 7) and m.agreement_pct == pytest.approx(70.0)
    assert (m.float_correct, m.quant_correct) == (9, 6)
    assert m.top1_drop_pts == pytest.approx(30.0)
    # Stacked (N, 1, C) gives exactly the same numbers as concatenated (N, C).
    [stacked] = compare({"logits": f[:, None]}, {"logits": q[:, None]}, labels=labels)
    assert stacked == m
    [hinted] = compare({"logits": f}, {"logits": q}, labels=labels, shapes={"logits": (1, 4)})
    assert hinted == m


def test_histogram_is_exact_whatever_the_order():
    rng = np.random.default_rng(3)
    err = np.concatenate([rng.normal(0, 0.01, 500), rng.normal(0, 3.0, 20), [0.0, 0.0]])
    whole = _HistogramBuilder()
    whole.update(err)
    pieces = _HistogramBuilder()
    order = rng.permutation(err.size)
    for chunk in np.array_split(err[order], 37):  # small errors first would start with a narrow range
        pieces.update(chunk)
    a, b = whole.result(), pieces.result()
    assert a == b
    assert sum(a.counts) == err.size and a.lo == -a.hi and a.hi >= np.abs(err).max()
    reference, _ = np.histogram(err, bins=a.edges)
    assert tuple(reference) == a.counts


def test_nonfinite_outputs_are_reported():
    f = np.ones((6, 1, 8), np.float32)
    q = f.copy()
    q[3, 0, 2] = np.nan
    q[4, 0, 0] = np.inf
    [m] = compare({"y": f}, {"y": q})
    assert (m.quant_nonfinite, m.float_nonfinite, m.first_nonfinite_sample) == (2, 0, 3)
    assert m.elements == f.size - 2 and m.sqnr_db == math.inf  # the finite values are identical
    report = Report(outputs=(m,))
    assert not report.passed
    assert report.failures == ["output 'y': the int8 model produced 2 NaN/Inf values (first in sample 3)"]


def test_compare_rejects_mismatched_outputs_and_labels():
    f = np.zeros((4, 1, 3), np.float32)
    with pytest.raises(DataError, match=r"int8 outputs lack \['b'\]"):
        compare({"a": f, "b": f}, {"a": f})
    with pytest.raises(DataError, match=r"output 'a': float outputs have shape \(4, 1, 3\) but int8"):
        compare({"a": f}, {"a": f[:3]})
    with pytest.raises(DataError, match=r"labels: 3 labels for 4 samples of output 'a'"):
        compare({"a": f}, {"a": f}, labels=[0, 1, 2])
    with pytest.raises(DataError, match=r"label 7 at index 1 is outside the 3 classes of output 'a'"):
        compare({"a": f}, {"a": f}, labels=[0, 7, 1, 2])
    with pytest.raises(DataError, match="expected integer class indices"):
        compare({"a": f}, {"a": f}, labels=np.zeros(4))
    image = np.zeros((4, 1, 2, 5, 5), np.float32)
    with pytest.raises(DataError, match="no output is classifier-shaped"):
        compare({"a": image}, {"a": image}, labels=[0, 1, 2, 0])


# --- thresholds ---------------------------------------------------------------------------------------


def _logits_case():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(20, 1, 5)).astype(np.float32)
    q = (f + rng.normal(0, 0.02, f.shape)).astype(np.float32)
    q[:2] = -f[:2]  # argmax becomes argmin: 2 of 20 samples disagree
    labels = np.argmax(f[:, 0], axis=1)
    return f, q, labels


def test_thresholds_with_labels():
    f, q, labels = _logits_case()
    outputs = compare({"logits": f}, {"logits": q}, labels=labels)
    assert outputs[0].top1_drop_pts == pytest.approx(10.0)  # float 20/20, int8 18/20
    assert Report(outputs, thresholds=Thresholds(max_top1_drop=10)).passed  # a drop equal to the limit passes
    failing = Report(outputs, thresholds=Thresholds(max_top1_drop=5))
    assert not failing.passed
    assert failing.failures == [
        "output 'logits': top-1 accuracy fell from 100.00 % to 90.00 %, a drop of "
        "10.00 points > max_top1_drop 5"
    ]
    sqnr = outputs[0].sqnr_db
    assert Report(outputs, thresholds=Thresholds(min_sqnr_db=sqnr - 0.01)).passed
    [line] = Report(outputs, thresholds=Thresholds(min_sqnr_db=sqnr + 0.01)).failures
    assert line.startswith("output 'logits': SQNR") and "< min_sqnr_db" in line


def test_thresholds_without_labels():
    f, q, _ = _logits_case()
    outputs = compare({"logits": f}, {"logits": q})
    assert outputs[0].float_correct is None and outputs[0].agreement_pct == pytest.approx(90.0)
    assert Report(outputs, thresholds=Thresholds(min_agreement=90)).passed
    [line] = Report(outputs, thresholds=Thresholds(min_agreement=95)).failures
    assert line == "output 'logits': top-1 agreement 90.00 % < min_agreement 95 %"
    [line] = Report(outputs, thresholds=Thresholds(max_top1_drop=5)).failures
    assert "top-1 agreement is 90.00 %, a drop of 10.00 points > max_top1_drop 5" in line
    assert Report(outputs).passed  # no thresholds: only NaN/Inf can fail


def test_thresholds_need_a_classifier_and_valid_numbers():
    image = np.ones((3, 1, 2, 4, 4), np.float32)
    outputs = compare({"features": image}, {"features": image})
    [line] = Report(outputs, thresholds=Thresholds(min_agreement=99)).failures
    assert "no output is classifier-shaped" in line
    with pytest.raises(ConfigError, match=r"Thresholds.min_agreement=150: expected a percentage in 0..100"):
        Thresholds(min_agreement=150)
    with pytest.raises(ConfigError, match=r"Thresholds.max_top1_drop=-1"):
        Thresholds(max_top1_drop=-1)
    with pytest.raises(ConfigError, match=r"Thresholds.min_sqnr_db='20': expected a number"):
        Thresholds(min_sqnr_db="20")
    assert Thresholds(min_sqnr_db=20) == Thresholds(min_sqnr_db=20.0)


# --- validate() on real onnxruntime models ----------------------------------------------------------------


def test_validate_matches_compare_on_the_same_outputs(models, data):
    float_path, quant_path = models
    fo, qo = _ort_outputs(float_path, data), _ort_outputs(quant_path, data)
    labels = np.argmax(fo["gemm_19"][:, 0], axis=1)
    labels[:3] = (labels[:3] + 1) % 10
    report = validate(
        float_path, quant_path, iter(data), labels=labels, latency_runs=5
    )  # a generator streams
    [out] = report.outputs
    # Same outputs, same per-sample accumulation: bit-identical metrics, the step read from the int8 model.
    [expected] = compare(fo, qo, labels=labels, steps={"gemm_19": out.step})
    assert out == expected
    assert out.step is not None and out.step > 0
    assert out.samples == report.samples == len(data) and out.shape == (1, 10)
    assert out.float_correct == len(data) - 3
    assert 20 < out.sqnr_db < 60 and out.cosine > 0.99
    # uint8 QDQ outputs are on a grid of `step`: errors are a few steps, not fractions of one.
    assert out.max_abs_error_steps is not None and 0.5 <= out.max_abs_error_steps < 20
    assert report.float_model.size_bytes == float_path.stat().st_size
    assert report.quant_model.size_bytes == quant_path.stat().st_size
    for m in (report.float_model, report.quant_model):
        assert m.latency.runs == 5 and 0 < m.latency.median_ms <= m.latency.p90_ms
    assert report.environment.device == "host" and report.environment.runtime.startswith("onnxruntime ")
    sqnrs = [m.sqnr_db for m in report.layers]
    assert sqnrs == sorted(sqnrs) and len(report.layers) == 8  # input, 3 convs, add, pool, flatten, gemm
    assert {m.tensor for m in report.layers} >= {"input", "relu_4", "clip_10", "conv_13", "add_14"}
    assert "onnxruntime's '_DequantizeLinear_Output' tensor names" in report.notes[0]


def test_damaged_layer_is_ranked_worst(models, data):
    float_path, quant_path = models
    good = validate(float_path, quant_path, data, latency_runs=0)
    damaged = onnx.load(quant_path)
    for init in damaged.graph.initializer:
        if init.name == "conv_13_scale":  # 30× too wide a range: ~5 of the 8 bits wasted
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(30), init.name))
    bad = validate(float_path, damaged, data, latency_runs=0)
    assert bad.layers[0].tensor == "conv_13"
    before = {m.tensor: m.sqnr_db for m in good.layers}
    after = {m.tensor: m.sqnr_db for m in bad.layers}
    assert after["conv_13"] < before["conv_13"] - 15
    for upstream in ("input", "relu_4", "clip_10"):  # per-layer SQNR is local: layers before it are untouched
        assert after[upstream] == before[upstream]
    assert bad.outputs[0].sqnr_db < good.outputs[0].sqnr_db
    assert bad.quant_model.path is None  # an in-memory model has no file
    assert bad.quant_model.size_bytes == len(onnxutil.serialize(damaged))


def test_tensor_map_from_metadata(models, data):
    float_path, quant_path = models
    quant = onnx.load(quant_path)
    mapping = {
        "relu_4": "relu_4_DequantizeLinear_Output",
        "add_14": "add_14_DequantizeLinear_Output",
        "w_1": "w_1_DequantizeLinear_Output",
    }  # a weight: not an activation, left out
    onnx.helper.set_model_props(quant, {"edgeq.tensor_map": json.dumps(mapping)})
    report = validate(float_path, quant, data, latency_runs=0)
    assert sorted(m.tensor for m in report.layers) == ["add_14", "relu_4"]
    assert "'edgeq.tensor_map' metadata" in report.notes[0]
    onnx.helper.set_model_props(
        quant, {"edgeq.tensor_map": json.dumps({"nope": "relu_4_DequantizeLinear_Output"})}
    )
    with pytest.raises(ModelError, match="names float tensor 'nope' which the float model does not have"):
        validate(float_path, quant, data, latency_runs=0)
    skipped = validate(float_path, quant_path, data, latency_runs=0, layers=False)
    assert skipped.layers == () and skipped.float_model.latency is None


def test_validate_rejects_mismatched_inputs(models, data, tmp_path):
    _, quant_path = models
    other = tmp_path / "other.onnx"
    onnx.save(small_cnn(seed=0, shape=(1, 3, 8, 8)), other)
    with pytest.raises(
        ModelError,
        match=r"input 'input': the float model takes float32\[1, 3, 8, 8\] but the "
        r"int8 model float32\[1, 3, 16, 16\]",
    ):
        validate(other, quant_path, data)


def test_validate_checks_the_label_count(models, data):
    float_path, quant_path = models
    labels = np.zeros(len(data) - 1, np.int64)
    with pytest.raises(DataError, match=rf"labels: {len(data) - 1} labels but the data has more than"):
        validate(float_path, quant_path, iter(data), labels=labels, latency_runs=0, layers=False)
    with pytest.raises(DataError, match=rf"labels: {len(data) + 1} labels for {len(data)} samples"):
        validate(
            float_path,
            quant_path,
            iter(data),
            labels=np.zeros(len(data) + 1, np.int64),
            latency_runs=0,
            layers=False,
        )
    # num_samples takes the first samples and the first labels
    head = validate(
        float_path,
        quant_path,
        data,
        labels=np.zeros(len(data), np.int64),
        num_samples=5,
        latency_runs=0,
        layers=False,
    )
    assert head.samples == 5 and head.outputs[0].predictions == 5


def test_validate_reads_npy_files(models, data, tmp_path):
    float_path, quant_path = models
    np.save(tmp_path / "inputs.npy", np.concatenate([s["input"] for s in data]))  # N × (3, 16, 16)
    labels = np.arange(len(data)) % 10
    np.save(tmp_path / "labels.npy", labels)
    from_files = validate(
        float_path, quant_path, tmp_path / "inputs.npy", labels=tmp_path / "labels.npy", latency_runs=0
    )
    from_memory = validate(float_path, quant_path, data, labels=labels, latency_runs=0)
    assert from_files.to_json() == from_memory.to_json()


# --- the report ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(models, data) -> Report:
    float_path, quant_path = models
    labels = np.arange(len(data)) % 10
    return validate(
        float_path, quant_path, data, labels=labels, thresholds=Thresholds(max_top1_drop=1.0), latency_runs=5
    )


def test_report_json_round_trip_and_reruns(models, data, report):
    text = report.to_json()
    again = Report.from_json(text)
    assert again.to_json() == text
    assert (
        again.outputs[0].agree == report.outputs[0].agree
        and again.layers[0].tensor == report.layers[0].tensor
    )
    assert again.outputs[0].sqnr_db == pytest.approx(report.outputs[0].sqnr_db, abs=1e-3)
    d = json.loads(text)
    assert list(d)[:5] == ["format", "version", "passed", "failures", "samples"]
    assert d["thresholds"] == {"max_top1_drop": 1.0, "min_agreement": None, "min_sqnr_db": None}
    float_path, quant_path = models
    rerun = validate(
        float_path,
        quant_path,
        data,
        labels=np.arange(len(data)) % 10,
        thresholds=Thresholds(max_top1_drop=1.0),
        latency_runs=5,
    )
    assert _without_timing(rerun.to_dict()) == _without_timing(report.to_dict())
    # +inf SQNR (bit-identical outputs) survives JSON, which has no literal for it
    [same] = compare({"y": np.ones((2, 1, 3))}, {"y": np.ones((2, 1, 3))})
    assert Report.from_json(Report((same,)).to_json()).outputs[0].sqnr_db == math.inf
    with pytest.raises(DataError, match="not an edgeq validation report"):
        Report.from_json('{"a": 1}')
    with pytest.raises(DataError, match=r"report.outputs\[0\]: missing key 'sqnr_db'"):
        Report.from_json(text.replace('"sqnr_db"', '"sqnr"', 1))


def test_report_write_html_is_self_contained(report, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (edgeq[report]) is not installed")
    folder = report.write(tmp_path / "report")
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json"]
    assert (folder / "report.json").read_text() == report.to_json()
    assert Report.load(folder).to_json() == report.to_json()
    page = (folder / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""<(script|link|iframe)\b|src=["'](?!data:)""", page)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [alt for alt, _ in images] == [
        "histogram of int8 minus float per output",
        "latency and size, float vs int8",
        "per-layer SQNR bar chart, worst first",
    ]
    assert all(base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n") for _, png in images)
    assert report.layers[0].tensor in page and "<style>" in page
    with pytest.raises(OutputExistsError):
        report.write(folder)
    report.write(folder, force=True)


def test_report_html_without_matplotlib(report, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    page = report.html()
    assert "pip install 'edgeq[report]'" in page and "<img" not in page
    assert "<table>" in page and report.layers[0].tensor in page


def test_report_text(report):
    text = report.text(color=False)
    out = report.outputs[0]
    assert text.startswith("validation FAILED:" if report.failures else "validation PASSED:")
    for piece in (
        "top-1 accuracy",
        f"{out.float_accuracy_pct:.2f} %",
        "top-1 agreement",
        "SQNR",
        "latency median (1 thread)",
        "size",
        "worst layers (SQNR, of 8):",
    ):
        assert piece in text
    worst = text.split("worst layers")[1].splitlines()[1:6]
    assert [line.split()[-2] for line in worst] == [m.tensor for m in report.layers[:5]]
    assert "\x1b[" not in text


def test_report_text_with_rich(report):
    pytest.importorskip("rich", reason="rich (edgeq[report]) is not installed")
    text = report.text(color=True)  # as on a colour terminal
    assert "\x1b[" in text and "top-1 agreement" in text and report.layers[0].tensor in text


def test_device_report_from_compare():
    """What on-device validation builds: compare() on pulled outputs plus what the device measured."""
    rng = np.random.default_rng(5)
    f = rng.normal(size=(8, 1, 3)).astype(np.float32)
    outputs = compare(
        {"<b>logits</b>": f}, {"<b>logits</b>": f + np.float32(0.01)}, labels=np.argmax(f[:, 0], 1)
    )
    report = Report(
        outputs=outputs,
        float_model=ModelStats(
            path="float.onnx",
            size_bytes=4000,
            latency=Latency(median_ms=2.0, p90_ms=2.5, runs=20),
            peak_rss_bytes=60_000_000,
        ),
        quant_model=ModelStats(
            path="model.int8.onnx",
            size_bytes=1000,
            latency=Latency(median_ms=1.0, p90_ms=1.1, runs=20),
            peak_rss_bytes=50_000_000,
        ),
        environment=Environment(
            device="ssh://pi@127.0.0.1:2222",
            runtime="onnxruntime 1.20.1",
            machine="aarch64",
            cpu="Cortex-A72",
            emulated=True,
        ),
        thresholds=Thresholds(min_agreement=100),
    )
    assert report.passed and report.speedup == 2.0 and report.size_ratio == 4.0
    again = Report.from_json(report.to_json())
    assert again.to_json() == report.to_json()
    assert (again.float_model, again.quant_model, again.environment) == (
        report.float_model,
        report.quant_model,
        report.environment,
    )
    text = report.text(color=False)
    assert "on ssh://pi@127.0.0.1:2222 (aarch64, Cortex-A72, onnxruntime 1.20.1)" in text
    assert "latency median (1 thread), emulated" in text and "2.00× faster" in text and "peak RSS" in text
    page = report.html()
    assert "<b>logits</b>" not in page and "&lt;b&gt;logits&lt;/b&gt;" in page  # names are escaped
