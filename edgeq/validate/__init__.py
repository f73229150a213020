"""The validate stage, float vs int8: accuracy, top-1 agreement, SQNR per output and layer, latency, size.

:func:`validate` runs both models in onnxruntime here; :func:`compare` takes outputs computed anywhere else
(a Pi over SSH, an emulated microcontroller) so that every place gives the same :class:`Report`.
"""

from edgeq.validate.compare import compare
from edgeq.validate.litert import Exactness, validate_android_package, validate_tflite
from edgeq.validate.metrics import Histogram, LayerMetrics, OutputMetrics, cosine, sqnr_db
from edgeq.validate.report import Environment, Latency, ModelStats, Report
from edgeq.validate.run import validate
from edgeq.validate.thresholds import Thresholds

__all__ = [
    "Environment",
    "Exactness",
    "Histogram",
    "Latency",
    "LayerMetrics",
    "ModelStats",
    "OutputMetrics",
    "Report",
    "Thresholds",
    "compare",
    "cosine",
    "sqnr_db",
    "validate",
    "validate_android_package",
    "validate_tflite",
]
