"""Every operator the .tflite writer emits, against LiteRT's builtin reference kernels.

Each case builds a one-op integer program with seeded random shapes, parameters and quantization, writes it
with :func:`write_tflite`, runs it in LiteRT (``OpResolverType.BUILTIN_REF``) and in edgeq's reference
interpreter, and requires: every element within 1 LSB, and ≥ 99.9 % of the elements bit-exact over all the
op's cases.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT (pip install ai-edge-litert) runs the .tflite files")


from test_tflite_util import Prog, compare_with_litert, f32

from edgeq.backends.tflite import describe, write_tflite
from edgeq.backends.tflite.padding import same_padding
from edgeq.lower import options as O
from edgeq.lower import program as P

SEEDS = range(6)
TRIALS = 3  # random inputs per case
STATS: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # op → [elements, exact, max |diff|]


def check(program: P.Program, rng: np.random.Generator, key: str) -> None:
    """Run ``program`` in LiteRT and in the reference on TRIALS random inputs; accumulate STATS[key]."""
    feeds = [
        {n: rng.integers(-128, 128, program.tensors[n].shape).astype(np.int8) for n in program.inputs}
        for _ in range(TRIALS)
    ]
    compare_with_litert(write_tflite(program), program, feeds, STATS[key], max_lsb=1, key=key)


def conv_out(size: int, k: int, s: int, d: int, before: int, after: int) -> int:
    return (size + before + after - ((k - 1) * d + 1)) // s + 1


def random_padding(rng, hw, k, s, d) -> tuple[int, int, int, int]:
    """SAME, VALID or arbitrary explicit padding (which the writer turns into PAD + VALID)."""
    style = rng.integers(3)
    if style == 0:
        (t, b, _), (l_, r, _) = (same_padding(hw[i], k[i], s[i], d[i]) for i in range(2))
        return t, l_, b, r
    if style == 1:
        return 0, 0, 0, 0
    return tuple(int(v) for v in rng.integers(0, max(k) + 1, 4))


# ---- convolutions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_convolutions(seed, depthwise):
    g = Prog(seed)
    rng = g.rng
    k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    d = (1, 1) if rng.random() < 0.6 else (2, 2)
    h, w = int(rng.integers(6, 13)), int(rng.integers(6, 13))
    cin = int(rng.integers(1, 9))
    pad = random_padding(rng, (h, w), k, s, d)
    x = g.input((1, h, w, cin))
    in_qp = g.tensors[x].qparams
    oh, ow = conv_out(h, k[0], s[0], d[0], pad[0], pad[2]), conv_out(w, k[1], s[1], d[1], pad[1], pad[3])
    out_qp = g.qp(0.05, 0.5)
    act = g.act(out_qp)
    if depthwise:
        m = int(rng.integers(1, 3))
        cout = cin * m
        wt, w_qp = g.weights((1, *k, cout), axis=3, per_channel=rng.random() < 0.8)
        opts = P.DepthwiseConv2DOptions(s, d, pad, m, act, O.conv_requant(in_qp, w_qp, out_qp, cout))
        kind = P.OpKind.DEPTHWISE_CONV_2D
    else:
        cout = int(rng.integers(1, 9))
        wt, w_qp = g.weights((cout, *k, cin), axis=0, per_channel=rng.random() < 0.8)
        opts = P.Conv2DOptions(s, d, pad, act, O.conv_requant(in_qp, w_qp, out_qp, cout))
        kind = P.OpKind.CONV_2D
    g.op(kind, [x, wt, g.bias(cout, in_qp, w_qp)], (1, oh, ow, cout), opts, out_qp)
    check(g.build(), rng, kind.value)


@pytest.mark.parametrize("seed", SEEDS)
def test_fully_connected(seed):
    g = Prog(seed)
    rng = g.rng
    n_in, n_out = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    keep = seed % 3 == 2
    shape = (1, int(rng.integers(2, 5)), n_in) if keep else (int(rng.integers(1, 3)), n_in)
    x = g.input(shape)
    in_qp = g.tensors[x].qparams
    out_qp = g.qp(0.05, 0.5)
    wt, w_qp = g.weights((n_out, n_in), axis=0, per_channel=seed % 2 == 0)
    opts = P.FullyConnectedOptions(
        g.act(out_qp), O.conv_requant(in_qp, w_qp, out_qp, n_out), keep_num_dims=keep
    )
    g.op(P.OpKind.FULLY_CONNECTED, [x, wt, g.bias(n_out, in_qp, w_qp)], (*shape[:-1], n_out), opts, out_qp)
    check(g.build(), rng, "FULLY_CONNECTED")


# ---- elementwise binary ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [P.OpKind.ADD, P.OpKind.SUB, P.OpKind.MUL])
def test_binary(seed, kind):
    g = Prog(seed)
    rng = g.rng
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 9)))
    other = [shape, (1, 1, 1, shape[3]), (1, shape[1], shape[2], 1)][seed % 3]
    a, b = g.input(shape), g.input(other)
    out_qp = g.qp(0.02, 0.2)
    act = g.act(out_qp)
    qa, qb = g.tensors[a].qparams, g.tensors[b].qparams
    opts = O.mul_options(qa, qb, out_qp, act) if kind is P.OpKind.MUL else O.add_options(qa, qb, out_qp, act)
    g.op(kind, [a, b], shape, opts, out_qp)
    check(g.build(), rng, kind.value)


@pytest.mark.parametrize("seed", SEEDS)
def test_concatenation(seed):
    g = Prog(seed)
    rng = g.rng
    axis = int(rng.integers(1, 4))
    base = [1, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 5))]
    qp = g.qp()
    names, total = [], 0
    for _ in range(int(rng.integers(2, 4))):
        shape = list(base)
        shape[axis] = int(rng.integers(1, 4))
        total += shape[axis]
        names.append(g.input(shape, qp))
    out = list(base)
    out[axis] = total
    g.op(P.OpKind.CONCATENATION, names, out, P.ConcatenationOptions(axis), qp)
    check(g.build(), rng, "CONCATENATION")


# ---- pooling, mean ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [P.OpKind.MAX_POOL_2D, P.OpKind.AVERAGE_POOL_2D])
def test_pooling(seed, kind):
    g = Prog(seed)
    rng = g.rng
    f = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    h, w, c = int(rng.integers(4, 11)), int(rng.integers(4, 11)), int(rng.integers(1, 6))
    if kind is P.OpKind.AVERAGE_POOL_2D:
        # TFLite's average pool can only exclude SAME's padding from its count: VALID or SAME.
        (t, b, _), (l_, r, _) = (same_padding((h, w)[i], f[i], s[i], 1) for i in range(2))
        pad = (t, l_, b, r) if seed % 2 else (0, 0, 0, 0)
    else:
        # Arbitrary padding too: the writer pads with -128 (never the max) and pools VALID.
        pad = tuple(
            min(int(v), f[i % 2] - 1) for i, v in enumerate(random_padding(rng, (h, w), f, s, (1, 1)))
        )
    qp = g.qp()
    x = g.input((1, h, w, c), qp)
    oh, ow = conv_out(h, f[0], s[0], 1, pad[0], pad[2]), conv_out(w, f[1], s[1], 1, pad[1], pad[3])
    g.op(kind, [x], (1, oh, ow, c), P.Pool2DOptions(f, s, pad, g.act(qp)), qp)
    check(g.build(), rng, kind.value)


@pytest.mark.parametrize("seed", SEEDS)
def test_mean(seed):
    g = Prog(seed)
    rng = g.rng
    h, w, c = int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    x = g.input((1, h, w, c))
    out_qp = g.qp(0.005, 0.05)
    g.op(P.OpKind.MEAN, [x], (1, 1, 1, c), O.mean_options(g.tensors[x].qparams, out_qp, h * w), out_qp)
    check(g.build(), rng, "MEAN")


# ---- shape ops -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_reshape_transpose_pad(seed):
    g = Prog(seed)
    rng = g.rng
    shape = (1, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    qp = g.qp()
    x = g.input(shape, qp)
    which = seed % 3
    if which == 0:
        new = (1, int(np.prod(shape)))
        g.op(P.OpKind.RESHAPE, [x], new, P.ReshapeOptions(new), qp)
        key = "RESHAPE"
    elif which == 1:
        perm = tuple(int(p) for p in rng.permutation(4))
        perm_t = g.const("perm", np.array(perm, dtype=np.int32), P.DType.INT32)
        g.op(P.OpKind.TRANSPOSE, [x, perm_t], [shape[p] for p in perm], P.TransposeOptions(perm), qp)
        key = "TRANSPOSE"
    else:
        pads = ((0, 0), *((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2)), (0, 0))
        value = qp.zero_point[0] if seed % 2 else int(rng.integers(-128, 128))
        out = [d + a + b for d, (a, b) in zip(shape, pads, strict=True)]
        g.op(P.OpKind.PAD, [x], out, P.PadOptions(pads, value), qp)
        key = "PAD" if value == qp.zero_point[0] else "PADV2"
    program = g.build()
    check(program, rng, key)
    assert key in describe(write_tflite(program)).operators


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [P.OpKind.RESIZE_NEAREST_NEIGHBOR, P.OpKind.RESIZE_BILINEAR])
def test_resize(seed, kind):
    g = Prog(seed)
    rng = g.rng
    h, w, c = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
    size = (int(rng.integers(1, 13)), int(rng.integers(1, 13)))
    align, half = [(False, False), (True, False), (False, True)][seed % 3]
    qp = g.qp()
    x = g.input((1, h, w, c), qp)
    size_t = g.const("size", np.array(size, dtype=np.int32), P.DType.INT32)
    g.op(kind, [x, size_t], (1, *size, c), P.ResizeOptions(size, align, half), qp)
    check(g.build(), rng, kind.value)


# ---- activations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "kind",
    [
        P.OpKind.SOFTMAX,
        P.OpKind.LOGISTIC,
        P.OpKind.HARD_SWISH,
        P.OpKind.RELU,
        P.OpKind.RELU6,
        P.OpKind.LEAKY_RELU,
        P.OpKind.PRELU,
        P.OpKind.QUANTIZE,
    ],
)
def test_activations(seed, kind):
    g = Prog(seed)
    rng = g.rng
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(2, 12)))
    if kind is P.OpKind.SOFTMAX and seed % 2:
        shape = (1, int(rng.integers(2, 30)))
    in_qp = g.qp(0.01, 0.2)
    x = g.input(shape, in_qp)
    out_qp = g.qp(0.01, 0.2)
    inputs = [x]
    if kind is P.OpKind.SOFTMAX:
        out_qp, opts = O.PROBABILITY_QPARAMS, O.softmax_options(1.0, in_qp)
    elif kind is P.OpKind.LOGISTIC:
        out_qp, opts = O.PROBABILITY_QPARAMS, O.logistic_options(in_qp, O.PROBABILITY_QPARAMS)
    elif kind is P.OpKind.HARD_SWISH:
        opts = O.hard_swish_options(in_qp, out_qp)
    elif kind in (P.OpKind.RELU, P.OpKind.RELU6):
        opts = O.relu_options(in_qp, out_qp, six=kind is P.OpKind.RELU6)
    elif kind is P.OpKind.LEAKY_RELU:
        opts = O.leaky_relu_options(f32(rng.uniform(0.01, 0.5)), in_qp, out_qp)
    elif kind is P.OpKind.PRELU:
        alpha_qp = P.QParams.per_tensor(f32(rng.uniform(0.001, 0.01)), int(rng.integers(-10, 10)))
        alpha = rng.integers(-128, 128, (1, 1, 1, shape[3])).astype(np.int8)
        inputs.append(g.const("alpha", alpha, P.DType.INT8, alpha_qp))
        opts = O.prelu_options(in_qp, alpha_qp, out_qp)
    else:
        opts = O.requantize_options(in_qp, out_qp)
    g.op(kind, inputs, shape, opts, out_qp)
    check(g.build(), rng, kind.value)


OPS = [
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "SUB",
    "MUL",
    "CONCATENATION",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "MEAN",
    "RESHAPE",
    "TRANSPOSE",
    "PAD",
    "PADV2",
    "RESIZE_NEAREST_NEIGHBOR",
    "RESIZE_BILINEAR",
    "SOFTMAX",
    "LOGISTIC",
    "HARD_SWISH",
    "RELU",
    "RELU6",
    "LEAKY_RELU",
    "PRELU",
    "QUANTIZE",
]


@pytest.mark.parametrize("key", OPS)
def test_bit_exact_fraction(key):
    """Over every case of the op above: ≥ 99.9 % bit-exact (each element was already checked ≤ 1 LSB)."""
    if key not in STATS:
        pytest.skip(f"no {key} case ran in this session (run the whole module)")
    n, exact, worst = STATS[key]
    print(f"{key}: {exact}/{n} bit-exact ({100 * exact / n:.3f} %), max {worst} LSB")
    assert exact / n >= 0.999, f"{key}: only {100 * exact / n:.3f} % bit-exact"
