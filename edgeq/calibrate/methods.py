"""Calibration methods: a tensor's clipping range ``(lo, hi)`` from its :class:`TensorStats`.

All methods but minmax look at the distribution of ``|x|`` and choose a threshold ``T``; the range is then
``[-T, T]`` clipped to the data's ``[min, max]``, so a non-negative tensor (``min >= 0``) gets ``[0, T]``
(after including 0) and a signed one ``[max(-T, min), min(T, max)]``. Clipping to the data can only tighten
the range; it never cuts off a value the symmetric range would have kept.

- ``minmax``: the exact ``(min, max)``.
- ``percentile``: ``T`` is the ``percentile``-th percentile of ``|x|`` (as onnxruntime's Percentile
  calibrator), read off the cumulative histogram with linear interpolation inside a bin; 100 gives ``max|x|``.
- ``entropy``: TensorRT's KL-divergence search. ``|x|`` is re-binned into ``bins`` bins over ``[0, max|x|]``;
  for every ``i`` from 128 to ``bins`` the reference P is the first ``i`` bins with the mass beyond added to
  bin ``i - 1``, Q is those ``i`` bins merged into 128 levels and spread evenly over the bins where P is
  non-zero (as MXNet/onnxruntime do), and ``T = i * width`` of the
  ``i`` with the smallest KL(P || Q) (the largest such ``i`` on a tie). No smoothing is applied: a candidate
  whose Q is zero where P is not has infinite divergence and is never chosen. One deliberate difference:
  bin 0 is a level of its own (bins 1 … i-1 share the other 127), because 0 is exactly representable; merged
  with its neighbours, the spike of exact zeros after a ReLU dominates the divergence and pulls ``T`` down
  to the first candidate (NVIDIA's tools patch the same failure with ``bins[0] = bins[1]``, which in turn
  fails on inputs with few distinct values such as digit images). And one guard: candidates that would clip
  more than 1 % of the values are skipped (:data:`ENTROPY_MAX_CLIPPED`). KL divergence does not see how far
  clipped values are moved, and on spiky activations with few distinct values its minimum can clip a large
  share (7 % of a MobileNetV2 ReLU6 output on digit images), which costs far more accuracy than it saves.
- ``mse``: the ``T`` among ``bins`` equal steps up to ``max|x|`` that minimises the expected squared error
  of an 8-bit grid (256 levels over ``[0, T]`` for one-signed tensors, over the final range for signed ones):
  ``(|x| - T)**2`` for each value clipped, ``step**2 / 12`` for each value inside, except that the grid's
  exact points are honoured (values next to 0, and a point mass at the top such as ReLU6's 6); values are
  uniform inside each histogram bin (see :func:`mse_errors`).

Every range is then made usable: it is widened to include 0, an all-zero tensor gets ``[0, 1]`` (any scale
represents it exactly), a range narrower than ``2**-100`` is widened to that, and the ends are rounded outward
to float32 values so that whoever reads them as float32 gets a range still covering the computed one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

from edgeq.calibrate.histogram import TensorStats
from edgeq.config.recipe import CalibrationMethod, MethodConfig
from edgeq.errors import ConfigError

RangeFunction = Callable[[TensorStats, MethodConfig], tuple[float, float]]

ENTROPY_LEVELS = 128
ENTROPY_MAX_CLIPPED = 0.01
"""Entropy never clips more than this fraction of a tensor's values (see the module docstring)."""
MSE_LEVELS = 256
MIN_WIDTH = 2.0**-100


# ----------------------------------------------------------------------------------- |x| distribution


def _abs_bounds(stats: TensorStats) -> tuple[float, float]:
    """Exact ``max|x|`` and a lower bound of ``|x|`` (exact for one-signed tensors, 0 otherwise)."""
    hi = max(-stats.min, stats.max)
    if stats.min >= 0.0:
        lo = stats.min
    elif stats.max <= 0.0:
        lo = -stats.max
    else:
        lo = 0.0
    return lo, hi


