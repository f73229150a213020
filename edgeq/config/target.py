"""Device profiles: targets/*.toml, one file a device. Data, not code: a new device is a new file."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from edgeq._compat import StrEnum
from edgeq.config.resources import data_dir
from edgeq.config.strict import load_toml_as
from edgeq.errors import ConfigError


class DeviceKind(StrEnum):
    DESKTOP = "desktop"
    PHONE = "phone"
    SBC = "sbc"  # single-board computer (Raspberry Pi)
    MCU = "mcu"


class Runtime(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"
    TFLITE_MICRO = "tflite-micro"
    C = "c"  # edgeq's generated C, no runtime


class ActivationType(StrEnum):
    UINT8 = "uint8"
    INT8 = "int8"


@dataclass(frozen=True)
class Hardware:
    """Facts about the device; budgets are what the packager checks a model against."""

    cpu: str
    arch: str
    cores: int = 1
    ram_mb: int | None = None
    flash_kb: int | None = None
    sram_kb: int | None = None
    fpu: bool = True
    dsp: bool = False


@dataclass(frozen=True)
class QuantScheme:
    """How a model is quantized for this target.

    ``activations``: uint8 runs fastest in onnxruntime on x86; ARM (XNNPACK, NNAPI) and TFLite want int8.
    ``tflite_constraints``: apply TFLite's rules while quantizing (shared scales through pooling, reshape and
    concat; softmax output scale 1/256 with zero point -128; int8 activations).
    """

    activations: ActivationType = ActivationType.INT8
    per_channel: bool = True
    tflite_constraints: bool = False
    int16_fallback: bool = False

    def __post_init__(self) -> None:
        if self.tflite_constraints and self.activations is not ActivationType.INT8:
            raise ValueError("quantization.tflite_constraints needs quantization.activations = 'int8'")


@dataclass(frozen=True)
class RuntimeSettings:
    threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class Emulator:
    """How this device is emulated here (qemu-user for Linux boards, qemu-system for MCUs)."""

    qemu: str  # e.g. "qemu-aarch64-static" or "qemu-system-arm"
    machine: str | None = None  # e.g. "mps2-an386"
    cpu: str | None = None  # e.g. "cortex-a72"


@dataclass(frozen=True)
class Toolchain:
    cc: str = "arm-none-eabi-gcc"
    cflags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """One device profile."""

    name: str
    description: str
    kind: DeviceKind
    runtimes: tuple[Runtime, ...]
    hardware: Hardware
    quantization: QuantScheme = field(default_factory=QuantScheme)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    emulator: Emulator | None = None
    toolchain: Toolchain | None = None
    source: str = ""

    @property
    def primary_runtime(self) -> Runtime:
        return self.runtimes[0]

    def __post_init__(self) -> None:
        if not self.runtimes:
            raise ValueError("runtimes must name at least one runtime")


def list_targets() -> list[Target]:
    """The shipped target profiles, sorted by name."""
    return [load_target(p) for p in sorted(data_dir("targets").glob("*.toml"))]


def load_target(name_or_path: str | Path) -> Target:
    """Load a shipped profile by name (``raspberry-pi-4``) or any profile by path (``my/board.toml``)."""
    if isinstance(name_or_path, Target):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.exists()):
        shipped = {p.stem: p for p in data_dir("targets").glob("*.toml")}
        if text not in shipped:
            near = difflib.get_close_matches(text, list(shipped), n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ConfigError(
                f"unknown target '{text}'; {hint}known targets: {', '.join(sorted(shipped))} "
                "(or pass a path to a .toml profile)"
            )
        path = shipped[text]
    if not path.is_file():
        raise ConfigError(f"{path}: target profile not found; `edgeq targets` lists the shipped ones")
    target = load_toml_as(Target, path)
    return dataclasses.replace(target, source=str(path))
