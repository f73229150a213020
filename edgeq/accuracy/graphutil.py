"""Small helpers the accuracy transforms share: weighted layers, their channel axes, writing weights back."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.quantize.graph import GraphIndex

#: Ops with a constant weight that the quantizer turns into int8 weights and an int32 bias.
WEIGHTED = frozenset({"Conv", "Gemm", "MatMul"})


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> int:
    """The axis of ``weight`` along which output channels lie (the quantizer's per-channel axis)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if attr(node, "transB", 0) else 1
    return weight.ndim - 1  # MatMul: B is (..., K, N)


def input_axis(node: onnx.NodeProto, weight: np.ndarray) -> int:
    """The axis of ``weight`` along which input channels lie (Conv: 1, Gemm: K, MatMul: the row axis)."""
    if node.op_type == "Conv":
        return 1
    if node.op_type == "Gemm":
        return 1 if attr(node, "transB", 0) else 0
    return weight.ndim - 2


def is_weighted(g: GraphIndex, node: onnx.NodeProto) -> bool:
    """A Conv/Gemm/MatMul with a constant float weight of the usual rank and a constant (or no) bias."""
    if node.op_type not in WEIGHTED or len(node.input) < 2 or not g.is_constant(node.input[1]):
        return False
    if g.is_constant(node.input[0]) or g.initializers[node.input[1]].data_type != onnx.TensorProto.FLOAT:
        return False
    w = g.array(node.input[1])
    if node.op_type == "Conv" and w.ndim < 3:
        return False
    if node.op_type in ("Gemm",) and w.ndim != 2:
        return False
    if node.op_type == "MatMul" and w.ndim != 2:
        return False
    bias = node.input[2] if len(node.input) > 2 else ""
    return not bias or g.is_constant(bias)


def uses(model: onnx.ModelProto) -> dict[str, int]:
    """How many node inputs read each tensor name (graph outputs count as a use)."""
    count: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                count[name] = count.get(name, 0) + 1
    for out in model.graph.output:
        count[out.name] = count.get(out.name, 0) + 1
    return count


def replace_initializers(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with the named initializers replaced (float32, same names, same order)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in arrays:
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            t.CopyFrom(numpy_helper.from_array(np.asarray(arrays[t.name]).astype(dtype), t.name))
    return out


def node_index(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node if n.name}
