"""Accuracy on hard models: edgeq's default and its --max-drop mode beside onnxruntime's quantize_static.

For each model (the digits example and the hard models of benchmarks/hard_models/), on its held-out test set:

- float top-1 accuracy (onnxruntime);
- onnxruntime.quantization.quantize_static, QDQ, MinMax, int8 weights, in the four configurations
  per-channel / per-tensor weights × uint8 / int8 activations, calibrated on the same samples as edgeq;
- edgeq plain: calibrate (``--method``) + quantize, no accuracy algorithms;
- edgeq default: the same with the accuracy algorithms (edgeq.accuracy.quantize_accurately: equalization,
  bias correction, float outputs; each kept only where it lowers the output noise on the calibration samples);
- edgeq --max-drop, on plain and on default edgeq: the search that keeps the fewest layers in float until
  top-1 agreement on the calibration samples drops by at most ``--max-drop`` points; and a check that no set
  of layers one smaller meets the target (all of them are tried, when there are at most 64);
- an ablation: each algorithm alone on top of plain edgeq.

Every quantized model is scored one sample at a time in onnxruntime (graph optimizations on: the fused int8
kernels). Searches and algorithm choices only ever see calibration samples; the test samples are only scored.

    python benchmarks/accuracy.py                       # all models, cpu-x86, entropy, --max-drop 0.5 2
    python benchmarks/accuracy.py --models spectro --target raspberry-pi-4 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "hard_models"))
sys.path.insert(0, str(ROOT))

from common import Dataset  # noqa: E402

MODELS = ("digits", "dw_ranges", "spectro", "attention")
ORT_CONFIGS = (("per-channel", "U8"), ("per-channel", "S8"), ("per-tensor", "U8"), ("per-tensor", "S8"))
MINIMALITY_LIMIT = 64  # subsets scored at most for the "no smaller set" check


def load(name: str) -> tuple[Path, Dataset]:
    """The model file and its data (calibration = training samples, test = held out, with labels)."""
    if name == "digits":
        folder = ROOT / "examples" / "digits"
        with np.load(folder / "calibration.npz") as c, np.load(folder / "test.npz") as t:
            return folder / "digits_cnn.onnx", Dataset(c["input"], t["input"], t["labels"])
    module = __import__(name)
    return HERE / "hard_models" / f"{name}.onnx", module.dataset()


def top1(model, x: np.ndarray) -> np.ndarray:
    from edgeq.onnxutil import ort_session

    session = ort_session(model)
    name = session.get_inputs()[0].name
    return np.array([int(np.argmax(session.run(None, {name: x[i : i + 1]})[0])) for i in range(len(x))])


def ort_quantize(path: Path, calibration: np.ndarray, *, per_channel: bool, activations: str):
    """onnxruntime's quantize_static (QDQ, MinMax, int8 weights) on the same calibration samples."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"input": calibration[i : i + 1]} for i in range(len(calibration)))

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.int8.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(path),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8 if activations == "U8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        return onnx.load(str(out))


def minimal(
    search, prepared, ranges, data: np.ndarray, *, target, max_drop: float, reference, float_outputs: bool
) -> str:
    """Whether any set of layers one smaller than the kept set also meets the target ('' if not checked)."""
    from edgeq.accuracy import Evaluator, Quantizer

    kept = list(search.kept)
    if not kept:
        return "0 needed"
    layers = list(search.ranking)
    subsets = list(itertools.combinations(layers, len(kept) - 1))
    if len(subsets) > MINIMALITY_LIMIT:
        return f"not checked ({len(subsets)} subsets)"
    evaluator = Evaluator(reference, data, num_samples=500)
    quantizer = Quantizer(prepared, ranges, target=target, float_outputs=float_outputs)
    for subset in subsets:
        result = quantizer.keeping(subset) if subset else quantizer.full
        if evaluator.score(result.model).drop <= max_drop:
            return f"NO: {list(subset)} also meets it"
    return f"yes ({len(subsets)} smaller sets miss)"


