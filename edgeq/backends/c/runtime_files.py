"""The C runtime shipped with edgeq (kernels, start-up code, the QEMU plugin): locating and reading it."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
RUNTIME_DIR = _HERE / "runtime"
FIRMWARE_DIR = _HERE / "firmware"
QEMU_DIR = _HERE / "qemu"

#: Headers every generated model includes.
HEADERS = ("edgeq_fixedpoint.h", "edgeq_nn.h", "edgeq_simd.h")


def all_kernel_files() -> list[str]:
    """Every kernel source file of the runtime, sorted."""
    return sorted(p.name for p in RUNTIME_DIR.glob("*.c"))


def kernel_sources(files: list[str] | None = None) -> dict[str, bytes]:
    """{file name: bytes} of the runtime headers plus ``files`` (all kernels when None)."""
    names = list(HEADERS) + sorted(set(all_kernel_files() if files is None else files))
    out = {}
    for name in names:
        path = RUNTIME_DIR / name
        if not path.is_file():
            raise FileNotFoundError(
                f"edgeq's C runtime file {path} is missing from this installation; reinstall edgeq"
            )
        out[name] = path.read_bytes()
    return out


def firmware_source(name: str) -> bytes:
    """A file of the bare-metal harness (startup, semihosting, test main)."""
    return (FIRMWARE_DIR / name).read_bytes()


__all__ = [
    "FIRMWARE_DIR",
    "HEADERS",
    "QEMU_DIR",
    "RUNTIME_DIR",
    "all_kernel_files",
    "firmware_source",
    "kernel_sources",
]
