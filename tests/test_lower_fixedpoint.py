"""TFLite's fixed-point arithmetic: the vectorised versions equal the scalar transcriptions, and
QuantizeMultiplier has TFLite's edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeq.lower import fixedpoint as F
from edgeq.lower import kernels as K


def _edge_values(rng, n):
    edges = [F.INT32_MIN, F.INT32_MIN + 1, -1, 0, 1, F.INT32_MAX, 1 << 30, -(1 << 30), (1 << 31) - 2]
    return np.array(edges + [int(v) for v in rng.integers(F.INT32_MIN, F.INT32_MAX, n, endpoint=True)])


def test_srdhm_and_rounding_divide_match_the_scalar_definitions():
    rng = np.random.default_rng(0)
    a, b = _edge_values(rng, 3000), _edge_values(rng, 3000)
    for x in (a, a >> 8, a >> 20):
        got = F.srdhm_np(x, b)
        want = [F.saturating_rounding_doubling_high_mul(int(u), int(v)) for u, v in zip(x, b, strict=True)]
        np.testing.assert_array_equal(got, want)
    for e in range(0, 32):
        got = F.rdbpot_np(a, e)
        np.testing.assert_array_equal(got, [F.rounding_divide_by_pot(int(v), e) for v in a])


def test_multiply_by_quantized_multiplier_matches_scalar_for_all_shifts():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 24), 1 << 24, 2000)
    for real in (1e-6, 0.0007, 0.3, 0.5, 0.999999, 1.0, 1.7, 37.5):
        m, s = F.quantize_multiplier(real)
        got = F.mbqm_np(x, m, s)
        want = [F.multiply_by_quantized_multiplier(int(v), m, s) for v in x]
        np.testing.assert_array_equal(got, want)
        # and it approximates the real product to within one unit
        assert np.max(np.abs(got - x * real)) <= 1.0 + 1e-9 * np.max(np.abs(x * real))


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.0, (0, 0)),
        (0.5, (1 << 30, 0)),
        (1.0, (1 << 30, 1)),
        (0.75, (1610612736, 0)),
        (2.0**-40, (0, 0)),  # shift < -31 flushes to zero
        (1 - 2.0**-33, (1 << 30, 1)),  # rounds up to 2^31: halved, shift incremented
    ],
)
def test_quantize_multiplier_edge_cases(real, expected):
    assert F.quantize_multiplier(real) == expected


def test_quantize_multiplier_is_accurate():
    rng = np.random.default_rng(2)
    for real in rng.uniform(1e-6, 10.0, 500):
        m, s = F.quantize_multiplier(float(real))
        assert (1 << 30) <= m < (1 << 31)
        assert math.isclose(m * 2.0 ** (s - 31), real, rel_tol=2**-30)


def test_round_half_away_is_cs_round():
    assert [F.round_half_away(v) for v in (0.5, 1.5, 2.5, -0.5, -1.5, 0.49999)] == [1, 2, 3, -1, -2, 0]


def test_activation_ranges_follow_tflite():
    # zero point -128, scale 6/255: RELU6 covers the whole int8 range
    assert K.activation_range("RELU6", 6 / 255, -128) == (-128, 127)
    assert K.activation_range("RELU", 0.1, 5) == (5, 127)
    assert K.activation_range("RELU6", 0.1, 5) == (5, 65)
    assert K.activation_range("NONE", 0.1, 5) == (-128, 127)


def test_mean_count_multiplier_folds_the_division():
    m, s = F.quantize_multiplier(0.8)
    for n in (1, 3, 16, 49, 1000):
        cm, cs = K.mean_count_multiplier(m, s, n)
        assert math.isclose(cm * 2.0 ** (cs - 31), 0.8 / n, rel_tol=1e-6)
