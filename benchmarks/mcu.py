"""edgeq's own pipeline on emulated microcontrollers beside TensorFlow Lite Micro + CMSIS-NN, in one run.

For the two benchmark networks of ../shared/models (digits_float_nhwc.onnx, mbv2_32_float_nhwc.onnx), as a
user would: export the float model, calibrate it on the 1,437 training-split digits (the split of the
shared README; benchmarks/calibration.py's calibration_data), quantize for cortex-m4 (per-channel int8
weights, int8 activations, TFLite's parameter rules), lower to the integer program, emit C for each core,
build the firmware with the core's compiler and flags and run it in QEMU with edgeq's instruction-counting
plugin. Prints, per network:

- int8 top-1 accuracy on the 360 test images for each calibration method (minmax, percentile, mse,
  entropy; one calibration pass, ranges recomputed per method from the same histograms), computed with the
  reference interpreter, against the float model and the TFLite converter's 94.17 %;

and per network and core, for the default method (minmax: the best of the four on both networks, see
README.md; ``--method`` picks another):

- instructions per inference (QEMU TCG count between marker calls around edgeq_run; not cycles), and per
  kernel (op kind) from a profiling build (a marker after every op);
- arena bytes against the liveness lower bound, flash (weights + code, from the link map), stack;
- whether every output equals the reference interpreter (bit-exact), and the accuracy on the emulated core;
- TFLM's figures on the same emulated Cortex-M4 (README of shared/models): digits 947,207 instructions,
  8,308 B arena, 126,184 B flash (TFLM ≈ 101 KB of it); mbv2_32 197,056,295 instructions, 438,388 B arena
  (319,488 B planned activations), 2,009,376 B flash.

    python benchmarks/mcu.py                                   # both networks, M4 + M7 + M33
    python benchmarks/mcu.py --model digits --targets cortex-m4 --methods mse
    python benchmarks/mcu.py --model digits --portable         # also the portable kernels on each core
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgeq.backends.c import CModel
    from edgeq.devices.qemu_mcu import McuResult
    from edgeq.lower import Program

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
SHARED = HERE.parent.parent / "shared" / "models"

from calibration import calibration_data  # noqa: E402  (benchmarks/calibration.py: the shared split)

#: Network (file stem in shared/models) → calibration_data()'s name for it.
MODELS = {"digits": "digits", "mbv2_32": "mbv2"}
METHODS = ("minmax", "percentile", "mse", "entropy")
#: The best of METHODS on both networks: top-1 on the 360 test images, reference interpreter (README.md).
DEFAULT_METHOD = "minmax"
QUANT_TARGET = "cortex-m4"  # M7, M33 and M55 have the same quantization scheme: one int8 program for all
CALIBRATION_SAMPLES = 1437  # every training-split image, none of the test images
#: Test images on the cores after the first (which runs all 360): enough for counts and bit-exactness.
OTHER_CORE_SAMPLES = {"digits": 360, "mbv2_32": 20}

TFLM = {
    "digits": {"instructions": 947_207, "arena": 8_308, "flash": 126_184, "model_bytes": 8_792},
    "mbv2_32": {"instructions": 197_056_295, "arena": 438_388, "flash": 2_009_376, "model_bytes": 1_889_008},
}
TFLM_LIBRARY_BYTES = 101_000  # "≈ 101 KB" of TFLM's firmware is the TFLM library (shared/models/README.md)
TFLITE_ACCURACY = {"digits": 94.17, "mbv2_32": 94.17}  # TFLite converter int8, reference kernels
TFLITE_AGREEMENT = {"digits": 99.17, "mbv2_32": 100.0}  # its top-1 agreement with the float model


@dataclass(frozen=True)
class Quantized:
    """One network quantized with one calibration method, and its reference-interpreter results."""

    method: str
    program: Program
    q_inputs: np.ndarray  # (360, input bytes) int8
    outputs: np.ndarray  # (360, output bytes) int8: the reference interpreter's outputs
    accuracy: float  # top-1, %
    agreement: float  # top-1 agreement with the float model, %
    sqnr_db: float  # of the dequantized logits against the float model's, over all test images


def top1(logits: np.ndarray) -> np.ndarray:
    # int8 logits: argmax of the int8 values equals argmax of the dequantized ones (one positive scale).
    return np.argmax(logits.reshape(len(logits), -1), axis=1)


def float_logits(model, images: np.ndarray) -> np.ndarray:
    """The float model's (only) output for every image, (N, classes), by onnxruntime."""
    from edgeq.onnxutil import input_specs, ort_session

    sess = ort_session(model)
    name = input_specs(model)[0].name
    return np.stack([sess.run(None, {name: x[None]})[0].ravel() for x in images])


