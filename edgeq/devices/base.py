"""The one interface every device implements: push files, run a command, pull files, clean up.

A device has a fresh remote working folder (``workdir``) created when it is opened and removed by
:meth:`Device.close`. Remote paths that are not absolute are taken relative to it. Every transfer lands under
a temporary name and is renamed into place, so an interrupted push or pull never leaves a half-written file
on either side.
"""

from __future__ import annotations

import abc
import contextlib
import os
import posixpath
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from edgeq.errors import DeviceError


@dataclass(frozen=True)
class RunResult:
    """What a command on the device did: exit status and its decoded stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self, what: str, *, device: str) -> RunResult:
        """Return self, or raise a DeviceError: ``what`` failed on ``device``, with stderr's last lines."""
        if self.returncode != 0:
            tail = " | ".join(line for line in self.stderr.strip().splitlines()[-3:]) or "(no stderr)"
            raise DeviceError(f"{device}: {what} failed with exit status {self.returncode}: {tail[-600:]}")
        return self


def describe_argv(argv: Sequence[str]) -> str:
    """A shell-quoted one-line rendering of ``argv`` for messages (never executed)."""
    text = " ".join(shlex.quote(str(a)) for a in argv)
    return text if len(text) <= 200 else text[:197] + "..."


class Device(abc.ABC):
    """Where a model runs. Use as a context manager; ``close()`` removes the remote working folder.

    ``python`` is the argv prefix that starts Python on the device (``("python3",)`` on a Pi over SSH, the
    QEMU command line for the emulated Pi). ``emulated`` devices give correct outputs but meaningless timings.
    """

    name: str
    python: tuple[str, ...]
    emulated: bool = False

    @property
    @abc.abstractmethod
    def workdir(self) -> str:
        """The device's fresh temporary folder (an absolute path on the device)."""

    @abc.abstractmethod
    def push(self, local: str | os.PathLike[str], remote: str) -> str:
        """Copy the local file ``local`` to ``remote`` on the device atomically; returns the remote path."""

    @abc.abstractmethod
    def pull(self, remote: str, local: str | os.PathLike[str]) -> Path:
        """Copy the device file ``remote`` to ``local`` atomically; returns the local path."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        """Run ``argv`` on the device (no shell: every argument arrives as given) within ``timeout`` seconds.

        A command that does not finish in time is killed and raises :class:`DeviceError`; a non-zero exit
        status is returned, not raised (see :meth:`RunResult.check`).
        """

    @abc.abstractmethod
    def remove(self, remote: str) -> None:
        """Remove the file or folder ``remote`` (which must lie inside :attr:`workdir`) if it exists."""

    @abc.abstractmethod
    def mkdir(self, remote: str) -> str:
        """Create the folder ``remote`` (inside :attr:`workdir`, parents included); returns its path."""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove the working folder and release the connection. Safe to call twice."""

    def path(self, *parts: str) -> str:
        """A path inside the working folder."""
        return posixpath.join(self.workdir, *parts)

    def resolve(self, remote: str) -> str:
        """``remote`` as an absolute device path (relative paths are inside the working folder)."""
        return posixpath.normpath(remote if posixpath.isabs(remote) else posixpath.join(self.workdir, remote))

    def _inside_workdir(self, remote: str) -> str:
        path = self.resolve(remote)
        if path != self.workdir and not path.startswith(self.workdir.rstrip("/") + "/"):
            raise DeviceError(
                f"{self.name}: refusing to touch {path}: it is outside the working folder {self.workdir}"
            )
        return path

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def atomic_copy(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Copy a local file to a temporary name beside ``destination`` and rename it into place."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(tmp, os.stat(source).st_mode & 0o777)
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return destination


def check_local_file(local: str | os.PathLike[str], *, device: str) -> Path:
    """``local`` as a Path, or a DeviceError if it is not a readable file."""
    path = Path(local)
    if not path.is_file():
        raise DeviceError(f"{device}: cannot push {path}: no such file")
    return path
