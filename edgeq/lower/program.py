"""The integer program: what a QDQ ONNX model lowers to, and what every integer backend consumes.

A :class:`Program` is a plain, immutable, saveable value: a table of tensors (:class:`TensorInfo`), a
topologically ordered list of operators (:class:`Op`) and the names of its inputs and outputs. It is the one
contract between :func:`edgeq.lower.lower`, the numpy reference interpreter (:mod:`edgeq.lower.reference`),
the .tflite writer (``edgeq.backends.tflite``) and the C backend (``edgeq.backends.c``).

Conventions (the contract — backends rely on every line of this):

* **Layouts.** 4-D activations are NHWC. Weights use TFLite's layouts: CONV_2D filter OHWI
  ``(out_channels, kh, kw, in_channels)``, DEPTHWISE_CONV_2D filter ``(1, kh, kw, in_channels * multiplier)``
  (output channel ``c * multiplier + m`` reads input channel ``c``), FULLY_CONNECTED weights ``(out, in)``.
  Bias is int32 ``(out_channels,)``, always present (zeros when the model had none). Axis numbers in options
  (CONCATENATION axis, MEAN axes, TRANSPOSE perm, PAD paddings) refer to the program's layout, not ONNX's.
* **Quantization.** Real value = ``scale * (q - zero_point)``. Activations are int8 per tensor. Weights are
  int8 symmetric (zero point 0), per output channel (``QParams.axis`` = 0 for CONV_2D and FULLY_CONNECTED,
  3 for DEPTHWISE_CONV_2D) or per tensor. Bias is int32 with scale ``input_scale * weight_scale[c]`` and zero
  point 0. Scales are float32 values (stored as Python floats that are exactly float32-representable).
* **Fixed point.** Every requantization is precomputed as TFLite's ``QuantizeMultiplier`` computes it, from
  ``double`` arithmetic on the float32 scales (see :mod:`edgeq.lower.fixedpoint`): ``real ≈ multiplier ·
  2^(shift − 31)`` with ``multiplier`` an int32 in ``[2^30, 2^31)`` (or 0) and ``shift`` TFLite's exponent
  (positive = shift left). It is applied as TFLite's default (double-rounding)
  ``MultiplyByQuantizedMultiplier(x) =
  RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x · 2^max(shift, 0), multiplier), max(−shift, 0))``.
  The C backend uses these numbers as they are; the tflite writer writes only the scales and TFLite recomputes
  the same multipliers.
  One exception is documented where it lives: FULLY_CONNECTED also carries ``effective_scale`` (doubles),
  because TFLite's builtin reference kernel rescales it in double precision (see FullyConnectedOptions).
* **Fused activation.** :class:`Activation` is an inclusive int clamp ``[min, max]`` in *output* quantized
  units, plus the TFLite fused-activation enum it came from so the tflite writer can express it; ``min``/
  ``max`` equal what TFLite's ``CalculateActivationRangeQuantized`` computes for that enum and the output's
  quantization.
* **Padding.** Explicit ``(top, left, bottom, right)`` in input pixels. Padded input positions contribute
  nothing to a convolution (they are at the input zero point) and are skipped by pooling (not counted by
  AVERAGE_POOL_2D, ignored by MAX_POOL_2D) — TFLite's semantics. The tflite writer maps it to SAME/VALID or
  inserts a PAD.
* **Elementwise unary ops** on int8 (LOGISTIC, HARD_SWISH, LEAKY_RELU, RELU, RELU6) carry ``lut``: 256 int8
  results indexed by ``q + 128``, computed at lowering time with TFLite's exact arithmetic for the op and its
  input/output quantization. A backend may use the table or recompute it; both are bit-identical.
* **I/O.** Program inputs and outputs are int8 tensors. :class:`IOBinding` records which float ONNX tensor
  each one stands for, its ONNX shape and the permutation between layouts, so callers can quantize and
  transpose inputs (:meth:`Program.quantize_input`) and dequantize and transpose outputs back
  (:meth:`Program.dequantize_output`).
* **Op inputs are data only.** Parameters TFLite passes as int32 tensors (RESHAPE shape, PAD paddings,
  MEAN axes, RESIZE size, TRANSPOSE perm) live in the options; an emitter creates those tensors itself.

Tensor names are unique; each non-constant tensor is produced by exactly one op or is a program input; ops are
in execution order.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeq import fileio
from edgeq._compat import StrEnum
from edgeq.errors import ModelError

FORMAT_VERSION = 1


class DType(StrEnum):
    """Element types a program tensor can have."""

    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    FLOAT32 = "float32"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)


class OpKind(StrEnum):
    """Program operators, named like (and mapping 1:1 to) TFLite builtin operators."""

    CONV_2D = "CONV_2D"
    DEPTHWISE_CONV_2D = "DEPTHWISE_CONV_2D"
    FULLY_CONNECTED = "FULLY_CONNECTED"
    ADD = "ADD"
    SUB = "SUB"
    MUL = "MUL"
    CONCATENATION = "CONCATENATION"
    MAX_POOL_2D = "MAX_POOL_2D"
    AVERAGE_POOL_2D = "AVERAGE_POOL_2D"
    MEAN = "MEAN"
    RESHAPE = "RESHAPE"
    PAD = "PAD"
    SOFTMAX = "SOFTMAX"
    LOGISTIC = "LOGISTIC"
    HARD_SWISH = "HARD_SWISH"
    LEAKY_RELU = "LEAKY_RELU"
    PRELU = "PRELU"
    RELU = "RELU"
    RELU6 = "RELU6"
    RESIZE_NEAREST_NEIGHBOR = "RESIZE_NEAREST_NEIGHBOR"
    RESIZE_BILINEAR = "RESIZE_BILINEAR"
    TRANSPOSE = "TRANSPOSE"
    QUANTIZE = "QUANTIZE"
    DEQUANTIZE = "DEQUANTIZE"


class FusedActivation(StrEnum):
    """TFLite's fused activation functions (ActivationFunctionType) that a clamp can come from."""

    NONE = "NONE"
    RELU = "RELU"
    RELU6 = "RELU6"
    RELU_N1_TO_1 = "RELU_N1_TO_1"


