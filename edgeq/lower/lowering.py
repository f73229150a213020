"""QDQ ONNX → integer :class:`~edgeq.lower.program.Program`.

The input is a static-shape, int8 QDQ model (edgeq.quantize's canonical form ``X → QuantizeLinear → X_q →
DequantizeLinear → X_dq → consumer``, or onnxruntime's ``quantize_static(QuantFormat.QDQ)``). Every float
compute node must sit between DequantizeLinear inputs and a QuantizeLinear output; it becomes one integer op
whose requantization is precomputed (see :mod:`edgeq.lower.options`).

How the walk works: values are tracked per ONNX tensor name as

* a *quantized value* (:class:`_QV`): a program tensor, its quantization, the ONNX shape and the permutation
  from the ONNX layout to the program layout (NCHW tensors are held NHWC: ``perm = (0, 2, 3, 1)``);
* a *pending* op (:class:`_Pending`): a float node whose output quantization is only known at the
  QuantizeLinear that follows it (Relu/Clip in between fold into its clamp);
* a *quantized constant* (:class:`_QConst`, a DequantizeLinear of an initializer), or a float constant;
* a *float path*: a graph input seen through data movement only (Reshape/Transpose/…) before its first
  QuantizeLinear; quantization commutes with data movement, so the program input is the quantized graph
  input and the movement is replayed in int8.

ONNX Transpose nodes become relabelings of the layout (no op) when possible; TRANSPOSE ops are inserted only
where a consumer needs another layout, and a final pass turns transposes that move only size-1 axes into
RESHAPEs, merges reshape chains and drops identities, so a model whose input is NHWC (or NCHW with the
program input taken NHWC) runs with no layout ops at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq import onnxutil
from edgeq.errors import ModelError, UnsupportedError
from edgeq.lower import kernels as K
from edgeq.lower import options as O
from edgeq.lower.fixedpoint import f64
from edgeq.lower.int16 import ADD_LEFT_SHIFT_INT16, INT16_MAX, INT16_MIN
from edgeq.lower.program import (
    Activation,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    FusedActivation,
    IOBinding,
    Op,
    OpKind,
    PadOptions,
    Pool2DOptions,
    Program,
    QParams,
    ReshapeOptions,
    ResizeOptions,
    TensorInfo,
    TransposeOptions,
)

NHWC = (0, 2, 3, 1)  # program layout of a 4-D NCHW ONNX tensor
_MOVEMENT = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout"}
_NCHW_CONSUMERS = {
    "Conv",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Resize",
    "Upsample",
}
_EXCLUDE_HINT = "keep it in float with --exclude {node} and use an onnxruntime target, or replace the op"


def _identity(n: int) -> tuple[int, ...]:
    return tuple(range(n))


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


@dataclass
class _QV:
    """A quantized value: program tensor ``tensor`` holds ``np.transpose(onnx_value, perm)`` quantized."""

    tensor: str
    qparams: QParams
    onnx_shape: tuple[int, ...]
    perm: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.onnx_shape[p] for p in self.perm)

    @property
    def rank(self) -> int:
        return len(self.onnx_shape)


#: TFLite's 16x8 mode (int16 activations, int8 weights): the ONNX ops and the program ops it covers.
_16X8_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add"})
_16X8_KINDS = frozenset({OpKind.CONV_2D, OpKind.DEPTHWISE_CONV_2D, OpKind.FULLY_CONNECTED, OpKind.ADD})


def _activation16(p: _Pending, qp: QParams, source: str) -> Activation:
    """The int16 clamp of a 16x8 op: none, or a Relu (zero point 0: [0, 32767])."""
    lo, hi = p.clamp
    if lo is None and hi is None:
        return Activation(FusedActivation.NONE, INT16_MIN, INT16_MAX)
    if lo == 0.0 and hi is None:
        return Activation(FusedActivation.RELU, 0, INT16_MAX)
    if lo == 0.0 and hi == 6.0:
        return Activation(FusedActivation.RELU6, 0, min(INT16_MAX, K.quantize_value(6.0, qp.scale[0], 0)))
    raise UnsupportedError(
        f"{source}: node '{p.node.name}' ({p.node.op_type}) in int16 is followed by a clip to [{lo}, {hi}]; "
        "only Relu and Clip(0, 6) fold into a 16x8 op: quantize that node to int8"
    )


@dataclass
class _QConst:
    """DequantizeLinear(initializer): integer data in the ONNX layout and its (possibly per-axis) "
    "quantization."""

    name: str
    data: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    dtype: np.dtype

    def real(self) -> np.ndarray:
        s, z = self.scale.astype(np.float32), self.zero_point.astype(np.int64)
        if self.axis is not None and s.size > 1:
            shape = [1] * self.data.ndim
            shape[self.axis] = -1
            s, z = s.reshape(shape), z.reshape(shape)
        else:
            s, z = s.reshape(()), z.reshape(())
        return ((self.data.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


@dataclass
class _FloatPath:
    graph_input: str
    nodes: list[onnx.NodeProto]


@dataclass
class _Pending:
    """A float node waiting for the QuantizeLinear that gives its output quantization."""

    node: onnx.NodeProto
    emit: Callable[[QParams, Activation], _QV]
    fusable: bool = False  # CONV/DEPTHWISE/FC/ADD/SUB/MUL: a following Relu/Clip folds into the clamp
    default_qparams: QParams | None = None  # quantization it can be materialized with when no Q follows
    clamp: tuple[float | None, float | None] = (None, None)
    done: dict[QParams, _QV] = field(default_factory=dict)


class _Lowerer:
    def __init__(self, model: onnx.ModelProto, source: str):
        self.source = source
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.inits: dict[str, np.ndarray] = {}
        for t in self.graph.initializer:
            self.inits[t.name] = numpy_helper.to_array(t)
        for node in self.graph.node:
            if node.op_type == "Constant" and node.output:
                self.inits[node.output[0]] = _constant_value(node)
        self.nodes = [n for n in self.graph.node if n.op_type != "Constant"]
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in self.graph.output}
        self.shapes = _static_shapes(model, self.inits)
        # state
        self.qvals: dict[str, _QV] = {}
        self.qconsts: dict[str, _QConst] = {}
        self.pending: dict[str, _Pending] = {}
        self.float_paths: dict[str, _FloatPath] = {}
        self.int_tensors: dict[str, _QV] = {}  # quantized ONNX tensors (QuantizeLinear outputs)
        self.tensors: dict[str, TensorInfo] = {}
        self.ops: list[Op] = []
        self.inputs: list[str] = []
        self.bindings: list[IOBinding] = []
        self.program_input_of: dict[str, _QV] = {}
        self.layout_cache: dict[tuple[str, tuple[int, ...]], str] = {}
        self.float_names: dict[str, str] = {}
        self.emit_dtype = DType.INT8  # INT16 while a 16x8 op is materialized
        for inp in self.graph.input:
            if inp.name in self.inits:
                continue
            self.float_paths[inp.name] = _FloatPath(inp.name, [])

    # ---- program building ---------------------------------------------------------------------------------

    def name(self, base: str) -> str:
        name, i = base, 1
        while name in self.tensors:
            i += 1
            name = f"{base}#{i}"
        return name

    def add_tensor(self, base: str, shape, dtype: DType | str, qparams: QParams | None, data=None) -> str:
        name = self.name(base)
        self.tensors[name] = TensorInfo(name, tuple(int(d) for d in shape), DType(dtype), qparams, data)
        return name

    def emit(
        self,
        kind: OpKind,
        inputs,
        output_base: str,
        shape,
        qparams: QParams,
        options,
        source: str,
        dtype: DType | None = None,
    ) -> str:
        if dtype is None:
            # While a 16x8 op is materialized (materialize(..., dtype=INT16)) its own output is int16.
            dtype = self.emit_dtype if kind in _16X8_KINDS else DType.INT8
        out = self.add_tensor(output_base, shape, dtype, qparams)
        self.ops.append(Op(kind, tuple(inputs), (out,), options, source))
        return out

    def requantize(
        self, qv: _QV, qp: QParams, source: str, base: str | None = None, dtype: DType = DType.INT8
    ) -> _QV:
        if qv.qparams == qp and self.tensors[qv.tensor].dtype is dtype:
            return qv
        if dtype is DType.INT16 and qv.rank == 4:
            # int16 feeds 16x8 ops, which read NHWC: transpose the int8 value first (TFLite's TRANSPOSE
            # is written for int8 only here).
            qv = self.to_perm(qv, NHWC, source)
        out = self.emit(
            OpKind.QUANTIZE,
            [qv.tensor],
            base or f"{qv.tensor}/requant",
            qv.shape,
            qp,
            O.requantize_options(qv.qparams, qp),
            source,
            dtype,
        )
        return _QV(out, qp, qv.onnx_shape, qv.perm)

    def to_perm(self, qv: _QV, perm: tuple[int, ...], source: str) -> _QV:
        """The same value held in layout ``perm`` (a TRANSPOSE if it differs; cached)."""
        if qv.perm == perm:
            return qv
        # The program data of the result depends only on the tensor and the relative permutation (a relabeled
        # ONNX Transpose shares the tensor with another layout), so that is the cache key.
        rel = tuple(qv.perm.index(p) for p in perm)
        target = replace(qv, perm=perm)
        key = (qv.tensor, rel)
        if key not in self.layout_cache:
            out = self.emit(
                OpKind.TRANSPOSE,
                [qv.tensor],
                f"{qv.tensor}/transpose",
                target.shape,
                qv.qparams,
                TransposeOptions(rel),
                source,
            )
            self.layout_cache[key] = out
        return replace(target, tensor=self.layout_cache[key])

    def reshape(self, qv: _QV, onnx_shape: tuple[int, ...], source: str, base: str) -> _QV:
        """ONNX-semantics reshape (row-major in the ONNX layout); the result is in the identity layout."""
        qv = self.to_perm(qv, _identity(qv.rank), source)
        if tuple(onnx_shape) == qv.onnx_shape:
            return qv
        out = self.emit(
            OpKind.RESHAPE,
            [qv.tensor],
            base,
            onnx_shape,
            qv.qparams,
            ReshapeOptions(tuple(onnx_shape)),
            source,
        )
        return _QV(out, qv.qparams, tuple(onnx_shape), _identity(len(onnx_shape)))

    def expand_rank(self, qv: _QV, rank: int, source: str) -> _QV:
        """Prepend size-1 axes (ONNX broadcasting aligns shapes on the right)."""
        if qv.rank == rank:
            return qv
        return self.reshape(qv, (1,) * (rank - qv.rank) + qv.onnx_shape, source, f"{qv.tensor}/expand")

    # ---- value lookup -----------------------------------------------------------------------------------

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name in self.shapes:
            return self.shapes[name]
        raise ModelError(
            f"{self.source}: tensor '{name}' has no inferred shape; run edgeq export on the float "
            "model first so that every shape is static"
        )

    def resolve(self, name: str, consumer: onnx.NodeProto) -> _QV:
        """The quantized value of ONNX tensor ``name`` as an input of ``consumer``."""
        if name in self.qvals:
            return self.qvals[name]
        if name in self.pending:
            p = self.pending[name]
            if p.default_qparams is None:
                raise UnsupportedError(
                    f"{self.source}: node '{p.node.name}' ({p.node.op_type}) output '{name}' is not "
                    "quantized: it "
                    f"feeds '{consumer.name}' ({consumer.op_type}) with no QuantizeLinear in between; re-run "
                    "edgeq quantize so every quantized op has a quantized output"
                )
            return self.materialize(name, p.default_qparams)
        if name in self.float_paths:
            raise UnsupportedError(
                f"{self.source}: graph input '{self.float_paths[name].graph_input}' reaches node "
                f"'{consumer.name}' ({consumer.op_type}) without a QuantizeLinear; the integer program needs "
                "quantized inputs: quantize the model with edgeq quantize"
            )
        producer = next((n for n in self.nodes if name in n.output), None)
        where = f"node '{producer.name}' ({producer.op_type})" if producer is not None else "a float tensor"
        raise UnsupportedError(
            f"{self.source}: '{consumer.name}' ({consumer.op_type}) reads '{name}', computed in float by "
            f"{where}: "
            "integer targets need every op quantized; quantize that op too, or "
            + _EXCLUDE_HINT.format(node=consumer.name)
        )

    def materialize(self, name: str, qp: QParams, dtype: DType = DType.INT8) -> _QV:
        p = self.pending[name]
        key = qp if dtype is DType.INT8 else (qp, dtype)
        if key in p.done:
            return p.done[key]
        if p.done:  # already computed with another quantization: requantize that result
            first = next(iter(p.done.values()))
            qv = self.requantize(first, qp, p.node.name, name, dtype)
        elif dtype is DType.INT16:
            if p.node.op_type not in _16X8_OPS:
                raise UnsupportedError(
                    f"{self.source}: node '{p.node.name}' ({p.node.op_type}) has an int16 output; TFLite's "
                    f"16x8 mode covers {', '.join(sorted(_16X8_OPS))}: quantize it to int8"
                )
            self.emit_dtype = DType.INT16
            try:
                qv = p.emit(qp, _activation16(p, qp, self.source))
            finally:
                self.emit_dtype = DType.INT8
        else:
            act = self.activation_for(p, qp)
            qv = p.emit(qp, act)
            qv = self.requantize(qv, qp, p.node.name, name)
        p.done[key] = qv
        self.float_names.setdefault(qv.tensor, name)
        return qv

    def activation_for(self, p: _Pending, qp: QParams) -> Activation:
        lo, hi = p.clamp
        act = O.activation_for_clamp(lo, hi, qp)
        if act is None:
            raise UnsupportedError(
                f"{self.source}: node '{p.node.name}' ({p.node.op_type}) is followed by a clip to [{lo}, "
                f"{hi}], "
                "which no TFLite fused activation (RELU, RELU6, RELU_N1_TO_1) expresses at its output "
                "quantization; quantize that output with the clip's range (edgeq quantize does) or "
                + _EXCLUDE_HINT.format(node=p.node.name)
            )
        return act

    def const(self, name: str) -> np.ndarray | None:
        return self.inits.get(name)

    def is_quantized_input(self, name: str) -> bool:
        return name in self.qvals or name in self.pending

    # ---- the walk -------------------------------------------------------------------------------------

    def run(self) -> Program:
        for node in _toposort(self.nodes, self.inits, {i.name for i in self.graph.input}):
            self.visit(node)
        outputs = []
        for out in self.graph.output:
            qv = self.resolve_output(out.name)
            outputs.append((out.name, qv))
        return self.finish(outputs)

    def resolve_output(self, name: str) -> _QV:
        if name in self.qvals or name in self.pending:
            fake = onnx.helper.make_node("Identity", [name], ["graph output"], name="graph output")
            return self.resolve(name, fake)
        if name in self.float_paths:
            raise UnsupportedError(
                f"{self.source}: graph output '{name}' is a graph input moved in float; nothing to lower"
            )
        producer = next((n for n in self.nodes if name in n.output), None)
        what = f"'{producer.name}' ({producer.op_type})" if producer is not None else "a float tensor"
        raise UnsupportedError(
            f"{self.source}: graph output '{name}' is computed in float by {what}; an integer program's "
            "outputs "
            "must come from a DequantizeLinear: quantize that op too, or use an onnxruntime target"
        )

    def visit(self, node: onnx.NodeProto) -> None:
        ms_qdq = node.domain == "com.microsoft" and node.op_type in ("QuantizeLinear", "DequantizeLinear")
        if node.domain not in ("", "ai.onnx") and not ms_qdq:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' is the custom op {node.domain}::"
                f"{node.op_type}; " + _EXCLUDE_HINT.format(node=node.name)
            )
        handler = getattr(self, f"op_{node.op_type}", None)
        if node.op_type == "DequantizeLinear":
            return self.dequantize_linear(node)
        if node.op_type == "QuantizeLinear":
            return self.quantize_linear(node)
        if node.op_type == "Shape":
            # Shapes are static here: a Shape is a constant (and the shape arithmetic after it folds).
            dims = np.asarray(self.shape_of(node.input[0]), dtype=np.int64)
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            self.inits[node.output[0]] = dims[start:end]
            return None
        data_inputs = [i for i in node.input if i and i not in self.inits]
        if all(i in self.inits for i in node.input if i):
            # A node on constants only: fold it (shape arithmetic and the like).
            return self.fold_constant(node)
        if node.op_type in _MOVEMENT and data_inputs and data_inputs[0] in self.float_paths:
            fp = self.float_paths[data_inputs[0]]
            self.float_paths[node.output[0]] = _FloatPath(fp.graph_input, [*fp.nodes, node])
            return None
        if any(i in self.float_paths for i in data_inputs):
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' ({node.op_type}) computes on graph input "
                f"'{next(i for i in data_inputs if i in self.float_paths)}' in float before it is quantized; "
                "quantize the input first (edgeq quantize puts a QuantizeLinear on every graph input)"
            )
        if handler is None:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' uses op {node.op_type}, which the integer program "
                "does not "
                "support; " + _EXCLUDE_HINT.format(node=node.name)
            )
        if node.op_type in ("Relu", "Clip") and data_inputs and data_inputs[0] in self.pending:
            return self.fold_clamp(node)
        result = handler(node)
        if isinstance(result, _Pending):
            self.pending[node.output[0]] = result
        elif isinstance(result, _QV):
            self.qvals[node.output[0]] = result
            self.float_names.setdefault(result.tensor, node.output[0])
        return None

    def fold_constant(self, node: onnx.NodeProto) -> None:
        try:
            import onnx.reference

            ref = onnx.reference.ReferenceEvaluator(
                onnx.helper.make_model(
                    onnx.helper.make_graph(
                        [node],
                        "fold",
                        [],
                        [
                            onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                            for o in node.output
                            if o
                        ],
                        [numpy_helper.from_array(np.asarray(self.inits[i]), i) for i in node.input if i],
                    ),
                    opset_imports=[onnx.helper.make_opsetid("", self.opset)],
                )
            )
            values = ref.run(None, {})
        except Exception as e:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' ({node.op_type}) on constants could not be "
                f"folded ({type(e).__name__}); run edgeq export to fold constants"
            ) from None
        for name, v in zip([o for o in node.output if o], values, strict=False):
            self.inits[name] = np.asarray(v)
        return None

    # ---- Q / DQ -----------------------------------------------------------------------------------------

    def _qparams(self, node: onnx.NodeProto, tensor: str) -> QParams:
        scale = self.const(node.input[1])
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        if scale is None or zp is None:
            raise UnsupportedError(
                f"{self.source}: {node.op_type} '{node.name}' has a computed scale or zero "
                "point; they must be constants"
            )
        if zp.dtype == np.uint8:
            raise UnsupportedError(
                f"{self.source}: tensor '{tensor}' is quantized as uint8 ({node.op_type} '{node.name}'); the "
                "integer program (TFLite int8, microcontroller C) needs int8 activations: quantize for "
                "an int8 "
                "target such as android-arm64"
            )
        if zp.dtype == np.int16 and scale.size == 1:
            if int(zp.reshape(())) != 0:
                raise UnsupportedError(
                    f"{self.source}: int16 tensor '{tensor}' has zero point {int(zp.reshape(()))} "
                    f"({node.op_type} '{node.name}'); TFLite's 16x8 mode needs symmetric int16 (zero point 0)"
                )
            return QParams.per_tensor(float(scale.reshape(())), 0)
        if zp.dtype != np.int8:
            raise UnsupportedError(
                f"{self.source}: tensor '{tensor}' is quantized as {zp.dtype} "
                f"({node.op_type} '{node.name}'); only int8 activations are supported"
            )
        if scale.size != 1:
            raise UnsupportedError(
                f"{self.source}: activation '{tensor}' is quantized per channel "
                f"({node.op_type} '{node.name}'); activations must be per tensor"
            )
        return QParams.per_tensor(float(scale.reshape(())), int(zp.reshape(())))

    def dequantize_linear(self, node: onnx.NodeProto) -> None:
        src, out = node.input[0], node.output[0]
        if src in self.inits:
            data = self.inits[src]
            scale = np.asarray(self.const(node.input[1]), dtype=np.float32).reshape(-1)
            zp_init = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            zp = np.zeros(scale.shape, np.int64) if zp_init is None else np.asarray(zp_init).reshape(-1)
            axis = _attr(node, "axis", 1)
            axis = axis + data.ndim if axis < 0 else axis
            self.qconsts[out] = _QConst(
                src, data, scale, zp.astype(np.int64), axis if scale.size > 1 else None, data.dtype
            )
            return
        if src in self.int_tensors:
            self.qvals[out] = self.int_tensors[src]
            return
        if src in self.float_paths and not self.float_paths[src].nodes:
            # An int8 graph input straight into a DequantizeLinear.
            qp = self._qparams(node, src)
            qv = self.program_input(src, qp, node)
            self.int_tensors[src] = qv
            self.qvals[out] = qv
            return
        raise UnsupportedError(
            f"{self.source}: DequantizeLinear '{node.name}' reads '{src}', which is neither a "
            "constant nor the output of a QuantizeLinear"
        )

    def quantize_linear(self, node: onnx.NodeProto) -> None:
        src, out = node.input[0], node.output[0]
        qp = self._qparams(node, src)
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        dtype = DType.INT16 if zp is not None and zp.dtype == np.int16 else DType.INT8
        if dtype is DType.INT16 and src not in self.pending and src not in self.qvals:
            raise UnsupportedError(
                f"{self.source}: QuantizeLinear '{node.name}' quantizes '{src}' to int16 from float; "
                "int16 values must come from an int8 tensor or a 16x8 op (edgeq quantize's int16_nodes)"
            )
        if src in self.pending:
            qv = self.materialize(src, qp, dtype)
        elif src in self.qvals:
            qv = self.requantize(self.qvals[src], qp, node.name, f"{src}/requant", dtype)
        elif src in self.float_paths:
            fp = self.float_paths[src]
            qv = self.program_input(fp.graph_input, qp, node, fp)
            for mnode in fp.nodes:
                qv = self.movement(mnode, qv)
        elif src in self.inits:
            raise UnsupportedError(
                f"{self.source}: QuantizeLinear '{node.name}' quantizes the constant '{src}' "
                "at run time; store it quantized (an int8 initializer + DequantizeLinear)"
            )
        else:
            producer = next((n for n in self.nodes if src in n.output), None)
            raise UnsupportedError(
                f"{self.source}: QuantizeLinear '{node.name}' quantizes '{src}', computed in float by "
                f"'{producer.name if producer else '?'}' ({producer.op_type if producer else '?'}), whose "
                "inputs "
                "are not quantized; quantize that op too, or use an onnxruntime target"
            )
        self.int_tensors[out] = qv
        self.float_names.setdefault(qv.tensor, src)

    def program_input(
        self, graph_input: str, qp: QParams, node: onnx.NodeProto, fp: _FloatPath | None = None
    ) -> _QV:
        if graph_input in self.program_input_of:
            return self.requantize(self.program_input_of[graph_input], qp, node.name)
        shape = self.shape_of(graph_input)
        perm = _identity(len(shape))
        if len(shape) == 4 and (fp is None or not fp.nodes):
            consumers = (
                [
                    c
                    for dq in self.consumers.get(node.output[0], [])
                    for c in self.consumers.get(dq.output[0], [])
                ]
                if node.op_type == "QuantizeLinear"
                else self.consumers.get(node.output[0], [])
            )
            if any(c.op_type in _NCHW_CONSUMERS for c in consumers):
                perm = NHWC
        qv = _QV("", qp, shape, perm)
        name = self.add_tensor(graph_input, qv.shape, DType.INT8, qp)
        qv.tensor = name
        self.inputs.append(name)
        self.bindings.append(IOBinding(name, graph_input, shape, perm))
        self.program_input_of[graph_input] = qv
        self.float_names[name] = graph_input
        return qv

    # ---- data movement (exact on quantized values) ---------------------------------------------------------

    def movement(self, node: onnx.NodeProto, qv: _QV) -> _QV:
        out_name = node.output[0]
        t = node.op_type
        if t in ("Identity", "Dropout"):
            return qv
        if t == "Transpose":
            perm = _attr(node, "perm", None)
            perm = tuple(perm) if perm is not None else tuple(reversed(range(qv.rank)))
            inv = _inverse(perm)
            new_shape = tuple(qv.onnx_shape[p] for p in perm)
            # Relabel: the program data stays; its layout relative to the new ONNX tensor changes.
            return _QV(qv.tensor, qv.qparams, new_shape, tuple(inv[p] for p in qv.perm))
        if t in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            return self.reshape(qv, self.shape_of(out_name), node.name, out_name)
        raise AssertionError(t)  # pragma: no cover

    def _movement_pending(self, node: onnx.NodeProto) -> _Pending:
        qv = self.resolve(node.input[0], node)
        result = self.movement(node, qv)
        return _Pending(node, lambda qp, act: result, default_qparams=qv.qparams)

    op_Reshape = op_Flatten = op_Squeeze = op_Unsqueeze = op_Transpose = op_Identity = op_Dropout = (
        _movement_pending
    )

    # ---- conv / fc ----------------------------------------------------------------------------------------

    def weights(self, node: onnx.NodeProto, name: str, what: str) -> _QConst:
        if name not in self.qconsts:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' ({node.op_type}): {what} '{name}' is not a quantized "
                "constant "
                "(int8 initializer + DequantizeLinear); quantize the model with edgeq quantize"
            )
        w = self.qconsts[name]
        if w.dtype != np.int8:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}': {what} '{name}' is {w.dtype}; int8 weights are required"
            )
        if np.any(w.zero_point != 0):
            raise UnsupportedError(
                f"{self.source}: node '{node.name}': {what} '{name}' has a non-zero zero "
                "point; TFLite int8 kernels need symmetric weights (zero point 0)"
            )
        return w

    def bias(
        self,
        node: onnx.NodeProto,
        name: str | None,
        x_qp: QParams,
        w_scales: np.ndarray,
        channels: int,
        base: str,
    ) -> str:
        """int32 bias with scale ``s_in · s_w[c]`` (float32), requantized from its real value if needed."""
        w_scales = np.broadcast_to(np.asarray(w_scales, np.float32).reshape(-1), (channels,))
        scales = np.asarray([f64(x_qp.scale[0]) * f64(s) for s in w_scales], dtype=np.float32)
        if not name:
            data = np.zeros(channels, np.int32)
        elif name in self.qconsts:
            b = self.qconsts[name]
            same = (
                b.dtype == np.int32
                and np.all(b.zero_point == 0)
                and np.allclose(np.broadcast_to(b.scale, (channels,)), scales, rtol=1e-6, atol=0)
            )
            data = (
                b.data.reshape(-1).astype(np.int32) if same else _quantize_bias(b.real().reshape(-1), scales)
            )
        elif name in self.inits:
            data = _quantize_bias(np.asarray(self.inits[name], np.float32).reshape(-1), scales)
        else:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}': bias '{name}' is computed at run time; "
                "it must be a constant"
            )
        if data.size != channels:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}': bias has {data.size} values for "
                f"{channels} output channels"
            )
        qp = (
            QParams(tuple(float(s) for s in scales), (0,) * channels, 0)
            if channels > 1
            else QParams.per_tensor(float(scales[0]), 0)
        )
        return self.add_tensor(base, (channels,), DType.INT32, qp, data.reshape(channels))

    def op_Conv(self, node: onnx.NodeProto) -> _Pending:
        x = self.resolve(node.input[0], node)
        if x.rank != 4:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' is a {x.rank - 2}-D Conv; only 2-D "
                "convolutions (4-D tensors) are supported"
            )
        w = self.weights(node, node.input[1], "weight")
        cout, cin_g, kh, kw = w.data.shape
        cin = x.onnx_shape[1]
        group = _attr(node, "group", 1)
        strides = tuple(_attr(node, "strides", [1, 1]))
        dilations = tuple(_attr(node, "dilations", [1, 1]))
        out_shape = self.shape_of(node.output[0])
        pads = _conv_pads(node, x.onnx_shape[2:], (kh, kw), strides, dilations, out_shape[2:])
        depthwise = group > 1 and group == cin and cin_g == 1 and cout % cin == 0
        if group != 1 and not depthwise:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' is a grouped convolution (group={group}, "
                f"{cin} input channels); only group=1 and depthwise convolutions lower to "
                "TFLite int8: " + _EXCLUDE_HINT.format(node=node.name)
            )
        if w.axis not in (None, 0):
            raise UnsupportedError(
                f"{self.source}: node '{node.name}': weights are quantized along axis "
                f"{w.axis}; per-channel conv weights must use axis 0 (output channels)"
            )
        bias_name = node.input[2] if len(node.input) > 2 else None

        def emit(qp: QParams, act: Activation) -> _QV:
            xv = self.to_perm(x, NHWC, node.name)
            scales = tuple(float(s) for s in w.scale)
            if depthwise:
                data = w.data.reshape(cout, kh, kw).transpose(1, 2, 0)[None]
                wqp = (
                    QParams(scales, (0,) * len(scales), 3)
                    if len(scales) > 1
                    else QParams.per_tensor(scales[0], 0)
                )
            else:
                data = w.data.transpose(0, 2, 3, 1)
                wqp = (
                    QParams(scales, (0,) * len(scales), 0)
                    if len(scales) > 1
                    else QParams.per_tensor(scales[0], 0)
                )
            wname = self.add_tensor(
                f"{w.name}/{'1hwc' if depthwise else 'ohwi'}", data.shape, DType.INT8, wqp, data
            )
            bname = self.bias(node, bias_name, x.qparams, w.scale, cout, f"{node.name}/bias")
            rq = O.conv_requant(x.qparams, wqp, qp, cout)
            nhwc = (out_shape[0], out_shape[2], out_shape[3], out_shape[1])
            if depthwise:
                o = DepthwiseConv2DOptions(strides, dilations, pads, cout // cin, act, rq)
                kind = OpKind.DEPTHWISE_CONV_2D
            else:
                o = Conv2DOptions(strides, dilations, pads, act, rq)
                kind = OpKind.CONV_2D
            out = self.emit(kind, [xv.tensor, wname, bname], node.output[0], nhwc, qp, o, node.name)
            return _QV(out, qp, out_shape, NHWC)

        return _Pending(node, emit, fusable=True)

    def _fc(
        self,
        node: onnx.NodeProto,
        x_name: str,
        w_oi: np.ndarray,
        w: _QConst,
        w_axis_out: int,
        bias_name: str | None,
    ) -> _Pending:
        x = self.resolve(x_name, node)
        cout, cin = w_oi.shape
        if x.onnx_shape[-1] != cin:
            raise ModelError(
                f"{self.source}: node '{node.name}': input has {x.onnx_shape[-1]} features, "
                f"weights expect {cin}"
            )
        if w.axis is not None and w.axis != w_axis_out:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}': weights are quantized per channel along "
                f"the input axis; per-channel weights must be per output feature"
            )
        out_shape = self.shape_of(node.output[0])

        def emit(qp: QParams, act: Activation) -> _QV:
            xv = self.to_perm(x, _identity(x.rank), node.name)
            scales = tuple(float(s) for s in w.scale)
            wqp = (
                QParams(scales, (0,) * len(scales), 0)
                if len(scales) > 1
                else QParams.per_tensor(scales[0], 0)
            )
            wname = self.add_tensor(f"{w.name}/oi", w_oi.shape, DType.INT8, wqp, np.ascontiguousarray(w_oi))
            bname = self.bias(node, bias_name, x.qparams, w.scale, cout, f"{node.name}/bias")
            o = FullyConnectedOptions(
                act, O.conv_requant(x.qparams, wqp, qp, cout), keep_num_dims=x.rank != 2
            )
            out = self.emit(
                OpKind.FULLY_CONNECTED, [xv.tensor, wname, bname], node.output[0], out_shape, qp, o, node.name
            )
            return _QV(out, qp, out_shape, _identity(len(out_shape)))

        return _Pending(node, emit, fusable=True)

    def op_Gemm(self, node: onnx.NodeProto) -> _Pending:
        if _attr(node, "transA", 0):
            raise UnsupportedError(
                f"{self.source}: Gemm '{node.name}' has transA=1; transpose its input in the "
                "model instead (edgeq export folds it for constant inputs)"
            )
        if _attr(node, "alpha", 1.0) != 1.0 or (len(node.input) > 2 and _attr(node, "beta", 1.0) != 1.0):
            raise UnsupportedError(
                f"{self.source}: Gemm '{node.name}' has alpha/beta ≠ 1; fold them into the "
                "weights and bias (edgeq export does)"
            )
        w = self.weights(node, node.input[1], "weight")
        if w.data.ndim != 2:
            raise UnsupportedError(f"{self.source}: Gemm '{node.name}': weights must be 2-D")
        trans_b = bool(_attr(node, "transB", 0))
        w_oi = w.data if trans_b else w.data.T
        return self._fc(
            node, node.input[0], w_oi, w, 0 if trans_b else 1, node.input[2] if len(node.input) > 2 else None
        )

    def op_MatMul(self, node: onnx.NodeProto) -> _Pending:
        if node.input[1] not in self.qconsts:
            raise UnsupportedError(
                f"{self.source}: MatMul '{node.name}' multiplies two activations; only a "
                "constant right-hand side (FULLY_CONNECTED) is supported: "
                + _EXCLUDE_HINT.format(node=node.name)
            )
        w = self.weights(node, node.input[1], "weight")
        if w.data.ndim != 2:
            raise UnsupportedError(f"{self.source}: MatMul '{node.name}': the constant operand must be 2-D")
        return self._fc(node, node.input[0], w.data.T, w, 1, None)

    # ---- elementwise binary -------------------------------------------------------------------------------

    def operand(self, node: onnx.NodeProto, name: str, rank: int, perm: tuple[int, ...], base: str) -> _QV:
        """A binary op's operand in rank ``rank`` and layout ``perm``: activations are moved, constants
        rewritten (per-axis constants are re-quantized per tensor)."""
        if name in self.qconsts or name in self.inits:
            if name in self.qconsts:
                c = self.qconsts[name]
                if c.dtype != np.int8:
                    raise UnsupportedError(
                        f"{self.source}: node '{node.name}': constant '{name}' is {c.dtype}; int8 is required"
                    )
                if c.axis is None:
                    data = c.data
                    qp = QParams.per_tensor(float(c.scale.reshape(-1)[0]), int(c.zero_point.reshape(-1)[0]))
                else:
                    data, qp = _quantize_const(c.real())
            else:
                data, qp = _quantize_const(np.asarray(self.inits[name], np.float32))
            data = np.asarray(data).reshape((1,) * (rank - np.ndim(data)) + np.shape(data))
            data = np.ascontiguousarray(np.transpose(data, perm)).astype(np.int8)
            tname = self.add_tensor(base, data.shape, DType.INT8, qp, data)
            onnx_shape = tuple(np.shape(np.transpose(data, _inverse(perm))))
            return _QV(tname, qp, onnx_shape, perm)
        qv = self.expand_rank(self.resolve(name, node), rank, node.name)
        return self.to_perm(qv, perm, node.name)

    def _binary(self, node: onnx.NodeProto, kind: OpKind) -> _Pending:
        a_name, b_name = node.input[0], node.input[1]
        a_act, b_act = self.is_quantized_input(a_name), self.is_quantized_input(b_name)
        if not a_act and not b_act:
            raise UnsupportedError(
                f"{self.source}: node '{node.name}' ({node.op_type}) has no quantized activation input"
            )
        out_shape = self.shape_of(node.output[0])
        rank = len(out_shape)
        # The layout follows the first activation operand that already has the full rank.
        lead = [self.resolve(n, node) for n in (a_name, b_name) if self.is_quantized_input(n)]
        full = [v for v in lead if v.rank == rank]
        perm = full[0].perm if full else _identity(rank)

        def emit(qp: QParams, act: Activation) -> _QV:
            a = self.operand(node, a_name, rank, perm, f"{a_name}/operand")
            b = self.operand(node, b_name, rank, perm, f"{b_name}/operand")
            if kind is OpKind.MUL:
                o = O.mul_options(a.qparams, b.qparams, qp, act)
            elif self.emit_dtype is DType.INT16:
                o = O.add_options(a.qparams, b.qparams, qp, act, left_shift=ADD_LEFT_SHIFT_INT16)
            else:
                o = O.add_options(a.qparams, b.qparams, qp, act)
            target = _QV("", qp, out_shape, perm)
            out = self.emit(kind, [a.tensor, b.tensor], node.output[0], target.shape, qp, o, node.name)
            return replace(target, tensor=out)

        return _Pending(node, emit, fusable=True)

    def op_Add(self, node):
        return self._binary(node, OpKind.ADD)

    def op_Sub(self, node):
        return self._binary(node, OpKind.SUB)

    def op_Mul(self, node):
        return self._binary(node, OpKind.MUL)

    # ---- activations --------------------------------------------------------------------------------------

    def _clip_bounds(self, node: onnx.NodeProto) -> tuple[float | None, float | None]:
        if node.op_type == "Relu":
            return 0.0, None
        if self.opset < 11:
            lo, hi = _attr(node, "min", None), _attr(node, "max", None)
        else:
            vals = []
            for i in (1, 2):
                if len(node.input) > i and node.input[i]:
                    v = self.const(node.input[i])
                    if v is None:
                        raise UnsupportedError(
                            f"{self.source}: Clip '{node.name}' has computed bounds; they must be constants"
                        )
                    vals.append(float(np.asarray(v).reshape(())))
                else:
                    vals.append(None)
            lo, hi = vals
        return lo, hi

    def fold_clamp(self, node: onnx.NodeProto) -> None:
        src = node.input[0]
        p = self.pending[src]
        lo, hi = self._clip_bounds(node)
        users = self.consumers.get(src, [])
        if p.fusable and not p.done and len(users) == 1 and src not in self.graph_outputs:
            plo, phi = p.clamp
            nlo = lo if plo is None else (plo if lo is None else max(lo, plo))
            nhi = hi if phi is None else (phi if hi is None else min(hi, phi))
            self.pending[node.output[0]] = _Pending(p.node, p.emit, True, None, (nlo, nhi))
            return
        self.pending[node.output[0]] = self._relu(node, lo, hi)

    def _relu(self, node: onnx.NodeProto, lo, hi) -> _Pending:
        x = self.resolve(node.input[0], node)
        if lo == 0.0 and hi is None:
            six = False
        elif lo == 0.0 and hi == 6.0:
            six = True
        else:
            raise UnsupportedError(
                f"{self.source}: {node.op_type} '{node.name}' clips to [{lo}, {hi}] on its own; "
                "only Relu and Clip(0, 6) exist as standalone int8 ops; quantize its output "
                "with that range and fold it into the producer (edgeq quantize does)"
            )

        def emit(qp: QParams, act: Activation) -> _QV:
            o = O.relu_options(x.qparams, qp, six=six)
            out = self.emit(
                OpKind.RELU6 if six else OpKind.RELU, [x.tensor], node.output[0], x.shape, qp, o, node.name
            )
            return replace(x, tensor=out, qparams=qp)

        return _Pending(node, emit, default_qparams=x.qparams)

    def op_Relu(self, node):
        return self._relu(node, 0.0, None)

    def op_Clip(self, node):
        return self._relu(node, *self._clip_bounds(node))

    def _unary(
        self,
        node: onnx.NodeProto,
        kind: OpKind,
        build: Callable[[QParams, QParams], object],
        fixed_out: QParams | None = None,
    ) -> _Pending:
        x = self.resolve(node.input[0], node)

        def emit(qp: QParams, act: Activation) -> _QV:
            oq = fixed_out or qp
            out = self.emit(
                kind,
                [x.tensor],
                node.output[0]
                if fixed_out is None or fixed_out == qp
                else f"{node.output[0]}/{kind.value.lower()}",
                x.shape,
                oq,
                build(x.qparams, oq),
                node.name,
            )
            return replace(x, tensor=out, qparams=oq)

        return _Pending(node, emit)

    def op_Sigmoid(self, node):
        return self._unary(node, OpKind.LOGISTIC, O.logistic_options, O.PROBABILITY_QPARAMS)

    def op_HardSwish(self, node):
        return self._unary(node, OpKind.HARD_SWISH, O.hard_swish_options)

    def op_LeakyRelu(self, node):
        alpha = float(_attr(node, "alpha", 0.01))
        return self._unary(node, OpKind.LEAKY_RELU, lambda i, o: O.leaky_relu_options(alpha, i, o))

    def op_PRelu(self, node):
        x = self.resolve(node.input[0], node)

        def emit(qp: QParams, act: Activation) -> _QV:
            slope = self.operand(node, node.input[1], x.rank, x.perm, f"{node.input[1]}/alpha")
            if slope.tensor not in self.tensors or not self.tensors[slope.tensor].is_constant:
                raise UnsupportedError(f"{self.source}: PRelu '{node.name}': the slope must be a constant")
            o = O.prelu_options(x.qparams, slope.qparams, qp)
            out = self.emit(OpKind.PRELU, [x.tensor, slope.tensor], node.output[0], x.shape, qp, o, node.name)
            return replace(x, tensor=out, qparams=qp)

        return _Pending(node, emit)

    def op_Softmax(self, node):
        x = self.resolve(node.input[0], node)
        axis = _attr(node, "axis", -1 if self.opset >= 13 else 1)
        axis = axis + x.rank if axis < 0 else axis
        if self.opset < 13 and axis != x.rank - 1:
            raise UnsupportedError(
                f"{self.source}: Softmax '{node.name}' (opset {self.opset}) flattens axes "
                f"{axis}.. together; only a softmax over the last axis is supported"
            )
        others = tuple(p for p in x.perm if p != axis)
        perm = (*others, axis)

        def emit(qp: QParams, act: Activation) -> _QV:
            xv = self.to_perm(x, perm, node.name)
            oq = O.PROBABILITY_QPARAMS
            name = node.output[0] if qp == oq else f"{node.output[0]}/softmax"
            out = self.emit(
                OpKind.SOFTMAX, [xv.tensor], name, xv.shape, oq, O.softmax_options(1.0, xv.qparams), node.name
            )
            return replace(xv, tensor=out, qparams=oq)

        return _Pending(node, emit)

    # ---- pooling and reductions ---------------------------------------------------------------------------

    def _pool(self, node: onnx.NodeProto, kind: OpKind) -> _Pending:
        x = self.resolve(node.input[0], node)
        if x.rank != 4:
            raise UnsupportedError(f"{self.source}: {node.op_type} '{node.name}' is not 2-D")
        k = tuple(_attr(node, "kernel_shape", None))
        strides = tuple(_attr(node, "strides", [1, 1]))
        if tuple(_attr(node, "dilations", [1, 1])) != (1, 1):
            raise UnsupportedError(
                f"{self.source}: {node.op_type} '{node.name}' is dilated; TFLite pooling is not"
            )
        out_shape = self.shape_of(node.output[0])
        pads = _conv_pads(node, x.onnx_shape[2:], k, strides, (1, 1), out_shape[2:])
        include_pad = kind is OpKind.AVERAGE_POOL_2D and _attr(node, "count_include_pad", 0) and any(pads)

        def emit(qp: QParams, act: Activation) -> _QV:
            xv = self.to_perm(x, NHWC, node.name)
            padding = pads
            if include_pad:
                # Padded zeros counted in the average: pad with the zero point (= real 0), then pool VALID.
                t, lft, b, r = pads
                shp = (xv.shape[0], xv.shape[1] + t + b, xv.shape[2] + lft + r, xv.shape[3])
                padded = self.emit(
                    OpKind.PAD,
                    [xv.tensor],
                    f"{node.output[0]}/pad",
                    shp,
                    xv.qparams,
                    PadOptions(((0, 0), (t, b), (lft, r), (0, 0)), xv.qparams.zero_point[0]),
                    node.name,
                )
                xv = _QV(padded, xv.qparams, (shp[0], shp[3], shp[1], shp[2]), NHWC)
                padding = (0, 0, 0, 0)
            o = Pool2DOptions(k, strides, padding, Activation())
            nhwc = (out_shape[0], out_shape[2], out_shape[3], out_shape[1])
            out = self.emit(
                kind,
                [xv.tensor],
                node.output[0] if qp == x.qparams else f"{node.output[0]}/pool",
                nhwc,
                x.qparams,
                o,
                node.name,
            )
            return _QV(out, x.qparams, out_shape, NHWC)

        return _Pending(node, emit, default_qparams=x.qparams if kind is OpKind.MAX_POOL_2D else None)

    def op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            raise UnsupportedError(f"{self.source}: MaxPool '{node.name}' returns indices; not supported")
        return self._pool(node, OpKind.MAX_POOL_2D)

    def op_AveragePool(self, node):
        return self._pool(node, OpKind.AVERAGE_POOL_2D)

    def _mean(self, node: onnx.NodeProto, axes: list[int], keepdims: bool) -> _Pending:
        x = self.resolve(node.input[0], node)
        axes = sorted(a + x.rank if a < 0 else a for a in axes)
        if x.rank != 4 or len(axes) != 2:
            raise UnsupportedError(
                f"{self.source}: {node.op_type} '{node.name}' reduces axes {axes} of a rank-"
                f"{x.rank} tensor; only a mean over two spatial axes of a 4-D tensor lowers "
                "to TFLite's int8 MEAN"
            )
        kept = [a for a in range(4) if a not in axes]
        perm = (kept[0], axes[0], axes[1], kept[1])
        out_shape = self.shape_of(node.output[0])
        keep_shape = tuple(1 if a in axes else d for a, d in enumerate(x.onnx_shape))

        def emit(qp: QParams, act: Activation) -> _QV:
            xv = self.to_perm(x, perm, node.name)
            target = _QV("", qp, keep_shape, perm)
            name = node.output[0] if keepdims else f"{node.output[0]}/keepdims"
            out = self.emit(
                OpKind.MEAN,
                [xv.tensor],
                name,
                target.shape,
                qp,
                self.mean_opts(xv, qp),
                node.name,
            )
            qv = replace(target, tensor=out)
            if not keepdims:
                qv = self.reshape(qv, out_shape, node.name, node.output[0])
            return qv

        return _Pending(node, emit)

    @staticmethod
    def mean_opts(xv: _QV, qp: QParams):
        return O.mean_options(xv.qparams, qp, xv.shape[1] * xv.shape[2])

    def op_GlobalAveragePool(self, node):
        return self._mean(node, [2, 3], True)

    def op_ReduceMean(self, node):
        if self.opset >= 18 and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1])
            if axes is None:
                raise UnsupportedError(f"{self.source}: ReduceMean '{node.name}' has computed axes")
            axes = [int(a) for a in np.asarray(axes).reshape(-1)]
        else:
            axes = _attr(node, "axes", None)
            if axes is None:
                raise UnsupportedError(f"{self.source}: ReduceMean '{node.name}' reduces all axes")
        return self._mean(node, list(axes), bool(_attr(node, "keepdims", 1)))

    # ---- concat, pad, resize ------------------------------------------------------------------------------

    def op_Concat(self, node):
        names = [n for n in node.input if n]
        vals = [self.resolve(n, node) if self.is_quantized_input(n) else None for n in names]
        first = next((v for v in vals if v is not None), None)
        if first is None or any(v is None for v in vals):
            raise UnsupportedError(
                f"{self.source}: Concat '{node.name}' has constant or unquantized inputs; "
                "only quantized activations can be concatenated"
            )
        axis = _attr(node, "axis", 0)
        axis = axis + first.rank if axis < 0 else axis
        out_shape = self.shape_of(node.output[0])
        same = all(v.qparams == first.qparams for v in vals)

        def emit(qp: QParams, act: Activation) -> _QV:
            ins = [self.requantize(self.to_perm(v, first.perm, node.name), qp, node.name) for v in vals]
            target = _QV("", qp, out_shape, first.perm)
            out = self.emit(
                OpKind.CONCATENATION,
                [v.tensor for v in ins],
                node.output[0],
                target.shape,
                qp,
                ConcatenationOptions(first.perm.index(axis)),
                node.name,
            )
            return replace(target, tensor=out)

        return _Pending(node, emit, default_qparams=first.qparams if same else None)

    def op_Pad(self, node):
        x = self.resolve(node.input[0], node)
        mode = _attr(node, "mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise UnsupportedError(
                f"{self.source}: Pad '{node.name}' uses mode '{mode}'; only constant padding "
                "lowers to TFLite int8"
            )
        if self.opset < 11:
            pads, value = list(_attr(node, "pads", [])), float(_attr(node, "value", 0.0))
        else:
            pads = self.const(node.input[1])
            if pads is None:
                raise UnsupportedError(f"{self.source}: Pad '{node.name}' has computed pads")
            pads = [int(p) for p in np.asarray(pads).reshape(-1)]
            value = 0.0
            if len(node.input) > 2 and node.input[2]:
                v = self.const(node.input[2])
                if v is None:
                    raise UnsupportedError(f"{self.source}: Pad '{node.name}' has a computed pad value")
                value = float(np.asarray(v).reshape(()))
            if len(node.input) > 3 and node.input[3]:
                axes = [int(a) % x.rank for a in np.asarray(self.const(node.input[3])).reshape(-1)]
                full = [0] * (2 * x.rank)
                for i, a in enumerate(axes):
                    full[a], full[a + x.rank] = pads[i], pads[i + len(axes)]
                pads = full
        if any(p < 0 for p in pads):
            raise UnsupportedError(f"{self.source}: Pad '{node.name}' crops (negative pads); not supported")
        r = x.rank
        onnx_pairs = [(pads[d], pads[d + r]) for d in range(r)]
        paddings = tuple(onnx_pairs[p] for p in x.perm)
        qvalue = int(np.clip(K.quantize_value(value, x.qparams.scale[0], x.qparams.zero_point[0]), -128, 127))
        out_shape = self.shape_of(node.output[0])
        target = _QV("", x.qparams, out_shape, x.perm)
        out = self.emit(
            OpKind.PAD,
            [x.tensor],
            node.output[0],
            target.shape,
            x.qparams,
            PadOptions(paddings, qvalue),
            node.name,
        )
        result = replace(target, tensor=out)
        return _Pending(node, lambda qp, act: result, default_qparams=x.qparams)

    def op_Resize(self, node):
        x = self.resolve(node.input[0], node)
        if x.rank != 4:
            raise UnsupportedError(f"{self.source}: Resize '{node.name}' is not 2-D")
        out_shape = self.shape_of(node.output[0])
        if out_shape[:2] != x.onnx_shape[:2]:
            raise UnsupportedError(f"{self.source}: Resize '{node.name}' resizes batch or channels")
        mode = _str_attr(node, "mode", "nearest")
        coord = _str_attr(
            node, "coordinate_transformation_mode", "half_pixel" if self.opset >= 11 else "asymmetric"
        )
        if _attr(node, "antialias", 0):
            raise UnsupportedError(f"{self.source}: Resize '{node.name}' uses antialias; not supported")
        (ih, iw), (oh, ow) = x.onnx_shape[2:], out_shape[2:]
        if mode == "nearest":
            nearest = _str_attr(node, "nearest_mode", "round_prefer_floor")
            want = (_onnx_nearest(ih, oh, coord, nearest), _onnx_nearest(iw, ow, coord, nearest))
            flags = next(
                (
                    f
                    for f in ((False, False), (False, True), (True, False))
                    if all(
                        np.array_equal(w, K.nearest_indices(i, o, *f))
                        for w, i, o in zip(want, (ih, iw), (oh, ow), strict=True)
                    )
                ),
                None,
            )
            kind = OpKind.RESIZE_NEAREST_NEIGHBOR
        elif mode in ("linear", "bilinear"):
            flags = {
                "align_corners": (True, False),
                "asymmetric": (False, False),
                "half_pixel": (False, True),
                "pytorch_half_pixel": (False, True) if oh > 1 and ow > 1 else None,
            }.get(coord)
            kind = OpKind.RESIZE_BILINEAR
        else:
            raise UnsupportedError(
                f"{self.source}: Resize '{node.name}' uses mode '{mode}'; only nearest and "
                "(bi)linear lower to TFLite"
            )
        if flags is None:
            raise UnsupportedError(
                f"{self.source}: Resize '{node.name}' ({mode}, coordinate_transformation_mode={coord}) "
                "has no "
                "TFLite equivalent (TFLite offers align_corners and half_pixel_centers); export the "
                "model with "
                "align_corners or half_pixel coordinates"
            )
        align, half = flags

        def emit(qp: QParams, act: Activation) -> _QV:
            xv = self.to_perm(x, NHWC, node.name)
            nhwc = (out_shape[0], oh, ow, out_shape[1])
            out = self.emit(
                kind,
                [xv.tensor],
                node.output[0] if qp == x.qparams else f"{node.output[0]}/resize",
                nhwc,
                x.qparams,
                ResizeOptions((oh, ow), align, half),
                node.name,
            )
            return _QV(out, x.qparams, out_shape, NHWC)

        return _Pending(
            node, emit, default_qparams=x.qparams if kind is OpKind.RESIZE_NEAREST_NEIGHBOR else None
        )

    # ---- finishing ----------------------------------------------------------------------------------------

    def rename(self, ops: list[Op], out_names: list[str], renames: dict[str, str]):
        for old, new in renames.items():
            t = self.tensors.pop(old)
            self.tensors[new] = replace(t, name=new)
            self.float_names[new] = self.float_names.pop(old, new)
        ops = [
            replace(
                op,
                inputs=tuple(renames.get(n, n) for n in op.inputs),
                outputs=tuple(renames.get(n, n) for n in op.outputs),
            )
            for op in ops
        ]
        self.bindings = [replace(b, tensor=renames.get(b.tensor, b.tensor)) for b in self.bindings]
        return ops, [renames.get(n, n) for n in out_names]

    def finish(self, outputs: list[tuple[str, _QV]]) -> Program:
        out_names = []
        for onnx_name, qv in outputs:
            tensor = qv.tensor
            if tensor in out_names or tensor in self.inputs:
                # Two graph outputs share a tensor, or an output is an input: give the output its own tensor.
                tensor = self.emit(
                    OpKind.RESHAPE,
                    [qv.tensor],
                    onnx_name,
                    qv.shape,
                    qv.qparams,
                    ReshapeOptions(qv.shape),
                    "graph output",
                )
            out_names.append(tensor)
            self.bindings.append(IOBinding(tensor, onnx_name, qv.onnx_shape, qv.perm))
        ops = _simplify(self.ops, self.tensors, set(self.inputs), out_names)
        # Outputs carry the ONNX graph output's name where it is free (onnxruntime's quantizer renames the
        # tensor before the last QuantizeLinear to "<name>_QuantizeLinear_Input").
        renames = {}
        for (onnx_name, _), tensor in zip(outputs, out_names, strict=True):
            if tensor != onnx_name and onnx_name not in self.tensors and tensor not in self.inputs:
                renames[tensor] = onnx_name
        if renames:
            ops, out_names = self.rename(ops, out_names, renames)
        used = set(self.inputs) | set(out_names)
        for op in ops:
            used.update(op.inputs)
            used.update(op.outputs)
        tensors = {n: t for n, t in self.tensors.items() if n in used}
        meta = {
            # edgeq.quantize's records (tensor_map, target, activation type) travel with the program.
            **{p.key: p.value for p in self.model.metadata_props if p.key.startswith("edgeq.")},
            "source": os.path.basename(self.source),
            "float_tensors": json.dumps({k: v for k, v in sorted(self.float_names.items()) if k in used}),
        }
        program = Program(
            tensors, tuple(ops), tuple(self.inputs), tuple(out_names), tuple(self.bindings), meta
        )
        program.validate()
        return program


