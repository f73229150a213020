"""Calibration beside the peer: edgeq vs onnxruntime.quantization.quantize_static, in one run.

For each method (MinMax, Percentile, Entropy) and sample count (100, 500, 1000, 2000), calibrate + quantize
the same float model on the same data with edgeq and with onnxruntime's quantize_static (QDQ, per-channel
int8 weights, uint8 activations: the cpu-x86 scheme), each in a fresh subprocess so that peak RSS
(ru_maxrss) is that run's alone, then evaluate the int8 model's top-1 accuracy on the held-out test images.
Prints wall time, peak RSS, accuracy and the edgeq/ORT ratios.

Data: scikit-learn's digits (bundled, offline), the same split as ../shared/models/README.md
(train_test_split(test_size=0.2, random_state=0, stratify=y)); calibration uses the 1,437 training images,
upsampled ×4 to 32×32×3 for the MobileNetV2-style model; beyond 1,437 samples the training images repeat
shifted by one pixel (deterministic), so 2,000 samples are still training-like and never test images.

ORT's histogram methods keep every sample's activations in memory; its worker runs under an address-space
limit (--ort-memory-limit-gb) so that running out of memory is reported as such instead of waking the OOM
killer on a shared machine.

    python benchmarks/calibration.py                      # mbv2_32, all methods, 100/500/1000/2000 samples
    python benchmarks/calibration.py --model digits --samples 100 500
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "models"
MODELS = {
    "mbv2": ("mbv2_32_float_nhwc.onnx", "mbv2_32_test_inputs.npy", 4),
    "digits": ("digits_float_nhwc.onnx", "digits_test_inputs.npy", 1),
}
METHODS = ("minmax", "percentile", "entropy")


def calibration_data(model: str, n: int) -> np.ndarray:
    """``n`` training-split digits as the model's input (N×H×W×C float32 in [0, 1])."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, _, _, _ = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    images = [x_train]
    shift = 1
    while sum(len(a) for a in images) < n:  # repeat shifted by a pixel: still training-like, never test data
        images.append(np.roll(x_train, shift, axis=2))
        shift = -shift if shift > 0 else -shift + 1
    x = np.concatenate(images)[:n]
    x = np.round(x / 16.0 * 255.0) / 255.0  # as the shared test inputs were stored
    scale = MODELS[model][2]
    if scale > 1:
        x = np.repeat(np.repeat(x, scale, axis=1), scale, axis=2)
        return np.repeat(x[..., None], 3, axis=-1).astype(np.float32)
    return x[..., None].astype(np.float32)


def accuracy(model_path: Path, model: str) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.load(SHARED / MODELS[model][1])
    labels = np.load(SHARED / "test_labels.npy")
    pred = [int(np.argmax(sess.run(None, {name: x[i : i + 1]})[0])) for i in range(len(x))]
    return 100.0 * float(np.mean(np.array(pred) == labels))


def worker_edgeq(model: str, method: str, n: int, out: Path) -> None:
    import edgeq
    from edgeq.config import CalibrationMethod, MethodConfig
    from edgeq.onnxutil import save_model

    data = calibration_data(model, n)
    model_path = SHARED / MODELS[model][0]
    t0 = time.perf_counter()
    # The pipeline as a user runs it: export (checks, folds the BatchNorm remnants the Keras→ONNX converter
    # leaves as Mul/Add) → calibrate → quantize.
    float_model = edgeq.export(model_path)
    table = edgeq.calibrate(
        float_model, data, method=MethodConfig(name=CalibrationMethod(method)), num_samples=n
    )
    t_cal = time.perf_counter() - t0
    result = edgeq.quantize(float_model, table, target="cpu-x86")
    save_model(result.model, out)
    return t_cal, time.perf_counter() - t0


def worker_ort(model: str, method: str, n: int, out: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    data = calibration_data(model, n)
    model_path = SHARED / MODELS[model][0]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            import onnx

            self.name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
            self.i = 0

        def get_next(self):
            if self.i >= len(data):
                return None
            self.i += 1
            return {self.name: data[self.i - 1 : self.i]}

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    t0 = time.perf_counter()
    quantize_static(
        str(model_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
    )
    t = time.perf_counter() - t0
    return t, t


def run_worker(args: argparse.Namespace) -> None:
    if args.worker == "ort" and args.memory_limit_gb:
        limit = int(args.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.int8.onnx"
        fn = worker_edgeq if args.worker == "edgeq" else worker_ort
        try:
            t_cal, t_total = fn(args.model, args.method, args.n, out)
        except MemoryError:
            print(json.dumps({"error": "out of memory"}))
            return
        acc = accuracy(out, args.model)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux → MiB
    print(json.dumps({"calibrate_s": t_cal, "total_s": t_total, "peak_rss_mib": rss, "top1": acc}))


def measure(tool: str, model: str, method: str, n: int, limit_gb: float) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        tool,
        "--model",
        model,
        "--method",
        method,
        "--n",
        str(n),
        "--memory-limit-gb",
        str(limit_gb),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        oom = (
            "MemoryError" in proc.stderr or "bad_alloc" in proc.stderr or "Failed to allocate" in proc.stderr
        )
        return {"error": "out of memory" if oom else f"failed: {tail[:120]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="mbv2")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--samples", nargs="+", type=int, default=[100, 500, 1000, 2000])
    parser.add_argument("--ort-memory-limit-gb", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=["edgeq", "ort"], help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit-gb", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    rows = []
    header = (
        f"{'method':<10} {'N':>5} | {'edgeq s':>8} {'MiB':>7} {'top1':>6} | {'ORT s':>8} {'MiB':>7} "
        f"{'top1':>6} | {'time ×':>7} {'RSS ×':>7}"
    )
    float_top1 = accuracy(SHARED / MODELS[args.model][0], args.model)
    print(f"model {MODELS[args.model][0]}; float top-1 {float_top1:.2f}%")
    print(header)
    print("-" * len(header))
    for method in args.methods:
        for n in args.samples:
            e = measure("edgeq", args.model, method, n, 0)
            o = measure("ort", args.model, method, n, args.ort_memory_limit_gb)
            rows.append({"method": method, "samples": n, "edgeq": e, "ort": o})

            def cells(r: dict) -> str:
                if "error" in r:
                    return f"{r['error']:>24}"
                return f"{r['total_s']:8.1f} {r['peak_rss_mib']:7.0f} {r['top1']:6.2f}"

            ratio = ""
            if "error" not in e and "error" not in o:
                ratio = f"{o['total_s'] / e['total_s']:6.1f}× {o['peak_rss_mib'] / e['peak_rss_mib']:6.1f}×"
            print(f"{method:<10} {n:>5} | {cells(e)} | {cells(o)} | {ratio}", flush=True)
    print(
        "time × and RSS ×: ORT / edgeq (higher is better for edgeq). Wall time is calibration + quantization "
        "for both (quantize_static does both in one call)."
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
