"""The accuracy algorithms in order, in one call: what ``edgeq quantize`` runs for ``[algorithms]``.

    float model ─ equalize ─► calibrate ─► clip weights ─► correct biases ─► quantize ─► float outputs
                                                                        └─► quantize_to_target (max_drop)

Equalization changes activations, so calibration runs on the equalized model; weight clipping and bias
correction change weights only and are quantized with that table's ranges. Every score (bias correction's
guard, the max-drop search) compares with the original float model, and the samples used are the
calibration samples: a held-out test set stays held out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import onnx

from edgeq import onnxutil
from edgeq.accuracy.bias import BiasCorrectionResult, correct_bias
from edgeq.accuracy.clipping import ClipResult, WeightClipping, clip_weights
from edgeq.accuracy.equalize import EqualizeResult, equalize
from edgeq.accuracy.evaluate import AccuracyMetric, Evaluator, Score
from edgeq.accuracy.layers import Quantizer
from edgeq.accuracy.outputs import float_output_names
from edgeq.accuracy.search import TargetResult, quantize_to_target
from edgeq.calibrate import CalibrationTable, calibrate
from edgeq.config import Algorithms, MethodConfig, Recipe, Target, load_target
from edgeq.config.recipe import CalibrationMethod
from edgeq.quantize import QuantizeResult

#: Plain PTQ: calibrate and quantize, nothing else (the recipe default).
NO_ALGORITHMS = Algorithms()

#: edgeq's accuracy mode: every algorithm that is exact or guarded (each kept only where it helps).
DEFAULT_ALGORITHMS = Algorithms(equalization=True, bias_correction=True, float_outputs=True)


@dataclass(frozen=True)
class Decision:
    """Whether one algorithm was kept: it is only if the int8 model's output noise on the samples drops."""

    algorithm: str
    kept: bool
    noise_before: float  # Score.noise without it (% of the output energy, mean over samples)
    noise_after: float  # with it

    def text(self) -> str:
        verdict = "kept" if self.kept else "not kept (no gain on the calibration samples)"
        return (
            f"{self.algorithm}: {verdict}; output noise {self.noise_before:.3g} % → {self.noise_after:.3g} %"
        )


@dataclass(frozen=True)
class AccurateResult:
    """The int8 model and everything that made it."""

    result: QuantizeResult
    table: CalibrationTable  # calibrated on ``prepared``'s activations (the equalized model when kept)
    prepared: onnx.ModelProto  # the float model that was quantized (equalized, clipped, bias-corrected)
    score: Score  # of the result, on the calibration samples, against the original float model
    decisions: tuple[Decision, ...] = ()
    equalization: EqualizeResult | None = None
    clipping: ClipResult | None = None
    bias_correction: BiasCorrectionResult | None = None
    search: TargetResult | None = None
    float_outputs: tuple[str, ...] = field(default=())

    @property
    def model(self) -> onnx.ModelProto:
        return self.result.model

    def text(self) -> str:
        parts = [self.result.summary.text()]
        for step in (self.equalization, self.clipping, self.bias_correction):
            if step is not None:
                parts.append(step.text())
        parts += [d.text() for d in self.decisions]
        if self.float_outputs:
            parts.append(
                f"float outputs (int8 accumulator, no output quantization): {', '.join(self.float_outputs)}"
            )
        if self.search is not None:
            parts.append(self.search.text())
        parts.append(f"on the calibration samples: {self.score.describe()}")
        return "\n".join(parts)


def quantize_accurately(
    float_model: str | os.PathLike[str] | onnx.ModelProto,
    data,
    *,
    target: Target | str,
    algorithms: Algorithms = DEFAULT_ALGORITHMS,
    recipe: Recipe | str | None = None,
    method: MethodConfig | CalibrationMethod | str | None = None,
    num_samples: int | None = None,
    max_drop: float | None = None,
    metric: AccuracyMetric | str = AccuracyMetric.AGREEMENT,
    labels=None,
    bias_samples: int = 256,
    search_samples: int = 500,
    progress: bool | None = None,
) -> AccurateResult:
    """Calibrate and quantize ``float_model`` on ``data`` for ``target`` with the accuracy ``algorithms``.

    ``recipe``, ``method`` and ``num_samples`` are :func:`edgeq.calibrate.calibrate`'s. Each algorithm
    is tried and kept only if it lowers the int8 model's output noise (:attr:`Score.noise`) on up to
    ``search_samples`` of the calibration samples; ``bias_samples`` of them feed equalization's ranges and
    bias correction. With ``max_drop`` the result comes from :func:`edgeq.accuracy.search.quantize_to_target`
    (``metric``; ``labels`` of the calibration samples for ``accuracy``).
    """
    original = onnxutil.load_model(float_model)
    target = load_target(target)
    evaluator = Evaluator(original, data, metric=metric, num_samples=search_samples, labels=labels)

    def quantizer(model: onnx.ModelProto, ranges) -> Quantizer:
        return Quantizer(model, ranges, target=target, float_outputs=algorithms.float_outputs)

    def attempt(model: onnx.ModelProto, ranges) -> Score:
        return evaluator.score(quantizer(model, ranges).full.model)

    table = calibrate(
        original, data, recipe=recipe, method=method, num_samples=num_samples, progress=progress
    )
    model, ranges = original, table.ranges()
    best = attempt(model, ranges)
    decisions: list[Decision] = []

    def consider(name: str, candidate: onnx.ModelProto, candidate_ranges) -> bool:
        nonlocal model, ranges, best
        score = attempt(candidate, candidate_ranges)
        kept = score.noise < best.noise
        decisions.append(Decision(name, kept, best.noise, score.noise))
        if kept:
            model, ranges, best = candidate, candidate_ranges, score
        return kept

    eq = clip = bias = None
    if algorithms.equalization:
        eq = equalize(original, data=data, num_samples=bias_samples)
        if eq.pairs:
            eq_table = calibrate(
                eq.model, data, recipe=recipe, method=method, num_samples=num_samples, progress=progress
            )
            if consider("equalization", eq.model, eq_table.ranges()):
                table = eq_table
    if algorithms.weight_clipping is not WeightClipping.NONE:
        clip = clip_weights(
            model, per_channel=target.quantization.per_channel, method=algorithms.weight_clipping
        )
        if any(w.clipped for w in clip.weights):
            consider("weight clipping", clip.model, ranges)
    if algorithms.bias_correction:
        bias = correct_bias(model, ranges, data, target=target, num_samples=bias_samples, progress=progress)
        if any(c.applied for c in bias.layers):
            consider("bias correction", bias.model, ranges)
    search = None
    if max_drop is None:
        result, score = quantizer(model, ranges).full, best
    else:
        search = quantize_to_target(
            model,
            ranges,
            data,
            target=target,
            max_drop=max_drop,
            metric=metric,
            labels=labels,
            num_samples=search_samples,
            reference=original,
            float_outputs=algorithms.float_outputs,
            progress=progress,
        )
        result, score = search.result, search.score
    return AccurateResult(
        result,
        table,
        model,
        score,
        tuple(decisions),
        eq,
        clip,
        bias,
        search,
        float_output_names(result.model),
    )