# ---- helpers -----------------------------------------------------------------------------------------------


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _str_attr(node: onnx.NodeProto, name: str, default: str) -> str:
    v = _attr(node, name, default)
    return v.decode() if isinstance(v, bytes) else v


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.asarray(onnx.helper.get_attribute_value(a))
        if a.name in ("value_floats", "value_ints"):
            return np.asarray(list(onnx.helper.get_attribute_value(a)))
    raise UnsupportedError(f"Constant node '{node.name}' has no supported value attribute")


def _static_shapes(model: onnx.ModelProto, inits: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not inp.type.tensor_type.HasField("shape") or any(
            not d.HasField("dim_value") or d.dim_value <= 0 for d in dims
        ):
            shown = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in dims]
            raise UnsupportedError(
                f"input '{inp.name}' has a dynamic shape {shown}; the integer program needs static "
                "shapes: fix "
                "them (edgeq export --input-shape, or python -m onnxruntime.tools.make_dynamic_shape_fixed)"
            )
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:
        raise ModelError(
            f"ONNX shape inference failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "run edgeq export on the float model"
        ) from None
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = tt.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    for name, arr in inits.items():
        shapes[name] = tuple(np.shape(arr))
    return shapes


def _toposort(nodes, inits, graph_inputs) -> list[onnx.NodeProto]:
    ready = set(inits) | set(graph_inputs) | {""}
    order, remaining = [], list(nodes)
    while remaining:
        progressed = False
        rest = []
        for n in remaining:
            if all(i in ready for i in n.input):
                order.append(n)
                ready.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            missing = sorted({i for n in rest for i in n.input if i not in ready})[:3]
            raise ModelError(f"the ONNX graph has a cycle or reads undefined tensors ({', '.join(missing)})")
        remaining = rest
    return order


