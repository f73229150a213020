"""Build op options with every precomputed number TFLite's Prepare would compute.

Used by the lowering and by anyone who constructs a :class:`~edgeq.lower.program.Program` by hand (tests,
other front ends): give the tensors' quantization, get the options exactly as the contract in
:mod:`edgeq.lower.program` defines them.
"""

from __future__ import annotations

from edgeq.lower import kernels as K
from edgeq.lower.fixedpoint import f64, quantize_multiplier, requant
from edgeq.lower.program import (
    Activation,
    AddOptions,
    FullyConnectedOptions,
    FusedActivation,
    LeakyReluOptions,
    LutOptions,
    MeanOptions,
    MulOptions,
    PReluOptions,
    QParams,
    QuantizeOptions,
    Requant,
    SoftmaxOptions,
)

#: TFLite's int8 LOGISTIC and SOFTMAX outputs must use this quantization.
PROBABILITY_QPARAMS = QParams.per_tensor(1.0 / 256.0, -128)


def _s(qp: QParams) -> float:
    return qp.scale[0]


def _z(qp: QParams) -> int:
    return qp.zero_point[0]


def activation(kind: FusedActivation | str, out: QParams) -> Activation:
    """The clamp TFLite derives from fused activation ``kind`` for an int8 output quantized as ``out``."""
    kind = FusedActivation(kind)
    lo, hi = K.activation_range(kind.value, _s(out), _z(out))
    return Activation(kind, lo, hi)


def activation_for_clamp(lo: float | None, hi: float | None, out: QParams) -> Activation | None:
    """The fused activation that implements ``clip(x, lo, hi)`` (None = unbounded) on an output quantized as
    ``out``, or None when no TFLite enum gives exactly that int8 clamp.

    The int8 result of ``Q(clip(y, lo, hi))`` is ``clamp(Q(y), Q(lo), Q(hi))`` (rounding is monotonic), so an
    enum fits when its clamp equals that one after saturation to [-128, 127].
    """
    want_lo = -128 if lo is None else max(-128, K.quantize_value(lo, _s(out), _z(out)))
    want_hi = 127 if hi is None else min(127, K.quantize_value(hi, _s(out), _z(out)))
    for kind in (
        FusedActivation.NONE,
        FusedActivation.RELU,
        FusedActivation.RELU6,
        FusedActivation.RELU_N1_TO_1,
    ):
        act = activation(kind, out)
        if (act.min, act.max) == (want_lo, want_hi):
            return act
    return None


def conv_requant(inp: QParams, weights: QParams, out: QParams, channels: int) -> Requant:
    """PopulateConvolutionQuantizationParams: per channel ``double(s_in)·double(s_w[c])/double(s_out)``."""
    scales = weights.scale if len(weights.scale) == channels else weights.scale * channels
    return requant(*(f64(_s(inp)) * f64(sw) / f64(_s(out)) for sw in scales))


def add_options(a: QParams, b: QParams, out: QParams, act: Activation, *, left_shift: int = 20) -> AddOptions:
    m1, m2, mo = K.add_params(_s(a), _s(b), _s(out), left_shift)
    return AddOptions(
        left_shift, Requant((m1[0],), (m1[1],)), Requant((m2[0],), (m2[1],)), Requant((mo[0],), (mo[1],)), act
    )


def mul_options(a: QParams, b: QParams, out: QParams, act: Activation) -> MulOptions:
    return MulOptions(act, requant(f64(_s(a)) * f64(_s(b)) / f64(_s(out))))


def mean_options(inp: QParams, out: QParams, count: int, axes: tuple[int, ...] = (1, 2)) -> MeanOptions:
    """MEAN over ``count`` elements per output (H·W)."""
    m, e = quantize_multiplier(f64(_s(inp)) / f64(_s(out)))
    cm, ce = K.mean_count_multiplier(m, e, count)
    return MeanOptions(tuple(axes), True, Requant((m,), (e,)), Requant((cm,), (ce,)))


def effective_scales(inp: QParams, weights: QParams, out: QParams, channels: int) -> tuple[float, ...]:
    """FULLY_CONNECTED's per-channel ``double(s_in)·double(s_w[c])/double(s_out)`` (reference path)."""
    scales = weights.scale if len(weights.scale) == channels else weights.scale * channels
    return tuple(f64(_s(inp)) * f64(sw) / f64(_s(out)) for sw in scales)


def fully_connected_options(
    inp: QParams,
    weights: QParams,
    out: QParams,
    channels: int,
    act: Activation,
    *,
    keep_num_dims: bool = False,
) -> FullyConnectedOptions:
    return FullyConnectedOptions(
        act,
        conv_requant(inp, weights, out, channels),
        keep_num_dims,
        effective_scales(inp, weights, out, channels),
    )


def requantize_options(inp: QParams, out: QParams) -> QuantizeOptions:
    """QUANTIZE int8 → int8 (quantize.cc: ``double(s_in) / double(s_out)``)."""
    return QuantizeOptions(requant(f64(_s(inp)) / f64(_s(out))))


def softmax_options(beta: float, inp: QParams) -> SoftmaxOptions:
    m, shift, diff_min = K.softmax_params(beta, _s(inp))
    return SoftmaxOptions(f64(beta), m, shift, diff_min)


def logistic_options(inp: QParams, out: QParams) -> LutOptions:
    return LutOptions(K.logistic_lut(_s(inp), _z(inp), _s(out), _z(out)))


def hard_swish_options(inp: QParams, out: QParams) -> LutOptions:
    return LutOptions(K.hard_swish_lut(_s(inp), _z(inp), _s(out), _z(out)))


def relu_options(inp: QParams, out: QParams, *, six: bool) -> LutOptions:
    return LutOptions(K.relu_lut(_s(inp), _z(inp), _s(out), _z(out), six=six))


def leaky_relu_options(alpha: float, inp: QParams, out: QParams) -> LeakyReluOptions:
    identity, alpha_m, lut = K.leaky_relu_lut(alpha, _s(inp), _z(inp), _s(out), _z(out))
    return LeakyReluOptions(
        f64(alpha), Requant((identity[0],), (identity[1],)), Requant((alpha_m[0],), (alpha_m[1],)), lut
    )


def prelu_options(inp: QParams, alpha: QParams, out: QParams) -> PReluOptions:
    identity, alpha_m = K.prelu_params(_s(inp), _s(alpha), _s(out))
    return PReluOptions(Requant((identity[0],), (identity[1],)), Requant((alpha_m[0],), (alpha_m[1],)))


__all__ = [
    "PROBABILITY_QPARAMS",
    "activation",
    "activation_for_clamp",
    "add_options",
    "conv_requant",
    "effective_scales",
    "fully_connected_options",
    "hard_swish_options",
    "leaky_relu_options",
    "logistic_options",
    "mean_options",
    "mul_options",
    "prelu_options",
    "quantize_multiplier",
    "relu_options",
    "requantize_options",
    "softmax_options",
]
