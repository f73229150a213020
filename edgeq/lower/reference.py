"""The reference interpreter: runs a :class:`~edgeq.lower.program.Program` in numpy, bit-exact with TFLite's
int8 reference kernels (``OpResolverType.BUILTIN_REF``).

It is the oracle the .tflite and C backends are tested against, and the fastest way to see what the integer
program computes: ``run(program, {"input": q})`` with int8 inputs in the program's layout
(:meth:`Program.quantize_input` converts a float ONNX-layout array).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from edgeq._compat import StrEnum
from edgeq.errors import DataError, UnsupportedError
from edgeq.lower import int16 as K16
from edgeq.lower import kernels as K
from edgeq.lower.options import effective_scales
from edgeq.lower.program import DType, Op, OpKind, Program, TensorInfo


def _zp(t: TensorInfo) -> int:
    return t.qparams.zero_point[0] if t.qparams is not None else 0


def _scale(t: TensorInfo) -> float:
    return t.qparams.scale[0] if t.qparams is not None else 1.0


class FcRescale(StrEnum):
    """How FULLY_CONNECTED rescales its int32 accumulator (see FullyConnectedOptions)."""

    DOUBLE = "double"  # TFLite's builtin reference kernel: (int32)round(double(acc) * scale)
    FIXED_POINT = (
        "fixed-point"  # TFLite's optimized kernels, TFLite Micro, CMSIS-NN: MultiplyByQuantizedMultiplier
    )


class _Env:
    def __init__(self, program: Program, fc_rescale: FcRescale = FcRescale.DOUBLE):
        self.p = program
        self.fc_rescale = FcRescale(fc_rescale)
        self.values: dict[str, np.ndarray] = {n: t.data for n, t in program.tensors.items() if t.is_constant}

    def get(self, name: str) -> np.ndarray:
        return self.values[name]

    def info(self, name: str) -> TensorInfo:
        return self.p.tensors[name]


def _is16(env: _Env, op: Op) -> bool:
    # TFLite's 16x8 mode: int16 activations with int8 weights (edgeq.lower.int16).
    return env.info(op.inputs[0]).dtype is DType.INT16


def _requant_args(o) -> dict:
    """The output rescale and clamp every weighted kernel takes, int8 or 16x8 alike."""
    return {
        "multiplier": np.asarray(o.requant.multiplier),
        "shift": np.asarray(o.requant.shift),
        "act_min": o.activation.min,
        "act_max": o.activation.max,
    }


def _zero_points(env: _Env, op: Op, **names: int) -> dict:
    """``{keyword: zero point of op's tensor at that index}``; -1 is the output. 16x8 kernels take none: their
    int16 activations are symmetric."""
    if _is16(env, op):
        return {}
    return {k: _zp(env.info(op.outputs[0] if i < 0 else op.inputs[i])) for k, i in names.items()}


def _conv(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    x, w, b = (env.get(n) for n in op.inputs[:3])
    kernel = K16.conv2d_16x8 if _is16(env, op) else K.conv2d
    return kernel(
        x, w, b, stride=o.stride, dilation=o.dilation, padding=o.padding, **_requant_args(o),
        **_zero_points(env, op, in_zp=0, out_zp=-1),
    )  # fmt: skip


def _depthwise(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    x, w, b = (env.get(n) for n in op.inputs[:3])
    kernel = K16.depthwise_conv2d_16x8 if _is16(env, op) else K.depthwise_conv2d
    return kernel(
        x, w, b, stride=o.stride, dilation=o.dilation, padding=o.padding, depth_multiplier=o.depth_multiplier,
        **_requant_args(o), **_zero_points(env, op, in_zp=0, out_zp=-1),
    )  # fmt: skip


def _fc(env: _Env, op: Op) -> np.ndarray:
    x, w, b = (env.get(n) for n in op.inputs[:3])
    kernel = K16.fully_connected_16x8 if _is16(env, op) else K.fully_connected
    scales = _fc_scales(env, op) if env.fc_rescale is FcRescale.DOUBLE else None
    return kernel(
        x, w, b, effective_scale=scales, **_requant_args(op.options),
        **_zero_points(env, op, in_zp=0, w_zp=1, out_zp=-1),
    )  # fmt: skip


def _fc_scales(env: _Env, op: Op) -> tuple[float, ...]:
    if op.options.effective_scale:
        return op.options.effective_scale
    x, w, y = (env.info(n).qparams for n in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return effective_scales(x, w, y, env.info(op.inputs[1]).shape[0])


def _add(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    a, b = env.get(op.inputs[0]), env.get(op.inputs[1])
    args = {
        "left_shift": o.left_shift,
        "m1": (o.input1.multiplier[0], o.input1.shift[0]),
        "m2": (o.input2.multiplier[0], o.input2.shift[0]),
        "mo": (o.output.multiplier[0], o.output.shift[0]),
        "act_min": o.activation.min,
        "act_max": o.activation.max,
    }
    if _is16(env, op) and op.kind is OpKind.ADD:
        return K16.add_16(a, b, **args)
    zps = {
        "zp1": _zp(env.info(op.inputs[0])),
        "zp2": _zp(env.info(op.inputs[1])),
        "out_zp": _zp(env.info(op.outputs[0])),
    }
    return K.add(a, b, **args, **zps, subtract=op.kind is OpKind.SUB)


def _mul(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return K.mul(
        env.get(op.inputs[0]),
        env.get(op.inputs[1]),
        zp1=_zp(env.info(op.inputs[0])),
        zp2=_zp(env.info(op.inputs[1])),
        out_zp=_zp(env.info(op.outputs[0])),
        multiplier=o.requant.multiplier[0],
        shift=o.requant.shift[0],
        act_min=o.activation.min,
        act_max=o.activation.max,
    )


def _concat(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    out = np.concatenate([env.get(n) for n in op.inputs], axis=o.axis)
    return np.clip(out, o.activation.min, o.activation.max).astype(np.int8)


def _max_pool(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return K.max_pool(
        env.get(op.inputs[0]),
        filt=o.filter,
        stride=o.stride,
        padding=o.padding,
        act_min=o.activation.min,
        act_max=o.activation.max,
    )


def _avg_pool(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return K.average_pool(
        env.get(op.inputs[0]),
        filt=o.filter,
        stride=o.stride,
        padding=o.padding,
        act_min=o.activation.min,
        act_max=o.activation.max,
    )


def _mean(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    x = env.get(op.inputs[0])
    if x.ndim != 4 or tuple(sorted(o.axes)) != (1, 2) or not o.keep_dims:
        raise UnsupportedError(
            f"MEAN ({op.source}): only a 4-D NHWC mean over axes (1, 2) with keep_dims "
            f"is supported, got axes {o.axes}"
        )
    if o.count_requant is not None:
        m, e = o.count_requant.multiplier[0], o.count_requant.shift[0]
    else:
        m, e = K.mean_count_multiplier(o.requant.multiplier[0], o.requant.shift[0], x.shape[1] * x.shape[2])
    return K.mean_hw(
        x, in_zp=_zp(env.info(op.inputs[0])), out_zp=_zp(env.info(op.outputs[0])), multiplier=m, shift=e
    )


def _reshape(env: _Env, op: Op) -> np.ndarray:
    return env.get(op.inputs[0]).reshape(op.options.new_shape)


def _pad(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return np.pad(env.get(op.inputs[0]), o.paddings, constant_values=o.value)


def _softmax(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return K.softmax(
        env.get(op.inputs[0]),
        input_multiplier=o.input_multiplier,
        input_left_shift=o.input_left_shift,
        diff_min=o.diff_min,
    )


def _lut(env: _Env, op: Op) -> np.ndarray:
    return K.lookup(env.get(op.inputs[0]), op.options.lut)


def _prelu(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return K.prelu(
        env.get(op.inputs[0]),
        env.get(op.inputs[1]),
        in_zp=_zp(env.info(op.inputs[0])),
        alpha_zp=_zp(env.info(op.inputs[1])),
        out_zp=_zp(env.info(op.outputs[0])),
        identity=(o.identity.multiplier[0], o.identity.shift[0]),
        alpha_m=(o.alpha_requant.multiplier[0], o.alpha_requant.shift[0]),
    )


def _resize_nearest(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return K.resize_nearest(
        env.get(op.inputs[0]), o.size, align_corners=o.align_corners, half_pixel_centers=o.half_pixel_centers
    )


def _resize_bilinear(env: _Env, op: Op) -> np.ndarray:
    o = op.options
    return K.resize_bilinear(
        env.get(op.inputs[0]), o.size, align_corners=o.align_corners, half_pixel_centers=o.half_pixel_centers
    )


def _transpose(env: _Env, op: Op) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(env.get(op.inputs[0]), op.options.perm))


def _quantize(env: _Env, op: Op) -> np.ndarray:
    x = env.get(op.inputs[0])
    xi, yi = env.info(op.inputs[0]), env.info(op.outputs[0])
    r = op.options.requant
    if r is None:
        return K.quantize_float(x, _scale(yi), _zp(yi))
    if DType.INT16 in (xi.dtype, yi.dtype):
        return K16.requantize_int(
            x,
            in_zp=_zp(xi),
            out_zp=_zp(yi),
            multiplier=r.multiplier[0],
            shift=r.shift[0],
            out_dtype=yi.dtype.numpy,
        )
    return K.requantize(x, in_zp=_zp(xi), out_zp=_zp(yi), multiplier=r.multiplier[0], shift=r.shift[0])


def _dequantize(env: _Env, op: Op) -> np.ndarray:
    xi = env.info(op.inputs[0])
    return K.dequantize(env.get(op.inputs[0]), _scale(xi), _zp(xi))


_KERNELS: dict[OpKind, Callable[[_Env, Op], np.ndarray]] = {
    OpKind.CONV_2D: _conv,
    OpKind.DEPTHWISE_CONV_2D: _depthwise,
    OpKind.FULLY_CONNECTED: _fc,
    OpKind.ADD: _add,
    OpKind.SUB: _add,
    OpKind.MUL: _mul,
    OpKind.CONCATENATION: _concat,
    OpKind.MAX_POOL_2D: _max_pool,
    OpKind.AVERAGE_POOL_2D: _avg_pool,
    OpKind.MEAN: _mean,
    OpKind.RESHAPE: _reshape,
    OpKind.PAD: _pad,
    OpKind.SOFTMAX: _softmax,
    OpKind.LOGISTIC: _lut,
    OpKind.HARD_SWISH: _lut,
    OpKind.RELU: _lut,
    OpKind.RELU6: _lut,
    OpKind.LEAKY_RELU: _lut,
    OpKind.PRELU: _prelu,
    OpKind.RESIZE_NEAREST_NEIGHBOR: _resize_nearest,
    OpKind.RESIZE_BILINEAR: _resize_bilinear,
    OpKind.TRANSPOSE: _transpose,
    OpKind.QUANTIZE: _quantize,
    OpKind.DEQUANTIZE: _dequantize,
}


try:  # optional: scikit-learn and most scientific stacks ship it
    from threadpoolctl import ThreadpoolController

    _POOLS = ThreadpoolController()
except Exception:  # pragma: no cover - threadpoolctl missing or broken
    _POOLS = None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    # An int8 net's GEMMs are small; OpenBLAS's thread pool makes them 20-50x slower on few-core machines.
    if _POOLS is None:
        yield
        return
    with _POOLS.limit(limits=1, user_api="blas"):
        yield


def run(
    program: Program,
    inputs: Mapping[str, np.ndarray],
    *,
    keep_intermediates: bool = False,
    fc_rescale: FcRescale | str = FcRescale.DOUBLE,
) -> dict[str, np.ndarray]:
    """Execute ``program`` on ``inputs`` (program input name → array of the input's dtype and shape).

    Returns the program outputs by name, or with ``keep_intermediates`` every tensor computed on the way
    (for per-layer comparison). A leading batch dimension larger than the program's is not accepted: run
    one sample at a time, or lower with that batch size.

    ``fc_rescale`` picks FULLY_CONNECTED's rescaling: ``"double"`` (default) is TFLite's builtin reference
    kernel, bit-exact with LiteRT's ``OpResolverType.BUILTIN_REF``; ``"fixed-point"`` is what TFLite's
    optimized kernels, TFLite Micro and CMSIS-NN compute. Every other op has one arithmetic.
    """
    env = _Env(program, FcRescale(fc_rescale))
    for name in program.inputs:
        if name not in inputs:
            raise DataError(
                f"reference run: missing input '{name}' (the program's inputs are "
                f"{', '.join(program.inputs)})"
            )
        t = program.tensors[name]
        x = np.asarray(inputs[name])
        if x.dtype != t.dtype.numpy:
            raise DataError(
                f"reference run: input '{name}' has dtype {x.dtype}, the program wants "
                f"{t.dtype.value}; quantize it first (Program.quantize_input)"
            )
        if tuple(x.shape) != t.shape:
            raise DataError(
                f"reference run: input '{name}' has shape {tuple(x.shape)}, the program wants "
                f"{t.shape} (program layout{', NHWC' if len(t.shape) == 4 else ''})"
            )
        env.values[name] = x
    unknown = sorted(set(inputs) - set(program.inputs))
    if unknown:
        raise DataError(
            f"reference run: unknown input(s) {', '.join(unknown)}; the program's inputs are "
            f"{', '.join(program.inputs)}"
        )
    with _one_blas_thread():
        for op in program.ops:
            out = _KERNELS[op.kind](env, op)
            expect = program.tensors[op.outputs[0]]
            if tuple(out.shape) != expect.shape:
                raise UnsupportedError(
                    f"{op.kind} ({op.source}): computed shape {tuple(out.shape)} does not match "
                    f"the program's {expect.shape} for '{op.outputs[0]}'"
                )
            env.values[op.outputs[0]] = out.astype(expect.dtype.numpy, copy=False)
    if keep_intermediates:
        return {n: v for n, v in env.values.items() if not program.tensors[n].is_constant}
    return {name: env.values[name] for name in program.outputs}


__all__ = ["FcRescale", "run"]
