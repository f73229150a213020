"""Operator versions and the minimum runtime version, as TensorFlow's converter assigns them.

A TFLite kernel is registered for a range of operator versions; a model must name, for each operator code, the
version whose features it uses (int8 kernels are version 2 or 3, ``keep_num_dims`` needs FULLY_CONNECTED 5 …).
These tables follow tensorflow/lite/tools/versioning/op_version.cc (GetBuiltinOperatorVersion) and
runtime_version.cc (FindMinimumRuntimeVersionForOp) for the int8 signatures edgeq writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ai_edge_litert import schema_py_generated as fb

B = fb.BuiltinOperator


@dataclass(frozen=True)
class Signature:
    """What an operator's version depends on: element types of its first input/output and a few options."""

    op: int  # BuiltinOperator
    input_type: int  # TensorType of input 0
    output_type: int  # TensorType of output 0
    rank: int = 4  # rank of input 0
    weight_type: int | None = None  # TensorType of input 1 (filter / weights), where it matters
    num_inputs: int = 1
    keep_num_dims: bool = False
    dilated: bool = False
    half_pixel_centers: bool = False
    align_corners: bool = False
    mul_rescale_ge_1: bool = False
    broadcast: bool = False


_INT8 = fb.TensorType.INT8
_INT16 = fb.TensorType.INT16


def operator_version(sig: Signature) -> int:
    """The version the TFLite converter gives an operator with this signature."""
    op, i, o = sig.op, sig.input_type, sig.output_type
    if i == _INT16 and o == _INT16 and sig.weight_type == _INT8:
        # TFLite's 16x8 mode (int16 activations, int8 weights): CONV_2D 4, DEPTHWISE_CONV_2D 5, FC 7.
        if op == B.CONV_2D:
            return 4
        if op == B.DEPTHWISE_CONV_2D:
            return 5
        if op == B.FULLY_CONNECTED:
            return 7
    if op == B.ADD and i == _INT16 and o == _INT16:
        return 3  # int16 with general (not power-of-two) scales, pot_scale_int16 = false
    if op == B.QUANTIZE and i == _INT16:
        return 3  # int16 → int8 requantization
    if op in (B.CONV_2D, B.DEPTHWISE_CONV_2D):
        if i == _INT8 and sig.weight_type == _INT8 and o == _INT8:
            return 3
        return 2 if (op == B.DEPTHWISE_CONV_2D and sig.dilated) else 1
    if op == B.FULLY_CONNECTED:
        if sig.num_inputs == 2:
            return 6
        if sig.keep_num_dims:
            return 5
        return 4 if (i == _INT8 and sig.weight_type == _INT8 and o == _INT8) else 1
    if op == B.MUL:
        if i == _INT16:
            return 4
        if sig.mul_rescale_ge_1:
            return 3
        return 2 if i == _INT8 else 1
    if op == B.SUB:
        if sig.broadcast and sig.rank > 4:
            return 3
        return 2 if i == _INT8 else 1
    if op == B.TRANSPOSE:
        if sig.rank > 5:
            return 6
        if sig.rank > 4:
            return 4
        return 2 if i == _INT8 else 1
    if op in (B.PAD, B.PADV2):
        if sig.rank > 4:
            return 4
        return 2 if i == _INT8 else 1
    if op == B.RESIZE_BILINEAR:
        if sig.half_pixel_centers:
            return 3
        return 2 if i == _INT8 else 1
    if op == B.RESIZE_NEAREST_NEIGHBOR:
        if sig.half_pixel_centers or sig.align_corners:
            return 3
        return 2 if i == _INT8 else 1
    if op == B.DEQUANTIZE:
        return 2 if i == _INT8 else 1
    if op == B.QUANTIZE:
        return 2 if o == _INT16 else 1
    if op in (
        B.ADD,
        B.MAX_POOL_2D,
        B.AVERAGE_POOL_2D,
        B.CONCATENATION,
        B.SOFTMAX,
        B.MEAN,
        B.LOGISTIC,
        B.RELU,
        B.RELU6,
    ):
        return 2 if i == _INT8 else 1
    # HARD_SWISH, LEAKY_RELU (int8), PRELU, RESHAPE: version 1.
    return 1


