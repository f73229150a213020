"""Constant folding: every computation that depends only on initializers (or on static shapes) is done once.

Folded values are computed by onnxruntime with graph optimizations off — the same kernels that would compute
them in the original model — falling back to onnx.reference when onnxruntime cannot run a piece. When neither
can, the nodes stay as they are: folding is an improvement, never a reason to fail.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.export.check import one_line
from edgeq.export.graph import DEFAULT_DOMAINS, attribute, node_inputs, replace_nodes, subgraphs
from edgeq.export.shapes import static_shape

log = logging.getLogger("edgeq.export")

#: Ops whose result differs run to run, or which are the quantization of a model (never fold those away).
NOT_FOLDED = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
    }
)
#: A folded tensor with more elements than this, and more than its node's inputs together, is left to be
#: computed at run time: folding Expand/Tile/ConstantOfShape would only bloat the file.
BLOWUP_ELEMENTS = 1 << 20


def _fold_static_shapes(model: onnx.ModelProto) -> int:
    """Replace Shape and Size of tensors whose shape is fixed by initializers holding the answer."""
    graph = model.graph
    keep, added = [], []
    for node in graph.node:
        shape = (
            static_shape(model, node.input[0]) if node.op_type in ("Shape", "Size") and node.input else None
        )
        if shape is None or node.domain not in DEFAULT_DOMAINS:
            keep.append(node)
            continue
        if node.op_type == "Shape":
            start, end = attribute(node, "start", 0), attribute(node, "end", None)
            value = np.array(shape[start:end], dtype=np.int64)
        else:
            value = np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
        added.append(numpy_helper.from_array(value, node.output[0]))
    if added:
        replace_nodes(graph, keep)
        graph.initializer.extend(added)
    return len(added)


def _foldable(graph: onnx.GraphProto) -> list[int]:
    """Indices of the nodes (topological order) whose inputs are all constant."""
    constant = {t.name for t in graph.initializer}
    result = []
    for i, node in enumerate(graph.node):
        if (
            node.domain in DEFAULT_DOMAINS
            and node.op_type not in NOT_FOLDED
            and not any(subgraphs(node))
            and all(name in constant for name in node_inputs(node))
        ):
            result.append(i)
            constant.update(o for o in node.output if o)
    return result


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> dict[str, np.ndarray] | None:
    """Run ``nodes`` on the model's initializers: their outputs by name, or None if nothing can run them."""
    graph = model.graph
    needed = {name for node in nodes for name in node.input if name}
    inits = [t for t in graph.initializer if t.name in needed]
    outputs = [o for node in nodes for o in node.output if o]
    piece = helper.make_graph(
        nodes, "fold", [], [helper.make_empty_tensor_value_info(o) for o in outputs], inits
    )
    sub = helper.make_model(piece, opset_imports=model.opset_import, ir_version=model.ir_version)
    errors = []
    try:
        from edgeq.onnxutil import ort_session

        session = ort_session(sub, optimize=False)
        return dict(zip(outputs, session.run(outputs, {}), strict=True))
    except Exception as e:
        errors.append(f"onnxruntime: {one_line(e, 150)}")
    try:
        from onnx.reference import ReferenceEvaluator  # imported only when onnxruntime cannot fold

        return dict(zip(outputs, ReferenceEvaluator(sub).run(outputs, {}), strict=True))
    except Exception as e:
        errors.append(f"onnx.reference: {one_line(e, 150)}")
    log.info("constant folding skipped (%s)", "; ".join(errors))
    return None


def fold_constants(model: onnx.ModelProto) -> int:
    """Fold, in place, the nodes computable ahead of time; returns how many nodes were removed."""
    graph = model.graph
    removed = _fold_static_shapes(model)
    indices = _foldable(graph)
    if not indices:
        return removed
    nodes = [graph.node[i] for i in indices]
    values = _evaluate(model, nodes)
    if values is None:
        return removed
    sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in graph.initializer}
    sizes.update({name: int(np.size(v)) for name, v in values.items()})
    graph_outputs = {o.name for o in graph.output}
    kept: set[int] = set()
    kept_outputs: set[str] = set()
    for i, node in zip(indices, nodes, strict=True):
        outs = [o for o in node.output if o]
        inputs_size = sum(sizes.get(n, 0) for n in node.input if n)
        # Kept: results that would bloat the file, whatever reads them, and graph outputs (an initializer as a
        # graph output confuses runtimes and quantizers alike).
        if (
            kept_outputs.intersection(node.input)
            or graph_outputs.intersection(outs)
            or any(sizes[o] > BLOWUP_ELEMENTS and sizes[o] > inputs_size for o in outs)
        ):
            kept.add(i)
            kept_outputs.update(outs)
    folded = [i for i in indices if i not in kept]
    if not folded:
        return removed
    folded_set = set(folded)
    read_later = {
        name for i, node in enumerate(graph.node) if i not in folded_set for name in node_inputs(node)
    }
    read_later |= graph_outputs
    new_inits = [
        numpy_helper.from_array(np.asarray(values[o]), o)
        for i in folded
        for o in graph.node[i].output
        if o in read_later
    ]
    replace_nodes(graph, [n for i, n in enumerate(graph.node) if i not in folded_set])
    graph.initializer.extend(new_inits)
    return removed + len(folded)
