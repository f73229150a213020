"""TFLite's int8 reference kernels, vectorised in numpy, integer-only and bit-exact.

Each function mirrors one kernel of tensorflow/lite/kernels/internal/reference (integer_ops/conv.h,
depthwise_conv.h, fully_connected.h, add.h, mul.h, pooling.h, mean.h, softmax.h, hard_swish.h, leaky_relu.h,
prelu.h, resize_*.h, requantize.h) and the Prepare-time arithmetic of the matching kernels/*.cc. Arrays are
int8 in and out; accumulation is done in int64 (or in float64 where every partial sum is an integer below
2^53, which makes BLAS matrix products exact) and wrapped to int32 where the C code accumulates in int32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgeq.lower.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    f64,
    mbqm_np,
    mbqm_smaller_than_one_np,
    quantize_multiplier,
    rdbpot_np,
    round_half_away,
    srdhm_np,
    wrap32_np,
)

INT8_MIN, INT8_MAX = -128, 127


def _clamp_int8(x: np.ndarray, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    return np.clip(x, lo, hi).astype(np.int8)


def _c_div(num: np.ndarray, den: np.ndarray | int) -> np.ndarray:
    """C integer division (truncates toward zero) on int64 arrays."""
    num = np.asarray(num, dtype=np.int64)
    den = np.asarray(den, dtype=np.int64)
    q = np.abs(num) // np.abs(den)
    return np.where((num < 0) != (den < 0), -q, q)


def _round_div(acc: np.ndarray, count: np.ndarray | int) -> np.ndarray:
    """TFLite's ``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` (C division): halves away from zero."""
    acc = np.asarray(acc, dtype=np.int64)
    half = np.asarray(count, dtype=np.int64) // 2
    return _c_div(np.where(acc > 0, acc + half, acc - half), count)


# ---- activation ranges (kernel_util.cc CalculateActivationRangeQuantized) ---------------------------------


def quantize_value(f: float, scale: float, zero_point: int) -> int:
    """kernel_util's Quantize(): ``zero_point + (int)TfLiteRound(f / scale)`` with float32 division."""
    return int(round_half_away(float(np.float32(f) / np.float32(scale)))) + int(zero_point)


def activation_range(kind: str, scale: float, zero_point: int) -> tuple[int, int]:
    """The int8 clamp TFLite derives from a fused activation enum (NONE/RELU/RELU6/RELU_N1_TO_1)."""
    if kind == "RELU":
        return max(INT8_MIN, quantize_value(0.0, scale, zero_point)), INT8_MAX
    if kind == "RELU6":
        return (
            max(INT8_MIN, quantize_value(0.0, scale, zero_point)),
            min(INT8_MAX, quantize_value(6.0, scale, zero_point)),
        )
    if kind == "RELU_N1_TO_1":
        return (
            max(INT8_MIN, quantize_value(-1.0, scale, zero_point)),
            min(INT8_MAX, quantize_value(1.0, scale, zero_point)),
        )
    return INT8_MIN, INT8_MAX


# ---- convolutions and fully connected ------------------------------------------------------------------


