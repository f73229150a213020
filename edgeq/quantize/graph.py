"""A read-only index of an ONNX graph: producers, consumers, constants, element types, fresh names."""

from __future__ import annotations

import onnx
from onnx import TensorProto, numpy_helper


class GraphIndex:
    """Lookups over ``model.graph`` that the quantizer needs; nothing here mutates the model."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.inputs: list[str] = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs: list[str] = [v.name for v in graph.output]
        self.output_set = frozenset(self.outputs)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        for i, node in enumerate(self.nodes):
            for j, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((i, j))
            for name in node.output:
                if name:
                    self.producer[name] = i
        # Names read inside If/Loop/Scan bodies from the outer scope must keep existing under their name.
        self.subgraph_refs: frozenset[str] = frozenset(_subgraph_inputs(graph))
        self.elem_types: dict[str, int] = {}
        self.shapes: dict[str, onnx.TensorShapeProto] = {}
        for vi in (*graph.input, *graph.output, *graph.value_info, *_inferred_value_info(model)):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.elem_types.setdefault(vi.name, vi.type.tensor_type.elem_type)
                if vi.type.tensor_type.HasField("shape"):
                    self.shapes.setdefault(vi.name, vi.type.tensor_type.shape)
        for t in graph.initializer:
            self.elem_types[t.name] = t.data_type
        self._arrays: dict[str, object] = {}
        self._used: set[str] = set(self.initializers) | set(self.producer) | set(self.consumers)
        self._used |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
        self._used |= {n.name for n in self.nodes if n.name}

    def label(self, index: int) -> str:
        """The node's name, or ``<OpType #index>`` for an unnamed node."""
        node = self.nodes[index]
        return node.name or f"<{node.op_type} #{index}>"

    def is_constant(self, name: str) -> bool:
        return name in self.initializers

    def array(self, name: str):
        """The value of initializer ``name`` as a numpy array (cached)."""
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.initializers[name])
        return self._arrays[name]

    def is_float(self, name: str) -> bool | None:
        """True/False when the element type is known, None when it is not."""
        t = self.elem_types.get(name)
        return None if t is None else t == TensorProto.FLOAT

    def type_name(self, name: str) -> str:
        t = self.elem_types.get(name)
        return "of unknown type" if t is None else TensorProto.DataType.Name(t).lower()

    def value_info(self, like: str, name: str, elem_type: int) -> onnx.ValueInfoProto | None:
        """A ValueInfo for ``name`` with the shape of tensor ``like`` (None when that shape is unknown)."""
        shape = self.shapes.get(like)
        if shape is None:
            return None
        vi = onnx.ValueInfoProto(name=name)
        vi.type.tensor_type.elem_type = elem_type
        vi.type.tensor_type.shape.CopyFrom(shape)
        return vi

    def fresh(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2`` …: a name not used anywhere in the graph yet (now reserved)."""
        name, k = base, 0
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            bodies = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for body in bodies:
                names.update(t for n in body.node for t in n.input)
                names |= _subgraph_inputs(body)
    return names


def _inferred_value_info(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    # Element types of intermediate tensors decide what can be quantized; the exported model normally has them
    # already, shape inference fills the gaps. A model it cannot process keeps what it declares.
    try:
        return list(onnx.shape_inference.infer_shapes(model, strict_mode=False).graph.value_info)
    except Exception:
        return []
