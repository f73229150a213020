"""Small helpers over an ONNX graph that the intake passes share: who uses a tensor, renaming, attributes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import onnx
from onnx import helper

#: Domains edgeq accepts: the ONNX operator set under both of its spellings, and ONNX-ML.
DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
ACCEPTED_DOMAINS = DEFAULT_DOMAINS | {"ai.onnx.ml"}


def node_label(node: onnx.NodeProto) -> str:
    """How a node is named in messages: its name when it has one, else its op type and first output."""
    if node.name:
        return f"node '{node.name}' ({node.op_type})"
    first = node.output[0] if node.output else "?"
    return f"{node.op_type} node producing '{first}'"


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held in a node's attributes (If branches, Loop and Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs nested in it, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def outer_references(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads without defining them itself: its references to enclosing scopes."""
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for sub in subgraphs(node):
            used |= outer_references(sub)
        defined.update(node.output)
    used.update(o.name for o in graph.output)
    return used - defined


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's explicit inputs plus the outer names its subgraphs read (what it depends on)."""
    names = [i for i in node.input if i]
    for sub in subgraphs(node):
        names += sorted(outer_references(sub))
    return names


def use_counts(graph: onnx.GraphProto) -> Counter[str]:
    """How many times each tensor is read by a node (subgraph references included) or is a graph output."""
    counts: Counter[str] = Counter()
    for node in graph.node:
        counts.update(node_inputs(node))
    counts.update(o.name for o in graph.output)
    return counts


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Map each tensor name to the nodes of ``graph`` that read it (directly or from a subgraph)."""
    result: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node_inputs(node)):
            result.setdefault(name, []).append(node)
    return result


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Map each tensor name produced by a node of ``graph`` to that node."""
    return {o: node for node in graph.node for o in node.output if o}


def rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every reader of ``old`` (nested subgraphs included, unless they shadow it) read ``new``."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for sub in subgraphs(node):
            shadowed = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            if old not in shadowed:
                rename_uses(sub, old, new)
                for out in sub.output:
                    if out.name == old:
                        out.name = new


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of attribute ``name`` of ``node``, or ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def initializer_map(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers of ``graph`` by name."""
    return {t.name: t for t in graph.initializer}


def replace_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    """Replace the node list of ``graph`` (protobuf repeated fields have no slice assignment)."""
    nodes = [_copy(n) for n in nodes]  # copies: clearing the field would otherwise invalidate them
    del graph.node[:]
    graph.node.extend(nodes)


def replace_initializers(graph: onnx.GraphProto, tensors: Iterable[onnx.TensorProto]) -> None:
    """Replace the initializer list of ``graph``."""
    tensors = [_copy(t) for t in tensors]
    del graph.initializer[:]
    graph.initializer.extend(tensors)


def _copy(message):
    clone = type(message)()
    clone.CopyFrom(message)
    return clone
