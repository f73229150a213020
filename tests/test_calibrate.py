"""edgeq.calibrate: streaming statistics, the exact merge, methods, the table file; real onnxruntime."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builder import GraphBuilder, small_cnn
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edgeq.calibrate import (
    METHODS,
    CalibrationTable,
    Observer,
    calibrate,
    collect,
    compute_range,
    method_config,
)
from edgeq.calibrate.histogram import WINDOW, TensorStats, bin_exponent
from edgeq.calibrate.methods import (
    abs_cdf,
    entropy_divergence,
    entropy_range,
    mse_errors,
    mse_range,
    percentile_range,
)
from edgeq.calibrate.table import _decode_counts, _encode_counts, model_fingerprint
from edgeq.config.recipe import CalibrationMethod, ChannelOrder, Layout, MethodConfig, Preprocess, Recipe
from edgeq.data import open_samples
from edgeq.errors import ConfigError, DataError, ModelError, OutputExistsError
from edgeq.onnxutil import input_specs, serialize


def _samples(n, shape=(3, 16, 16), seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{"input": (rng.normal(0, scale, shape)).astype(np.float32)} for _ in range(n)]


def _reference_activations(model, samples):
    """Every float node output and the input, per sample, from a plain onnxruntime session (batch 1)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for o in node.output:
            if o not in have:
                m.graph.output.append(helper.make_empty_tensor_value_info(o))
                have.add(o)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(serialize(m), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs() if o.type == "tensor(float)"]
    acts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    acts["input"] = []
    for s in samples:
        x = s["input"][np.newaxis] if s["input"].ndim == 3 else s["input"]
        acts["input"].append(x)
        for n, v in zip(names, sess.run(names, {"input": x}), strict=True):
            acts[n].append(v)
    return {n: np.concatenate([v.ravel() for v in vs]) for n, vs in acts.items()}


def _stats(x):
    o = Observer()
    o.update(np.asarray(x))
    return o.stats()


# ---------------------------------------------------------------------------------- observer exactness


def test_observer_state_is_the_exact_histogram():
    rng = np.random.default_rng(0)
    parts = [rng.normal(0, s, 3000).astype(np.float32) for s in (0.01, 1.0, 7.0, 0.2)]
    parts += [np.zeros(40, np.float32), np.abs(rng.normal(0, 100, 500)).astype(np.float32)]
    o = Observer()
    for p in parts:
        o.update(p)
    s = o.stats()
    x = np.concatenate(parts).astype(np.float64)
    assert (s.min, s.max, s.count) == (x.min(), x.max(), x.size)
    assert s.e == bin_exponent(s.min, s.max) and s.counts.size <= WINDOW
    direct = np.bincount((np.floor(x * 2.0**-s.e)).astype(np.int64) - s.offset)
    np.testing.assert_array_equal(s.counts, direct)
    assert s.check() is None
    # A smaller e would not fit the window: e is the smallest that does.
    assert math.floor(s.max * 2.0 ** -(s.e - 1)) - math.floor(s.min * 2.0 ** -(s.e - 1)) + 1 > WINDOW


def test_merge_is_exact_for_any_partition_and_order():
    rng = np.random.default_rng(1)
    chunks = [rng.standard_t(3, 2000).astype(np.float32) * s for s in (1e-3, 1.0, 40.0, 0.5, 3.0)]
    chunks.append(np.zeros(10, np.float32))
    whole = _stats(np.concatenate(chunks))
    left = Observer()
    for c in chunks[:2]:
        left.update(c)
    right = Observer()
    for c in chunks[:1:-1]:
        right.update(c)
    assert left.stats().merge(right.stats()) == whole
    assert right.stats().merge(left.stats()) == whole
    assert TensorStats.empty().merge(whole) == whole == whole.merge(TensorStats.empty())


def test_extreme_values_and_float64():
    for x in ([0.0, 0.0], [1e30, 1e30], [-3e38, 3e38], [1e-45, -1e-45, 0.0], [5.0, 5.0 + 2**-20]):
        s = _stats(np.array(x, np.float32))
        assert s.check() is None, x
        assert s.counts.sum() == len(x)
    s = _stats(np.array([1e300, -1e300, 0.0]))  # float64 activations
    assert s.check() is None and s.max == 1e300


# -------------------------------------------------------------------------------------- calibrate: model


