"""TFLite's 16x8 mode in the QDQ model: chosen Conv/Gemm/MatMul/Add nodes get int16 activations.

:func:`apply_int16` rewrites a finished int8 QDQ model (from :func:`edgeq.quantize.rewrite.write_qdq`) around
each named node N:

* every activation input ``t_dq`` (an int8 DequantizeLinear's output) is re-quantized to int16:
  ``t_dq → Q16 → DQ16 → N`` — in TFLite a QUANTIZE int8 → int16. When ``t`` comes from another int16 node
  without a folded activation, N reads that node's int16 value directly (no int8 in between).
* the output keeps its int8 pair for the other consumers, preceded by an int16 one:
  ``N → y → Q16 → DQ16 → Q8 → DQ8`` — in TFLite the int16 op, then a QUANTIZE int16 → int8. A folded
  Relu/Clip stays exact: the int8 pair's clamp (zero point at 0) implements it.
* weights stay int8 symmetric (per channel when the target says so); the int32 bias is re-quantized for the
  int16 input scale (``s16 · s_w``), the weight scales raised where the bias would not fit int32.

int16 activations are symmetric: zero point 0, scale ``max|x| / 32767`` from the calibrated range — what
TFLite's 16x8 kernels require. int16 QuantizeLinear/DequantizeLinear need ONNX opset 21; edgeq's models are
opset 17, and moving the whole model to 21 changes other operators (ReduceMean's axes become an input), so
the int16 pairs use onnxruntime's ``com.microsoft`` QuantizeLinear/DequantizeLinear, which accept int16.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import ConfigError
from edgeq.quantize.graph import GraphIndex
from edgeq.quantize.params import bias_scales, fit_bias, quantize_bias, quantize_weights, weight_scales

MS_DOMAIN = "com.microsoft"
INT16_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add"})
_INT16_MAX = 32767


def int16_scale(lo: float, hi: float) -> float:
    """float32 symmetric scale ``max(|lo|, |hi|) / 32767`` (a zero range gets 1/32767)."""
    absmax = max(abs(float(lo)), abs(float(hi)))
    return float(np.float32((absmax if absmax > 0 else 1.0) / _INT16_MAX))


def check_int16_nodes(model: onnx.ModelProto, names: Sequence[str], *, target: str, tflite: bool) -> None:
    """Every name is a Conv/Gemm/MatMul/Add node of the model, and the target runs TFLite's 16x8 kernels."""
    if names and not tflite:
        raise ConfigError(
            f"int16_nodes: target '{target}' runs onnxruntime, which has no 16x8 kernels; keep those layers "
            "in float with exclude=... instead"
        )
    by_name = {n.name: n for n in model.graph.node if n.name}
    for name in names:
        node = by_name.get(name)
        if node is None:
            near = difflib.get_close_matches(name, sorted(by_name), n=1)
            hint = f"did you mean '{near[0]}'?" if near else "list node names with `edgeq inspect`"
            raise ConfigError(f"int16_nodes: the model has no node named '{name}'; {hint}")
        if node.op_type not in INT16_OPS:
            raise ConfigError(
                f"int16_nodes: node '{name}' is {node.op_type}; TFLite's 16x8 mode covers "
                f"{', '.join(sorted(INT16_OPS))}"
            )


