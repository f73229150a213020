"""Test helper: write a Program as a minimal .tflite (schema object API) and run it in LiteRT's builtin
reference kernels — the oracle the reference interpreter must match bit for bit.

This is deliberately small and test-only (the product's writer is edgeq.backends.tflite): explicit padding
that is not SAME/VALID becomes a PAD (PADV2 with −128 for max pooling), everything else maps 1:1.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest

from edgeq.lower.program import FusedActivation, OpKind, Program

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (LiteRT) is not installed")
import ai_edge_litert.schema_py_generated as S  # noqa: E402

_TYPES = {
    "int8": S.TensorType.INT8,
    "int16": S.TensorType.INT16,
    "int32": S.TensorType.INT32,
    "float32": S.TensorType.FLOAT32,
}
_ACT = {
    FusedActivation.NONE: S.ActivationFunctionType.NONE,
    FusedActivation.RELU: S.ActivationFunctionType.RELU,
    FusedActivation.RELU6: S.ActivationFunctionType.RELU6,
    FusedActivation.RELU_N1_TO_1: S.ActivationFunctionType.RELU_N1_TO_1,
}


def _same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    eff = (k - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


class _Writer:
    def __init__(self, program: Program):
        self.p = program
        self.buffers = [S.BufferT()]
        self.tensors: list = []
        self.index: dict[str, int] = {}
        self.codes: list = []
        self.code_index: dict[int, int] = {}
        self.ops: list = []
        self._n = 0

    def tensor(self, name: str) -> int:
        if name in self.index:
            return self.index[name]
        t = self.p.tensors[name]
        data = t.data
        return self._add(name, t.shape, t.dtype.value, t.qparams, data)

    def _add(self, name, shape, dtype, qparams, data=None) -> int:
        tt = S.TensorT()
        tt.name = name
        tt.shape = list(shape)
        tt.type = _TYPES[dtype]
        tt.buffer = 0
        if data is not None:
            b = S.BufferT()
            b.data = np.ascontiguousarray(data).astype(np.asarray(data).dtype.newbyteorder("<")).tobytes()
            self.buffers.append(b)
            tt.buffer = len(self.buffers) - 1
        if qparams is not None:
            q = S.QuantizationParametersT()
            q.scale = list(qparams.scale)
            q.zeroPoint = list(qparams.zero_point)
            q.quantizedDimension = qparams.axis or 0
            tt.quantization = q
        self.tensors.append(tt)
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def const_i32(self, values) -> int:
        self._n += 1
        arr = np.asarray(values, dtype=np.int32)
        return self._add(f"__const_{self._n}", arr.shape, "int32", None, arr)

    def temp_like(self, name: str, shape) -> int:
        self._n += 1
        t = self.p.tensors[name]
        return self._add(f"__tmp_{self._n}", shape, t.dtype.value, t.qparams)

    def op(self, code: int, inputs, outputs, options_type=0, options=None, version: int = 1):
        if code not in self.code_index:
            c = S.OperatorCodeT()
            c.builtinCode = code
            c.deprecatedBuiltinCode = min(code, 127)
            c.version = version
            self.codes.append(c)
            self.code_index[code] = len(self.codes) - 1
        o = S.OperatorT()
        o.opcodeIndex = self.code_index[code]
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.ops.append(o)

    def padded_input(self, name: str, padding, kernel, stride, dilation, value=None):
        """(tensor index, tflite padding enum) for explicit (top, left, bottom, right) padding."""
        t = self.p.tensors[name]
        _, h, w, c = t.shape
        if padding == (0, 0, 0, 0):
            return self.tensor(name), S.Padding.VALID
        th = _same_padding(h, kernel[0], stride[0], dilation[0])
        tw = _same_padding(w, kernel[1], stride[1], dilation[1])
        if (th[0], tw[0], th[1], tw[1]) == tuple(padding):
            return self.tensor(name), S.Padding.SAME
        top, left, bottom, right = padding
        out = self.temp_like(name, (t.shape[0], h + top + bottom, w + left + right, c))
        pads = self.const_i32([[0, 0], [top, bottom], [left, right], [0, 0]])
        if value is None:
            self.op(
                S.BuiltinOperator.PAD,
                [self.tensor(name), pads],
                [out],
                S.BuiltinOptions.PadOptions,
                S.PadOptionsT(),
                version=2,
            )
        else:
            v = self._add(f"__padv_{out}", (), "int8", t.qparams, np.asarray(value, dtype=np.int8))
            self.op(
                S.BuiltinOperator.PADV2,
                [self.tensor(name), pads, v],
                [out],
                S.BuiltinOptions.PadV2Options,
                S.PadV2OptionsT(),
                version=2,
            )
        return out, S.Padding.VALID

    def emit(self, op) -> None:
        o = op.options
        k = op.kind
        ins = [self.tensor(n) for n in op.inputs]
        out = [self.tensor(n) for n in op.outputs]
        B, Opt = S.BuiltinOperator, S.BuiltinOptions
        if k is OpKind.CONV_2D:
            w = self.p.tensors[op.inputs[1]]
            x, pad = self.padded_input(op.inputs[0], o.padding, w.shape[1:3], o.stride, o.dilation)
            opt = S.Conv2DOptionsT()
            opt.padding, (opt.strideH, opt.strideW) = pad, o.stride
            opt.dilationHFactor, opt.dilationWFactor = o.dilation
            opt.fusedActivationFunction = _ACT[o.activation.kind]
            self.op(B.CONV_2D, [x, ins[1], ins[2]], out, Opt.Conv2DOptions, opt, version=3)
        elif k is OpKind.DEPTHWISE_CONV_2D:
            w = self.p.tensors[op.inputs[1]]
            x, pad = self.padded_input(op.inputs[0], o.padding, w.shape[1:3], o.stride, o.dilation)
            opt = S.DepthwiseConv2DOptionsT()
            opt.padding, (opt.strideH, opt.strideW) = pad, o.stride
            opt.dilationHFactor, opt.dilationWFactor = o.dilation
            opt.depthMultiplier = o.depth_multiplier
            opt.fusedActivationFunction = _ACT[o.activation.kind]
            self.op(B.DEPTHWISE_CONV_2D, [x, ins[1], ins[2]], out, Opt.DepthwiseConv2DOptions, opt, version=3)
        elif k is OpKind.FULLY_CONNECTED:
            opt = S.FullyConnectedOptionsT()
            opt.fusedActivationFunction = _ACT[o.activation.kind]
            opt.keepNumDims = o.keep_num_dims
            self.op(B.FULLY_CONNECTED, ins, out, Opt.FullyConnectedOptions, opt, version=4)
        elif k in (OpKind.ADD, OpKind.SUB, OpKind.MUL):
            cls = {OpKind.ADD: S.AddOptionsT, OpKind.SUB: S.SubOptionsT, OpKind.MUL: S.MulOptionsT}[k]
            opt = cls()
            opt.fusedActivationFunction = _ACT[o.activation.kind]
            otype = {OpKind.ADD: Opt.AddOptions, OpKind.SUB: Opt.SubOptions, OpKind.MUL: Opt.MulOptions}[k]
            self.op(getattr(B, k.value), ins, out, otype, opt, version=2)
        elif k is OpKind.CONCATENATION:
            opt = S.ConcatenationOptionsT()
            opt.axis = o.axis
            opt.fusedActivationFunction = _ACT[o.activation.kind]
            self.op(B.CONCATENATION, ins, out, Opt.ConcatenationOptions, opt, version=2)
        elif k in (OpKind.MAX_POOL_2D, OpKind.AVERAGE_POOL_2D):
            value = -128 if k is OpKind.MAX_POOL_2D else None
            x, pad = self.padded_input(op.inputs[0], o.padding, o.filter, o.stride, (1, 1), value=value)
            if k is OpKind.AVERAGE_POOL_2D and x != ins[0]:
                raise ValueError("test writer: AVERAGE_POOL_2D padding must be SAME or VALID")
            opt = S.Pool2DOptionsT()
            opt.padding, (opt.strideH, opt.strideW) = pad, o.stride
            opt.filterHeight, opt.filterWidth = o.filter
            opt.fusedActivationFunction = _ACT[o.activation.kind]
            self.op(getattr(B, k.value), [x], out, Opt.Pool2DOptions, opt, version=2)
        elif k is OpKind.MEAN:
            opt = S.ReducerOptionsT()
            opt.keepDims = o.keep_dims
            self.op(B.MEAN, [ins[0], self.const_i32(list(o.axes))], out, Opt.ReducerOptions, opt, version=2)
        elif k is OpKind.RESHAPE:
            opt = S.ReshapeOptionsT()
            opt.newShape = list(o.new_shape)
            self.op(B.RESHAPE, [ins[0], self.const_i32(list(o.new_shape))], out, Opt.ReshapeOptions, opt)
        elif k is OpKind.PAD:
            pads = self.const_i32([list(p) for p in o.paddings])
            zp = self.p.tensors[op.inputs[0]].qparams.zero_point[0]
            if o.value == zp:
                self.op(B.PAD, [ins[0], pads], out, Opt.PadOptions, S.PadOptionsT(), version=2)
            else:
                qp = self.p.tensors[op.inputs[0]].qparams
                v = self._add(f"__padv_{out[0]}", (), "int8", qp, np.asarray(o.value, dtype=np.int8))
                self.op(B.PADV2, [ins[0], pads, v], out, Opt.PadV2Options, S.PadV2OptionsT(), version=2)
        elif k is OpKind.SOFTMAX:
            opt = S.SoftmaxOptionsT()
            opt.beta = o.beta
            self.op(B.SOFTMAX, ins, out, Opt.SoftmaxOptions, opt, version=2)
        elif k in (OpKind.LOGISTIC, OpKind.HARD_SWISH, OpKind.RELU, OpKind.RELU6):
            self.op(getattr(B, k.value), ins, out, version=1)
        elif k is OpKind.LEAKY_RELU:
            opt = S.LeakyReluOptionsT()
            opt.alpha = o.alpha
            self.op(B.LEAKY_RELU, ins, out, Opt.LeakyReluOptions, opt, version=2)
        elif k is OpKind.PRELU:
            self.op(B.PRELU, ins, out)
        elif k in (OpKind.RESIZE_BILINEAR, OpKind.RESIZE_NEAREST_NEIGHBOR):
            cls = S.ResizeBilinearOptionsT if k is OpKind.RESIZE_BILINEAR else S.ResizeNearestNeighborOptionsT
            opt = cls()
            opt.alignCorners, opt.halfPixelCenters = o.align_corners, o.half_pixel_centers
            otype = (
                Opt.ResizeBilinearOptions if k is OpKind.RESIZE_BILINEAR else Opt.ResizeNearestNeighborOptions
            )
            self.op(getattr(B, k.value), [ins[0], self.const_i32(list(o.size))], out, otype, opt, version=3)
        elif k is OpKind.TRANSPOSE:
            self.op(
                B.TRANSPOSE,
                [ins[0], self.const_i32(list(o.perm))],
                out,
                Opt.TransposeOptions,
                S.TransposeOptionsT(),
                version=2,
            )
        elif k is OpKind.QUANTIZE:
            self.op(B.QUANTIZE, ins, out, Opt.QuantizeOptions, S.QuantizeOptionsT(), version=2)
        elif k is OpKind.DEQUANTIZE:
            self.op(B.DEQUANTIZE, ins, out, Opt.DequantizeOptions, S.DequantizeOptionsT(), version=2)
        else:  # pragma: no cover
            raise NotImplementedError(k)

    def build(self) -> bytes:
        for name in self.p.inputs:
            self.tensor(name)
        for op in self.p.ops:
            self.emit(op)
        sg = S.SubGraphT()
        sg.tensors = self.tensors
        sg.inputs = [self.index[n] for n in self.p.inputs]
        sg.outputs = [self.index[n] for n in self.p.outputs]
        sg.operators = self.ops
        sg.name = "main"
        m = S.ModelT()
        m.version = 3
        m.operatorCodes = self.codes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = "edgeq lowering test"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def to_tflite(program: Program) -> bytes:
    return _Writer(program).build()


def run_litert(model: bytes, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """Run with LiteRT's builtin reference kernels (no XNNPACK): TFLite's reference arithmetic."""
    it = litert.Interpreter(
        model_content=model, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF
    )
    it.allocate_tensors()
    by_name = {d["name"]: d["index"] for d in it.get_input_details()}
    for name, value in inputs.items():
        it.set_tensor(by_name[name], value)
    it.invoke()
    out_by_name = {d["name"]: d["index"] for d in it.get_output_details()}
    return {n: it.get_tensor(out_by_name[n]) for n in outputs}
