"""Deciding what to quantize and with which parameters, before any node is rewritten.

Three passes over the graph in its (topological) order:

1. :func:`select` — per node: quantized, folded into its producer (Relu/Clip), or left in float with a reason.
2. the quantized activation tensors: every float input of a quantized node and every output of one; a folded
   activation's output is represented by its producer's quantized output.
3. parameters: a union-find (:class:`~edgeq.quantize.sharing.SharedParams`) ties tensors that must share a
   scale and zero point, then each group's parameters are computed from its calibrated ranges.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from onnx import helper

from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.quantize.coverage import FOLD_INTO, Kind, data_inputs
from edgeq.quantize.graph import GraphIndex
from edgeq.quantize.params import QParams, QuantType, activation_params, fixed_params
from edgeq.quantize.sharing import SharedParams


@dataclass
class Decision:
    """What happens to one node."""

    kind: Kind | None
    quantized: bool = False
    reason: str = ""  # why it stays float
    folded_into: int | None = None  # a folded Relu/Clip: index of its producer
    fold: int | None = None  # a producer: index of the activation folded into it
    clip_max: float = math.inf  # a folded activation's upper bound


@dataclass
class Plan:
    """Everything the rewrite needs: per-node decisions and per-tensor parameters."""

    decisions: list[Decision]
    #: logical float tensor → physical tensor its QuantizeLinear reads (differs for folded activations)
    sources: dict[str, str]
    params: dict[str, QParams]
    #: (node index, input index) of a constant operand quantized like an activation → its parameters
    const_params: dict[tuple[int, int], QParams] = field(default_factory=dict)
    #: (node index, input index) re-quantized before the node → the parameters it must have there
    requant: dict[tuple[int, int], QParams] = field(default_factory=dict)


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _scalar(g: GraphIndex, name: str) -> float | None:
    value = np.asarray(g.array(name), dtype=np.float64)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _clip_bounds(g: GraphIndex, node) -> tuple[float, float] | str:
    """(lo, hi) of a Relu/Clip, or the reason they are unknown."""
    if node.op_type == "Relu":
        return 0.0, math.inf
    bounds = []
    for j, default in ((1, -math.inf), (2, math.inf)):
        name = node.input[j] if len(node.input) > j else ""
        if not name:
            bounds.append(default)
            continue
        if not g.is_constant(name) or _scalar(g, name) is None:
            return f"its bound '{name}' is not a constant scalar initializer"
        bounds.append(_scalar(g, name))
    return bounds[0], bounds[1]


def _weight_reason(g: GraphIndex, node) -> str:
    """Why a Conv/Gemm/MatMul cannot take int8 weights ('' when it can)."""
    op = node.op_type
    x = node.input[0]
    if g.is_constant(x):
        return f"its input '{x}' is a constant (run edgeq export to fold constant subgraphs)"
    w = node.input[1]
    for name in node.input[1:3]:
        if name and g.is_constant(name) and not g.is_float(name):
            return f"its constant '{name}' is {g.type_name(name)}, not float32"
    if op == "MatMul":
        if g.is_constant(w) and g.array(w).ndim < 2:
            return f"its weight '{w}' is 1-D"
        return ""
    if not g.is_constant(w):
        return f"its weight '{w}' is not a constant initializer"
    wa = g.array(w)
    if op == "Conv" and wa.ndim < 3:
        return f"its weight '{w}' has rank {wa.ndim}"
    if op == "Gemm" and wa.ndim != 2:
        return f"its weight '{w}' has rank {wa.ndim}"
    b = node.input[2] if len(node.input) > 2 else ""
    if not b:
        return ""
    if not g.is_constant(b):
        return f"its bias '{b}' is not a constant initializer"
    ba = g.array(b)
    if op == "Conv":
        if ba.ndim != 1 or ba.shape[0] != wa.shape[0]:
            return f"its bias '{b}' has shape {list(ba.shape)}, not [{wa.shape[0]}]"
        return ""
    n = wa.shape[0] if _attr(node, "transB", 0) else wa.shape[1]
    if ba.size not in (1, n) or ba.ndim > 2 or (ba.ndim == 2 and ba.shape[0] != 1):
        return f"its input C '{b}' of shape {list(ba.shape)} is not a per-output bias of length {n}"
    return ""


def select(
    g: GraphIndex,
    *,
    cover: Mapping[str, Kind],
    runtime: str,
    exclude: frozenset[str],
    op_types: frozenset[str] | None,
) -> list[Decision]:
    """Decide, node by node in graph order, what is quantized, folded or kept in float."""
    decisions: list[Decision] = []
    domain = set(g.inputs)  # tensors already on the integer path: graph inputs and quantized nodes' outputs
    for i, node in enumerate(g.nodes):
        d = Decision(kind=cover.get(node.op_type))
        decisions.append(d)
        d.reason = _float_reason(
            g, i, node, d.kind, runtime=runtime, exclude=exclude, op_types=op_types, domain=domain
        )
        if d.reason:
            continue
        d.quantized = True
        domain.update(o for o in node.output if o)
        if d.kind is Kind.ACTIVATION:
            _try_fold(g, i, node, d, decisions)
    return decisions


def _float_reason(
    g: GraphIndex,
    i: int,
    node,
    kind: Kind | None,
    *,
    runtime: str,
    exclude: frozenset[str],
    op_types: frozenset[str] | None,
    domain: set[str],
) -> str:
    op = node.op_type
    if node.name and node.name in exclude:
        return "excluded"
    if kind is None:
        return f"{runtime} has no int8 kernel for {op}"
    if op_types is not None and op not in op_types:
        return "op type not selected (op_types)"
    for j in data_inputs(op, len(node.input)):
        name = node.input[j]
        if name and g.is_float(name) is False:
            return f"its input '{name}' is {g.type_name(name)}, not float32"
    if not node.output or g.is_float(node.output[0]) is False:
        return f"its output '{node.output[0]}' is {g.type_name(node.output[0])}, not float32"
    if kind is Kind.WEIGHTED:
        return _weight_reason(g, node)
    data = [node.input[j] for j in data_inputs(op, len(node.input)) if node.input[j]]
    if all(g.is_constant(t) for t in data):
        return "all its inputs are constants (run edgeq export to fold constant subgraphs)"
    if kind is Kind.SHARED:
        if len([o for o in node.output if o]) > 1:
            return f"{op} with more than one output"
        if op == "Resize" and _attr(node, "mode", b"nearest") not in (b"nearest", b"linear"):
            return "cubic Resize is not data movement (no int8 kernel)"
        if (
            op == "Pad"
            and _attr(node, "mode", b"constant") == b"constant"
            and len(node.input) > 2
            and node.input[2]
        ):
            value = node.input[2]
            if not g.is_constant(value) or _scalar(g, value) != 0.0:
                return f"it pads with '{value}', not 0 (only a zero pad is exact in int8)"
        x = node.input[0]
        if x not in domain:
            return f"its input '{x}' comes from float node '{g.label(g.producer[x])}'"
    if kind is Kind.ACTIVATION:
        bounds = _clip_bounds(g, node)
        if isinstance(bounds, str):
            return bounds
        x = node.input[0]
        if x not in domain:
            producer = g.producer.get(x)
            return (
                f"its input '{x}' comes from float node '{g.label(producer)}'"
                if producer is not None
                else f"its input '{x}' is not quantized"
            )
    return ""


def _try_fold(g: GraphIndex, i: int, node, d: Decision, decisions: list[Decision]) -> None:
    bounds = _clip_bounds(g, node)
    if isinstance(bounds, str):
        return
    lo, hi = bounds
    x = node.input[0]
    p = g.producer.get(x)
    if p is None or lo != 0.0 or not hi > 0.0:
        return
    pd = decisions[p]
    if not pd.quantized or g.nodes[p].op_type not in FOLD_INTO or pd.fold is not None:
        return
    if g.consumers.get(x) != [(i, 0)] or x in g.output_set or {x, node.output[0]} & g.subgraph_refs:
        return
    d.folded_into, d.clip_max = p, hi
    pd.fold = i


def _activation_inputs(g: GraphIndex, node) -> list[str]:
    names = [node.input[j] for j in data_inputs(node.op_type, len(node.input))]
    return [t for t in names if t and not g.is_constant(t)]


def _ranges_of(ranges: Mapping[str, tuple[float, float]], name: str) -> tuple[float, float]:
    if name not in ranges:
        raise ModelError(
            f"tensor '{name}' has no calibrated range in the calibration table; re-run edgeq "
            "calibrate on this model"
        )
    try:
        lo, hi = (float(v) for v in ranges[name])
    except (TypeError, ValueError):
        raise DataError(
            f"tensor '{name}': calibrated range {ranges[name]!r} is not a pair of numbers; re-run edgeq "
            "calibrate on this model"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise DataError(
            f"tensor '{name}': calibrated range ({lo}, {hi}) is invalid; re-run edgeq calibrate on this model"
        )
    return min(lo, 0.0), max(hi, 0.0)


def _fixed(op: str, *, tflite: bool, dtype: QuantType) -> QParams:
    if tflite:
        # TFLite's int8 kernels assume these output parameters (they are not free choices):
        # SOFTMAX and LOGISTIC produce [0, 1) with scale 1/256 and zero point -128; TANH produces [-1, 1)
        # with scale 1/128 and zero point 0.
        if op in ("Softmax", "Sigmoid"):
            return fixed_params(1.0 / 256.0, -128, dtype)
        if op == "Tanh":
            return fixed_params(1.0 / 128.0, 0, dtype)
    # onnxruntime: a softmax lies in [0, 1] whatever the calibration saw; 1.0 itself stays representable.
    return activation_params(0.0, 1.0, dtype)


def build_plan(
    g: GraphIndex,
    decisions: list[Decision],
    ranges: Mapping[str, tuple[float, float]],
    *,
    dtype: QuantType,
    tflite: bool,
) -> Plan:
    """Collect the quantized tensors and resolve their parameters (see the module docstring)."""
    sources: dict[str, str] = {}
    made_by: dict[str, int] = {}  # logical tensor → index of the quantized node that produces it
    for i, node in enumerate(g.nodes):
        d = decisions[i]
        if not d.quantized:
            continue
        if d.folded_into is not None:
            sources[node.output[0]] = g.nodes[d.folded_into].output[0]
            made_by[node.output[0]] = i
            continue
        for t in _activation_inputs(g, node):
            sources.setdefault(t, t)
        if d.fold is None:
            sources[node.output[0]] = node.output[0]
            made_by[node.output[0]] = i

    shared = SharedParams(dtype)
    for t in sources:  # registration in a deterministic order: first use in the graph
        i = made_by.get(t)
        d = decisions[i] if i is not None else None
        if d is not None and d.folded_into is not None:
            # The clip's own bounds cap the range, so the int8 clamp implements it exactly; a dead activation
            # (always 0) takes the clip's full range when it has one.
            hi = max(0.0, min(_ranges_of(ranges, t)[1], d.clip_max))
            if hi == 0.0 and math.isfinite(d.clip_max):
                hi = d.clip_max
            shared.add(("t", t), value_range=(0.0, hi), fold_max=d.clip_max)
        elif d is not None and d.kind is Kind.FIXED:
            shared.add(("t", t), fixed=_fixed(g.nodes[i].op_type, tflite=tflite, dtype=dtype))
        elif d is not None and d.kind is Kind.SHARED:
            shared.add(("t", t))  # data movement: follows its input, adds no range of its own
        else:
            shared.add(("t", t), value_range=_ranges_of(ranges, t))

    requant_keys: dict[tuple[int, int], str] = {}
    for i, node in enumerate(g.nodes):
        d = decisions[i]
        if not d.quantized or d.folded_into is not None:
            continue
        out = ("t", node.output[0] if d.fold is None else g.nodes[d.fold].output[0])
        if d.kind in (Kind.BINARY, Kind.CONCAT):
            for j in data_inputs(node.op_type, len(node.input)):
                c = node.input[j]
                if c and g.is_constant(c):
                    values = np.asarray(g.array(c), dtype=np.float64)
                    shared.add(
                        ("c", i, j),
                        value_range=(min(float(values.min()), 0.0), max(float(values.max()), 0.0)),
                    )
        if d.kind is Kind.SHARED:
            # onnxruntime drops the Q/DQ around data movement only when both sides have equal parameters;
            # TFLite's MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE, SQUEEZE, TRANSPOSE, PAD, RESIZE require it.
            # The output is still a fresh singleton here (its consumers come later), so this cannot conflict.
            if not shared.link(("t", node.input[0]), out):
                raise RuntimeError(f"internal error: cannot share parameters across '{g.label(i)}'")
        elif d.kind is Kind.CONCAT and tflite:
            # TFLite's int8 CONCATENATION does not rescale: every input takes the output's parameters.
            for j in data_inputs(node.op_type, len(node.input)):
                name = node.input[j]
                if not name:
                    continue
                key = ("c", i, j) if g.is_constant(name) else ("t", name)
                if not shared.link(key, out):
                    requant_keys[(i, j)] = out[1]

    plan = Plan(decisions, sources, {t: shared.params(("t", t)) for t in sources})
    for i, node in enumerate(g.nodes):
        for j in range(len(node.input)):
            if ("c", i, j) in shared:
                plan.const_params[(i, j)] = shared.params(("c", i, j))
    plan.requant = {k: plan.params[t] for k, t in requant_keys.items()}
    return plan


def check_exclude(g: GraphIndex, exclude: Sequence[str]) -> frozenset[str]:
    """Every excluded name must be a node of the model."""
    names = {n.name for n in g.nodes if n.name}
    for name in exclude:
        if name not in names:
            near = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f"did you mean '{near[0]}'?" if near else "list node names with `edgeq inspect`"
            raise ConfigError(f"exclude: the model has no node named '{name}'; {hint}")
    return frozenset(exclude)
