"""TFLite 16x8 mode: int16 activations with int8 weights, bit-exact between edgeq's reference interpreter and
LiteRT's builtin reference kernels (BUILTIN_REF), op by op and on a tiny mixed int8/int16 net."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is needed to run .tflite files")

from ai_edge_litert import schema_py_generated as fb
from test_tflite_util import Prog, compare_with_litert, f32, litert

from edgeq.backends.tflite import write_tflite
from edgeq.backends.tflite.writer import activation_range
from edgeq.lower import int16 as K16
from edgeq.lower import options as O
from edgeq.lower import program as P
from edgeq.lower.reference import run

SEEDS = range(6)
TRIALS = 3
STATS: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # op → [elements, exact, max |diff|]
_ACTS = (P.FusedActivation.NONE, P.FusedActivation.RELU, P.FusedActivation.RELU6)


def qp16(rng: np.random.Generator, lo: float = 1e-4, hi: float = 1e-3) -> P.QParams:
    return P.QParams.per_tensor(f32(rng.uniform(lo, hi)), 0)  # symmetric: zero point 0


def act16(rng: np.random.Generator, out: P.QParams) -> P.Activation:
    kind = _ACTS[int(rng.integers(3))]
    lo, hi = activation_range(kind, out, K16.INT16_MIN, K16.INT16_MAX)
    return P.Activation(kind, lo, hi)


def input16(g: Prog, shape, qp: P.QParams | None = None) -> str:
    name = f"in{len(g.inputs)}"
    g.tensors[name] = P.TensorInfo(name, tuple(shape), P.DType.INT16, qp or qp16(g.rng))
    g.inputs.append(name)
    return name


def feed(rng: np.random.Generator, t: P.TensorInfo) -> np.ndarray:
    info = np.iinfo(t.dtype.numpy)
    return rng.integers(info.min, int(info.max) + 1, t.shape).astype(t.dtype.numpy)


def check(program: P.Program, rng: np.random.Generator, key: str) -> None:
    feeds = [{n: feed(rng, program.tensors[n]) for n in program.inputs} for _ in range(TRIALS)]
    tflite = write_tflite(program, int16_io=True)
    compare_with_litert(tflite, program, feeds, STATS[key], max_lsb=0, key=key)


def conv_out(size: int, k: int, s: int, d: int, before: int, after: int) -> int:
    return (size + before + after - ((k - 1) * d + 1)) // s + 1


def _bias(g: Prog, n: int, in_qp: P.QParams, w_qp: P.QParams) -> str:
    ws = w_qp.scale if len(w_qp.scale) == n else w_qp.scale * n
    scales = tuple(f32(np.float32(in_qp.scale[0]) * np.float32(s)) for s in ws)
    qp = P.QParams(scales, (0,) * n, 0) if len(w_qp.scale) > 1 else P.QParams.per_tensor(scales[0], 0)
    data = g.rng.integers(-(2**24), 2**24, n).astype(np.int32)  # int16 inputs: ~256× larger than int8's
    return g.const("b", data, P.DType.INT32, qp)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_convolutions_16x8(seed, depthwise):
    g = Prog(seed)
    rng = g.rng
    k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    d = (1, 1) if rng.random() < 0.6 else (2, 2)
    h, w = int(rng.integers(6, 11)), int(rng.integers(6, 11))
    cin = int(rng.integers(1, 9))
    pad = (0, 0, 0, 0) if seed % 2 else (k[0] // 2, k[1] // 2, k[0] // 2, k[1] // 2)
    x = input16(g, (1, h, w, cin))
    in_qp = g.tensors[x].qparams
    oh, ow = conv_out(h, k[0], s[0], d[0], pad[0], pad[2]), conv_out(w, k[1], s[1], d[1], pad[1], pad[3])
    out_qp = qp16(rng, 2e-3, 2e-2)
    act = act16(rng, out_qp)
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
    g.op(kind, [x, wt, _bias(g, cout, in_qp, w_qp)], (1, oh, ow, cout), opts, out_qp, P.DType.INT16)
    check(g.build(), rng, f"{kind.value} 16x8")


@pytest.mark.parametrize("seed", SEEDS)
def test_fully_connected_16x8(seed):
    g = Prog(seed)
    rng = g.rng
    n_in, n_out = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    keep = seed % 3 == 2
    shape = (1, int(rng.integers(2, 5)), n_in) if keep else (int(rng.integers(1, 3)), n_in)
    x = input16(g, shape)
    in_qp = g.tensors[x].qparams
    out_qp = qp16(rng, 2e-3, 2e-2)
    wt, w_qp = g.weights((n_out, n_in), axis=0, per_channel=seed % 2 == 0)
    opts = P.FullyConnectedOptions(
        act16(rng, out_qp), O.conv_requant(in_qp, w_qp, out_qp, n_out), keep_num_dims=keep
    )
    b = _bias(g, n_out, in_qp, w_qp)
    g.op(P.OpKind.FULLY_CONNECTED, [x, wt, b], (*shape[:-1], n_out), opts, out_qp, P.DType.INT16)
    check(g.build(), rng, "FULLY_CONNECTED 16x8")


@pytest.mark.parametrize("seed", SEEDS)
def test_add_16(seed):
    g = Prog(seed)
    rng = g.rng
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 9)))
    other = [shape, (1, 1, 1, shape[3]), (1, shape[1], shape[2], 1)][seed % 3]
    a, b = input16(g, shape), input16(g, other)
    out_qp = qp16(rng, 1e-4, 2e-3)
    qa, qb = g.tensors[a].qparams, g.tensors[b].qparams
    opts = O.add_options(qa, qb, out_qp, act16(rng, out_qp), left_shift=K16.ADD_LEFT_SHIFT_INT16)
    g.op(P.OpKind.ADD, [a, b], shape, opts, out_qp, P.DType.INT16)
    check(g.build(), rng, "ADD int16")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("direction", ["8to16", "16to8"])
def test_requantize_int8_int16(seed, direction):
    g = Prog(seed)
    rng = g.rng
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 9)))
    q8 = g.qp(0.01, 0.1)
    q16 = qp16(rng, q8.scale[0] * 128 / 32767 * 0.5, q8.scale[0] * 128 / 32767 * 2)
    if direction == "8to16":
        x = g.input(shape, q8)
        out_qp, dtype = q16, P.DType.INT16
    else:
        x = input16(g, shape, q16)
        out_qp, dtype = q8, P.DType.INT8
    g.op(P.OpKind.QUANTIZE, [x], shape, O.requantize_options(g.tensors[x].qparams, out_qp), out_qp, dtype)
    check(g.build(), rng, f"QUANTIZE {direction}")


def tiny_mixed_net(seed: int) -> P.Program:
    """int8 input → QUANTIZE → int16 CONV_2D (16x8) → QUANTIZE → int8 FULLY_CONNECTED: one int16 layer."""
    g = Prog(seed)
    rng = g.rng
    x = g.input((1, 6, 6, 3))
    q8_in = g.tensors[x].qparams
    q16_in = P.QParams.per_tensor(K16.int16_scale(q8_in.scale[0] * 128), 0)
    x16 = g.op(
        P.OpKind.QUANTIZE, [x], (1, 6, 6, 3), O.requantize_options(q8_in, q16_in), q16_in, P.DType.INT16
    )
    q16_out = qp16(rng, 2e-3, 2e-2)
    wt, w_qp = g.weights((4, 3, 3, 3), axis=0)
    conv = P.Conv2DOptions(
        (1, 1), (1, 1), (1, 1, 1, 1), act16(rng, q16_out), O.conv_requant(q16_in, w_qp, q16_out, 4)
    )
    b = _bias(g, 4, q16_in, w_qp)
    y16 = g.op(P.OpKind.CONV_2D, [x16, wt, b], (1, 6, 6, 4), conv, q16_out, P.DType.INT16)
    q8_mid = P.QParams.per_tensor(f32(q16_out.scale[0] * 32767 / 127), 0)
    y8 = g.op(P.OpKind.QUANTIZE, [y16], (1, 6, 6, 4), O.requantize_options(q16_out, q8_mid), q8_mid)
    r = g.op(P.OpKind.RESHAPE, [y8], (1, 144), P.ReshapeOptions((1, 144)), q8_mid)
    w2_qp = P.QParams((0.01,) * 5, (0,) * 5, 0)
    wt2 = g.const("w2", rng.integers(-127, 128, (5, 144)).astype(np.int8), P.DType.INT8, w2_qp)
    b2_qp = P.QParams((f32(np.float32(q8_mid.scale[0]) * np.float32(0.01)),) * 5, (0,) * 5, 0)
    b2 = g.const("b2", rng.integers(-3000, 3000, 5).astype(np.int32), P.DType.INT32, b2_qp)
    out_qp = g.qp(0.05, 0.5)
    fc = O.fully_connected_options(q8_mid, w2_qp, out_qp, 5, O.activation("NONE", out_qp))
    g.op(P.OpKind.FULLY_CONNECTED, [r, wt2, b2], (1, 5), fc, out_qp)
    return g.build()


def test_tiny_net_with_one_int16_layer():
    program = tiny_mixed_net(0)
    data = write_tflite(program)
    model = fb.ModelT.InitFromPackedBuf(data, 0)
    codes = {(c.builtinCode, c.version) for c in model.operatorCodes}
    B = fb.BuiltinOperator
    assert (B.CONV_2D, 4) in codes and (B.QUANTIZE, 2) in codes and (B.QUANTIZE, 3) in codes
    types = {t.name: t.type for t in model.subgraphs[0].tensors}
    assert fb.TensorType.INT64 in types.values()  # the 16x8 conv's bias
    check(program, np.random.default_rng(1), "tiny mixed net")
    assert write_tflite(program) == data  # deterministic


# ---- quantize(int16_nodes=...) → lower → .tflite, end to end ---------------------------------------------


def _chain_model():
    """conv → conv → conv (no activations): the middle tensors are where int16 pays off."""
    from builder import GraphBuilder

    g = GraphBuilder("input", (1, 3, 8, 8), seed=3)
    x = g.conv(g.input, 3, 8, 3)
    x = g.conv(x, 8, 8, 3)
    return g.build(g.conv(x, 8, 4, 1))


def _e2e(model, names, n_samples: int = 6):
    from test_quantize import minmax_ranges, samples_for
    from test_quantize import run as ort_run

    from edgeq.lower import lower
    from edgeq.quantize import quantize

    samples = samples_for(model, 16)
    ranges = minmax_ranges(model, samples)  # evaluated on the calibration samples: no clipping error
    res = quantize(model, ranges, target="android-arm64", int16_nodes=names)
    prog = lower(res.model)
    it = litert(write_tflite(prog))
    worst_lsb, err = 0, 0.0
    for s in range(n_samples):
        feed = samples[s]
        x = prog.quantize_input(prog.inputs[0], feed["input"])
        want = run(prog, {prog.inputs[0]: x})[prog.outputs[0]]
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        worst_lsb = max(worst_lsb, int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max()))
        y = prog.dequantize_output(prog.outputs[0], want)
        err = max(err, float(np.abs(y - ort_run(model, feed)[0]).max()))
    return res, prog, worst_lsb, err


def test_quantize_lower_litert_with_int16_layers():
    from builder import small_cnn

    model = small_cnn(seed=0)
    names = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "Add")]
    res, prog, worst, _ = _e2e(model, names)
    assert worst == 0  # LiteRT BUILTIN_REF and edgeq's reference agree bit for bit
    meta = {p.key: p.value for p in res.model.metadata_props}
    assert meta["edgeq.int16_nodes"] == '["' + '","'.join(names) + '"]'
    kinds16 = {op.kind for op in prog.ops if prog.tensors[op.outputs[0]].dtype is P.DType.INT16}
    assert {P.OpKind.CONV_2D, P.OpKind.DEPTHWISE_CONV_2D, P.OpKind.ADD, P.OpKind.FULLY_CONNECTED} <= kinds16
    # the int16 QDQ pairs use onnxruntime's com.microsoft Q/DQ; the default-domain opset stays 17
    assert any(n.domain == "com.microsoft" for n in res.model.graph.node)
    assert next(o.version for o in res.model.opset_import if o.domain == "") == 17


def test_int16_chain_is_more_accurate_than_int8():
    model = _chain_model()
    names = [n.name for n in model.graph.node]
    _, _, w8, err8 = _e2e(model, [])
    _, prog, w16, err16 = _e2e(model, names)
    assert w8 == 0 and w16 == 0
    out = prog.tensors[prog.outputs[0]].qparams.scale[0]
    print(
        f"\nchain conv×3: max |err| vs float int8 {err8 / out:.2f} steps, with int16 {err16 / out:.2f} steps"
    )
    assert err16 < err8


def test_int16_quantization_is_deterministic():
    from builder import small_cnn
    from test_quantize import minmax_ranges, samples_for

    from edgeq.quantize import quantize

    model = small_cnn(seed=1)
    ranges = minmax_ranges(model, samples_for(model, 8))
    names = ["conv_13_node", "add_14_node"]
    a = quantize(model, ranges, target="android-arm64", int16_nodes=names).model.SerializeToString()
    b = quantize(model, ranges, target="android-arm64", int16_nodes=names).model.SerializeToString()
    assert a == b


def test_int16_nodes_errors_name_the_problem():
    from builder import small_cnn
    from test_quantize import minmax_ranges, samples_for

    from edgeq.errors import ConfigError
    from edgeq.quantize import quantize

    model = small_cnn(seed=0)
    ranges = minmax_ranges(model, samples_for(model, 4))
    with pytest.raises(ConfigError, match="runs onnxruntime"):
        quantize(model, ranges, target="cpu-x86", int16_nodes=["conv_3_node"])
    with pytest.raises(ConfigError, match="did you mean 'conv_3_node'"):
        quantize(model, ranges, target="android-arm64", int16_nodes=["conv_3_nod"])
    with pytest.raises(ConfigError, match="GlobalAveragePool"):
        quantize(model, ranges, target="android-arm64", int16_nodes=["globalaveragepool_15_node"])


def test_stats_summary(capsys):
    """Not a check: prints the bit-exactness figures gathered above (run with -s to see them)."""
    with capsys.disabled():
        for key, (n, exact, worst) in sorted(STATS.items()):
            print(f"\n{key}: {exact}/{n} exact, max |diff| {worst} LSB", end="")


# ---- quantize_to_target(precision="int16") ---------------------------------------------------------------


def test_search_keeps_sensitive_layers_in_int16_on_android():
    from test_accuracy_search import outlier_model

    from edgeq.accuracy import quantize_to_target
    from edgeq.calibrate import calibrate
    from edgeq.errors import ConfigError
    from edgeq.lower import lower

    model = outlier_model()
    x = np.random.default_rng(1).uniform(0, 1, (120, 2, 8, 8)).astype(np.float32)
    table = calibrate(model, x)
    # The outlier channel is 2000x the others: int16 (256x finer than int8) cuts the noise from ~31 % to ~5 %.
    result = quantize_to_target(
        model,
        table,
        x,
        target="android-arm64",
        max_drop=10.0,
        metric="sqnr",
        num_samples=120,
        precision="int16",
    )
    print(f"\nint16 search: all int8 {result.full.describe()}; kept {result.kept}: {result.score.describe()}")
    assert result.precision == "int16" and sorted(result.kept) == ["conv_11_node", "conv_7_node"]
    assert result.score.drop <= 10.0 < result.full.drop and result.proven_minimal
    assert "kept in int16" in result.text()
    meta = {p.key: p.value for p in result.result.model.metadata_props}
    assert set(result.kept) <= set(json.loads(meta["edgeq.int16_nodes"]))
    # the result is a full-integer .tflite that LiteRT runs bit-exactly like edgeq's reference
    prog = lower(result.result.model)
    it = litert(write_tflite(prog))
    q = prog.quantize_input(prog.inputs[0], x[:1])
    it.set_tensor(it.get_input_details()[0]["index"], q)
    it.invoke()
    got = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.array_equal(got, run(prog, {prog.inputs[0]: q})[prog.outputs[0]])
    with pytest.raises(ConfigError, match="does not run LiteRT"):
        quantize_to_target(model, table, x, target="cpu-x86", max_drop=1.0, precision="int16")
