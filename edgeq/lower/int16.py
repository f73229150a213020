"""TFLite's 16x8 arithmetic: int16 activations (symmetric, zero point 0) with int8 weights.

The kernels follow TFLite's reference 16-bit variants, which LiteRT's builtin reference resolver runs:

* CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (reference_integer_ops ``ConvPerChannel``,
  ``DepthwiseConvPerChannel``, ``FullyConnected`` with ``AccumScalar = int64_t``): the accumulator is
  ``sum(w · x) + bias`` in int64 (no input offset: the zero point is 0), rescaled by the *64-bit*
  ``MultiplyByQuantizedMultiplier``, which rounds the multiplier to 16 bits first (see :func:`mbqm64_np`).
* ADD (reference_integer_ops ``AddElementwise`` for int16 with general scales, ``pot_scale_int16 = false``):
  the int8 algorithm with ``left_shift = 15``.
* QUANTIZE int8 ↔ int16 (reference_ops ``Requantize``): the 32-bit ``MultiplyByQuantizedMultiplier`` of
  ``q − zp_in``, plus ``zp_out``, saturated to the output type.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgeq.lower.fixedpoint import mbqm_np, mbqm_smaller_than_one_np, wrap32_np

INT16_MIN, INT16_MAX = -32768, 32767
#: ADD's left shift for int16 inputs (add.cc: "15 for 16-bit and 20 in case of 8-bit").
ADD_LEFT_SHIFT_INT16 = 15


def _clamp(x: np.ndarray, lo: int, hi: int, dtype) -> np.ndarray:
    return np.clip(x, lo, hi).astype(dtype)


def mbqm64_np(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """common.cc ``MultiplyByQuantizedMultiplier(int64_t x, int32_t multiplier, int shift)``.

    The 31-bit multiplier is reduced to 15 bits (``(m + 2^15) >> 16``, or 0x7FFF when that would overflow),
    then ``(x · m' + 2^(total_shift − 1)) >> total_shift`` with ``total_shift = 15 − shift``: one rounding,
    half up (arithmetic shift). ``x`` must lie in [−2^47, 2^47), as TFLite asserts.
    """
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - s
    rnd = np.left_shift(np.int64(1), total - 1)
    # x · reduced < 2^47 · 2^15 = 2^62: no int64 overflow.
    return (x * reduced + rnd) >> total


def _requant16(acc: np.ndarray, multiplier, shift, act_min: int, act_max: int) -> np.ndarray:
    return _clamp(mbqm64_np(acc, multiplier, shift), act_min, act_max, np.int16)


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # |int16 · int8| < 2^22: float64 BLAS sums exactly for any K < 2^31.
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def _out_size(size: int, k: int, stride: int, dilation: int, before: int, after: int) -> int:
    return (size + before + after - ((k - 1) * dilation + 1)) // stride + 1


def conv2d_16x8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int, int, int],
    multiplier,
    shift,
    act_min: int = INT16_MIN,
    act_max: int = INT16_MAX,
) -> np.ndarray:
    """reference_integer_ops::ConvPerChannel (int16 input/output, int8 OHWI filter, int64 accumulator)."""
    n, h, wd, c = x.shape
    o, kh, kw, ci = w.shape
    if ci != c:
        raise ValueError(f"conv2d_16x8: filter has {ci} input channels, input has {c}")
    (sh, sw), (dh, dw) = stride, dilation
    oh = _out_size(h, kh, sh, dh, padding[0], padding[2])
    ow = _out_size(wd, kw, sw, dw, padding[1], padding[3])
    top, left, bottom, right = padding
    xs = np.pad(x.astype(np.int32), ((0, 0), (top, bottom), (left, right), (0, 0)))  # zero point 0
    win = sliding_window_view(xs, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :, ::dh, ::dw]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * c)
    acc = _exact_matmul(cols, w.reshape(o, kh * kw * c).T)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)[None, :]
    m = np.broadcast_to(np.asarray(multiplier, np.int64), (o,))[None, :]
    s = np.broadcast_to(np.asarray(shift, np.int64), (o,))[None, :]
    return _requant16(acc, m, s, act_min, act_max).reshape(n, oh, ow, o)


def depthwise_conv2d_16x8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int, int, int],
    depth_multiplier: int,
    multiplier,
    shift,
    act_min: int = INT16_MIN,
    act_max: int = INT16_MAX,
) -> np.ndarray:
    """reference_integer_ops::DepthwiseConvPerChannel, 16x8. ``w`` is (1, kh, kw, C·M)."""
    n, h, wd, c = x.shape
    _, kh, kw, cm = w.shape
    if cm != c * depth_multiplier:
        raise ValueError(f"depthwise_conv2d_16x8: filter has {cm} channels, expected {c}·{depth_multiplier}")
    (sh, sw), (dh, dw) = stride, dilation
    oh = _out_size(h, kh, sh, dh, padding[0], padding[2])
    ow = _out_size(wd, kw, sw, dw, padding[1], padding[3])
    top, left, bottom, right = padding
    xs = np.pad(x.astype(np.int64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    if depth_multiplier > 1:
        xs = np.repeat(xs, depth_multiplier, axis=3)
    acc = np.zeros((n, oh, ow, cm), dtype=np.int64)
    w64 = w.astype(np.int64)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            acc += (
                xs[:, y0 : y0 + (oh - 1) * sh + 1 : sh, x0 : x0 + (ow - 1) * sw + 1 : sw, :] * w64[0, ky, kx]
            )
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    m = np.broadcast_to(np.asarray(multiplier, np.int64), (cm,))
    s = np.broadcast_to(np.asarray(shift, np.int64), (cm,))
    return _requant16(acc, m, s, act_min, act_max)


def fully_connected_16x8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    multiplier,
    shift,
    act_min: int = INT16_MIN,
    act_max: int = INT16_MAX,
    effective_scale=None,
) -> np.ndarray:
    """reference_integer_ops::FullyConnected(PerChannel), 16x8: x (..., in) int16, w (out, in) int8.

    With ``effective_scale`` (doubles, per channel) the int64 accumulator is rescaled as LiteRT's builtin
    reference kernel does, ``round(double(acc) · scale)`` (halves away from zero) — as for int8, measured
    bit-exact against BUILTIN_REF; without, by the 64-bit fixed-point ``MultiplyByQuantizedMultiplier``
    (TFLite's optimized kernels and TFLite Micro).
    """
    lead = x.shape[:-1]
    acc = _exact_matmul(x.reshape(-1, x.shape[-1]), w.T)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)[None, :]
    o = w.shape[0]
    if effective_scale is not None:
        scaled = acc.astype(np.float64) * np.asarray(effective_scale, dtype=np.float64)[None, :]
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        return _clamp(rounded.astype(np.int64), act_min, act_max, np.int16).reshape(*lead, o)
    m = np.broadcast_to(np.asarray(multiplier, np.int64), (o,))[None, :]
    s = np.broadcast_to(np.asarray(shift, np.int64), (o,))[None, :]
    return _requant16(acc, m, s, act_min, act_max).reshape(*lead, o)


def add_16(
    a: np.ndarray,
    b: np.ndarray,
    *,
    left_shift: int,
    m1: tuple[int, int],
    m2: tuple[int, int],
    mo: tuple[int, int],
    act_min: int = INT16_MIN,
    act_max: int = INT16_MAX,
) -> np.ndarray:
    """reference_integer_ops::AddElementwise for int16 (general scales, zero points 0), broadcasting."""
    v1 = wrap32_np(a.astype(np.int64) << left_shift)
    v2 = wrap32_np(b.astype(np.int64) << left_shift)
    raw = wrap32_np(mbqm_smaller_than_one_np(v1, *m1) + mbqm_smaller_than_one_np(v2, *m2))
    return _clamp(mbqm_smaller_than_one_np(raw, *mo), act_min, act_max, np.int16)


def requantize_int(
    x: np.ndarray, *, in_zp: int, out_zp: int, multiplier: int, shift: int, out_dtype: np.dtype
) -> np.ndarray:
    """reference_ops::Requantize between integer types (int8 ↔ int16), saturating to ``out_dtype``."""
    info = np.iinfo(out_dtype)
    out = mbqm_np(x.astype(np.int64) - in_zp, multiplier, shift) + out_zp
    return _clamp(out, int(info.min), int(info.max), out_dtype)


def int16_scale(absmax: float) -> float:
    """Symmetric int16 activation scale ``max|x| / 32767`` as float32 (a zero range gets 1/32767)."""
    absmax = float(absmax)
    if not np.isfinite(absmax) or absmax < 0:
        raise ValueError(f"int16_scale: |x| bound {absmax} is not a finite non-negative number")
    scale = np.float32((absmax if absmax > 0 else 1.0) / INT16_MAX)
    return float(max(scale, np.finfo(np.float32).tiny))


__all__ = [
    "ADD_LEFT_SHIFT_INT16",
    "INT16_MAX",
    "INT16_MIN",
    "add_16",
    "conv2d_16x8",
    "depthwise_conv2d_16x8",
    "fully_connected_16x8",
    "int16_scale",
    "mbqm64_np",
    "requantize_int",
]