# (operator, version) → the first TFLite runtime that runs it (runtime_version.cc), for the ops edgeq writes.
_MIN_RUNTIME: dict[tuple[int, int], str] = {
    (B.AVERAGE_POOL_2D, 1): "1.5.0", (B.AVERAGE_POOL_2D, 2): "1.14.0",
    (B.CONV_2D, 1): "1.5.0", (B.CONV_2D, 2): "1.14.0", (B.CONV_2D, 3): "1.14.0", (B.CONV_2D, 4): "2.3.0",
    (B.DEPTHWISE_CONV_2D, 5): "2.3.0", (B.FULLY_CONNECTED, 7): "2.3.0", (B.ADD, 3): "2.4.0",
    (B.QUANTIZE, 3): "2.7.0",
    (B.DEPTHWISE_CONV_2D, 1): "1.5.0", (B.DEPTHWISE_CONV_2D, 2): "1.12.0", (B.DEPTHWISE_CONV_2D, 3): "1.14.0",
    (B.ADD, 1): "1.5.0", (B.ADD, 2): "1.14.0",
    (B.SUB, 1): "1.6.0", (B.SUB, 2): "1.14.0", (B.SUB, 3): "2.3.0",
    (B.CONCATENATION, 1): "1.5.0", (B.CONCATENATION, 2): "1.14.0",
    (B.FULLY_CONNECTED, 1): "1.5.0", (B.FULLY_CONNECTED, 4): "1.14.0", (B.FULLY_CONNECTED, 5): "2.0.0",
    (B.FULLY_CONNECTED, 6): "2.1.0",
    (B.MAX_POOL_2D, 1): "1.5.0", (B.MAX_POOL_2D, 2): "1.14.0",
    (B.MUL, 1): "1.5.0", (B.MUL, 2): "1.14.0", (B.MUL, 3): "1.15.0", (B.MUL, 4): "2.3.0",
    (B.PAD, 1): "1.5.0", (B.PAD, 2): "1.14.0", (B.PAD, 4): "2.6.0",
    (B.PADV2, 1): "1.9.0", (B.PADV2, 2): "1.14.0", (B.PADV2, 4): "2.6.0",
    (B.RESHAPE, 1): "1.5.0",
    (B.SOFTMAX, 1): "1.5.0", (B.SOFTMAX, 2): "1.14.0",
    (B.TRANSPOSE, 1): "1.6.0", (B.TRANSPOSE, 2): "1.14.0", (B.TRANSPOSE, 4): "2.3.0",
    (B.MEAN, 1): "1.6.0", (B.MEAN, 2): "1.14.0",
    (B.RELU, 1): "1.5.0", (B.RELU, 2): "2.1.0",
    (B.RELU6, 1): "1.5.0", (B.RELU6, 2): "1.14.0",
    (B.RESIZE_BILINEAR, 1): "1.7.0", (B.RESIZE_BILINEAR, 2): "1.14.0", (B.RESIZE_BILINEAR, 3): "2.2.0",
    (B.RESIZE_NEAREST_NEIGHBOR, 1): "1.13.1", (B.RESIZE_NEAREST_NEIGHBOR, 2): "1.14.0",
    (B.RESIZE_NEAREST_NEIGHBOR, 3): "2.3.0",
    (B.LEAKY_RELU, 1): "1.13.1",
    (B.LOGISTIC, 1): "1.14.0", (B.LOGISTIC, 2): "1.14.0",
    (B.DEQUANTIZE, 1): "1.13.1", (B.DEQUANTIZE, 2): "1.14.0",
    (B.QUANTIZE, 1): "1.14.0", (B.QUANTIZE, 2): "1.15.0",
    (B.PRELU, 1): "1.8.0",
    (B.HARD_SWISH, 1): "1.15.0",
}  # fmt: skip


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def min_runtime_version(op_versions: list[tuple[int, int]]) -> str:
    """The highest minimum runtime version over ``(operator, version)`` pairs ('' when none is known)."""
    known = [_MIN_RUNTIME[k] for k in op_versions if k in _MIN_RUNTIME]
    return max(known, key=_version_key) if known else ""
