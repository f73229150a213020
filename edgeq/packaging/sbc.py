"""Packaging for a single-board computer (Raspberry Pi): the models, a standalone runner, what to install.

The folder holds everything needed on the board and nothing that needs edgeq there:

- ``model.int8.onnx``: the QDQ model, run by onnxruntime (XNNPACK-class int8 kernels on ARM);
- ``model.float.onnx``: the float model, so float and int8 can be compared on the board itself;
- ``model.tflite``: the same int8 model for LiteRT, when edgeq's TFLite writer can express it;
- ``runner.py``: runs a model on N inputs, writes outputs and timing/memory stats (numpy + runtime only);
- ``requirements.txt``, ``README.md`` (copy, install, run), ``metadata.json`` (inputs, outputs, quantization).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper

from edgeq import fileio, onnxutil
from edgeq.config import Target
from edgeq.errors import EdgeqError, ModelError

RUNNER = Path(__file__).resolve().parent.parent / "devices" / "runner.py"
INT8, FLOAT, TFLITE = "model.int8.onnx", "model.float.onnx", "model.tflite"
_QUANT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
}


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _specs(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    def one(s: onnxutil.TensorSpec) -> dict[str, Any]:
        return {"name": s.name, "shape": list(s.shape), "dtype": str(s.dtype)}

    return {
        "inputs": [one(s) for s in onnxutil.input_specs(model)],
        "outputs": [one(s) for s in onnxutil.output_specs(model)],
    }


def _io_quantization(model: onnx.ModelProto) -> dict[str, dict[str, Any]]:
    """Scale and zero point with which the int8 model quantizes each input and dequantizes each output."""
    inits = {t.name: t for t in model.graph.initializer}
    consts = {
        n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute
    }

    def value(name: str) -> Any:
        t = inits.get(name) or consts.get(name)
        if t is None:
            return None
        array = numpy_helper.to_array(t)
        return array.tolist() if array.ndim else array.item()

    found: dict[str, dict[str, Any]] = {}
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in inputs:
            name, role = node.input[0], "input"
        elif node.op_type == "DequantizeLinear" and node.output[0] in outputs:
            name, role = node.output[0], "output"
        else:
            continue
        zero = value(node.input[2]) if len(node.input) > 2 and node.input[2] else 0
        dtype = "uint8"
        if len(node.input) > 2 and node.input[2]:
            t = inits.get(node.input[2]) or consts.get(node.input[2])
            if t is not None:
                dtype = str(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        found[name] = {"role": role, "scale": value(node.input[1]), "zero_point": zero, "dtype": dtype}
    return found


def _check_pair(
    qdq: onnx.ModelProto, qdq_path: Path, float_model: onnx.ModelProto | None, float_path
) -> None:
    if not any(n.op_type in _QUANT_OPS for n in qdq.graph.node):
        raise ModelError(
            f"{qdq_path}: has no QuantizeLinear/DequantizeLinear nodes, so it is not an int8 model; "
            "quantize it first with `edgeq quantize`"
        )
    if float_model is None:
        return
    q_inputs = {s.name: s for s in onnxutil.input_specs(qdq)}
    for s in onnxutil.input_specs(float_model):
        q = q_inputs.get(s.name)
        if q is None:
            raise ModelError(
                f"{float_path}: input '{s.name}' is not an input of the int8 model {qdq_path} (it has "
                f"{', '.join(q_inputs) or 'none'}); package the float model the int8 one was made from"
            )
        if q.shape != s.shape:
            raise ModelError(
                f"{float_path}: input '{s.name}' has shape {s.shape} but {q.shape} in the int8 model; "
                "package the float model the int8 one was made from"
            )
    if len(q_inputs) != len(onnxutil.input_specs(float_model)):
        raise ModelError(f"{qdq_path} and {float_path} have different numbers of inputs")


def _tflite(qdq: onnx.ModelProto) -> tuple[bytes | None, str | None]:
    """The .tflite bytes from edgeq's writer, or None and why not (absent writer, inexpressible op)."""
    try:
        from edgeq.backends.tflite import write_tflite
        from edgeq.lower import lower
    except ImportError as e:
        return None, f"the .tflite writer is not available ({e})"
    try:
        return write_tflite(lower(qdq)), None
    except EdgeqError as e:
        return None, str(e)


def _requirements(with_tflite: bool) -> str:
    ort = _version("onnxruntime")
    lines = [
        "# pip install -r requirements.txt   (in a virtual environment: Raspberry Pi OS Bookworm refuses",
        "# system-wide pip installs). onnxruntime is pinned to the version edgeq validated the model with.",
        "numpy>=1.24",
        f"onnxruntime=={ort}" if ort else "onnxruntime>=1.18",
    ]
    if with_tflite:
        lines += [
            "# For model.tflite (runner.py --runtime litert) also install one of:",
            "#   ai-edge-litert>=1.2             (LiteRT; works with numpy 2)",
            "#   tflite-runtime==2.14.0          (the last release; needs numpy<2; --runtime tflite-runtime)",
        ]
    return "\n".join(lines) + "\n"


