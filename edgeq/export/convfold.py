"""Folding per-channel affine ops into the Conv or ConvTranspose before them.

An inference BatchNormalization is y = x · s + t with s = γ / √(var + ε) and t = β − mean · s, per channel;
exporters that fold it themselves (tf2onnx for depthwise convs) leave the same thing as a Mul and an Add by
per-channel constants. Either way, for x = conv(input, W) + b, the folded conv has W' = W · s and
b' = b · s + t. The arithmetic is done in float64 and rounded once to the weights' dtype.

Folding matters for int8: a device runs one quantized conv, where an unfolded model would quantize the conv
output, the scale and the shift separately and lose precision at each step.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq.export.graph import (
    DEFAULT_DOMAINS,
    attribute,
    consumers,
    initializer_map,
    producers,
    rename_uses,
    replace_initializers,
    replace_nodes,
    use_counts,
)

CONVS = ("Conv", "ConvTranspose")


def _out_channels(conv: onnx.NodeProto, weight: np.ndarray) -> int:
    # Conv weights are [C_out, C_in / group, k…]; ConvTranspose weights [C_in, C_out / group, k…].
    return weight.shape[0] if conv.op_type == "Conv" else weight.shape[1] * attribute(conv, "group", 1)


def _scale_weight(conv: onnx.NodeProto, weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """W · s along the output channels."""
    channels = scale.shape[0]
    if conv.op_type == "Conv":
        return weight * scale.reshape((channels,) + (1,) * (weight.ndim - 1))
    group = attribute(conv, "group", 1)  # ConvTranspose output channel g · (C_out / group) + j
    per_group = weight.shape[1]
    grouped = weight.reshape((group, weight.shape[0] // group, per_group, *weight.shape[2:]))
    grouped = grouped * scale.reshape((group, 1, per_group) + (1,) * (weight.ndim - 2))
    return grouped.reshape(weight.shape)


def _batchnorm(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], channels: int):
    """(s, t) of an inference BatchNormalization whose parameters are constants, else None."""
    if (
        len(node.input) != 5
        or attribute(node, "training_mode", 0)
        or len([o for o in node.output if o]) != 1
        or not all(name in inits for name in node.input[1:])
    ):
        return None
    gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:])
    if not all(a.shape == (channels,) for a in (gamma, beta, mean, var)):
        return None
    scale = gamma / np.sqrt(var + float(attribute(node, "epsilon", 1e-5)))
    return scale, beta - mean * scale


def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """A constant that broadcasts against an [N, C, …] conv output along C only, as a length-C vector."""
    if value.ndim > rank or value.size not in (1, channels):
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return np.broadcast_to(value.astype(np.float64).reshape(-1), (channels,))


def _affine(
    node: onnx.NodeProto, conv_out: str, inits: dict[str, onnx.TensorProto], channels: int, rank: int
):
    """(s, t) that ``node`` applies per channel to ``conv_out``, or None if it is not such an op."""
    if node.op_type == "BatchNormalization":
        return _batchnorm(node, inits, channels) if node.input[0] == conv_out else None
    if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2:
        return None
    other = node.input[1] if node.input[0] == conv_out else node.input[0]
    ordered = node.op_type in ("Sub", "Div")  # only conv − c and conv / c are affine in the conv output
    if other == conv_out or other not in inits or (ordered and node.input[0] != conv_out):
        return None
    value = numpy_helper.to_array(inits[other])
    vector = _per_channel(value, channels, rank) if np.issubdtype(value.dtype, np.floating) else None
    if vector is None or (node.op_type == "Div" and not np.all(vector)):
        return None
    ones, zeros = np.ones(channels), np.zeros(channels)
    forms = {
        "Mul": (vector, zeros),
        "Div": (1.0 / vector, zeros),
        "Add": (ones, vector),
        "Sub": (ones, -vector),
    }
    return forms[node.op_type]


def _fresh_name(base: str, taken: set[str], uses: Counter[str]) -> str:
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    uses[name] = 1
    return name


def _own(name: str, uses: Counter[str], taken: set[str]) -> str:
    """``name`` if only the conv being folded reads it, else a fresh name for the conv's own copy."""
    if uses[name] == 1:
        return name
    uses[name] -= 1
    return _fresh_name(f"{name}_folded", taken, uses)


def _bias_name(weight: str, uses: Counter[str], taken: set[str]) -> str:
    """A name for the bias a bias-less conv gets: ``x.weight`` → ``x.bias`` (torch's naming) when free."""
    base = weight[: -len("weight")] + "bias" if weight.endswith("weight") else f"{weight}_bias"
    return _fresh_name(base, taken, uses)


def fold_into_convs(model: onnx.ModelProto) -> int:
    """Fold, in place, each BatchNormalization, or Mul/Add/Sub/Div by a per-channel constant, that is the only
    reader of a Conv/ConvTranspose output into that conv; returns how many nodes were removed.

    An op stays when the conv's output has other readers or is a graph output, or when its parameters are not
    constants. The conv keeps its output name unless the folded op's output is a graph output.
    """
    graph = model.graph
    inits = initializer_map(graph)
    readers = consumers(graph)
    made = producers(graph)
    graph_outputs = {o.name for o in graph.output}
    uses = use_counts(graph)
    taken = set(inits) | set(made) | {v.name for v in graph.input}
    removed: set[int] = set()
    new_inits: dict[str, onnx.TensorProto] = {}
    for index, node in enumerate(graph.node):
        if node.domain not in DEFAULT_DOMAINS or not node.input:
            continue
        conv_out = next((n for n in node.input if made.get(n) is not None and made[n].op_type in CONVS), None)
        conv = made.get(conv_out) if conv_out else None
        if (
            conv is None
            or conv.domain not in DEFAULT_DOMAINS
            or len(readers.get(conv_out, [])) != 1
            or conv_out in graph_outputs
            or len(conv.input) < 2
            or conv.input[1] not in inits
            or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits)
        ):
            continue
        weight = numpy_helper.to_array(inits[conv.input[1]])
        if not np.issubdtype(weight.dtype, np.floating):
            continue
        channels = _out_channels(conv, weight)
        affine = _affine(node, conv_out, inits, channels, weight.ndim)
        if affine is None:
            continue
        scale, shift = affine
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else 0.0

        # Initializers read only by this conv are updated under their own name; shared ones are copied.
        w_name = _own(conv.input[1], uses, taken)
        folded = {w_name: _scale_weight(conv, weight.astype(np.float64), scale)}
        if has_bias or np.any(shift):
            b_name = _own(conv.input[2], uses, taken) if has_bias else _bias_name(conv.input[1], uses, taken)
            folded[b_name] = bias * scale + shift
            if has_bias:
                conv.input[2] = b_name
            else:
                conv.input.append(b_name)
        for name, value in folded.items():
            inits[name] = new_inits[name] = numpy_helper.from_array(value.astype(weight.dtype), name)
        conv.input[1] = w_name

        out = node.output[0]
        if out in graph_outputs:
            conv.output[0] = out
            made[out] = conv
        else:
            rename_uses(graph, out, conv_out)
            readers[conv_out] = readers.pop(out, [])
        removed.add(index)
    if removed:
        replace_nodes(graph, [n for i, n in enumerate(graph.node) if i not in removed])
        kept = [new_inits.pop(t.name, t) for t in graph.initializer]
        replace_initializers(graph, [*kept, *new_inits.values()])
    return len(removed)
