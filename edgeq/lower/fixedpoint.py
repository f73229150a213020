"""TFLite's fixed-point arithmetic, exactly: QuantizeMultiplier and MultiplyByQuantizedMultiplier.

The scalar functions mirror tensorflow/lite/kernels/internal/quantization_util.cc and common.h (the default
build, without TFLITE_SINGLE_ROUNDING); the ``*_np`` functions are their vectorised numpy twins, computed in
int64 so that no intermediate overflows, with C's truncating division where C truncates.
"""

from __future__ import annotations

import math

import numpy as np

from edgeq.lower.program import Requant

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def round_half_away(x: float) -> float:
    """C's ``std::round``: halves round away from zero (``TfLiteRound``)."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: ``real ≈ multiplier · 2^(shift − 31)``, multiplier in [2^30, 2^31).

    ``real`` is a double computed from float32 scales by the caller, exactly as TFLite's Prepare does.
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(round_half_away(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


def requant(*reals: float) -> Requant:
    """A :class:`Requant` from one real multiplier per channel."""
    pairs = [quantize_multiplier(float(r)) for r in reals]
    return Requant(tuple(m for m, _ in pairs), tuple(s for _, s in pairs))


def f64(x: float) -> float:
    """``static_cast<double>(float_value)``: the float32 value of ``x`` as a double."""
    return float(np.float32(x))


# ---- scalar reference versions (used in tests and for building tables) ------------------------------------


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _c_div(ab + nudge, 1 << 31)


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _wrap32(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(_wrap32(x * (1 << left)), multiplier), right
    )


# ---- vectorised ------------------------------------------------------------------------------------------


def srdhm_np(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b  # |a·b| ≤ 2^62: fits in int64
    # nudge: 2^30 when ab ≥ 0, 1 − 2^30 = 2^30 − (2^31 − 1) below. The numerator has the sign of ab, and C's
    # truncating division by 2^31 of a negative numerator is the arithmetic shift of (numerator + 2^31 − 1);
    # the two corrections cancel, leaving a plain shift of ab + 2^30.
    q = (ab + (1 << 30)) >> 31
    if np.any(b == INT32_MIN):
        q = np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), q)
    return q


def rdbpot_np(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """RoundingDivideByPOT (round half away from zero) on int64 arrays; ``exponent`` ≥ 0."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def wrap32_np(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 (what an int32 overflow does in the C kernels)."""
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def mbqm_np(x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier (TFLite's default double rounding), broadcasting over channels."""
    shift = np.asarray(shift, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    if np.any(shift > 0):
        x = wrap32_np(x << np.maximum(shift, 0))
    return rdbpot_np(srdhm_np(x, multiplier), np.maximum(-shift, 0))


def mbqm_smaller_than_one_np(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplierSmallerThanOneExp: ``RoundingDivideByPOT(SRDHM(x, m), −shift)``."""
    return rdbpot_np(srdhm_np(x, multiplier), -int(shift))


__all__ = [
    "f64",
    "mbqm_np",
    "mbqm_smaller_than_one_np",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "rdbpot_np",
    "requant",
    "round_half_away",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
    "srdhm_np",
    "wrap32_np",
]
