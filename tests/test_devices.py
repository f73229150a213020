"""Devices: the registry, the local device, the standalone runner, the emulated Raspberry Pi (real QEMU)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from builder import GraphBuilder, small_cnn
from onnx import TensorProto, helper

from edgeq.devices import REGISTRY, device_kind, open_device
from edgeq.devices.base import RunResult
from edgeq.devices.local import LocalDevice
from edgeq.errors import ConfigError, DeviceError, EdgeqError

RUNNER = Path(__file__).resolve().parent.parent / "edgeq" / "devices" / "runner.py"


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _run_runner(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
    assert device_kind("local") == "local"
    assert device_kind("ssh://pi@raspberrypi.local:2222") == "ssh"
    assert device_kind("qemu-aarch64:cortex-a76") == "qemu-aarch64"
    assert device_kind("adb:emulator-5554") == "adb"
    assert set(REGISTRY) == {"local", "ssh", "qemu-aarch64", "adb"}
    with pytest.raises(
        ConfigError, match=r"unknown device 'qemu-arch64'; did you mean 'qemu-aarch64'\?.*known"
    ):
        open_device("qemu-arch64")
    with pytest.raises(ConfigError, match="known devices: local, ssh://user@host"):
        open_device("telnet://pi")
    with pytest.raises(ConfigError, match="ssh://user@host:port"):
        open_device("ssh://pi@host/some/path")
    with pytest.raises(ConfigError, match="port is not a number"):
        open_device("ssh://pi@host:99999")
    with pytest.raises(DeviceError, match="unknown emulated CPU 'cortex-a99'.*cortex-a72"):
        open_device("qemu-aarch64:cortex-a99")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'colour'"):
        open_device("local", colour="red")


def test_every_registered_device_kind_is_tested_here_or_in_its_own_file():
    tests = Path(__file__).resolve().parent
    covered = {
        "local": "test_devices.py",
        "ssh": "test_ssh.py",
        "qemu-aarch64": "test_devices.py",
        "adb": "test_adb.py",
    }
    assert set(covered) == set(REGISTRY)
    for kind, file in covered.items():
        if kind != "adb":  # written by another engineer, alongside adb.py
            assert (tests / file).is_file(), f"no tests for device kind {kind}"


# ------------------------------------------------------------------------------------------------ local


def test_local_device_push_run_pull_and_cleanup(tmp_path):
    src = tmp_path / "in put's.txt"
    src.write_text("hello")
    with open_device("local") as dev:
        workdir = dev.workdir
        remote = dev.push(src, "sub dir/it's here.txt")
        assert remote == os.path.join(workdir, "sub dir", "it's here.txt")
        result = dev.run(
            [*dev.python, "-c", "import sys; print(open(sys.argv[1]).read()); sys.stderr.write('e')", remote],
            timeout=30,
        )
        assert result == RunResult(0, "hello\n", "e")
        back = dev.pull(remote, tmp_path / "back.txt")
        assert back.read_text() == "hello"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
        assert dev.run(["sh", "-c", "exit 3"], timeout=10).returncode == 3
        with pytest.raises(DeviceError, match="exit status 3"):
            dev.run(["sh", "-c", "echo boom >&2; exit 3"], timeout=10).check("the thing", device=dev.name)
        with pytest.raises(DeviceError, match="outside the working folder"):
            dev.remove("/etc")
        with pytest.raises(DeviceError, match="no such file on the device"):
            dev.pull("missing.npz", tmp_path / "m.npz")
        with pytest.raises(DeviceError, match="cannot start"):
            dev.run(["/nonexistent/edgeq-tool"], timeout=5)
    assert not os.path.exists(workdir)


def test_local_device_timeout_kills_the_whole_tree(tmp_path):
    marker = tmp_path / "still-running"
    with LocalDevice() as dev:
        start = time.monotonic()
        with pytest.raises(DeviceError, match=r"timed out after 0.3 s"):
            dev.run(["sh", "-c", f"sleep 1; touch '{marker}'"], timeout=0.3)
        assert time.monotonic() - start < 1
    time.sleep(1.2)
    assert not marker.exists()  # the child shell was killed with its session


# ----------------------------------------------------------------------------------------------- runner


def test_runner_outputs_match_onnxruntime_and_bytes_are_reproducible(tmp_path, rng):
    import onnxruntime as ort

    model = _save(small_cnn(seed=1, shape=(1, 3, 8, 8)), tmp_path / "m.onnx")
    x = rng.normal(size=(7, 1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    args = [
        "--model",
        str(model),
        "--inputs",
        str(tmp_path / "in.npy"),
        "--latency-runs",
        "9",
        "--warmup",
        "1",
    ]
    a = _run_runner(*args, "--output", str(tmp_path / "a.npz"), "--stats", str(tmp_path / "a.json"))
    assert a.returncode == 0, a.stderr
    b = _run_runner(*args, "--output", str(tmp_path / "b.npz"))
    assert b.returncode == 0, b.stderr
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_outputs()[0].name
    with np.load(tmp_path / "a.npz", allow_pickle=False) as out:
        got = out[name]
    assert got.shape == (7, 1, 10)
    want = np.stack([sess.run(None, {"input": x[i]})[0] for i in range(7)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    stats = json.loads((tmp_path / "a.json").read_text())
    assert stats == json.loads(a.stdout)
    assert stats["samples"] == 7 and stats["latency"]["runs"] == 9
    assert 0 < stats["latency"]["median_ms"] <= stats["latency"]["p90_ms"]
    assert stats["peak_rss_bytes"] >= stats["rss_before_model_bytes"] > 10_000_000
    assert stats["runtime"]["name"] == "onnxruntime" and stats["runtime"]["version"] == ort.__version__
    assert stats["outputs"] == [{"name": name, "shape": [1, 10], "dtype": "float32"}]
    assert stats["machine"] == os.uname().machine
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_runner_reads_rows_as_samples_and_npz_by_name(tmp_path, rng):
    g = GraphBuilder("a", (1, 4), seed=0)
    g.inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4]))
    model = _save(g.build(g.add("a", "b")), tmp_path / "add.onnx")
    a, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    np.savez(tmp_path / "in.npz", a=a, b=b)
    r = _run_runner(
        "--model",
        str(model),
        "--inputs",
        str(tmp_path / "in.npz"),
        "--output",
        str(tmp_path / "o.npz"),
        "--latency-runs",
        "0",
    )
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "o.npz") as out:
        np.testing.assert_array_equal(next(iter(out.values())), (a + b)[:, None])
    assert json.loads(r.stdout)["latency"] is None


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros((3, 2, 4), np.float32), r"samples have shape \(2, 4\), the model wants \(1, 4\)"),
        (np.zeros((3, 1, 4), np.int64), "samples are int64, the model wants float32"),
        ({"x": np.zeros((3, 1, 4), np.float32), "y": np.zeros((3, 1, 4), np.float32)}, "no array for model"),
    ],
)
def test_runner_rejects_bad_inputs_with_a_clear_message(tmp_path, inputs, message):
    g = GraphBuilder("a", (1, 4), seed=0)
    model = _save(g.build(g.relu("a")), tmp_path / "relu.onnx")
    path = tmp_path / ("in.npz" if isinstance(inputs, dict) else "in.npy")
    if isinstance(inputs, dict):
        np.savez(path, **inputs)
    else:
        np.save(path, inputs)
    r = _run_runner("--model", str(model), "--inputs", str(path), "--output", str(tmp_path / "o.npz"))
    assert r.returncode == 2
    assert r.stderr.startswith("runner: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert __import__("re").search(message, r.stderr), r.stderr
    assert not (tmp_path / "o.npz").exists()


def test_runner_refuses_pickles(tmp_path):
    g = GraphBuilder("a", (1, 4), seed=0)
    model = _save(g.build(g.relu("a")), tmp_path / "relu.onnx")
    np.save(tmp_path / "evil.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    r = _run_runner(
        "--model", str(model), "--inputs", str(tmp_path / "evil.npy"), "--output", str(tmp_path / "o")
    )
    assert r.returncode == 2 and "without pickles" in r.stderr


def test_runner_stops_when_its_parent_dies_or_its_deadline_passes(tmp_path, rng):
    _save(small_cnn(seed=0, shape=(1, 3, 8, 8)), tmp_path / "m.onnx")
    np.save(tmp_path / "in.npy", rng.normal(size=(2, 1, 3, 8, 8)).astype(np.float32))
    common = [
        "--model",
        str(tmp_path / "m.onnx"),
        "--inputs",
        str(tmp_path / "in.npy"),
        "--latency-runs",
        "100000000",
    ]
    r = _run_runner(*common, "--output", str(tmp_path / "late.npz"), "--deadline", "1.0")
    assert r.returncode == 124 and "deadline passed" in r.stderr
    # A parent that goes away (as an SSH session does when the connection drops): the runner follows it.
    marker = "edgeq-orphan-test"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(1.0)",
            sys.executable,
            str(RUNNER),
            *common,
            "--output",
            str(tmp_path / f"{marker}.npz"),
            "--exit-with-parent",
        ]
    )
    parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    from pi_fixtures import find_processes

    while find_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not find_processes(marker), "the orphaned runner kept running"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "m.onnx"]  # nothing half-written


def test_runner_self_check_prints_the_environment():
    r = _run_runner("--self-check")
    info = json.loads(r.stdout)
    assert r.returncode == 0 and info["numpy"] == np.__version__ and info["onnxruntime"]


# -------------------------------------------------------------------------------------- userland cache


def _slow_build(final: str, counter: str) -> None:
    from edgeq.devices.userland import build_once

    def build(tmp: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        (tmp / "done").write_text("yes")

    build_once(Path(final), build)


def test_build_once_builds_once_under_concurrency_and_leaves_no_half_folder(tmp_path):
    final, counter = tmp_path / "cache" / "thing", tmp_path / "count"
    final.parent.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_slow_build, args=(str(final), str(counter))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert counter.read_text() == "built\n"
    assert (final / "done").read_text() == "yes"
    from edgeq.devices.userland import build_once

    def failing(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise DeviceError("network down")

    other = tmp_path / "cache" / "other"
    with pytest.raises(DeviceError, match="network down"):
        build_once(other, failing)
    assert sorted(p.name for p in other.parent.iterdir()) == ["other.lock", "thing", "thing.lock"]


def test_userland_key_follows_content_not_mirror():
    from edgeq.devices.userland import UserlandSpec

    a = UserlandSpec()
    assert a.key() == UserlandSpec(mirror="http://ftp.de.debian.org/debian").key()
    assert a.key() != UserlandSpec(wheels=("onnxruntime==1.20.0", "numpy==2.0.0")).key()
    assert a.python == "3.11"
    assert any(w.startswith("onnxruntime==") for w in a.wheels)  # pinned to the host's version
    with pytest.raises(EdgeqError, match="Debian suite 'sid'"):
        UserlandSpec(suite="sid")


# ------------------------------------------------------------------------------------- emulated Pi (QEMU)


@pytest.mark.slow
def test_emulated_pi_runs_aarch64_python_with_the_requested_cpu(emulated_pi, tmp_path):
    userland = emulated_pi.userland
    features = {}
    for cpu in ("cortex-a72", "cortex-a76"):
        with open_device(f"qemu-aarch64:{cpu}", userland=userland) as dev:
            assert dev.emulated and dev.name == f"qemu-aarch64:{cpu}"
            r = dev.run([*dev.python, str(RUNNER), "--self-check"], timeout=120)
            assert r.returncode == 0, r.stderr
            info = json.loads(r.stdout.strip().splitlines()[-1])
            assert info["machine"] == "aarch64" and info["python"].startswith("3.11")
            assert info["onnxruntime"] == __import__("onnxruntime").__version__
            features[cpu] = set(info["cpu"]["features"])
    # A Pi 5's Cortex-A76 has the int8 dot-product instructions, a Pi 4's Cortex-A72 does not.
    assert "asimddp" in features["cortex-a76"] and "asimddp" not in features["cortex-a72"]
    assert {"fp", "asimd"} <= features["cortex-a72"]


@pytest.mark.slow
def test_emulated_pi_setup_time_and_cached_start(emulated_pi):
    """Set-up from nothing (timed when this session built it) < 2 min; a cached start-up a few seconds."""
    from edgeq.devices.userland import ensure_userland

    if emulated_pi.built:
        assert emulated_pi.setup_seconds < 120, f"set-up from nothing took {emulated_pi.setup_seconds:.0f} s"
    info = emulated_pi.userland.info
    assert sum(info["build_seconds"].values()) < 120, info["build_seconds"]
    start = time.perf_counter()
    userland = ensure_userland()
    with open_device("qemu-aarch64", userland=userland) as dev:
        r = dev.run([*dev.python, "-c", "import numpy, onnxruntime; print('ok')"], timeout=60)
    cached = time.perf_counter() - start
    print(
        f"\nemulated Pi: set-up {sum(info['build_seconds'].values()):.1f} s from nothing "
        f"({info['build_seconds']}); cached start-up + numpy/onnxruntime import {cached:.2f} s",
        file=sys.stderr,
    )
    assert r.stdout.strip().endswith("ok"), r.stderr
    assert cached < 15
