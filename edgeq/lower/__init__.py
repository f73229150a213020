"""QDQ ONNX → integer program (:func:`lower`), and the bit-exact numpy reference interpreter (:func:`run`).

The IR lives in :mod:`edgeq.lower.program`; TFLite's fixed-point arithmetic in :mod:`edgeq.lower.fixedpoint`;
the kernels in :mod:`edgeq.lower.kernels`; op options with their precomputed numbers in
:mod:`edgeq.lower.options`.
"""

from __future__ import annotations

from typing import Any

from edgeq.lower.program import (
    OPTIONS_OF,
    Activation,
    AddOptions,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DequantizeOptions,
    DType,
    FullyConnectedOptions,
    FusedActivation,
    IOBinding,
    LeakyReluOptions,
    LutOptions,
    MeanOptions,
    MulOptions,
    Op,
    OpKind,
    PadOptions,
    Pool2DOptions,
    PReluOptions,
    Program,
    QParams,
    QuantizeOptions,
    Requant,
    ReshapeOptions,
    ResizeOptions,
    SoftmaxOptions,
    TensorInfo,
    TransposeOptions,
)


def __getattr__(name: str) -> Any:
    # lower() pulls in onnx; run() only numpy: import each on first use.
    if name == "lower":
        from edgeq.lower.lowering import lower

        return lower
    if name in ("run", "FcRescale"):
        from edgeq.lower import reference

        return getattr(reference, name)
    raise AttributeError(f"module 'edgeq.lower' has no attribute {name!r}")


__all__ = [
    "OPTIONS_OF",
    "Activation",
    "AddOptions",
    "ConcatenationOptions",
    "Conv2DOptions",
    "DType",
    "DepthwiseConv2DOptions",
    "DequantizeOptions",
    "FcRescale",
    "FullyConnectedOptions",
    "FusedActivation",
    "IOBinding",
    "LeakyReluOptions",
    "LutOptions",
    "MeanOptions",
    "MulOptions",
    "Op",
    "OpKind",
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
    "lower",
    "run",
]
