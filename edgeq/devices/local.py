"""The host itself as a device: files are copied into a temporary folder, commands are subprocesses."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgeq.devices.base import Device, RunResult, atomic_copy, check_local_file, describe_argv
from edgeq.errors import DeviceError


class LocalDevice(Device):
    """Runs commands on this machine. ``python`` defaults to the interpreter running edgeq.

    ``env`` entries are added to the environment of every command; ``unset_env`` names are removed from it
    (used by the emulated Pi so the host's PYTHONPATH never reaches the aarch64 interpreter).
    """

    def __init__(
        self,
        *,
        python: Sequence[str] | None = None,
        name: str = "local",
        env: Mapping[str, str] | None = None,
        unset_env: Sequence[str] = (),
        tmp_root: str | os.PathLike[str] | None = None,
    ):
        self.name = name
        self.python = tuple(python) if python else (sys.executable,)
        self._env = dict(env or {})
        self._unset = tuple(unset_env)
        self._workdir = os.path.realpath(tempfile.mkdtemp(prefix="edgeq-device-", dir=tmp_root))
        self._closed = False

    @property
    def workdir(self) -> str:
        return self._workdir

    def push(self, local: str | os.PathLike[str], remote: str) -> str:
        source = check_local_file(local, device=self.name)
        destination = self.resolve(remote)
        try:
            atomic_copy(source, destination)
        except OSError as e:
            raise DeviceError(f"{self.name}: cannot push {source} to {destination}: {e.strerror}") from None
        return destination

    def pull(self, remote: str, local: str | os.PathLike[str]) -> Path:
        source = self.resolve(remote)
        if not os.path.isfile(source):
            raise DeviceError(f"{self.name}: cannot pull {source}: no such file on the device")
        try:
            return atomic_copy(source, local)
        except OSError as e:
            raise DeviceError(f"{self.name}: cannot pull {source} to {local}: {e.strerror}") from None

    def environment(self) -> dict[str, str]:
        """The environment commands run with."""
        env = {k: v for k, v in os.environ.items() if k not in self._unset}
        env.update(self._env)
        return env

    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        argv = [os.fspath(a) for a in argv]
        try:
            # A session of its own so a timeout kills the whole process tree (QEMU, shells), not just argv[0].
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.environment(),
                start_new_session=True,
            )
        except OSError as e:
            raise DeviceError(
                f"{self.name}: cannot start {argv[0]}: {e.strerror}; check that it is installed and on PATH"
            ) from None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise DeviceError(
                f"{self.name}: command timed out after {timeout:g} s and was killed: "
                f"{describe_argv(argv)}; raise the timeout if the device is slow"
            ) from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        return RunResult(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def remove(self, remote: str) -> None:
        path = self._inside_workdir(remote)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def mkdir(self, remote: str) -> str:
        path = self._inside_workdir(remote)
        os.makedirs(path, exist_ok=True)
        return path

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            shutil.rmtree(self._workdir, ignore_errors=True)


def from_spec(
    spec: str,
    *,
    python: Sequence[str] | str | None = None,
    trust_new_host: bool = False,
    tmp_root: str | os.PathLike[str] | None = None,
) -> LocalDevice:
    """``local``: this machine. ``trust_new_host`` is accepted for a uniform CLI and has no meaning here."""
    del trust_new_host
    if spec != "local":
        raise DeviceError(f"'{spec}': the local device is spelled 'local'")
    if isinstance(python, str):
        python = shlex.split(python)
    return LocalDevice(python=python, tmp_root=tmp_root)
