"""An Android phone over adb: push files, run a command, pull files, clean up.

Everything goes through the ``adb`` client as argument lists (no local shell). ``adb shell`` hands the
device's ``sh`` one command line, so every argument is quoted with :func:`shlex.quote` before it is joined: a
path with spaces or quotes arrives as one argument and cannot inject a command. Transfers land under a
temporary name and are renamed into place on the receiving side.

adb's own exit statuses say little (``adb connect`` to nothing exits 0, ``adb devices`` lists unauthorized and
offline phones like good ones), so the device list and connect replies are parsed and turned into
:class:`~edgeq.errors.DeviceError` messages that say what to do.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeq.devices.base import Device, RunResult, check_local_file
from edgeq.errors import DeviceError

DEFAULT_ROOT = (
    "/data/local/tmp"  # writable by the shell user on every Android phone, executable files allowed
)
_ADB_TIMEOUT = 60.0


@dataclass(frozen=True)
class AdbDeviceInfo:
    """One line of ``adb devices -l``: serial, state (device, unauthorized, offline …), key:value details."""

    serial: str
    state: str
    details: tuple[tuple[str, str], ...] = ()

    @property
    def ready(self) -> bool:
        return self.state == "device"

    def detail(self, key: str) -> str | None:
        return next((v for k, v in self.details if k == key), None)


def parse_devices(text: str) -> list[AdbDeviceInfo]:
    """Parse ``adb devices [-l]`` output (daemon start-up chatter and the header are skipped)."""
    devices = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.startswith("*") or line.startswith("List of devices"):
            continue
        serial, rest = parts[0], parts[1:]
        # States are one word, except "no permissions (…explanation…)".
        if rest[0] == "no" and len(rest) > 1 and rest[1].startswith("permissions"):
            state = "no permissions"
        else:
            state = rest[0]
        details = tuple(tuple(p.split(":", 1)) for p in rest[1:] if _DETAIL.match(p))
        devices.append(AdbDeviceInfo(serial, state, details))  # type: ignore[arg-type]
    return devices


_DETAIL = re.compile(r"^[a-z_]+:\S+$")


def parse_connect(text: str, address: str) -> None:
    """Raise DeviceError unless ``adb connect`` output says it is connected (adb exits 0 either way)."""
    lowered = text.lower()
    if "connected to" in lowered and not any(w in lowered for w in ("failed", "cannot", "unable")):
        return
    reason = " ".join(text.split()) or "no reply from adb"
    raise DeviceError(
        f"adb connect {address}: {reason}; check that the phone is on the same network and that "
        "wireless debugging is on (Developer options → Wireless debugging), then pair it with "
        "`adb pair HOST:PORT`"
    )


_STATE_HELP = {
    "unauthorized": "accept the 'Allow USB debugging?' prompt on the phone's screen",
    "offline": "reconnect the cable or restart adb (`adb kill-server`), then unlock the phone",
    "no permissions": "the USB device is not accessible to this user: add a udev rule for the phone "
    "(Debian: apt-get install android-sdk-platform-tools-common) or run adb as root",
    "authorizing": "wait a moment and unlock the phone",
    "recovery": "reboot the phone into Android",
    "sideload": "reboot the phone into Android",
    "bootloader": "reboot the phone into Android (this is fastboot mode)",
}


class AdbDevice(Device):
    """An Android phone reached with adb.

    ``serial``: which phone (``adb devices`` lists them); may be omitted when exactly one is attached.
    ``connect``: ``HOST:PORT`` to ``adb connect`` first (wireless debugging). ``adb``: the client binary.
    ``server_port``: the adb server's port (``adb -P``; default: adb's own, 5037). ``python``: the argv prefix
    that starts Python on the phone, for runners that need one (Android has none by default; e.g. Termux's).
    ``root``: the device folder the fresh working folder is created in.
    """

    emulated = False

    def __init__(
        self,
        serial: str | None = None,
        *,
        connect: str | None = None,
        adb: str = "adb",
        server_port: int | None = None,
        python: Sequence[str] = ("python3",),
        root: str = DEFAULT_ROOT,
        timeout: float = _ADB_TIMEOUT,
    ):
        found = shutil.which(adb)
        if found is None:
            raise DeviceError(
                f"adb: '{adb}' not found; install Android platform-tools (Debian/Ubuntu: "
                "apt-get install adb) or pass the path of the adb binary"
            )
        self._adb = found
        self._port = server_port
        self._timeout = timeout
        self.python = tuple(python)
        self._workdir: str | None = None
        if connect:
            self.connect(connect)
            serial = serial or connect
        self.serial = self._choose(serial)
        self.name = f"adb:{self.serial}"
        workdir = posixpath.join(root, f"edgeq-{secrets.token_hex(6)}")
        self._shell(["mkdir", "-p", workdir], timeout=timeout).check(f"creating {workdir}", device=self.name)
        self._workdir = workdir

    # ---- adb plumbing ------------------------------------------------------------------------------------

    def _base(self) -> list[str]:
        argv = [self._adb]
        if self._port is not None:
            argv += ["-P", str(self._port)]
        return argv

    def _adb_run(self, args: Sequence[str], *, timeout: float, what: str) -> subprocess.CompletedProcess[str]:
        argv = [*self._base(), *args]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"adb: {what} did not finish within {timeout:.0f} s; is the phone still connected "
                "and unlocked?"
            ) from None
        except OSError as e:
            raise DeviceError(f"adb: cannot run {self._adb} ({e.strerror}); reinstall adb") from None

    def devices(self) -> list[AdbDeviceInfo]:
        """The phones the adb server sees."""
        proc = self._adb_run(["devices", "-l"], timeout=self._timeout, what="listing devices")
        if proc.returncode != 0:
            raise DeviceError(
                f"adb devices failed: {_tail(proc.stderr or proc.stdout)}; restart the adb server "
                "with `adb kill-server`"
            )
        return parse_devices(proc.stdout)

    def connect(self, address: str) -> None:
        """``adb connect address`` (wireless debugging), checked by its output."""
        proc = self._adb_run(["connect", address], timeout=self._timeout, what=f"connecting to {address}")
        parse_connect(proc.stdout + proc.stderr, address)

    def _choose(self, serial: str | None) -> str:
        devices = self.devices()
        if serial is None:
            if not devices:
                raise DeviceError(
                    "adb: no Android device attached (`adb devices` lists none); connect a phone "
                    "with USB debugging on, or pass connect='HOST:PORT' for wireless debugging"
                )
            if len(devices) > 1:
                listed = ", ".join(f"{d.serial} ({d.state})" for d in devices)
                raise DeviceError(
                    f"adb: {len(devices)} devices attached ({listed}); choose one by its serial"
                )
            chosen = devices[0]
        else:
            chosen = next((d for d in devices if d.serial == serial), None)
            if chosen is None:
                listed = ", ".join(f"{d.serial} ({d.state})" for d in devices) or "none"
                raise DeviceError(
                    f"adb: device '{serial}' is not attached (attached: {listed}); check the serial "
                    "with `adb devices`"
                )
        if not chosen.ready:
            hint = _STATE_HELP.get(chosen.state, "check the phone")
            raise DeviceError(f"adb: device '{chosen.serial}' is {chosen.state}; {hint}")
        return chosen.serial

    def _shell(self, argv: Sequence[str], *, timeout: float, cwd: str | None = None) -> RunResult:
        command = " ".join(shlex.quote(str(a)) for a in argv)
        if cwd is not None:
            command = f"cd {shlex.quote(cwd)} && {command}"
        proc = self._adb_run(
            ["-s", self.serial, "shell", command],
            timeout=timeout,
            what=f"running {argv[0]!r} on {self.serial}",
        )
        if proc.returncode == 255 and ("device" in proc.stderr and "not found" in proc.stderr):
            raise DeviceError(f"adb:{self.serial}: the device went away ({_tail(proc.stderr)}); reconnect it")
        return RunResult(proc.returncode, proc.stdout, proc.stderr)

    # ---- the Device interface ----------------------------------------------------------------------------

    @property
    def workdir(self) -> str:
        if self._workdir is None:
            raise DeviceError(f"{self.name}: the device is closed")
        return self._workdir

    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        if not argv:
            raise DeviceError(f"{self.name}: empty command")
        return self._shell(argv, timeout=timeout, cwd=self.workdir)

    def push(self, local: str | os.PathLike[str], remote: str) -> str:
        src = check_local_file(local, device=self.name)
        dest = self._inside_workdir(remote)
        tmp = posixpath.join(
            posixpath.dirname(dest), f".{posixpath.basename(dest)}.{secrets.token_hex(4)}.part"
        )
        self._shell(["mkdir", "-p", posixpath.dirname(dest)], timeout=self._timeout).check(
            f"creating {posixpath.dirname(dest)}", device=self.name
        )
        proc = self._adb_run(
            ["-s", self.serial, "push", str(src), tmp],
            timeout=max(self._timeout, 600.0),
            what=f"pushing {src.name}",
        )
        if proc.returncode != 0:
            self._shell(["rm", "-f", tmp], timeout=self._timeout)
            raise DeviceError(f"{self.name}: pushing {src} failed: {_tail(proc.stderr or proc.stdout)}")
        self._shell(["mv", "-f", tmp, dest], timeout=self._timeout).check(f"renaming {tmp}", device=self.name)
        return dest

    def pull(self, remote: str, local: str | os.PathLike[str]) -> Path:
        src = self.resolve(remote)
        dest = Path(local)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        try:
            proc = self._adb_run(
                ["-s", self.serial, "pull", src, tmp],
                timeout=max(self._timeout, 600.0),
                what=f"pulling {src}",
            )
            if proc.returncode != 0:
                raise DeviceError(f"{self.name}: pulling {src} failed: {_tail(proc.stderr or proc.stdout)}")
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return dest

    def remove(self, remote: str) -> None:
        path = self._inside_workdir(remote)
        self._shell(["rm", "-rf", path], timeout=self._timeout).check(f"removing {path}", device=self.name)

    def mkdir(self, remote: str) -> str:
        path = self._inside_workdir(remote)
        self._shell(["mkdir", "-p", path], timeout=self._timeout).check(f"creating {path}", device=self.name)
        return path

    def close(self) -> None:
        if self._workdir is None:
            return
        workdir, self._workdir = self._workdir, None
        with contextlib.suppress(DeviceError):
            self._shell(["rm", "-rf", workdir], timeout=self._timeout)


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-2:])[-300:] if lines else "no output"


def from_spec(spec: str, **options) -> AdbDevice:
    """``adb`` (the one attached phone) or ``adb:SERIAL`` (``adb:192.168.1.7:5555`` for a wireless one).

    ``options``: :class:`AdbDevice`'s keyword options (``connect``, ``adb``, ``server_port``, ``python`` …).
    """
    serial = spec.split(":", 1)[1] if ":" in spec else ""
    return AdbDevice(serial or None, **options)
