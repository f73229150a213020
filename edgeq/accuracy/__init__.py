"""Accuracy that holds on hard models: find the layers that lose it, fix what can be fixed, keep the rest.

- :func:`analyze` — per-layer sensitivity (:class:`SensitivityReport`: text, JSON, PNG plot, HTML).
- :func:`quantize_to_target` — keep the fewest, most sensitive layers in float until the loss is at most
  ``max_drop`` (:class:`TargetResult`, which unpacks as ``(result, kept, score)``).
- Algorithms, each a pure transform: :func:`equalize` (cross-layer equalization, exact),
  :func:`clip_weights` (per-channel MSE clipping search), :func:`correct_bias` (empirical bias correction),
  :func:`float_outputs` (no output quantization where onnxruntime computes it from int8 for free).
- :func:`quantize_accurately` — all of it in order, each algorithm kept only where it helps
  (:class:`Algorithms` holds the switches: the proposed ``[algorithms]`` recipe table).
"""

from edgeq.accuracy.bias import BiasCorrectionResult, CorrectedLayer, correct_bias
from edgeq.accuracy.clipping import ClippedWeight, ClipResult, WeightClipping, clip_weights
from edgeq.accuracy.equalize import EqualizedPair, EqualizeResult, equalize
from edgeq.accuracy.evaluate import AccuracyMetric, Evaluator, Score
from edgeq.accuracy.layers import Layer, Quantizer
from edgeq.accuracy.outputs import FloatOutputsResult, float_outputs
from edgeq.accuracy.pipeline import (
    DEFAULT_ALGORITHMS,
    NO_ALGORITHMS,
    AccurateResult,
    Algorithms,
    Decision,
    quantize_accurately,
)
from edgeq.accuracy.search import Precision, SearchStep, TargetResult, quantize_to_target
from edgeq.accuracy.sensitivity import LayerSensitivity, SensitivityReport, analyze

__all__ = [
    "DEFAULT_ALGORITHMS",
    "NO_ALGORITHMS",
    "AccuracyMetric",
    "AccurateResult",
    "Algorithms",
    "BiasCorrectionResult",
    "ClipResult",
    "ClippedWeight",
    "CorrectedLayer",
    "Decision",
    "EqualizeResult",
    "EqualizedPair",
    "Evaluator",
    "FloatOutputsResult",
    "Layer",
    "LayerSensitivity",
    "Precision",
    "Quantizer",
    "Score",
    "SearchStep",
    "SensitivityReport",
    "TargetResult",
    "WeightClipping",
    "analyze",
    "clip_weights",
    "correct_bias",
    "equalize",
    "float_outputs",
    "quantize_accurately",
    "quantize_to_target",
]