def test_minmax_equals_true_min_max_and_histograms_are_exact():
    model = small_cnn(seed=0)
    data = _samples(9, seed=3)
    table = calibrate(model, data, method="minmax", batch_size=4)
    ref = _reference_activations(model, data)
    assert set(table.stats) == set(ref)  # every float activation incl. the graph input, no initializers
    assert not set(table.stats) & {i.name for i in model.graph.initializer}
    for name, x in ref.items():
        s = table.stats[name]
        assert (s.min, s.max, s.count) == (float(x.min()), float(x.max()), x.size), name
        direct = np.bincount(np.floor(x.astype(np.float64) * 2.0**-s.e).astype(np.int64) - s.offset)
        np.testing.assert_array_equal(s.counts, direct, err_msg=name)
        assert table.ranges()[name] == (min(s.min, 0.0), max(s.max, 0.0))
    assert table.num_samples == 9


def test_tables_from_disjoint_shards_merge_into_the_table_of_their_union():
    model = small_cnn(seed=0)
    a, b = _samples(7, seed=1), _samples(5, seed=2, scale=4.0)  # b widens every range: forces coarsening
    ta = calibrate(model, a, method="entropy", batch_size=3)
    tb = calibrate(model, b, method="entropy", batch_size=2)
    tab = calibrate(model, a + b, method="entropy", batch_size=5)
    merged = ta.merge(tb)
    assert merged == tab
    assert merged.to_json() == tab.to_json() == tb.merge(ta).to_json()
    assert merged.num_samples == 12
    assert CalibrationTable.merge_all([ta, tb]) == tab


def test_results_do_not_depend_on_batch_size():
    model = small_cnn(seed=2)
    data = _samples(11, seed=5)
    texts = {calibrate(model, data, batch_size=b).to_json() for b in (1, 2, 5, 16)}
    assert len(texts) == 1
    samples = open_samples(data, inputs=input_specs(model))
    assert collect(model, samples, batch_size=5).batch_size == 5


def test_inputs_with_free_dimensions_of_varying_size():
    g = GraphBuilder("input", (1, 3, "h", "w"), seed=0)
    model = g.build(g.gemm(g.flatten(g.gap(g.relu(g.conv(g.input, 3, 8, 3)))), 8, 4))
    rng = np.random.default_rng(6)
    data = [{"input": rng.normal(0, 1, (3, s, s + 1)).astype(np.float32)} for s in (8, 8, 8, 5, 5, 8, 9)]
    result = collect(model, open_samples(data, inputs=input_specs(model)), batch_size=4)
    assert result.batch_size == 4 and result.num_samples == 7
    assert calibrate(model, data, batch_size=4).to_json() == calibrate(model, data, batch_size=1).to_json()
    ref = _reference_activations(model, data)
    assert all(result.stats[n].count == x.size for n, x in ref.items())


def _reshape_model(*, mix: bool) -> onnx.ModelProto:
    g = GraphBuilder("input", (1, 3, 4, 4), seed=0)
    x = g.relu(g.conv(g.input, 3, 8, 3))
    if mix:  # Reshape to (1, -1) accepts any batch but then Softmax spans the samples: must not be batched
        y = g.op("Softmax", [g.op("Reshape", [x, g.const(np.array([1, -1], np.int64), "shape")])], axis=-1)
        return g.build(y)
    y = g.op("Reshape", [x, g.const(np.array([1, 128], np.int64), "shape")])  # fails for batch > 1
    return g.build(g.gemm(y, 128, 10))


@pytest.mark.parametrize("mix", [False, True])
def test_models_that_cannot_be_batched_fall_back_to_batch_one(mix):
    model = _reshape_model(mix=mix)
    data = _samples(6, shape=(3, 4, 4), seed=4)
    result = collect(model, open_samples(data, inputs=input_specs(model)), batch_size=4)
    assert result.batch_size == 1
    assert calibrate(model, data, batch_size=4).to_json() == calibrate(model, data, batch_size=1).to_json()
    ref = _reference_activations(model, data)
    table = calibrate(model, data, batch_size=4)
    assert all(table.stats[n].max == float(x.max()) for n, x in ref.items())


def test_shared_digits_model_with_hard_coded_reshape():
    table = calibrate(
        "/work/shared/models/digits_float_nhwc.onnx",
        "/work/shared/models/digits_test_inputs.npy",
        num_samples=20,
        method="percentile",
    )
    assert table.num_samples == 20 and "input" in table.stats and len(table.stats) == 14
    assert all(lo <= 0.0 <= hi and lo < hi for lo, hi in table.ranges().values())


