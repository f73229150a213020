"""Weights held in Constant nodes become initializers, where quantization and the backends look for them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.errors import ModelError
from edgeq.export.graph import node_label, replace_nodes


def _sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(int(np.prod(sparse.dims, dtype=np.int64)), dtype=values.dtype)
    if indices.ndim == 2:  # [NNZ, rank] coordinates rather than linear positions
        indices = np.ravel_multi_index(tuple(indices.T), tuple(sparse.dims))
    dense[indices.reshape(-1)] = values.reshape(-1)
    return dense.reshape(tuple(sparse.dims))


def constant_value(node: onnx.NodeProto) -> onnx.TensorProto:
    """The tensor a Constant node produces, named after its output, whichever attribute form it uses."""
    if len(node.attribute) != 1:
        raise ModelError(
            f"{node_label(node)}: a Constant needs exactly one value attribute, has {len(node.attribute)}"
        )
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    name = node.output[0]
    if attr.name == "value":
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = name
        return tensor
    if attr.name == "sparse_value":
        return numpy_helper.from_array(_sparse_to_dense(value), name)
    forms = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    if attr.name in forms:
        return numpy_helper.from_array(np.array(value, dtype=forms[attr.name]), name)
    if attr.name in ("value_string", "value_strings"):
        data = [value] if attr.name == "value_string" else list(value)
        dims = [] if attr.name == "value_string" else [len(data)]
        return helper.make_tensor(name, onnx.TensorProto.STRING, dims, data)
    raise ModelError(f"{node_label(node)}: unknown Constant attribute '{attr.name}'")


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn the main graph's Constant nodes into initializers, in place; returns how many were moved."""
    graph = model.graph
    keep, moved = [], []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            moved.append(constant_value(node))
        else:
            keep.append(node)
    if moved:
        replace_nodes(graph, keep)
        graph.initializer.extend(moved)
    return len(moved)


def drop_initializer_inputs(model: onnx.ModelProto) -> None:
    """Remove initializers from the graph inputs (IR ≥ 4), so runtimes treat them as constants.

    Old exporters list weights as inputs too; onnxruntime then treats them as overridable and will not fold
    them, and the model appears to have one input per weight.
    """
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    if model.ir_version < 4 or not any(v.name in inits for v in graph.input):
        return
    real = [v for v in graph.input if v.name not in inits]
    copies = []
    for v in real:
        c = onnx.ValueInfoProto()
        c.CopyFrom(v)
        copies.append(c)
    del graph.input[:]
    graph.input.extend(copies)
