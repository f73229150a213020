"""Generated C on emulated microcontrollers beside TensorFlow Lite Micro + CMSIS-NN, in one run.

For the two benchmark networks of ../shared/models (digits_float_nhwc.onnx, mbv2_32_float_nhwc.onnx): quantize
to QDQ int8 with onnxruntime (pre-processing folds the Mul/Add pairs into the convolutions, as TFLite's
converter does; per-channel int8 weights, int8 activations, 200 training images for calibration), lower to
the integer program, emit C for each target, build the firmware with the target's compiler and flags, and run
it in QEMU with edgeq's instruction-counting plugin. Prints, per network and core:

- instructions per inference (QEMU TCG count between marker calls around edgeq_run; not cycles), and
  per kernel (op kind) from a profiling build (a marker after every op);
- arena bytes against the liveness lower bound, flash (weights + code, from the link map), stack;
- whether every output equals the reference interpreter (bit-exact);
- TFLM's figures on the same emulated Cortex-M4 (README of shared/models): digits 947,207 instructions,
  8,308 B arena, 126,184 B flash (TFLM ≈ 101 KB of it); mbv2_32 197,056,295 instructions, 438,388 B arena
  (319,488 B planned activations), 2,009,376 B flash.

    python benchmarks/mcu.py                                  # both networks on cortex-m4
    python benchmarks/mcu.py --targets cortex-m4 cortex-m7 cortex-m33 cortex-m55 --samples 3
    python benchmarks/mcu.py --model digits --portable        # also the portable kernels on the same core
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
SHARED = HERE.parent.parent / "shared" / "models"

TFLM = {
    "digits": {"instructions": 947_207, "arena": 8_308, "flash": 126_184},
    "mbv2_32": {"instructions": 197_056_295, "arena": 438_388, "flash": 2_009_376},
}


def calibration_images(name: str, n: int) -> list[np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    train = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)[0][:n]
    if name == "mbv2_32":
        return [np.repeat(np.repeat(a, 4, 0), 4, 1)[..., None].repeat(3, -1) for a in train]
    return [a[..., None] for a in train]


def quantize(name: str, folder: Path, calibration: int) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = calibration_images(name, calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(images)

        def get_next(self):
            v = next(self.it, None)
            return None if v is None else {"input": v[None]}

    pre, out = folder / f"{name}_pre.onnx", folder / f"{name}_qdq.onnx"
    quant_pre_process(str(SHARED / f"{name}_float_nhwc.onnx"), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": False},
    )
    return out


def reference(program, q: np.ndarray) -> np.ndarray:
    from edgeq.lower import run

    inp, out = program.inputs[0], program.outputs[0]
    shape = program.tensors[inp].shape
    return np.stack([run(program, {inp: x.reshape(shape)})[out].ravel() for x in q])


def bench_one(name: str, program, q: np.ndarray, want: np.ndarray, target: str, *, dsp: bool | None) -> dict:
    from edgeq.backends.c import generate
    from edgeq.devices.qemu_mcu import run_on_mcu

    cm = generate(program, target=target, dsp=dsp)
    run = run_on_mcu(cm, q, target=target)
    prof = run_on_mcu(cm, q[:1], target=target, profile=True)
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"ops": 0, "instructions": 0, "macs": 0})
    for op, count in zip(cm.profiled_ops, prof.op_instructions[0], strict=True):
        k = kinds[op.kind]
        k["ops"] += 1
        k["instructions"] += count
        k["macs"] += op.macs
    s = run.size
    return {
        "model": name,
        "target": target,
        "machine": run.machine,
        "kernels": "dsp" if cm.dsp else "portable",
        "samples": len(q),
        "bit_exact": bool(np.array_equal(run.outputs, want)),
        "instructions_per_inference": run.instructions_per_inference,
        "instructions_min_max": [min(run.instructions), max(run.instructions)],
        "arena_bytes": cm.plan.arena_size,
        "arena_lower_bound_bytes": cm.plan.lower_bound,
        "activation_lower_bound_bytes": cm.activation_bound,
        "scratch_bytes": cm.scratch_bytes,
        "flash_model_bytes": s.model_code + s.model_rodata + s.library,
        "flash_code_bytes": s.model_code,
        "flash_constants_bytes": s.model_rodata,
        "flash_library_bytes": s.library,
        "stack_measured_bytes": run.stack_bytes,
        "stack_static_bytes": run.stack_static_bytes,
        "macs": sum(o.macs for o in cm.ops),
        "per_kernel": dict(sorted(kinds.items(), key=lambda kv: -kv[1]["instructions"])),
        "qemu_seconds": round(run.wall_seconds, 2),
    }


def show(r: dict) -> None:
    t = TFLM.get(r["model"]) if r["target"] == "cortex-m4" else None
    print(
        f"\n{r['model']} on {r['target']} ({r['machine']}, {r['kernels']} kernels), {r['samples']} samples, "
        f"bit-exact vs reference: {'yes' if r['bit_exact'] else 'NO'}"
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
        f"{r['flash_constants_bytes']:,}, libc/libgcc {r['flash_library_bytes']:,})"
    )
    if t:
        line += f"   TFLM firmware {t['flash']:,} B (≈101 KB of it TFLM)"
    print(line)
    print(
        f"  stack                  {r['stack_measured_bytes']:>13,} B measured, "
        f"{r['stack_static_bytes']:,} B static "
        f"worst case"
    )
    print("  per kernel (profiling build, one inference):")
    for kind, k in r["per_kernel"].items():
        per_mac = f"{k['instructions'] / k['macs']:.2f}/MAC" if k["macs"] else ""
        print(f"    {kind:<22} {k['ops']:>3} ops {k['instructions']:>13,} instr {per_mac:>10}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["digits", "mbv2_32", "both"], default="both")
    ap.add_argument("--targets", nargs="+", default=["cortex-m4"])
    ap.add_argument("--samples", type=int, default=None, help="test images per run (default 20 / 2)")
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--portable", action="store_true", help="also run the portable kernels")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    from edgeq.lower import lower

    names = ["digits", "mbv2_32"] if a.model == "both" else [a.model]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-mcu-") as tmp:
        for name in names:
            program = lower(quantize(name, Path(tmp), a.calibration))
            n = a.samples or (20 if name == "digits" else 2)
            images = np.load(SHARED / f"{name}_test_inputs.npy", allow_pickle=False)[:n]
            q = np.stack([program.quantize_input(program.inputs[0], x[None]).ravel() for x in images])
            want = reference(program, q)
            for target in a.targets:
                for dsp in [None, False] if a.portable else [None]:
                    r = bench_one(name, program, q, want, target, dsp=dsp)
                    show(r)
                    results.append(r)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
