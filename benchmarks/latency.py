"""Float vs int8 latency in onnxruntime (1 thread, batch 1): edgeq's int8 model beside onnxruntime's own.

For the digits example (and, with --shared, the two benchmark models in ../shared/models), the float
model, edgeq's int8 model (export → calibrate → quantize for cpu-x86) and onnxruntime's ``quantize_static``
model (QDQ, per-channel int8 weights, uint8 activations, MinMax on the same samples) are timed alternately
run by run, in rounds; the table gives the median over rounds of each round's median, and the speed-ups.

    python benchmarks/latency.py
    python benchmarks/latency.py --shared --rounds 15
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import edgeq
from edgeq import onnxutil
from edgeq.validate.latency import time_pair

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "digits"
SHARED = HERE.parent.parent / "shared" / "models"


def ort_int8(float_path: Path, calibration: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnxutil.input_specs(onnxutil.load_model(float_path))[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {name: row[None]}

    quantize_static(
        str(float_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def models() -> list[tuple[str, Path, np.ndarray, np.ndarray]]:
    with np.load(EXAMPLE / "calibration.npz") as c, np.load(EXAMPLE / "test.npz") as t:
        return [("examples/digits", EXAMPLE / "digits_cnn.onnx", c["input"][:500], t["input"][:20])]


def shared_models() -> list[tuple[str, Path, np.ndarray, np.ndarray]]:
    import sys

    sys.path.insert(0, str(HERE))
    from calibration import MODELS, calibration_data

    rows = []
    for key, (file, test, _) in MODELS.items():
        rows.append(
            (f"shared/{file}", SHARED / file, calibration_data(key, 500), np.load(SHARED / test)[:20])
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", action="store_true", help="also the two models in ../shared/models")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model per round")
    args = parser.parse_args()
    rows = models() + (shared_models() if args.shared else [])
    print(f"{'model':<40} {'float ms':>9} {'edgeq ms':>9} {'ORT ms':>9} {'edgeq ×':>8} {'ORT ×':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, calib, test in rows:
            float_model = edgeq.export(path)
            fp = onnxutil.save_model(float_model, Path(tmp) / "float.onnx", force=True)
            table = edgeq.calibrate(float_model, calib, method="minmax", progress=False)
            ep = edgeq.quantize(float_model, table, target="cpu-x86").save(
                Path(tmp) / "edgeq.onnx", force=True
            )
            op = ort_int8(fp, calib, Path(tmp) / "ort.onnx")
            name = onnxutil.input_specs(float_model)[0].name
            f_s, e_s, o_s = (onnxutil.ort_session(p) for p in (fp, ep, op))
            f_ms, e_ms, o_ms = [], [], []
            for i in range(args.rounds):
                feed = {name: test[i % len(test)][None]}
                a, b = time_pair((f_s, e_s), feed, runs=args.runs)
                _, c = time_pair((f_s, o_s), feed, runs=args.runs)
                f_ms.append(a.median_ms)
                e_ms.append(b.median_ms)
                o_ms.append(c.median_ms)
            f, e, o = (float(np.median(x)) for x in (f_ms, e_ms, o_ms))
            print(f"{label:<40} {f:9.4f} {e:9.4f} {o:9.4f} {f / e:7.2f}× {f / o:7.2f}×", flush=True)
    print("× = float latency ÷ int8 latency (higher is faster); onnxruntime CPU, 1 thread, batch 1")


if __name__ == "__main__":
    main()