def abs_cdf(stats: TensorStats) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative distribution of ``|x|`` as points ``(edges, cumulative counts)``, piecewise linear.

    The histogram is folded at 0 (bin ``i < 0`` covering ``[i w, (i + 1) w)`` holds ``|x|`` in
    ``(-(i + 1) w, -i w]``), and the first and last edges are clipped to the exact bounds of ``|x|``.
    """
    i = stats.offset + np.arange(stats.counts.size, dtype=np.int64)
    j = np.where(i >= 0, i, -i - 1)
    j0 = int(j.min())
    hist = np.bincount(j - j0, weights=stats.counts.astype(np.float64))
    lo, hi = _abs_bounds(stats)
    edges = np.clip((j0 + np.arange(hist.size + 1, dtype=np.float64)) * stats.width, lo, hi)
    return edges, np.concatenate(([0.0], np.cumsum(hist)))


def _eval_cdf(edges: np.ndarray, cum: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The piecewise linear CDF at points ``t``; only the last segment may have zero width (a point mass)."""
    k = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, edges.size - 2)
    a, b = edges[k], edges[k + 1]
    frac = np.where(b > a, (t - a) / np.where(b > a, b - a, 1.0), 0.0)
    out = cum[k] + (cum[k + 1] - cum[k]) * np.clip(frac, 0.0, 1.0)
    out = np.where(t < edges[0], 0.0, out)
    return np.where(t >= edges[-1], cum[-1], out)


def abs_histogram(stats: TensorStats, bins: int) -> tuple[np.ndarray, float]:
    """``|x|`` re-binned into ``bins`` equal bins over ``[0, max|x|]`` (fractional counts; uniform inside a
    state bin); returns ``(counts, bin width)``."""
    _, hi = _abs_bounds(stats)
    edges, cum = abs_cdf(stats)
    width = hi / bins
    t = np.arange(bins + 1, dtype=np.float64) * width
    t[-1] = hi
    return np.diff(_eval_cdf(edges, cum, t)), width


# ---------------------------------------------------------------------------------------------- methods


def _clip_symmetric(stats: TensorStats, threshold: float) -> tuple[float, float]:
    return max(-threshold, stats.min), min(threshold, stats.max)


def minmax_range(stats: TensorStats, config: MethodConfig) -> tuple[float, float]:
    """The exact ``(min, max)``."""
    return stats.min, stats.max


def percentile_threshold(stats: TensorStats, percentile: float) -> float:
    """The ``percentile``-th percentile of ``|x|``, interpolated inside its histogram bin."""
    lo, hi = _abs_bounds(stats)
    edges, cum = abs_cdf(stats)
    target = cum[-1] * (percentile / 100.0)
    k = int(np.searchsorted(cum, target, side="left"))
    if k == 0:
        return lo
    if k >= cum.size:
        return hi
    span = cum[k] - cum[k - 1]
    t = edges[k - 1] + (edges[k] - edges[k - 1]) * ((target - cum[k - 1]) / span)
    return float(min(max(t, lo), hi))


def percentile_range(stats: TensorStats, config: MethodConfig) -> tuple[float, float]:
    """``[-T, T]`` ∩ ``[min, max]`` with ``T`` the configured percentile of ``|x|``."""
    return _clip_symmetric(stats, percentile_threshold(stats, config.percentile))


