"""Which tensors are activations, and the copies of a model that expose them all as outputs.

Activations are the graph's real inputs and every node output that is not constant. Constant means an
initializer, a ``Constant`` node's output, or the output of a node all of whose inputs are constant (the
constant subgraphs exporters leave behind: shape arithmetic, folded weights); random-number nodes and nodes
with subgraphs are never taken as constant. Which of the activations are float is known only once
onnxruntime has inferred their types: :func:`float_outputs` reads that off the session.
"""

from __future__ import annotations

import onnx

BATCH_DIM = "edgeq_batch"

FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")
"""onnxruntime type strings of the calibrated tensors (bfloat16 cannot reach numpy and is skipped)."""

_RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors of ``graph`` whose values do not depend on the graph's inputs."""
    inputs = {i.name for i in graph.input}
    constant = {t.name for t in graph.initializer}
    constant |= {t.name for t in graph.sparse_initializer}
    real_inputs = inputs - constant
    for node in graph.node:  # nodes are topologically sorted, so one pass propagates constness
        if node.op_type in _RANDOM_OPS or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
        ):
            continue
        ins = [i for i in node.input if i]
        if node.op_type == "Constant" or (ins and all(i in constant and i not in real_inputs for i in ins)):
            constant.update(o for o in node.output if o)
    return constant


def activation_names(model: onnx.ModelProto) -> list[str]:
    """Graph inputs (not initializers) and non-constant node outputs, in graph order, without duplicates."""
    graph = model.graph
    constant = constant_tensors(graph)
    names: list[str] = []
    seen: set[str] = set()
    for name in [i.name for i in graph.input] + [o for n in graph.node for o in n.output]:
        if name and name not in constant and name not in seen:
            seen.add(name)
            names.append(name)
    return names


def producers(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name → name (or op type and index) of the node producing it, for error messages."""
    out = {}
    for k, node in enumerate(model.graph.node):
        label = node.name or f"{node.op_type} #{k}"
        for o in node.output:
            out[o] = label
    return out


def calibration_model(model: onnx.ModelProto, tensors: list[str], *, dynamic_batch: bool) -> bytes:
    """A copy of ``model`` with ``tensors`` added as outputs, serialized.

    With ``dynamic_batch`` the first dimension of every input becomes the symbolic ``edgeq_batch``, output
    shapes are dropped and so is ``value_info``, whose static shapes would contradict a larger batch.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph = m.graph
    inputs = {i.name for i in graph.input}
    existing = {o.name for o in graph.output}
    if dynamic_batch:
        del graph.value_info[:]
        initializers = {t.name for t in graph.initializer}
        for v in graph.input:
            if v.name in initializers or not v.type.HasField("tensor_type"):
                continue
            dims = v.type.tensor_type.shape.dim
            if len(dims) and not dims[0].dim_param:
                dims[0].Clear()
                dims[0].dim_param = BATCH_DIM
        for v in graph.output:
            if v.type.HasField("tensor_type"):
                v.type.tensor_type.ClearField("shape")
    for name in tensors:
        if name not in existing and name not in inputs:
            graph.output.append(onnx.ValueInfoProto(name=name))
            existing.add(name)
    return m.SerializeToString()


def float_outputs(session, tensors: list[str]) -> list[str]:
    """Those of ``tensors`` that ``session`` outputs as float, in the order of ``tensors``."""
    types = {o.name: o.type for o in session.get_outputs()}
    return [t for t in tensors if types.get(t) in FLOAT_TYPES]
