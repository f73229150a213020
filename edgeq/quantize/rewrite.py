"""Writing the QDQ graph from a :class:`~edgeq.quantize.plan.Plan`.

The canonical form, which onnxruntime's graph optimizer fuses and edgeq's lowering reads:

* a quantized activation X: ``X → QuantizeLinear → X_q → DequantizeLinear → X_dq``; every consumer reads
  X_dq, so the producer's only consumer is the QuantizeLinear (required for the producer to be fused). For a
  graph output the DequantizeLinear writes the output's own name and the producer writes ``X_float``.
* a folded Relu/Clip Y = act(X): the node is gone; X → QuantizeLinear (Y's parameters) → Y_q → … → Y_dq.
* weights: int8 initializer + DequantizeLinear (``axis`` for per-channel); bias: int32 initializer with
  scale = input scale × weight scale, zero point 0, + DequantizeLinear; a constant operand of Add/Mul/Concat:
  an initializer in the activation type + DequantizeLinear.

Nodes keep the original order; the new Q/DQ nodes sit right after the node producing their input (graph
inputs' at the top), weight DQs right before their first consumer, so the graph stays topologically sorted.
All new names come from :meth:`GraphIndex.fresh` in a fixed order: identical inputs give identical bytes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeq.quantize.coverage import Kind
from edgeq.quantize.graph import GraphIndex
from edgeq.quantize.params import (
    QParams,
    bias_scales,
    fit_bias,
    quantize_bias,
    quantize_weights,
    weight_scales,
)
from edgeq.quantize.plan import Plan
from edgeq.quantize.summary import Requantization


class _Writer:
    def __init__(self, g: GraphIndex, plan: Plan, *, per_channel: bool):
        self.g, self.plan, self.per_channel = g, plan, per_channel
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self.replaced: set[str] = set()  # float initializers that were quantized (removed when unused)
        self._const_cache: dict[tuple, str] = {}

    # -- small builders -------------------------------------------------------------------------------------
    def init(self, base: str, array: np.ndarray) -> str:
        name = self.g.fresh(base)
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def add_vi(self, like: str, name: str, elem_type: int) -> None:
        vi = self.g.value_info(like, name, elem_type)
        if vi is not None:
            self.value_info.append(vi)

    def params_inits(self, base: str, p: QParams) -> tuple[str, str]:
        return self.init(f"{base}_scale", p.scale_array()), self.init(
            f"{base}_zero_point", p.zero_point_array()
        )

    def dq(self, base: str, q_name: str, scale: str, zp: str, out: str, axis: int | None) -> None:
        attrs = {"axis": axis} if axis is not None else {}
        self.nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [q_name, scale, zp],
                [out],
                name=self.g.fresh(f"{base}_DequantizeLinear"),
                **attrs,
            )
        )

    def qdq_pair(self, base: str, src: str, p: QParams, dq_out: str, like: str) -> str:
        """src → Q → base_q → DQ → dq_out; returns the quantized tensor's name."""
        scale, zp = self.params_inits(base, p)
        q_out = self.g.fresh(f"{base}_q")
        self.nodes.append(
            helper.make_node(
                "QuantizeLinear", [src, scale, zp], [q_out], name=self.g.fresh(f"{base}_QuantizeLinear")
            )
        )
        self.dq(base, q_out, scale, zp, dq_out, None)
        self.add_vi(like, q_out, p.dtype.onnx)
        return q_out

    def const_dq(
        self,
        key: tuple,
        base: str,
        q: np.ndarray,
        scale: np.ndarray,
        zp: np.ndarray,
        axis: int | None,
    ) -> str:
        """An initializer stored quantized, dequantized once (shared by identical uses)."""
        if key in self._const_cache:
            return self._const_cache[key]
        q_name = self.init(f"{base}_q", q)
        s_name = self.init(f"{base}_scale", scale)
        z_name = self.init(f"{base}_zero_point", zp)
        out = self.g.fresh(f"{base}_dq")
        self.dq(base, q_name, s_name, z_name, out, axis)
        self.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, list(q.shape)))
        self._const_cache[key] = out
        return out


