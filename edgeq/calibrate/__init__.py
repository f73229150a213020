"""edgeq.calibrate: streaming activation statistics, calibration methods and the CalibrationTable.

``calibrate(model, data, ...)`` runs the float model over calibration samples and returns a
:class:`CalibrationTable`; ``table.ranges()`` is what the quantizer consumes. The table's file format is
documented in :mod:`edgeq.calibrate.table`.
"""

from edgeq.calibrate.histogram import WINDOW, Observer, TensorStats, bin_exponent
from edgeq.calibrate.methods import METHODS, compute_range, method_config
from edgeq.calibrate.run import CollectResult, calibrate, collect
from edgeq.calibrate.table import CalibrationTable, model_fingerprint

__all__ = [
    "METHODS",
    "WINDOW",
    "CalibrationTable",
    "CollectResult",
    "Observer",
    "TensorStats",
    "bin_exponent",
    "calibrate",
    "collect",
    "compute_range",
    "method_config",
    "model_fingerprint",
]
