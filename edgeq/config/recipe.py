"""Calibration recipes: calibration/*.toml, how raw samples become model inputs and how ranges are chosen."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from edgeq._compat import StrEnum
from edgeq.config.resources import data_dir
from edgeq.config.strict import load_toml_as
from edgeq.errors import ConfigError


class CalibrationMethod(StrEnum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


class Layout(StrEnum):
    NCHW = "nchw"
    NHWC = "nhwc"


class ChannelOrder(StrEnum):
    RGB = "rgb"
    BGR = "bgr"
    GRAY = "gray"


@dataclass(frozen=True)
class Preprocess:
    """Turning an image file into a model input: resize → centre crop → scale → (x - mean) / std → layout."""

    resize: tuple[int, int] | None = None  # (height, width)
    crop: tuple[int, int] | None = None  # centre crop (height, width), after resize
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Layout = Layout.NCHW
    channels: ChannelOrder = ChannelOrder.RGB

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError("preprocess.mean and preprocess.std must have the same length")
        if any(s == 0 for s in self.std):
            raise ValueError("preprocess.std must not contain 0")


@dataclass(frozen=True)
class MethodConfig:
    """How a tensor's clipping range is chosen from its statistics.

    ``percentile``: the range covers this percentage of the values (two-sided for signed tensors).
    ``bins``: histogram resolution that entropy and mse search over.
    """

    name: CalibrationMethod = CalibrationMethod.MINMAX
    percentile: float = 99.999
    bins: int = 2048

    def __post_init__(self) -> None:
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError("method.percentile must be in (50, 100]")
        if self.bins < 128:
            raise ValueError("method.bins must be at least 128")


class WeightClipping(StrEnum):
    """How weight ranges are chosen: ``none`` (max|w|, the quantizer's default) or ``mse``."""

    NONE = "none"
    MSE = "mse"


@dataclass(frozen=True)
class Algorithms:
    """Accuracy algorithms run around quantization (a recipe's ``[algorithms]`` table; :mod:`edgeq.accuracy`).

    ``equalization``: cross-layer equalization (exact in float). ``bias_correction``: empirical per-channel
    bias correction. ``weight_clipping``: ``none`` or ``mse``. ``float_outputs``: on onnxruntime targets,
    Gemm/MatMul/Add/Mul graph outputs stay float (onnxruntime still computes them from int8). Each is kept
    only where it lowers the int8 model's error on the calibration samples. They need calibration data at
    quantization time (``edgeq quantize --data``). The default, all off, is plain post-training quantization.
    """

    equalization: bool = False
    bias_correction: bool = False
    weight_clipping: WeightClipping = WeightClipping.NONE
    float_outputs: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_clipping", WeightClipping(self.weight_clipping))

    @property
    def any(self) -> bool:
        return (
            self.equalization
            or self.bias_correction
            or self.float_outputs
            or (self.weight_clipping is not WeightClipping.NONE)
        )


@dataclass(frozen=True)
class Recipe:
    """One calibration recipe."""

    name: str
    description: str = ""
    preprocess: Preprocess = field(default_factory=Preprocess)
    method: MethodConfig = field(default_factory=MethodConfig)
    algorithms: Algorithms = field(default_factory=Algorithms)
    num_samples: int = 512
    batch_size: int = 16
    seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError("num_samples must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


DEFAULT_RECIPE = Recipe(name="default", description="inputs used as given; MinMax")


def list_recipes() -> list[Recipe]:
    """The shipped calibration recipes, sorted by name."""
    return [load_recipe(p) for p in sorted(data_dir("calibration").glob("*.toml"))]


def load_recipe(name_or_path: str | Path | Recipe | None) -> Recipe:
    """Load a shipped recipe by name (``imagenet-224``) or any file by path; ``None``: the default."""
    if name_or_path is None:
        return DEFAULT_RECIPE
    if isinstance(name_or_path, Recipe):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.exists()):
        shipped = {p.stem: p for p in data_dir("calibration").glob("*.toml")}
        if text not in shipped:
            near = difflib.get_close_matches(text, list(shipped), n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ConfigError(
                f"unknown recipe '{text}'; {hint}known recipes: {', '.join(sorted(shipped))} "
                "(or pass a path to a .toml recipe)"
            )
        path = shipped[text]
    if not path.is_file():
        raise ConfigError(f"{path}: calibration recipe not found")
    recipe = load_toml_as(Recipe, path)
    return dataclasses.replace(recipe, source=str(path))
