"""edgeq: float models to phones, Raspberry Pis and microcontrollers as int8, with proof they still work.

The pipeline's stages, each usable alone on the previous stage's saved output::

    export → calibrate → quantize → package → validate

The functions are imported lazily so that ``import edgeq`` stays fast and optional extras (torch, LiteRT,
paramiko) are only needed by the stages that use them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "export": "edgeq.export",
    "calibrate": "edgeq.calibrate",
    "CalibrationTable": "edgeq.calibrate",
    "quantize": "edgeq.quantize",
    "QuantizeResult": "edgeq.quantize",
    "validate": "edgeq.validate",
    "compare": "edgeq.validate",
    "validate_tflite": "edgeq.validate",
    "open_samples": "edgeq.data",
    "load_labels": "edgeq.data",
    "lower": "edgeq.lower",
    "open_device": "edgeq.devices",
    "Report": "edgeq.validate",
    "Thresholds": "edgeq.validate",
    "package": "edgeq.packaging",
    "load_target": "edgeq.config",
    "list_targets": "edgeq.config",
    "load_recipe": "edgeq.config",
    "list_recipes": "edgeq.config",
    "Target": "edgeq.config",
    "Recipe": "edgeq.config",
    "MethodConfig": "edgeq.config",
    "CalibrationMethod": "edgeq.config",
    "EdgeqError": "edgeq.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'edgeq' has no attribute {name!r}")
