"""The Android package: the int8 model for LiteRT (.tflite) and for ONNX Runtime Mobile (.ort), with the
facts an app needs to feed it (shapes, types, quantization, preprocessing, labels) and a README with Gradle
and Kotlin.

``package_android`` fills a folder the caller created (``edgeq.package`` builds it under a temporary name and
renames it when complete); every file is written atomically and identical inputs give identical files, except
``model.ort`` (ONNX Runtime's own serializer, see :mod:`edgeq.backends.ort_mobile`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import fileio
from edgeq.config import Preprocess, Runtime, Target, load_target
from edgeq.config.strict import to_dict
from edgeq.errors import ConfigError, ModelError

TFLITE = "model.tflite"
ORT = "model.ort"
ORT_CONFIG = "required_operators.config"
USABILITY = "mobile_usability.json"
METADATA = "metadata.json"
README = "README.md"
FLOAT = "float.onnx"
INT8 = "model.int8.onnx"

# The LiteRT AAR matching the ai-edge-litert release edgeq is tested with, and ONNX Runtime's matching the
# onnxruntime that converts the .ort (an .ort file needs a runtime at least as new as its converter).
LITERT_AAR = "com.google.ai.edge.litert:litert"
ORT_AAR = "com.microsoft.onnxruntime:onnxruntime-android"


def _litert_version() -> str:
    try:
        from importlib.metadata import version

        v = version("ai-edge-litert")
    except Exception:  # not installed: the release this code was written against
        v = "2.3.0"
    return ".".join(v.split(".")[:3]) if v.count(".") >= 2 else f"{v}.0"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__.split("+")[0]


def _tensor_entry(program: Any, name: str, *, role: str) -> dict[str, Any]:
    t = program.tensors[name]
    b = program.binding(name)
    entry: dict[str, Any] = {
        "name": b.onnx_name if b is not None else name,
        "tflite_tensor": name,
        "shape": list(t.shape),
        "dtype": str(t.dtype.value),
        "layout": "NHWC" if len(t.shape) == 4 else None,
    }
    if t.qparams is not None:
        entry["quantization"] = {"scale": t.qparams.scale[0], "zero_point": t.qparams.zero_point[0]}
        entry["quantize" if role == "input" else "dequantize"] = (
            "q = clamp(round(x / scale) + zero_point, -128, 127)"
            if role == "input"
            else "x = scale * (q - zero_point)"
        )
    if b is not None:
        entry["onnx_shape"] = list(b.onnx_shape)
        entry["perm_from_onnx"] = list(b.perm)
    return entry


def _output_meaning(shape: Sequence[int], labels: Sequence[str] | None) -> str:
    if labels and shape and shape[-1] == len(labels):
        return (
            f"one score per label over the last axis ({len(labels)} labels, index i is labels[i]); the "
            "predicted label is the argmax"
        )
    return "the model's raw output"


def _ort_io(model_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from edgeq.onnxutil import input_specs, load_model, output_specs

    model = load_model(model_path)

    def entry(spec: Any) -> dict[str, Any]:
        return {"name": spec.name, "shape": list(spec.shape), "dtype": str(spec.dtype)}

    return [entry(s) for s in input_specs(model)], [entry(s) for s in output_specs(model)]


def package_android(
    qdq_model_path: str | os.PathLike[str],
    *,
    target: Target | str,
    output_dir: str | os.PathLike[str],
    float_model: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
) -> dict[str, Any]:
    """Write the Android package for the QDQ int8 model ``qdq_model_path`` into ``output_dir``: the manifest.

    Files: ``model.tflite`` (full-integer, int8 I/O, LiteRT), ``model.ort`` + ``required_operators.config``
    (ONNX Runtime Mobile, float I/O with QDQ inside), ``mobile_usability.json`` (NNAPI/XNNPACK coverage),
    ``metadata.json`` (inputs/outputs per runtime: names, shapes, dtypes, quantization; preprocessing, labels,
    what the outputs mean), ``README.md`` (Gradle dependencies, Kotlin for each runtime) and, when given, the
    float model as ``float.onnx`` for on-device float-vs-int8 validation.
    """
    from edgeq.backends.ort_mobile import TargetPlatform, check_mobile_usability, convert_to_ort
    from edgeq.backends.tflite import write_tflite
    from edgeq.lower import lower

    target = load_target(target)
    src = Path(qdq_model_path)
    out = Path(output_dir)
    if not src.is_file():
        raise ModelError(f"{src}: int8 model not found; run `edgeq quantize` first")
    if labels is not None:
        labels = [str(label) for label in labels]
        if len(set(labels)) != len(labels):
            raise ConfigError("labels: the label list has duplicates; give each class one distinct label")
    runtimes = [r for r in target.runtimes if r in (Runtime.LITERT, Runtime.ONNXRUNTIME)]
    if not runtimes:
        raise ConfigError(
            f"{target.source or target.name}: key 'runtimes' names neither 'litert' nor "
            "'onnxruntime'; an Android package needs at least one of them"
        )
    out.mkdir(parents=True, exist_ok=True)
    pre = to_dict(preprocess) if preprocess is not None else None
    runtime_info: dict[str, Any] = {}

    program = lower(src)
    inputs = [_tensor_entry(program, n, role="input") for n in program.inputs]
    outputs = [_tensor_entry(program, n, role="output") for n in program.outputs]
    for o in outputs:
        o["meaning"] = _output_meaning(o["shape"], labels)

    if Runtime.LITERT in runtimes:
        tflite_meta: dict[str, Any] = {}
        if pre is not None:
            tflite_meta["preprocess"] = pre
        if labels is not None:
            tflite_meta["labels"] = labels
        data = write_tflite(program, io_type="int8", metadata=tflite_meta)
        fileio.write_bytes(out / TFLITE, data, force=True)
        from edgeq.backends.tflite import describe

        summary = describe(data)
        runtime_info["litert"] = {
            "model": TFLITE,
            "aar": f"{LITERT_AAR}:{_litert_version()}",
            "signature": "serving_default",
            "operators": sorted({name for name, _ in summary.operator_codes}),
            "min_runtime_version": summary.metadata["min_runtime_version"].rstrip(b"\0").decode(),
            "inputs": inputs,
            "outputs": outputs,
        }

    if Runtime.ONNXRUNTIME in runtimes:
        platform = TargetPlatform.for_arch(target.hardware.arch)
        conversion = convert_to_ort(
            src, out, target_platform=platform, ort_name=ORT, config_name=ORT_CONFIG, force=True
        )
        usability = check_mobile_usability(src)
        fileio.write_text(
            out / USABILITY, json.dumps(usability.to_dict(), indent=2, sort_keys=True) + "\n", force=True
        )
        ort_inputs, ort_outputs = _ort_io(src)
        for o in ort_outputs:
            o["meaning"] = _output_meaning(o["shape"], labels)
        runtime_info["onnxruntime"] = {
            "model": ORT,
            "aar": f"{ORT_AAR}:{_ort_version()}",
            "optimization_style": str(conversion.optimization_style),
            "target_platform": str(conversion.target_platform),
            "required_operators": ORT_CONFIG,
            "execution_providers": {
                p.provider: {
                    "coverage": round(p.coverage, 4),
                    "partitions": p.partitions,
                    "suitability": p.suitability,
                }
                for p in usability.providers
            },
            "inputs": ort_inputs,
            "outputs": ort_outputs,
        }

    if float_model is not None:
        fm = Path(float_model)
        if not fm.is_file():
            raise ModelError(f"{fm}: float model not found")
        fileio.write_bytes(out / FLOAT, fm.read_bytes(), force=True)
        # The QDQ model too: validation lowers it and checks the .tflite bit for bit against edgeq's
        # reference interpreter (not needed by an app).
        fileio.write_bytes(out / INT8, Path(src).read_bytes(), force=True)

    metadata = {
        "format": "edgeq.android",
        "target": target.name,
        "source_model": src.name,
        "preprocess": pre,
        "labels": labels,
        "runtimes": runtime_info,
    }
    fileio.write_text(out / METADATA, json.dumps(metadata, indent=2, sort_keys=True) + "\n", force=True)
    fileio.write_text(out / README, _readme(target, runtime_info, labels, pre), force=True)

    models: dict[str, Any] = {}
    if "litert" in runtime_info:
        models["tflite"] = {
            "file": TFLITE,
            "format": "tflite",
            "runtime": "litert",
            "io": "int8",
            "inputs": inputs,
            "outputs": outputs,
        }
    if "onnxruntime" in runtime_info:
        info = runtime_info["onnxruntime"]
        models["ort"] = {
            "file": ORT,
            "format": "ort",
            "runtime": "onnxruntime",
            "io": "float32",
            "inputs": info["inputs"],
            "outputs": info["outputs"],
        }
    if float_model is not None:
        models["float"] = {"file": FLOAT, "format": "onnx", "runtime": "onnxruntime"}
        models["int8"] = {"file": INT8, "format": "onnx", "runtime": "onnxruntime"}
    manifest: dict[str, Any] = {
        "kind": "android",
        "models": models,
        "metadata": METADATA,
        "readme": README,
    }
    if "onnxruntime" in runtime_info:
        manifest["required_operators"] = ORT_CONFIG
        manifest["mobile_usability"] = runtime_info["onnxruntime"]["execution_providers"]
    if "litert" in runtime_info:
        manifest["tflite"] = {k: runtime_info["litert"][k] for k in ("operators", "min_runtime_version")}
    return manifest


# ---- README ------------------------------------------------------------------------------------------------


def _f32(x: float) -> str:
    """The shortest decimal that reads back as the same float32 (what a Kotlin ``Float`` literal holds)."""
    return str(np.float32(x))


def _litert_snippet(info: dict[str, Any]) -> str:
    inp, outp = info["inputs"][0], info["outputs"][0]
    n_in = int(np.prod(inp["shape"]))
    qi, qo = inp["quantization"], outp["quantization"]
    layout = ""
    perm = inp.get("perm_from_onnx")
    if perm and list(perm) != sorted(perm) and inp["shape"][-1] > 1:
        layout = (
            f"\n// The model reads NHWC: transpose from the ONNX layout {inp['onnx_shape']} "
            f"with permutation {perm} first."
        )
    return f"""```kotlin
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import kotlin.math.round

// model.tflite in app/src/main/assets/
val model = CompiledModel.create(context.assets, "model.tflite", CompiledModel.Options(Accelerator.CPU))
val inputs = model.createInputBuffers()
val outputs = model.createOutputBuffers()

// input '{inp["name"]}': int8 {inp["layout"] or ""} {inp["shape"]} ({n_in} values, row-major).{layout}
// round() is half-to-even, as ONNX QuantizeLinear and edgeq's host-side validation round.
fun quantize(x: Float): Byte =
    (round(x / {_f32(qi["scale"])}f).toInt() + ({qi["zero_point"]})).coerceIn(-128, 127).toByte()
val pixels: FloatArray = preprocess(image)  // see metadata.json "preprocess"
inputs[0].writeInt8(ByteArray({n_in}) {{ quantize(pixels[it]) }})

model.run(inputs, outputs)

// output '{outp["name"]}': int8 {outp["shape"]}
val scores = outputs[0].readInt8().map {{ {_f32(qo["scale"])}f * (it - ({qo["zero_point"]})) }}
val best = scores.indices.maxBy {{ scores[it] }}
```"""


def _ort_snippet(info: dict[str, Any], threads: int) -> str:
    inp, outp = info["inputs"][0], info["outputs"][0]
    shape = ", ".join(f"{d}L" if d > 0 else "1L" for d in inp["shape"])
    return f"""```kotlin
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.nio.FloatBuffer

// model.ort in app/src/main/assets/
val env = OrtEnvironment.getEnvironment()
val options = OrtSession.SessionOptions().apply {{
    addXnnpack(mapOf("intra_op_num_threads" to "{threads}"))  // or addNnapi(); see mobile_usability.json
    setIntraOpNumThreads(1)  // XNNPACK has its own thread pool
}}
val session = env.createSession(context.assets.open("model.ort").readBytes(), options)

// input '{inp["name"]}': float32 {inp["shape"]}; the int8 quantization is inside the model
val pixels: FloatArray = preprocess(image)  // see metadata.json "preprocess"
OnnxTensor.createTensor(env, FloatBuffer.wrap(pixels), longArrayOf({shape})).use {{ input ->
    session.run(mapOf("{inp["name"]}" to input)).use {{ result ->
        // output '{outp["name"]}': float32 {outp["shape"]}, row-major
        val out = (result[0] as OnnxTensor).floatBuffer
        val scores = FloatArray(out.remaining()).also {{ out.get(it) }}
        val best = scores.indices.maxBy {{ scores[it] }}
    }}
}}
```"""


def _readme(
    target: Target, runtimes: dict[str, Any], labels: list[str] | None, pre: dict[str, Any] | None
) -> str:
    lines = [
        f"# {target.name}: int8 model for Android",
        "",
        f"{target.description}.",
        "",
        "| file | what it is |",
        "|---|---|",
    ]
    if "litert" in runtimes:
        lines.append(f"| `{TFLITE}` | full-integer TFLite model (int8 inputs and outputs) for LiteRT |")
    if "onnxruntime" in runtimes:
        lines += [
            f"| `{ORT}` | ONNX Runtime Mobile model (float inputs and outputs, int8 inside) |",
            f"| `{ORT_CONFIG}` | operators the model needs, for a reduced ONNX Runtime build "
            "(`--include_ops_by_config`) |",
            f"| `{USABILITY}` | how much of the model NNAPI and XNNPACK can run |",
        ]
    lines += [f"| `{METADATA}` | inputs, outputs, quantization, preprocessing, labels |", ""]
    lines += ["## Gradle", "", "```kotlin", "dependencies {"]
    if "litert" in runtimes:
        lines.append(f'    implementation("{runtimes["litert"]["aar"]}")')
    if "onnxruntime" in runtimes:
        lines.append(f'    implementation("{runtimes["onnxruntime"]["aar"]}")')
    lines += [
        "}",
        "```",
        "",
        "Keep the model uncompressed in the APK so it can be memory-mapped:",
        "",
        "```kotlin",
        'android { androidResources { noCompress += listOf("tflite", "ort") } }',
        "```",
        "",
    ]
    if pre is not None:
        lines += [
            "## Preprocessing",
            "",
            "Turn an image into the model input exactly as at calibration:",
            "",
            "```json",
            json.dumps(pre, indent=2, sort_keys=True),
            "```",
            "",
        ]
    if labels:
        shown = ", ".join(labels[:20]) + (" …" if len(labels) > 20 else "")
        lines += [
            "## Labels",
            "",
            f"{len(labels)} labels, in output order: {shown} (all in `{METADATA}`).",
            "",
        ]
    if "litert" in runtimes:
        lines += ["## LiteRT", "", _litert_snippet(runtimes["litert"]), ""]
    if "onnxruntime" in runtimes:
        snippet = _ort_snippet(runtimes["onnxruntime"], target.runtime.threads)
        lines += ["## ONNX Runtime Mobile", "", snippet, ""]
    return "\n".join(lines)