class _Rewriter:
    def __init__(self, qmodel: onnx.ModelProto, src: GraphIndex, ranges: Mapping[str, tuple[float, float]]):
        self.m = qmodel
        self.g = GraphIndex(qmodel)  # fresh names, unique in the quantized graph
        self.src = src
        self.ranges = ranges
        self.inits: list[onnx.TensorProto] = []
        self.vis: list[onnx.ValueInfoProto] = []
        self.producer = {o: n for n in qmodel.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in qmodel.graph.node:
            for t in n.input:
                self.consumers.setdefault(t, []).append(n)
        self.extra_before: dict[int, list[onnx.NodeProto]] = {}  # id(node) → copied weight/bias DQs

    def init(self, base: str, array: np.ndarray) -> str:
        name = self.g.fresh(base)
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def pair16(self, base: str, src: str, scale: float, shape_like: str) -> tuple[list[onnx.NodeProto], str]:
        """src → Q16 → DQ16 (com.microsoft, zero point 0); returns the nodes and the DQ16 output."""
        s = self.init(f"{base}_int16_scale", np.array(scale, dtype=np.float32))
        z = self.init(f"{base}_int16_zero_point", np.array(0, dtype=np.int16))
        q, dq = self.g.fresh(f"{base}_q16"), self.g.fresh(f"{base}_dq16")
        nodes = [
            helper.make_node(
                "QuantizeLinear",
                [src, s, z],
                [q],
                name=self.g.fresh(f"{base}_QuantizeLinear16"),
                domain=MS_DOMAIN,
            ),
            helper.make_node(
                "DequantizeLinear",
                [q, s, z],
                [dq],
                name=self.g.fresh(f"{base}_DequantizeLinear16"),
                domain=MS_DOMAIN,
            ),
        ]
        shape = self._shape(shape_like)
        if shape is not None:
            self.vis.append(helper.make_tensor_value_info(q, TensorProto.INT16, shape))
            self.vis.append(helper.make_tensor_value_info(dq, TensorProto.FLOAT, shape))
        return nodes, dq

    def _shape(self, name: str):
        for v in (*self.m.graph.value_info, *self.m.graph.input, *self.m.graph.output, *self.vis):
            if v.name == name and v.type.tensor_type.HasField("shape"):
                return [
                    d.dim_value if d.HasField("dim_value") else d.dim_param
                    for d in v.type.tensor_type.shape.dim
                ]
        return None

    def scale_of(self, logical: str) -> float:
        lo, hi = (float(v) for v in self.ranges[logical])
        return int16_scale(lo, hi)

    def own_dq(self, node: onnx.NodeProto, j: int) -> onnx.NodeProto:
        """The DequantizeLinear feeding input ``j`` of ``node``, copied first when other nodes share it."""
        dq = self.producer[node.input[j]]
        if len(self.consumers.get(node.input[j], [])) == 1:
            return dq
        clone = onnx.NodeProto()
        clone.CopyFrom(dq)
        clone.name = self.g.fresh(f"{dq.name}_16x8")
        del clone.output[:]
        clone.output.append(self.g.fresh(f"{node.input[j]}_16x8"))
        self.extra_before.setdefault(id(node), []).append(clone)
        node.input[j] = clone.output[0]
        return clone

    def requant_weighted(self, node: onnx.NodeProto, src_node: onnx.NodeProto, s16: float) -> None:
        """Re-quantize N's int8 weight and int32 bias from the float model for the int16 input scale."""
        if node.op_type == "MatMul" and not self.src.is_constant(src_node.input[1]):
            return  # activation × activation: no weight
        w_dq = self.own_dq(node, 1)
        weight = np.asarray(self.src.array(src_node.input[1]), dtype=np.float64)
        attrs = {a.name: helper.get_attribute_value(a) for a in src_node.attribute}
        alpha = float(attrs.get("alpha", 1.0)) if node.op_type == "Gemm" else 1.0
        beta = float(attrs.get("beta", 1.0)) if node.op_type == "Gemm" else 1.0
        weight = weight * alpha
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            axis = 0 if attrs.get("transB", 0) else 1
        else:
            axis = weight.ndim - 1
        per_channel = any(a.name == "axis" for a in w_dq.attribute)
        qaxis = axis if per_channel else None
        scales = weight_scales(weight, qaxis)
        bname = src_node.input[2] if len(src_node.input) > 2 else ""
        bias = None
        if bname:
            bias = np.asarray(self.src.array(bname), dtype=np.float64).reshape(-1) * beta
            bias = np.broadcast_to(bias, (weight.shape[axis],)).copy()
            scales = fit_bias(bias, s16, scales)
        store = scales if per_channel else scales.reshape(())
        base = src_node.input[1]
        w_dq.input[0] = self.init(f"{base}_q16x8", quantize_weights(weight, scales, qaxis))
        w_dq.input[1] = self.init(f"{base}_scale16x8", store)
        w_dq.input[2] = self.init(f"{base}_zero_point16x8", np.zeros(store.shape, dtype=np.int8))
        if bias is not None:
            b_dq = self.own_dq(node, 2)
            bscale = bias_scales(s16, store)
            b_dq.input[0] = self.init(f"{bname}_q16x8", quantize_bias(bias, bscale))
            b_dq.input[1] = self.init(f"{bname}_scale16x8", bscale)
            b_dq.input[2] = self.init(f"{bname}_zero_point16x8", np.zeros(bscale.shape, dtype=np.int32))


def apply_int16(
    qmodel: onnx.ModelProto,
    src: GraphIndex,
    names: Sequence[str],
    ranges: Mapping[str, tuple[float, float]],
    tensor_map: Mapping[str, str],
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """Rewrite ``qmodel`` so that the nodes ``names`` run in 16x8 (see the module docstring).

    ``src``: the float model's index (for the float weights and biases); ``tensor_map``: float tensor →
    its DQ output in ``qmodel``. Returns the model and the names of the nodes actually in int16 (a named node
    that the target left in float stays float).
    """
    wanted = set(names)
    if not wanted:
        return qmodel, ()
    rw = _Rewriter(qmodel, src, ranges)
    logical_of = {dq: t for t, dq in tensor_map.items()}
    src_nodes = {n.name: n for n in src.nodes if n.name}
    # DQ8 output of an int16 node → its DQ16 twin, for int16 consumers (only without a folded activation).
    direct: dict[str, str] = {}
    before: dict[int, list[onnx.NodeProto]] = {}  # id(node) → nodes to insert before it
    after: dict[int, list[onnx.NodeProto]] = {}
    done: list[str] = []
    for node in list(qmodel.graph.node):
        if node.name not in wanted or node.domain not in ("", "ai.onnx"):
            continue
        sn = src_nodes[node.name]
        data = (
            [0, 1]
            if node.op_type in ("Add",) or (node.op_type == "MatMul" and not src.is_constant(sn.input[1]))
            else [0]
        )
        if not all(node.input[j] in logical_of or node.input[j] in direct for j in data):
            continue  # left in float by the target: nothing to do
        out = node.output[0]
        q8 = [c for c in rw.consumers.get(out, []) if c.op_type == "QuantizeLinear"]
        if len(q8) != 1:
            continue
        dq8 = rw.consumers[q8[0].output[0]][0]
        out_logical = logical_of[dq8.output[0]]
        s_in = None
        for j in data:
            t = node.input[j]
            if t in direct:
                node.input[j] = direct[t]
                s_in = s_in if s_in is not None else rw.scale_of(logical_of[t])
                continue
            logical = logical_of[t]
            s = rw.scale_of(logical)
            s_in = s if s_in is None else s_in
            nodes, dq16 = rw.pair16(f"{logical}_to16", t, s, t)
            before.setdefault(id(node), []).extend(nodes)
            node.input[j] = dq16
        if node.op_type != "Add":
            rw.requant_weighted(node, sn, s_in)
        src16 = out
        act_nodes: list[onnx.NodeProto] = []
        if out_logical != sn.output[0]:
            # A folded Relu/Clip(0, hi): int16 is symmetric, so its Q/DQ cannot clamp at 0 as the int8 pair
            # does: the activation is put back as a node (the lowering folds it into the 16x8 op's clamp).
            act = src.nodes[src.producer[out_logical]]
            src16 = rw.g.fresh(f"{out_logical}_int16_act")
            ins = [out]
            if act.op_type == "Clip":
                lo, hi = (float(np.asarray(src.array(t)).reshape(-1)[0]) for t in act.input[1:3])
                ins += [
                    rw.init(f"{out_logical}_int16_lo", np.array(lo, np.float32)),
                    rw.init(f"{out_logical}_int16_hi", np.array(hi, np.float32)),
                ]
            act_nodes.append(
                helper.make_node(act.op_type, ins, [src16], name=rw.g.fresh(f"{act.name}_int16"))
            )
        nodes, dq16 = rw.pair16(f"{out_logical}_int16", src16, rw.scale_of(out_logical), dq8.output[0])
        q8[0].input[0] = dq16
        after.setdefault(id(node), []).extend(act_nodes + nodes)
        direct[dq8.output[0]] = dq16
        done.append(node.name)

    graph = qmodel.graph
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:
        ordered.extend(rw.extra_before.get(id(node), []))
        ordered.extend(before.get(id(node), []))
        ordered.append(node)
        ordered.extend(after.get(id(node), []))
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(rw.inits)
    used = {t for n in graph.node for t in n.input}
    kept = [t for t in graph.initializer if t.name in used or t.name in {i.name for i in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.value_info.extend(rw.vis)
    if not any(o.domain == MS_DOMAIN for o in qmodel.opset_import):
        qmodel.opset_import.add(domain=MS_DOMAIN, version=1)
    return qmodel, tuple(done)