def run_model(name: str, *, target: str, method: str, max_drops: list[float]) -> dict:
    from edgeq.accuracy import DEFAULT_ALGORITHMS, NO_ALGORITHMS, Algorithms, quantize_accurately
    from edgeq.onnxutil import load_model

    path, data = load(name)
    model = load_model(path)
    y = data.labels
    started = time.perf_counter()
    float_pred = top1(model, data.test)
    row: dict = {
        "model": name,
        "float": 100 * float(np.mean(float_pred == y)),
        "test_samples": len(y),
        "calibration_samples": len(data.calibration),
    }

    def scored(m) -> dict:
        pred = top1(m, data.test)
        return {
            "accuracy": 100 * float(np.mean(pred == y)),
            "agreement": 100 * float(np.mean(pred == float_pred)),
        }

    row["ort"] = {}
    for weights, act in ORT_CONFIGS:
        q = ort_quantize(path, data.calibration, per_channel=weights == "per-channel", activations=act)
        row["ort"][f"{weights} {act}"] = scored(q)
    row["ort_best"] = max(row["ort"].values(), key=lambda s: s["accuracy"])["accuracy"]

    plain = quantize_accurately(
        model, data.calibration, target=target, method=method, algorithms=NO_ALGORITHMS
    )
    row["edgeq_plain"] = scored(plain.model)
    default = quantize_accurately(model, data.calibration, target=target, method=method)
    row["edgeq_default"] = scored(default.model)
    row["edgeq_default"]["decisions"] = [d.text() for d in default.decisions]
    row["edgeq_default"]["float_outputs"] = list(default.float_outputs)

    row["max_drop"] = []
    for mode, algorithms in (("plain", NO_ALGORITHMS), ("default", DEFAULT_ALGORITHMS)):
        for max_drop in max_drops:
            run = quantize_accurately(
                model,
                data.calibration,
                target=target,
                method=method,
                max_drop=max_drop,
                algorithms=algorithms,
            )
            search = run.search
            row["max_drop"].append(
                {
                    "mode": mode,
                    "max_drop": max_drop,
                    **scored(run.model),
                    "kept": list(search.kept),
                    "layers": len(search.ranking),
                    "calibration_drop": search.score.drop,
                    "calibration_full_drop": search.full.drop,
                    "candidates": len(search.steps),
                    "minimal": minimal(
                        search,
                        run.prepared,
                        run.table.ranges(),
                        data.calibration,
                        target=target,
                        max_drop=max_drop,
                        reference=model,
                        float_outputs=algorithms.float_outputs,
                    ),
                }
            )

    row["ablation"] = {}
    for label, algorithms in (
        ("equalization", Algorithms(equalization=True, bias_correction=False, float_outputs=False)),
        ("bias correction", Algorithms(equalization=False, bias_correction=True, float_outputs=False)),
        ("float outputs", Algorithms(equalization=False, bias_correction=False, float_outputs=True)),
        (
            "weight clipping",
            Algorithms(equalization=False, bias_correction=False, weight_clipping="mse", float_outputs=False),
        ),
    ):
        result = quantize_accurately(
            model, data.calibration, target=target, method=method, algorithms=algorithms
        )
        kept = all(d.kept for d in result.decisions) if result.decisions else label == "float outputs"
        row["ablation"][label] = {**scored(result.model), "kept": kept}
    row["seconds"] = time.perf_counter() - started
    return row


def table(rows: list[dict], *, target: str, method: str) -> str:
    lines = [
        f"top-1 accuracy on the test set, %  (edgeq: target {target}, calibration method {method}; "
        "ORT: quantize_static, QDQ, MinMax, pc/pt = per-channel/per-tensor weights)",
        "",
    ]
    head = [
        "model",
        "float",
        "ORT pc U8",
        "ORT pc S8",
        "ORT pt U8",
        "ORT pt S8",
        "edgeq plain",
        "edgeq default",
        "loss: edgeq default vs ORT best",
        "≤ half",
    ]
    body = []
    for r in rows:
        ort_loss = r["float"] - r["ort_best"]
        loss = r["float"] - r["edgeq_default"]["accuracy"]
        ok = "yes" if loss <= max(ort_loss, 0.0) / 2 + 1e-9 else "NO"
        body.append(
            [
                r["model"],
                f"{r['float']:.2f}",
                *(f"{r['ort'][f'{w} {a}']['accuracy']:.2f}" for w, a in ORT_CONFIGS),
                f"{r['edgeq_plain']['accuracy']:.2f}",
                f"{r['edgeq_default']['accuracy']:.2f}",
                f"{loss:.2f} vs {ort_loss:.2f}",
                ok,
            ]
        )
    lines += _grid(head, body)
    lines += [
        "",
        "--max-drop: top-1 agreement with float; the search scores on the calibration samples, the "
        "test set is scored afterwards",
        "",
    ]
    head2 = [
        "model",
        "mode",
        "max-drop",
        "all-int8 drop (calib.)",
        "achieved (calib.)",
        "test drop",
        "kept in float",
        "candidates",
        "no set one smaller meets it",
    ]
    body2 = []
    for r in rows:
        for md in r["max_drop"]:
            kept = f"{len(md['kept'])}/{md['layers']}" + (f": {', '.join(md['kept'])}" if md["kept"] else "")
            body2.append(
                [
                    r["model"],
                    md["mode"],
                    f"{md['max_drop']:g}",
                    f"{md['calibration_full_drop']:.2f}",
                    f"{md['calibration_drop']:.2f}",
                    f"{100 - md['agreement']:.2f}",
                    kept,
                    str(md["candidates"]),
                    md["minimal"],
                ]
            )
    lines += _grid(head2, body2)
    lines += [
        "",
        "ablation: each algorithm alone on top of edgeq plain, test accuracy % "
        "(* = not kept by its guard: the result is plain edgeq)",
        "",
    ]
    names = list(rows[0]["ablation"]) if rows else []
    head3 = ["model", "plain", *names]
    body3 = [
        [r["model"], f"{r['edgeq_plain']['accuracy']:.2f}"]
        + [f"{r['ablation'][n]['accuracy']:.2f}{'' if r['ablation'][n]['kept'] else '*'}" for n in names]
        for r in rows
    ]
    lines += _grid(head3, body3)
    return "\n".join(lines)


def _grid(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    out = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--target", default="cpu-x86")
    parser.add_argument("--method", default="entropy", help="edgeq calibration method (default: entropy)")
    parser.add_argument(
        "--max-drop",
        type=float,
        nargs="+",
        default=[0.5, 2.0],
        help="points of top-1 agreement the --max-drop runs may lose (default: 0.5 2)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice, once per model
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    rows = []
    for name in args.models:
        print(f"{name} …", file=sys.stderr, flush=True)
        rows.append(run_model(name, target=args.target, method=args.method, max_drops=args.max_drop))
        print(f"{name}: {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(table(rows, target=args.target, method=args.method))
    if args.json is not None:
        from edgeq import fileio

        fileio.write_text(args.json, json.dumps(rows, indent=1) + "\n", force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
