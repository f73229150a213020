"""Weight clipping search: a float ONNX → float ONNX transform choosing each weight channel's int8 range.

The quantizer gives a weight channel the scale ``max|w| / 127``. One large weight then makes the step of all
the others coarse; clipping the channel to ``[-a, a]`` with ``a < max|w|`` trades a clipping error on the few
large weights for a finer step on all the rest. ``mse`` picks, per output channel (or per tensor for
per-tensor schemes), the ``a`` among ``candidates`` evenly spaced values ``max|w| · k / candidates``
that minimises the squared error ``Σ (w - dequant(quant(w)))²`` of the int8 grid the quantizer will use
(symmetric, ``[-127, 127]``, float32 scale ``a / 127``, round half to even), keeping ``max|w|`` on a tie.

The weights are then clipped to ``[-a, a]`` in the float model, so that the quantizer, which reads
``max|w|``, finds exactly the scale ``a / 127`` and quantizes exactly as the search assumed. The clipped model
is an input to quantization, not a new float reference: validate the int8 model against the original.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from edgeq import onnxutil
from edgeq.accuracy.graphutil import attr, is_weighted, replace_initializers, uses, weight_axis
from edgeq.config.recipe import WeightClipping
from edgeq.errors import ConfigError
from edgeq.quantize.graph import GraphIndex
from edgeq.quantize.params import WEIGHT_QMAX


@dataclass(frozen=True)
class ClippedWeight:
    """One weight tensor: how many channels were clipped, and the quantization error before and after.

    ``error_before`` / ``error_after``: ``Σ (w - dequant(quant(w)))² / Σ w²`` over the tensor.
    """

    node: str
    weight: str
    channels: int
    clipped: int
    error_before: float
    error_after: float


@dataclass(frozen=True)
class ClipResult:
    """The model with clipped weights, and one entry per weight tensor looked at."""

    model: onnx.ModelProto
    weights: tuple[ClippedWeight, ...]

    def text(self) -> str:
        clipped = [w for w in self.weights if w.clipped]
        lines = [f"weight clipping (mse): {len(clipped)} of {len(self.weights)} weight tensors clipped"]
        for w in clipped:
            gain = 10 * np.log10(w.error_before / w.error_after) if w.error_after > 0 else float("inf")
            lines.append(
                f"  {w.node}: {w.clipped}/{w.channels} channels, weight error "
                f"{w.error_before:.3g} → {w.error_after:.3g} ({gain:+.2f} dB)"
            )
        return "\n".join(lines)


def mse_limits(rows: np.ndarray, *, candidates: int = 100) -> np.ndarray:
    """Per row of ``rows`` (channels × values): the clip limit minimising the int8 squared error."""
    rows = np.asarray(rows, dtype=np.float64)
    absmax = np.max(np.abs(rows), axis=1)
    # float32 limits, as the quantizer will read them from the (float32) clipped weights
    fractions = np.arange(1, candidates + 1, dtype=np.float64) / candidates
    grid = (absmax[:, None] * fractions[None, :]).astype(np.float32).astype(np.float64)
    grid[:, -1] = absmax  # the unclipped range is always a candidate, and wins ties
    # quantizing w with the limit's scale and saturating at ±127 is quantizing w clipped to ±limit
    errors = np.stack([_total_error(rows, grid[:, k]) for k in range(candidates)], axis=1)
    best = candidates - 1 - np.argmin(errors[:, ::-1], axis=1)  # the largest limit among equal errors
    return grid[np.arange(rows.shape[0]), best]


def _total_error(rows: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Per row: Σ (w - dequant(quant(w)))² on the int8 grid of scale float32(limit / 127)."""
    scale = (limits / WEIGHT_QMAX).astype(np.float32).astype(np.float64)
    scale = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(rows / scale[:, None]), -WEIGHT_QMAX, WEIGHT_QMAX)
    return np.sum((rows - q * scale[:, None]) ** 2, axis=1)


def clip_weights(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    per_channel: bool = True,
    method: WeightClipping | str = WeightClipping.MSE,
    candidates: int = 100,
    exclude: Sequence[str] = (),
) -> ClipResult:
    """Clip every int8-quantizable weight to its searched range (see the module docstring).

    ``per_channel``: one limit per output channel (the target's scheme), else one per tensor.
    ``method``: ``mse`` (or ``none``: the model is returned unchanged). ``exclude``: node names left alone.
    """
    try:
        method = WeightClipping(method)
    except ValueError:
        raise ConfigError(
            f"weight_clipping: unknown method '{method}'; known: {', '.join(m.value for m in WeightClipping)}"
        ) from None
    if candidates < 2:
        raise ConfigError(f"weight clipping: candidates must be at least 2, not {candidates}")
    proto = onnxutil.load_model(model)
    if method is WeightClipping.NONE:
        return ClipResult(proto, ())
    g = GraphIndex(proto)
    counts = uses(proto)
    excluded = set(exclude)
    arrays: dict[str, np.ndarray] = {}
    report = []
    for node in g.nodes:
        if not is_weighted(g, node) or node.name in excluded:
            continue
        name = node.input[1]
        if counts.get(name, 0) != 1 or name in arrays:
            continue  # a shared weight: the quantizer quantizes it once per use; leave it as is
        w = np.asarray(g.array(name), dtype=np.float64)
        if node.op_type == "Gemm":
            alpha = float(attr(node, "alpha", 1.0))
            if alpha != 1.0:
                continue  # the quantizer folds alpha into the weights; rare enough not to model
        axis = weight_axis(node, w)
        rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if per_channel else w.reshape(1, -1)
        absmax = np.max(np.abs(rows), axis=1)
        limits = mse_limits(rows, candidates=candidates)
        clipped_rows = np.clip(rows, -limits[:, None], limits[:, None])
        energy = float(np.sum(rows**2)) or 1.0
        before = float(np.sum(_total_error(rows, absmax))) / energy
        after = float(np.sum(_total_error(rows, limits))) / energy
        n_clipped = int(np.sum(limits < absmax))
        if n_clipped:
            if per_channel:
                moved = clipped_rows.reshape((w.shape[axis], *np.delete(w.shape, axis)))
                arrays[name] = np.moveaxis(moved, 0, axis)
            else:
                arrays[name] = clipped_rows.reshape(w.shape)
        report.append(ClippedWeight(node.name or node.op_type, name, rows.shape[0], n_clipped, before, after))
    return ClipResult(replace_initializers(proto, arrays), tuple(report))
