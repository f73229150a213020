"""An emulated Raspberry Pi userland: Debian's arm64 packages plus aarch64 wheels, run with qemu-aarch64.

Built once into the user's cache (``$XDG_CACHE_HOME/edgeq/qemu-aarch64`` or ``~/.cache/edgeq/qemu-aarch64``)
and reused. The folder name is a hash of everything that determines its content (Debian suite, packages,
wheel pins), so a changed recipe builds a new folder instead of reusing a stale one. A lock file keeps two
runs from building the same folder at once, and the build happens in a temporary folder that is renamed
into place only when complete, so an interrupted build is never mistaken for a finished one.

The recipe: ``debootstrap --foreign --variant=minbase --arch=arm64 --include=python3`` downloads Debian's
packages and unpacks the essential ones; ``dpkg -x`` unpacks the rest (the second stage would need to run
the arm64 maintainer scripts, which a plain Python does not need); ``pip install --target`` adds the aarch64
wheels of onnxruntime and numpy. Emulation is for correctness, never for timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeq import fileio
from edgeq.errors import DeviceError

DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The Python each Debian suite ships; the wheels must be built for it.
SUITE_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
# manylinux_2_28 (glibc 2.28+): with manylinux2014 alone pip silently picks onnxruntime 1.16.
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
QEMU = "qemu-aarch64-static"
# The CPUs qemu-aarch64 7.2 emulates that match real boards (Pi 3: A53, Pi 4: A72, Pi 5: A76).
KNOWN_CPUS = ("cortex-a35", "cortex-a53", "cortex-a57", "cortex-a72", "cortex-a76", "neoverse-n1", "max")
_FORMAT = 1  # bump when the build recipe below changes what ends up in the folder


def _host_pin(dist: str) -> str:
    """``dist==<the host's version>``: the emulated Pi then runs the very onnxruntime the host validated."""
    from importlib import metadata

    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return dist


def _default_wheels() -> tuple[str, ...]:
    return (_host_pin("onnxruntime"), _host_pin("numpy"))


