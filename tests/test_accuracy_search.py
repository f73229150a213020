"""Scores, sensitivity analysis and the accuracy-target search, on tiny models with one known bad tensor."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import onnx
import pytest
from builder import GraphBuilder
from onnx import numpy_helper

from edgeq.accuracy import AccuracyMetric, Evaluator, Quantizer, analyze, quantize_to_target
from edgeq.calibrate import calibrate
from edgeq.errors import ConfigError, DataError, ModelError, UnsupportedError

OUTLIER = 2000.0


def outlier_model(seed: int = 0) -> onnx.ModelProto:
    """conv-relu → conv-relu (one output channel × OUTLIER) → conv (reads it ÷ OUTLIER) → relu → GAP → gemm.

    The float function is what it was without the factor; the tensor between the 2nd and 3rd conv has one
    channel OUTLIER times the others, so int8 loses the others there: the 2nd and 3rd convs are the layers
    that matter, and keeping both float (that tensor unquantized) restores the accuracy.
    """
    g = GraphBuilder("input", (1, 2, 8, 8), seed=seed)
    x = g.relu(g.conv(g.input, 2, 8, 3))
    x = g.relu(g.conv(x, 8, 8, 3))
    x = g.relu(g.conv(x, 8, 8, 3))
    model = g.build(g.gemm(g.flatten(g.gap(x)), 8, 6))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = {t.name: t for t in model.graph.initializer}

    def scale(name: str, index, factor: float) -> None:
        a = numpy_helper.to_array(inits[name]).copy()
        a[index] *= factor
        inits[name].CopyFrom(numpy_helper.from_array(a.astype(np.float32), name))

    scale(convs[1].input[1], 0, OUTLIER)
    scale(convs[1].input[2], 0, OUTLIER)
    scale(convs[2].input[1], (slice(None), 0), 1.0 / OUTLIER)
    return model


@pytest.fixture(scope="module")
def case():
    model = outlier_model()
    x = np.random.default_rng(1).uniform(0, 1, (120, 2, 8, 8)).astype(np.float32)
    return model, x, calibrate(model, x)


def names(model: onnx.ModelProto, op: str) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == op]


# ---------------------------------------------------------------------------------------------- scores


def test_scores_of_the_float_model_itself(case):
    model, x, _ = case
    labels = np.zeros(len(x), dtype=np.int64)
    for metric in AccuracyMetric:
        ev = Evaluator(model, x, metric=metric, num_samples=50, labels=labels)
        score = ev.score(model)
        assert score.drop == 0.0 and score.noise == 0.0 and math.isinf(score.sqnr_db)
        assert score.agreement == 100.0
    assert ev.num_samples == 50


def test_score_definitions():
    g = GraphBuilder("input", (1, 4), seed=0)
    model = g.build(g.gemm(g.input, 4, 3))
    x = np.eye(4, dtype=np.float32)[:, None, :].repeat(1, axis=0).reshape(4, 4)
    ev = Evaluator(model, x, metric="sqnr", labels=[0, 1, 2, 0])
    f = ev.reference
    q = f.copy()
    q[0, 0] = q[0, 0][::-1]  # flips sample 0's decision (unless symmetric), adds noise
    score = ev.score_outputs(q)
    noise = float(np.sum((q - f) ** 2))
    assert score.drop == pytest.approx(100 * noise / float(np.sum(f**2)))
    assert score.value == pytest.approx(10 * math.log10(float(np.sum(f**2)) / noise))
    per_sample = np.sum((q - f) ** 2, axis=(1, 2)) / np.sum(f**2, axis=(1, 2))
    assert score.noise == pytest.approx(100 * per_sample.mean())
    agree = 100 * np.mean(q.reshape(4, 3).argmax(1) == f.reshape(4, 3).argmax(1))
    assert score.agreement == pytest.approx(agree)
    acc = Evaluator(model, x, metric="accuracy", labels=[0, 1, 2, 0])
    s = acc.score_outputs(q)
    assert s.drop == pytest.approx(acc.float_accuracy - s.accuracy)


def test_metric_errors(case):
    model, x, _ = case
    with pytest.raises(ConfigError, match="unknown metric 'top5'; known: agreement, sqnr, accuracy"):
        Evaluator(model, x, metric="top5")
    with pytest.raises(ConfigError, match="needs labels"):
        Evaluator(model, x, metric="accuracy")
    with pytest.raises(DataError, match="outside the 6 classes"):
        Evaluator(model, x, metric="accuracy", labels=np.full(len(x), 9))
    with pytest.raises(DataError, match="labels for"):
        Evaluator(model, x, metric="accuracy", labels=[1, 2])
    with pytest.raises(ConfigError, match="no output 'nope'"):
        Evaluator(model, x, output="nope")
    g = GraphBuilder("input", (1, 2, 4, 4), seed=0)
    fmap = g.build(g.conv(g.input, 2, 3, 3))
    with pytest.raises(ConfigError, match="needs a classifier output.*use metric 'sqnr'"):
        Evaluator(fmap, np.zeros((2, 2, 4, 4), np.float32), metric="agreement")


# ----------------------------------------------------------------------------------------- sensitivity


def test_layers_attach_folded_activations(case):
    model, _, table = case
    q = Quantizer(model, table, target="cpu-x86")
    convs = names(model, "Conv")
    relus = names(model, "Relu")
    assert [layer.name for layer in q.layers][:3] == convs
    assert q.layers[0].nodes == (convs[0], relus[0])  # the ReLU folded into it goes with it
    assert "Flatten" not in {layer.op_type for layer in q.layers}  # data movement is not a layer


def test_sensitivity_ranks_the_outlier_layers_first(case, tmp_path):
    model, x, table = case
    # a random net on random inputs decides (almost) the same class for every input: measure the output noise
    report = analyze(model, table, x, target="cpu-x86", num_samples=120, metric="sqnr")
    convs = names(model, "Conv")
    assert set(report.ranking()[:2]) == {convs[1], convs[2]}, report.text()
    assert report.full.drop > 10
    top = report.layers[0]
    assert top.alone.drop > 10 and top.kept_float is not None
    text = report.text()
    assert "drop alone" in text and convs[1] in text and "cpu-x86" in text
    png = report.plot_png()
    assert png.startswith(b"\x89PNG") and png == report.plot_png()  # deterministic bytes
    html = report.html()
    assert "data:image/png;base64," in html and convs[1] in html
    for suffix in (".html", ".json", ".png", ".txt"):
        path = report.save(tmp_path / f"report{suffix}")
        assert path.stat().st_size > 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["layers"][0]["layer"] == report.ranking()[0] and data["metric"] == "sqnr"
    with pytest.raises(ConfigError, match="unknown report type '.pdf'"):
        report.save(tmp_path / "report.pdf")
    from edgeq.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        report.save(tmp_path / "report.html")


def test_sensitivity_without_kept_float(case):
    model, x, table = case
    report = analyze(model, table, x, target="cpu-x86", num_samples=40, kept_float=False)
    assert all(s.kept_float is None for s in report.layers)
    assert "agreement" in report.text()


def test_unnamed_nodes_are_refused(case):
    model, _x, table = case
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.node[0].name = ""
    with pytest.raises(ModelError, match="has no name.*edgeq export"):
        Quantizer(m, table.ranges(), target="cpu-x86")


# --------------------------------------------------------------------------------------- target search


def test_search_keeps_the_fewest_layers_that_meet_the_target(case):
    model, x, table = case
    # sqnr: drop = output noise in % of its energy; 1 % ↔ 20 dB
    result = quantize_to_target(
        model, table, x, target="cpu-x86", max_drop=1.0, metric="sqnr", num_samples=120
    )
    q, kept, score = result  # unpacks as (QuantizeResult, kept layers, achieved score)
    assert score.drop <= 1.0 < result.full.drop and score.value >= 20.0
    assert kept == list(result.kept) and 1 <= len(kept) <= 2
    assert result.proven_minimal
    excluded = {f.node for f in q.summary.float_ops if f.reason == "excluded"}
    assert set(kept) <= excluded
    # independently: every set of fewer layers misses the target
    quantizer = Quantizer(model, table, target="cpu-x86")
    ev = Evaluator(model, x, metric="sqnr", num_samples=120)
    for size in range(len(kept)):
        for subset in itertools.combinations(result.ranking, size):
            candidate = quantizer.keeping(subset) if subset else quantizer.full
            assert ev.score(candidate.model).drop > 1.0, subset
    assert "kept in float" in result.text()


def test_search_returns_all_int8_when_the_target_already_holds(case):
    model, x, table = case
    result = quantize_to_target(model, table, x, target="cpu-x86", max_drop=100.0, num_samples=30)
    assert result.kept == () and len(result.steps) == 1
    assert "met with every layer in int8" in result.text()


def test_int8_only_target_reports_what_cannot_be_met(case):
    model, x, table = case
    with pytest.raises(UnsupportedError, match=r"cortex-m4.*run int8 only.*most sensitive: '"):
        quantize_to_target(model, table, x, target="cortex-m4", max_drop=1.0, metric="sqnr", num_samples=60)


def test_bad_max_drop(case):
    model, x, table = case
    for bad in (-1, math.nan, "1", True):
        with pytest.raises(ConfigError, match="max_drop"):
            quantize_to_target(model, table, x, target="cpu-x86", max_drop=bad)


def test_results_are_deterministic(case):
    from edgeq.accuracy import quantize_accurately
    from edgeq.onnxutil import serialize

    model, x, table = case
    a = analyze(model, table, x, target="cpu-x86", num_samples=30, metric="sqnr")
    b = analyze(model, table, x, target="cpu-x86", num_samples=30, metric="sqnr")
    assert a.to_json() == b.to_json()
    runs = [
        quantize_accurately(model, x[:60], target="cpu-x86", bias_samples=60, search_samples=60)
        for _ in range(2)
    ]
    assert serialize(runs[0].model) == serialize(runs[1].model)
    assert runs[0].text() == runs[1].text()
