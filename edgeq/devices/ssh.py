"""A device reached over SSH (a Raspberry Pi on the network), with paramiko.

Security: the host key is checked against ``known_hosts`` (an unknown or changed key is refused; an unknown
one is added only with ``trust_new_host=True``), authentication is by key only, and commands are sent as one
string in which every argument is ``shlex.quote``-d, so file names with spaces, quotes or ``;`` are data,
never shell code.

Robustness: a push lands under a temporary name and is renamed on the device; a pull lands under a temporary
name locally. A connection that drops during an operation is re-opened once (host key checked again) and the
operation repeated; a second drop is a :class:`DeviceError`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import posixpath
import secrets
import shlex
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from edgeq import fileio
from edgeq.devices.base import Device, RunResult, check_local_file, describe_argv
from edgeq.errors import ConfigError, DeviceError

T = TypeVar("T")


class _Lost(Exception):
    """The connection went away during an operation (retried once)."""


def parse_spec(spec: str) -> tuple[str, str, int]:
    """``ssh://user@host[:port]`` → (user, host, port); the user defaults to the local user name."""
    import getpass

    parts = urlsplit(spec)
    try:
        port = parts.port or 22
    except ValueError:
        raise ConfigError(
            f"'{spec}': the port is not a number in 1-65535; write ssh://user@host:2222"
        ) from None
    if (
        parts.scheme != "ssh"
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.password
    ):
        raise ConfigError(
            f"'{spec}' is not an SSH device; write ssh://user@host or ssh://user@host:port "
            "(key authentication; no password in the address)"
        )
    return parts.username or getpass.getuser(), parts.hostname, port


def fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key, as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SSHDevice(Device):
    """A Linux board over SSH. ``python`` is how Python is started there (``python3``, a venv's python…)."""

    def __init__(
        self,
        host: str,
        *,
        user: str,
        port: int = 22,
        key_filename: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        trust_new_host: bool = False,
        python: Sequence[str] | str = "python3",
        connect_timeout: float = 15.0,
        remote_tmp: str = "/tmp",
        allow_agent: bool = True,
    ):
        try:
            import paramiko  # noqa: F401
        except ImportError:
            raise DeviceError("SSH devices need paramiko: pip install 'edgeq[ssh]'") from None
        self.host, self.user, self.port = host, user, port
        self.name = f"ssh://{user}@{host}" + (f":{port}" if port != 22 else "")
        self.python = tuple(shlex.split(python) if isinstance(python, str) else python)
        if not self.python:
            raise ConfigError(f"{self.name}: the remote python command is empty")
        self.key_filename = os.fspath(key_filename) if key_filename is not None else None
        self.known_hosts = (
            Path(known_hosts) if known_hosts is not None else Path.home() / ".ssh" / "known_hosts"
        )
        self.trust_new_host = trust_new_host
        self.connect_timeout = connect_timeout
        self.allow_agent = allow_agent
        self.reconnects = 0
        self._client = None
        self._sftp = None
        self._closed = False
        self._connect()
        self._workdir = self._with_retry(
            "creating the working folder", lambda: self._make_workdir(remote_tmp)
        )

    # ----------------------------------------------------------------------------------------- connection

    def _connect(self) -> None:
        import paramiko

        self._drop()
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            try:
                client.load_host_keys(str(self.known_hosts))
            except (OSError, paramiko.SSHException) as e:
                raise DeviceError(
                    f"{self.known_hosts}: cannot read known_hosts ({e}); fix or remove the file"
                ) from None
        client.set_missing_host_key_policy(
            _TrustNewHost(self) if self.trust_new_host else _RejectNewHost(self)
        )
        where = f"{self.user}@{self.host}:{self.port}"
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=self.key_filename,
                look_for_keys=self.key_filename is None,
                allow_agent=self.allow_agent,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                password=None,
            )
        except DeviceError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            name = _known_hosts_name(self.host, self.port)
            raise DeviceError(
                f"host key for {name} does not match the known_hosts entry in {self.known_hosts} "
                f"(expected {e.expected_key.get_name()} {fingerprint(e.expected_key)}, the device sent "
                f"{e.key.get_name()} {fingerprint(e.key)}); refusing to connect. If the device was "
                f"re-imaged, remove the old key with `ssh-keygen -R '{name}' -f {self.known_hosts}` and "
                "connect again with --trust-new-host; otherwise someone may be intercepting the connection"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            key = self.key_filename or "keys from ~/.ssh and the ssh-agent"
            raise DeviceError(
                f"{where}: authentication refused (tried {key}; only key authentication is "
                f"used); install your public key with `ssh-copy-id -p {self.port} "
                f"{self.user}@{self.host}`"
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise DeviceError(
                f"{where}: connection refused; check that the device is on, sshd is running "
                "and the port is right"
            ) from None
        except socket.gaierror:
            client.close()
            raise DeviceError(f"{where}: unknown host name '{self.host}'; check the address") from None
        except TimeoutError:  # socket.timeout is TimeoutError
            client.close()
            raise DeviceError(
                f"{where}: no answer within {self.connect_timeout:g} s; check the address and the network"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            raise DeviceError(
                f"{where}: SSH connection failed: {e}; check the address, port and sshd"
            ) from None
        transport = client.get_transport()
        transport.set_keepalive(10)
        self._client = client
        try:
            self._sftp = client.open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._drop()
            raise DeviceError(
                f"{where}: the SFTP subsystem is not available ({e}); enable "
                "`Subsystem sftp` in the device's sshd_config"
            ) from None

    def _drop(self) -> None:
        for thing in (self._sftp, self._client):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._sftp = self._client = None

    def _transport(self):
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            raise _Lost("the SSH connection is closed")
        return transport

    def _with_retry(self, what: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except _Lost as e:
            first = e
        self.reconnects += 1
        try:
            self._connect()
        except DeviceError as e:
            raise DeviceError(
                f"{self.name}: lost the connection while {what} ({first}) and could not reconnect: {e}"
            ) from None
        try:
            return operation()
        except _Lost as e:
            raise DeviceError(
                f"{self.name}: lost the connection while {what}, and again after reconnecting "
                f"once ({e}); check the device's power and network, and that nothing on it "
                "kills SSH sessions"
            ) from None

    def _lost_or(self, e: BaseException, message: str) -> Exception:
        """``_Lost`` if the connection died under ``e``, else a DeviceError with ``message``."""
        transport = self._client.get_transport() if self._client is not None else None
        if isinstance(e, EOFError) or transport is None or not transport.is_active():
            return _Lost(f"{type(e).__name__}: {e}")
        return DeviceError(message)

    # ---------------------------------------------------------------------------------------------- files

    @property
    def workdir(self) -> str:
        return self._workdir

    def _make_workdir(self, remote_tmp: str) -> str:
        path = posixpath.join(remote_tmp, f"edgeq-{secrets.token_hex(6)}")
        try:
            self._sftp.mkdir(path, mode=0o700)  # atomic: fails if the name exists
            return self._sftp.normalize(path)
        except OSError as e:
            raise self._lost_or(
                e, f"{self.name}: cannot create {path}: {e}; check that {remote_tmp} exists and is writable"
            ) from None
        except EOFError as e:
            raise _Lost(str(e)) from None

    def push(self, local: str | os.PathLike[str], remote: str) -> str:
        source = check_local_file(local, device=self.name)
        destination = self.resolve(remote)
        directory, name = posixpath.split(destination)
        # One temporary name for both attempts, so a retry after a drop also removes the first one's remains.
        tmp = posixpath.join(directory, f".{name}.{secrets.token_hex(4)}.part")
        return self._with_retry(f"pushing {source.name}", lambda: self._push_once(source, destination, tmp))

    def _push_once(self, source: Path, destination: str, tmp: str) -> str:
        directory = posixpath.dirname(destination)
        sftp = self._sftp
        if sftp is None:
            raise _Lost("no SFTP session")
        try:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(tmp)
            _makedirs(sftp, directory)
            sftp.put(str(source), tmp, confirm=True)
            sftp.chmod(tmp, stat.S_IMODE(source.stat().st_mode))
            try:
                sftp.posix_rename(tmp, destination)  # atomic replace (OpenSSH extension)
            except OSError:
                with contextlib.suppress(OSError):
                    sftp.remove(destination)
                sftp.rename(tmp, destination)
        except (OSError, EOFError) as e:
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise self._lost_or(e, f"{self.name}: cannot push {source} to {destination}: {e}") from None
        return destination

    def pull(self, remote: str, local: str | os.PathLike[str]) -> Path:
        source = self.resolve(remote)
        return self._with_retry(
            f"pulling {posixpath.basename(source)}", lambda: self._pull_once(source, Path(local))
        )

    def _pull_once(self, source: str, local: Path) -> Path:
        sftp = self._sftp
        if sftp is None:
            raise _Lost("no SFTP session")
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            sftp.get(source, tmp)
            os.replace(tmp, local)
        except (OSError, EOFError) as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(e, FileNotFoundError):
                raise DeviceError(f"{self.name}: cannot pull {source}: no such file on the device") from None
            raise self._lost_or(e, f"{self.name}: cannot pull {source} to {local}: {e}") from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return local

    def mkdir(self, remote: str) -> str:
        path = self._inside_workdir(remote)
        self.run(["mkdir", "-p", "--", path], timeout=self.connect_timeout + 30).check(
            f"mkdir {path}", device=self.name
        )
        return path

    def remove(self, remote: str) -> None:
        path = self._inside_workdir(remote)
        self.run(["rm", "-rf", "--", path], timeout=self.connect_timeout + 30).check(
            f"removing {path}", device=self.name
        )

    # ------------------------------------------------------------------------------------------- commands

    def command_line(self, argv: Sequence[str]) -> str:
        """The string sent to the device's shell: ``cd`` into the working folder, then ``exec`` argv, quoted.

        ``exec`` makes the command the direct child of the SSH session, so it sees the session end.
        """
        quoted = " ".join(shlex.quote(os.fspath(a)) for a in argv)
        return f"cd {shlex.quote(self._workdir)} && exec {quoted}"

    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        if not argv:
            raise DeviceError(f"{self.name}: empty command")
        command = self.command_line(argv)
        return self._with_retry(
            f"running {describe_argv(argv)}", lambda: self._run_once(command, argv, timeout)
        )

    def _run_once(self, command: str, argv: Sequence[str], timeout: float) -> RunResult:
        import paramiko

        transport = self._transport()
        try:
            chan = transport.open_session(timeout=self.connect_timeout)
            chan.exec_command(command)
            chan.shutdown_write()  # the command gets EOF on stdin: nothing is sent to it
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise _Lost(f"{type(e).__name__}: {e}") from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    busy = True
                if not busy and chan.exit_status_ready():
                    break
                if time.monotonic() > deadline:
                    raise DeviceError(
                        f"{self.name}: command timed out after {timeout:g} s: "
                        f"{describe_argv(argv)}; raise the timeout if the device is slow"
                    )
                if not busy:
                    time.sleep(0.005)
            status = chan.recv_exit_status()
            if status == -1:
                # No exit status: either the connection died, or the command was killed by a signal
                # (OpenSSH then sends exit-signal, which paramiko does not record, followed by EOF).
                for _ in range(50):
                    if not transport.is_active():
                        break
                    time.sleep(0.02)
                if not transport.is_active() or not chan.eof_received:
                    raise _Lost("the connection closed while the command was running")
                err += b"\n[edgeq: the command was killed by a signal]"
        finally:
            chan.close()
        return RunResult(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        workdir = getattr(self, "_workdir", None)
        if workdir is not None:
            try:
                self.run(["rm", "-rf", "--", workdir], timeout=self.connect_timeout + 30)
            except DeviceError as e:
                warnings.warn(
                    f"{self.name}: could not remove the working folder {workdir}: {e}", stacklevel=2
                )
        self._drop()


def _makedirs(sftp, directory: str) -> None:
    """``mkdir -p`` over SFTP."""
    missing = []
    while directory not in ("", "/"):
        try:
            sftp.stat(directory)
            break
        except FileNotFoundError:
            missing.append(directory)
            directory = posixpath.dirname(directory)
    for path in reversed(missing):
        sftp.mkdir(path)


class _RejectNewHost:
    """Refuse a host that is not in known_hosts, saying how to check and accept it."""

    def __init__(self, device: SSHDevice):
        self.device = device

    def missing_host_key(self, client, hostname: str, key) -> None:
        d = self.device
        raise DeviceError(
            f"host {hostname} is not in {d.known_hosts} (its {key.get_name()} key is "
            f"{fingerprint(key)}); check that fingerprint on the device (`ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub`), then connect once with --trust-new-host "
            "(trust_new_host=True) to remember it"
        )


class _TrustNewHost:
    """Accept an unknown host (never a changed key) and append it to known_hosts atomically."""

    def __init__(self, device: SSHDevice):
        self.device = device

    def missing_host_key(self, client, hostname: str, key) -> None:
        path = self.device.known_hosts
        client.get_host_keys().add(hostname, key.get_name(), key)
        old = path.read_bytes() if path.is_file() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n".encode()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fileio.write_bytes(path, old + line, force=True)


def from_spec(
    spec: str,
    *,
    key_filename: str | os.PathLike[str] | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    trust_new_host: bool = False,
    python: Sequence[str] | str = "python3",
    connect_timeout: float = 15.0,
    remote_tmp: str = "/tmp",
    allow_agent: bool = True,
) -> SSHDevice:
    """``ssh://user@host[:port]``: see :class:`SSHDevice` for the options."""
    user, host, port = parse_spec(spec)
    return SSHDevice(
        host,
        user=user,
        port=port,
        key_filename=key_filename,
        known_hosts=known_hosts,
        trust_new_host=trust_new_host,
        python=python,
        connect_timeout=connect_timeout,
        remote_tmp=remote_tmp,
        allow_agent=allow_agent,
    )
