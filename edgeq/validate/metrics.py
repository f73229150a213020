"""Float-vs-int8 metrics, accumulated one sample at a time so memory does not grow with the sample count.

Every sum is taken in float64 over the difference ``int8 − float`` computed in float64 (exact for float32
inputs), one sample after the other in sample order: the same outputs give bit-identical metrics whether they
come streamed from :func:`edgeq.validate.validate` or stacked into :func:`edgeq.validate.compare`.
Elements where either side is NaN/Inf are counted apart and left out of the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgeq.validate.serialize import dec, round_float, sig

HISTOGRAM_BINS = 64  # even: doubling the range merges bin pairs exactly


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """10·log10(Σ signal² / Σ noise²); +inf when there is no noise, −inf when there is no signal."""
    if noise_energy == 0.0:
        return math.inf
    if signal_energy == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy)


def cosine(dot: float, energy_a: float, energy_b: float) -> float:
    """Cosine similarity from Σab, Σa², Σb²; 1 when both are all zeros, 0 when only one is."""
    if energy_a == 0.0 or energy_b == 0.0:
        return 1.0 if energy_a == energy_b else 0.0
    return max(-1.0, min(1.0, dot / math.sqrt(energy_a * energy_b)))


def is_classifier(sample_shape: tuple[int, ...]) -> bool:
    """Whether an output of this shape (batch axis included) holds class scores: rank 2, last dim > 1."""
    return len(sample_shape) == 2 and sample_shape[-1] > 1


@dataclass(frozen=True)
class Histogram:
    """Counts of ``int8 − float`` in equal bins on [lo, hi); lo = hi = 0 when every error is 0."""

    lo: float
    hi: float
    counts: tuple[int, ...]

    @property
    def edges(self) -> np.ndarray:
        if self.hi == self.lo:
            return np.array([self.lo, self.hi])
        return np.linspace(self.lo, self.hi, len(self.counts) + 1)


class _HistogramBuilder:
    """A symmetric histogram on [−2**e, 2**e) whose range doubles when an error falls outside it.

    Bin edges are multiples of a power of two, so a value's bin is ``floor(x · 2**k)`` — exact in float64 —
    and doubling the range adds adjacent bin pairs: the result is the histogram that a range known in advance
    would have given, whatever order the samples come in.
    """

    def __init__(self) -> None:
        self.exp: int | None = None  # range is [-2**exp, 2**exp)
        self.counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        self.zeros = 0  # errors of exactly 0 seen before the range was known

    def update(self, err: np.ndarray) -> None:
        if err.size == 0:
            return
        peak = float(np.max(np.abs(err)))
        if peak == 0.0:
            if self.exp is None:
                self.zeros += err.size
            else:
                self.counts[HISTOGRAM_BINS // 2] += err.size
            return
        need = math.frexp(peak)[1]  # peak < 2**need
        if self.exp is None:
            self.exp = need
            self.counts[HISTOGRAM_BINS // 2] += self.zeros
            self.zeros = 0
        while self.exp < need:
            self._double()
        half = HISTOGRAM_BINS // 2
        # x · 2**(log2(half) − exp) is exact; floor then an integer offset: no rounding at any step.
        scaled = np.ldexp(err, int(math.log2(half)) - self.exp)
        idx = np.floor(scaled).astype(np.int64) + half
        np.clip(idx, 0, HISTOGRAM_BINS - 1, out=idx)  # an error of exactly +2**exp goes into the top bin
        self.counts += np.bincount(idx, minlength=HISTOGRAM_BINS)

    def _double(self) -> None:
        pairs = self.counts.reshape(-1, 2).sum(axis=1)
        quarter = HISTOGRAM_BINS // 4
        self.counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        self.counts[quarter : quarter + HISTOGRAM_BINS // 2] = pairs
        self.exp += 1

    def result(self) -> Histogram:
        if self.exp is None:
            return Histogram(lo=0.0, hi=0.0, counts=(self.zeros,))
        r = math.ldexp(1.0, self.exp)
        return Histogram(lo=-r, hi=r, counts=tuple(int(c) for c in self.counts))


class ErrorStats:
    """Running sums for the error of one tensor against its float twin.

    ``full``: also Σ int8², Σ float·int8 and Σ|error| (cosine, mean error); per-layer statistics skip them.
    """

    def __init__(self, *, full: bool = True) -> None:
        self.full = full
        self.signal = 0.0  # Σ float²
        self.quant = 0.0  # Σ int8²
        self.dot = 0.0  # Σ float·int8
        self.noise = 0.0  # Σ (int8 − float)²
        self.abs_sum = 0.0
        self.max_abs = 0.0
        self.max_abs_sample: int | None = None
        self.elements = 0
        self.float_nonfinite = 0
        self.quant_nonfinite = 0
        self.first_nonfinite_sample: int | None = None

    def update(self, f: np.ndarray, q: np.ndarray, sample: int) -> np.ndarray:
        """Add one sample; returns the finite errors (float64, flat) for callers that want more."""
        f = np.asarray(f, dtype=np.float64).ravel()
        q = np.asarray(q, dtype=np.float64).ravel()
        err = q - f
        # np.sum (pairwise, in a fixed order) rather than np.dot: BLAS may change its order with alignment.
        signal, noise = float(np.sum(np.square(f))), float(np.sum(np.square(err)))
        # A NaN/Inf on either side makes one of these two sums non-finite (float32 squares cannot overflow
        # float64), so the common all-finite case needs no separate isfinite pass.
        if not (math.isfinite(signal) and math.isfinite(noise)):
            ff, qf = np.isfinite(f), np.isfinite(q)
            self.float_nonfinite += int(f.size - np.count_nonzero(ff))
            self.quant_nonfinite += int(q.size - np.count_nonzero(qf))
            if self.first_nonfinite_sample is None:
                self.first_nonfinite_sample = sample
            keep = ff & qf
            f, q, err = f[keep], q[keep], err[keep]
            signal, noise = float(np.sum(np.square(f))), float(np.sum(np.square(err)))
        self.signal += signal
        self.noise += noise
        if self.full:
            self.quant += float(np.sum(np.square(q)))
            self.dot += float(np.sum(f * q))
        if err.size:
            if self.full:
                a = np.abs(err)
                self.abs_sum += float(np.sum(a))
                peak = float(a.max())
            else:
                peak = max(float(err.max()), -float(err.min()))
            if peak > self.max_abs or self.max_abs_sample is None:
                self.max_abs, self.max_abs_sample = peak, sample
        self.elements += int(err.size)
        return err

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.noise)


@dataclass(frozen=True)
class OutputMetrics:
    """How one model output of the int8 model compares with the float model's, over all samples.

    Top-1 fields are set for classifier-shaped outputs (rank 2, last dim > 1): ``predictions`` argmax rows,
    ``agree`` of them equal; ``float_correct`` / ``quant_correct`` count matches with the labels when given.
    ``step`` is the quantization step (scale) of the int8 output when known, to read errors in LSB.
    """

    name: str
    shape: tuple[int, ...]  # one sample's output shape, batch axis included
    samples: int
    elements: int  # finite (float, int8) pairs the sums are over
    sqnr_db: float = field(metadata=dec(3))
    cosine: float = field(metadata=dec(9))
    max_abs_error: float = field(metadata=sig(6))
    max_abs_error_sample: int | None
    mean_abs_error: float = field(metadata=sig(6))
    error_histogram: Histogram
    predictions: int | None = None
    agree: int | None = None
    float_correct: int | None = None
    quant_correct: int | None = None
    step: float | None = field(default=None, metadata=sig(8))
    float_nonfinite: int = 0
    quant_nonfinite: int = 0
    first_nonfinite_sample: int | None = None

    @property
    def classifier(self) -> bool:
        return self.predictions is not None

    @property
    def agreement_pct(self) -> float | None:
        """Percent of argmax rows where int8 picks the float model's class."""
        return None if not self.predictions else 100.0 * self.agree / self.predictions

    @property
    def float_accuracy_pct(self) -> float | None:
        return (
            None
            if self.float_correct is None or not self.predictions
            else (100.0 * self.float_correct / self.predictions)
        )

    @property
    def quant_accuracy_pct(self) -> float | None:
        return (
            None
            if self.quant_correct is None or not self.predictions
            else (100.0 * self.quant_correct / self.predictions)
        )

    @property
    def top1_drop_pts(self) -> float | None:
        """Accuracy lost by int8, in percentage points (negative when int8 does better)."""
        if self.float_correct is None or not self.predictions:
            return None
        return 100.0 * (self.float_correct - self.quant_correct) / self.predictions

    @property
    def max_abs_error_steps(self) -> float | None:
        return None if not self.step else self.max_abs_error / self.step

    def _derived(self) -> dict[str, object]:
        def r(x: float | None, n: int) -> object:
            return None if x is None else round_float(x, ("dec", n))

        return {
            "agreement_pct": r(self.agreement_pct, 4),
            "float_accuracy_pct": r(self.float_accuracy_pct, 4),
            "quant_accuracy_pct": r(self.quant_accuracy_pct, 4),
            "top1_drop_pts": r(self.top1_drop_pts, 4),
            "max_abs_error_steps": r(self.max_abs_error_steps, 3),
        }


