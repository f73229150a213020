"""The report's plots as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot state).

matplotlib is an optional extra (``edgeq[report]``); callers check :func:`available` first.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgeq.validate.metrics import LayerMetrics, OutputMetrics
    from edgeq.validate.report import Report

MAX_BARS = 40  # a bar chart of every layer of a large net is unreadable; the table has them all
FLOAT_COLOR, QUANT_COLOR, BAD_COLOR = "#4c72b0", "#dd8452", "#c44e52"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No "Software" text chunk: the bytes then depend only on what is drawn.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def layer_sqnr(layers: tuple[LayerMetrics, ...]) -> bytes:
    """Horizontal bars of per-layer SQNR, worst at the top; identical tensors drawn past the best one."""
    shown = layers[:MAX_BARS]
    finite = [m.sqnr_db for m in shown if math.isfinite(m.sqnr_db)]
    top = max(finite, default=0.0) + 5.0
    values = [m.sqnr_db if math.isfinite(m.sqnr_db) else (top if m.sqnr_db > 0 else 0.0) for m in shown]
    fig = _figure(8, 0.9 + 0.22 * len(shown))
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    colors = [BAD_COLOR if v < 20 else FLOAT_COLOR for v in values]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, [f"{m.tensor} ({m.op_type})" for m in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB), higher is better; red: below 20 dB")
    title = "per-layer SQNR, worst first"
    if len(layers) > len(shown):
        title += f" ({len(shown)} worst of {len(layers)})"
    ax.set_title(title, fontsize=10)
    return _png(fig)


def error_histograms(outputs: tuple[OutputMetrics, ...]) -> bytes:
    """One histogram of int8 − float per output (log counts)."""
    shown = outputs[:4]
    fig = _figure(8, 2.4 * len(shown))
    for i, o in enumerate(shown):
        ax = fig.add_subplot(len(shown), 1, i + 1)
        h = o.error_histogram
        counts = np.asarray(h.counts, dtype=np.float64)
        if h.hi == h.lo:
            ax.bar([0.0], counts, width=1.0, color=QUANT_COLOR)
        else:
            edges = h.edges
            ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=QUANT_COLOR)
            nz = np.flatnonzero(counts)
            if nz.size:  # the range only grows by doubling: zoom in on the bins that hold errors
                reach = max(abs(edges[max(nz[0] - 1, 0)]), abs(edges[min(nz[-1] + 2, len(edges) - 1)]))
                ax.set_xlim(-reach, reach)
        if counts.max(initial=0) > 0:
            ax.set_yscale("log")
        unit = f", step {o.step:.3g}" if o.step else ""
        ax.set_title(f"output '{o.name}': int8 − float over {o.elements} values{unit}", fontsize=10)
        ax.set_xlabel("error")
        ax.set_ylabel("count")
    return _png(fig)


def latency_and_size(report: Report) -> bytes:
    """Float vs int8: median latency (p90 as a whisker) and model size."""
    f, q = report.float_model, report.quant_model
    fig = _figure(8, 2.8)
    has_latency = bool(f.latency and q.latency)
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)] if has_latency else [fig.add_subplot()]
    if has_latency:
        ax = axes[0]
        med = [f.latency.median_ms, q.latency.median_ms]
        p90 = [f.latency.p90_ms, q.latency.p90_ms]
        ax.bar(
            ["float", "int8"],
            med,
            color=[FLOAT_COLOR, QUANT_COLOR],
            yerr=[[0, 0], [max(0.0, p - m) for p, m in zip(p90, med, strict=True)]],
            capsize=6,
        )
        ax.set_ylabel("ms per inference")
        title = "latency: median, whisker p90"
        if report.environment.emulated:
            title += " (emulated)"
        ax.set_title(title, fontsize=10)
    ax = axes[-1]
    sizes = [(f.size_bytes or 0) / 1024, (q.size_bytes or 0) / 1024]
    ax.bar(["float", "int8"], sizes, color=[FLOAT_COLOR, QUANT_COLOR])
    ax.set_ylabel("KiB")
    ax.set_title("model size", fontsize=10)
    return _png(fig)
