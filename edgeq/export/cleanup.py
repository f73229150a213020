"""Removing what does nothing at inference: Identity, inference-mode Dropout, dead nodes, unused initializers;
and giving every node a unique, deterministic name (quantization and reports refer to nodes by name)."""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from edgeq.export.graph import (
    DEFAULT_DOMAINS,
    all_nodes,
    initializer_map,
    node_inputs,
    producers,
    rename_uses,
    replace_initializers,
    replace_nodes,
    use_counts,
)


def _is_passthrough(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], counts) -> bool:
    """Identity, or a Dropout that is the identity at inference and whose mask nobody reads."""
    if node.domain not in DEFAULT_DOMAINS or not node.input or not node.input[0]:
        return False
    if node.op_type == "Identity":
        return True
    if node.op_type != "Dropout":
        return False
    if len(node.output) > 1 and node.output[1] and counts[node.output[1]]:
        return False
    if len(node.input) > 2 and node.input[2]:  # training_mode (opset 12+): identity only when known false
        mode = inits.get(node.input[2])
        return mode is not None and not bool(numpy_helper.to_array(mode))
    return True


def remove_passthrough(model: onnx.ModelProto) -> int:
    """Bypass Identity and inference Dropout nodes, in place; returns how many were removed."""
    graph = model.graph
    counts = use_counts(graph)
    inits = initializer_map(graph)
    made = producers(graph)
    graph_inputs = {v.name for v in graph.input} | set(inits)
    graph_outputs = {o.name for o in graph.output}
    removed = set()
    for index, node in enumerate(graph.node):
        if not _is_passthrough(node, inits, counts):
            continue
        src, dst = node.input[0], node.output[0]
        if dst not in graph_outputs:
            rename_uses(graph, dst, src)
        elif src in graph_inputs or src in graph_outputs:
            continue  # an output that copies an input (or another output) needs its node
        else:
            # Keep the graph output's name: the producer of ``src`` writes ``dst`` directly.
            producer = made.pop(src)
            producer.output[list(producer.output).index(src)] = dst
            made[dst] = producer
            rename_uses(graph, src, dst)
        removed.add(index)
    if removed:
        replace_nodes(graph, [n for i, n in enumerate(graph.node) if i not in removed])
    return len(removed)


def remove_unused(model: onnx.ModelProto) -> tuple[int, int]:
    """Drop nodes none of whose outputs is used, then unused initializers; returns (nodes, initializers)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):  # ONNX ops have no side effects: an unread node is dead
        if any(o in needed for o in node.output if o):
            live.append(node)
            needed.update(node_inputs(node))
    dead_nodes = len(graph.node) - len(live)
    if dead_nodes:
        replace_nodes(graph, reversed(live))
    used = [t for t in graph.initializer if t.name in needed]
    dead_inits = len(graph.initializer) - len(used)
    if dead_inits:
        replace_initializers(graph, used)
    return dead_nodes, dead_inits


def unique_node_names(model: onnx.ModelProto) -> None:
    """Give nameless nodes ``<OpType>_<n>`` and make repeated names unique with a suffix, in place."""
    # Generated names avoid every name the graph already has, so no later node has to give way.
    reserved = {node.name for node in model.graph.node if node.name}
    taken: set[str] = set()
    counters: dict[str, int] = {}
    for node in model.graph.node:
        if node.name and node.name not in taken:
            taken.add(node.name)
            continue
        base = node.name or node.op_type
        name = None
        while name is None or name in taken or name in reserved:
            counters[base] = counters.get(base, -1) + 1
            name = f"{base}_{counters[base]}"
        node.name = name
        taken.add(name)


def prune_opset_imports(model: onnx.ModelProto) -> None:
    """Drop opset imports of domains no node uses any more (e.g. a local-function domain once inlined)."""
    used = {node.domain for node in all_nodes(model.graph)} | {f.domain for f in model.functions}
    kept = [o for o in model.opset_import if o.domain in DEFAULT_DOMAINS or o.domain in used]
    if len(kept) != len(model.opset_import):
        kept = [helper.make_opsetid(o.domain, o.version) for o in kept]
        del model.opset_import[:]
        model.opset_import.extend(kept)
