"""Sensitivity analysis: which layers lose the accuracy, measured one layer at a time.

For every layer (see :mod:`edgeq.accuracy.layers`) two models are scored against the float model:

- *alone*: only this layer quantized, every other node float — the error this layer adds by itself (its
  weights, its input and output tensors);
- *kept float* (optional): every layer quantized but this one — what keeping it in higher precision alone
  gains back.

Layers are ranked by their alone drop, most harmful first (ties, common for class agreement, broken by the
per-sample output noise, then by name). The report prints as text, saves as JSON, and draws a bar chart
(PNG) that its HTML embeds.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path

import onnx

from edgeq import fileio
from edgeq.accuracy.evaluate import AccuracyMetric, Evaluator, Score
from edgeq.accuracy.layers import Quantizer
from edgeq.config import Target
from edgeq.errors import ConfigError
from edgeq.progress import track

MAX_BARS = 40


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's scores: ``alone`` (only it quantized) and ``kept_float`` (all but it), or None."""

    layer: str
    op_type: str
    nodes: tuple[str, ...]
    alone: Score
    kept_float: Score | None = None


def _rank_key(s: LayerSensitivity) -> tuple[float, float, str]:
    return (-s.alone.drop, -s.alone.noise, s.layer)


@dataclass(frozen=True)
class SensitivityReport:
    """Per-layer sensitivity of one model on one target, ranked most sensitive first."""

    model: str
    target: str
    metric: AccuracyMetric
    num_samples: int
    full: Score  # every layer quantized
    layers: tuple[LayerSensitivity, ...]

    def ranking(self) -> list[str]:
        """Layer names, most sensitive first."""
        return [s.layer for s in self.layers]

    def text(self) -> str:
        """A ranked table (plain text)."""
        unit = "% of the output energy" if self.metric is AccuracyMetric.SQNR else "points"
        lines = [
            f"sensitivity of {self.model} on {self.target} ({self.metric}, {self.num_samples} samples)",
            f"  all layers int8: {self.full.describe()}",
        ]
        if not self.layers:
            lines.append("  no quantized layers")
            return "\n".join(lines)
        width = min(60, max(len(s.layer) for s in self.layers))
        gain = any(s.kept_float is not None for s in self.layers)
        head = f"  {'rank':>4}  {'layer':<{width}}  {'op':<18} {'drop alone':>10}  {'SQNR alone':>10}"
        if gain:
            head += f"  {'drop kept float':>15}  {'gain':>7}"
        lines.append(head)
        for k, s in enumerate(self.layers, 1):
            name = s.layer if len(s.layer) <= width else "…" + s.layer[-(width - 1) :]
            row = (
                f"  {k:>4}  {name:<{width}}  {s.op_type:<18} {_fmt(s.alone.drop):>10}  "
                f"{_fmt(s.alone.sqnr_db):>7} dB"
            )
            if s.kept_float is not None:
                row += f"  {_fmt(s.kept_float.drop):>15}  {_fmt(self.full.drop - s.kept_float.drop):>7}"
            lines.append(row)
        lines.append(
            f"  drop: {_drop_meaning(self.metric)} ({unit}); gain: drop of all-int8 minus drop with that "
            "layer kept float"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "target": self.target,
            "metric": str(self.metric),
            "num_samples": self.num_samples,
            "full": _score_dict(self.full),
            "layers": [
                {
                    "layer": s.layer,
                    "op_type": s.op_type,
                    "nodes": list(s.nodes),
                    "alone": _score_dict(s.alone),
                    "kept_float": None if s.kept_float is None else _score_dict(s.kept_float),
                }
                for s in self.layers
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=True) + "\n"

    def plot_png(self) -> bytes:
        """Horizontal bars: each layer's drop alone (and its gain kept float), most sensitive at the top."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        shown = self.layers[:MAX_BARS]
        fig = Figure(figsize=(8, 1.2 + 0.24 * max(1, len(shown))), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        y = list(range(len(shown)))
        alone = [max(0.0, s.alone.drop) for s in shown]
        has_gain = any(s.kept_float is not None for s in shown)
        height = 0.4 if has_gain else 0.8
        ax.barh(
            [v - (height / 2 if has_gain else 0) for v in y],
            alone,
            height=height,
            color="#c44e52",
            label="drop with only this layer int8",
        )
        if has_gain:
            gains = [
                0.0 if s.kept_float is None else max(0.0, self.full.drop - s.kept_float.drop) for s in shown
            ]
            ax.barh(
                [v + height / 2 for v in y],
                gains,
                height=height,
                color="#4c72b0",
                label="gain when only this layer is kept float",
            )
        ax.set_yticks(y, [f"{s.layer} ({s.op_type})" for s in shown], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"{_drop_meaning(self.metric)}, points")
        ax.set_title(f"layer sensitivity, {self.target}: all int8 drop {self.full.drop:.3g}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})  # no version text: stable bytes
        return buf.getvalue()

    def html(self) -> str:
        """A self-contained HTML page: the ranked table and the plot embedded as a base64 PNG."""
        png = base64.b64encode(self.plot_png()).decode("ascii")
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>edgeq sensitivity</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{font-size:12px}</style></head><body>"
            f"<h1>Layer sensitivity: {escape(self.model)}</h1>"
            f"<img alt='layer sensitivity' src='data:image/png;base64,{png}'>"
            f"<pre>{escape(self.text())}</pre></body></html>\n"
        )

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the report by suffix: ``.html`` (with the plot), ``.json``, ``.png`` or ``.txt``."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".html":
            return fileio.write_text(path, self.html(), force=force)
        if suffix == ".json":
            return fileio.write_text(path, self.to_json(), force=force)
        if suffix == ".png":
            return fileio.write_bytes(path, self.plot_png(), force=force)
        if suffix == ".txt":
            return fileio.write_text(path, self.text() + "\n", force=force)
        raise ConfigError(f"{path}: unknown report type '{suffix}'; use .html, .json, .png or .txt")


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _drop_meaning(metric: AccuracyMetric) -> str:
    return {
        AccuracyMetric.AGREEMENT: "top-1 disagreement with float",
        AccuracyMetric.ACCURACY: "top-1 accuracy drop",
        AccuracyMetric.SQNR: "output noise energy in % of the signal",
    }[metric]


def _score_dict(s: Score) -> dict:
    d = asdict(s)
    d["metric"] = str(s.metric)
    return d


def layer_scores(
    quantizer: Quantizer, evaluator: Evaluator, *, kept_float: bool, progress: bool | None = None
) -> tuple[Score, list[LayerSensitivity]]:
    """Score the all-int8 model and every layer alone (and kept float alone); ranked."""
    full = evaluator.score(quantizer.full.model)
    rows = []
    for layer in track(
        quantizer.layers, description="sensitivity", total=len(quantizer.layers), show=progress
    ):
        alone = evaluator.score(quantizer.only(layer.name).model)
        kept = evaluator.score(quantizer.keeping([layer.name]).model) if kept_float else None
        rows.append(LayerSensitivity(layer.name, layer.op_type, layer.nodes, alone, kept))
    rows.sort(key=_rank_key)
    return full, rows


def analyze(
    float_model: str | os.PathLike[str] | onnx.ModelProto,
    table: Mapping | object,
    data,
    *,
    target: Target | str,
    num_samples: int = 200,
    metric: AccuracyMetric | str = AccuracyMetric.AGREEMENT,
    labels=None,
    kept_float: bool = True,
    exclude: tuple[str, ...] = (),
    progress: bool | None = None,
) -> SensitivityReport:
    """Per-layer sensitivity of ``float_model`` quantized with ``table`` for ``target``.

    ``data``: samples to measure on (anything :func:`edgeq.data.open_samples` accepts; the calibration
    samples are fine, held-out ones better); at most ``num_samples`` are used. ``metric``: agreement, sqnr
    or accuracy (needs ``labels``). ``kept_float``: also score "all int8 but this layer" (twice the work).
    ``exclude``: nodes kept float in every model scored. Costs one or two onnxruntime passes over the samples
    per layer.
    """
    evaluator = Evaluator(float_model, data, metric=metric, num_samples=num_samples, labels=labels)
    quantizer = Quantizer(evaluator.float_model, table, target=target, exclude=exclude)
    full, rows = layer_scores(quantizer, evaluator, kept_float=kept_float, progress=progress)
    name = evaluator.float_model.graph.name or "model"
    if isinstance(float_model, (str, os.PathLike)):
        name = Path(float_model).name
    return SensitivityReport(
        name, quantizer.target.name, evaluator.metric, evaluator.num_samples, full, tuple(rows)
    )
