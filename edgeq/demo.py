"""``edgeq demo``: the whole pipeline on the bundled digits CNN, every stage's file kept in one folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeq import fileio
from edgeq.config.resources import data_dir


def run_demo(output: str | os.PathLike[str] = "edgeq-demo", *, target: str = "cpu-x86", force: bool = False):
    """Export → calibrate → quantize → validate the digits example into ``output``; returns the Report."""
    from edgeq.calibrate import calibrate
    from edgeq.config import load_recipe, load_target
    from edgeq.data import load_labels
    from edgeq.export import export
    from edgeq.onnxutil import save_model
    from edgeq.quantize import quantize
    from edgeq.validate import Thresholds, validate

    example = data_dir("examples/digits")
    target_profile = load_target(target)
    recipe = load_recipe("digits-8")

    def step(text: str) -> None:
        print(f"[edgeq demo] {text}", file=sys.stderr)

    with fileio.output_dir(output, force=force) as tmp:
        step(f"export     {example / 'digits_cnn.onnx'} -> float.onnx")
        float_model = export(example / "digits_cnn.onnx")
        save_model(float_model, tmp / "float.onnx")
        step(f"calibrate  calibration.npz ({recipe.method.name}) -> table.json")
        table = calibrate(float_model, example / "calibration.npz", recipe=recipe)
        table.save(tmp / "table.json")
        step(
            f"quantize   target {target_profile.name} ({target_profile.quantization.activations}) "
            "-> model.int8.onnx"
        )
        result = quantize(float_model, table, target=target_profile)
        save_model(result.model, tmp / "model.int8.onnx")
        step("validate   test.npz, float vs int8 -> report/")
        report = validate(
            tmp / "float.onnx",
            tmp / "model.int8.onnx",
            example / "test.npz",
            labels=load_labels(example / "test.npz"),
            thresholds=Thresholds(max_top1_drop=1.0),
        )
        report.write(tmp / "report")
    print(result.summary.text())
    print(report.text())
    print(f"\nwrote {Path(output)}/: float.onnx table.json model.int8.onnx report/report.{{json,html}}")
    return report
