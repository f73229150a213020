"""The quantize stage: float ONNX + calibrated ranges → static int8 QDQ ONNX for one target.

>>> result = quantize("model.onnx", table, target="cpu-x86")     # doctest: +SKIP
>>> print(result.summary.text()); result.save("model.int8.onnx")  # doctest: +SKIP

Modules: ``params`` (scale/zero-point math), ``coverage`` (which ops, how), ``plan`` (decisions and
parameter sharing), ``sharing`` (the constrained union-find), ``rewrite`` (the QDQ graph), ``summary``.
"""

from edgeq.quantize.api import META_ACTIVATION_TYPE, META_TARGET, META_TENSOR_MAP, RangeTable, quantize
from edgeq.quantize.params import QParams, QuantType
from edgeq.quantize.summary import FloatOp, FoldedActivation, QuantizeResult, QuantSummary, Requantization

__all__ = [
    "META_ACTIVATION_TYPE",
    "META_TARGET",
    "META_TENSOR_MAP",
    "FloatOp",
    "FoldedActivation",
    "QParams",
    "QuantSummary",
    "QuantType",
    "QuantizeResult",
    "RangeTable",
    "Requantization",
    "quantize",
]
