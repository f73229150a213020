"""ONNX Runtime Mobile: QDQ .onnx → model.ort by onnxruntime's converter, loaded back in onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from builder import small_cnn
from onnx import numpy_helper
from test_tflite_util import quantize_qdq

from edgeq.backends.ort_mobile import (
    OptimizationStyle,
    TargetPlatform,
    check_mobile_usability,
    convert_to_ort,
    required_operators,
)
from edgeq.errors import ModelError, OutputExistsError
from edgeq.onnxutil import ort_session


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    rng = np.random.default_rng(0)
    samples = rng.uniform(0, 1, (16, 3, 16, 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("qdq") / "small.qdq.onnx"
    return quantize_qdq(small_cnn(0), samples, path)


def _output_step(model_path) -> float:
    """Scale of the DequantizeLinear that produces the graph output: one LSB of the output, in float."""
    m = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    node = next(n for n in m.graph.node if m.graph.output[0].name in n.output)
    assert node.op_type == "DequantizeLinear"
    return float(inits[node.input[1]])


def _run(model, xs):
    s = ort_session(model)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[None]})[0] for x in xs])


@pytest.fixture(scope="module")
def arm(qdq, tmp_path_factory):
    return convert_to_ort(qdq, tmp_path_factory.mktemp("arm"))


def test_ort_model_matches_onnx_bit_for_bit_on_this_cpu(qdq, tmp_path):
    conv = convert_to_ort(qdq, tmp_path, target_platform=TargetPlatform.AMD64)
    assert conv.ort_model.name == "model.ort" and conv.optimization_style is OptimizationStyle.FIXED
    xs = np.random.default_rng(1).uniform(0, 1, (20, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(_run(conv.ort_model, xs), _run(qdq, xs))


def test_arm_ort_model_loads_here_within_2_lsb(qdq, arm):
    # The Fixed style bakes in ARM-specific graph choices; run on x86 they may differ by a few LSB.
    assert arm.target_platform is TargetPlatform.ARM
    xs = np.random.default_rng(2).uniform(0, 1, (20, 3, 16, 16)).astype(np.float32)
    diff = np.abs(_run(arm.ort_model, xs) - _run(qdq, xs)) / _output_step(qdq)
    assert diff.max() <= 2 + 1e-3


def test_required_operators_config_is_deterministic(qdq, arm):
    text = arm.required_operators.read_text()
    assert "# - model.ort" in text and "/tmp" not in text
    ops = required_operators(text)
    assert "QLinearConv" in ops["com.microsoft"][1]
    assert any("QuantizeLinear" in names for names in ops["ai.onnx"].values())
    with pytest.raises(OutputExistsError, match="model.ort: output exists"):
        convert_to_ort(qdq, arm.ort_model.parent)
    again = convert_to_ort(qdq, arm.ort_model.parent, force=True)
    assert again.required_operators.read_text() == text


def test_unconvertible_model_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="bad.onnx: onnxruntime cannot convert the model to ORT format"):
        convert_to_ort(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "model.ort").exists()
    with pytest.raises(ModelError, match="model file not found"):
        convert_to_ort(tmp_path / "missing.onnx", tmp_path / "out")


def test_mobile_usability_as_data(qdq):
    u = check_mobile_usability(qdq)
    nnapi, xnn = u.provider("nnapi"), u.provider("XNNPACK")
    assert u.dynamic_inputs == ()
    # Every node of a static QDQ CNN (Q/DQ, Conv, Add, GlobalAveragePool, Flatten, Gemm) is an NNAPI op.
    assert nnapi.nodes > 10 and nnapi.supported_nodes == nnapi.nodes and nnapi.partitions == 1
    assert nnapi.suitability == "yes"
    # XNNPACK takes the QDQ convolutions but not Add/GlobalAveragePool/Gemm.
    assert 0 < xnn.supported_nodes < xnn.nodes and xnn.suitability is None
    assert "ai.onnx:Add" in xnn.unsupported_ops
    d = json.loads(json.dumps(u.to_dict()))
    assert d["providers"][0]["provider"] == "NNAPI" and d["providers"][0]["coverage"] == 1.0
