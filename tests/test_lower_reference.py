"""The reference interpreter against LiteRT's builtin reference kernels, op by op.

Randomised (seeded) shapes, quantization and options per op; the target is the one TFLite sets itself:
every element within 1 LSB and ≥ 99.9 % bit-exact. The figures are printed (pytest -s) per op.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeq.lower import options as opts
from edgeq.lower.program import (
    Activation,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DequantizeOptions,
    FusedActivation,
    Op,
    OpKind,
    PadOptions,
    Pool2DOptions,
    Program,
    QParams,
    QuantizeOptions,
    ReshapeOptions,
    ResizeOptions,
    TensorInfo,
    TransposeOptions,
)
from edgeq.lower.reference import run

tfl = pytest.importorskip("test_lower_tflite_util", reason="ai-edge-litert (LiteRT) is not installed")

CASES = 40  # random configurations per op


def _qp(rng, lo=0.004, hi=0.08) -> QParams:
    return QParams.per_tensor(float(rng.uniform(lo, hi)), int(rng.integers(-40, 41)))


def _act(name, shape, qp, dtype="int8") -> TensorInfo:
    return TensorInfo(name, tuple(shape), dtype, qp)


def _program(ops, tensors, inputs, outputs) -> Program:
    p = Program({t.name: t for t in tensors}, tuple(ops), tuple(inputs), tuple(outputs))
    p.validate()
    return p


def _rand_int8(rng, shape):
    return rng.integers(-128, 128, size=shape, dtype=np.int64).astype(np.int8)


class Tally:
    def __init__(self, name):
        self.name, self.total, self.exact, self.worst = name, 0, 0, 0

    def add(self, ref: np.ndarray, lit: np.ndarray) -> None:
        assert ref.shape == lit.shape and ref.dtype == lit.dtype, (ref.shape, lit.shape, ref.dtype, lit.dtype)
        if ref.dtype == np.float32:
            d = np.abs(ref.astype(np.float64) - lit.astype(np.float64))
            self.worst = max(self.worst, float(d.max()))
            self.exact += int((d == 0).sum())
        else:
            d = np.abs(ref.astype(np.int64) - lit.astype(np.int64))
            self.worst = max(self.worst, int(d.max()))
            self.exact += int((d == 0).sum())
        self.total += ref.size

    def check(self) -> None:
        frac = self.exact / max(self.total, 1)
        print(f"{self.name}: {self.total} elements, bit-exact {100 * frac:.3f} %, max |diff| {self.worst}")
        assert self.worst <= 1, f"{self.name}: max difference {self.worst} LSB"
        assert frac >= 0.999, f"{self.name}: only {100 * frac:.3f} % bit-exact"


def _compare(program: Program, rng, tally: Tally, feeds=None) -> None:
    feeds = feeds or {n: _rand_int8(rng, program.tensors[n].shape) for n in program.inputs}
    ref = run(program, feeds)
    lit = tfl.run_litert(tfl.to_tflite(program), feeds, list(program.outputs))
    for n in program.outputs:
        tally.add(ref[n], lit[n])


def _random_act(rng, out_qp) -> Activation:
    kind = rng.choice([FusedActivation.NONE, FusedActivation.RELU, FusedActivation.RELU6])
    return opts.activation(kind, out_qp)


def _conv_case(rng, depthwise: bool):
    n = 1
    h, w = int(rng.integers(3, 12)), int(rng.integers(3, 12))
    c = int(rng.integers(1, 9))
    k = int(rng.choice([1, 2, 3, 5]))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dilation = (1, 1) if rng.random() < 0.7 else (2, 2)
    eff = (k - 1) * dilation[0] + 1
    pad = int(rng.integers(0, eff // 2 + 1))
    padding = (pad, pad, pad + int(rng.integers(0, 2)), pad)
    if h + padding[0] + padding[2] < eff or w + padding[1] + padding[3] < eff:
        padding = (eff, eff, eff, eff)
    x_qp = _qp(rng)
    if depthwise:
        mult = int(rng.choice([1, 1, 2]))
        cout = c * mult
        wshape = (1, k, k, cout)
        axis = 3
    else:
        cout = int(rng.integers(1, 17))
        wshape = (cout, k, k, c)
        axis = 0
    w_scales = tuple(float(s) for s in rng.uniform(0.002, 0.02, cout))
    w_qp = QParams(w_scales, (0,) * cout, axis) if rng.random() < 0.8 else QParams.per_tensor(w_scales[0], 0)
    wq = rng.integers(-127, 128, size=wshape).astype(np.int8)
    kk = k * k * (1 if depthwise else c)
    b_scales = [
        x_qp.scale[0] * (w_qp.scale[i] if len(w_qp.scale) > 1 else w_qp.scale[0]) for i in range(cout)
    ]
    bias = rng.normal(0, 2000, cout).astype(np.int32)
    real_std = x_qp.scale[0] * float(np.mean(w_scales)) * 74 * 74 * math.sqrt(kk)
    y_qp = QParams.per_tensor(float(3 * real_std / 127 * rng.uniform(0.5, 1.5)), int(rng.integers(-30, 31)))
    oh = (h + padding[0] + padding[2] - eff) // stride[0] + 1
    ow = (w + padding[1] + padding[3] - eff) // stride[1] + 1
    tensors = [
        _act("x", (n, h, w, c), x_qp),
        TensorInfo("w", wshape, "int8", w_qp, wq),
        TensorInfo(
            "b",
            (cout,),
            "int32",
            QParams(tuple(b_scales), (0,) * cout, 0 if cout > 1 else None)
            if cout > 1
            else QParams.per_tensor(b_scales[0], 0),
            bias,
        ),
        _act("y", (n, oh, ow, cout), y_qp),
    ]
    act = _random_act(rng, y_qp)
    rq = opts.conv_requant(x_qp, w_qp, y_qp, cout)
    if depthwise:
        o = DepthwiseConv2DOptions(stride, dilation, padding, cout // c, act, rq)
        kind = OpKind.DEPTHWISE_CONV_2D
    else:
        o = Conv2DOptions(stride, dilation, padding, act, rq)
        kind = OpKind.CONV_2D
    return _program([Op(kind, ("x", "w", "b"), ("y",), o, "conv")], tensors, ["x"], ["y"])


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv2d", "depthwise"])
def test_conv_matches_litert(depthwise):
    rng = np.random.default_rng(1 + depthwise)
    tally = Tally("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D")
    for _ in range(CASES):
        _compare(_conv_case(rng, depthwise), rng, tally)
    tally.check()


def test_fully_connected_matches_litert():
    rng = np.random.default_rng(3)
    tally = Tally("FULLY_CONNECTED")
    for i in range(CASES):
        batch, cin, cout = int(rng.integers(1, 64)), int(rng.integers(1, 65)), int(rng.integers(1, 40))
        x_qp = _qp(rng)
        per_channel = i % 2 == 0
        w_scales = tuple(float(s) for s in rng.uniform(0.002, 0.02, cout))
        w_qp = (
            QParams(w_scales, (0,) * cout, 0)
            if per_channel and cout > 1
            else QParams.per_tensor(w_scales[0], 0)
        )
        ws = w_qp.scale if len(w_qp.scale) > 1 else (w_qp.scale[0],) * cout
        real_std = x_qp.scale[0] * float(np.mean(ws)) * 74 * 74 * math.sqrt(cin)
        y_qp = QParams.per_tensor(float(3 * real_std / 127), int(rng.integers(-30, 31)))
        b_qp = (
            QParams(tuple(x_qp.scale[0] * s for s in ws), (0,) * cout, 0)
            if len(w_qp.scale) > 1
            else QParams.per_tensor(x_qp.scale[0] * ws[0], 0)
        )
        tensors = [
            _act("x", (batch, cin), x_qp),
            TensorInfo("w", (cout, cin), "int8", w_qp, rng.integers(-127, 128, (cout, cin)).astype(np.int8)),
            TensorInfo("b", (cout,), "int32", b_qp, rng.normal(0, 3000, cout).astype(np.int32)),
            _act("y", (batch, cout), y_qp),
        ]
        o = opts.fully_connected_options(x_qp, w_qp, y_qp, cout, _random_act(rng, y_qp))
        p = _program([Op(OpKind.FULLY_CONNECTED, ("x", "w", "b"), ("y",), o, "fc")], tensors, ["x"], ["y"])
        _compare(p, rng, tally)
    tally.check()


def _broadcast_shapes(rng):
    shape = [1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 9))]
    other = list(shape)
    mode = rng.integers(0, 3)
    if mode == 1:
        other = [1, 1, 1, shape[3]]
    elif mode == 2:
        other = [1, shape[1], shape[2], 1]
    return tuple(shape), tuple(other)


@pytest.mark.parametrize("kind", [OpKind.ADD, OpKind.SUB, OpKind.MUL])
def test_binary_matches_litert(kind):
    rng = np.random.default_rng(10 + list(OpKind).index(kind))
    tally = Tally(kind.value)
    for _ in range(CASES):
        sa, sb = _broadcast_shapes(rng)
        if rng.random() < 0.5:
            sa, sb = sb, sa
        out_shape = tuple(np.broadcast_shapes(sa, sb))
        qa, qb = _qp(rng), _qp(rng)
        qo = (
            _qp(rng, 0.01, 0.12)
            if kind is not OpKind.MUL
            else QParams.per_tensor(
                float(qa.scale[0] * qb.scale[0] * 64 * 64 / 100 * rng.uniform(0.5, 2)),
                int(rng.integers(-20, 21)),
            )
        )
        act = _random_act(rng, qo)
        o = opts.mul_options(qa, qb, qo, act) if kind is OpKind.MUL else opts.add_options(qa, qb, qo, act)
        tensors = [_act("a", sa, qa), _act("b", sb, qb), _act("y", out_shape, qo)]
        p = _program([Op(kind, ("a", "b"), ("y",), o, "bin")], tensors, ["a", "b"], ["y"])
        _compare(p, rng, tally)
    tally.check()


@pytest.mark.parametrize("kind", [OpKind.MAX_POOL_2D, OpKind.AVERAGE_POOL_2D])
def test_pool_matches_litert(kind):
    rng = np.random.default_rng(20 + (kind is OpKind.AVERAGE_POOL_2D))
    tally = Tally(kind.value)
    for _ in range(CASES):
        h, w, c = int(rng.integers(2, 12)), int(rng.integers(2, 12)), int(rng.integers(1, 6))
        f = (int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1)))
        s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        if rng.random() < 0.5:
            padding = (0, 0, 0, 0)
        else:
            th, tw = tfl._same_padding(h, f[0], s[0], 1), tfl._same_padding(w, f[1], s[1], 1)
            padding = (th[0], tw[0], th[1], tw[1])
        oh = (h + padding[0] + padding[2] - f[0]) // s[0] + 1
        ow = (w + padding[1] + padding[3] - f[1]) // s[1] + 1
        q = _qp(rng)
        o = Pool2DOptions(f, s, padding, _random_act(rng, q))
        tensors = [_act("x", (1, h, w, c), q), _act("y", (1, oh, ow, c), q)]
        _compare(_program([Op(kind, ("x",), ("y",), o, "pool")], tensors, ["x"], ["y"]), rng, tally)
    tally.check()


def test_mean_matches_litert():
    rng = np.random.default_rng(30)
    tally = Tally("MEAN")
    for _ in range(CASES):
        n, h, w, c = (
            int(rng.integers(1, 4)),
            int(rng.integers(1, 12)),
            int(rng.integers(1, 12)),
            int(rng.integers(1, 65)),
        )
        qi, qo = _qp(rng), _qp(rng, 0.002, 0.05)
        tensors = [_act("x", (n, h, w, c), qi), _act("y", (n, 1, 1, c), qo)]
        p = _program(
            [Op(OpKind.MEAN, ("x",), ("y",), opts.mean_options(qi, qo, h * w), "mean")], tensors, ["x"], ["y"]
        )
        _compare(p, rng, tally)
    tally.check()


def test_softmax_matches_litert():
    rng = np.random.default_rng(40)
    tally = Tally("SOFTMAX")
    for _ in range(CASES):
        shape = (int(rng.integers(1, 4)), int(rng.integers(2, 40)))
        qi = _qp(rng, 0.01, 0.3)
        beta = float(rng.choice([1.0, 1.0, 0.5, 2.0]))
        tensors = [_act("x", shape, qi), _act("y", shape, opts.PROBABILITY_QPARAMS)]
        p = _program(
            [Op(OpKind.SOFTMAX, ("x",), ("y",), opts.softmax_options(beta, qi), "sm")], tensors, ["x"], ["y"]
        )
        _compare(p, rng, tally)
    tally.check()


@pytest.mark.parametrize(
    "kind", [OpKind.LOGISTIC, OpKind.HARD_SWISH, OpKind.LEAKY_RELU, OpKind.RELU, OpKind.RELU6]
)
def test_unary_matches_litert(kind):
    rng = np.random.default_rng(50 + list(OpKind).index(kind))
    tally = Tally(kind.value)
    for _ in range(CASES):
        qi = _qp(rng, 0.01, 0.1)
        if kind is OpKind.LOGISTIC:
            qo = opts.PROBABILITY_QPARAMS
            o = opts.logistic_options(qi, qo)
        elif kind is OpKind.HARD_SWISH:
            qo = _qp(rng, 0.01, 0.1)
            o = opts.hard_swish_options(qi, qo)
        elif kind is OpKind.LEAKY_RELU:
            qo = _qp(rng, 0.01, 0.1)
            o = opts.leaky_relu_options(float(rng.choice([0.01, 0.1, 0.2, 0.3])), qi, qo)
        else:
            qo = _qp(rng, 0.01, 0.1)
            o = opts.relu_options(qi, qo, six=kind is OpKind.RELU6)
        # Every int8 value once, so the whole table is checked.
        x = np.arange(-128, 128, dtype=np.int64).astype(np.int8).reshape(1, 16, 16)
        tensors = [_act("x", x.shape, qi), _act("y", x.shape, qo)]
        p = _program([Op(kind, ("x",), ("y",), o, "u")], tensors, ["x"], ["y"])
        _compare(p, rng, tally, {"x": x})
    tally.check()


def test_prelu_matches_litert():
    rng = np.random.default_rng(60)
    tally = Tally("PRELU")
    for _ in range(CASES):
        shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 9)))
        qi, qo = _qp(rng), _qp(rng)
        qa = QParams.per_tensor(float(rng.uniform(0.001, 0.01)), int(rng.integers(-10, 11)))
        alpha = rng.integers(-128, 128, (1, 1, 1, shape[3])).astype(np.int8)
        tensors = [
            _act("x", shape, qi),
            TensorInfo("alpha", alpha.shape, "int8", qa, alpha),
            _act("y", shape, qo),
        ]
        o = opts.prelu_options(qi, qa, qo)
        p = _program([Op(OpKind.PRELU, ("x", "alpha"), ("y",), o, "prelu")], tensors, ["x"], ["y"])
        _compare(p, rng, tally)
    tally.check()


@pytest.mark.parametrize("kind", [OpKind.RESIZE_NEAREST_NEIGHBOR, OpKind.RESIZE_BILINEAR])
def test_resize_matches_litert(kind):
    rng = np.random.default_rng(70 + (kind is OpKind.RESIZE_BILINEAR))
    tally = Tally(kind.value)
    for i in range(CASES):
        h, w, c = int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 5))
        size = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
        align, half = [(False, False), (True, False), (False, True)][i % 3]
        q = _qp(rng)
        tensors = [_act("x", (1, h, w, c), q), _act("y", (1, *size, c), q)]
        o = ResizeOptions(size, align, half)
        _compare(_program([Op(kind, ("x",), ("y",), o, "rs")], tensors, ["x"], ["y"]), rng, tally)
    tally.check()


def test_data_movement_matches_litert():
    rng = np.random.default_rng(80)
    tally = Tally("RESHAPE/TRANSPOSE/PAD/CONCATENATION")
    for _ in range(CASES):
        shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        q = _qp(rng)
        perm = tuple(int(v) for v in rng.permutation(4))
        tshape = tuple(shape[p] for p in perm)
        pads = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(4))
        pshape = tuple(s + a + b for s, (a, b) in zip(tshape, pads, strict=True))
        value = q.zero_point[0] if rng.random() < 0.5 else int(rng.integers(-128, 128))
        flat = (1, int(np.prod(pshape)))
        cshape = (1, flat[1] * 2)
        tensors = [
            _act("x", shape, q),
            _act("t", tshape, q),
            _act("p", pshape, q),
            _act("r", flat, q),
            _act("c", cshape, q),
        ]
        ops = [
            Op(OpKind.TRANSPOSE, ("x",), ("t",), TransposeOptions(perm), "t"),
            Op(OpKind.PAD, ("t",), ("p",), PadOptions(pads, value), "p"),
            Op(OpKind.RESHAPE, ("p",), ("r",), ReshapeOptions(flat), "r"),
            Op(OpKind.CONCATENATION, ("r", "r"), ("c",), ConcatenationOptions(1), "c"),
        ]
        _compare(_program(ops, tensors, ["x"], ["c"]), rng, tally)
    tally.check()


def test_quantize_dequantize_matches_litert():
    rng = np.random.default_rng(90)
    tally = Tally("QUANTIZE/DEQUANTIZE")
    for _ in range(CASES):
        shape = (2, int(rng.integers(1, 30)))
        qa, qb = _qp(rng), _qp(rng)
        tensors = [
            TensorInfo("f", shape, "float32"),
            _act("a", shape, qa),
            _act("b", shape, qb),
            TensorInfo("g", shape, "float32"),
        ]
        ops = [
            Op(OpKind.QUANTIZE, ("f",), ("a",), QuantizeOptions(), "q"),
            Op(OpKind.QUANTIZE, ("a",), ("b",), opts.requantize_options(qa, qb), "rq"),
            Op(OpKind.DEQUANTIZE, ("b",), ("g",), DequantizeOptions(), "dq"),
        ]
        p = _program(ops, tensors, ["f"], ["b", "g"])
        # Include exact halves of the quantization step: rounding ties are where implementations differ.
        f = (rng.integers(-300, 300, shape) / 2.0 * qa.scale[0]).astype(np.float32)
        _compare(p, rng, tally, {"f": f})
    tally.check()