def _weighted_inputs(w: _Writer, node: onnx.NodeProto, in_params: QParams) -> list[str]:
    """Quantize the weight (and bias) of Conv/Gemm/MatMul; returns the node's new inputs."""
    g = w.g
    op = node.op_type
    inputs = list(node.input)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    wname = node.input[1]
    if op == "MatMul" and not g.is_constant(wname):
        return inputs  # activation × activation: both inputs are quantized activations
    weight = np.asarray(g.array(wname), dtype=np.float64)
    alpha = float(attrs.get("alpha", 1.0)) if op == "Gemm" else 1.0
    beta = float(attrs.get("beta", 1.0)) if op == "Gemm" else 1.0
    weight = weight * alpha  # Gemm's alpha folded into the weights, beta into the bias: alpha = beta = 1
    if op == "Conv":
        axis = 0  # output channels of (M, C/group, kH, kW)
    elif op == "Gemm":
        axis = 0 if attrs.get("transB", 0) else 1  # B is (N, K) with transB, else (K, N)
    else:
        axis = weight.ndim - 1  # MatMul's B is (..., K, N): one scale per output column
    channels = weight.shape[axis]
    qaxis = axis if w.per_channel else None
    scales = weight_scales(weight, qaxis)
    bname = node.input[2] if len(node.input) > 2 else ""
    bias = None
    if bname:
        bias = np.asarray(g.array(bname), dtype=np.float64).reshape(-1) * beta
        bias = np.broadcast_to(bias, (channels,)).copy()  # Gemm's scalar or (1, N) C becomes (N,)
        scales = fit_bias(bias, in_params.scale[0], scales)
    q = quantize_weights(weight, scales, qaxis)
    store_scales = scales if w.per_channel else scales.reshape(())
    zp = np.zeros(store_scales.shape, dtype=np.int8)
    inputs[1] = w.const_dq(("w", wname, alpha, qaxis, scales.tobytes()), wname, q, store_scales, zp, qaxis)
    w.replaced.add(wname)
    if bias is not None:
        bscale = bias_scales(in_params.scale[0], store_scales)
        bq = quantize_bias(bias, bscale)
        bzp = np.zeros(bscale.shape, dtype=np.int32)
        inputs[2] = w.const_dq(
            ("b", bname, beta, bscale.tobytes()), bname, bq, bscale, bzp, 0 if w.per_channel else None
        )
        w.replaced.add(bname)
    return inputs


def write_qdq(
    model: onnx.ModelProto, g: GraphIndex, plan: Plan, *, per_channel: bool
) -> tuple[onnx.ModelProto, dict[str, str], list[Requantization]]:
    """The QDQ model, the tensor map (float name → DQ output name) and the re-quantizations made."""
    w = _Writer(g, plan, per_channel=per_channel)
    inputs = set(g.inputs)
    # Names first, in the plan's order, so that they do not depend on the emission order below.
    dq_name: dict[str, str] = {}
    renamed: dict[str, str] = {}  # a producer output that must change name (its DQ takes the graph output's)
    emit_after: dict[int, list[str]] = {}  # producer index (-1: graph inputs) → logical tensors
    for t, src in plan.sources.items():
        if t in g.output_set and t not in inputs:
            dq_name[t] = t
            if src == t:
                renamed[src] = g.fresh(f"{t}_float")
        else:
            dq_name[t] = g.fresh(f"{t}_dq")
        emit_after.setdefault(g.producer.get(src, -1), []).append(t)

    def emit_qdq(index: int) -> None:
        for t in emit_after.get(index, []):
            src = renamed.get(plan.sources[t], plan.sources[t])
            w.qdq_pair(t, src, plan.params[t], dq_name[t], like=t)
            if dq_name[t] != t:
                w.add_vi(t, dq_name[t], TensorProto.FLOAT)
            if src != plan.sources[t]:
                w.add_vi(t, src, TensorProto.FLOAT)

    requantized: list[Requantization] = []
    emit_qdq(-1)
    for i, node in enumerate(g.nodes):
        d = plan.decisions[i]
        if d.folded_into is not None:
            w.replaced.update(t for t in node.input[1:] if t in g.initializers)  # its bounds, if now unused
            continue  # the producer's quantized output implements it
        new_inputs = [dq_name.get(t, t) if t else t for t in node.input]
        weighted = d.quantized and d.kind is Kind.WEIGHTED
        if weighted:
            new_inputs = _weighted_inputs(w, node, plan.params[node.input[0]])
            new_inputs[0] = dq_name[node.input[0]]
            if node.op_type == "MatMul" and node.input[1] in dq_name:
                new_inputs[1] = dq_name[node.input[1]]
        for (ci, j), p in plan.const_params.items():
            if ci == i:
                c = node.input[j]
                q = p.quantize(np.asarray(g.array(c)))
                new_inputs[j] = w.const_dq(("c", c, p), c, q, p.scale_array(), p.zero_point_array(), None)
                w.replaced.add(c)
        for (ri, j), p in sorted(plan.requant.items()):
            if ri == i:
                t = node.input[j]
                out = g.fresh(f"{t}_requant_dq")
                w.qdq_pair(f"{t}_requant", new_inputs[j], p, out, like=t)
                new_inputs[j] = out
                requantized.append(Requantization(g.label(i), t))
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(new_inputs)
        if weighted and node.op_type == "Gemm":  # alpha and beta were folded into the weight and bias
            kept = [a for a in node.attribute if a.name not in ("alpha", "beta")]
            del new.attribute[:]
            new.attribute.extend(kept)
        for k, o in enumerate(new.output):
            new.output[k] = renamed.get(o, o)
        w.nodes.append(new)
        emit_qdq(i)

    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    graph = out_model.graph
    used = {t for n in w.nodes for t in n.input} | set(g.outputs) | g.subgraph_refs
    drop = {name for name in w.replaced if name not in used}
    kept_inits = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + w.inits)
    kept_inputs = [v for v in graph.input if v.name not in drop]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    del graph.node[:]
    graph.node.extend(w.nodes)
    alive = {t for n in w.nodes for t in (*n.input, *n.output)}
    declared = {v.name for v in (*graph.input, *graph.output)}
    vis = [v for v in graph.value_info if v.name in alive and v.name not in declared]
    seen = {v.name for v in vis}
    vis += [v for v in w.value_info if v.name not in seen and v.name not in declared and v.name in alive]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    return out_model, {t: dq_name[t] for t in plan.sources}, requantized
