"""``quantize``: a float ONNX model + calibrated ranges → a static int8 QDQ model for one target."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import onnx

from edgeq import onnxutil
from edgeq.config import ActivationType, Target, load_target
from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.quantize.coverage import coverage
from edgeq.quantize.graph import GraphIndex
from edgeq.quantize.int16 import apply_int16, check_int16_nodes
from edgeq.quantize.params import QuantType
from edgeq.quantize.plan import build_plan, check_exclude, select
from edgeq.quantize.rewrite import write_qdq
from edgeq.quantize.summary import FloatOp, FoldedActivation, QuantizeResult, QuantSummary

#: metadata_props keys written into the QDQ model, so that a later stage reading the file alone can pair each
#: quantized tensor with its float twin and knows the scheme.
META_TENSOR_MAP = "edgeq.tensor_map"
META_TARGET = "edgeq.target"
META_ACTIVATION_TYPE = "edgeq.activation_type"
#: JSON list of the nodes running in TFLite's 16x8 mode (only present when some do).
META_INT16_NODES = "edgeq.int16_nodes"

MIN_OPSET = 13  # per-channel DequantizeLinear (the axis attribute) needs opset 13
_QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
    }
)


@runtime_checkable
class RangeTable(Protocol):
    """Anything with calibrated ranges, e.g. :class:`edgeq.calibrate.CalibrationTable`.

    If it also has ``check_model(model)`` (the CalibrationTable's fingerprint check), quantize calls it first.
    """

    def ranges(self) -> Mapping[str, tuple[float, float]]: ...


def _ranges(table: RangeTable | Mapping[str, tuple[float, float]]) -> Mapping[str, tuple[float, float]]:
    if isinstance(table, Mapping):
        return table
    if isinstance(table, RangeTable):
        return table.ranges()
    raise DataError(
        f"calibration table: expected a CalibrationTable or a mapping of tensor name → (lo, hi), "
        f"got {type(table).__name__}; run edgeq calibrate first"
    )


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def quantize(
    model: str | os.PathLike[str] | onnx.ModelProto,
    table: RangeTable | Mapping[str, tuple[float, float]],
    *,
    target: Target | str,
    exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    int16_nodes: Sequence[str] = (),
) -> QuantizeResult:
    """Quantize a float model to static int8 in QDQ form for ``target``.

    ``table``: the calibration table (or a mapping float tensor name → (lo, hi)) of this model.
    ``target``: a Target or a target name/path; its ``quantization`` scheme decides uint8 or int8 activations,
    per-channel or per-tensor weights, and whether TFLite's parameter rules apply.
    ``exclude``: node names kept in float. ``op_types``: quantize only these op types (default: all that
    the target's int8 kernels cover). ``int16_nodes``: Conv/Gemm/MatMul/Add node names that get TFLite's
    16x8 mode — int16 symmetric activations on their inputs and outputs, int8 weights — for TFLite targets
    only (see :mod:`edgeq.quantize.int16`); the model's ``edgeq.int16_nodes`` metadata lists them.

    Weights are int8 symmetric ([-127, 127], zero point 0) per output channel; biases int32 with scale =
    input scale × weight scale; activations per tensor, asymmetric, with 0 exactly representable. Relu and
    Clip(0, max) after Conv/Gemm/MatMul/Add are folded into the producer's output range. The input model is
    not modified; the result is deterministic (identical inputs → identical bytes).
    """
    target = load_target(target)
    scheme = target.quantization
    src = onnxutil.load_model(model)
    opset = _opset(src)
    if opset < MIN_OPSET:
        raise ModelError(
            f"the model uses opset {opset}; quantization needs opset {MIN_OPSET} or newer "
            "(per-channel DequantizeLinear): run edgeq export on it, which upgrades the opset"
        )
    already = next((n for n in src.graph.node if n.op_type in _QUANTIZED_OPS), None)
    if already is not None:
        raise ModelError(
            f"node '{already.name or already.op_type}' ({already.op_type}): the model is already "
            "quantized; quantize the float model instead"
        )
    check = getattr(table, "check_model", None)
    if callable(check):
        check(src)  # a CalibrationTable refuses another model (fingerprint): ModelError naming both
    if int16_nodes:
        check_int16_nodes(src, int16_nodes, target=target.name, tflite=scheme.tflite_constraints)
    g = GraphIndex(src)
    cover = coverage(tflite=scheme.tflite_constraints)
    if op_types is not None:
        unknown = sorted(set(op_types) - set(cover))
        if unknown:
            raise ConfigError(
                f"op_types: {', '.join(unknown)} cannot be quantized for target '{target.name}'; "
                f"quantizable op types: {', '.join(sorted(cover))}"
            )
    runtime = "TFLite" if scheme.tflite_constraints else "onnxruntime"
    decisions = select(
        g,
        cover=cover,
        runtime=runtime,
        exclude=check_exclude(g, exclude),
        op_types=None if op_types is None else frozenset(op_types),
    )
    dtype = QuantType.UINT8 if scheme.activations is ActivationType.UINT8 else QuantType.INT8
    plan = build_plan(g, decisions, _ranges(table), dtype=dtype, tflite=scheme.tflite_constraints)
    qmodel, tensor_map, requantized = write_qdq(src, g, plan, per_channel=scheme.per_channel)
    in_int16: tuple[str, ...] = ()
    if int16_nodes:
        qmodel, in_int16 = apply_int16(qmodel, GraphIndex(src), int16_nodes, _ranges(table), tensor_map)

    meta = {
        META_TENSOR_MAP: json.dumps(tensor_map, sort_keys=True, separators=(",", ":")),
        META_TARGET: target.name,
        META_ACTIVATION_TYPE: dtype.value,
    }
    if int16_nodes:  # written only in 16x8 mode: int8-only models keep their bytes
        meta[META_INT16_NODES] = json.dumps(list(in_int16), separators=(",", ":"))
    kept = [p for p in qmodel.metadata_props if p.key not in meta]
    del qmodel.metadata_props[:]
    qmodel.metadata_props.extend(kept)
    for key in sorted(meta):
        qmodel.metadata_props.add(key=key, value=meta[key])

    quantized: dict[str, int] = {}
    float_ops: list[FloatOp] = []
    folded: list[FoldedActivation] = []
    for i, (node, d) in enumerate(zip(g.nodes, decisions, strict=True)):
        if d.folded_into is not None:
            folded.append(FoldedActivation(g.label(i), node.op_type, g.label(d.folded_into)))
        elif d.quantized:
            quantized[node.op_type] = quantized.get(node.op_type, 0) + 1
        else:
            float_ops.append(FloatOp(g.label(i), node.op_type, d.reason))
    summary = QuantSummary(
        target=target.name,
        activation_type=dtype.value,
        per_channel=scheme.per_channel,
        quantized=quantized,
        float_ops=tuple(float_ops),
        folded=tuple(folded),
        requantized=tuple(requantized),
        tensor_map=tensor_map,
    )
    return QuantizeResult(qmodel, summary)
