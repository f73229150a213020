"""Streaming per-tensor statistics with an exactly mergeable histogram.

A tensor's state is its exact min, max and value count, plus a histogram whose bins have width ``2**e`` for an
integer ``e``: a value ``x`` falls into the integer bin ``floor(x * 2**-e)``, which is exact in floating point
because multiplying by a power of two only changes the exponent. The histogram keeps the counts of at most
:data:`WINDOW` consecutive bins, starting at ``offset = floor(min * 2**-e)``.

``e`` is a function of the data's ``[min, max]`` only (:func:`bin_exponent`): the smallest integer (at least
:data:`E_MIN`) for which the range spans at most :data:`WINDOW` bins and every bin index stays below ``2**24``
in magnitude (finer bins than float32's own resolution would say nothing). When a batch widens the range, the
histogram is coarsened (bin ``i`` becomes ``floor(i / 2)``, counts of merged pairs add) until it fits, and
``floor(floor(x / 2**e) / 2) == floor(x / 2**(e+1))`` makes the coarsened histogram equal to the one that
would have been built at the coarser width directly. Hence streaming over any order or partition of the data,
and merging states built from disjoint shards, all end in the same state, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WINDOW = 4096
"""Maximum number of histogram bins kept per tensor."""

E_MIN = -127
"""Finest bin width is ``2**E_MIN``; reached only by all-zero (or subnormal-valued) tensors."""

_INDEX_LIMIT = 2**24  # |bin index| stays below this: exact in float32, and as fine as float32 resolves


class NonFiniteError(ValueError):
    """A batch held NaN or Inf; the collector turns this into a DataError naming the tensor and samples."""


def _fits(lo: float, hi: float, e: int) -> bool:
    return math.floor(math.ldexp(hi, -e)) - math.floor(math.ldexp(lo, -e)) + 1 <= WINDOW


def bin_exponent(lo: float, hi: float) -> int:
    """The bin exponent ``e`` for data spanning ``[lo, hi]`` (finite, ``lo <= hi``); monotone in the range."""
    m = max(abs(lo), abs(hi))
    if m == 0.0:
        return E_MIN
    # |x| * 2**-e < 2**24 for all |x| <= m  <=>  e >= frexp exponent of m - 24.
    e = max(E_MIN, math.frexp(m)[1] - 24)
    span = hi - lo
    if span > 0.0:
        # fitting needs span * 2**-e <= WINDOW, so e >= log2(span) - 12 > frexp(span)[1] - 13: start there.
        e = max(e, math.frexp(span)[1] - 13)
    while not _fits(lo, hi, e):
        e += 1
    return e


def _bin(x: float, e: int) -> int:
    return math.floor(math.ldexp(x, -e))


def _rebin(
    offset: int, counts: np.ndarray, e_from: int, e_to: int, new_offset: int, length: int
) -> np.ndarray:
    """A dense histogram re-expressed at exponent ``e_to``, in ``length`` bins from ``new_offset``."""
    out = np.zeros(length, dtype=np.int64)
    if counts.size == 0:
        return out
    shift = e_to - e_from
    if shift == 0:
        out[offset - new_offset : offset - new_offset + counts.size] += counts
        return out
    # An arithmetic right shift is floor division by 2**shift, also for negative indices; beyond 62 every
    # index (|i| <= 2**24) is already 0 or -1. The shifted indices are non-decreasing, so runs of equal ones
    # are summed with reduceat and scattered once.
    idx = ((offset + np.arange(counts.size, dtype=np.int64)) >> min(shift, 62)) - new_offset
    starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
    out[idx[starts]] += np.add.reduceat(counts, starts)
    return out


def _bincount(x: np.ndarray, e: int, offset: int, length: int, nonnegative: bool) -> np.ndarray:
    """Counts of ``floor(x * 2**-e) - offset`` over ``[0, length)``; every index is known to fall inside."""
    if x.dtype == np.float32 and -127 <= e <= 0:
        # 2**-e is a float32 and |x| * 2**-e < 2**24: the product, its floor and the offset subtraction are
        # exact in float32 (no rounding, no overflow, no subnormal results since the scale is >= 1).
        y = np.multiply(x, np.float32(math.ldexp(1.0, -e)))
        if nonnegative:
            idx = y.astype(np.intp)  # truncation is floor for y >= 0
            if offset:
                idx -= offset
        else:
            np.floor(y, out=y)
            if offset:
                y -= np.float32(offset)
            idx = y.astype(np.intp)
    else:
        # float64 holds x * 2**-e exactly for float32 x: |x * 2**-e| < 2**24 and the smallest result,
        # 2**-149 * 2**-e with e <= ~118, is far above float64's subnormal range. (float64 activations are
        # exact too unless subnormal values meet a range beyond 2**900, which no real model produces.)
        y = np.multiply(x, math.ldexp(1.0, -e), dtype=np.float64)
        np.floor(y, out=y)
        if offset:
            y -= float(offset)
        idx = y.astype(np.intp)
    return np.bincount(idx.ravel(), minlength=length)


@dataclass(frozen=True, eq=False)
class TensorStats:
    """One tensor's statistics: exact ``min``, ``max`` and value ``count``, and the histogram.

    ``counts[k]`` is the number of values ``x`` with ``floor(x * 2**-e) == offset + k``; ``counts`` spans
    exactly the bins of ``min`` to ``max`` (so its first and last entries are non-zero). An empty state (no
    values seen) has ``count == 0`` and no counts.
    """

    min: float
    max: float
    count: int
    e: int
    offset: int
    counts: np.ndarray

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.int64)
        if counts.flags.writeable:
            counts = counts.copy()
            counts.flags.writeable = False
        object.__setattr__(self, "counts", counts)

    @classmethod
    def empty(cls) -> TensorStats:
        return cls(0.0, 0.0, 0, E_MIN, 0, np.zeros(0, dtype=np.int64))

    @property
    def width(self) -> float:
        """Bin width ``2**e``."""
        return math.ldexp(1.0, self.e)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        return (self.min, self.max, self.count, self.e, self.offset) == (
            other.min,
            other.max,
            other.count,
            other.e,
            other.offset,
        ) and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]

    def merge(self, other: TensorStats) -> TensorStats:
        """The statistics of the union of the data behind ``self`` and ``other`` (exact)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        lo, hi = min(self.min, other.min), max(self.max, other.max)
        e = bin_exponent(lo, hi)
        offset = _bin(lo, e)
        length = _bin(hi, e) - offset + 1
        counts = _rebin(self.offset, self.counts, self.e, e, offset, length)
        counts += _rebin(other.offset, other.counts, other.e, e, offset, length)
        return TensorStats(lo, hi, self.count + other.count, e, offset, counts)

    def check(self) -> str | None:
        """Why this state is inconsistent (for files read from disk), or None if it is sound."""
        if self.count < 0:
            return "count is negative"
        if self.count == 0:
            return None if self.counts.size == 0 else "count is 0 but counts are not empty"
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
            return "min/max are not finite or min > max"
        if self.e != bin_exponent(self.min, self.max):
            return f"e is {self.e} but the range [min, max] gives {bin_exponent(self.min, self.max)}"
        if self.offset != _bin(self.min, self.e):
            return "offset is not the bin of min"
        if self.counts.size != _bin(self.max, self.e) - self.offset + 1:
            return "counts do not span the bins of min to max"
        if (self.counts < 0).any() or self.counts[0] == 0 or self.counts[-1] == 0:
            return "counts are negative, or the bins of min and max are empty"
        if int(self.counts.sum()) != self.count:
            return f"counts add up to {int(self.counts.sum())}, not count = {self.count}"
        return None