def reference_outputs(program: Program, q: np.ndarray) -> np.ndarray:
    """Every program output of every sample, concatenated in order (as the firmware writes them)."""
    from edgeq.lower import run

    inp = program.inputs[0]
    shape = program.tensors[inp].shape
    rows = []
    for x in q:
        out = run(program, {inp: x.reshape(shape)})
        rows.append(np.concatenate([out[name].ravel() for name in program.outputs]))
    return np.stack(rows)


def quantize_with(float_model, table, method: str, images, labels, float_out: np.ndarray) -> Quantized:
    from edgeq.lower import lower
    from edgeq.quantize import quantize

    result = quantize(float_model, table.with_method(method), target=QUANT_TARGET)
    program = lower(result.model)
    if len(program.inputs) != 1 or len(program.outputs) != 1:
        raise SystemExit(f"{method}: the benchmark expects one input and one output, got {program.inputs}")
    inp = program.inputs[0]
    q = np.stack([program.quantize_input(inp, x[None]).ravel() for x in images])
    out = reference_outputs(program, q)
    pred, float_pred = top1(out), top1(float_out)
    name, shape = program.outputs[0], program.tensors[program.outputs[0]].shape
    deq = np.stack([program.dequantize_output(name, o.reshape(shape)).ravel() for o in out])
    noise = float(np.sum((deq.astype(np.float64) - float_out) ** 2))
    return Quantized(
        method=method,
        program=program,
        q_inputs=q,
        outputs=out,
        accuracy=100.0 * float(np.mean(pred == labels)),
        agreement=100.0 * float(np.mean(pred == float_pred)),
        sqnr_db=10.0 * np.log10(float(np.sum(float_out.astype(np.float64) ** 2)) / max(noise, 1e-30)),
    )


def run_chunked(cm: CModel, q: np.ndarray, target: str) -> list[McuResult]:
    """Run ``q`` on the emulated core in as few firmware builds as its flash holds (inputs live in flash)."""
    from edgeq.backends.c.firmware import machine_for
    from edgeq.config import load_target
    from edgeq.devices.qemu_mcu import run_on_mcu

    flash = machine_for(load_target(target)).flash.length
    free = flash - cm.weight_bytes - 512 * 1024  # code, tables and the harness stay well under 512 KB
    per = max(1, free // cm.input_size)
    return [run_on_mcu(cm, q[i : i + per], target=target) for i in range(0, len(q), per)]


def bench_core(
    name: str, qz: Quantized, labels: np.ndarray, target: str, n: int, *, dsp: bool | None
) -> dict:
    from edgeq.backends.c import generate
    from edgeq.devices.qemu_mcu import run_on_mcu

    cm = generate(qz.program, target=target, dsp=dsp)
    t0 = time.perf_counter()
    runs = run_chunked(cm, qz.q_inputs[:n], target)
    wall = time.perf_counter() - t0
    outputs = np.concatenate([r.outputs for r in runs])
    instructions = [i for r in runs for i in r.instructions]
    prof = run_on_mcu(cm, qz.q_inputs[:1], target=target, profile=True)
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"ops": 0, "instructions": 0, "macs": 0})
    for op, count in zip(cm.profiled_ops, prof.op_instructions[0], strict=True):
        k = kinds[op.kind]
        k["ops"] += 1
        k["instructions"] += count
        k["macs"] += op.macs
    r, s = runs[0], runs[0].size
    return {
        "model": name,
        "target": target,
        "machine": r.machine,
        "kernels": "dsp" if cm.dsp else "portable",
        "method": qz.method,
        "samples": n,
        "bit_exact": bool(np.array_equal(outputs, qz.outputs[:n])),
        "mcu_accuracy": 100.0 * float(np.mean(top1(outputs) == labels[:n])),
        "reference_accuracy_same_samples": 100.0 * float(np.mean(top1(qz.outputs[:n]) == labels[:n])),
        "instructions_per_inference": int(np.median(instructions)),
        "instructions_min_max": [min(instructions), max(instructions)],
        "arena_bytes": cm.plan.arena_size,
        "arena_lower_bound_bytes": cm.plan.lower_bound,
        "activation_lower_bound_bytes": cm.activation_bound,
        "scratch_bytes": cm.scratch_bytes,
        "flash_model_bytes": s.model_code + s.model_rodata + s.library,
        "flash_code_bytes": s.model_code,
        "flash_constants_bytes": s.model_rodata,
        "flash_library_bytes": s.library,
        "flash_firmware_bytes": s.flash - s.test_inputs,  # harness included, test inputs not
        "stack_measured_bytes": r.stack_bytes,
        "stack_static_bytes": r.stack_static_bytes,
        "macs": sum(o.macs for o in cm.ops),
        "per_kernel": dict(sorted(kinds.items(), key=lambda kv: -kv[1]["instructions"])),
        "firmware_runs": len(runs),
        "qemu_seconds": round(sum(x.wall_seconds for x in runs), 2),
        "wall_seconds": round(wall, 2),
    }