class OutputAccumulator:
    """Builds one :class:`OutputMetrics` from (float, int8) outputs fed one sample at a time."""

    def __init__(self, name: str, shape: tuple[int, ...], *, step: float | None = None) -> None:
        self.name, self.shape, self.step = name, tuple(shape), step
        self.stats = ErrorStats()
        self.hist = _HistogramBuilder()
        self.classifier = is_classifier(self.shape)
        self.samples = 0
        self.predictions = 0
        self.agree = 0
        self.float_correct = 0
        self.quant_correct = 0

    @property
    def rows_per_sample(self) -> int:
        """Argmax rows (predictions) one sample contributes: the batch dimension."""
        return self.shape[0] if self.classifier else 0

    def update(self, f: np.ndarray, q: np.ndarray, *, labels: np.ndarray | None = None) -> None:
        """Add one sample's outputs (shape ``self.shape``) and, for classifiers, its labels (one per row)."""
        err = self.stats.update(f, q, self.samples)
        self.hist.update(err)
        if self.classifier:
            pf = np.argmax(f.reshape(-1, self.shape[-1]), axis=-1)
            pq = np.argmax(q.reshape(-1, self.shape[-1]), axis=-1)
            self.predictions += pf.size
            self.agree += int(np.count_nonzero(pf == pq))
            if labels is not None:
                self.float_correct += int(np.count_nonzero(pf == labels))
                self.quant_correct += int(np.count_nonzero(pq == labels))
        self.samples += 1

    def result(self, *, labelled: bool) -> OutputMetrics:
        s = self.stats
        return OutputMetrics(
            name=self.name,
            shape=self.shape,
            samples=self.samples,
            elements=s.elements,
            sqnr_db=s.sqnr_db,
            cosine=cosine(s.dot, s.signal, s.quant),
            max_abs_error=s.max_abs,
            max_abs_error_sample=s.max_abs_sample,
            mean_abs_error=s.abs_sum / s.elements if s.elements else 0.0,
            error_histogram=self.hist.result(),
            predictions=self.predictions if self.classifier else None,
            agree=self.agree if self.classifier else None,
            float_correct=self.float_correct if self.classifier and labelled else None,
            quant_correct=self.quant_correct if self.classifier and labelled else None,
            step=self.step,
            float_nonfinite=s.float_nonfinite,
            quant_nonfinite=s.quant_nonfinite,
            first_nonfinite_sample=s.first_nonfinite_sample,
        )


@dataclass(frozen=True)
class LayerMetrics:
    """SQNR of one quantized tensor (a DequantizeLinear output) against its float twin, over all samples."""

    tensor: str  # name in the float model
    quant_tensor: str  # name in the int8 model
    op_type: str  # the float model's node that produces it ("input" for a graph input)
    sqnr_db: float = field(metadata=dec(3))
    max_abs_error: float = field(metadata=sig(6))
    step: float | None = field(default=None, metadata=sig(8))
    nonfinite: int = 0

    @property
    def max_abs_error_steps(self) -> float | None:
        return None if not self.step else self.max_abs_error / self.step
