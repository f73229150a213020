"""edgeq: float models to phones, Raspberry Pis and microcontrollers as int8, with proof they still work.

The pipeline's stages, each usable alone on the previous stage's saved output::

    export → calibrate → quantize → package → validate

The stage functions share their names with their subpackages (``edgeq.quantize`` is both), so they are
imported eagerly: importing a submodule later must not rebind ``edgeq.quantize`` to the module. Everything
else is imported lazily, so optional extras (torch, LiteRT, paramiko) are needed only by what uses them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from edgeq.calibrate import CalibrationTable, calibrate  # noqa: F401
from edgeq.export import export  # noqa: F401
from edgeq.lower import lower  # noqa: F401
from edgeq.packaging import package  # noqa: F401
from edgeq.quantize import QuantizeResult, quantize  # noqa: F401
from edgeq.validate import Report, Thresholds, validate  # noqa: F401

_API = {
    "compare": "edgeq.validate",
    "validate_tflite": "edgeq.validate",
    "open_samples": "edgeq.data",
    "load_labels": "edgeq.data",
    "open_device": "edgeq.devices",
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

__all__ = sorted(
    [
        *_API,
        "CalibrationTable",
        "QuantizeResult",
        "Report",
        "Thresholds",
        "calibrate",
        "export",
        "lower",
        "package",
        "quantize",
        "validate",
    ]
)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'edgeq' has no attribute {name!r}")