def show_core(r: dict) -> None:
    t = TFLM.get(r["model"]) if r["target"] == "cortex-m4" else None
    print(
        f"\n{r['model']} on {r['target']} ({r['machine']}, {r['kernels']} kernels, {r['method']}), "
        f"{r['samples']} test images: bit-exact vs reference {'yes' if r['bit_exact'] else 'NO'}, "
        f"top-1 {r['mcu_accuracy']:.2f} % "
        f"(reference on the same images {r['reference_accuracy_same_samples']:.2f} %)"
    )
    ins = r["instructions_per_inference"]
    line = f"  instructions/inference {ins:>13,}  ({ins / max(r['macs'], 1):.2f} per MAC)"
    if t:
        line += f"   TFLM+CMSIS-NN {t['instructions']:,} (x{t['instructions'] / ins:.2f})"
    print(line)
    line = (
        f"  arena                  {r['arena_bytes']:>13,} B  "
        f"(liveness bound {r['arena_lower_bound_bytes']:,} B, "
        f"x{r['arena_bytes'] / max(r['arena_lower_bound_bytes'], 1):.3f}; activations alone "
        f"{r['activation_lower_bound_bytes']:,} B)"
    )
    if t:
        line += f"   TFLM arena {t['arena']:,} B"
    print(line)
    line = (
        f"  flash (model)          {r['flash_model_bytes']:>13,} B  "
        f"(code {r['flash_code_bytes']:,}, constants "
        f"{r['flash_constants_bytes']:,}, libc/libgcc {r['flash_library_bytes']:,}); "
        f"firmware {r['flash_firmware_bytes']:,} B"
    )
    if t:
        line += (
            f"   TFLM firmware {t['flash']:,} B (≈{TFLM_LIBRARY_BYTES // 1000} KB TFLM, "
            f"{t['model_bytes']:,} B .tflite)"
        )
    print(line)
    print(
        f"  stack                  {r['stack_measured_bytes']:>13,} B measured, "
        f"{r['stack_static_bytes']:,} B static worst case"
    )
    print("  per kernel (profiling build, one inference):")
    for kind, k in r["per_kernel"].items():
        per_mac = f"{k['instructions'] / k['macs']:.2f}/MAC" if k["macs"] else ""
        print(f"    {kind:<22} {k['ops']:>3} ops {k['instructions']:>13,} instr {per_mac:>10}")


