"""Quantization parameters: activation scale/zero point, symmetric int8 weights, int32 bias.

The affine relation everywhere is ``real = scale * (q - zero_point)``. Scales are float32 values (ONNX and
TFLite store float32), computed in float64 and rounded once; every integer is found with round-half-to-even,
the rounding QuantizeLinear itself uses, so a value quantized offline and one quantized by the runtime agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from edgeq._compat import StrEnum


class QuantType(StrEnum):
    """An integer type of the QDQ model."""

    UINT8 = "uint8"
    INT8 = "int8"
    INT32 = "int32"

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.value).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.value).max)

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def onnx(self) -> int:
        return {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8, "int32": TensorProto.INT32}[self.value]


#: Symmetric int8 weights use [-127, 127] with zero point 0: -128 is left out so that the range is symmetric.
#: TFLite requires exactly this for conv, depthwise and fully-connected weights (per channel); onnxruntime's
#: symmetric-weight kernels (e.g. MLAS's depthwise path) rely on the zero point being 0.
WEIGHT_QMAX = 127
INT32_MAX = int(np.iinfo(np.int32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class QParams:
    """Scale(s) and zero point(s) of one quantized tensor; ``axis`` is None for per-tensor parameters.

    Scales are Python floats that are exactly float32 values, so two QParams compare equal exactly when the
    QDQ model stores the same bits.
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dtype: QuantType
    axis: int | None = None

    def __post_init__(self) -> None:
        if len(self.scale) != len(self.zero_point) or not self.scale:
            raise ValueError("scale and zero_point must be non-empty and of the same length")
        if self.axis is None and len(self.scale) != 1:
            raise ValueError("per-tensor parameters have exactly one scale")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def scale_array(self) -> np.ndarray:
        """float32 scale: a scalar for per-tensor parameters, 1-D per channel."""
        s = np.asarray(self.scale, dtype=np.float32)
        return s if self.per_channel else s.reshape(())

    def zero_point_array(self) -> np.ndarray:
        z = np.asarray(self.zero_point, dtype=self.dtype.numpy)
        return z if self.per_channel else z.reshape(())

    def representable(self) -> tuple[float, float]:
        """The real interval [dequant(qmin), dequant(qmax)] of a per-tensor parameter set."""
        s, z = self.scale[0], self.zero_point[0]
        return s * (self.dtype.qmin - z), s * (self.dtype.qmax - z)

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Quantize float ``values`` as QuantizeLinear does (per tensor), in float64 then saturated."""
        scale = np.float64(np.float32(self.scale[0]))
        q = np.rint(np.asarray(values, dtype=np.float64) / scale) + self.zero_point[0]
        return np.clip(q, self.dtype.qmin, self.dtype.qmax).astype(self.dtype.numpy)


def _f32(x: float) -> float:
    return float(np.float32(x))


def activation_params(lo: float, hi: float, dtype: QuantType) -> QParams:
    """Asymmetric per-tensor parameters covering [lo, hi], with real 0 exactly representable.

    scale = (hi - lo) / (qmax - qmin); the zero point is round(qmin - lo / scale), clamped into [qmin, qmax]
    — the "nudge" of TFLite and onnxruntime: the represented interval shifts by less than half a step so that
    0 lands on an integer, which makes zero padding and ReLU exact. With lo = 0 the zero point is qmin.
    A zero-width range (a tensor that was always 0) gets the range [0, 1]: any scale represents it exactly.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"range ({lo}, {hi}) is not finite")
    if hi == lo:
        hi = lo + 1.0
    scale = max(_f32((hi - lo) / (dtype.qmax - dtype.qmin)), _F32_TINY)
    zp = int(np.clip(np.rint(dtype.qmin - lo / scale), dtype.qmin, dtype.qmax))
    return QParams((scale,), (zp,), dtype)


def fixed_params(scale: float, zero_point: int, dtype: QuantType) -> QParams:
    """Parameters fixed by an op's mathematics (e.g. softmax output 1/256, -128)."""
    return QParams((_f32(scale),), (int(zero_point),), dtype)


def weight_scales(w: np.ndarray, axis: int | None) -> np.ndarray:
    """float32 symmetric scales max|w| / 127, per slice along ``axis`` (or one for the tensor).

    An all-zero channel gets the largest scale of the layer (1.0 if the whole tensor is zero): its weights
    quantize to 0 whatever the scale, and a scale like its neighbours' keeps the int32 bias and the
    requantization multiplier of that channel in the normal range.
    """
    w = np.asarray(w, dtype=np.float64)
    if axis is None:
        absmax = np.array([np.max(np.abs(w))]) if w.size else np.zeros(1)
    else:
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        absmax = np.max(np.abs(moved), axis=1) if moved.shape[1] else np.zeros(w.shape[axis])
    scales = np.maximum((absmax / WEIGHT_QMAX).astype(np.float32), np.float32(_F32_TINY))
    fill = np.float32(scales[absmax > 0].max()) if np.any(absmax > 0) else np.float32(1.0)
    return np.where(absmax > 0, scales, fill).astype(np.float32)


def quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int | None) -> np.ndarray:
    """int8 ``round(w / scale)`` clamped to [-127, 127], per slice along ``axis``."""
    w = np.asarray(w, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float32).astype(np.float64)
    if axis is not None:
        shape = [1] * w.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    else:
        s = s.reshape(())
    return np.clip(np.rint(w / s), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)


def bias_scales(input_scale: float, weight_scale: np.ndarray) -> np.ndarray:
    """float32 bias scale = input scale × weight scale (per channel), the product rounded once to float32.

    This is the scale the int8 kernels accumulate in: the bias is added to sum((x - zp_x) * w) unscaled.
    """
    return (np.float32(input_scale) * np.asarray(weight_scale, dtype=np.float32)).astype(np.float32)


def quantize_bias(b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int32 ``round(b / scale)``; the caller guarantees the range (see :func:`fit_bias`)."""
    q = np.rint(np.asarray(b, dtype=np.float64) / np.asarray(scales, dtype=np.float32).astype(np.float64))
    if np.any(np.abs(q) > INT32_MAX):
        raise ValueError("bias does not fit int32")
    return q.astype(np.int32)


def fit_bias(b: np.ndarray, input_scale: float, w_scales: np.ndarray) -> np.ndarray:
    """Weight scales, raised where needed so that the int32 bias round(b / (s_in · s_w)) cannot overflow.

    A bias much larger than the weights times the input step (a dead layer, a tiny input range) would not fit
    int32; the only exact fix is a coarser weight scale for that channel (onnxruntime's quantizer does the
    same). Channels that fit keep their scales bit for bit.
    """
    w_scales = np.asarray(w_scales, dtype=np.float32).reshape(-1).copy()
    b = np.abs(np.asarray(b, dtype=np.float64)).reshape(-1)
    b = (
        np.full(w_scales.shape, b.max() if b.size else 0.0)
        if w_scales.size == 1
        else np.broadcast_to(b, w_scales.shape)
    )
    limit = float(INT32_MAX) - 1.0  # a step of margin for the rounding
    s_in = np.float64(np.float32(input_scale))
    over = b / bias_scales(input_scale, w_scales).astype(np.float64) > limit
    for c in np.flatnonzero(over):
        need = np.float32(b[c] / (s_in * limit))
        while b[c] / np.float64(bias_scales(input_scale, need)) > limit:
            need = np.nextafter(need, np.float32(np.inf))
        w_scales[c] = need
    return w_scales
