"""The layers a search reasons about, and quantizing with some of them kept in higher precision.

A *layer* is a node the quantizer runs in int8 that computes something (Conv, Gemm, MatMul, Add, Mul, Concat,
pooling, Softmax …), together with the Relu/Clip folded into it: keeping a Conv in float keeps its folded
ReLU6 with it. Pure data movement (Reshape, Flatten, MaxPool, Transpose …) is not a layer of its own — it
adds no error (its output shares its input's parameters) and follows its producer into float.

"Keeping a layer in higher precision" means, for onnxruntime targets, leaving it float in the QDQ model
(``quantize(..., exclude=…)``): its weights stay float32 and it computes in float. Its input and output
tensors are still quantized where a neighbouring int8 layer reads or writes them — an int8 kernel needs int8
operands — so removing the error of one tensor needs its producer and all its consumers kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx

from edgeq import onnxutil
from edgeq.config import Runtime, Target, load_target
from edgeq.errors import DataError, ModelError
from edgeq.quantize import QuantizeResult, quantize
from edgeq.quantize.coverage import Kind, coverage


@dataclass(frozen=True)
class Layer:
    """One layer: its node name, op type and the nodes it covers (the node and any activation folded in)."""

    name: str
    op_type: str
    nodes: tuple[str, ...]


def range_mapping(
    table: Mapping[str, tuple[float, float]] | object, model: onnx.ModelProto | None = None
) -> dict[str, tuple[float, float]]:
    """The table's ranges as a plain mapping, after checking that the table belongs to ``model``.

    The transforms here change weights (clipping, bias correction), which changes the model's fingerprint;
    its activations' ranges are still the table's, so the derived models are quantized with the mapping.
    """
    check = getattr(table, "check_model", None)
    if model is not None and callable(check):
        check(model)
    ranges = getattr(table, "ranges", None)
    if callable(ranges):
        return dict(ranges())
    if isinstance(table, Mapping):
        return dict(table)
    raise DataError(
        f"calibration table: expected a CalibrationTable or a mapping of tensor name → (lo, hi), "
        f"got {type(table).__name__}; run edgeq calibrate first"
    )


def can_keep_float(target: Target) -> bool:
    """Whether the target runs a QDQ model with float nodes: only onnxruntime does (TFLite, the C backend
    and TFLite Micro need every op in int8)."""
    return Runtime.ONNXRUNTIME in target.runtimes


class Quantizer:
    """``quantize`` for one float model, table and target, with the layers found once."""

    def __init__(
        self,
        float_model: str | os.PathLike[str] | onnx.ModelProto,
        table: Mapping[str, tuple[float, float]] | object,
        *,
        target: Target | str,
        exclude: Sequence[str] = (),
        float_outputs: bool = False,
    ):
        self.model = onnxutil.load_model(float_model)
        self.table = range_mapping(table, self.model)
        self.target = load_target(target)
        self.base_exclude = tuple(exclude)
        # float outputs (edgeq.accuracy.outputs) only where onnxruntime runs the QDQ model itself
        self.float_outputs = float_outputs and self.target.primary_runtime is Runtime.ONNXRUNTIME
        unnamed = next((n for n in self.model.graph.node if not n.name), None)
        if unnamed is not None:
            raise ModelError(
                f"a {unnamed.op_type} node has no name; layers are kept in float by node name: "
                "run edgeq export on the model, which names every node"
            )
        self.full = self.quantize(self.base_exclude)
        self.layers = self._layers(self.full)
        self.by_name = {layer.name: layer for layer in self.layers}
        self.node_names = [n.name for n in self.model.graph.node]

    def _layers(self, result: QuantizeResult) -> tuple[Layer, ...]:
        kinds = coverage(tflite=self.target.quantization.tflite_constraints)
        floats = {f.node for f in result.summary.float_ops}
        folded: dict[str, list[str]] = {}
        folded_nodes = set()
        for f in result.summary.folded:
            folded.setdefault(f.into, []).append(f.node)
            folded_nodes.add(f.node)
        layers = []
        for node in self.model.graph.node:
            if node.name in floats or node.name in folded_nodes:
                continue
            if kinds.get(node.op_type) is Kind.SHARED:
                continue
            layers.append(Layer(node.name, node.op_type, (node.name, *folded.get(node.name, ()))))
        return tuple(layers)

    def quantize(self, exclude: Sequence[str]) -> QuantizeResult:
        result = quantize(self.model, self.table, target=self.target, exclude=list(exclude))
        if self.float_outputs:
            from edgeq.accuracy.outputs import float_outputs

            result = QuantizeResult(float_outputs(result.model).model, result.summary)
        return result

    def nodes_of(self, layers: Iterable[str]) -> list[str]:
        out: list[str] = []
        for name in layers:
            out.extend(self.by_name[name].nodes)
        return out

    def keeping(self, layers: Iterable[str]) -> QuantizeResult:
        """The QDQ model with ``layers`` (layer names) kept in float."""
        return self.quantize(sorted({*self.base_exclude, *self.nodes_of(layers)}))

    def only(self, layer: str) -> QuantizeResult:
        """The QDQ model with only ``layer`` quantized (every other node excluded)."""
        keep = set(self.by_name[layer].nodes)
        return self.quantize([n for n in self.node_names if n not in keep])
