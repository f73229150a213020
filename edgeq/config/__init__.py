"""Typed configuration: target profiles (targets/*.toml) and calibration recipes (calibration/*.toml)."""

from edgeq.config.recipe import (
    Algorithms,
    CalibrationMethod,
    ChannelOrder,
    Layout,
    MethodConfig,
    Preprocess,
    Recipe,
    WeightClipping,
    list_recipes,
    load_recipe,
)
from edgeq.config.target import (
    ActivationType,
    DeviceKind,
    Hardware,
    QuantScheme,
    Runtime,
    Target,
    list_targets,
    load_target,
)

__all__ = [
    "ActivationType",
    "Algorithms",
    "CalibrationMethod",
    "ChannelOrder",
    "DeviceKind",
    "Hardware",
    "Layout",
    "MethodConfig",
    "Preprocess",
    "QuantScheme",
    "Recipe",
    "Runtime",
    "Target",
    "WeightClipping",
    "list_recipes",
    "list_targets",
    "load_recipe",
    "load_target",
]
