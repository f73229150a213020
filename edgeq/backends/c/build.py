"""Compiling generated C: on the host (tests under sanitizers, a quick check without an emulator), and the
instruction-counting QEMU plugin, built once per source version into the user cache folder.

Every compiler and emulator is run with an argument list (never a shell string) and a timeout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgeq.backends.c.runtime_files import FIRMWARE_DIR, QEMU_DIR
from edgeq.errors import DeviceError

SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")


def cache_dir() -> Path:
    """edgeq's per-user cache folder ($XDG_CACHE_HOME/edgeq or ~/.cache/edgeq)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "edgeq"
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_tool(name: str, *, what: str, install: str) -> str:
    """The path of executable ``name``, or a DeviceError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise DeviceError(f"{name} not found ({what}); install it: {install}")
    return path


def run_tool(
    argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 600, what: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a build tool; a failure is a DeviceError carrying the tool's first lines of output."""
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what or argv[0]} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = " | ".join(lines[:8])[:1500]
        raise DeviceError(f"{what or Path(argv[0]).name} failed (exit {proc.returncode}): {detail}")
    return proc


def write_sources(files: Mapping[str, bytes], folder: Path) -> list[Path]:
    """Write {relative name: bytes} under ``folder``; returns the paths."""
    paths = []
    for name, data in sorted(files.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def compile_host(
    files: Mapping[str, bytes],
    folder: Path,
    *,
    sanitize: bool = True,
    emulate_dsp: bool = False,
    cc: str = "gcc",
    extra_flags: Sequence[str] = (),
) -> Path:
    """Build generated model sources with the host compiler and edgeq's host driver; returns the executable.

    ``emulate_dsp`` compiles the DSP kernel paths with plain-C stand-ins for the Arm SIMD intrinsics, so they
    are checked on the host too.
    """
    compiler = find_tool(cc, what="the host C compiler", install="apt-get install gcc")
    write_sources(files, folder)
    sources = sorted(str(p) for p in folder.rglob("*.c"))
    exe = folder / "model_host"
    flags = [
        "-std=c99",
        "-pedantic",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-unused-parameter",
        f"-I{folder}",
        f"-I{folder / 'runtime'}",
    ]
    if sanitize:
        flags += SANITIZE
    if emulate_dsp:
        flags.append("-DEDGEQ_EMULATE_DSP")
    run_tool(
        [compiler, *flags, *extra_flags, *sources, str(FIRMWARE_DIR / "host_main.c"), "-o", str(exe)],
        what="host compile of the generated C",
    )
    return exe


def run_host(exe: Path, inputs: np.ndarray, *, output_size: int, timeout: float = 300) -> np.ndarray:
    """Run a host build on int8 ``inputs`` (N, input bytes); returns (N, output_size) int8."""
    x = np.ascontiguousarray(inputs, dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="edgeq-host-") as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        src.write_bytes(x.tobytes())
        env = dict(
            os.environ,
            ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
            UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        )
        try:
            proc = subprocess.run(
                [str(exe), str(src), str(dst)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{exe.name} did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise DeviceError(f"{exe.name} failed (exit {proc.returncode}): {proc.stderr.strip()[:3000]}")
        out = np.frombuffer(dst.read_bytes(), dtype=np.int8)
    return out.reshape(-1, output_size)


def build_icount_plugin() -> Path:
    """The instruction-counting TCG plugin (QEMU plugin API v1), compiled with the host gcc and cached.

    Debian's QEMU 7.2 supports plugins but ships neither plugins nor qemu-plugin.h; edgeq carries a small
    declaration of the API it uses. The build is keyed by the source's hash, so an edgeq upgrade rebuilds it.
    """
    src = QEMU_DIR / "icount_plugin.c"
    header = QEMU_DIR / "qemu_plugin_v1.h"
    digest = hashlib.sha256(src.read_bytes() + header.read_bytes()).hexdigest()[:16]
    out = cache_dir() / f"edgeq-icount-{digest}.so"
    if out.is_file():
        return out
    compiler = find_tool(
        "gcc",
        what="the host C compiler, to build the QEMU instruction-counting plugin",
        install="apt-get install gcc",
    )
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    run_tool(
        [compiler, "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", f"-I{QEMU_DIR}", str(src), "-o", str(tmp)],
        what="building the QEMU instruction-counting plugin",
    )
    os.replace(tmp, out)
    return out


__all__ = [
    "build_icount_plugin",
    "cache_dir",
    "compile_host",
    "find_tool",
    "run_host",
    "run_tool",
    "write_sources",
]
