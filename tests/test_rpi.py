"""Raspberry Pi: the package, and validation on the device (local, and over SSH on the emulated Pi)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgeq.devices import open_device
from edgeq.devices.remote_validation import validate_on_device
from edgeq.errors import DeviceError, ModelError
from edgeq.packaging import package
from edgeq.packaging.base import Package

RUNNER = Path(__file__).resolve().parent.parent / "edgeq" / "devices" / "runner.py"


@pytest.fixture(scope="module")
def rpi_package(digits_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "digits rpi4 'pkg'"
    package(
        digits_models.int8_path, target="raspberry-pi-4", output=out, float_model=digits_models.float_path
    )
    return out


def _host_int8(digits_models) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(digits_models.int8_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    shape = sess.get_inputs()[0].shape
    x = digits_models.inputs.reshape(-1, *shape)
    return np.stack([sess.run(None, {name: x[i : i + 1].reshape(shape)})[0] for i in range(len(x))])


# -------------------------------------------------------------------------------------------- packaging


def test_package_holds_what_the_pi_needs_and_is_reproducible(digits_models, rpi_package, tmp_path):
    pkg = Package.load(rpi_package)
    assert pkg.target == "raspberry-pi-4"
    for name in (
        "model.int8.onnx",
        "model.float.onnx",
        "runner.py",
        "requirements.txt",
        "README.md",
        "metadata.json",
        "package.json",
    ):
        assert name in pkg.files
    assert (rpi_package / "runner.py").read_bytes() == RUNNER.read_bytes()
    import onnxruntime as ort

    requirements = (rpi_package / "requirements.txt").read_text()
    assert f"onnxruntime=={ort.__version__}" in requirements and "numpy>=" in requirements
    readme = (rpi_package / "README.md").read_text()
    assert (
        "pip install -r requirements.txt" in readme and "python3 runner.py --model model.int8.onnx" in readme
    )
    assert "scp -r" in readme and "edgeq validate" in readme
    meta = json.loads((rpi_package / "metadata.json").read_text())
    io = meta["quantization"]["io"]
    assert io["input"]["role"] == "input" and io["input"]["dtype"] == "int8" and io["input"]["scale"] > 0
    assert meta["inputs"][0]["name"] == "input" and meta["threads"] == 4
    manifest = pkg.manifest
    assert manifest["kind"] == "sbc" and manifest["emulator"] == "qemu-aarch64:cortex-a72"
    assert manifest["models"]["int8"]["outputs"][0]["shape"][-1] == 10
    assert [f["path"] for f in manifest["files"]] == sorted(f["path"] for f in manifest["files"])
    if "tflite" not in manifest["models"]:
        print("no model.tflite in the package:", manifest.get("notes"))
    # Identical inputs give a byte-identical package.
    again = tmp_path / "again"
    package(
        digits_models.int8_path, target="raspberry-pi-4", output=again, float_model=digits_models.float_path
    )
    for name in pkg.files:
        assert (again / name).read_bytes() == (rpi_package / name).read_bytes(), name


def test_package_detects_a_damaged_copy(rpi_package, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rpi_package, copy)
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.int8.onnx differs from what package.json lists"):
        Package.load(copy)
    (copy / "model.int8.onnx").unlink()
    with pytest.raises(ModelError, match="model.int8.onnx is missing from the package"):
        Package.load(copy)
    with pytest.raises(ModelError, match="not an edgeq package"):
        Package.load(tmp_path)


def test_package_refuses_a_float_model_as_int8_and_mismatched_pairs(digits_models, tmp_path):
    from builder import small_cnn

    with pytest.raises(ModelError, match="not an int8 model; quantize it first"):
        package(digits_models.float_path, target="raspberry-pi-4", output=tmp_path / "a")
    other = tmp_path / "other.onnx"
    other.write_bytes(small_cnn(shape=(1, 3, 8, 8)).SerializeToString())
    with pytest.raises(ModelError, match=r"input 'input' has shape .* in the int8 model"):
        package(digits_models.int8_path, target="raspberry-pi-4", output=tmp_path / "b", float_model=other)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    pkg = tmp_path / "nofloat"
    package(digits_models.int8_path, target="raspberry-pi-3", output=pkg)
    with pytest.raises(ModelError, match=r"has no float model .*--float"):
        validate_on_device(pkg, device="local", data=digits_models.inputs)


# ---------------------------------------------------------------------------------- validation: local


def test_validate_on_the_local_device(digits_models, rpi_package, tmp_path, monkeypatch):
    # A private temp folder: other processes on the machine may create /tmp/edgeq-* meanwhile.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    before = set(Path(tempfile.gettempdir()).glob("edgeq-*"))
    report = validate_on_device(
        rpi_package,
        device="local",
        data=digits_models.inputs,
        labels=digits_models.labels,
        num_samples=100,
        threads=1,
        latency_runs=20,
        outputs_dir=tmp_path / "raw",
    )
    out = report.outputs[0]
    assert report.samples == 100 and out.predictions == 100 and out.agree >= 99
    assert out.sqnr_db > 20 and out.step is not None and report.passed
    assert report.environment.device == "local" and not report.environment.emulated
    for stats in (report.float_model, report.quant_model):
        assert stats.latency.runs == 20 and stats.latency.median_ms > 0 and stats.peak_rss_bytes > 10_000_000
    assert report.quant_model.path == "model.int8.onnx" and report.quant_model.size_bytes > 0
    with np.load(tmp_path / "raw" / "int8.npz") as raw:
        np.testing.assert_array_equal(
            raw["logits" if "logits" in raw else raw.files[0]], _host_int8(digits_models)[:100]
        )
    assert set(Path(tempfile.gettempdir()).glob("edgeq-*")) == before  # local device folder and temps gone


def test_validate_the_tflite_model_with_litert_on_the_local_device(digits_models, rpi_package):
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    if not Package.load(rpi_package).has("tflite"):
        pytest.skip(f"the package has no model.tflite: {Package.load(rpi_package).manifest.get('notes')}")
    onnx_report = validate_on_device(
        rpi_package, device="local", data=digits_models.inputs, threads=1, latency_runs=0
    )
    for reference in (False, True):
        report = validate_on_device(
            rpi_package,
            device="local",
            data=digits_models.inputs,
            threads=1,
            latency_runs=0,
            runtime="litert",
            reference_kernels=reference,
        )
        out = report.outputs[0]
        assert report.environment.runtime.startswith("litert") and report.quant_model.path == "model.tflite"
        assert out.agree >= out.predictions - 2
        # Within one output step of onnxruntime's int8 outputs (XNNPACK and the builtin kernels may differ).
        assert abs(out.max_abs_error - onnx_report.outputs[0].max_abs_error) <= out.step * 1.001


# ------------------------------------------------------------------------ validation: SSH + emulated Pi


@pytest.mark.slow
def test_digits_validated_over_ssh_on_the_emulated_pi_bit_identical_to_x86(
    sshd, pi_python, digits_models, rpi_package, tmp_path
):
    remote_tmp = tmp_path / "remote tmp 'with' quotes; touch pwned"
    remote_tmp.mkdir()
    start = time.perf_counter()
    with open_device(sshd.spec, **sshd.options(python=(str(pi_python),), remote_tmp=str(remote_tmp))) as dev:
        report = validate_on_device(
            rpi_package,
            device=dev,
            data=digits_models.inputs,
            labels=digits_models.labels,
            threads=1,  # int8 results do not depend on it; 4 emulated threads on 2 host cores only cost time
            latency_runs=10,
            outputs_dir=tmp_path / "raw",
        )
        workdir = dev.workdir
        assert os.listdir(workdir) == []  # the validation folder was removed
    elapsed = time.perf_counter() - start
    assert not os.path.exists(workdir) and list(remote_tmp.iterdir()) == []
    assert not list(Path.home().glob("pwned")) and not list(tmp_path.rglob("pwned"))
    env = report.environment
    assert env.device == sshd.spec and env.machine == "aarch64" and env.runtime.startswith("onnxruntime ")
    assert "asimd" in env.cpu and "asimddp" not in env.cpu  # a Cortex-A72, as a Pi 4 has
    with np.load(tmp_path / "raw" / "int8.npz") as raw:
        pi_int8 = raw[raw.files[0]]
    x86_int8 = _host_int8(digits_models)
    assert pi_int8.shape == x86_int8.shape == (360, 1, 10)
    assert np.array_equal(pi_int8, x86_int8), "int8 outputs on the emulated Cortex-A72 differ from x86's"
    stats = json.loads((tmp_path / "raw" / "int8.json").read_text())
    assert (
        stats["machine"] == "aarch64" and stats["runtime"]["version"] == __import__("onnxruntime").__version__
    )
    out = report.outputs[0]
    assert out.agree == 360 and report.passed and report.samples == 360
    assert report.float_model.peak_rss_bytes > 0 and report.quant_model.latency.runs == 10
    again = type(report).from_json(report.to_json())
    assert again.environment == report.environment
    report.write(tmp_path / "report")
    print(
        f"\nvalidated 360 digits over SSH on the emulated Cortex-A72 in {elapsed:.1f} s; int8 == x86 "
        f"bit for bit; top-1 float {out.float_correct}/360, int8 {out.quant_correct}/360"
    )


@pytest.mark.slow
def test_validation_survives_one_dropped_connection(sshd, pi_python, digits_models, rpi_package, tmp_path):
    from test_ssh import SessionKiller

    with (
        open_device(sshd.spec, **sshd.options(python=(str(pi_python),))) as dev,
        SessionKiller(sshd, f"runner.py --model {dev.workdir}/", times=1) as killer,
    ):
        report = validate_on_device(
            rpi_package, device=dev, data=digits_models.inputs, num_samples=50, threads=1, latency_runs=0
        )
        assert killer.kills == 1 and dev.reconnects == 1
        assert report.samples == 50 and report.outputs[0].agree == 50


@pytest.mark.slow
def test_validation_with_a_connection_that_keeps_dropping_fails_cleanly(
    sshd, pi_python, digits_models, rpi_package, tmp_path
):
    from pi_fixtures import find_processes
    from test_ssh import SessionKiller

    local_temps = set(Path(tempfile.gettempdir()).glob("edgeq-validate-*"))
    with open_device(sshd.spec, **sshd.options(python=(str(pi_python),))) as dev:
        workdir = dev.workdir
        with (
            SessionKiller(sshd, f"runner.py --model {workdir}/", times=2) as killer,
            pytest.raises(DeviceError) as e,
        ):
            validate_on_device(
                rpi_package,
                device=dev,
                data=digits_models.inputs,
                num_samples=50,
                threads=1,
                outputs_dir=tmp_path / "raw",
            )
        assert killer.kills == 2
        message = str(e.value)
        assert message.startswith(f"{sshd.spec}: lost the connection while running ")
        assert "again after reconnecting once" in message and "\n" not in message
        # No half-written file on either side: the device folder was cleaned (after a reconnect) and no runner
        # outlived its session; locally nothing was written.
        assert os.listdir(workdir) == []
        deadline = time.monotonic() + 10
        while find_processes(workdir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert find_processes(workdir) == []
    assert not (tmp_path / "raw").exists()
    assert set(Path(tempfile.gettempdir()).glob("edgeq-validate-*")) == local_temps
