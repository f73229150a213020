"""The integer program → a full-integer TFLite flatbuffer, without TensorFlow.

The file is built with the TFLite schema's Python object API that LiteRT ships (``schema_py_generated``):
schema version 3, file identifier ``TFL3``, buffer 0 the empty sentinel, constant data 16-byte aligned (the
schema's ``force_align``), operator codes with the versions TensorFlow's converter gives the same int8
signatures, a ``serving_default`` signature and metadata (``min_runtime_version`` plus edgeq's JSON).

Only scales and zero points are written: TFLite recomputes the fixed-point multipliers from them exactly as
the program's were computed (``double`` arithmetic on float32 scales), which is why the interpreter's int8
arithmetic matches edgeq's reference interpreter bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from edgeq._compat import StrEnum
from edgeq.backends.tflite.padding import plan_padding
from edgeq.backends.tflite.versions import Signature, min_runtime_version, operator_version
from edgeq.errors import ConfigError, UnsupportedError
from edgeq.lower.program import (
    Activation,
    DType,
    FusedActivation,
    Op,
    OpKind,
    Program,
    QParams,
    TensorInfo,
)

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
SIGNATURE_KEY = "serving_default"
METADATA_KEY = "edgeq"
MIN_RUNTIME_KEY = "min_runtime_version"
BUFFER_ALIGNMENT = 16

B = fb.BuiltinOperator
BO = fb.BuiltinOptions

_TENSOR_TYPE = {
    DType.INT8: fb.TensorType.INT8,
    DType.INT16: fb.TensorType.INT16,
    DType.INT32: fb.TensorType.INT32,
    DType.FLOAT32: fb.TensorType.FLOAT32,
}
_ACTIVATION = {
    FusedActivation.NONE: fb.ActivationFunctionType.NONE,
    FusedActivation.RELU: fb.ActivationFunctionType.RELU,
    FusedActivation.RELU6: fb.ActivationFunctionType.RELU6,
    FusedActivation.RELU_N1_TO_1: fb.ActivationFunctionType.RELU_N1_TO_1,
}
_BUILTIN = {kind: getattr(B, kind.value) for kind in OpKind}
# TFLite's int8 kernels for these copy or compare quantized values as they are (its checks are debug-only).
_SHARED_QUANTIZATION = frozenset({
    OpKind.MAX_POOL_2D, OpKind.AVERAGE_POOL_2D, OpKind.RESHAPE, OpKind.TRANSPOSE, OpKind.PAD,
    OpKind.RESIZE_NEAREST_NEIGHBOR, OpKind.RESIZE_BILINEAR, OpKind.CONCATENATION,
})  # fmt: skip


#: Ops written in TFLite's 16x8 mode when their activations are int16 (see _Writer.is_16x8).
_INT16_OPS = frozenset({
    OpKind.CONV_2D, OpKind.DEPTHWISE_CONV_2D, OpKind.FULLY_CONNECTED, OpKind.ADD, OpKind.QUANTIZE,
})  # fmt: skip


class IOType(StrEnum):
    """Element type of the .tflite file's inputs and outputs."""

    INT8 = "int8"  # the program's int8 tensors are the model's inputs and outputs
    FLOAT32 = "float32"  # float inputs/outputs, with QUANTIZE/DEQUANTIZE at the edges


