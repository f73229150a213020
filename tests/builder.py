"""A small graph builder for tests: tiny ONNX models with seeded weights, onnx.helper underneath."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Append nodes one by one; every call returns the new tensor's name.

    >>> g = GraphBuilder("x", (1, 3, 8, 8), seed=0)
    >>> y = g.relu(g.conv(g.input, 8, 3))
    >>> model = g.build(y)
    """

    def __init__(
        self,
        input_name: str = "input",
        shape: tuple[int, ...] = (1, 3, 8, 8),
        *,
        seed: int = 0,
        opset: int = 17,
    ):
        self.rng = np.random.default_rng(seed)
        self.input = input_name
        self.inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(shape))]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.opset = opset
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int = 3,
        *,
        stride: int = 1,
        group: int = 1,
        pad: int | None = None,
        bias: bool = True,
        dilation: int = 1,
    ) -> str:
        pad = (k // 2) * dilation if pad is None else pad
        w = self.rng.normal(0, (2.0 / (cin // group * k * k)) ** 0.5, (cout, cin // group, k, k)).astype(
            np.float32
        )
        ins = [x, self.const(w)]
        if bias:
            ins.append(self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "b"))
        return self.op(
            "Conv",
            ins,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=group,
            dilations=[dilation, dilation],
        )

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def relu6(self, x: str) -> str:
        return self.op("Clip", [x, self.const(np.float32(0), "lo"), self.const(np.float32(6), "hi")])

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def gap(self, x: str) -> str:
        return self.op("GlobalAveragePool", [x])

    def flatten(self, x: str) -> str:
        return self.op("Flatten", [x], axis=1)

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = self.rng.normal(0, (1.0 / cin) ** 0.5, (cout, cin)).astype(np.float32)
        b = self.rng.normal(0, 0.1, cout).astype(np.float32)
        return self.op("Gemm", [x, self.const(w), self.const(b, "b")], transB=1)

    def build(self, *outputs: str, name: str = "test") -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, name, self.inputs, outs, self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="edgeq-tests"
        )
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        return model


def small_cnn(seed: int = 0, shape: tuple[int, ...] = (1, 3, 16, 16)) -> onnx.ModelProto:
    """conv-relu → depthwise-relu6 → pointwise (+ residual) → GAP → Gemm: the shapes edgeq must handle."""
    g = GraphBuilder("input", shape, seed=seed)
    c = shape[1]
    x = g.relu(g.conv(g.input, c, 8, 3))
    y = g.relu6(g.conv(x, 8, 8, 3, group=8))
    y = g.conv(y, 8, 8, 1)
    x = g.add(x, y)
    x = g.flatten(g.gap(x))
    return g.build(g.gemm(x, 8, 10))
