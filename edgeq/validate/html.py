"""The report as one self-contained HTML file: inline CSS, plots embedded as base64 PNG, no network access.

Every name in the page (tensors, outputs, devices) comes from user files and is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from html import escape
from typing import TYPE_CHECKING

from edgeq.validate import plots
from edgeq.validate.text import fmt_bytes, fmt_db, fmt_ms, fmt_pct, header, rows

if TYPE_CHECKING:
    from edgeq.validate.report import Report

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { padding: .2em .8em; border-bottom: 1px solid #eee; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.section td { font-weight: 600; background: #f6f6f6; }
.pass { color: #1a7f37; } .fail { color: #c0392b; }
.note { color: #666; }
img { max-width: 100%; display: block; margin: .5em 0; }
code { background: #f3f3f3; padding: 0 .25em; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _table(head: list[str], body: list[list[str]], sections: Collection[int] = ()) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(body):
        if i in sections:
            out.append(f'<tr class="section"><td colspan="{len(head)}">{escape(r[0])}</td></tr>')
        else:
            out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_html(report: Report) -> str:
    passed = report.passed
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edgeq validation: {'passed' if passed else 'FAILED'}</title>",
        f"<style>{CSS}</style></head><body>",
        f'<h1 class="{"pass" if passed else "fail"}">{escape(header(report))}</h1>',
    ]
    if report.failures:
        parts.append(
            "<ul>" + "".join(f'<li class="fail">{escape(x)}</li>' for x in report.failures) + "</ul>"
        )
    t = report.thresholds
    limits = [
        f"{k} = {v:g}"
        for k, v in (
            ("max_top1_drop", t.max_top1_drop),
            ("min_agreement", t.min_agreement),
            ("min_sqnr_db", t.min_sqnr_db),
        )
        if v is not None
    ]
    parts.append(f'<p class="note">thresholds: {escape(", ".join(limits) or "none set")}</p>')

    body = rows(report)
    parts += [
        "<h2>Summary</h2>",
        _table(
            ["", "float", "int8", ""],
            [list(r) for r in body],
            {i for i, r in enumerate(body) if not any(r[1:])},
        ),
    ]
    env = report.environment
    f, q = report.float_model, report.quant_model
    parts += [
        "<h2>Where it ran</h2>",
        _table(
            ["", ""],
            [
                ["device", env.device],
                ["machine", env.machine],
                ["cpu", env.cpu],
                ["runtime", env.runtime],
                ["emulated", "yes" if env.emulated else "no"],
            ],
        ),
        _table(
            ["model", "file", "size", "latency median", "latency p90", "peak RSS"],
            [
                [
                    side,
                    m.path or "(in memory)",
                    fmt_bytes(m.size_bytes),
                    fmt_ms(m.latency and m.latency.median_ms),
                    fmt_ms(m.latency and m.latency.p90_ms),
                    fmt_bytes(m.peak_rss_bytes),
                ]
                for side, m in (("float", f), ("int8", q))
            ],
        ),
    ]

    have_plots = plots.available()
    parts.append("<h2>Outputs</h2>")
    parts.append(
        _table(
            [
                "output",
                "float acc.",
                "int8 acc.",
                "agreement",
                "SQNR",
                "cosine",
                "max |err|",
                "max |err| steps",
                "mean |err|",
            ],
            [
                [
                    o.name,
                    fmt_pct(o.float_accuracy_pct),
                    fmt_pct(o.quant_accuracy_pct),
                    fmt_pct(o.agreement_pct),
                    fmt_db(o.sqnr_db),
                    f"{o.cosine:.6f}",
                    f"{o.max_abs_error:.4g}",
                    "–" if o.max_abs_error_steps is None else f"{o.max_abs_error_steps:.2f}",
                    f"{o.mean_abs_error:.4g}",
                ]
                for o in report.outputs
            ],
        )
    )
    if have_plots:
        parts.append(_img(plots.error_histograms(report.outputs), "histogram of int8 minus float per output"))
        parts.append(_img(plots.latency_and_size(report), "latency and size, float vs int8"))

    parts.append("<h2>Layers (worst SQNR first)</h2>")
    if report.layers:
        if have_plots:
            parts.append(_img(plots.layer_sqnr(report.layers), "per-layer SQNR bar chart, worst first"))
        parts.append(
            _table(
                ["float tensor", "op", "int8 tensor", "SQNR", "max |err|", "max |err| steps"],
                [
                    [
                        m.tensor,
                        m.op_type,
                        m.quant_tensor,
                        fmt_db(m.sqnr_db),
                        f"{m.max_abs_error:.4g}",
                        "–" if m.max_abs_error_steps is None else f"{m.max_abs_error_steps:.2f}",
                    ]
                    for m in report.layers
                ],
            )
        )
    else:
        parts.append('<p class="note">no per-layer comparison in this report</p>')
    if not have_plots:
        parts.append(
            "<p class=\"note\">Plots need matplotlib: <code>pip install 'edgeq[report]'</code>, "
            "then write the report again.</p>"
        )
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