class _AlignedBuffer(fb.BufferT):
    """A BufferT whose data vector starts on a 16-byte boundary (the schema's ``force_align: 16``)."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # the object API's method name
        data_offset = None
        if self.data is not None:
            raw = bytes(self.data)
            builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data_offset = builder.EndVector()
        fb.BufferStart(builder)
        if data_offset is not None:
            fb.BufferAddData(builder, data_offset)
        return fb.BufferEnd(builder)


def _quantization(q: QParams | None) -> fb.QuantizationParametersT | None:
    if q is None:
        return None
    out = fb.QuantizationParametersT()
    out.scale = [float(s) for s in q.scale]
    out.zeroPoint = [int(z) for z in q.zero_point]
    out.quantizedDimension = int(q.axis or 0)
    return out


def _tflite_round(x: np.ndarray | float) -> np.ndarray:
    """TfLiteRound: half away from zero."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def activation_range(kind: FusedActivation, q: QParams, qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for an output with per-tensor quantization ``q``."""
    scale, zp = np.float32(q.scale[0]), q.zero_point[0]

    def quantize(f: float) -> int:
        # float32 division then round half away from zero, as the C++ does; saturate instead of overflowing.
        v = float(_tflite_round(np.float32(f) / scale))
        return int(np.clip(zp + v, -(2**31), 2**31 - 1))

    if kind is FusedActivation.RELU:
        return max(qmin, quantize(0.0)), qmax
    if kind is FusedActivation.RELU6:
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if kind is FusedActivation.RELU_N1_TO_1:
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    return qmin, qmax


