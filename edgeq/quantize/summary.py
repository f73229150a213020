"""What the quantize stage did: a frozen, printable summary, and the result it returns."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import onnx

from edgeq import onnxutil


@dataclass(frozen=True)
class FloatOp:
    """A node left in float and why."""

    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class FoldedActivation:
    """A Relu / Clip removed because the int8 clamp of its producer's quantized output implements it."""

    node: str
    op_type: str
    into: str  # the producer's node name


@dataclass(frozen=True)
class Requantization:
    """A tensor re-quantized to other parameters before a node (shared-parameter rules conflicted)."""

    node: str
    tensor: str


@dataclass(frozen=True)
class QuantSummary:
    """Counts and lists describing one quantization.

    ``quantized``: op type → number of nodes running in int8 (folded activations not counted).
    ``tensor_map``: float tensor name → name of its DequantizeLinear output in the QDQ model (for graph
    outputs the name is unchanged), for pairing each quantized tensor with its float twin.
    """

    target: str
    activation_type: str
    per_channel: bool
    quantized: Mapping[str, int]
    float_ops: tuple[FloatOp, ...]
    folded: tuple[FoldedActivation, ...]
    requantized: tuple[Requantization, ...]
    tensor_map: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantized", MappingProxyType(dict(sorted(self.quantized.items()))))
        object.__setattr__(self, "tensor_map", MappingProxyType(dict(sorted(self.tensor_map.items()))))

    @property
    def num_quantized(self) -> int:
        return sum(self.quantized.values())

    def text(self) -> str:
        """A short human-readable summary (plain text)."""
        weights = "per-channel" if self.per_channel else "per-tensor"
        lines = [
            f"{self.target}: {self.num_quantized} nodes int8, {len(self.folded)} activations folded, "
            f"{len(self.float_ops)} float ({self.activation_type} activations, int8 {weights} weights, "
            "int32 bias)"
        ]
        if self.quantized:
            lines.append("  int8: " + ", ".join(f"{op} {n}" for op, n in self.quantized.items()))
        if self.folded:
            by_op: dict[str, int] = {}
            for f in self.folded:
                by_op[f.op_type] = by_op.get(f.op_type, 0) + 1
            lines.append(
                "  folded into the producer's int8 output: "
                + ", ".join(f"{op} {n}" for op, n in sorted(by_op.items()))
            )
        if self.requantized:
            lines.append(f"  re-quantized inputs (conflicting shared parameters): {len(self.requantized)}")
        if self.float_ops:
            lines.append(f"  left in float ({len(self.float_ops)}):")
            width = max(len(f.node) for f in self.float_ops)
            lines += [f"    {f.node:<{width}}  {f.op_type:<18} {f.reason}" for f in self.float_ops]
        else:
            lines.append("  no float ops left")
        return "\n".join(lines)


@dataclass(frozen=True)
class QuantizeResult:
    """The QDQ model and what was done to make it."""

    model: onnx.ModelProto
    summary: QuantSummary

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the QDQ model atomically (deterministic bytes)."""
        return onnxutil.save_model(self.model, path, force=force)
