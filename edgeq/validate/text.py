"""The report as a compact terminal table: plain text, or drawn with rich on a colour terminal."""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeq.validate.report import Report

WORST_LAYERS = 5


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.2f} MiB"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms"


def fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} %"


def fmt_db(x: float) -> str:
    return "identical" if x == float("inf") else f"{x:.2f} dB"


def ratio(x: float | None, better: str, worse: str) -> str:
    if x is None:
        return ""
    return f"{x:.2f}× {better}" if x >= 1 else f"{1 / x:.2f}× {worse}"


def rows(report: Report) -> list[tuple[str, str, str, str]]:
    """(what, float, int8, change) rows; a row with only ``what`` starts a section."""
    out: list[tuple[str, str, str, str]] = []
    for o in report.outputs:
        out.append((f"output '{o.name}' {list(o.shape)}", "", "", ""))
        if o.top1_drop_pts is not None:
            out.append(
                (
                    "  top-1 accuracy",
                    fmt_pct(o.float_accuracy_pct),
                    fmt_pct(o.quant_accuracy_pct),
                    f"{o.quant_accuracy_pct - o.float_accuracy_pct + 0.0:+.2f} pts",
                )
            )
        if o.agreement_pct is not None:
            out.append(("  top-1 agreement", "", fmt_pct(o.agreement_pct), f"{o.agree}/{o.predictions}"))
        out.append(("  SQNR", "", fmt_db(o.sqnr_db), f"cosine {o.cosine:.6f}"))
        steps = f"{o.max_abs_error_steps:.1f} steps" if o.max_abs_error_steps is not None else ""
        out.append(
            (
                "  max |int8 − float|",
                "",
                f"{o.max_abs_error:.4g}",
                f"{steps} (sample {o.max_abs_error_sample})".strip(),
            )
        )
        if o.float_nonfinite or o.quant_nonfinite:
            out.append(("  NaN/Inf values", str(o.float_nonfinite), str(o.quant_nonfinite), ""))
    f, q = report.float_model, report.quant_model
    if f.latency or q.latency:
        threads = (f.latency or q.latency).threads
        label = f"latency median ({threads} thread{'s' if threads > 1 else ''})"
        if report.environment.emulated:
            label += ", emulated"
        out.append(
            (
                label,
                fmt_ms(f.latency and f.latency.median_ms),
                fmt_ms(q.latency and q.latency.median_ms),
                ratio(report.speedup, "faster", "slower"),
            )
        )
    if f.peak_rss_bytes or q.peak_rss_bytes:
        out.append(("peak RSS", fmt_bytes(f.peak_rss_bytes), fmt_bytes(q.peak_rss_bytes), ""))
    out.append(
        (
            "size",
            fmt_bytes(f.size_bytes),
            fmt_bytes(q.size_bytes),
            ratio(report.size_ratio, "smaller", "larger"),
        )
    )
    return out


def header(report: Report) -> str:
    env = report.environment
    where = ", ".join(x for x in (env.machine, env.cpu, env.runtime) if x)
    verdict = "PASSED" if report.passed else "FAILED"
    return f"validation {verdict}: {report.samples} samples on {env.device}" + (
        f" ({where})" if where else ""
    )


def layer_lines(report: Report) -> list[str]:
    return [f"{fmt_db(m.sqnr_db):>10}  {m.tensor} ({m.op_type})" for m in report.layers[:WORST_LAYERS]]


def render_plain(report: Report) -> str:
    table = [("", "float", "int8", ""), *rows(report)]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = [header(report), ""]
    for r in table:
        if not any(r[1:]) and r[0]:
            lines.append(r[0])
            continue
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
    if report.layers:
        lines += ["", f"worst layers (SQNR, of {len(report.layers)}):", *layer_lines(report)]
    if report.notes:
        lines += ["", "notes:", *(f"  - {x}" for x in report.notes)]
    if report.failures:
        lines += ["", "failures:", *(f"  - {x}" for x in report.failures)]
    return "\n".join(lines) + "\n"


def render_rich(report: Report) -> str:
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=110, highlight=False)
    style = "bold green" if report.passed else "bold red"
    console.print(header(report), style=style)
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("")
    table.add_column("float", justify="right")
    table.add_column("int8", justify="right")
    table.add_column("")
    for r in rows(report):
        if not any(r[1:]):
            table.add_row(r[0], style="bold")
        else:
            table.add_row(*r)
    console.print(table)
    if report.layers:
        console.print(f"worst layers (SQNR, of {len(report.layers)}):", style="bold")
        for line in layer_lines(report):
            console.print(line)
    if report.notes:
        console.print("notes:", style="bold")
        for x in report.notes:
            console.print(f"  - {x}", style="dim")
    for x in report.failures:
        console.print(f"✗ {x}", style="red")
    return buf.getvalue()


def render_text(report: Report, *, color: bool | None = None) -> str:
    if color is None:
        color = sys.stdout.isatty()
    if color:
        try:
            return render_rich(report)
        except ImportError:  # rich is an optional extra
            pass
    return render_plain(report)