def _f32(x: float) -> float:
    return float(np.float32(x))


@dataclass(frozen=True)
class QParams:
    """Affine quantization: ``real = scale[i] * (q - zero_point[i])``.

    ``axis`` is None for per-tensor quantization (one scale, one zero point) or the quantized dimension of a
    per-channel tensor (one scale and zero point per index along that axis, in the program's layout).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(_f32(s) for s in self.scale))
        object.__setattr__(self, "zero_point", tuple(int(z) for z in self.zero_point))
        if len(self.scale) != len(self.zero_point) or not self.scale:
            raise ValueError(f"QParams: {len(self.scale)} scales but {len(self.zero_point)} zero points")
        if self.axis is None and len(self.scale) != 1:
            raise ValueError("QParams: per-tensor quantization (axis None) needs exactly one scale")
        if not all(np.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(f"QParams: scales must be finite and positive, got {self.scale[:4]}")

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> QParams:
        return cls((scale,), (zero_point,), None)

    @property
    def is_per_tensor(self) -> bool:
        return self.axis is None

    def same_as(self, other: QParams | None) -> bool:
        """True when both describe the same quantization (bit-identical float32 scales, same zero points)."""
        return other is not None and self == other

    def to_json(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> QParams:
        return cls(tuple(d["scale"]), tuple(d["zero_point"]), d["axis"])


@dataclass(frozen=True, eq=False)
class TensorInfo:
    """One tensor of the program.

    ``shape`` is static (every dimension > 0; a scalar is ``()``). ``qparams`` is None only for float32 and
    for int32 shape/index tensors. ``data`` holds a constant's value (read-only, C-contiguous, dtype
    ``dtype``, shape ``shape``) and is None for activations.
    """

    name: str
    shape: tuple[int, ...]
    dtype: DType
    qparams: QParams | None = None
    data: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", DType(self.dtype))
        if self.data is not None:
            arr = np.ascontiguousarray(self.data, dtype=self.dtype.numpy)
            if arr.shape != self.shape:
                raise ValueError(f"tensor {self.name!r}: data shape {arr.shape} != shape {self.shape}")
            if arr is self.data:
                arr = arr.copy()
            arr.setflags(write=False)
            object.__setattr__(self, "data", arr)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.numpy.itemsize

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorInfo):
            return NotImplemented
        same_data = (self.data is None and other.data is None) or (
            self.data is not None and other.data is not None and np.array_equal(self.data, other.data)
        )
        return (self.name, self.shape, self.dtype, self.qparams) == (
            other.name,
            other.shape,
            other.dtype,
            other.qparams,
        ) and same_data

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Activation:
    """A fused output clamp ``[min, max]`` (inclusive, in output quantized units) and its TFLite enum."""

    kind: FusedActivation = FusedActivation.NONE
    min: int = -128
    max: int = 127

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FusedActivation(self.kind))
        if self.min > self.max:
            raise ValueError(f"Activation: empty clamp [{self.min}, {self.max}]")


@dataclass(frozen=True)
class Requant:
    """Fixed-point multipliers, one per output channel (or one): ``real ≈ multiplier · 2^(shift − 31)``.

    Computed with :func:`edgeq.lower.fixedpoint.quantize_multiplier` (TFLite's QuantizeMultiplier); ``shift``
    is TFLite's exponent (positive means shift left before the high multiply).
    """

    multiplier: tuple[int, ...]
    shift: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "multiplier", tuple(int(m) for m in self.multiplier))
        object.__setattr__(self, "shift", tuple(int(s) for s in self.shift))
        if len(self.multiplier) != len(self.shift) or not self.multiplier:
            raise ValueError("Requant: multiplier and shift must be non-empty and of equal length")


# ---- per-op options (frozen, one class per operator family; the field names follow TFLite's) ---------------


@dataclass(frozen=True)
class Conv2DOptions:
    """CONV_2D. inputs: (input NHWC, filter OHWI int8, bias int32); output NHWC.

    ``requant`` has one entry per output channel, from ``double(input_scale) * double(filter_scale[c]) /
    double(output_scale)`` (the same value in every entry for a per-tensor filter). Groups are not supported:
    ``filter in_channels == input channels``.
    """

    stride: tuple[int, int]  # (h, w)
    dilation: tuple[int, int]  # (h, w)
    padding: tuple[int, int, int, int]  # (top, left, bottom, right)
    activation: Activation
    requant: Requant


@dataclass(frozen=True)
class DepthwiseConv2DOptions:
    """DEPTHWISE_CONV_2D. inputs: (input NHWC, filter (1, kh, kw, C·M) int8, bias int32); output NHWC (C·M).

    ``requant``: per output channel, as for CONV_2D.
    """

    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]
    depth_multiplier: int
    activation: Activation
    requant: Requant


@dataclass(frozen=True)
class FullyConnectedOptions:
    """FULLY_CONNECTED. inputs: (input (..., in), weights (out, in) int8, bias int32); output (..., out).

    The input's leading dimensions are kept (TFLite ``keep_num_dims = True`` when the input rank is not 2).
    Two rescalings of the int32 accumulator exist in TFLite and both are carried:

    * ``effective_scale[c] = double(in_s) * double(w_s[c]) / double(out_s)``: TFLite's *builtin reference*
      kernel computes ``(int32)round(double(acc) * effective_scale[c])`` (round half away from zero). This is
      what :func:`edgeq.lower.reference.run` does by default and what LiteRT's reference resolver does.
    * ``requant`` = QuantizeMultiplier(effective_scale[c]): the fixed-point path of TFLite's optimized
      kernels, TFLite Micro and CMSIS-NN (``MultiplyByQuantizedMultiplier``);
      ``run(..., fc_rescale="fixed-point")``.

    The two differ by 1 LSB when the scaled value lies within about 2^(shift−31) of a .5 tie (~0.1 % of
    outputs).
    """

    activation: Activation
    requant: Requant
    keep_num_dims: bool = False
    effective_scale: tuple[float, ...] = ()


@dataclass(frozen=True)
class AddOptions:
    """ADD and SUB (TFLite's int8 arithmetic; inputs broadcast numpy-style, same rank).

    ``left_shift`` (20 for int8), and the multipliers TFLite's Prepare computes: with ``twice_max =
    2 * max(s1, s2)`` (double), ``input1 = QuantizeMultiplier(s1 / twice_max)``,
    ``input2 = QuantizeMultiplier(s2 / twice_max)``,
    ``output = QuantizeMultiplier(twice_max / (2^left_shift * s_out))`` (each of length 1).
    """

    left_shift: int
    input1: Requant
    input2: Requant
    output: Requant
    activation: Activation


@dataclass(frozen=True)
class MulOptions:
    """MUL: ``requant`` = QuantizeMultiplier(double(s1) * double(s2) / double(s_out)); inputs broadcast."""

    activation: Activation
    requant: Requant


@dataclass(frozen=True)
class ConcatenationOptions:
    """CONCATENATION along ``axis`` (program layout). All inputs and the output share one quantization."""

    axis: int
    activation: Activation = field(default_factory=Activation)


@dataclass(frozen=True)
class Pool2DOptions:
    """MAX_POOL_2D / AVERAGE_POOL_2D on NHWC. Input and output share one quantization (TFLite requires it).

    AVERAGE_POOL_2D divides by the number of in-bounds elements, rounding half away from zero.
    """

    filter: tuple[int, int]  # (h, w)
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    activation: Activation = field(default_factory=Activation)


@dataclass(frozen=True)
class MeanOptions:
    """MEAN over ``axes`` (program layout). inputs: (input,).

    Lowering emits a 4-D NHWC input with ``axes == (1, 2)`` and ``keep_dims``. The arithmetic is TFLite's
    reference ``QuantizedMeanOrSum`` (reference/reduce.h): ``requant = QuantizeMultiplier(double(s_in) /
    double(s_out))`` = (m, e); with ``n`` the number of reduced elements and ``k = min(floor(log2 n), 32,
    31 + e)``, ``count_requant = ((m << k) // n, e − k)``; then ``out = MultiplyByQuantizedMultiplier(Σq −
    zp_in·n, count_requant) + zp_out``, clamped to int8. ``count_requant`` is precomputed by the lowering.
    """

    axes: tuple[int, ...]
    keep_dims: bool
    requant: Requant
    count_requant: Requant | None = None


@dataclass(frozen=True)
class ReshapeOptions:
    """RESHAPE to ``new_shape`` (row-major, program layout). Input and output share one quantization."""

    new_shape: tuple[int, ...]


@dataclass(frozen=True)
class PadOptions:
    """PAD: ``paddings[d] = (before, after)`` per dimension (program layout); padded with ``value``.

    ``value`` is the quantized pad value; it equals the zero point (real 0, TFLite PAD) unless the model pads
    with another constant (TFLite PADV2). Input and output share one quantization.
    """

    paddings: tuple[tuple[int, int], ...]
    value: int


@dataclass(frozen=True)
class SoftmaxOptions:
    """SOFTMAX over the last dimension with ``beta``. Output quantization is scale 1/256, zero point −128.

    The remaining fields are TFLite's int8 reference precomputation (PreprocessSoftmaxScaling with 5 scaled
    diff integer bits): ``input_multiplier``/``input_left_shift`` rescale ``beta · s_in · (q − max)`` to Q5.26
    and ``diff_min`` is the most negative difference that still contributes.
    """

    beta: float
    input_multiplier: int = 0
    input_left_shift: int = 0
    diff_min: int = 0


@dataclass(frozen=True)
class LutOptions:
    """LOGISTIC, HARD_SWISH, RELU, RELU6: elementwise int8 → int8 via ``lut[q + 128]`` (256 entries).

    The table is TFLite's result for the op's input and output quantization: LOGISTIC's LUTPopulate (float32
    ``1/(1+exp(-x))``; its output quantization is scale 1/256, zero point −128, as TFLite requires),
    HARD_SWISH's int16 fixed-point kernel, RELU/RELU6's requantize-then-clamp (QuantizedReluX). Input and
    output quantization may differ for HARD_SWISH, RELU and RELU6.
    """

    lut: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "lut", tuple(int(v) for v in self.lut))
        if len(self.lut) != 256:
            raise ValueError("LutOptions: lut must have 256 entries")


@dataclass(frozen=True)
class LeakyReluOptions:
    """LEAKY_RELU with slope ``alpha`` (float32). ``lut[q + 128]`` is TFLite's int8 result for input ``q``.

    ``identity`` = QuantizeMultiplier(s_in / s_out) and ``alpha_requant`` = QuantizeMultiplier(s_in · alpha /
    s_out) are TFLite's Prepare values, from which the table is computed.
    """

    alpha: float
    identity: Requant
    alpha_requant: Requant
    lut: tuple[int, ...]


@dataclass(frozen=True)
class PReluOptions:
    """PRELU. inputs: (input, alpha int8 constant broadcastable to the input, same rank).

    ``identity`` = QuantizeMultiplier(s_in / s_out); ``alpha_requant`` = QuantizeMultiplier(s_in · s_alpha /
    s_out) (TFLite's output_multiplier_1 / output_multiplier_2).
    """

    identity: Requant
    alpha_requant: Requant


@dataclass(frozen=True)
class ResizeOptions:
    """RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR on NHWC to ``size`` = (out_h, out_w).

    inputs: (input,). Input and output share one quantization.
    """

    size: tuple[int, int]
    align_corners: bool = False
    half_pixel_centers: bool = False


@dataclass(frozen=True)
class TransposeOptions:
    """TRANSPOSE: ``output = np.transpose(input, perm)``. inputs: (input,)."""

    perm: tuple[int, ...]


@dataclass(frozen=True)
class QuantizeOptions:
    """QUANTIZE: float32 → int8 (``requant`` None; round half away from zero, TFLite's), or int8 → int8
    requantization (``requant`` = QuantizeMultiplier(double(s_in) / double(s_out)):
    ``q_out = MultiplyByQuantizedMultiplier(q_in − zp_in) + zp_out``, clamped)."""

    requant: Requant | None = None


@dataclass(frozen=True)
class DequantizeOptions:
    """DEQUANTIZE: int8 → float32, ``scale · (q − zp)`` in float32."""


Options = (
    Conv2DOptions
    | DepthwiseConv2DOptions
    | FullyConnectedOptions
    | AddOptions
    | MulOptions
    | ConcatenationOptions
    | Pool2DOptions
    | MeanOptions
    | ReshapeOptions
    | PadOptions
    | SoftmaxOptions
    | LutOptions
    | LeakyReluOptions
    | PReluOptions
    | ResizeOptions
    | TransposeOptions
    | QuantizeOptions
    | DequantizeOptions
)

#: The options class each op kind carries.
OPTIONS_OF: dict[OpKind, type] = {
    OpKind.CONV_2D: Conv2DOptions,
    OpKind.DEPTHWISE_CONV_2D: DepthwiseConv2DOptions,
    OpKind.FULLY_CONNECTED: FullyConnectedOptions,
    OpKind.ADD: AddOptions,
    OpKind.SUB: AddOptions,
    OpKind.MUL: MulOptions,
    OpKind.CONCATENATION: ConcatenationOptions,
    OpKind.MAX_POOL_2D: Pool2DOptions,
    OpKind.AVERAGE_POOL_2D: Pool2DOptions,
    OpKind.MEAN: MeanOptions,
    OpKind.RESHAPE: ReshapeOptions,
    OpKind.PAD: PadOptions,
    OpKind.SOFTMAX: SoftmaxOptions,
    OpKind.LOGISTIC: LutOptions,
    OpKind.HARD_SWISH: LutOptions,
    OpKind.RELU: LutOptions,
    OpKind.RELU6: LutOptions,
    OpKind.LEAKY_RELU: LeakyReluOptions,
    OpKind.PRELU: PReluOptions,
    OpKind.RESIZE_NEAREST_NEIGHBOR: ResizeOptions,
    OpKind.RESIZE_BILINEAR: ResizeOptions,
    OpKind.TRANSPOSE: TransposeOptions,
    OpKind.QUANTIZE: QuantizeOptions,
    OpKind.DEQUANTIZE: DequantizeOptions,
}


@dataclass(frozen=True)
class Op:
    """One operator: ``kind``, tensor names in and out, its options, and the ONNX node it came from.

    ``source`` is the ONNX node name (for error messages and per-layer reports); ops the lowering inserts
    (layout transposes, requantizations) name the node they serve.
    """

    kind: OpKind
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    options: Any
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OpKind(self.kind))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        expected = OPTIONS_OF[self.kind]
        if not isinstance(self.options, expected):
            raise TypeError(f"{self.kind} needs {expected.__name__}, got {type(self.options).__name__}")


@dataclass(frozen=True)
class IOBinding:
    """How a program input/output relates to the float ONNX tensor it stands for.

    ``program_array = np.transpose(onnx_array, perm)``: an NCHW ONNX input becomes an NHWC program input with
    ``perm = (0, 2, 3, 1)``; an ONNX model whose input is already NHWC has the identity perm.
    """

    tensor: str
    onnx_name: str
    onnx_shape: tuple[int, ...]
    perm: tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm)))


@dataclass(frozen=True, eq=False)
class Program:
    """An integer program: tensors, ops in execution order, input and output tensor names, I/O bindings."""

    tensors: Mapping[str, TensorInfo]
    ops: tuple[Op, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    bindings: tuple[IOBinding, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    format_version: ClassVar[int] = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", dict(self.tensors))
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "bindings", tuple(self.bindings))
        object.__setattr__(self, "metadata", dict(self.metadata))

    # ---- queries -------------------------------------------------------------------------------------------

    def tensor(self, name: str) -> TensorInfo:
        return self.tensors[name]

    def binding(self, tensor: str) -> IOBinding | None:
        return next((b for b in self.bindings if b.tensor == tensor), None)

    def producer(self, name: str) -> Op | None:
        return next((op for op in self.ops if name in op.outputs), None)

    def consumers(self, name: str) -> list[Op]:
        return [op for op in self.ops if name in op.inputs]

    @property
    def constants(self) -> list[TensorInfo]:
        return [t for t in self.tensors.values() if t.is_constant]

    def validate(self) -> None:
        """Check the structural invariants above; raises ModelError naming the first broken one."""
        defined = set(self.inputs) | {n for n, t in self.tensors.items() if t.is_constant}
        for name in [*self.inputs, *self.outputs]:
            if name not in self.tensors:
                raise ModelError(f"program: input/output {name!r} is not in the tensor table")
        for op in self.ops:
            for name in op.inputs:
                if name not in self.tensors:
                    raise ModelError(f"program: op {op.kind} ({op.source}) reads unknown tensor {name!r}")
                if name not in defined:
                    raise ModelError(
                        f"program: op {op.kind} ({op.source}) reads {name!r} before it is computed"
                    )
            for name in op.outputs:
                if name not in self.tensors:
                    raise ModelError(f"program: op {op.kind} ({op.source}) writes unknown tensor {name!r}")
                if name in defined:
                    raise ModelError(f"program: tensor {name!r} is produced twice")
                defined.add(name)
        for name in self.outputs:
            if name not in defined:
                raise ModelError(f"program: output {name!r} is never computed")

    # ---- I/O helpers ---------------------------------------------------------------------------------------

    def quantize_input(self, tensor: str, x: np.ndarray) -> np.ndarray:
        """A float array in the ONNX layout → the program's int8 input (transposed, then quantized).

        Rounds half to even, as ONNX QuantizeLinear does (the QDQ model is the source of truth for inputs).
        """
        t = self.tensors[tensor]
        b = self.binding(tensor)
        x = np.asarray(x, dtype=np.float32)
        if b is not None:
            x = np.transpose(x, b.perm)
        return quantize(x, t.qparams, t.dtype)

    def dequantize_output(self, tensor: str, q: np.ndarray) -> np.ndarray:
        """The program's int8 output → float32 in the ONNX layout."""
        t = self.tensors[tensor]
        b = self.binding(tensor)
        x = dequantize(q, t.qparams)
        if b is not None:
            x = np.transpose(x, np.argsort(b.perm))
        return x

    # ---- saving --------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        """Deterministic JSON text (constants as base64 little-endian bytes)."""
        return json.dumps(_program_to_obj(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Program:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelError(f"not an edgeq program file: {e}") from None
        return _program_from_obj(obj)

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Atomically write :meth:`to_json` to ``path``."""
        return fileio.write_text(path, self.to_json(), force=force)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Program:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: program file not found")
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except ModelError as e:
            raise ModelError(f"{path}: {e}") from None


# ---- float ↔ int helpers -----------------------------------------------------------------------------------


def quantize(x: np.ndarray, qparams: QParams | None, dtype: DType | str = DType.INT8) -> np.ndarray:
    """Per-tensor quantization of float ``x``, rounding half to even (ONNX QuantizeLinear), saturating."""
    if qparams is None or not qparams.is_per_tensor:
        raise ValueError("quantize needs per-tensor quantization parameters")
    info = np.iinfo(DType(dtype).numpy)
    scale = np.float32(qparams.scale[0])
    q = np.rint(np.asarray(x, dtype=np.float32) / scale) + qparams.zero_point[0]
    return np.clip(q, info.min, info.max).astype(DType(dtype).numpy)


def dequantize(q: np.ndarray, qparams: QParams | None) -> np.ndarray:
    """``scale * (q - zero_point)`` in float32 (per tensor, or per channel along ``qparams.axis``)."""
    if qparams is None:
        return np.asarray(q, dtype=np.float32)
    q = np.asarray(q)
    scale = np.asarray(qparams.scale, dtype=np.float32)
    zp = np.asarray(qparams.zero_point, dtype=np.int64)
    if qparams.axis is not None:
        shape = [1] * q.ndim
        shape[qparams.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    else:
        scale, zp = scale[0], zp[0]
    return ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


# ---- (de)serialisation -------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, StrEnum):
        return str(value.value)
    return value


_OPTION_CLASSES = {cls.__name__: cls for cls in set(OPTIONS_OF.values())}
_NESTED = {
    "activation": Activation,
    "requant": Requant,
    "count_requant": Requant,
    "input1": Requant,
    "input2": Requant,
    "output": Requant,
    "identity": Requant,
    "alpha_requant": Requant,
}


def _tupleize(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    return value


def _decode_options(cls: type, d: Mapping[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue  # a field added later with a default
        v = d[f.name]
        if f.name in _NESTED and v is not None:
            nested = _NESTED[f.name]
            v = nested(**{k: _tupleize(x) for k, x in v.items()})
        else:
            v = _tupleize(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def _program_to_obj(p: Program) -> dict[str, Any]:
    tensors = []
    for t in p.tensors.values():
        entry: dict[str, Any] = {
            "name": t.name,
            "shape": list(t.shape),
            "dtype": str(t.dtype.value),
            "qparams": t.qparams.to_json() if t.qparams else None,
        }
        if t.data is not None:
            entry["data"] = base64.b64encode(t.data.astype(t.data.dtype.newbyteorder("<")).tobytes()).decode()
        tensors.append(entry)
    ops = [
        {
            "kind": str(op.kind.value),
            "inputs": list(op.inputs),
            "outputs": list(op.outputs),
            "options_type": type(op.options).__name__,
            "options": _encode(op.options),
            "source": op.source,
        }
        for op in p.ops
    ]
    return {
        "format": "edgeq.program",
        "version": FORMAT_VERSION,
        "tensors": tensors,
        "ops": ops,
        "inputs": list(p.inputs),
        "outputs": list(p.outputs),
        "bindings": [_encode(b) for b in p.bindings],
        "metadata": dict(p.metadata),
    }


def _program_from_obj(obj: Mapping[str, Any]) -> Program:
    if not isinstance(obj, dict) or obj.get("format") != "edgeq.program":
        raise ModelError("not an edgeq program file (missing format: edgeq.program)")
    if obj.get("version", 0) > FORMAT_VERSION:
        raise ModelError(
            f"program format version {obj.get('version')} is newer than this edgeq "
            f"({FORMAT_VERSION}); upgrade edgeq"
        )
    try:
        tensors = {}
        for e in obj["tensors"]:
            dtype = DType(e["dtype"])
            data = None
            if "data" in e:
                raw = base64.b64decode(e["data"])
                data = np.frombuffer(raw, dtype=dtype.numpy.newbyteorder("<")).astype(dtype.numpy)
                data = data.reshape(tuple(e["shape"]))
            qp = QParams.from_json(e["qparams"]) if e["qparams"] else None
            tensors[e["name"]] = TensorInfo(e["name"], tuple(e["shape"]), dtype, qp, data)
        ops = tuple(
            Op(
                OpKind(o["kind"]),
                tuple(o["inputs"]),
                tuple(o["outputs"]),
                _decode_options(_OPTION_CLASSES[o["options_type"]], o["options"]),
                o["source"],
            )
            for o in obj["ops"]
        )
        bindings = tuple(
            IOBinding(b["tensor"], b["onnx_name"], tuple(b["onnx_shape"]), tuple(b["perm"]))
            for b in obj.get("bindings", [])
        )
        return Program(
            tensors, ops, tuple(obj["inputs"]), tuple(obj["outputs"]), bindings, obj.get("metadata", {})
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"corrupt edgeq program file ({type(e).__name__}: {e})") from None


__all__ = [
    "OPTIONS_OF",
    "Activation",
    "AddOptions",
    "ConcatenationOptions",
    "Conv2DOptions",
    "DType",
    "DepthwiseConv2DOptions",
    "DequantizeOptions",
    "FullyConnectedOptions",
    "FusedActivation",
    "IOBinding",
    "LeakyReluOptions",
    "LutOptions",
    "MeanOptions",
    "MulOptions",
    "Op",
    "OpKind",
    "Options",
    "PReluOptions",
    "PadOptions",
    "Pool2DOptions",
    "Program",
    "QParams",
    "QuantizeOptions",
    "Requant",
    "ReshapeOptions",
    "ResizeOptions",
    "SoftmaxOptions",
    "TensorInfo",
    "TransposeOptions",
    "dequantize",
    "quantize",
]