def _conv_pads(node, in_hw, k, strides, dilations, out_hw) -> tuple[int, int, int, int]:
    """Explicit (top, left, bottom, right) padding from pads/auto_pad (and ceil_mode for pooling)."""
    auto = _str_attr(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, kk, s, d, o in zip(in_hw, k, strides, dilations, out_hw, strict=True):
            total = max((o - 1) * s + (kk - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        top, bottom = pads[0]
        left, right = pads[1]
    elif auto == "VALID":
        top = left = bottom = right = 0
    else:
        p = list(_attr(node, "pads", [0, 0, 0, 0]))
        top, left, bottom, right = p[0], p[1], p[2], p[3]
    # ceil_mode (pooling) or any mismatch: extend the bottom/right padding until the output size matches.
    eff_h = (k[0] - 1) * dilations[0] + 1
    eff_w = (k[1] - 1) * dilations[1] + 1
    need_h = (out_hw[0] - 1) * strides[0] + eff_h - in_hw[0] - top
    need_w = (out_hw[1] - 1) * strides[1] + eff_w - in_hw[1] - left
    bottom, right = max(bottom, need_h, 0), max(right, need_w, 0)
    if (in_hw[0] + top + bottom - eff_h) // strides[0] + 1 != out_hw[0] or (
        in_hw[1] + left + right - eff_w
    ) // strides[1] + 1 != out_hw[1]:
        raise UnsupportedError(
            f"node '{node.name}' ({node.op_type}): padding {(top, left, bottom, right)} does "
            f"not give the inferred output size {tuple(out_hw)}"
        )
    return int(top), int(left), int(bottom), int(right)


def _onnx_nearest(in_size: int, out_size: int, coord: str, nearest_mode: str) -> np.ndarray | None:
    scale = out_size / in_size
    idx = []
    for i in range(out_size):
        if coord == "half_pixel":
            x = (i + 0.5) / scale - 0.5
        elif coord == "pytorch_half_pixel":
            x = (i + 0.5) / scale - 0.5 if out_size > 1 else 0.0
        elif coord == "align_corners":
            x = 0.0 if out_size == 1 else i * (in_size - 1) / (out_size - 1)
        elif coord == "asymmetric":
            x = i / scale
        elif coord == "tf_half_pixel_for_nn":
            x = (i + 0.5) / scale
        else:
            return None
        if nearest_mode == "round_prefer_floor":
            j = np.ceil(x - 0.5) if x - np.floor(x) == 0.5 else np.floor(x + 0.5)
        elif nearest_mode == "round_prefer_ceil":
            j = np.floor(x + 0.5)
        elif nearest_mode == "floor":
            j = np.floor(x)
        elif nearest_mode == "ceil":
            j = np.ceil(x)
        else:
            return None
        idx.append(int(min(max(j, 0), in_size - 1)))
    return np.asarray(idx)


def _quantize_bias(real: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = np.rint(real.astype(np.float64) / scales.astype(np.float64))
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)


def _quantize_const(real: np.ndarray) -> tuple[np.ndarray, QParams]:
    """Per-tensor asymmetric int8 for a constant operand (range includes 0, as every activation range "
    "does)."""
    lo, hi = min(float(real.min()), 0.0), max(float(real.max()), 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    q = np.clip(np.rint(real / np.float32(scale)) + zp, -128, 127).astype(np.int8)
    return q, QParams.per_tensor(scale, zp)


def _moves_only_unit_axes(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """True when transposing by ``perm`` keeps the element order (only size-1 axes move)."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def _simplify(
    ops: list[Op], tensors: dict[str, TensorInfo], inputs: set[str], outputs: list[str]
) -> list[Op]:
    """Layout clean-up: trivial TRANSPOSE → RESHAPE, RESHAPE chains merged, identity RESHAPEs removed, and
    ops whose results nobody reads dropped."""
    ops = list(ops)
    # 1. transposes that only move size-1 axes are reshapes
    for i, op in enumerate(ops):
        if op.kind is OpKind.TRANSPOSE:
            src = tensors[op.inputs[0]]
            if _moves_only_unit_axes(src.shape, op.options.perm):
                ops[i] = Op(
                    OpKind.RESHAPE,
                    op.inputs,
                    op.outputs,
                    ReshapeOptions(tensors[op.outputs[0]].shape),
                    op.source,
                )
    keep_names = set(outputs)
    changed = True
    while changed:
        changed = False
        producer = {o: op for op in ops for o in op.outputs}
        readers: dict[str, int] = {}
        for op in ops:
            for n in op.inputs:
                readers[n] = readers.get(n, 0) + 1
        for i, op in enumerate(ops):
            if op.kind is not OpKind.RESHAPE:
                continue
            src = op.inputs[0]
            prev = producer.get(src)
            # 2. RESHAPE(RESHAPE(x)) → RESHAPE(x)
            if prev is not None and prev.kind is OpKind.RESHAPE:
                ops[i] = Op(OpKind.RESHAPE, prev.inputs, op.outputs, op.options, op.source)
                changed = True
                break
            # 3. identity reshape: readers use its input instead
            out = op.outputs[0]
            if tensors[src].shape == tensors[out].shape and out not in keep_names:
                ops = [o for o in ops if o is not op]
                ops = [
                    Op(
                        o.kind,
                        tuple(src if n == out else n for n in o.inputs),
                        o.outputs,
                        o.options,
                        o.source,
                    )
                    for o in ops
                ]
                changed = True
                break
        # 4. dead ops
        needed = set(outputs)
        live = []
        for op in reversed(ops):
            if any(o in needed for o in op.outputs):
                live.append(op)
                needed.update(op.inputs)
        live.reverse()
        if len(live) != len(ops):
            ops = live
            changed = True
    return _fold_transpose_into_fc(ops, tensors, set(outputs))


def _fold_transpose_into_fc(ops: list[Op], tensors: dict[str, TensorInfo], outputs: set[str]) -> list[Op]:
    """TRANSPOSE(NHWC→NCHW) → RESHAPE(flatten) → FULLY_CONNECTED becomes RESHAPE → FULLY_CONNECTED with the
    weight columns permuted to NHWC order (the flatten of an NCHW conv output, without moving data)."""
    producer = {o: op for op in ops for o in op.outputs}
    readers: dict[str, list[Op]] = {}
    for op in ops:
        for n in op.inputs:
            readers.setdefault(n, []).append(op)
    for fc in [op for op in ops if op.kind is OpKind.FULLY_CONNECTED]:
        rs = producer.get(fc.inputs[0])
        if rs is None or rs.kind is not OpKind.RESHAPE or len(readers.get(rs.outputs[0], [])) != 1:
            continue
        tr = producer.get(rs.inputs[0])
        if tr is None or tr.kind is not OpKind.TRANSPOSE or len(readers.get(tr.outputs[0], [])) != 1:
            continue
        if rs.outputs[0] in outputs or tr.outputs[0] in outputs:
            continue
        t_shape = tensors[tr.outputs[0]].shape
        flat = tensors[rs.outputs[0]].shape
        if len(flat) != 2 or flat[0] != t_shape[0] or tr.options.perm[0] != 0:
            continue  # the batch axis must stay first for the columns alone to carry the permutation
        w = tensors[fc.inputs[1]]
        # New column i (position i of the untransposed data, flattened) must be the old column that read the
        # same element: its flat index in the transposed tensor. ``order`` holds those indices in the
        # transposed layout; transposing it back lists them in source order.
        order = np.arange(int(np.prod(t_shape[1:]))).reshape(t_shape[1:])
        inv = _inverse(tuple(p - 1 for p in tr.options.perm[1:]))
        cols = np.transpose(order, inv).reshape(-1)
        new_w = np.ascontiguousarray(w.data[:, cols])
        new_w_name, i = w.name + "/nhwc", 1
        while new_w_name in tensors:
            i += 1
            new_w_name = f"{w.name}/nhwc#{i}"
        tensors[new_w_name] = TensorInfo(new_w_name, w.shape, w.dtype, w.qparams, new_w)
        new_rs = Op(OpKind.RESHAPE, tr.inputs, rs.outputs, ReshapeOptions(flat), rs.source)
        new_fc = Op(fc.kind, (fc.inputs[0], new_w_name, *fc.inputs[2:]), fc.outputs, fc.options, fc.source)
        ops = [new_rs if op is rs else new_fc if op is fc else op for op in ops if op is not tr]
        return _fold_transpose_into_fc(ops, tensors, outputs)
    return ops


def lower(model: str | os.PathLike[str] | onnx.ModelProto) -> Program:
    """Lower an int8 QDQ ONNX model (a path or a ModelProto) to an integer :class:`Program`.

    Raises :class:`~edgeq.errors.UnsupportedError` for an op, layout, quantization (uint8 activations,
    per-channel activations, asymmetric weights) or dynamic shape the integer program cannot express — the
    message names the node or tensor and what to do — and :class:`~edgeq.errors.ModelError` for an
    unreadable or inconsistent model.
    """
    source = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "model")
    proto = onnxutil.load_model(model)
    return _Lowerer(proto, source).run()


__all__ = ["lower"]