def _requantize_acc(
    acc: np.ndarray, multiplier, shift, out_zp: int, act_min: int, act_max: int
) -> np.ndarray:
    out = mbqm_np(wrap32_np(acc), np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)) + out_zp
    return _clamp_int8(out, act_min, act_max)


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matrix product through float64 BLAS: exact while every |partial sum| < 2^53."""
    # int8·int8 products are < 2^15; K terms sum below 2^53 for any K < 2^38.
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def _pad_nhwc(x: np.ndarray, padding: tuple[int, int, int, int], value: int) -> np.ndarray:
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _out_size(size: int, k: int, stride: int, dilation: int, pad_before: int, pad_after: int) -> int:
    eff = (k - 1) * dilation + 1
    return (size + pad_before + pad_after - eff) // stride + 1


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray,
    *,
    in_zp: int,
    out_zp: int,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int, int, int],
    multiplier,
    shift,
    act_min: int,
    act_max: int,
) -> np.ndarray:
    """reference_integer_ops::ConvPerChannel. x NHWC int8, w OHWI int8, bias int32 (O,)."""
    n, h, wd, c = x.shape
    o, kh, kw, ci = w.shape
    if ci != c:
        raise ValueError(f"conv2d: filter has {ci} input channels, input has {c}")
    sh, sw = stride
    dh, dw = dilation
    oh = _out_size(h, kh, sh, dh, padding[0], padding[2])
    ow = _out_size(wd, kw, sw, dw, padding[1], padding[3])
    # Padded positions hold the input zero point, i.e. contribute 0 once the offset is applied.
    xs = _pad_nhwc(x.astype(np.int16) - in_zp, padding, 0)
    win = sliding_window_view(xs, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :, ::dh, ::dw]  # (N, OH, OW, C, kh, kw)
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * c)
    acc = _exact_matmul(cols, w.reshape(o, kh * kw * c).T) + bias.astype(np.int64)[None, :]
    out = _requantize_acc(
        acc, np.asarray(multiplier)[None, :], np.asarray(shift)[None, :], out_zp, act_min, act_max
    )
    return out.reshape(n, oh, ow, o)


def depthwise_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray,
    *,
    in_zp: int,
    out_zp: int,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int, int, int],
    depth_multiplier: int,
    multiplier,
    shift,
    act_min: int,
    act_max: int,
) -> np.ndarray:
    """reference_integer_ops::DepthwiseConvPerChannel. w is (1, kh, kw, C·M)."""
    n, h, wd, c = x.shape
    _, kh, kw, cm = w.shape
    if cm != c * depth_multiplier:
        raise ValueError(f"depthwise_conv2d: filter has {cm} channels, expected {c}·{depth_multiplier}")
    sh, sw = stride
    dh, dw = dilation
    oh = _out_size(h, kh, sh, dh, padding[0], padding[2])
    ow = _out_size(wd, kw, sw, dw, padding[1], padding[3])
    xs = _pad_nhwc(x.astype(np.int32) - in_zp, padding, 0)
    if depth_multiplier > 1:
        xs = np.repeat(xs, depth_multiplier, axis=3)  # output channel c·M + m reads input channel c
    acc = np.zeros((n, oh, ow, cm), dtype=np.int64)
    w64 = w.astype(np.int64)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            patch = xs[:, y0 : y0 + (oh - 1) * sh + 1 : sh, x0 : x0 + (ow - 1) * sw + 1 : sw, :]
            acc += patch * w64[0, ky, kx, :]
    acc += bias.astype(np.int64)
    return _requantize_acc(acc, multiplier, shift, out_zp, act_min, act_max)


def fully_connected(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray,
    *,
    in_zp: int,
    w_zp: int,
    out_zp: int,
    multiplier,
    shift,
    act_min: int,
    act_max: int,
    effective_scale=None,
) -> np.ndarray:
    """reference_integer_ops::FullyConnected(PerChannel). x (..., in), w (out, in).

    With ``effective_scale`` (doubles, per channel) the accumulator is rescaled as TFLite's builtin reference
    kernel does, ``(int32)round(double(acc) * scale)``; without, by the fixed-point multipliers (TFLite's
    optimized kernels, TFLite Micro, CMSIS-NN).
    """
    lead = x.shape[:-1]
    xs = x.reshape(-1, x.shape[-1]).astype(np.int16) - in_zp
    acc = wrap32_np(_exact_matmul(xs, (w.astype(np.int16) - w_zp).T) + bias.astype(np.int64)[None, :])
    if effective_scale is not None:
        scaled = acc.astype(np.float64) * np.asarray(effective_scale, dtype=np.float64)[None, :]
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # std::round: halves away from zero
        out = _clamp_int8(rounded.astype(np.int64) + out_zp, act_min, act_max)
    else:
        out = _requantize_acc(
            acc, np.asarray(multiplier)[None, :], np.asarray(shift)[None, :], out_zp, act_min, act_max
        )
    return out.reshape(*lead, w.shape[0])


# ---- elementwise binary ----------------------------------------------------------------------------------


def add_params(s1: float, s2: float, s_out: float, left_shift: int = 20):
    """add.cc Prepare (int8): the per-input and output multipliers for ADD/SUB."""
    twice_max = 2.0 * max(f64(s1), f64(s2))
    m1 = quantize_multiplier(f64(s1) / twice_max)
    m2 = quantize_multiplier(f64(s2) / twice_max)
    mo = quantize_multiplier(twice_max / ((1 << left_shift) * f64(s_out)))
    return m1, m2, mo


def add(
    a: np.ndarray,
    b: np.ndarray,
    *,
    zp1: int,
    zp2: int,
    out_zp: int,
    left_shift: int,
    m1: tuple[int, int],
    m2: tuple[int, int],
    mo: tuple[int, int],
    act_min: int,
    act_max: int,
    subtract: bool = False,
) -> np.ndarray:
    """reference_integer_ops::AddFunc (and SubFunc), broadcasting."""
    v1 = wrap32_np((a.astype(np.int64) - zp1) << left_shift)
    v2 = wrap32_np((b.astype(np.int64) - zp2) << left_shift)
    s1 = mbqm_smaller_than_one_np(v1, *m1)
    s2 = mbqm_smaller_than_one_np(v2, *m2)
    raw = wrap32_np(s1 - s2 if subtract else s1 + s2)
    out = mbqm_smaller_than_one_np(raw, *mo) + out_zp
    return _clamp_int8(out, act_min, act_max)


def mul(
    a: np.ndarray,
    b: np.ndarray,
    *,
    zp1: int,
    zp2: int,
    out_zp: int,
    multiplier: int,
    shift: int,
    act_min: int,
    act_max: int,
) -> np.ndarray:
    """reference_integer_ops::MulElementwise / BroadcastMul."""
    prod = (a.astype(np.int64) - zp1) * (b.astype(np.int64) - zp2)
    return _clamp_int8(mbqm_np(prod, multiplier, shift) + out_zp, act_min, act_max)


# ---- pooling and reductions -----------------------------------------------------------------------------


def _pool_windows(x: np.ndarray, filt, stride, padding, fill: int):
    _, h, w, _ = x.shape
    fh, fw = filt
    sh, sw = stride
    oh = _out_size(h, fh, sh, 1, padding[0], padding[2])
    ow = _out_size(w, fw, sw, 1, padding[1], padding[3])
    xp = _pad_nhwc(x, padding, fill)
    win = sliding_window_view(xp, (fh, fw), axis=(1, 2))[
        :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw
    ]
    return win, oh, ow  # (N, OH, OW, C, fh, fw)


def max_pool(x: np.ndarray, *, filt, stride, padding, act_min: int, act_max: int) -> np.ndarray:
    """reference_integer_ops::MaxPool: padded positions are ignored."""
    win, _, _ = _pool_windows(x.astype(np.int16), filt, stride, padding, INT8_MIN - 1)
    return _clamp_int8(win.max(axis=(4, 5)), act_min, act_max)


def average_pool(x: np.ndarray, *, filt, stride, padding, act_min: int, act_max: int) -> np.ndarray:
    """reference_integer_ops::AveragePool: mean over in-bounds elements, rounded half away from zero."""
    win, _, _ = _pool_windows(x.astype(np.int64), filt, stride, padding, 0)
    ones = np.ones((1, *x.shape[1:3], 1), dtype=np.int64)
    cnt, _, _ = _pool_windows(ones, filt, stride, padding, 0)
    acc = win.sum(axis=(4, 5))
    count = cnt.sum(axis=(4, 5))
    return _clamp_int8(_round_div(acc, count), act_min, act_max)


def mean_count_multiplier(multiplier: int, shift: int, count: int) -> tuple[int, int]:
    """reference_ops::QuantizedMeanOrSum: fold 1/count into the (multiplier, shift) of s_in / s_out."""
    k = count.bit_length() - 1  # 63 - CountLeadingZeros(uint64 count)
    k = min(k, 32, 31 + shift)
    return ((multiplier << k) // count), shift - k


def mean_hw(x: np.ndarray, *, in_zp: int, out_zp: int, multiplier: int, shift: int) -> np.ndarray:
    """reference_ops::QuantizedMeanOrSum for MEAN over axes (1, 2) of an NHWC tensor (keep_dims).

    ``multiplier``/``shift`` are the count-adjusted values (:func:`mean_count_multiplier`).
    """
    count = x.shape[1] * x.shape[2]
    acc = wrap32_np(x.astype(np.int64).sum(axis=(1, 2), keepdims=True) - in_zp * count)
    return _clamp_int8(mbqm_np(acc, multiplier, shift) + out_zp)


# ---- softmax (reference_ops::Softmax, gemmlowp fixed point) ---------------------------------------------


def _sat_rounding_mul_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp::SaturatingRoundingMultiplyByPOT<exponent> on int32 values held in int64."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot_np(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    r = wrap32_np(x << exponent)
    r = np.where(x > threshold, INT32_MAX, r)
    return np.where(x < -threshold, INT32_MIN, r)


def _exp_on_interval_neg_quarter_0(a: np.ndarray) -> np.ndarray:
    """gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl (Q0.31 in and out)."""
    constant_term = 1895147668
    constant_1_over_3 = 715827883
    x = wrap32_np(a + (1 << 28))
    x2 = srdhm_np(x, x)
    x3 = srdhm_np(x2, x)
    x4 = srdhm_np(x2, x2)
    x4_over_4 = _sat_rounding_mul_by_pot(x4, -2)
    inner = _sat_rounding_mul_by_pot(
        wrap32_np(srdhm_np(wrap32_np(x4_over_4 + x3), constant_1_over_3) + x2), -1
    )
    return wrap32_np(constant_term + srdhm_np(np.int64(constant_term), wrap32_np(x + inner)))


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::exp_on_negative_values for a FixedPoint<int32, integer_bits>; returns Q0.31."""
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = wrap32_np((a & mask) - one_quarter)
    result = _exp_on_interval_neg_quarter_0(
        _sat_rounding_mul_by_pot(a_mod_quarter_minus_one_quarter, integer_bits)
    )
    remainder = wrap32_np(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in (
        (-2, 1672461947),
        (-1, 1302514674),
        (0, 790015084),
        (1, 290630308),
        (2, 39332535),
        (3, 720401),
        (4, 242),
    ):
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where((remainder & bit) != 0, srdhm_np(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp::one_over_one_plus_x_for_x_in_0_1 (Q0.31 in and out)."""
    # RoundingHalfSum(a, One) with One = INT32_MAX in Q0.31.
    s = a + INT32_MAX
    half_denominator = _c_div(s + np.where(s >= 0, 1, -1), 2)
    c48_17, cneg32_17 = 1515870810, -1010580540  # Q2.29
    one_f2 = 1 << 29
    x = wrap32_np(c48_17 + srdhm_np(half_denominator, cneg32_17))
    for _ in range(3):
        hdx = srdhm_np(half_denominator, x)
        one_minus = wrap32_np(one_f2 - hdx)
        x = wrap32_np(x + _sat_rounding_mul_by_pot(srdhm_np(x, one_minus), 2))
    # Rescale<0>(ExactMulByPot<-1>(x)): a Q1.30 value moved to Q0.31, saturating.
    return _sat_rounding_mul_by_pot(x, 1)


def _count_leading_zeros32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    bits = np.zeros_like(x)
    v = x.copy()
    for shift in (16, 8, 4, 2, 1):
        big = v >= (1 << shift)
        bits = np.where(big, bits + shift, bits)
        v = np.where(big, v >> shift, v)
    bits = np.where(x > 0, bits + 1, 0)  # bit length
    return 32 - bits


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """activations.cc SoftmaxPrepare (kReference, int8): (input_multiplier, input_left_shift, diff_min)."""
    integer_bits = 5
    real = min(f64(beta) * f64(input_scale) * (1 << (31 - integer_bits)), (1 << 31) - 1.0)
    multiplier, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        raise ValueError("softmax: input_scale * beta too small for QuantizeMultiplierGreaterThanOne")
    max_input_rescaled = 1.0 * ((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << left_shift)
    diff_min = -math.floor(max_input_rescaled)
    return multiplier, left_shift, diff_min


def softmax(x: np.ndarray, *, input_multiplier: int, input_left_shift: int, diff_min: int) -> np.ndarray:
    """reference_ops::Softmax for int8 → int8 over the last axis (output scale 1/256, zero point −128)."""
    x64 = x.astype(np.int64)
    diff = x64 - x64.max(axis=-1, keepdims=True)
    valid = diff >= diff_min
    # MultiplyByQuantizedMultiplierGreaterThanOne: SRDHM(x · 2^left_shift, multiplier).
    rescaled = srdhm_np(wrap32_np(diff << input_left_shift), input_multiplier)
    exps = exp_on_negative_values(rescaled, 5)
    # Rescale<12>(Q0.31) = RoundingDivideByPOT by 12, accumulated in Q12.19.
    sum_of_exps = wrap32_np(np.where(valid, rdbpot_np(exps, 12), 0).sum(axis=-1, keepdims=True))
    headroom_plus_one = _count_leading_zeros32(sum_of_exps)
    num_bits_over_unit = 12 - headroom_plus_one
    shifted_sum_minus_one = wrap32_np(((sum_of_exps & 0xFFFFFFFF) << headroom_plus_one) - (1 << 31))
    shifted_scale = _one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    unsat = rdbpot_np(srdhm_np(shifted_scale, exps), exponent)
    out = np.where(valid, unsat - 128, INT8_MIN)
    return _clamp_int8(out)


# ---- elementwise unary, as lookup tables ------------------------------------------------------------------

_Q = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)


def _libm_expf() -> Callable[[float], float] | None:
    name = ctypes.util.find_library("m")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).expf
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


_EXPF = _libm_expf()


def _expf(v: np.float32) -> np.float32:
    # The C library's expf is what TFLite calls; numpy's float32 exp may differ from it in the last bit.
    return np.float32(_EXPF(float(v))) if _EXPF is not None else np.exp(np.float32(v))


def logistic_lut(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> tuple[int, ...]:
    """LUTPopulate<int8_t> with ``1 / (1 + exp(-x))`` in float32 (activations.cc SigmoidPrepare)."""
    s_in, s_out = np.float32(in_scale), np.float32(out_scale)
    inverse_scale = np.float32(1) / s_out
    table = []
    with np.errstate(over="ignore"):
        for q in range(INT8_MIN, INT8_MAX + 1):
            dequantized = np.float32(s_in * np.float32(q - in_zp))
            transformed = np.float32(np.float32(1) / (np.float32(1) + _expf(-dequantized)))
            rescaled = np.float32(round_half_away(float(np.float32(transformed * inverse_scale))))
            quantized = int(np.float32(rescaled + np.float32(out_zp)))
            table.append(min(max(quantized, INT8_MIN), INT8_MAX))
    return tuple(table)


def relu_lut(in_scale: float, in_zp: int, out_scale: float, out_zp: int, *, six: bool) -> tuple[int, ...]:
    """activations.cc QuantizedReluX (RELU / RELU6): requantize, then clamp to the activation range."""
    # ReluPrepare: ``double real_multiplier = input->params.scale / output->params.scale``: a float division.
    m, s = quantize_multiplier(float(np.float32(in_scale) / np.float32(out_scale)))
    lo = max(INT8_MIN, out_zp + int(round_half_away(float(np.float32(0.0) / np.float32(out_scale)))))
    hi = (
        min(INT8_MAX, out_zp + int(round_half_away(float(np.float32(6.0) / np.float32(out_scale)))))
        if six
        else INT8_MAX
    )
    out = mbqm_np(_Q - in_zp, m, s) + out_zp
    return tuple(int(v) for v in np.clip(out, lo, hi))


def leaky_relu_params(alpha: float, in_scale: float, out_scale: float):
    """activations.cc LeakyReluPrepare: (identity multiplier, shift), (alpha multiplier, shift)."""
    # LeakyReluPrepare computes both in float (``input->params.scale * params->alpha /
    # output->params.scale``), then converts to double.
    s_in, s_out = np.float32(in_scale), np.float32(out_scale)
    alpha_real = float(np.float32(np.float32(s_in * np.float32(alpha)) / s_out))
    return quantize_multiplier(float(np.float32(s_in / s_out))), quantize_multiplier(alpha_real)


def prelu_params(in_scale: float, alpha_scale: float, out_scale: float):
    """activations.cc PreluPrepare (int8): float arithmetic, as for LEAKY_RELU."""
    s_in, s_a, s_out = np.float32(in_scale), np.float32(alpha_scale), np.float32(out_scale)
    return (
        quantize_multiplier(float(np.float32(s_in / s_out))),
        quantize_multiplier(float(np.float32(np.float32(s_in * s_a) / s_out))),
    )


def leaky_relu(
    x: np.ndarray, *, in_zp: int, out_zp: int, identity: tuple[int, int], alpha: tuple[int, int]
) -> np.ndarray:
    """reference_ops::QuantizeLeakyRelu (int8)."""
    v = x.astype(np.int64) - in_zp
    am, ash = alpha
    neg = mbqm_np(v, abs(am), ash)
    neg = -neg if am < 0 else neg
    out = np.where(v >= 0, mbqm_np(v, *identity), neg) + out_zp
    return _clamp_int8(out)


def _downscale_int32_to_int16_multiplier(m: int) -> int:
    if m >= INT32_MAX - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def hard_swish_params(in_scale: float, out_scale: float) -> tuple[int, int, int, int]:
    """activations.cc HardSwishPrepare, in float32 as there: (out_m16, out_exp, reluish_m16, reluish_exp)."""
    hires_input_scale = np.float32(np.float32(1.0 / 128.0) * np.float32(in_scale))
    reluish_scale = np.float32(3.0) / np.float32(32768.0)
    out_mult = np.float32(hires_input_scale / np.float32(out_scale))
    m, out_exp = quantize_multiplier(float(out_mult))
    relu_mult = np.float32(hires_input_scale / reluish_scale)
    rm, relu_exp = quantize_multiplier(float(relu_mult))
    if out_exp > 0:
        raise ValueError("hard_swish: output multiplier exponent > 0 (output scale too small for the input)")
    return (
        _downscale_int32_to_int16_multiplier(m),
        out_exp,
        _downscale_int32_to_int16_multiplier(rm),
        relu_exp,
    )


def _srdhm16(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    r = _c_div(ab + nudge, 1 << 15)
    r = ((r + 32768) & 0xFFFF) - 32768  # static_cast<int16_t>
    return np.where((a == -32768) & (b == -32768), 32767, r)


def _sat_left_shift16(v: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(np.asarray(v, dtype=np.int64) * (1 << amount), -32768, 32767)


def hard_swish(
    x: np.ndarray, *, in_zp: int, out_zp: int, out_m16: int, out_exp: int, reluish_m16: int, reluish_exp: int
) -> np.ndarray:
    """reference_ops::HardSwish (quantized), int16 fixed point."""
    v = x.astype(np.int64) - in_zp
    hires = v * (1 << 7)
    preshift_out = _srdhm16(hires, out_m16)
    reluish = hires
    if reluish_exp > 0:
        reluish = _sat_left_shift16(reluish, reluish_exp - 1)
    reluish = _srdhm16(reluish, reluish_m16)
    if reluish_exp > 0:
        reluish = _sat_left_shift16(reluish, 1)
    if reluish_exp < 0:
        reluish = rdbpot_np(reluish, -reluish_exp)
    reluish = (reluish + (1 << 15)) >> 1
    # SaturatingDoublingHighMul: truncating (not rounding) high multiply.
    prod = reluish * preshift_out
    pre = _c_div(prod, 1 << 15)
    pre = np.where((reluish == -32768) & (preshift_out == -32768), 32767, ((pre + 32768) & 0xFFFF) - 32768)
    out = rdbpot_np(pre, -out_exp) + out_zp
    return _clamp_int8(out)


def hard_swish_lut(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> tuple[int, ...]:
    params = hard_swish_params(in_scale, out_scale)
    return tuple(
        int(v)
        for v in hard_swish(
            _Q.astype(np.int8),
            in_zp=in_zp,
            out_zp=out_zp,
            out_m16=params[0],
            out_exp=params[1],
            reluish_m16=params[2],
            reluish_exp=params[3],
        )
    )


def leaky_relu_lut(alpha: float, in_scale: float, in_zp: int, out_scale: float, out_zp: int):
    identity, alpha_m = leaky_relu_params(alpha, in_scale, out_scale)
    table = leaky_relu(_Q.astype(np.int8), in_zp=in_zp, out_zp=out_zp, identity=identity, alpha=alpha_m)
    return identity, alpha_m, tuple(int(v) for v in table)


def lookup(x: np.ndarray, lut) -> np.ndarray:
    return np.asarray(lut, dtype=np.int8)[x.astype(np.int16) + 128]


def prelu(
    x: np.ndarray,
    alpha: np.ndarray,
    *,
    in_zp: int,
    alpha_zp: int,
    out_zp: int,
    identity: tuple[int, int],
    alpha_m: tuple[int, int],
) -> np.ndarray:
    """reference_ops::BroadcastPrelu4DSlow / Prelu (int8)."""
    v = x.astype(np.int64) - in_zp
    a = alpha.astype(np.int64) - alpha_zp
    out = np.where(v >= 0, mbqm_np(v, *identity), mbqm_np(v * a, *alpha_m)) + out_zp
    return _clamp_int8(out)


# ---- resize --------------------------------------------------------------------------------------------


def nearest_indices(in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool) -> np.ndarray:
    """reference_ops GetNearestNeighbor for every output index (float32 arithmetic as there)."""
    if align_corners and out_size > 1:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    offset = np.float32(0.5 if half_pixel_centers else 0.0)
    idx = []
    for i in range(out_size):
        v = np.float32((np.float32(i) + offset) * scale)
        j = int(round_half_away(float(v))) if align_corners else math.floor(float(v))
        j = min(j, in_size - 1)
        if half_pixel_centers:
            j = max(0, j)
        idx.append(j)
    return np.asarray(idx, dtype=np.int64)


def resize_nearest(
    x: np.ndarray, size: tuple[int, int], *, align_corners: bool, half_pixel_centers: bool
) -> np.ndarray:
    iy = nearest_indices(x.shape[1], size[0], align_corners, half_pixel_centers)
    ix = nearest_indices(x.shape[2], size[1], align_corners, half_pixel_centers)
    return x[:, iy][:, :, ix]


def _bilinear_axis(in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool):
    scale_10 = ((1 << 10) * in_size + out_size // 2) // out_size
    if align_corners and out_size > 1:
        scale_10 = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    v = np.arange(out_size, dtype=np.int64)
    scaled = v * scale_10 + scale_10 // 2 - (1 << 9) if half_pixel_centers else v * scale_10
    lower = np.maximum(_c_div(scaled, 1 << 10), 0)
    upper = np.minimum(_c_div(scaled + (1 << 10) - 1, 1 << 10), in_size - 1)
    return scaled, lower, upper


def resize_bilinear(
    x: np.ndarray, size: tuple[int, int], *, align_corners: bool, half_pixel_centers: bool
) -> np.ndarray:
    """reference_ops::ResizeBilinearInteger (10-bit fixed-point weights, default double rounding)."""
    ys, y0, y1 = _bilinear_axis(x.shape[1], size[0], align_corners, half_pixel_centers)
    xs, x0, x1 = _bilinear_axis(x.shape[2], size[1], align_corners, half_pixel_centers)
    one = 1 << 10
    wy1 = (ys - one * y0)[None, :, None, None]
    wy0 = one - wy1
    wx1 = (xs - one * x0)[None, None, :, None]
    wx0 = one - wx1
    xi = x.astype(np.int64)
    out20 = (
        xi[:, y0][:, :, x0] * wy0 * wx0
        + xi[:, y1][:, :, x0] * wy1 * wx0
        + xi[:, y0][:, :, x1] * wy0 * wx1
        + xi[:, y1][:, :, x1] * wy1 * wx1
    )
    rounding = np.where(out20 > 0, 1 << 19, -(1 << 19))
    return _c_div(out20 + rounding, 1 << 20).astype(np.int8)


# ---- quantize / dequantize ------------------------------------------------------------------------------


def quantize_float(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """reference_ops::AffineQuantize: ``TfLiteRound(val / scale) + zp`` in float32, clamped to int8."""
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    r = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return _clamp_int8(r.astype(np.int64) + zero_point)


def requantize(x: np.ndarray, *, in_zp: int, out_zp: int, multiplier: int, shift: int) -> np.ndarray:
    """reference_ops::Requantize (int8 → int8)."""
    return _clamp_int8(mbqm_np(x.astype(np.int64) - in_zp, multiplier, shift) + out_zp)


def dequantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """reference_ops::Dequantize: ``(float)(double(scale) * (q - zp))``."""
    return (f64(scale) * (x.astype(np.float64) - zero_point)).astype(np.float32)
