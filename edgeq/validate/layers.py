"""Per-layer comparison: pairing each quantized tensor with its float twin, and models that expose them all.

The quantize stage records the pairing in the int8 model's metadata ("edgeq.tensor_map": JSON {float tensor:
its DequantizeLinear output}). A model quantized elsewhere (onnxruntime's quantize_static) has none; there the
pairing is read from ORT's naming, ``<float name>_DequantizeLinear_Output`` (graph outputs keep their name).
Only activations are compared — tensors that depend on a graph input — not weights or biases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeq.errors import ModelError

TENSOR_MAP_KEY = "edgeq.tensor_map"
ORT_DQ_SUFFIX = "_DequantizeLinear_Output"


@dataclass(frozen=True)
class TensorPair:
    """A float activation and the int8 model's dequantized version of it."""

    tensor: str
    quant_tensor: str
    op_type: str  # producer in the float model; "input" for a graph input
    order: int  # position in the float graph (inputs first, then nodes): ties in the ranking go by it
    step: float | None


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output if out}


def dq_step(
    model: onnx.ModelProto, tensor: str, producers: dict[str, onnx.NodeProto] | None = None
) -> float | None:
    """The scale of the DequantizeLinear that produces ``tensor``, when it is one scalar initializer."""
    node = (producers if producers is not None else _producers(model)).get(tensor)
    if node is None or node.op_type != "DequantizeLinear" or len(node.input) < 2:
        return None
    for init in model.graph.initializer:
        if init.name == node.input[1]:
            scale = numpy_helper.to_array(init)
            return float(scale.reshape(-1)[0]) if scale.size == 1 else None
    return None


def _activations(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """Tensors that depend on a graph input → (producer op type or "input", graph position).

    Tensors computed from initializers alone (a reshaped bias, a folded constant) are weights.
    """
    inits = {i.name for i in model.graph.initializer}
    acts: dict[str, tuple[str, int]] = {}
    for v in model.graph.input:
        if v.name not in inits:
            acts[v.name] = ("input", len(acts))
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(i in acts for i in node.input):
            for out in node.output:
                if out:
                    acts[out] = (node.op_type, len(acts))
    return acts


def tensor_pairs(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> tuple[list[TensorPair], str]:
    """The (float, int8) activation pairs in float graph order, and where the pairing came from."""
    float_acts = _activations(float_model)
    quant_producers = _producers(quant_model)
    meta = {p.key: p.value for p in quant_model.metadata_props}
    if TENSOR_MAP_KEY in meta:
        try:
            mapping = json.loads(meta[TENSOR_MAP_KEY])
        except json.JSONDecodeError:
            mapping = None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise ModelError(
                f"int8 model metadata '{TENSOR_MAP_KEY}' is not a JSON object of tensor names; "
                "re-run edgeq quantize"
            )
        inits = {i.name for i in float_model.graph.initializer}
        for f, q in mapping.items():
            if f not in float_acts and f not in inits:
                raise ModelError(
                    f"'{TENSOR_MAP_KEY}' names float tensor '{f}' which the float model does not "
                    "have; pass the float model this int8 model was quantized from"
                )
            if q not in quant_producers:
                raise ModelError(
                    f"'{TENSOR_MAP_KEY}' maps '{f}' to '{q}' which no node of the int8 model "
                    "produces; re-run edgeq quantize"
                )
        source = f"the int8 model's '{TENSOR_MAP_KEY}' metadata"
    else:
        mapping = {}
        for node in quant_model.graph.node:
            if node.op_type != "DequantizeLinear":
                continue
            out = node.output[0]
            f = out[: -len(ORT_DQ_SUFFIX)] if out.endswith(ORT_DQ_SUFFIX) else out
            if f in float_acts:
                mapping[f] = out
        source = f"onnxruntime's '{ORT_DQ_SUFFIX}' tensor names (the int8 model has no '{TENSOR_MAP_KEY}')"
    pairs = [
        TensorPair(f, q, *float_acts[f], step=dq_step(quant_model, q, quant_producers))
        for f, q in mapping.items()
        if f in float_acts
    ]  # weights and biases are not activations
    pairs.sort(key=lambda p: p.order)
    return pairs, source


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``names`` (types from shape inference, else float)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output} | {i.name for i in copy.graph.input}
    wanted = [n for n in names if n not in existing]
    if not wanted:
        return copy
    try:
        inferred = onnx.shape_inference.infer_shapes(copy)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    except Exception:  # inference is only for the element types; ORT re-derives the rest
        types = {}
    for name in wanted:
        copy.graph.output.append(
            helper.make_tensor_value_info(name, types.get(name) or onnx.TensorProto.FLOAT, None)
        )
    return copy


def tensor_values(outputs: dict[str, np.ndarray], feed: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A tensor from a run's outputs, or from the feed for a graph input."""
    return outputs[name] if name in outputs else np.asarray(feed[name])
