"""``edgeq inspect``: a short description of an edgeq file (model, calibration table, report)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from edgeq.errors import DataError


def describe(path: Path) -> str:
    """Human-readable summary of an .onnx model, a calibration table .json or a report .json."""
    path = Path(path)
    if path.is_dir() and (path / "report.json").is_file():
        path = path / "report.json"
    if path.suffix == ".onnx":
        return _describe_model(path)
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable JSON file ({e})") from None
        if isinstance(doc, dict) and doc.get("format") == "edgeq-calibration-table":
            from edgeq.calibrate import CalibrationTable

            table = CalibrationTable.load(path)
            lines = [f"{path}: calibration table, method {table.method.name}, {table.num_samples} samples"]
            for name, (lo, hi) in sorted(table.ranges().items()):
                lines.append(f"  {name:<40} [{lo:+.6g}, {hi:+.6g}]")
            return "\n".join(lines)
        from edgeq.validate import Report

        return Report.from_json(path.read_text()).text()
    raise DataError(f"{path}: don't know how to inspect this file; give an .onnx model or an edgeq .json")


def _describe_model(path: Path) -> str:
    from edgeq.onnxutil import input_specs, load_model, output_specs

    model = load_model(path)
    ops = Counter(n.op_type for n in model.graph.node)
    params = sum(int(_size(t.dims)) for t in model.graph.initializer)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    lines = [
        f"{path}: opset {opset}, {len(model.graph.node)} nodes, {params:,} parameter values, "
        f"{path.stat().st_size:,} bytes"
    ]
    lines += [f"  input  {s.name}: {list(s.shape)} {s.dtype}" for s in input_specs(model)]
    lines += [f"  output {s.name}: {list(s.shape)} {s.dtype}" for s in output_specs(model)]
    lines.append("  ops: " + ", ".join(f"{op}×{n}" for op, n in sorted(ops.items())))
    meta = {p.key: p.value for p in model.metadata_props}
    if "edgeq.target" in meta:
        lines.append(
            f"  quantized by edgeq for {meta['edgeq.target']} "
            f"({meta.get('edgeq.activation_type', '?')} activations)"
        )
    return "\n".join(lines)


def _size(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n