class _Writer:
    def __init__(self, program: Program, io_type: IOType, int16_io: bool = False):
        self.p = program
        self.io_type = io_type
        self.int16_io = int16_io
        self.tensors: list[fb.TensorT] = []
        self.index: dict[str, int] = {}
        self.buffers: list[_AlignedBuffer] = [_AlignedBuffer()]  # buffer 0: the empty sentinel
        self.operators: list[fb.OperatorT] = []
        self.codes: list[fb.OperatorCodeT] = []
        self.code_index: dict[tuple[int, int], int] = {}
        self.used: set[str] = set(program.tensors)

    # ---- tensors -------------------------------------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def add_tensor(self, info: TensorInfo, *, name: str | None = None) -> int:
        t = fb.TensorT()
        t.name = name or info.name
        t.shape = [int(d) for d in info.shape]
        t.type = _TENSOR_TYPE[info.dtype]
        t.quantization = _quantization(info.qparams)
        if info.data is not None:
            buf = _AlignedBuffer()
            buf.data = np.ascontiguousarray(info.data, dtype=info.dtype.numpy.newbyteorder("<")).tobytes()
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        self.index[t.name] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def tensor(self, name: str) -> int:
        if name not in self.index:
            self.add_tensor(self.p.tensors[name])
        return self.index[name]

    def const_int32(self, base: str, values: Any, shape: tuple[int, ...] | None = None) -> int:
        arr = np.asarray(values, dtype=np.int32)
        if shape is not None:
            arr = arr.reshape(shape)
        return self.add_tensor(TensorInfo(self.fresh_name(base), arr.shape, DType.INT32, None, arr))

    # ---- operators -----------------------------------------------------------------------------------------

    def opcode(self, builtin: int, version: int) -> int:
        key = (builtin, version)
        if key not in self.code_index:
            code = fb.OperatorCodeT()
            code.builtinCode = builtin
            # Codes below 127 are also written to the deprecated int8 field, which runtimes before 2.4 read.
            code.deprecatedBuiltinCode = min(builtin, B.PLACEHOLDER_FOR_GREATER_OP_CODES)
            code.version = version
            self.codes.append(code)
            self.code_index[key] = len(self.codes) - 1
        return self.code_index[key]

    def emit(
        self,
        builtin: int,
        sig: Signature,
        inputs: list[int],
        outputs: list[int],
        options_type: int = BO.NONE,
        options: Any = None,
    ) -> None:
        op = fb.OperatorT()
        op.opcodeIndex = self.opcode(builtin, operator_version(sig))
        op.inputs = inputs
        op.outputs = outputs
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        self.operators.append(op)

    def info(self, name: str) -> TensorInfo:
        return self.p.tensors[name]

    def sig(self, builtin: int, op: Op, **extra: Any) -> Signature:
        i, o = self.info(op.inputs[0]), self.info(op.outputs[0])
        return Signature(builtin, _TENSOR_TYPE[i.dtype], _TENSOR_TYPE[o.dtype], rank=len(i.shape), **extra)

    def fail(self, op: Op, why: str, fix: str) -> UnsupportedError:
        return UnsupportedError(f"node '{op.source or '?'}' ({op.kind}): {why}; {fix}")

    def fused(self, op: Op, act: Activation) -> int:
        """The ActivationFunctionType for ``act``, checked to give exactly the program's clamp in TFLite."""
        out = self.info(op.outputs[0])
        lo, hi = (-32768, 32767) if out.dtype is DType.INT16 else (-128, 127)
        expected = activation_range(act.kind, out.qparams, lo, hi) if out.qparams is not None else (lo, hi)
        if (act.min, act.max) != expected:
            raise self.fail(
                op,
                f"its output clamp [{act.min}, {act.max}] is not what TFLite's {act.kind} "
                f"activation gives for the output quantization ({expected[0]}, {expected[1]})",
                "re-quantize the model so the clamp matches the output range, or keep it float",
            )
        return _ACTIVATION[act.kind]

    def check_int8(self, op: Op) -> None:
        if op.kind in _INT16_OPS and self.is_16x8(op):
            return
        for name in (*op.inputs[:1], *op.outputs):
            if self.info(name).dtype is DType.INT16:
                raise self.fail(
                    op,
                    f"tensor '{name}' is int16, which edgeq does not write to .tflite",
                    "quantize with an int8-only scheme (int16_fallback = false)",
                )

    def is_16x8(self, op: Op) -> bool:
        """TFLite's 16x8 mode: int16 activations (zero point 0), int8 weights; or QUANTIZE int8 ↔ int16."""
        ends = [self.info(n) for n in (op.inputs[0], op.outputs[0])]
        if op.kind is OpKind.QUANTIZE:
            return {t.dtype for t in ends} == {DType.INT8, DType.INT16}
        acts = ends + ([self.info(op.inputs[1])] if op.kind is OpKind.ADD else [])
        if any(t.dtype is not DType.INT16 for t in acts):
            return False
        if any(t.qparams is None or set(t.qparams.zero_point) != {0} for t in acts):
            raise self.fail(
                op,
                "an int16 activation has a non-zero zero point",
                "TFLite's 16x8 kernels need symmetric int16 activations (zero point 0); re-quantize",
            )
        return op.kind is OpKind.ADD or self.info(op.inputs[1]).dtype is DType.INT8

    def bias_int64(self, op: Op) -> int:
        """A 16x8 conv/FC bias, widened to int64 (what TFLite's converter writes: the kernels accumulate in
        int64 and the int32-bias variant has no reference kernel in older runtimes)."""
        b = self.info(op.inputs[2])
        data = np.asarray(b.data, dtype=np.int64)
        t = fb.TensorT()
        t.name = self.fresh_name(b.name)
        t.shape = [int(d) for d in b.shape]
        t.type = fb.TensorType.INT64
        t.quantization = _quantization(b.qparams)
        buf = _AlignedBuffer()
        buf.data = np.ascontiguousarray(data, dtype=np.dtype("<i8")).tobytes()
        self.buffers.append(buf)
        t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def weighted_inputs(self, op: Op, first: int) -> list[int]:
        rest = [self.tensor(n) for n in op.inputs[1:]]
        if len(op.inputs) > 2 and self.is_16x8(op) and self.info(op.inputs[2]).dtype is DType.INT32:
            rest[1] = self.bias_int64(op)
        return [first, *rest]

    # ---- per-op translation --------------------------------------------------------------------------------

    def padded_input(
        self,
        op: Op,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
        explicit: tuple[int, int, int, int],
        *,
        pad_value: int | None = None,
    ) -> tuple[int, int]:
        """(tensor index of the op's input — a PAD's output when needed, TFLite Padding)."""
        src = self.info(op.inputs[0])
        if len(src.shape) != 4:
            raise self.fail(
                op, f"input '{src.name}' has rank {len(src.shape)}", "only NHWC 4-D inputs are written"
            )
        plan = plan_padding((src.shape[1], src.shape[2]), kernel, stride, dilation, explicit)
        if plan.pad is None:
            return self.tensor(op.inputs[0]), plan.padding
        (top, bottom), (left, right) = plan.pad
        paddings = ((0, 0), (top, bottom), (left, right), (0, 0))
        shape = (src.shape[0], src.shape[1] + top + bottom, src.shape[2] + left + right, src.shape[3])
        padded = TensorInfo(self.fresh_name(f"{src.name}/pad"), shape, src.dtype, src.qparams)
        self.write_pad(op, op.inputs[0], padded, paddings, pad_value)
        return self.index[padded.name], plan.padding

    def write_pad(self, op: Op, src_name: str, out: TensorInfo, paddings: Any, value: int | None) -> None:
        src = self.info(src_name)
        rank = len(src.shape)
        inputs = [self.tensor(src_name), self.const_int32(f"{out.name}/paddings", paddings, (rank, 2))]
        zp = src.qparams.zero_point[0] if src.qparams is not None else 0
        out_index = self.index[out.name] if out.name in self.index else self.add_tensor(out)
        sig = Signature(B.PAD, _TENSOR_TYPE[src.dtype], _TENSOR_TYPE[out.dtype], rank=rank)
        if value is None or value == zp:
            # PAD fills a quantized tensor with its zero point, i.e. real 0.
            self.emit(B.PAD, sig, inputs, [out_index], BO.PadOptions, fb.PadOptionsT())
            return
        # PADV2's constant holds one element: shape (1,), since TensorInfo turns 0-d arrays into 1-d ones.
        const = np.full((1,), value, dtype=src.dtype.numpy)
        value_info = TensorInfo(self.fresh_name(f"{out.name}/value"), (1,), src.dtype, src.qparams, const)
        inputs.append(self.add_tensor(value_info))
        sig = Signature(B.PADV2, _TENSOR_TYPE[src.dtype], _TENSOR_TYPE[out.dtype], rank=rank)
        self.emit(B.PADV2, sig, inputs, [out_index], BO.PadV2Options, fb.PadV2OptionsT())

    def check_shared_quantization(self, op: Op) -> None:
        """Ops whose int8 kernels move values without rescaling need one quantization on every data tensor."""
        out = self.info(op.outputs[0]).qparams
        data_inputs = op.inputs if op.kind is OpKind.CONCATENATION else op.inputs[:1]
        for name in data_inputs:
            q = self.info(name).qparams
            if q is not None and out is not None and not q.same_as(out):
                raise self.fail(
                    op,
                    f"input '{name}' (scale {q.scale[0]:.6g}, zero point {q.zero_point[0]}) and output "
                    f"'{op.outputs[0]}' (scale {out.scale[0]:.6g}, zero point {out.zero_point[0]}) are "
                    f"quantized differently, and TFLite's int8 {op.kind} does not rescale",
                    "quantize with the target's TFLite constraints (tflite_constraints = true)",
                )

    def write_op(self, op: Op) -> None:
        k, o = op.kind, op.options
        self.check_int8(op)
        if k in _SHARED_QUANTIZATION:
            self.check_shared_quantization(op)
        outs = [self.tensor(n) for n in op.outputs]
        if k in (OpKind.CONV_2D, OpKind.DEPTHWISE_CONV_2D):
            w = self.info(op.inputs[1])
            kernel = (w.shape[1], w.shape[2])
            x, padding = self.padded_input(op, kernel, o.stride, o.dilation, o.padding)
            if k is OpKind.CONV_2D:
                if w.shape[3] != self.info(op.inputs[0]).shape[3]:
                    raise self.fail(op, "grouped convolution", "only groups = 1 or depthwise are written")
                opt = fb.Conv2DOptionsT()
                opt_type = BO.Conv2DOptions
            else:
                opt = fb.DepthwiseConv2DOptionsT()
                opt.depthMultiplier = int(o.depth_multiplier)
                opt_type = BO.DepthwiseConv2DOptions
            opt.padding = padding
            opt.strideH, opt.strideW = (int(s) for s in o.stride)
            opt.dilationHFactor, opt.dilationWFactor = (int(d) for d in o.dilation)
            opt.fusedActivationFunction = self.fused(op, o.activation)
            sig = self.sig(
                _BUILTIN[k],
                op,
                weight_type=_TENSOR_TYPE[w.dtype],
                num_inputs=len(op.inputs),
                dilated=tuple(o.dilation) != (1, 1),
            )
            self.emit(_BUILTIN[k], sig, self.weighted_inputs(op, x), outs, opt_type, opt)
        elif k is OpKind.FULLY_CONNECTED:
            opt = fb.FullyConnectedOptionsT()
            opt.fusedActivationFunction = self.fused(op, o.activation)
            opt.keepNumDims = bool(o.keep_num_dims)
            w = self.info(op.inputs[1])
            sig = self.sig(
                B.FULLY_CONNECTED,
                op,
                weight_type=_TENSOR_TYPE[w.dtype],
                num_inputs=len(op.inputs),
                keep_num_dims=bool(o.keep_num_dims),
            )
            self.emit(
                B.FULLY_CONNECTED,
                sig,
                self.weighted_inputs(op, self.tensor(op.inputs[0])),
                outs,
                BO.FullyConnectedOptions,
                opt,
            )
        elif k in (OpKind.ADD, OpKind.SUB):
            opt = fb.AddOptionsT() if k is OpKind.ADD else fb.SubOptionsT()
            opt.fusedActivationFunction = self.fused(op, o.activation)
            if self.info(op.inputs[0]).dtype is DType.INT16:
                # The schema's default (true) selects the power-of-two-scale int16 kernel; edgeq's scales
                # are general, for the kernel with left_shift 15.
                opt.potScaleInt16 = False
            shapes = [self.info(n).shape for n in op.inputs]
            sig = self.sig(_BUILTIN[k], op, broadcast=shapes[0] != shapes[1])
            self.emit(
                _BUILTIN[k],
                sig,
                [self.tensor(n) for n in op.inputs],
                outs,
                BO.AddOptions if k is OpKind.ADD else BO.SubOptions,
                opt,
            )
        elif k is OpKind.MUL:
            opt = fb.MulOptionsT()
            opt.fusedActivationFunction = self.fused(op, o.activation)
            s1, s2 = (self.info(n).qparams.scale[0] for n in op.inputs)
            s_out = self.info(op.outputs[0]).qparams.scale[0]
            sig = self.sig(B.MUL, op, mul_rescale_ge_1=float(s1) * float(s2) / float(s_out) >= 1.0)
            self.emit(B.MUL, sig, [self.tensor(n) for n in op.inputs], outs, BO.MulOptions, opt)
        elif k is OpKind.CONCATENATION:
            if o.activation.kind is not FusedActivation.NONE:
                raise self.fail(
                    op, "a fused activation on CONCATENATION", "TFLite's int8 concatenation has none"
                )
            opt = fb.ConcatenationOptionsT()
            opt.axis = int(o.axis)
            opt.fusedActivationFunction = self.fused(op, o.activation)
            self.emit(
                B.CONCATENATION,
                self.sig(B.CONCATENATION, op),
                [self.tensor(n) for n in op.inputs],
                outs,
                BO.ConcatenationOptions,
                opt,
            )
        elif k in (OpKind.MAX_POOL_2D, OpKind.AVERAGE_POOL_2D):
            plan_value = None
            if k is OpKind.MAX_POOL_2D:
                plan_value = -128  # a padded position must never win the max: pad with the smallest int8
            src = self.info(op.inputs[0])
            plan = plan_padding((src.shape[1], src.shape[2]), o.filter, o.stride, (1, 1), o.padding)
            if plan.pad is not None and k is OpKind.AVERAGE_POOL_2D:
                raise self.fail(
                    op,
                    f"explicit padding {o.padding} that is neither SAME nor VALID",
                    "TFLite's average pool cannot exclude such padding from the count; pad the "
                    "model symmetrically as SAME does or remove the padding",
                )
            x, padding = self.padded_input(op, o.filter, o.stride, (1, 1), o.padding, pad_value=plan_value)
            opt = fb.Pool2DOptionsT()
            opt.padding = padding
            opt.strideH, opt.strideW = (int(s) for s in o.stride)
            opt.filterHeight, opt.filterWidth = (int(f) for f in o.filter)
            opt.fusedActivationFunction = self.fused(op, o.activation)
            self.emit(_BUILTIN[k], self.sig(_BUILTIN[k], op), [x], outs, BO.Pool2DOptions, opt)
        elif k is OpKind.MEAN:
            opt = fb.ReducerOptionsT()
            opt.keepDims = bool(o.keep_dims)
            axes = (
                self.tensor(op.inputs[1])
                if len(op.inputs) > 1
                else self.const_int32(f"{op.outputs[0]}/axes", list(o.axes))
            )
            self.emit(
                B.MEAN, self.sig(B.MEAN, op), [self.tensor(op.inputs[0]), axes], outs, BO.ReducerOptions, opt
            )
        elif k is OpKind.RESHAPE:
            opt = fb.ReshapeOptionsT()
            opt.newShape = [int(d) for d in o.new_shape]
            shape = (
                self.tensor(op.inputs[1])
                if len(op.inputs) > 1
                else self.const_int32(f"{op.outputs[0]}/shape", list(o.new_shape))
            )
            self.emit(
                B.RESHAPE,
                self.sig(B.RESHAPE, op),
                [self.tensor(op.inputs[0]), shape],
                outs,
                BO.ReshapeOptions,
                opt,
            )
        elif k is OpKind.PAD:
            self.write_pad(op, op.inputs[0], self.info(op.outputs[0]), [list(p) for p in o.paddings], o.value)
        elif k is OpKind.SOFTMAX:
            opt = fb.SoftmaxOptionsT()
            opt.beta = float(o.beta)
            self.emit(
                B.SOFTMAX, self.sig(B.SOFTMAX, op), [self.tensor(op.inputs[0])], outs, BO.SoftmaxOptions, opt
            )
        elif k in (OpKind.LOGISTIC, OpKind.HARD_SWISH, OpKind.RELU, OpKind.RELU6):
            opt_type, opt = (
                (BO.HardSwishOptions, fb.HardSwishOptionsT()) if k is OpKind.HARD_SWISH else (BO.NONE, None)
            )
            self.emit(
                _BUILTIN[k], self.sig(_BUILTIN[k], op), [self.tensor(op.inputs[0])], outs, opt_type, opt
            )
        elif k is OpKind.LEAKY_RELU:
            opt = fb.LeakyReluOptionsT()
            opt.alpha = float(np.float32(o.alpha))
            self.emit(
                B.LEAKY_RELU,
                self.sig(B.LEAKY_RELU, op),
                [self.tensor(op.inputs[0])],
                outs,
                BO.LeakyReluOptions,
                opt,
            )
        elif k is OpKind.PRELU:
            self.emit(B.PRELU, self.sig(B.PRELU, op), [self.tensor(n) for n in op.inputs], outs)
        elif k in (OpKind.RESIZE_NEAREST_NEIGHBOR, OpKind.RESIZE_BILINEAR):
            if k is OpKind.RESIZE_BILINEAR:
                opt, opt_type = fb.ResizeBilinearOptionsT(), BO.ResizeBilinearOptions
            else:
                opt, opt_type = fb.ResizeNearestNeighborOptionsT(), BO.ResizeNearestNeighborOptions
            opt.alignCorners = bool(o.align_corners)
            opt.halfPixelCenters = bool(o.half_pixel_centers)
            size = (
                self.tensor(op.inputs[1])
                if len(op.inputs) > 1
                else self.const_int32(f"{op.outputs[0]}/size", list(o.size))
            )
            sig = self.sig(
                _BUILTIN[k], op, align_corners=opt.alignCorners, half_pixel_centers=opt.halfPixelCenters
            )
            self.emit(_BUILTIN[k], sig, [self.tensor(op.inputs[0]), size], outs, opt_type, opt)
        elif k is OpKind.TRANSPOSE:
            if len(o.perm) > 6:
                raise self.fail(op, f"a {len(o.perm)}-D transpose", "TFLite transposes at most 6 dimensions")
            perm = (
                self.tensor(op.inputs[1])
                if len(op.inputs) > 1
                else self.const_int32(f"{op.outputs[0]}/perm", list(o.perm))
            )
            self.emit(
                B.TRANSPOSE,
                self.sig(B.TRANSPOSE, op),
                [self.tensor(op.inputs[0]), perm],
                outs,
                BO.TransposeOptions,
                fb.TransposeOptionsT(),
            )
        elif k is OpKind.QUANTIZE:
            self.emit(
                B.QUANTIZE,
                self.sig(B.QUANTIZE, op),
                [self.tensor(op.inputs[0])],
                outs,
                BO.QuantizeOptions,
                fb.QuantizeOptionsT(),
            )
        elif k is OpKind.DEQUANTIZE:
            self.emit(
                B.DEQUANTIZE,
                self.sig(B.DEQUANTIZE, op),
                [self.tensor(op.inputs[0])],
                outs,
                BO.DequantizeOptions,
                fb.DequantizeOptionsT(),
            )
        else:  # pragma: no cover - every OpKind is handled above; a new one must be added here
            raise self.fail(
                op, "this operator has no .tflite translation", "report it to the edgeq developers"
            )

    # ---- the model -----------------------------------------------------------------------------------------

    def inputs(self) -> tuple[list[int], list[tuple[str, int]]]:
        """Graph inputs; with float32 I/O, a QUANTIZE in front of each of the program's int8 inputs."""
        ins, sig_in = [], []
        for name in self.p.inputs:
            t = self.info(name)
            self.check_io(name, t)
            if self.io_type is IOType.FLOAT32 and t.dtype is not DType.FLOAT32:
                fi = self.add_tensor(TensorInfo(self.fresh_name(f"{name}/float"), t.shape, DType.FLOAT32))
                sig = Signature(B.QUANTIZE, fb.TensorType.FLOAT32, _TENSOR_TYPE[t.dtype], rank=len(t.shape))
                self.emit(
                    B.QUANTIZE, sig, [fi], [self.tensor(name)], BO.QuantizeOptions, fb.QuantizeOptionsT()
                )
                ins.append(fi)
            else:
                ins.append(self.tensor(name))
            sig_in.append((self.signature_name(name), ins[-1]))
        return ins, sig_in

    def outputs(self) -> tuple[list[int], list[tuple[str, int]]]:
        """Graph outputs; with float32 I/O, a DEQUANTIZE after each of the program's int8 outputs."""
        outs, sig_out = [], []
        for name in self.p.outputs:
            t = self.info(name)
            self.check_io(name, t)
            if self.io_type is IOType.FLOAT32 and t.dtype is not DType.FLOAT32:
                fi = self.add_tensor(TensorInfo(self.fresh_name(f"{name}/float"), t.shape, DType.FLOAT32))
                sig = Signature(B.DEQUANTIZE, _TENSOR_TYPE[t.dtype], fb.TensorType.FLOAT32, rank=len(t.shape))
                self.emit(
                    B.DEQUANTIZE,
                    sig,
                    [self.tensor(name)],
                    [fi],
                    BO.DequantizeOptions,
                    fb.DequantizeOptionsT(),
                )
                outs.append(fi)
            else:
                outs.append(self.tensor(name))
            sig_out.append((self.signature_name(name), outs[-1]))
        return outs, sig_out

    def check_io(self, name: str, t: TensorInfo) -> None:
        if t.dtype is DType.INT16 and not self.int16_io:
            raise UnsupportedError(
                f"program input/output: tensor '{name}' is int16, which edgeq does not write as a .tflite "
                "input or output (they are int8 or float32); convert it inside the program with a QUANTIZE "
                "int16 → int8 (16x8 layers do), or pass int16_io=True"
            )

    def signature_name(self, tensor: str) -> str:
        b = self.p.binding(tensor)
        return b.onnx_name if b is not None else tensor

    def build(self, metadata: Mapping[str, Any] | None) -> bytes:
        ins, sig_in = self.inputs()
        for op in self.p.ops:
            self.write_op(op)
        outs, sig_out = self.outputs()

        graph = fb.SubGraphT()
        graph.name = "main"
        graph.tensors = self.tensors
        graph.inputs = ins
        graph.outputs = outs
        graph.operators = self.operators

        signature = fb.SignatureDefT()
        signature.signatureKey = SIGNATURE_KEY
        signature.subgraphIndex = 0
        signature.inputs = [_tensor_map(n, i) for n, i in sig_in]
        signature.outputs = [_tensor_map(n, i) for n, i in sig_out]

        model = fb.ModelT()
        model.version = SCHEMA_VERSION
        model.description = "edgeq"
        model.operatorCodes = self.codes
        model.subgraphs = [graph]
        model.signatureDefs = [signature]
        model.metadata = []
        # The converter writes the version as a 16-byte zero-padded string that runtimes read as such.
        runtime = min_runtime_version([(c.builtinCode, c.version) for c in self.codes]).encode()
        model.metadata.append(self.metadata_entry(MIN_RUNTIME_KEY, runtime.ljust(16, b"\0")))
        model.metadata.append(
            self.metadata_entry(METADATA_KEY, _metadata_json(self.p, metadata, self.io_type))
        )
        model.buffers = self.buffers

        builder = flatbuffers.Builder(1024 + sum(len(b.data or b"") for b in self.buffers))
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())

    def metadata_entry(self, name: str, data: bytes) -> fb.MetadataT:
        buf = _AlignedBuffer()
        buf.data = data
        self.buffers.append(buf)
        entry = fb.MetadataT()
        entry.name = name
        entry.buffer = len(self.buffers) - 1
        return entry


