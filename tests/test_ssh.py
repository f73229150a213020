"""The SSH device against a real OpenSSH server on 127.0.0.1 (Debian's sshd, throwaway keys)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeq.devices import open_device
from edgeq.devices.ssh import parse_spec
from edgeq.errors import ConfigError, DeviceError

HOSTILE = "a'; touch pwned; '.npy"


def _pwned_anywhere(*folders: str | Path) -> list[str]:
    return [str(Path(f) / "pwned") for f in folders if (Path(f) / "pwned").exists()]


def _leftovers(folder: str | Path) -> list[str]:
    return [str(p) for p in Path(folder).rglob("*") if p.name.endswith(".part")]


class SessionKiller:
    """Drops the SSH connection (kills the sshd session process) whenever a process with ``marker`` runs."""

    def __init__(self, sshd, marker: str, *, times: int):
        self.sshd, self.marker, self.times, self.kills = sshd, marker, times, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from pi_fixtures import find_processes

        seen: set[int] = set()
        while not self._stop.is_set() and self.kills < self.times:
            for pid, _ in find_processes(self.marker):
                if pid not in seen and self.sshd.kill_session_of(pid):
                    seen.add(pid)
                    self.kills += 1
            time.sleep(0.02)

    def __enter__(self) -> SessionKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def test_parse_spec():
    assert parse_spec("ssh://pi@raspberrypi.local") == ("pi", "raspberrypi.local", 22)
    assert parse_spec("ssh://pi@[::1]:2222") == ("pi", "::1", 2222)
    with pytest.raises(ConfigError, match="no password in the address"):
        parse_spec("ssh://pi:secret@host")


def test_push_run_pull_with_hostile_names_is_not_injectable(sshd, tmp_path):
    local = tmp_path / HOSTILE
    local.write_bytes(b"\x00payload\xff" * 1000)
    with open_device(sshd.spec, **sshd.options(python=sys.executable)) as dev:
        workdir = dev.workdir
        assert workdir.startswith("/tmp/edgeq-") and os.stat(workdir).st_mode & 0o777 == 0o700
        remote = dev.push(local, f"dir with 'quotes' and spaces/{HOSTILE}")
        assert remote == f"{workdir}/dir with 'quotes' and spaces/{HOSTILE}"
        assert Path(remote).read_bytes() == local.read_bytes()
        tricky = ["$(touch pwned)", "`touch pwned`", "; touch pwned", "a b", "", "new\nline", "*", "~"]
        r = dev.run(
            [*dev.python, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *tricky, remote],
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        assert __import__("json").loads(r.stdout) == [*tricky, remote]
        assert dev.run(["pwd"], timeout=30).stdout.strip() == workdir  # commands run in the working folder
        back = dev.pull(remote, tmp_path / "back" / HOSTILE)
        assert back.read_bytes() == local.read_bytes()
        assert _pwned_anywhere(workdir, Path(remote).parent, Path.home(), tmp_path) == []
        assert _leftovers(workdir) == [] and _leftovers(tmp_path) == []
        with pytest.raises(DeviceError, match="no such file on the device"):
            dev.pull("does-not-exist.npz", tmp_path / "x.npz")
        assert not (tmp_path / "x.npz").exists() and _leftovers(tmp_path) == []
    assert not os.path.exists(workdir)  # close() removed it


def test_runner_over_ssh_with_hostile_input_path(sshd, tmp_path, rng):
    import numpy as np
    from builder import small_cnn

    model = tmp_path / "m o'del.onnx"
    model.write_bytes(small_cnn(shape=(1, 3, 8, 8)).SerializeToString())
    inputs = tmp_path / HOSTILE
    with open(inputs, "wb") as f:
        np.save(f, rng.normal(size=(3, 1, 3, 8, 8)).astype(np.float32))
    runner = Path(__file__).resolve().parent.parent / "edgeq" / "devices" / "runner.py"
    with open_device(sshd.spec, **sshd.options(python=sys.executable)) as dev:
        r = dev.run(
            [
                *dev.python,
                dev.push(runner, "runner.py"),
                "--model",
                dev.push(model, model.name),
                "--inputs",
                dev.push(inputs, HOSTILE),
                "--output",
                "out put's.npz",
                "--latency-runs",
                "3",
            ],
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        out = dev.pull("out put's.npz", tmp_path / "out.npz")
        with np.load(out) as data:
            assert next(iter(data.values())).shape == (3, 1, 10)
        assert _pwned_anywhere(dev.workdir, Path.home()) == []


def test_changed_host_key_is_refused_even_with_trust_new_host(sshd, tmp_path):
    import paramiko

    other = paramiko.Ed25519Key.from_private_key_file(str(sshd.client_key))  # any other ed25519 key
    known = tmp_path / "known_hosts"
    text = f"[127.0.0.1]:{sshd.port} ssh-ed25519 {other.get_base64()}\n"
    known.write_text(text)
    for trust in (False, True):
        with pytest.raises(DeviceError) as e:
            open_device(sshd.spec, **sshd.options(known_hosts=str(known), trust_new_host=trust))
        message = str(e.value)
        assert (
            f"host key for [127.0.0.1]:{sshd.port} does not match the known_hosts entry in {known}" in message
        )
        assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known}" in message
        assert "re-imaged" in message and "\n" not in message
    assert known.read_text() == text  # never rewritten


def test_unknown_host_is_refused_unless_trusted_then_remembered(sshd, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"
    with pytest.raises(DeviceError, match=rf"host \[127.0.0.1\]:{sshd.port} is not in .*--trust-new-host"):
        open_device(sshd.spec, **sshd.options(known_hosts=str(known)))
    assert not known.exists()
    with open_device(sshd.spec, **sshd.options(known_hosts=str(known), trust_new_host=True)) as dev:
        assert dev.run(["true"], timeout=30).returncode == 0
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}\n"
    with open_device(sshd.spec, **sshd.options(known_hosts=str(known))) as dev:  # now known: no trust needed
        assert dev.run(["echo", "hi"], timeout=30).stdout == "hi\n"


def test_authentication_and_connection_errors_are_clear(sshd, tmp_path):
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True
    )
    with pytest.raises(DeviceError, match=r"authentication refused .*ssh-copy-id -p"):
        open_device(sshd.spec, **sshd.options(key_filename=str(tmp_path / "stranger")))
    from pi_fixtures import _free_port

    with pytest.raises(DeviceError, match="connection refused; check that the device is on"):
        open_device(f"ssh://root@127.0.0.1:{_free_port()}", **sshd.options())


def test_timeout_and_signals(sshd):
    with open_device(sshd.spec, **sshd.options()) as dev:
        start = time.monotonic()
        with pytest.raises(DeviceError, match="timed out after 0.5 s"):
            dev.run(["sleep", "5"], timeout=0.5)
        assert time.monotonic() - start < 3
        r = dev.run(["sh", "-c", "kill -9 $$"], timeout=30)  # killed by a signal: a result, not a drop
        assert r.returncode == -1 and "killed by a signal" in r.stderr
        assert dev.reconnects == 0
        assert dev.run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=30) == type(r)(
            7, "out\n", "err\n"
        )


def test_dropped_connection_is_retried_once(sshd):
    marker = "edgeq-drop-once"
    with open_device(sshd.spec, **sshd.options()) as dev, SessionKiller(sshd, marker, times=1) as killer:
        r = dev.run(["sh", "-c", "sleep 1; echo finished", marker], timeout=60)
        assert killer.kills == 1 and dev.reconnects == 1
        assert r.returncode == 0 and r.stdout == "finished\n"


def test_connection_dropped_twice_gives_a_clear_error(sshd):
    marker = "edgeq-drop-always"
    with open_device(sshd.spec, **sshd.options()) as dev:
        workdir = dev.workdir
        with SessionKiller(sshd, marker, times=2) as killer, pytest.raises(DeviceError) as e:
            dev.run(["sh", "-c", "sleep 3; echo finished", marker], timeout=60)
        assert killer.kills == 2 and dev.reconnects == 1
        message = str(e.value)
        assert (
            "lost the connection while running sh -c" in message
            and "again after reconnecting once" in message
        )
        assert dev.run(["echo", "back"], timeout=30).stdout == "back\n"  # the device is usable again
    assert not os.path.exists(workdir)


def test_dropped_connection_during_a_push_is_retried_and_leaves_no_part_file(sshd, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 48)  # 48 MiB: the transfer takes long enough to be cut
    with open_device(sshd.spec, **sshd.options()) as dev:
        target = Path(dev.workdir) / "sub"
        kills = []

        def cut_when_the_part_file_appears() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not kills:
                if target.is_dir() and any(p.name.endswith(".part") for p in target.iterdir()):
                    kills.append(sshd.kill_sessions())
                time.sleep(0.005)

        cutter = threading.Thread(target=cut_when_the_part_file_appears, daemon=True)
        cutter.start()
        remote = dev.push(big, "sub/big.bin")
        cutter.join(5)
        assert kills and kills[0] >= 1 and dev.reconnects == 1
        assert Path(remote).read_bytes() == big.read_bytes()
        assert sorted(p.name for p in target.iterdir()) == ["big.bin"]  # the cut attempt's .part is gone
