"""The integer program IR: invariants, validation, I/O helpers and the JSON format."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.errors import DataError, ModelError
from edgeq.lower import options as O
from edgeq.lower.program import (
    Activation,
    Conv2DOptions,
    IOBinding,
    Op,
    OpKind,
    Program,
    QParams,
    ReshapeOptions,
    TensorInfo,
    dequantize,
    quantize,
)
from edgeq.lower.reference import run


def _conv_program() -> Program:
    rng = np.random.default_rng(0)
    qx, qy = QParams.per_tensor(0.05, 2), QParams.per_tensor(0.1, -3)
    qw = QParams((0.01, 0.02), (0, 0), 0)
    tensors = [
        TensorInfo("x", (1, 5, 5, 3), "int8", qx),
        TensorInfo("w", (2, 3, 3, 3), "int8", qw, rng.integers(-127, 128, (2, 3, 3, 3))),
        TensorInfo("b", (2,), "int32", QParams((0.0005, 0.001), (0, 0), 0), np.array([10, -20])),
        TensorInfo("y", (1, 5, 5, 2), "int8", qy),
        TensorInfo("z", (1, 50), "int8", qy),
    ]
    ops = (
        Op(
            OpKind.CONV_2D,
            ("x", "w", "b"),
            ("y",),
            Conv2DOptions(
                (1, 1), (1, 1), (1, 1, 1, 1), O.activation("RELU", qy), O.conv_requant(qx, qw, qy, 2)
            ),
            "conv",
        ),
        Op(OpKind.RESHAPE, ("y",), ("z",), ReshapeOptions((1, 50)), "flatten"),
    )
    return Program(
        {t.name: t for t in tensors},
        ops,
        ("x",),
        ("z",),
        (IOBinding("x", "input", (1, 3, 5, 5), (0, 2, 3, 1)), IOBinding("z", "out", (1, 50), (0, 1))),
    )


def test_constants_are_read_only_and_typed():
    p = _conv_program()
    w = p.tensors["w"]
    assert w.data.dtype == np.int8 and not w.data.flags.writeable and w.is_constant
    with pytest.raises(ValueError):
        w.data[0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="data shape"):
        TensorInfo("bad", (2,), "int8", None, np.zeros(3))


def test_qparams_are_float32_and_checked():
    q = QParams.per_tensor(0.1, 3)
    assert q.scale[0] == float(np.float32(0.1))
    with pytest.raises(ValueError):
        QParams((0.1, 0.2), (0, 0), None)
    with pytest.raises(ValueError):
        QParams.per_tensor(-1.0, 0)


def test_op_checks_its_options_type():
    with pytest.raises(TypeError, match="Conv2DOptions"):
        Op(OpKind.CONV_2D, ("x",), ("y",), ReshapeOptions((1,)))


def test_validate_finds_reads_before_writes():
    p = _conv_program()
    p.validate()
    broken = Program(p.tensors, tuple(reversed(p.ops)), p.inputs, p.outputs)
    with pytest.raises(ModelError, match="before it is computed"):
        broken.validate()


def test_json_round_trip_is_exact_and_deterministic(tmp_path):
    p = _conv_program()
    text = p.to_json()
    back = Program.from_json(text)
    assert back.to_json() == text
    assert back.ops == p.ops and back.bindings == p.bindings
    assert all(back.tensors[n] == t for n, t in p.tensors.items())
    path = p.save(tmp_path / "p.json")
    assert Program.load(path).to_json() == text
    with pytest.raises(ModelError, match="not found"):
        Program.load(tmp_path / "missing.json")
    with pytest.raises(ModelError, match="newer"):
        Program.from_json(text.replace('"version":1', '"version":99'))


def test_quantize_input_transposes_and_rounds_half_to_even():
    p = _conv_program()
    x = np.zeros((1, 3, 5, 5), np.float32)
    x[0, 1, 2, 3] = 0.125  # 0.125 / 0.05 = 2.5 → 2 (half to even) + zero point 2
    q = p.quantize_input("x", x)
    assert q.shape == (1, 5, 5, 3) and q[0, 2, 3, 1] == 4 and q.dtype == np.int8
    np.testing.assert_allclose(
        dequantize(quantize(np.array([1.0]), QParams.per_tensor(0.5, 1)), QParams.per_tensor(0.5, 1)), [1.0]
    )


def test_run_checks_inputs():
    p = _conv_program()
    good = np.zeros((1, 5, 5, 3), np.int8)
    run(p, {"x": good})
    with pytest.raises(DataError, match="missing input 'x'"):
        run(p, {})
    with pytest.raises(DataError, match="dtype float32"):
        run(p, {"x": good.astype(np.float32)})
    with pytest.raises(DataError, match=r"shape \(1, 3, 5, 5\)"):
        run(p, {"x": np.zeros((1, 3, 5, 5), np.int8)})
    outs = run(p, {"x": good}, keep_intermediates=True)
    assert set(outs) == {"x", "y", "z"}


def test_activation_for_clamp_picks_the_tflite_enum():
    out = QParams.per_tensor(0.05, -20)
    assert O.activation_for_clamp(0.0, None, out).kind.value == "RELU"
    assert O.activation_for_clamp(0.0, 6.0, out).kind.value == "RELU6"
    assert O.activation_for_clamp(-1.0, 1.0, out).kind.value == "RELU_N1_TO_1"
    assert O.activation_for_clamp(None, None, out) == Activation()
    assert O.activation_for_clamp(0.5, 2.0, out) is None
