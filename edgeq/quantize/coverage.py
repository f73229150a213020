"""Which ONNX ops edgeq quantizes, and how each one's quantization parameters are tied together.

Only ops that have an int8 kernel reachable from a QDQ graph are quantized; everything else stays float and
is listed in the summary with the reason. For onnxruntime targets that means ops its graph optimizer fuses
into QLinear*/QGemm kernels or runs natively on int8 once the Q/DQ around them are dropped (onnxruntime's
QDQSelectorActionTransformer); for TFLite targets (``tflite_constraints``) ops TFLite has int8 builtins for.
"""

from __future__ import annotations

from edgeq._compat import StrEnum


class Kind(StrEnum):
    """How an op is quantized."""

    WEIGHTED = "weighted"  # Conv, Gemm, MatMul: int8 weights per channel, int32 bias, quantized output
    BINARY = "binary"  # Add, Mul: two quantized inputs (a constant operand is quantized offline)
    CONCAT = "concat"
    OWN_RANGE = "own-range"  # output quantized with its own calibrated range
    FIXED = "fixed"  # output parameters fixed by the op's mathematics (softmax, logistic, tanh)
    SHARED = "shared"  # data movement: the output shares the input's scale and zero point exactly
    ACTIVATION = "activation"  # Relu / Clip: folded into the producer's output range, or standalone


# Ops onnxruntime runs in int8 from QDQ form: QLinearConv, QGemm, QLinearMatMul, QLinearAdd/Mul,
# QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool, QLinearLeakyRelu, QLinearSigmoid,
# QLinearSoftmax; MaxPool/Reshape/Flatten/Squeeze/Unsqueeze/Transpose/Resize have their Q/DQ dropped when the
# input and output parameters are equal (so SHARED is required, not just allowed); Relu/Clip are removed
# when the following QuantizeLinear's range implements them. Pad has no fusion but is pure data movement:
# quantizing it keeps the integer path unbroken for the consumers.
_ORT = {
    "Conv": Kind.WEIGHTED,
    "Gemm": Kind.WEIGHTED,
    "MatMul": Kind.WEIGHTED,
    "Add": Kind.BINARY,
    "Mul": Kind.BINARY,
    "Concat": Kind.CONCAT,
    "AveragePool": Kind.OWN_RANGE,
    "GlobalAveragePool": Kind.OWN_RANGE,
    "LeakyRelu": Kind.OWN_RANGE,
    "Sigmoid": Kind.OWN_RANGE,
    "Softmax": Kind.FIXED,
    "MaxPool": Kind.SHARED,
    "Reshape": Kind.SHARED,
    "Flatten": Kind.SHARED,
    "Squeeze": Kind.SHARED,
    "Unsqueeze": Kind.SHARED,
    "Transpose": Kind.SHARED,
    "Resize": Kind.SHARED,
    "Pad": Kind.SHARED,
    "Relu": Kind.ACTIVATION,
    "Clip": Kind.ACTIVATION,
}

# TFLite's int8 builtins add TANH and HARD_SWISH; its kernels also constrain parameters (see plan.py):
# AVERAGE_POOL_2D does not rescale, so its output shares the input's parameters; LOGISTIC and TANH have
# fixed output parameters.
_TFLITE = {
    **_ORT,
    "AveragePool": Kind.SHARED,
    "Sigmoid": Kind.FIXED,
    "Tanh": Kind.FIXED,
    "HardSwish": Kind.OWN_RANGE,
}

#: Producers a following Relu / Clip(0, max) folds into: their int8 kernels clamp the requantized output to
#: [qmin, qmax], so an output range starting at 0 (zero point = qmin) implements the activation exactly.
FOLD_INTO = frozenset({"Conv", "Gemm", "MatMul", "Add"})


def coverage(*, tflite: bool) -> dict[str, Kind]:
    """The quantizable op types for an onnxruntime target or a TFLite-constrained one."""
    return dict(_TFLITE if tflite else _ORT)


def data_inputs(op_type: str, n_inputs: int) -> range:
    """Indices of the inputs that carry float data to quantize (not shapes, axes, pads, scales, bounds)."""
    if op_type in ("Add", "Mul", "MatMul"):
        return range(min(n_inputs, 2))
    if op_type == "Concat":
        return range(n_inputs)
    return range(min(n_inputs, 1))