def test_constants_and_non_float_tensors_are_not_activations():
    g = GraphBuilder("input", (1, 4), seed=0)
    c = g.op("Constant", [], value=numpy_helper.from_array(np.full(4, 2.0, np.float32)))
    k = g.op("Mul", [c, g.const(np.full(4, 3.0, np.float32))])  # constant subgraph
    y = g.add(g.input, k)
    shape = g.op("Shape", [y])  # int64: skipped
    sf = g.op("Cast", [shape], to=TensorProto.FLOAT)  # float, computed from an activation: kept
    model = g.build(y, sf)
    table = calibrate(model, [{"input": np.arange(4, dtype=np.float32)}], num_samples=1)
    assert set(table.stats) == {"input", y, sf}
    assert table.stats[y].min == 6.0 and table.stats[y].max == 9.0


def test_float16_activations():
    g = GraphBuilder("input", (1, 4), seed=0)
    h = g.op("Cast", [g.input], to=TensorProto.FLOAT16)
    y = g.op("Cast", [g.op("Relu", [h])], to=TensorProto.FLOAT)
    model = g.build(y)
    table = calibrate(model, [{"input": np.array([-1.0, 0.5, 1.0 / 3.0, 2.0], np.float32)}])
    assert table.stats[h].min == -1.0 and table.stats[h].max == 2.0
    assert table.stats[h].count == 4


def test_non_finite_activation_names_tensor_node_and_samples():
    g = GraphBuilder("input", (1, 4), seed=0)
    y = g.op("Log", [g.relu(g.input)])
    model = g.build(y)
    data = [{"input": np.ones(4, np.float32)}] * 3 + [{"input": np.array([1, -1, 2, 3], np.float32)}]
    with pytest.raises(
        DataError, match=rf"tensor '{y}' \(output of node '{y}_node'\) becomes Inf on sample 3"
    ):
        calibrate(model, data, batch_size=2)


def test_data_must_match_the_model_inputs(tmp_path):
    model = small_cnn(seed=0)
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"x\.npy.*\(4, 3, 8, 8\).*'input' of shape \(1, 3, 16, 16\)"):
        calibrate(model, tmp_path / "x.npy")
    with pytest.raises(DataError, match="no samples"):
        calibrate(model, [])
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        calibrate(model, _samples(2), batch_size=0)


def test_recipe_with_image_folder(tmp_path):
    rng = np.random.default_rng(7)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    recipe = Recipe(
        name="t",
        preprocess=Preprocess(resize=(8, 8), layout=Layout.NCHW, channels=ChannelOrder.GRAY),
        method=MethodConfig(name=CalibrationMethod.ENTROPY, bins=256),
        num_samples=5,
        batch_size=2,
    )
    model = small_cnn(seed=0, shape=(1, 1, 8, 8))
    table = calibrate(model, tmp_path, recipe=recipe)
    assert table.num_samples == 5 and table.method == recipe.method
    assert table.stats["input"].min >= 0.0 and table.stats["input"].max <= 1.0
    # An explicit method overrides the recipe's and keeps its bins.
    assert calibrate(model, tmp_path, recipe=recipe, method="mse").method == MethodConfig(
        CalibrationMethod.MSE, bins=256
    )


@pytest.mark.slow
def test_shared_mbv2_model_all_methods_quickly():
    table = calibrate(
        "/work/shared/models/mbv2_32_float_nhwc.onnx",
        "/work/shared/models/mbv2_32_test_inputs.npy",
        num_samples=24,
        method="minmax",
        batch_size=8,
    )
    assert len(table.stats) == 126 and table.num_samples == 24
    for name in CalibrationMethod:
        ranges = table.with_method(name).ranges()
        assert all(lo <= 0.0 <= hi and lo < hi for lo, hi in ranges.values())
        # Clip outputs (ReLU6) are non-negative: every method gives them lo = 0.
        relu6 = [n for n in ranges if n.endswith("Relu6:0")]
        assert relu6 and all(ranges[n][0] == 0.0 for n in relu6)


# ------------------------------------------------------------------------------------------- methods