def show_table(results: list[dict], sweeps: dict[str, dict]) -> None:
    head = (
        "| model | core | kernels | instructions / inference | TFLM+CMSIS-NN (M4) | TFLM ÷ edgeq | arena B "
        "| liveness bound B | TFLM arena B | model flash B (code + weights + libc) | firmware flash B "
        "| TFLM firmware B (≈101 KB TFLM + model) | int8 top-1, 360 (reference) | top-1 on the core (n) "
        "| bit-exact | TFLite int8 |"
    )
    print("\n" + head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for r in results:
        t = TFLM[r["model"]]
        ins = r["instructions_per_inference"]
        ref = sweeps[r["model"]]["methods"][r["method"]]["accuracy"]
        print(
            f"| {r['model']} | {r['target'].removeprefix('cortex-').upper()} | {r['kernels']} | {ins:,} "
            f"| {t['instructions']:,} | {t['instructions'] / ins:.2f}× | {r['arena_bytes']:,} "
            f"| {r['arena_lower_bound_bytes']:,} | {t['arena']:,} | {r['flash_model_bytes']:,} "
            f"| {r['flash_firmware_bytes']:,} | {t['flash']:,} | {ref:.2f} % ({r['method']}) "
            f"| {r['mcu_accuracy']:.2f} % ({r['samples']}) | {'yes' if r['bit_exact'] else 'NO'} "
            f"| {TFLITE_ACCURACY[r['model']]:.2f} % |"
        )


def tool_versions() -> dict[str, str]:
    """The first --version line of QEMU and the ARM compiler: the counts depend on both."""
    import platform
    import subprocess

    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    for tool in ("qemu-system-arm", "arm-none-eabi-gcc"):
        try:
            done = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
            out[tool] = (done.stdout.splitlines() or ["?"])[0]
        except OSError:
            out[tool] = "not installed"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=[*MODELS, "both"], default="both")
    ap.add_argument("--targets", nargs="+", default=["cortex-m4", "cortex-m7", "cortex-m33"])
    ap.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="calibration methods to compare"
    )
    ap.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="the method whose int8 model runs on the cores (default: %(default)s)",
    )
    ap.add_argument(
        "--samples",
        type=int,
        default=None,
        help="test images per core (default: all 360 on the first target; on the others all 360 for "
        "digits, 20 for mbv2_32)",
    )
    ap.add_argument("--portable", action="store_true", help="also run the portable kernels")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()

    # The stages by their modules: `from edgeq import export` would give the subpackage, not the function.
    from edgeq.calibrate import calibrate
    from edgeq.export import export

    versions = tool_versions()
    print("; ".join([*(f"{k}: {v}" for k, v in versions.items()), f"date: {time.strftime('%Y-%m-%d')}"]))
    methods = list(dict.fromkeys([*a.methods, a.method]))
    names = list(MODELS) if a.model == "both" else [a.model]
    labels = np.load(SHARED / "test_labels.npy", allow_pickle=False)
    results, sweeps = [], {}
    for name in names:
        t0 = time.perf_counter()
        float_model = export(SHARED / f"{name}_float_nhwc.onnx")
        images = np.load(SHARED / f"{name}_test_inputs.npy", allow_pickle=False)
        float_out = float_logits(float_model, images)
        float_acc = 100.0 * float(np.mean(top1(float_out) == labels))
        data = calibration_data(MODELS[name], CALIBRATION_SAMPLES)
        table = calibrate(float_model, data, num_samples=CALIBRATION_SAMPLES)
        t_cal = time.perf_counter() - t0
        print(
            f"\n{name}: float top-1 {float_acc:.2f} % (onnxruntime); export + calibration on "
            f"{table.num_samples} training images {t_cal:.1f} s. int8 ({QUANT_TARGET} scheme) on the "
            f"{len(images)} test images, reference interpreter (TFLite converter: "
            f"{TFLITE_ACCURACY[name]:.2f} %, {TFLITE_AGREEMENT[name]:.2f} % agreement):",
            flush=True,
        )
        quantized = {}
        for method in methods:
            t1 = time.perf_counter()
            qz = quantize_with(float_model, table, method, images, labels, float_out)
            quantized[method] = qz
            print(
                f"  {method:<10} top-1 {qz.accuracy:6.2f} %   agreement with float {qz.agreement:6.2f} %   "
                f"logit SQNR {qz.sqnr_db:5.1f} dB   ({time.perf_counter() - t1:.1f} s)",
                flush=True,
            )
        # Ties in accuracy (one image is 0.28 %) go to agreement with the float model, then to SQNR.
        best = max(
            a.methods, key=lambda m: (quantized[m].accuracy, quantized[m].agreement, quantized[m].sqnr_db)
        )
        print(f"  best of {', '.join(a.methods)}: {best}; on the cores: {a.method}", flush=True)
        sweeps[name] = {
            "float_accuracy": float_acc,
            "calibration_samples": table.num_samples,
            "best": best,
            "methods": {
                m: {"accuracy": q.accuracy, "agreement": q.agreement, "sqnr_db": q.sqnr_db}
                for m, q in quantized.items()
            },
        }
        for i, target in enumerate(a.targets):
            n = a.samples or (len(images) if i == 0 else OTHER_CORE_SAMPLES[name])
            for dsp in [None, False] if a.portable else [None]:
                r = bench_core(name, quantized[a.method], labels, target, min(n, len(images)), dsp=dsp)
                show_core(r)
                results.append(r)
    show_table(results, sweeps)
    if a.json:
        doc = {"date": time.strftime("%Y-%m-%d"), "tools": versions, "accuracy": sweeps, "cores": results}
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