class Observer:
    """Accumulates :class:`TensorStats` over batches, keeping only bounded state (at most WINDOW bins)."""

    __slots__ = ("count", "counts", "e", "max", "min", "offset")

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.e = E_MIN
        self.offset = 0
        self.counts = np.zeros(0, dtype=np.int64)

    def update(self, x: np.ndarray) -> None:
        """Add the values of ``x`` (any shape; float16/32/64). Raises NonFiniteError on NaN or Inf."""
        if x.size == 0:
            return
        if x.dtype != np.float32 and x.dtype != np.float64:
            x = x.astype(np.float32)  # float16 and bfloat16 values are exact in float32
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NonFiniteError("NaN" if math.isnan(lo) or math.isnan(hi) else "Inf")
        new_lo, new_hi = min(self.min, lo), max(self.max, hi)
        e = bin_exponent(new_lo, new_hi)
        offset = _bin(new_lo, e)
        length = _bin(new_hi, e) - offset + 1
        if self.count == 0:
            counts = np.zeros(length, dtype=np.int64)
        elif e == self.e and offset == self.offset and length == self.counts.size:
            counts = self.counts
        else:
            counts = _rebin(self.offset, self.counts, self.e, e, offset, length)
        counts += _bincount(x, e, offset, length, nonnegative=lo >= 0.0)
        self.min, self.max, self.e, self.offset, self.counts = new_lo, new_hi, e, offset, counts
        self.count += int(x.size)

    def stats(self) -> TensorStats:
        """A snapshot of the state."""
        if self.count == 0:
            return TensorStats.empty()
        return TensorStats(self.min, self.max, self.count, self.e, self.offset, self.counts.copy())
