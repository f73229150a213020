"""torch.nn.Module → ONNX ModelProto.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): the torch.export-based one
needs ``onnxscript``, which edgeq does not depend on, and for the static, inference-only CNNs edgeq targets
the TorchScript exporter produces plain standard-domain graphs. Torch's own constant folding is switched
off so that the intake does all the folding the same way for torch and ONNX models (BatchNorm in float64).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from edgeq.errors import ConfigError, ModelError, UnsupportedError
from edgeq.export.check import one_line

TORCH_HINT = "pip install 'edgeq[torch]'"


def import_torch(what: str = "exporting a PyTorch module"):
    """Import torch, or raise an UnsupportedError saying ``what`` needs it and how to install it."""
    try:
        import torch
    except ImportError:
        raise UnsupportedError(f"{what} needs torch, which is not installed: {TORCH_HINT}") from None
    return torch


def _as_tensors(torch, example_inputs: Any) -> tuple:
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    tensors = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        elif hasattr(item, "__array__"):
            tensors.append(torch.from_numpy(np.asarray(item)))
        else:
            raise ModelError(
                f"example_inputs[{i}] is a {type(item).__name__}; pass torch tensors or numpy "
                "arrays, one per model input"
            )
    return tuple(tensors)


def export_torch(
    module: Any,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    opset: int,
) -> onnx.ModelProto:
    """Trace ``module`` in eval mode on ``example_inputs`` and return the ONNX graph (not yet simplified)."""
    torch = import_torch()
    if example_inputs is None:
        raise ModelError(
            f"{type(module).__name__}: a torch module needs example_inputs to be traced, e.g. "
            "example_inputs=torch.zeros(1, 3, 224, 224)"
        )
    args = _as_tensors(torch, example_inputs)
    if input_names is None:
        input_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    elif len(input_names) != len(args):
        raise ConfigError(
            f"input_names has {len(input_names)} names for {len(args)} example inputs; "
            "give one name per input"
        )
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                args,
                buffer,
                input_names=list(input_names),
                output_names=list(output_names) if output_names else None,
                opset_version=opset,
                do_constant_folding=False,
                dynamo=False,
                training=torch.onnx.TrainingMode.EVAL,
                keep_initializers_as_inputs=False,
            )
    except Exception as e:
        first = one_line(e) or type(e).__name__
        raise ModelError(
            f"{type(module).__name__}: torch.onnx.export failed at opset {opset}: {first}; "
            "make the module traceable (no data-dependent Python control flow) or export it "
            "to ONNX yourself"
        ) from None
    return onnx.load_from_string(buffer.getvalue())
