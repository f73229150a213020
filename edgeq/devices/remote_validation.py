"""Validation on the device itself: float and int8 both run there, the comparison happens here.

The package's runner, its two models and the inputs (one ``.npy``/``.npz``) are pushed into a fresh folder
inside the device's working folder; the runner runs each model in its own process (so each has its own peak
RSS) and writes outputs and stats atomically; both are pulled and compared with
:func:`edgeq.validate.compare`. The folder is removed afterwards, whether the run succeeded or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import onnxutil
from edgeq._compat import StrEnum
from edgeq.config import Preprocess, Target, load_target
from edgeq.devices.base import Device
from edgeq.errors import ConfigError, DataError, DeviceError, EdgeqError

RUNNER_FILE = "runner.py"


class DeviceRuntime(StrEnum):
    """What runs the int8 model on the device: the package's .onnx in ONNX Runtime, or its .tflite."""

    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"
    TFLITE_RUNTIME = "tflite-runtime"


_ROLES = ("float", "int8")


@dataclass(frozen=True)
class DeviceRun:
    """One model's run on a device: outputs (name → ``N × output shape``) and the runner's stats."""

    role: str
    outputs: dict[str, np.ndarray]
    stats: dict[str, Any]


def _stack_inputs(data: Any, model_path: Path, *, preprocess: Preprocess | None, limit: int | None):
    from edgeq.data import open_samples

    specs = onnxutil.input_specs(onnxutil.load_model(model_path))
    rows: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    for sample in open_samples(data, inputs=specs, preprocess=preprocess, limit=limit):
        for name in rows:
            rows[name].append(np.asarray(sample[name]))
    count = len(next(iter(rows.values())))
    if count == 0:
        raise DataError("the validation data holds no samples; give at least one")
    return {name: np.stack(arrays) for name, arrays in rows.items()}, count


def _write_inputs(folder: Path, inputs: Mapping[str, np.ndarray]) -> Path:
    from edgeq.devices.runner import save_npz

    if len(inputs) == 1:
        path = folder / "inputs.npy"
        np.save(path, np.ascontiguousarray(next(iter(inputs.values()))), allow_pickle=False)
    else:
        path = folder / "inputs.npz"
        save_npz(str(path), dict(inputs))
    return path