@dataclass(frozen=True)
class UserlandSpec:
    """What goes into the emulated userland; ``mirror`` is where packages come from (not in the key)."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3",)
    wheels: tuple[str, ...] = field(default_factory=_default_wheels)
    mirror: str = DEBIAN_MIRROR

    def __post_init__(self) -> None:
        if self.suite not in SUITE_PYTHON:
            raise DeviceError(
                f"Debian suite '{self.suite}' is not supported for the emulated Pi; "
                f"use one of: {', '.join(SUITE_PYTHON)}"
            )

    @property
    def python(self) -> str:
        return SUITE_PYTHON[self.suite]

    def key(self) -> str:
        """A short hash of the content-determining fields."""
        content = {
            "format": _FORMAT,
            "suite": self.suite,
            "arch": "arm64",
            "variant": "minbase",
            "packages": sorted(self.packages),
            "wheels": sorted(self.wheels),
            "platform": WHEEL_PLATFORM,
            "python": self.python,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Userland:
    """A finished emulated userland: ``rootfs`` is the aarch64 root, ``python`` its interpreter."""

    path: Path
    rootfs: Path
    python: Path
    info: dict = field(compare=False)

    def argv(self) -> tuple[str, ...]:
        """The command prefix that starts the emulated Python (the CPU comes from ``QEMU_CPU``)."""
        return (qemu_binary(), "-L", str(self.rootfs), str(self.python))


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/edgeq`` or ``~/.cache/edgeq``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeq"


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise DeviceError(
            f"{QEMU} not found: the emulated Raspberry Pi needs QEMU user mode; install it "
            "with `apt-get install qemu-user-static`"
        )
    return path


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.path.exists(p)), None
    )
    if path is None:
        raise DeviceError(
            f"{tool} not found: setting up the emulated Raspberry Pi needs it; install it with "
            f"`apt-get install {package}`"
        )
    return path


def check_cpu(cpu: str) -> str:
    """``cpu`` if QEMU emulates it, else a DeviceError listing the choices."""
    if cpu not in KNOWN_CPUS:
        import difflib

        near = difflib.get_close_matches(cpu, KNOWN_CPUS, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise DeviceError(
            f"unknown emulated CPU '{cpu}'; {hint}choose one of: {', '.join(KNOWN_CPUS)} "
            "(Pi 3: cortex-a53, Pi 4: cortex-a72, Pi 5: cortex-a76)"
        )
    return cpu


def emulated_env(cpu: str) -> dict[str, str]:
    """Environment for the emulated Python: the CPU model, and no user site (it would hold x86 packages)."""
    return {"QEMU_CPU": check_cpu(cpu), "PYTHONNOUSERSITE": "1"}


# Host variables that would point the aarch64 interpreter at x86 modules.
UNSET_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "QEMU_LD_PREFIX")


@contextlib.contextmanager
def _locked(lock_path: Path, *, show: bool) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if show:
                print(
                    f"waiting for another edgeq that is setting up {lock_path.with_suffix('')} ...",
                    file=sys.stderr,
                )
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], None], *, show: bool = False) -> bool:
    """Make sure folder ``final`` exists, building it with ``build(tmp)`` under a lock if it does not.

    ``build`` fills a fresh temporary folder beside ``final``, which is then renamed to ``final``. Concurrent
    callers wait for the one that builds. Returns whether this call built it.
    """
    if final.is_dir():
        return False
    with _locked(final.with_name(final.name + ".lock"), show=show):
        if final.is_dir():  # built by the run we waited for
            return False
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            build(tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def _run_step(argv: Sequence[str], *, what: str, log: Path, timeout: float, env: dict | None = None) -> str:
    try:
        proc = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        raise DeviceError(
            f"setting up the emulated Raspberry Pi: {what} took more than {timeout:g} s; "
            "check the network connection to the package mirrors"
        ) from None
    out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(argv)}\n{out}\n")
    if proc.returncode != 0:
        tail = " | ".join(out.strip().splitlines()[-3:])[-500:]
        raise DeviceError(
            f"setting up the emulated Raspberry Pi: {what} failed (exit {proc.returncode}): {tail}"
            f"; check the network connection (Debian mirror, PyPI) and free disk space"
        )
    return out


def _build(tmp: Path, spec: UserlandSpec, *, show: bool | None) -> None:
    from edgeq.progress import track

    rootfs = tmp / "rootfs"
    log = tmp / "build.log"
    site = rootfs / "usr" / "lib" / "python3" / "dist-packages"
    debootstrap = _need("debootstrap", "debootstrap")
    dpkg = _need("dpkg", "dpkg")
    qemu = qemu_binary()
    if os.geteuid() != 0:
        raise DeviceError(
            "setting up the emulated Raspberry Pi needs root once (debootstrap creates device "
            "files); run the first emulated run as root, or use a real Pi over ssh://"
        )
    times: dict[str, float] = {}
    info: dict = {}

    def debootstrap_step() -> None:
        _run_step(
            [
                debootstrap,
                "--foreign",
                "--variant=minbase",
                "--arch=arm64",
                f"--include={','.join(spec.packages)}",
                spec.suite,
                str(rootfs),
                spec.mirror,
            ],
            what="debootstrap (downloading Debian arm64 packages)",
            log=log,
            timeout=900,
        )

    def unpack_step() -> None:
        # --foreign unpacks only the essential packages; the rest (python3 and its libraries) wait for a
        # second stage that would run arm64 maintainer scripts. Unpacking them is all Python needs.
        debs = sorted((rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"))
        if not any(d.name.startswith("python3") for d in debs):
            raise DeviceError(
                f"setting up the emulated Raspberry Pi: debootstrap fetched no python3 package; see {log}"
            )
        for deb in debs:
            _run_step([dpkg, "-x", str(deb), str(rootfs)], what=f"dpkg -x {deb.name}", log=log, timeout=300)
            deb.unlink()
        # onnxruntime's cpuinfo library segfaults under QEMU user mode unless these exist; empty files make it
        # fall back cleanly (it prints "Error in cpuinfo" lines, harmless).
        cpu = rootfs / "sys" / "devices" / "system" / "cpu"
        cpu.mkdir(parents=True, exist_ok=True)
        for name in ("possible", "present"):
            (cpu / name).write_bytes(b"")

    def wheels_step() -> None:
        major, minor = spec.python.split(".")
        _run_step(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--target",
                str(site),
                "--only-binary=:all:",
                "--platform",
                WHEEL_PLATFORM,
                "--python-version",
                spec.python,
                "--implementation",
                "cp",
                "--abi",
                f"cp{major}{minor}",
                *spec.wheels,
            ],
            what=f"pip install {' '.join(spec.wheels)} (aarch64 wheels)",
            log=log,
            timeout=900,
        )

    def check_step() -> None:
        python = rootfs / "usr" / "bin" / f"python{spec.python}"
        if not python.is_file():
            raise DeviceError(
                f"setting up the emulated Raspberry Pi: {python} missing after unpacking; see {log}"
            )
        env = {k: v for k, v in os.environ.items() if k not in UNSET_ENV}
        env.update(emulated_env("cortex-a72"))
        runner = Path(__file__).with_name("runner.py")
        # Importing everything the runner imports also leaves their byte code compiled for later runs.
        out = _run_step(
            [qemu, "-L", str(rootfs), str(python), str(runner), "--self-check"],
            what="starting the emulated Python",
            log=log,
            timeout=300,
            env=env,
        )
        lines = [line for line in out.splitlines() if line.startswith("{")]
        info.update(json.loads(lines[-1]) if lines else {})
        info.update(spec=dataclasses.asdict(spec), key=spec.key(), python_path=str(python.relative_to(tmp)))

    steps = [
        ("debootstrap", debootstrap_step),
        ("unpack", unpack_step),
        ("wheels", wheels_step),
        ("check", check_step),
    ]
    for name, step in track(
        steps, description="setting up the emulated Raspberry Pi (once, ~1 min)", total=len(steps), show=show
    ):
        start = time.perf_counter()
        step()
        times[name] = round(time.perf_counter() - start, 1)
    info["build_seconds"] = times
    fileio.write_text(tmp / "userland.json", json.dumps(info, indent=2, sort_keys=True) + "\n")


def ensure_userland(
    spec: UserlandSpec | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Userland:
    """The emulated Pi userland for ``spec``, built into the cache first if it is not there yet."""
    from edgeq.progress import enabled

    spec = spec or UserlandSpec()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / "qemu-aarch64" / f"{spec.suite}-{spec.key()}"
    final.parent.mkdir(parents=True, exist_ok=True)
    build_once(final, lambda tmp: _build(tmp, spec, show=progress), show=enabled(progress))
    try:
        info = json.loads((final / "userland.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DeviceError(
            f"{final}: the emulated Pi's cache folder is damaged; remove it and run again"
        ) from None
    rootfs = final / "rootfs"
    return Userland(path=final, rootfs=rootfs, python=final / info["python_path"], info=info)


def write_python_wrapper(
    path: str | os.PathLike[str], *, userland: Userland, cpu: str = "cortex-a72", force: bool = False
) -> Path:
    """Write an executable ``sh`` script that behaves like ``python3`` on the emulated Pi.

    Handy as the remote Python of an SSH device (so "validate on a Pi over SSH" runs end to end on one
    machine) or for trying a package by hand.
    """
    qemu, _, rootfs, python = userland.argv()
    env = emulated_env(cpu)
    script = "\n".join(
        [
            "#!/bin/sh",
            "# The emulated Raspberry Pi's Python (aarch64, QEMU user mode) as python3. Written by edgeq.",
            f"unset {' '.join(UNSET_ENV)}",
            "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            f'exec {shlex.quote(qemu)} -L {shlex.quote(rootfs)} {shlex.quote(python)} "$@"',
            "",
        ]
    )
    out = fileio.write_text(path, script, force=force)
    os.chmod(out, 0o755)
    return out
