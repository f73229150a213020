"""Float outputs: a QDQ → QDQ transform that stops quantizing a graph output onnxruntime can give in float.

A classifier's logits are its decisions: quantizing them to one per-tensor int8 grid rounds away the
difference between the top two classes whenever the logits' range across inputs is wide (a quiet sound gets
the same step as a loud one). onnxruntime does not need that last quantization: a ``DequantizeLinear →
Gemm`` (or ``MatMul``) without a ``QuantizeLinear`` after it still runs in int8 — its QDQ fusion makes a
``QGemm`` (``MatMulIntegerToFloat``) that scales the int32 accumulator straight to float32 — so the output
keeps the full precision of the accumulator at no cost. A quantized Add or Mul producing an output then
computes in float from its int8 inputs, one elementwise op. Conv outputs keep their quantization:
onnxruntime would run the convolution itself in float.

Only for targets whose primary runtime is onnxruntime; TFLite and the C backend produce int8 outputs (with
float I/O they dequantize that int8 value).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from edgeq.quantize import QuantizeResult

#: Producers whose float output onnxruntime computes from int8 operands without a QuantizeLinear after them.
FLOAT_OUTPUT_OPS = frozenset({"Gemm", "MatMul", "Add", "Mul"})


@dataclass(frozen=True)
class FloatOutputsResult:
    """The QDQ model with float outputs, and the graph outputs changed."""

    model: onnx.ModelProto
    outputs: tuple[str, ...]


def float_outputs(model: onnx.ModelProto | QuantizeResult) -> FloatOutputsResult:
    """Remove the QuantizeLinear → DequantizeLinear pair in front of every graph output that a quantized
    Gemm / MatMul / Add / Mul produces (see the module docstring). The input is not modified."""
    src = model.model if isinstance(model, QuantizeResult) else model
    out = onnx.ModelProto()
    out.CopyFrom(src)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    graph_outputs = {o.name for o in graph.output}
    changed, drop_nodes, params = [], set(), set()
    for name in [o.name for o in graph.output]:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or readers.get(dq.input[0], 0) != 1:
            continue
        node = producer.get(q.input[0])
        if node is None or node.op_type not in FLOAT_OUTPUT_OPS or readers.get(q.input[0], 0) != 1:
            continue
        if q.input[0] in graph_outputs:
            continue
        quantized_inputs = [producer.get(i) for i in node.input[:2] if i]
        if not any(p is not None and p.op_type == "DequantizeLinear" for p in quantized_inputs):
            continue  # a float node: nothing to gain
        node.output[0] = name
        drop_nodes.update((id(q), id(dq)))
        params.update(q.input[1:])
        params.update(dq.input[1:])
        changed.append(name)
    if not changed:
        return FloatOutputsResult(out, ())
    kept = [n for n in graph.node if id(n) not in drop_nodes]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used or t.name not in params]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    alive = {t for n in graph.node for t in (*n.input, *n.output)}
    vis = [v for v in graph.value_info if v.name in alive and v.name not in graph_outputs]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    return FloatOutputsResult(out, tuple(changed))


def float_output_names(model: onnx.ModelProto) -> tuple[str, ...]:
    """The graph outputs a quantized Gemm / MatMul / Add / Mul writes in float (no output quantization)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names = []
    for out in model.graph.output:
        node = producer.get(out.name)
        if node is None or node.op_type not in FLOAT_OUTPUT_OPS:
            continue
        if any(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input[:2]
        ):
            names.append(out.name)
    return tuple(names)