def entropy_divergence(hist: np.ndarray, *, levels: int = ENTROPY_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """KL(P || Q) of every candidate ``i`` (bins kept) from ``levels`` to ``hist.size``: ``(candidates, kl)``.

    Evaluated for all candidates at once from prefix sums: with O the mass beyond candidate ``i``, G_g and n_g
    the mass and the number of P-non-zero bins of level g, and N the total,
    ``N · KL = Σ P log P - Σ_g PG_g log(G_g / n_g) + N log((N - O) / N)`` where PG_g is P's mass in level g
    (G_g, plus O for the last level). Infinite where Q is 0 under some of P's mass.
    """
    bins = hist.size
    if bins < levels:
        raise ValueError(f"entropy needs at least {levels} bins")
    h = hist.astype(np.float64)
    cand = np.arange(levels, bins + 1, dtype=np.int64)  # i: number of bins kept
    total = h.sum()
    if total <= 0.0:
        return cand, np.zeros(cand.size)
    cum = np.concatenate(([0.0], np.cumsum(h)))
    suffix = np.concatenate((np.cumsum(h[::-1])[::-1], [0.0]))  # suffix[i] = mass of bins i, i+1, …
    nonzero = np.concatenate(([0], np.cumsum(h > 0.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        hlogh = np.where(h > 0.0, h * np.log(np.where(h > 0.0, h, 1.0)), 0.0)
    hl_cum = np.concatenate(([0.0], np.cumsum(hlogh)))

    outliers = suffix[cand]
    last = h[cand - 1]
    # Level 0 is bin 0 alone: 0 is exactly representable, so the quantized distribution keeps that bin's mass
    # (the spike of exact zeros after a ReLU) as it is. Bins 1 … i-1 are merged into the other levels - 1
    # levels, bin k into level 1 + floor((k - 1) (levels - 1) / (i - 1)).
    g = np.arange(levels, dtype=np.int64)
    rest = cand[:, np.newaxis] - 1
    bounds = np.concatenate(
        (np.zeros((cand.size, 1), np.int64), 1 + (g[np.newaxis, :] * rest + levels - 2) // (levels - 1)),
        axis=1,
    )
    mass = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    count = (nonzero[bounds[:, 1:]] - nonzero[bounds[:, :-1]]).astype(np.float64)
    # P's last bin also holds the outliers, so it is non-zero (and gets a share of Q) even when h[i-1] is 0.
    count[:, -1] += (last == 0.0) & (outliers > 0.0)
    p_mass = mass.copy()
    p_mass[:, -1] += outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        p_last = last + outliers
        plogp = hl_cum[cand] - hlogh[cand - 1] + np.where(p_last > 0.0, p_last * np.log(p_last), 0.0)
        q_level = np.where(count > 0.0, mass / np.where(count > 0.0, count, 1.0), 0.0)
        cross = np.where(p_mass > 0.0, p_mass * np.log(q_level), 0.0)  # -inf where Q is 0 under P's mass
        kl = (plogp - cross.sum(axis=1)) / total + np.log(cum[cand] / total)
    return cand, np.where(np.isnan(kl), np.inf, kl)


def entropy_threshold(
    hist: np.ndarray, width: float, *, levels: int = ENTROPY_LEVELS, max_clipped: float = ENTROPY_MAX_CLIPPED
) -> float:
    """TensorRT's KL-divergence threshold for histogram ``hist`` of ``|x|`` with bins of ``width``, among the
    candidates that clip at most the fraction ``max_clipped`` of the values."""
    cand, kl = entropy_divergence(hist, levels=levels)
    h = hist.astype(np.float64)
    clipped = np.concatenate((np.cumsum(h[::-1])[::-1], [0.0]))[cand] / max(h.sum(), 1e-300)
    kl = np.where(clipped > max_clipped, np.inf, kl)  # the last candidate clips nothing: always allowed
    best = np.flatnonzero(kl == kl.min())[-1] if np.isfinite(kl).any() else kl.size - 1
    return float(cand[best]) * width


def entropy_range(stats: TensorStats, config: MethodConfig) -> tuple[float, float]:
    """``[-T, T]`` ∩ ``[min, max]`` with ``T`` from the KL-divergence search over ``config.bins`` bins."""
    hist, width = abs_histogram(stats, config.bins)
    _, hi = _abs_bounds(stats)
    return _clip_symmetric(stats, min(entropy_threshold(hist, width), hi))


def _suffix(v: np.ndarray) -> np.ndarray:
    return np.concatenate((np.cumsum(v[::-1])[::-1], [0.0]))  # out[k] = v[k] + v[k+1] + …


def mse_errors(stats: TensorStats, thresholds: np.ndarray, *, levels: int = MSE_LEVELS) -> np.ndarray:
    """Expected total squared error of quantizing the tensor on a ``levels``-level grid over ``[0, T]``
    (``[-T, T]`` ∩ ``[min, max]`` for a signed tensor), for each threshold ``T``.

    Values are taken as uniform inside each histogram bin (a zero-width bin is a point mass). A value above
    ``T`` costs ``(|x| - T)**2``; one inside costs ``step**2 / 12``, except near the grid points that are
    exact: values in the bin at 0 cost their squared distance to 0 (at most ``step**2 / 12``; the part of
    that bin's count above the next bin's density is taken as exact zeros), and for a
    one-signed tensor a point mass at ``max|x|`` costs nothing when ``T = max|x|`` (ReLU6's 6).
    """
    edges, cum = abs_cdf(stats)
    a, b, c = edges[:-1], edges[1:], np.diff(cum)
    m1, m2 = c * (a + b) / 2.0, c * (a * a + a * b + b * b) / 3.0
    s0, s1, s2 = _suffix(c), _suffix(m1), _suffix(m2)
    t = np.asarray(thresholds, dtype=np.float64)
    k = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, c.size - 1)  # segment holding t
    ak, bk, ck = a[k], b[k], c[k]
    tk = np.maximum(t, ak)
    seg = bk - ak
    # Fraction of segment k's mass above t (a zero-width segment is a point mass: all of it if t is below).
    frac = np.where(seg > 0.0, np.clip((bk - tk) / np.where(seg > 0.0, seg, 1.0), 0.0, 1.0), t < ak)
    none = t >= edges[-1]
    above0 = np.where(none, 0.0, s0[k + 1] + ck * frac)
    above1 = np.where(none, 0.0, s1[k + 1] + ck * frac * (tk + bk) / 2.0)
    above2 = np.where(none, 0.0, s2[k + 1] + ck * frac * (tk * tk + tk * bk + bk * bk) / 3.0)
    clipped = np.maximum(above2 - 2.0 * t * above1 + t * t * above0, 0.0)
    signed = stats.min < 0.0 < stats.max
    # The grid spans the final range [-T, T] ∩ [min, max] (what the quantizer will use), so a skewed tensor
    # gets the finer step its short side allows.
    unit = (np.minimum(t, stats.max) - np.maximum(-t, stats.min) if signed else t) / (levels - 1)
    rounding_each = unit * unit / 12.0
    inside = cum[-1] - above0
    rounding = inside * rounding_each
    if edges[0] == 0.0 and c[0] > 0.0:
        # The bin at 0 often holds a point mass of exact zeros (ReLU): take as spread over the bin only as
        # much as the next bin's density suggests, and the rest as exact zeros, which cost nothing.
        spread = min(c[0], c[1] * (b[0] - a[0]) / (b[1] - a[1])) if c.size > 1 and b[1] > a[1] else c[0]
        near_zero = np.minimum(c[0], inside)
        cost = np.minimum((b[0] - a[0]) ** 2 / 3.0, rounding_each) * spread
        rounding += cost - near_zero * rounding_each
    if not signed and a[-1] == b[-1]:
        rounding = np.where(none, rounding - c[-1] * rounding_each, rounding)
    return rounding + clipped


def mse_threshold(stats: TensorStats, bins: int) -> float:
    """The ``T`` among ``bins`` equal steps up to ``max|x|`` with the least :func:`mse_errors`."""
    _, hi = _abs_bounds(stats)
    t = np.arange(1, bins + 1, dtype=np.float64) * (hi / bins)
    t[-1] = hi
    err = mse_errors(stats, t)
    return float(t[np.flatnonzero(err == err.min())[-1]])


def mse_range(stats: TensorStats, config: MethodConfig) -> tuple[float, float]:
    """``[-T, T]`` ∩ ``[min, max]`` with ``T`` minimising the expected 8-bit quantization error."""
    return _clip_symmetric(stats, mse_threshold(stats, config.bins))


METHODS: Mapping[CalibrationMethod, RangeFunction] = MappingProxyType(
    {
        CalibrationMethod.MINMAX: minmax_range,
        CalibrationMethod.PERCENTILE: percentile_range,
        CalibrationMethod.ENTROPY: entropy_range,
        CalibrationMethod.MSE: mse_range,
    }
)
"""The registry: every :class:`CalibrationMethod` and the function computing its raw range."""


# --------------------------------------------------------------------------------------------- helpers


def _known() -> str:
    return ", ".join(sorted(str(m) for m in METHODS))


def method_config(
    method: MethodConfig | CalibrationMethod | str | None, *, base: MethodConfig | None = None
) -> MethodConfig:
    """Resolve ``method`` to a MethodConfig; a bare name keeps ``base``'s percentile and bins."""
    base = base or MethodConfig()
    if method is None:
        return base
    if isinstance(method, MethodConfig):
        config = method
    else:
        try:
            name = CalibrationMethod(str(method).lower())
        except ValueError:
            raise ConfigError(f"unknown calibration method '{method}'; known methods: {_known()}") from None
        config = dataclasses.replace(base, name=name)
    if config.name not in METHODS:
        raise ConfigError(
            f"calibration method '{config.name}' has no implementation; known methods: {_known()}"
        )
    return config


def _round_out(lo: float, hi: float) -> tuple[float, float]:
    flo, fhi = np.float32(lo), np.float32(hi)
    if float(flo) > lo:
        flo = np.nextafter(flo, np.float32(-np.inf))
    if float(fhi) < hi:
        fhi = np.nextafter(fhi, np.float32(np.inf))
    return float(flo), float(fhi)


def finish_range(lo: float, hi: float) -> tuple[float, float]:
    """Make a raw range usable for quantization: includes 0, not zero-width, ends exact float32 values."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo == 0.0:
        return 0.0, 1.0
    if hi - lo < MIN_WIDTH:
        if hi > 0.0:
            hi = lo + MIN_WIDTH
        else:
            lo = hi - MIN_WIDTH
    return _round_out(lo, hi)


def compute_range(stats: TensorStats, method: MethodConfig) -> tuple[float, float]:
    """The calibrated range of one tensor under ``method`` (always contains 0, never zero-width)."""
    if stats.count == 0:
        return 0.0, 1.0
    function = METHODS.get(method.name)
    if function is None:
        raise ConfigError(f"unknown calibration method '{method.name}'; known methods: {_known()}")
    lo, hi = function(stats, method)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"method {method.name} produced a non-finite range")
    return finish_range(lo, hi)