def _load_outputs(path: Path, *, device: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as e:
        raise DeviceError(f"{device}: the runner's outputs {path.name} are unreadable ({e})") from None


def _runner_failure(device: Device, role: str, result) -> DeviceError:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    # The runner's own message is its last "runner: …" line; QEMU and cpuinfo chatter come before it.
    message = next((line for line in reversed(lines) if line.startswith("runner: ")), None)
    if message is None:
        message = " | ".join(lines[-3:])[-600:] or "no message"
        if result.returncode == 127 or "not found" in message:
            message += f"; is {' '.join(device.python)} the right Python command on the device?"
        elif "No module named" in message:
            message += "; install the package's requirements.txt on the device"
    return DeviceError(
        f"{device.name}: running the {role} model failed (exit {result.returncode}): {message}"
    )


@dataclass(frozen=True)
class _TfliteIO:
    """How the .tflite model's tensors relate to the ONNX model's: names and NCHW→NHWC permutations."""

    inputs: dict[str, tuple[str, tuple[int, ...]]]  # onnx input name → (tflite tensor name, perm_from_onnx)
    outputs: dict[str, tuple[str, tuple[int, ...]]]  # tflite output tensor name → (onnx name, perm_from_onnx)

    @classmethod
    def read(cls, path: Path) -> _TfliteIO:
        from edgeq.backends.tflite import read_metadata

        meta = read_metadata(path.read_bytes())
        return cls(
            inputs={m["onnx_name"]: (m["tensor"], tuple(m["perm_from_onnx"])) for m in meta["inputs"]},
            outputs={m["tensor"]: (m["onnx_name"], tuple(m["perm_from_onnx"])) for m in meta["outputs"]},
        )

    def to_tflite(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Arrays are N × onnx shape: the sample axis stays first, each sample's axes are permuted.
        out = {}
        for name, x in inputs.items():
            tensor, perm = self.inputs[name]
            out[tensor] = np.ascontiguousarray(x.transpose(0, *(p + 1 for p in perm)))
        return out

    def from_tflite(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for tensor, y in outputs.items():
            name, perm = self.outputs[tensor]
            inverse = np.argsort(perm)  # tflite = onnx.transpose(perm), so onnx = tflite.transpose(argsort)
            out[name] = np.ascontiguousarray(y.transpose(0, *(int(i) + 1 for i in inverse)))
        return out


def run_on_device(
    package: Any,
    *,
    device: Device,
    inputs: Mapping[str, np.ndarray],
    roles: Sequence[str] = _ROLES,
    runtime: DeviceRuntime | str = DeviceRuntime.ONNXRUNTIME,
    reference_kernels: bool = False,
    threads: int = 1,
    latency_runs: int = 50,
    timeout: float = 1800.0,
    progress: bool | None = None,
) -> dict[str, DeviceRun]:
    """Run the package's models ``roles`` (``float``, ``int8``, ``tflite``) on ``device`` over ``inputs``.

    ``package`` is an :class:`edgeq.packaging.base.Package`; ``inputs`` maps each ONNX input name to N
    samples (N × input shape). The ``tflite`` model runs with ``runtime`` (``litert`` or ``tflite-runtime``;
    ``reference_kernels``: TFLite's builtin kernels instead of XNNPACK); its inputs and outputs are
    translated to and from the ONNX names and layouts with the metadata edgeq's writer stored in it.
    Every model runs in its own runner process with ``threads`` threads; its SHA-256 on the device is
    checked against the local file. The device folder used is removed before returning, also on failure.
    """
    from edgeq.packaging.base import sha256_file
    from edgeq.progress import track

    models = {role: package.model(role) for role in roles}
    tflite_io = _TfliteIO.read(models["tflite"]) if "tflite" in models else None
    runs: dict[str, DeviceRun] = {}
    remote = device.path(f"validate-{secrets.token_hex(4)}")
    with tempfile.TemporaryDirectory(prefix="edgeq-validate-") as tmp:
        local = Path(tmp)
        input_files = {"onnx": _write_inputs(local, inputs)}
        if tflite_io is not None:
            (local / "tflite").mkdir()
            input_files["tflite"] = _write_inputs(local / "tflite", tflite_io.to_tflite(inputs))
        try:
            device.mkdir(remote)
            steps = ["push", *roles]
            for step in track(
                steps, description=f"validating on {device.name}", total=len(steps), show=progress
            ):
                if step == "push":
                    runner = device.push(package.path / RUNNER_FILE, f"{remote}/{RUNNER_FILE}")
                    remote_inputs = {
                        kind: device.push(f, f"{remote}/{kind}-{f.name}") for kind, f in input_files.items()
                    }
                    remote_models = {r: device.push(m, f"{remote}/{m.name}") for r, m in models.items()}
                    continue
                role = step
                is_tflite = role == "tflite"
                out, stats = f"{remote}/{role}.npz", f"{remote}/{role}.json"
                argv = [
                    *device.python,
                    runner,
                    "--model",
                    remote_models[role],
                    "--inputs",
                    remote_inputs["tflite" if is_tflite else "onnx"],
                    "--output",
                    out,
                    "--stats",
                    stats,
                    "--threads",
                    str(threads),
                    "--latency-runs",
                    str(latency_runs),
                    "--runtime",
                    str(DeviceRuntime(runtime)) if is_tflite else "onnxruntime",
                    "--exit-with-parent",
                    "--deadline",
                    f"{timeout:g}",
                ]
                if is_tflite and reference_kernels:
                    argv.append("--reference-kernels")
                result = device.run(argv, timeout=timeout + 30)
                if result.returncode != 0:
                    raise _runner_failure(device, role, result)
                outputs = _load_outputs(device.pull(out, local / f"{role}.npz"), device=device.name)
                stats_data = json.loads(
                    device.pull(stats, local / f"{role}.json").read_text(encoding="utf-8")
                )
                if stats_data.get("model", {}).get("sha256") != sha256_file(models[role]):
                    raise DeviceError(
                        f"{device.name}: the {role} model on the device differs from {models[role]} "
                        "(SHA-256); the copy was damaged: run again"
                    )
                if is_tflite:
                    outputs = tflite_io.from_tflite(outputs)
                runs[role] = DeviceRun(role=role, outputs=outputs, stats=stats_data)
        finally:
            try:
                device.remove(remote)
            except EdgeqError as e:
                warnings.warn(f"{device.name}: could not remove {remote}: {e}", stacklevel=2)
    return runs


def _latency(stats: Mapping[str, Any], threads: int):
    from edgeq.validate import Latency

    lat = stats.get("latency")
    if not lat:
        return None
    return Latency(median_ms=lat["median_ms"], p90_ms=lat["p90_ms"], runs=lat["runs"], threads=threads)


def _cpu(stats: Mapping[str, Any]) -> str:
    cpu = stats.get("cpu", {})
    parts = [cpu.get("board"), cpu.get("core") or cpu.get("model")]
    features = cpu.get("features")
    if features:
        parts.append("features: " + " ".join(features))
    return "; ".join(p for p in parts if p) or stats.get("machine", "")


def validate_on_device(
    package_dir: str | os.PathLike[str],
    *,
    device: str | Device,
    data: Any,
    labels: Any = None,
    thresholds: Any = None,
    num_samples: int | None = None,
    target: Target | str | None = None,
    progress: bool | None = None,
    preprocess: Preprocess | None = None,
    threads: int | None = None,
    latency_runs: int = 50,
    timeout: float = 1800.0,
    outputs_dir: str | os.PathLike[str] | None = None,
    device_options: Mapping[str, Any] | None = None,
    runtime: DeviceRuntime | str = DeviceRuntime.ONNXRUNTIME,
    reference_kernels: bool = False,
):
    """Validate a package (from ``edgeq package`` with a float model) on ``device``; returns a Report.

    ``device``: an open :class:`Device` (left open) or a spec for :func:`edgeq.devices.open_device` (opened
    with ``device_options`` and closed here). ``data``: anything ``edgeq.data.open_samples`` reads, for the
    package's float model; ``num_samples`` takes the first samples (and labels). ``threads``: default the
    target's ``runtime.threads`` (1 on an emulated device). ``outputs_dir``: also keep both models' raw
    device outputs and stats there (float.npz, int8.npz, float.json, int8.json). The report carries the
    device's latency medians and peak RSS per model; on an emulated device a note says the timings are the
    emulator's. ``runtime``: what runs the int8 model, ``onnxruntime`` (model.int8.onnx) or ``litert`` /
    ``tflite-runtime`` (the package's model.tflite, with TFLite's builtin kernels when
    ``reference_kernels``); the float model always runs in onnxruntime.
    """
    from edgeq.packaging.base import Package
    from edgeq.validate import Environment, ModelStats, Report, Thresholds, compare
    from edgeq.validate.compare import as_labels
    from edgeq.validate.layers import dq_step

    try:
        runtime = DeviceRuntime(runtime)
    except ValueError:
        choices = ", ".join(r.value for r in DeviceRuntime)
        raise ConfigError(f"runtime '{runtime}': expected one of {choices}") from None
    quant_role = "int8" if runtime is DeviceRuntime.ONNXRUNTIME else "tflite"
    package = Package.load(package_dir)
    float_path, int8_path = package.model("float"), package.model(quant_role)
    if target is not None:
        target = load_target(target)
    else:
        with contextlib.suppress(EdgeqError):
            target = load_target(package.target)
    emulated = getattr(device, "emulated", False) or (isinstance(device, str) and device.startswith("qemu-"))
    if threads is None and emulated:
        threads = 1  # int8 results do not depend on it, emulated timings mean nothing, host cores are few
    elif threads is None:
        threads = target.runtime.threads if target is not None else int(package.manifest.get("threads", 1))
    if num_samples is not None and num_samples < 1:
        raise DataError(f"num_samples={num_samples}: expected 1 or more, or None for all samples")
    if outputs_dir is not None:
        from edgeq.fileio import check_output

        check_output(outputs_dir, force=False)  # before the device work, not after it
    inputs, count = _stack_inputs(data, float_path, preprocess=preprocess, limit=num_samples)
    lab = as_labels(labels)
    if lab is not None and num_samples is not None:
        lab = lab[:count]  # the labels belong to the whole data source; a limit takes its head

    owned = not isinstance(device, Device)
    dev = device
    if owned:
        from edgeq.devices import open_device

        dev = open_device(device, **dict(device_options or {}))
    try:
        runs = run_on_device(
            package,
            device=dev,
            inputs=inputs,
            roles=("float", quant_role),
            runtime=runtime,
            reference_kernels=reference_kernels,
            threads=threads,
            latency_runs=latency_runs,
            timeout=timeout,
            progress=progress,
        )
    finally:
        if owned:
            dev.close()
    f_run, q_run = runs["float"], runs[quant_role]
    if outputs_dir is not None:
        _save_runs(outputs_dir, runs)
    qm = onnxutil.load_model(package.model("int8"))
    shapes = {o["name"]: o["shape"] for o in f_run.stats.get("outputs", [])}
    steps = {name: s for name in q_run.outputs if (s := dq_step(qm, name)) is not None}
    metrics = compare(f_run.outputs, q_run.outputs, labels=lab, shapes=shapes, steps=steps)
    notes = [
        f"ran on {dev.name}: {count} samples, {threads} thread(s), batch 1, {latency_runs} timed runs; "
        f"int8 model {int8_path.name} in {runtime}"
        + (" (builtin reference kernels)" if reference_kernels else "")
    ]
    if dev.emulated:
        notes.append(
            "emulated device: outputs are the device CPU's, but latency and memory are the "
            "emulator's and say nothing about real hardware"
        )
    ran = q_run.stats.get("runtime", {})
    environment = Environment(
        device=dev.name,
        runtime=f"{ran.get('name', '?')} {ran.get('version', '?')}",
        machine=q_run.stats.get("machine", ""),
        cpu=_cpu(q_run.stats),
        emulated=dev.emulated,
    )

    def stats(run: DeviceRun, path: Path):
        return ModelStats(
            path=path.name,
            size_bytes=path.stat().st_size,
            latency=_latency(run.stats, threads),
            peak_rss_bytes=run.stats.get("peak_rss_bytes"),
        )

    return Report(
        outputs=metrics,
        float_model=stats(f_run, float_path),
        quant_model=stats(q_run, int8_path),
        environment=environment,
        thresholds=thresholds if thresholds is not None else Thresholds(),
        notes=tuple(notes),
    )


def _save_runs(folder: str | os.PathLike[str], runs: Mapping[str, DeviceRun]) -> Path:
    from edgeq import fileio
    from edgeq.devices.runner import save_npz

    with fileio.output_dir(folder) as tmp:
        for role, run in runs.items():
            save_npz(str(tmp / f"{role}.npz"), run.outputs)
            fileio.write_text(tmp / f"{role}.json", json.dumps(run.stats, indent=2, sort_keys=True) + "\n")
    return Path(folder)


__all__ = ["DeviceRun", "DeviceRuntime", "run_on_device", "validate_on_device"]