def _tensor_map(name: str, index: int) -> fb.TensorMapT:
    t = fb.TensorMapT()
    t.name = name
    t.tensorIndex = index
    return t


def _metadata_json(program: Program, metadata: Mapping[str, Any] | None, io_type: IOType) -> bytes:
    from edgeq import __version__

    def describe(name: str) -> dict[str, Any]:
        t = program.tensors[name]
        b = program.binding(name)
        entry: dict[str, Any] = {"tensor": name, "shape": list(t.shape), "dtype": str(io_type)}
        if t.qparams is not None:
            entry["quantization"] = {"scale": t.qparams.scale[0], "zero_point": t.qparams.zero_point[0]}
        if b is not None:
            entry.update(onnx_name=b.onnx_name, onnx_shape=list(b.onnx_shape), perm_from_onnx=list(b.perm))
        return entry

    doc: dict[str, Any] = {
        "producer": f"edgeq {__version__}",
        "inputs": [describe(n) for n in program.inputs],
        "outputs": [describe(n) for n in program.outputs],
    }
    for key, value in (metadata or {}).items():
        if key in doc:
            raise ConfigError(f"tflite metadata key '{key}' is reserved by edgeq; rename it")
        doc[str(key)] = value
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"tflite metadata is not JSON-serialisable ({e}); pass plain str/number/list/dict values"
        ) from None


def write_tflite(
    program: Program,
    *,
    io_type: IOType | str = IOType.INT8,
    metadata: Mapping[str, Any] | None = None,
    int16_io: bool = False,
) -> bytes:
    """A full-integer TFLite flatbuffer for ``program``; identical inputs give identical bytes.

    ``io_type``: ``int8`` (the default) makes the program's int8 tensors the model's inputs and outputs;
    ``float32`` adds QUANTIZE in front of each input and DEQUANTIZE after each output (in the program's
    layout, NHWC). ``metadata``: JSON-serialisable values stored in the file's ``edgeq`` metadata entry next
    to edgeq's own description of the inputs and outputs (e.g. ``preprocess``, ``labels``).
    ``int16_io``: let int16 program tensors (TFLite's 16x8 mode) be the model's inputs and outputs as they
    are (to test a 16x8 op over the whole int16 range); by default that is an error.

    Raises :class:`UnsupportedError` naming the node and operator for anything TFLite cannot express.
    """
    try:
        io = IOType(io_type)
    except ValueError:
        raise ConfigError(
            f"io_type '{io_type}' is not one of: {', '.join(t.value for t in IOType)}"
        ) from None
    program.validate()
    return _Writer(program, io, int16_io=int16_io).build(metadata)
