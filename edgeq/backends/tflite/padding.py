"""Explicit (ONNX-style) padding → TFLite's SAME / VALID, or the PAD that makes it VALID.

TFLite convolutions and pools know two paddings: VALID (none) and SAME (``out = ceil(in / stride)``, the total
padding split with the odd pixel at the end). Explicit padding is equivalent to one of them exactly when it
yields the same output size and the same leading (top/left) padding: trailing padding beyond what the last
window reads changes nothing. Otherwise the writer pads explicitly and runs the op VALID.
"""

from __future__ import annotations

from dataclasses import dataclass

from ai_edge_litert import schema_py_generated as fb


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """TFLite's SAME for one spatial dimension: ``(before, after, out_size)``."""
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2, out


def valid_output(size: int, kernel: int, stride: int, dilation: int) -> int:
    """TFLite's VALID output size for one spatial dimension."""
    effective = (kernel - 1) * dilation + 1
    return (size - effective + stride) // stride


def explicit_output(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    """Output size with explicit padding (ONNX's floor rule)."""
    effective = (kernel - 1) * dilation + 1
    return (size + before + after - effective) // stride + 1


@dataclass(frozen=True)
class PaddingPlan:
    """How an op's explicit padding is written: a TFLite ``Padding`` and, if needed, a PAD in front of it.

    ``pad`` is ``((top, bottom), (left, right))`` for the inserted PAD (only what the windows read), or None.
    """

    padding: int  # fb.Padding.SAME / VALID
    pad: tuple[tuple[int, int], tuple[int, int]] | None = None


def plan_padding(
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    explicit: tuple[int, int, int, int],
) -> PaddingPlan:
    """Choose SAME, VALID or PAD + VALID for ``explicit = (top, left, bottom, right)``."""
    top, left, bottom, right = explicit
    befores, afters = (top, left), (bottom, right)
    outs = [
        explicit_output(in_hw[d], kernel[d], stride[d], dilation[d], befores[d], afters[d]) for d in range(2)
    ]
    if all(b == 0 for b in befores) and all(
        outs[d] == valid_output(in_hw[d], kernel[d], stride[d], dilation[d]) for d in range(2)
    ):
        return PaddingPlan(fb.Padding.VALID)
    same = [same_padding(in_hw[d], kernel[d], stride[d], dilation[d]) for d in range(2)]
    if all(same[d][0] == befores[d] and same[d][2] == outs[d] for d in range(2)):
        return PaddingPlan(fb.Padding.SAME)
    pads = []
    for d in range(2):
        effective = (kernel[d] - 1) * dilation[d] + 1
        reach = (outs[d] - 1) * stride[d] + effective  # padded rows the last window reaches
        pads.append((befores[d], max(0, min(afters[d], reach - befores[d] - in_hw[d]))))
    return PaddingPlan(fb.Padding.VALID, (pads[0], pads[1]))