def _gauss_with_outliers(n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    x[:20] = np.where(np.arange(20) % 2 == 0, 50.0, -50.0)
    return x.astype(np.float32)


def test_percentile_matches_numpy_and_clips_outliers():
    x = _gauss_with_outliers()
    s = _stats(x)
    for p in (99.0, 99.9, 99.99):
        lo, hi = percentile_range(s, MethodConfig(CalibrationMethod.PERCENTILE, percentile=p))
        want = np.percentile(np.abs(x.astype(np.float64)), p)
        assert abs(hi - want) <= s.width, (p, hi, want)  # within one histogram bin
        assert lo == -hi
    assert percentile_range(s, MethodConfig(CalibrationMethod.PERCENTILE, percentile=100.0)) == (-50.0, 50.0)


def test_entropy_clips_outliers_of_a_gaussian():
    x = _gauss_with_outliers()
    lo, hi = entropy_range(_stats(x), MethodConfig(CalibrationMethod.ENTROPY))
    assert 2.5 < hi < 10.0 and lo == -hi
    # Non-negative data: range [0, T].
    lo, hi = entropy_range(_stats(np.maximum(x, 0)), MethodConfig(CalibrationMethod.ENTROPY))
    assert lo == 0.0 and 2.5 < hi < 10.0


def test_entropy_on_relu_spikes_and_few_valued_inputs():
    rng = np.random.default_rng(5)
    cfg = MethodConfig(CalibrationMethod.ENTROPY)
    # ReLU6 output: a spike of exact zeros, a smooth body, a spike at 6. Merging the zero spike with its
    # neighbours would pull T down to the first candidate (0.375).
    relu6 = np.clip(rng.normal(-0.5, 2.5, 200_000), 0, 6).astype(np.float32)
    lo, hi = entropy_range(_stats(relu6), cfg)
    assert lo == 0.0 and hi > 4.0
    # Digit-like input: 17 distinct values, half of them 0: nothing to clip.
    pixels = (rng.integers(0, 17, 100_000) * (rng.random(100_000) < 0.5) / 16).astype(np.float32)
    assert entropy_range(_stats(pixels), cfg) == (0.0, 1.0)
    # Spiky activations: the divergence's minimum may lie where much is clipped; at most 1 % ever is.
    spiky = np.concatenate([rng.choice(rng.random(40) * 6, 100_000), rng.normal(0, 0.3, 100_000)])
    s = _stats(spiky.astype(np.float32))
    lo, hi = entropy_range(s, cfg)
    edges, cum = abs_cdf(s)
    assert 1.0 - np.interp(hi, edges, cum) / cum[-1] <= 0.01 + 1e-9  # as the histogram sees it
    assert np.mean(np.abs(spiky) > hi) <= 0.01 + 0.5 / 40  # raw: plus at most the one spike straddling T


def _reference_kl(hist, levels=128):
    """TensorRT/MXNet KL search written the slow, obvious way."""
    out = []
    for i in range(levels, hist.size + 1):
        p = hist[:i].astype(np.float64).copy()
        p[-1] += hist[i:].sum()
        nz = p > 0
        k = np.arange(i)
        group = np.where(k == 0, 0, 1 + ((k - 1) * (levels - 1)) // max(i - 1, 1))  # bin 0 is its own level
        q = np.zeros(i)
        for gi in range(levels):
            sel = group == gi
            if (nz & sel).any():
                q[nz & sel] = hist[:i][sel].sum() / (nz & sel).sum()
        if (q[nz] == 0).any():
            out.append(np.inf)
            continue
        pn, qn = p / p.sum(), q / q.sum()
        out.append(float(np.sum(pn[nz] * np.log(pn[nz] / qn[nz]))))
    return np.array(out)


def test_entropy_divergence_equals_the_reference_algorithm():
    rng = np.random.default_rng(3)
    hist = np.round(rng.exponential(50, 400) * np.exp(-np.arange(400) / 80))
    hist[rng.integers(0, 400, 60)] = 0  # empty bins, some under a candidate's last bin
    hist[390] = 7  # an outlier bump
    cand, kl = entropy_divergence(hist)
    ref = _reference_kl(hist)
    np.testing.assert_array_equal(cand, np.arange(128, 401))
    assert np.array_equal(np.isinf(kl), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(kl[fin], ref[fin], rtol=1e-9, atol=1e-12)


def _quantization_mse(x, lo, hi):
    """Mean squared error of quantizing ``x`` to uint8 over [lo, hi] as the quantizer does (0 exact)."""
    x = x.astype(np.float64)
    scale = (hi - lo) / 255
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    return float(np.mean((x - (q - zero) * scale) ** 2))


@pytest.mark.parametrize("kind", ["laplace", "relu", "relu6", "outliers", "skewed"])
def test_mse_is_close_to_the_brute_force_optimum(kind):
    rng = np.random.default_rng(11)
    x = {
        "laplace": lambda: rng.laplace(0, 1, 100_000),
        "relu": lambda: np.maximum(rng.normal(0, 1, 100_000), 0),
        "relu6": lambda: np.clip(rng.normal(2, 2, 100_000), 0, 6),
        "outliers": lambda: _gauss_with_outliers(100_000),
        "skewed": lambda: np.concatenate([rng.exponential(1, 100_000), -rng.exponential(0.1, 20_000)]),
    }[kind]().astype(np.float32)
    s = _stats(x)
    cfg = MethodConfig(CalibrationMethod.MSE)
    lo, hi = mse_range(s, cfg)
    t = max(hi, -lo)
    assert lo == (max(-t, float(x.min())) if x.min() < 0 else 0.0)
    # Brute force on the raw values: every threshold of the search grid, quantized for real.
    amax = float(np.abs(x).max())
    width = amax / cfg.bins
    grid = np.arange(1, cfg.bins + 1) * width
    errs = np.array([_quantization_mse(x, max(-g, float(x.min())) if x.min() < 0 else 0.0, g) for g in grid])
    best = int(np.argmin(errs))
    assert _quantization_mse(x, lo, hi) <= 1.01 * errs[best]
    if kind in ("relu6", "outliers"):  # a sharp optimum: within a couple of bins
        assert abs(t - grid[best]) <= 2 * width, (t, grid[best], width)
    else:
        # The real error is flat near the optimum (within 1 % over ±20 bins) and sample noise in the rounding
        # errors moves its argmin; the threshold still lands within a few bins.
        assert abs(t - grid[best]) <= 20 * width, (t, grid[best], width)
    assert _quantization_mse(x, lo, hi) < _quantization_mse(x, min(float(x.min()), 0.0), float(x.max())) or (
        kind in ("relu6", "outliers")
    )


def test_degenerate_tensors_get_usable_ranges():
    for method in CalibrationMethod:
        cfg = MethodConfig(method)
        assert compute_range(_stats(np.zeros(10, np.float32)), cfg) == (0.0, 1.0)
        assert compute_range(_stats(np.full(10, 3.0, np.float32)), cfg) == (0.0, 3.0)
        assert compute_range(_stats(np.full(10, -2.0, np.float32)), cfg) == (-2.0, 0.0)
        assert compute_range(TensorStats.empty(), cfg) == (0.0, 1.0)
        point = _stats(np.full(10, 3.0, np.float32))  # a point mass: clipping it costs 10 (3 - T)²
        np.testing.assert_allclose(mse_errors(point, np.array([1.0, 2.5, 3.0])), [40.0, 2.5, 0.0])
        lo, hi = compute_range(_stats(np.array([-0.5, 6.0, 1.0, 2.0], np.float32)), cfg)
        assert -0.5 <= lo < 0.0 < hi <= 6.0
        lo, hi = compute_range(_stats(np.array([1e-38, 2e-38], np.float32)), cfg)
        assert lo == 0.0 and hi >= 2.0**-100
        assert np.float32(lo) == lo and np.float32(hi) == hi


def test_method_registry_and_unknown_names():
    assert set(METHODS) == set(CalibrationMethod)
    assert method_config("Entropy").name is CalibrationMethod.ENTROPY
    assert method_config("percentile", base=MethodConfig(percentile=99.0)).percentile == 99.0
    with pytest.raises(
        ConfigError,
        match=r"unknown calibration method 'kl'; known methods: entropy, minmax, mse, "
        r"percentile",
    ):
        method_config("kl")
    with pytest.raises(ConfigError, match="unknown calibration method 'kl'"):
        calibrate(small_cnn(), _samples(1), method="kl")


# --------------------------------------------------------------------------------------------- table


def test_counts_encoding_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = rng.integers(0, 5, rng.integers(1, 300)) * (rng.random(1) < 0.5 or rng.random() < 0.5)
        c[rng.random(c.size) < 0.6] = 0
        np.testing.assert_array_equal(_decode_counts(_encode_counts(c), c.size, "t"), c)
    assert _encode_counts(np.array([5, 0, 0, 3, 2, 0, 0, 0, 0, 1])) == [[0, 5, 0, 0, 3, 2], [9, 1]]


def test_save_load_round_trip_is_byte_identical(tmp_path):
    model = small_cnn(seed=0)
    data = _samples(6, seed=9)
    table = calibrate(model, data, method="entropy")
    path = table.save(tmp_path / "t.json")
    loaded = CalibrationTable.load(path)
    assert loaded == table and loaded.ranges() == table.ranges()
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    # Calibrating again on the same inputs gives the same bytes.
    calibrate(model, data, method="entropy", batch_size=1).save(tmp_path / "rerun.json")
    assert (tmp_path / "rerun.json").read_bytes() == path.read_bytes()
    doc = json.loads(path.read_text())
    assert doc["format"] == "edgeq-calibration-table" and doc["version"] == 1
    assert doc["model_sha256"] == model_fingerprint(model) == table.model_sha256
    with pytest.raises(OutputExistsError):
        table.save(path)
    table.with_method("minmax").save(path, force=True)
    assert CalibrationTable.load(path).method.name is CalibrationMethod.MINMAX


def test_hand_edited_range_is_honoured(tmp_path):
    table = calibrate(small_cnn(seed=0), _samples(2))
    doc = json.loads(table.to_json())
    doc["tensors"]["input"]["range"] = [-1.5, 2.5]
    (tmp_path / "e.json").write_text(json.dumps(doc))
    assert CalibrationTable.load(tmp_path / "e.json").ranges()["input"] == (-1.5, 2.5)


def test_corrupt_and_foreign_files(tmp_path):
    table = calibrate(small_cnn(seed=0), _samples(3))
    text = table.to_json()
    p = tmp_path / "t.json"
    p.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"t\.json: not a calibration table \(invalid JSON"):
        CalibrationTable.load(p)
    doc = json.loads(text)
    cases = {
        "version": (lambda d: d.update(version=2), r"format version 2 is not supported"),
        "format": (lambda d: d.update(format="x"), r"not an edgeq calibration table"),
        "counts": (
            lambda d: d["tensors"]["input"]["counts"][0].__setitem__(1, 10**6),
            r"tensor 'input'.*add up",
        ),
        "range": (lambda d: d["tensors"]["input"].__setitem__("range", [0.5, 1.0]), r"must contain 0"),
        "e": (lambda d: d["tensors"]["input"].__setitem__("e", 3), r"tensor 'input'.*bin exponent"),
        "method": (lambda d: d["method"].update(name="kl"), r"method\.name"),
        "sha": (lambda d: d.update(model_sha256="abc"), r"model_sha256"),
    }
    for mutate, pattern in cases.values():
        d = json.loads(text)
        mutate(d)
        p.write_text(json.dumps(d))
        with pytest.raises(DataError, match=pattern):
            CalibrationTable.load(p)
    assert doc  # the untouched document loads
    with pytest.raises(DataError, match="not found"):
        CalibrationTable.load(tmp_path / "missing.json")


def test_merge_refuses_other_models_and_methods():
    data = _samples(2)
    a = calibrate(small_cnn(seed=0), data)
    with pytest.raises(DataError, match="different models"):
        a.merge(calibrate(small_cnn(seed=1), data))
    with pytest.raises(
        DataError, match=r"different methods \(minmax and entropy over 2048 bins\).*with_method"
    ):
        a.merge(a.with_method("entropy"))


def test_with_method_equals_calibrating_with_that_method_and_model_check():
    model = small_cnn(seed=0)
    data = _samples(4, seed=8)
    base = calibrate(model, data, method="minmax")
    for name in CalibrationMethod:
        assert base.with_method(name) == calibrate(model, data, method=name)
    base.check_model(model)
    with pytest.raises(ModelError, match="re-run edgeq calibrate"):
        base.check_model(small_cnn(seed=3))


# -------------------------------------------------------------------------------------------- memory

_RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from edgeq.calibrate import calibrate
    table = calibrate(sys.argv[1], sys.argv[2], method="entropy", num_samples=int(sys.argv[3]), batch_size=16)
    assert table.num_samples == int(sys.argv[3])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_peak_memory_is_flat_in_the_sample_count(tmp_path):
    model = small_cnn(seed=0, shape=(1, 3, 32, 32))  # ~200 KB of activations per sample
    onnx.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(0, 1, (2000, 3, 32, 32)).astype(np.float32))
    rss = {}
    for n in (100, 2000):
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), str(n)],
            capture_output=True,
            text=True,
            check=True,
            cwd="/work/main",
        )
        rss[n] = int(out.stdout.split()[-1])
    assert rss[2000] <= 1.25 * rss[100], rss
