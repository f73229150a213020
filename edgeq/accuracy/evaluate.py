"""Scoring a quantized model against its float model on a fixed set of samples, in onnxruntime.

Every search in :mod:`edgeq.accuracy` asks the same question many times — how much does this int8 model lose?
— so the samples are read once, the float model is run once, and each candidate costs one onnxruntime
session and one pass over the samples (one sample at a time, as a device runs them; onnxruntime's graph
optimizations on, so the QDQ model runs the fused int8 kernels it will run on a phone or a Pi).

The metrics are computed on one output (by default the model's first): ``agreement`` and ``accuracy`` need a
classifier-shaped output (rank 2, more than one class), ``sqnr`` any float output. Each has a *drop*, the
loss against the float model in points, which is what ``max_drop`` bounds:

- ``agreement``: the percentage of samples where the int8 top-1 class equals the float one; drop = 100 − it.
- ``accuracy``: top-1 accuracy against labels, in %; drop = float accuracy − int8 accuracy.
- ``sqnr``: the output's signal-to-quantization-noise ratio ``10·log10(Σf² / Σ(q − f)²)`` in dB; its drop
  is the noise energy as a percentage of the signal energy, ``100 · Σ(q − f)² / Σf²`` (drop 1 ↔ 20 dB,
  0.1 ↔ 30 dB), so that every metric's drop is "points lost, 0 is perfect".
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from edgeq import onnxutil
from edgeq._compat import StrEnum
from edgeq.data import open_samples
from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.validate.compare import as_labels
from edgeq.validate.metrics import is_classifier, sqnr_db


class AccuracyMetric(StrEnum):
    """What "accuracy" means for a search: see the module docstring."""

    AGREEMENT = "agreement"
    SQNR = "sqnr"
    ACCURACY = "accuracy"


def as_metric(metric: AccuracyMetric | str) -> AccuracyMetric:
    try:
        return AccuracyMetric(metric)
    except ValueError:
        raise ConfigError(
            f"metric: unknown metric '{metric}'; known: {', '.join(m.value for m in AccuracyMetric)}"
        ) from None


@dataclass(frozen=True)
class Score:
    """How one int8 model compares with the float model.

    ``value``: the metric itself (agreement % / accuracy % / SQNR dB); ``drop``: points lost (see the module
    docstring); ``sqnr_db`` is always filled. ``noise``: the mean over samples of each sample's output noise
    energy in % of its float output energy — unlike SQNR over all samples, every sample weighs the same,
    so a few loud inputs do not hide what happens to the quiet majority; it breaks ties between models whose
    class decisions agree and decides whether an algorithm is kept. ``agreement`` is None for non-classifier
    outputs, ``accuracy`` without labels.
    """

    metric: AccuracyMetric
    value: float
    drop: float
    sqnr_db: float
    agreement: float | None
    accuracy: float | None
    noise: float = 0.0

    def describe(self) -> str:
        if self.metric is AccuracyMetric.SQNR:
            return f"SQNR {self.value:.2f} dB (noise {self.drop:.3g} % of the signal energy)"
        name = "agreement" if self.metric is AccuracyMetric.AGREEMENT else "accuracy"
        return f"{name} {self.value:.2f} % (drop {self.drop:.2f} pts, SQNR {self.sqnr_db:.1f} dB)"


class Evaluator:
    """The samples, the float model's outputs on them, and scoring of candidate int8 models.

    ``data``: anything :func:`edgeq.data.open_samples` accepts; at most ``num_samples`` samples are used.
    ``labels``: class indices (array, or a path read with :func:`edgeq.data.load_labels`); needed for
    ``accuracy``; when ``data`` is a .npz holding ``labels`` and none are given, those are used.
    ``output``: the output the metrics look at (default: the first).
    """

    def __init__(
        self,
        float_model: str | os.PathLike[str] | onnx.ModelProto,
        data,
        *,
        metric: AccuracyMetric | str = AccuracyMetric.AGREEMENT,
        num_samples: int = 500,
        labels=None,
        output: str | None = None,
    ):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, not {num_samples!r}")
        self.metric = as_metric(metric)
        self.float_model = onnxutil.load_model(float_model)
        specs = onnxutil.input_specs(self.float_model)
        self.feeds = [dict(s) for s in open_samples(data, inputs=specs, limit=num_samples)]
        if not self.feeds:
            raise DataError("the evaluation data has no samples; pass at least one")
        names = [o.name for o in self.float_model.graph.output]
        if output is None:
            output = names[0]
        elif output not in names:
            raise ConfigError(f"output: the model has no output '{output}'; its outputs: {', '.join(names)}")
        self.output = output
        self.reference = self.outputs(self.float_model)
        self.classifier = is_classifier(tuple(self.reference.shape[1:]))
        if (
            labels is None
            and self.metric is AccuracyMetric.ACCURACY
            and isinstance(data, (str, os.PathLike))
            and str(data).endswith(".npz")
        ):
            labels = data
        self.labels = as_labels(labels)
        if self.metric is not AccuracyMetric.SQNR and not self.classifier:
            raise ConfigError(
                f"metric '{self.metric}' needs a classifier output (rank 2, more than one class); "
                f"output '{output}' has shape {list(self.reference.shape[1:])} per sample: "
                "use metric 'sqnr'"
            )
        if self.labels is not None and self.classifier:
            n = len(self.feeds) * self.reference.shape[1]  # one label per prediction row
            if self.labels.size < n:
                raise DataError(
                    f"labels: {self.labels.size} labels for {n} predictions; give one label per sample"
                )
            self.labels = self.labels[:n]
            classes = self.reference.shape[-1]
            bad = np.flatnonzero((self.labels < 0) | (self.labels >= classes))
            if bad.size:
                raise DataError(
                    f"labels: label {int(self.labels[bad[0]])} at index {int(bad[0])} is outside "
                    f"the {classes} classes of output '{output}'"
                )
        elif self.metric is AccuracyMetric.ACCURACY:
            raise ConfigError(
                "metric 'accuracy' needs labels: pass labels=… (or data as a .npz holding "
                "'labels'), or use metric 'agreement'"
            )
        self.float_top1 = self._top1(self.reference) if self.classifier else None
        self.float_accuracy = (
            100.0 * float(np.mean(self.float_top1 == self.labels))
            if self.labels is not None and self.float_top1 is not None
            else None
        )
        self.evaluations = 0

    @property
    def num_samples(self) -> int:
        return len(self.feeds)

    def outputs(self, model: onnx.ModelProto, fetch: Sequence[str] | None = None) -> np.ndarray:
        """The metric output of ``model`` on every sample, stacked along axis 0 (one row per sample)."""
        session = onnxutil.ort_session(model)
        name = self.output if fetch is None else fetch[0]
        rows = []
        for i, feed in enumerate(self.feeds):
            try:
                out = session.run([name], feed)[0]
            except Exception as e:  # onnxruntime's own exception types
                raise ModelError(
                    f"onnxruntime failed on sample {i}: {str(e).splitlines()[0][:300]}"
                ) from None
            rows.append(np.asarray(out, dtype=np.float64))
        return np.stack(rows)

    def score(self, model: onnx.ModelProto) -> Score:
        """Score an int8 (or any) model with the same inputs and outputs as the float model."""
        self.evaluations += 1
        q = self.outputs(model)
        return self.score_outputs(q)

    @staticmethod
    def _top1(outputs: np.ndarray) -> np.ndarray:
        return outputs.reshape(-1, outputs.shape[-1]).argmax(axis=1)

    def score_outputs(self, q: np.ndarray) -> Score:
        f = self.reference
        if q.shape != f.shape:
            raise ModelError(
                f"output '{self.output}' has shape {list(q.shape[1:])} in the quantized model but "
                f"{list(f.shape[1:])} in the float model"
            )
        noise = float(np.sum((q - f) ** 2))
        signal = float(np.sum(f**2))
        sqnr = sqnr_db(signal, noise)
        per_sample_noise = np.sum(((q - f) ** 2).reshape(len(q), -1), axis=1)
        per_sample_signal = np.maximum(np.sum((f**2).reshape(len(f), -1), axis=1), 1e-30)
        relative = 100.0 * float(np.mean(per_sample_noise / per_sample_signal))
        agreement = accuracy = None
        if self.classifier:
            top1 = self._top1(q)
            agreement = 100.0 * float(np.mean(top1 == self.float_top1))
            if self.labels is not None:
                accuracy = 100.0 * float(np.mean(top1 == self.labels))
        if self.metric is AccuracyMetric.AGREEMENT:
            value, drop = agreement, 100.0 - agreement
        elif self.metric is AccuracyMetric.ACCURACY:
            value, drop = accuracy, self.float_accuracy - accuracy
        else:
            value = sqnr
            drop = 100.0 * noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)
        return Score(self.metric, float(value), float(drop), sqnr, agreement, accuracy, relative)
