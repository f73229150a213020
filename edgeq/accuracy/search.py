"""Accuracy target: keep the fewest, most sensitive layers out of int8 until the loss is at most ``max_drop``.

The search (every step scored on the given samples against the float model):

1. quantize everything; if the drop is already within ``max_drop``, done, nothing kept.
2. rank the layers by the drop each adds alone (:mod:`edgeq.accuracy.sensitivity`, one pass per layer).
3. grow the kept set along the ranking — 1, 2, 4, 8 … most sensitive layers, then bisect between the last
   miss and the first hit — to the shortest prefix that meets the target (``log2`` of the layer count
   passes instead of one per layer; the drop is close to monotone along the ranking, and the pruning below
   repairs where it is not).
4. prune: try to put each kept layer back into int8, least sensitive first; it stays int8 if the target still
   holds. Now no kept layer can return to int8 alone without missing the target.
5. smaller sets: with ``k`` layers kept, every set of ``k - 1`` layers is scored (in ranking order) while
   that fits in the ``exhaustive`` budget of candidates; the best one that meets the target replaces the
   kept set, and the step repeats one size down. When every set one smaller misses, the kept set is the
   smallest there is — assuming, as holds in practice, that keeping more layers float never loses accuracy,
   so that no smaller set can meet a target no set of ``k - 1`` meets. :attr:`TargetResult.proven_minimal`
   says whether that check could be afforded; the ranking alone finds a good but not always the smallest set.

Higher precision means float in the QDQ model, which only onnxruntime runs, or — with
``precision="int16"`` on a target whose runtimes include LiteRT — int16 activations with int8 weights
(TFLite's 16x8 mode, :mod:`edgeq.quantize.int16`), which a full-integer .tflite can hold; only Conv, Gemm,
MatMul and Add layers can be kept in int16. On a target that runs int8 only (TFLite Micro, the C backend)
a missed target is an :class:`~edgeq.errors.UnsupportedError` naming the layers that lose the accuracy.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import onnx

from edgeq._compat import StrEnum
from edgeq.accuracy.evaluate import AccuracyMetric, Evaluator, Score
from edgeq.accuracy.layers import Quantizer, can_keep_float
from edgeq.accuracy.sensitivity import layer_scores
from edgeq.config import Runtime, Target, load_target
from edgeq.errors import ConfigError, UnsupportedError
from edgeq.quantize import QuantizeResult, quantize
from edgeq.quantize.int16 import INT16_OPS


class Precision(StrEnum):
    """What "higher precision" means for the layers the search keeps."""

    FLOAT = "float"  # float nodes in the QDQ model (onnxruntime targets)
    INT16 = "int16"  # TFLite's 16x8 mode: int16 activations, int8 weights (LiteRT targets)


class _Int16Quantizer(Quantizer):
    """A Quantizer whose kept layers run in 16x8 instead of float (only Conv/Gemm/MatMul/Add can)."""

    def keeping(self, layers) -> QuantizeResult:
        nodes = sorted(self.by_name[name].name for name in layers)
        return quantize(
            self.model, self.table, target=self.target, exclude=list(self.base_exclude), int16_nodes=nodes
        )


@dataclass(frozen=True)
class SearchStep:
    """One scored candidate: the layers kept in float and its score."""

    kept: tuple[str, ...]
    score: Score


@dataclass(frozen=True)
class TargetResult:
    """What :func:`quantize_to_target` found. Unpacks as ``(result, kept, score)``.

    ``kept``: the layers kept in float, most sensitive first; ``score``: the achieved metric on the search
    samples; ``full``: the all-int8 score; ``ranking``: all layers, most sensitive first; ``steps``: every
    candidate scored, in order; ``proven_minimal``: no set of ``len(kept) - 1`` layers meets the target (all
    were scored), so none smaller does either.
    """

    result: QuantizeResult
    kept: tuple[str, ...]
    score: Score
    full: Score
    max_drop: float
    ranking: tuple[str, ...]
    steps: tuple[SearchStep, ...]
    proven_minimal: bool = False  # every set of one layer fewer was scored and missed the target
    precision: str = Precision.FLOAT.value  # what the kept layers run in: "float" or "int16" (16x8)

    def __iter__(self) -> Iterator:
        return iter((self.result, list(self.kept), self.score))

    def text(self) -> str:
        lines = [
            f"accuracy target: drop ≤ {self.max_drop:g} ({self.score.metric})",
            f"  all int8: {self.full.describe()}",
        ]
        if not self.kept:
            lines.append("  met with every layer in int8")
        else:
            total = len(self.ranking)
            where = "float" if self.precision == Precision.FLOAT.value else "int16 (16x8)"
            lines.append(f"  kept in {where}: {len(self.kept)} of {total} layers: {', '.join(self.kept)}")
            lines.append(f"  achieved: {self.score.describe()} ({len(self.steps)} candidates scored)")
            if self.proven_minimal:
                lines.append(
                    f"  every set of one layer fewer misses the target: {len(self.kept)} is the fewest"
                )
        return "\n".join(lines)


def quantize_to_target(
    float_model: str | os.PathLike[str] | onnx.ModelProto,
    table: Mapping | object,
    data,
    *,
    target: Target | str,
    max_drop: float,
    metric: AccuracyMetric | str = AccuracyMetric.AGREEMENT,
    labels=None,
    num_samples: int = 500,
    reference: str | os.PathLike[str] | onnx.ModelProto | None = None,
    exclude: Sequence[str] = (),
    float_outputs: bool = False,
    exhaustive: int = 128,
    progress: bool | None = None,
    precision: Precision | str | None = None,
) -> TargetResult:
    """Quantize ``float_model``, keeping the fewest, most sensitive layers float, to a drop ≤ ``max_drop``.

    ``max_drop``: points of ``metric`` the int8 model may lose (see :mod:`edgeq.accuracy.evaluate`: top-1
    agreement or accuracy points, or for sqnr the noise energy in % of the signal). ``data``: the samples
    the search scores on (calibration or held-out samples; at most ``num_samples``); ``labels`` for
    ``accuracy``. ``reference``: the float model the metric compares with, when ``float_model`` is a
    prepared copy of it (equalized, bias-corrected); default ``float_model`` itself. ``exclude``: nodes kept
    float in every candidate (they do not count as kept layers). ``float_outputs``: apply
    :func:`edgeq.accuracy.outputs.float_outputs` to every candidate (onnxruntime targets only).
    ``exhaustive``: how many candidates the smaller-set check (step 5 above) may score. ``precision``:
    ``"int16"`` keeps the layers in TFLite's 16x8 mode (targets with LiteRT and TFLite's constraints; the
    candidates are scored as QDQ models in onnxruntime); ``"float"`` keeps them float; None (default): int16
    when the target's first runtime is LiteRT (android-arm64), float otherwise.

    Raises UnsupportedError when the target runs int8 only and all-int8 misses the target, or when even
    keeping every layer float misses it (the loss is then in the table or the data, not the layers).
    """
    if (
        isinstance(max_drop, bool)
        or not isinstance(max_drop, (int, float))
        or not math.isfinite(max_drop)
        or max_drop < 0
    ):
        raise ConfigError(f"max_drop must be a non-negative number of points, not {max_drop!r}")
    evaluator = Evaluator(
        float_model if reference is None else reference,
        data,
        metric=metric,
        num_samples=num_samples,
        labels=labels,
    )
    if precision is None:
        # "Higher precision" is what the target's own runtime can run: 16x8 for a LiteRT-first target (a
        # full-integer .tflite cannot hold float layers), float for onnxruntime.
        t = load_target(target)
        litert_first = t.primary_runtime is Runtime.LITERT and t.quantization.tflite_constraints
        precision = Precision.INT16 if litert_first else Precision.FLOAT
    try:
        precision = Precision(precision)
    except ValueError:
        raise ConfigError(
            f"precision '{precision}' is not one of: {', '.join(p.value for p in Precision)}"
        ) from None
    if precision is Precision.INT16:
        quantizer: Quantizer = _Int16Quantizer(float_model, table, target=target, exclude=exclude)
        t = quantizer.target
        if Runtime.LITERT not in t.runtimes or not t.quantization.tflite_constraints:
            raise ConfigError(
                f"precision 'int16': target '{t.name}' does not run LiteRT with TFLite's quantization "
                f"rules (runtimes: {', '.join(map(str, t.runtimes))}); use precision='float' or a LiteRT "
                "target"
            )
    else:
        quantizer = Quantizer(float_model, table, target=target, exclude=exclude, float_outputs=float_outputs)
    steps: list[SearchStep] = []
    cache: dict[tuple[str, ...], tuple[QuantizeResult, Score]] = {}

    def attempt(kept: Sequence[str]) -> tuple[QuantizeResult, Score]:
        key = tuple(sorted(kept))
        if key not in cache:
            result = quantizer.full if not key else quantizer.keeping(key)
            cache[key] = (result, evaluator.score(result.model))
            steps.append(SearchStep(tuple(kept), cache[key][1]))
        return cache[key]

    def ok(score: Score) -> bool:
        return score.drop <= max_drop

    result, full = attempt(())
    if ok(full):
        return TargetResult(
            result,
            (),
            full,
            full,
            float(max_drop),
            tuple(x.name for x in quantizer.layers),
            tuple(steps),
            precision=precision.value,
        )
    target_obj = quantizer.target
    _, rows = layer_scores(quantizer, evaluator, kept_float=False, progress=progress)
    if precision is Precision.INT16:
        rows = [r for r in rows if r.op_type in INT16_OPS]  # only these have 16x8 kernels
    ranking = [r.layer for r in rows]
    if precision is Precision.FLOAT and not can_keep_float(target_obj):
        worst = ", ".join(f"'{r.layer}' ({r.op_type}, drop alone {r.alone.drop:.3g})" for r in rows[:3])
        raise UnsupportedError(
            f"target '{target_obj.name}': all-int8 loses {full.drop:.3g} pts of {evaluator.metric} (max_drop "
            f"{max_drop:g}), and its runtimes ({', '.join(map(str, target_obj.runtimes))}) run int8 only, "
            f"so no layer can stay in higher precision (no int16 mode yet); most sensitive: {worst}; try "
            "equalization / bias correction, another calibration method, or a target with onnxruntime"
        )
    _, all_score = attempt(ranking)
    if not ok(all_score):
        raise UnsupportedError(
            f"even with all {len(ranking)} layers in {precision.value} the drop is {all_score.drop:.3g} pts "
            "of "
            f"{evaluator.metric} (max_drop {max_drop:g}): the loss comes from the inputs' quantization or "
            "from ops that stay int8 regardless; check the calibration table and the data"
        )
    # 3. shortest prefix of the ranking that meets the target: gallop, then bisect.
    lo, hi = 0, len(ranking)  # prefix lo misses (lo = 0: all int8), prefix hi meets
    k = 1
    while k < hi:
        if ok(attempt(ranking[:k])[1]):
            hi = k
            break
        lo = k
        k *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(attempt(ranking[:mid])[1]):
            hi = mid
        else:
            lo = mid
    kept = list(ranking[:hi])
    # 4. prune: least sensitive first, return each layer to int8 while the target holds.
    for layer in reversed(list(kept)):
        trial = [x for x in kept if x != layer]
        if ok(attempt(trial)[1]):
            kept = trial
    # 5. every set one smaller, while the budget allows; ranking order, so the likeliest come first.
    proven = False
    spent = len(steps)
    while kept:
        size = len(kept) - 1
        count = math.comb(len(ranking), size)
        if len(steps) - spent + count > exhaustive:
            break
        meeting = []
        for subset in itertools.combinations(ranking, size):
            score = attempt(list(subset))[1]
            if ok(score):
                meeting.append((score.drop, score.noise, list(subset)))
        if not meeting:
            proven = True
            break
        kept = min(meeting, key=lambda m: (m[0], m[1]))[2]
    else:
        proven = True  # down to no layer kept (not reached: all int8 was scored first)
    result, score = attempt(kept)
    return TargetResult(
        result,
        tuple(kept),
        score,
        full,
        float(max_drop),
        tuple(ranking),
        tuple(steps),
        proven,
        precision.value,
    )
