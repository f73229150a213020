"""Real parts for the Raspberry Pi tests: an OpenSSH server on 127.0.0.1 and the emulated Pi userland.

Used through ``pytest_plugins = ["pi_fixtures"]``. Nothing here is a fake: ``sshd`` is Debian's
/usr/sbin/sshd with a throwaway host key and client key, and the emulated Pi is Debian's arm64 Python with
aarch64 onnxruntime under qemu-aarch64 (built once into the user's cache, about a minute, then reused).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SSHD = "/usr/sbin/sshd"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits"
SHARED = ROOT.parent / "shared" / "models"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def find_processes(marker: str) -> list[tuple[int, int]]:
    """(pid, parent pid) of processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if marker in cmdline:
            found.append((int(entry), ppid))
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass
class SshServer:
    """A running sshd: where it listens, the client key, a known_hosts file that trusts it."""

    folder: Path
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public_key: str
    config: Path
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def spec(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def options(self, **extra) -> dict:
        """open_device options: this client key and known_hosts only (no agent, no ~/.ssh keys)."""
        return {
            "key_filename": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "allow_agent": False,
            "connect_timeout": 10.0,
            **extra,
        }

    def start(self) -> None:
        with open(self.log, "ab") as log:  # sshd keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log.read_text()[-800:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for pid in _children(self.proc.pid):  # per-connection processes
                _kill(pid)
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill_sessions(self) -> int:
        """Kill every connection's sshd process (all clients drop at once); returns how many."""
        pids = _children(self.proc.pid) if self.proc is not None else []
        for pid in pids:
            _kill(pid)
        return len(pids)

    def kill_session_of(self, pid: int) -> bool:
        """Kill the sshd session process that ``pid`` runs under (the connection drops); True if found."""
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if _comm(ppid) != "sshd" or ppid == (self.proc.pid if self.proc else -1):
            return False
        _kill(ppid)
        return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeq-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshServer:
    """Debian's OpenSSH server on 127.0.0.1 (free port), key login for the current user (root here)."""
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing: install Debian's openssh-server to run the SSH tests")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is missing: install Debian's openssh-client to run the SSH tests")
    import getpass

    folder = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(folder / "host_ed25519")
    client_pub = _keygen(folder / "client_ed25519")
    (folder / "authorized_keys").write_text(client_pub + "\n")
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_ed25519'}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "Subsystem sftp internal-sftp",
                "MaxStartups 100",
                "MaxSessions 100",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    known = folder / "known_hosts"
    kind, key = host_pub.split()[:2]
    known.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
    server = SshServer(
        folder=folder,
        port=port,
        user=getpass.getuser(),
        client_key=folder / "client_ed25519",
        known_hosts=known,
        host_public_key=f"{kind} {key}",
        config=config,
        log=folder / "sshd.log",
    )
    try:
        server.start()
    except RuntimeError as e:
        pytest.skip(f"sshd could not start here: {e}")
    yield server
    server.stop()


@dataclass(frozen=True)
class EmulatedPi:
    userland: object  # edgeq.devices.userland.Userland
    setup_seconds: float
    built: bool


@pytest.fixture(scope="session")
def emulated_pi() -> EmulatedPi:
    """The emulated Raspberry Pi userland from the user's cache (built on first use, then reused)."""
    from edgeq.devices.userland import UserlandSpec, cache_root, ensure_userland
    from edgeq.errors import DeviceError

    missing = [
        t
        for t in ("qemu-aarch64-static", "debootstrap", "dpkg")
        if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")
    ]
    spec = UserlandSpec()
    final = cache_root() / "qemu-aarch64" / f"{spec.suite}-{spec.key()}"
    if missing and not final.is_dir():
        pytest.skip(
            f"the emulated Pi needs {', '.join(missing)}: apt-get install qemu-user-static debootstrap"
        )
    existed = final.is_dir()
    start = time.perf_counter()
    try:
        userland = ensure_userland(spec)
    except DeviceError as e:
        pytest.skip(f"the emulated Pi userland cannot be set up here: {e}")
    elapsed = time.perf_counter() - start
    how = "found in the cache" if existed else "built from nothing"
    print(f"\nemulated Pi userland {how} in {elapsed:.1f} s: {userland.path}", file=sys.stderr)
    return EmulatedPi(userland=userland, setup_seconds=elapsed, built=not existed)


@pytest.fixture(scope="session")
def pi_python(emulated_pi, tmp_path_factory) -> Path:
    """A ``python3``-like wrapper script that runs the emulated Pi's Python (Cortex-A72, a Pi 4)."""
    from edgeq.devices.userland import write_python_wrapper

    return write_python_wrapper(
        tmp_path_factory.mktemp("pi") / "pi python3", userland=emulated_pi.userland, cpu="cortex-a72"
    )


@dataclass(frozen=True)
class DigitsModels:
    float_path: Path
    int8_path: Path
    inputs: np.ndarray  # N × model input shape, float32
    labels: np.ndarray | None


def _quantize(src: Path, dst: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(calibration)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"input": row[None]}

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )


@pytest.fixture(scope="session")
def digits_models(tmp_path_factory) -> DigitsModels:
    """The digits example (or the shared digits model) and its QDQ int8 twin from ORT's quantize_static."""
    import logging

    folder = tmp_path_factory.mktemp("digits")
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's "consider pre-processing" warnings
    if (EXAMPLE / "digits_cnn.onnx").is_file():
        src = EXAMPLE / "digits_cnn.onnx"
        calibration = np.load(EXAMPLE / "calibration.npz")["input"][:200]
        with np.load(EXAMPLE / "test.npz") as test:
            inputs, labels = test["input"], test["labels"]
    elif (SHARED / "digits_float_nhwc.onnx").is_file():
        src = SHARED / "digits_float_nhwc.onnx"
        inputs = np.load(SHARED / "digits_test_inputs.npy")
        labels = np.load(SHARED / "test_labels.npy")
        calibration = inputs[::2]  # no separate calibration split ships with it
    else:
        pytest.skip("no digits model: neither examples/digits/digits_cnn.onnx nor shared/models exist")
    dst = folder / "digits.int8.onnx"
    _quantize(src, dst, calibration.astype(np.float32))
    return DigitsModels(float_path=src, int8_path=dst, inputs=inputs.astype(np.float32), labels=labels)