def _readme(
    target: Target, *, has_float: bool, has_tflite: bool, tflite_note: str | None, threads: int
) -> str:
    rows = [f"| `{INT8}` | the int8 (QDQ) model for ONNX Runtime |"]
    if has_float:
        rows.append(f"| `{FLOAT}` | the float model, to compare float and int8 on the board |")
    if has_tflite:
        rows.append(f"| `{TFLITE}` | the same int8 model for LiteRT |")
    rows += [
        "| `runner.py` | runs a model on N inputs: outputs (.npz), latency and peak memory (.json) |",
        "| `requirements.txt` | what to pip install on the board |",
        "| `metadata.json` | inputs, outputs, quantization parameters |",
        "| `package.json` | the file list with sizes and SHA-256 sums |",
    ]
    run = [
        f"python3 runner.py --model {INT8} --inputs inputs.npy --output int8.npz --stats int8.json "
        f"--threads {threads}"
    ]
    if has_float:
        run.append(
            f"python3 runner.py --model {FLOAT} --inputs inputs.npy --output float.npz --stats float.json "
            f"--threads {threads}"
        )
    if has_tflite:
        litert = (
            "LiteRT instead of ONNX Runtime (`pip install ai-edge-litert`):\n\n```sh\n"
            f"python3 runner.py --model {TFLITE} --runtime litert --inputs inputs.npy --output litert.npz "
            f"--threads {threads}\n```\n\nAdd `--reference-kernels` for TFLite's builtin kernels instead of "
            "the default XNNPACK delegate, which can differ from them by a few LSB. model.tflite takes its "
            "inputs channels-last (NHWC): if the ONNX model's input is NCHW, transpose each sample first "
            '(`validate_on_device(..., runtime="litert")` does that for you).\n'
        )
    else:
        litert = f"There is no model.tflite: {tflite_note}.\n" if tflite_note else ""
    table = "\n".join(rows)
    commands = "\n".join(run)
    return f"""# {target.name}: int8 model package

{target.description}. Made by edgeq; nothing here needs edgeq on the board.

| file | what |
|---|---|
{table}

## 1. Copy it to the board

```sh
scp -r PACKAGE_DIR pi@raspberrypi.local:
```

## 2. Install, once, on the board

Raspberry Pi OS Bookworm refuses system-wide pip installs, so use a virtual environment:

```sh
python3 -m venv ~/edgeq-venv && . ~/edgeq-venv/bin/activate
pip install -r requirements.txt
```

## 3. Run

`inputs.npy` holds N float32 samples stacked on a new first axis, each shaped like the model's input
(see metadata.json); a `.npz` keyed by input name works for several inputs.

```sh
{commands}
```

{litert}
## Validate from your computer

edgeq copies the runner, both models and the inputs over SSH, runs float and int8 on the board and compares
them on your computer (accuracy, agreement, SQNR, on-board latency and peak memory):

```sh
edgeq validate PACKAGE_DIR --device ssh://pi@raspberrypi.local --data test.npz --labels labels.npy -o report/
```
"""


def package_sbc(
    qdq_model_path: str | os.PathLike[str],
    *,
    target: Target,
    output_dir: str | os.PathLike[str],
    float_model: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write a Raspberry Pi package into ``output_dir`` (a temporary folder the caller renames).

    Returns the manifest entries for package.json (``kind``, ``models``, ``runner`` …); the caller adds the
    file list with :func:`edgeq.packaging.base.write_manifest`.
    """
    out = Path(output_dir)
    qdq_path = Path(qdq_model_path)
    qdq = onnxutil.load_model(qdq_path)
    float_proto = onnxutil.load_model(float_model) if float_model is not None else None
    _check_pair(qdq, qdq_path, float_proto, float_model)
    threads = target.runtime.threads

    # Re-serialised deterministically (and self-contained if the source used external data).
    onnxutil.save_model(qdq, out / INT8, force=True)
    models: dict[str, Any] = {
        "int8": {"file": INT8, "format": "onnx", "runtime": "onnxruntime", **_specs(qdq)},
    }
    if float_proto is not None:
        onnxutil.save_model(float_proto, out / FLOAT, force=True)
        models["float"] = {"file": FLOAT, "format": "onnx", "runtime": "onnxruntime", **_specs(float_proto)}
    tflite, tflite_note = _tflite(qdq)
    if tflite is not None:
        fileio.write_bytes(out / TFLITE, tflite, force=True)
        models["tflite"] = {"file": TFLITE, "format": "tflite", "runtime": "litert"}
    fileio.write_bytes(out / "runner.py", RUNNER.read_bytes(), force=True)
    os.chmod(out / "runner.py", 0o755)
    fileio.write_text(out / "requirements.txt", _requirements(tflite is not None), force=True)
    fileio.write_text(
        out / "README.md",
        _readme(
            target,
            has_float=float_proto is not None,
            has_tflite=tflite is not None,
            tflite_note=tflite_note,
            threads=threads,
        ),
        force=True,
    )
    metadata = {
        "target": target.name,
        "hardware": {
            "cpu": target.hardware.cpu,
            "arch": target.hardware.arch,
            "cores": target.hardware.cores,
            "ram_mb": target.hardware.ram_mb,
        },
        "threads": threads,
        "quantization": {
            "activations": str(target.quantization.activations),
            "per_channel": target.quantization.per_channel,
            "io": _io_quantization(qdq),
        },
        **_specs(qdq),
        "model_metadata": {
            p.key: p.value for p in qdq.metadata_props if not p.key.startswith("edgeq.tensor_map")
        },
        "runner": f"python3 runner.py --model {INT8} --inputs inputs.npy --output int8.npz "
        f"--threads {threads}",
    }
    fileio.write_text(
        out / "metadata.json", json.dumps(metadata, indent=2, sort_keys=True) + "\n", force=True
    )
    manifest: dict[str, Any] = {
        "kind": "sbc",
        "models": models,
        "runner": "runner.py",
        "requirements": "requirements.txt",
        "metadata": "metadata.json",
        "threads": threads,
        "host_versions": {"onnxruntime": _version("onnxruntime"), "numpy": _version("numpy")},
    }
    if tflite_note:
        manifest["notes"] = [f"no model.tflite: {tflite_note}"]
    emulator = target.emulator
    if emulator is not None and emulator.cpu:
        manifest["emulator"] = f"qemu-aarch64:{emulator.cpu}"
    return manifest


__all__ = ["package_sbc"]
