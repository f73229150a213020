"""Model validity: the ONNX checker, and operator domains edgeq can take further."""

from __future__ import annotations

import onnx

from edgeq.errors import ModelError
from edgeq.export.graph import ACCEPTED_DOMAINS, all_nodes, node_label


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a multi-line library message (checker, converter, runtime) into one short line."""
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def check_model(model: onnx.ModelProto, *, where: str, full: bool = True) -> None:
    """Run onnx.checker (with strict shape inference when ``full``); a failure is a ModelError."""
    try:
        onnx.checker.check_model(model, full_check=full)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(
            f"{where}: the ONNX checker rejects the model: {one_line(e)}; fix or re-export the model"
        ) from None


def check_domains(model: onnx.ModelProto, *, where: str) -> None:
    """Refuse operators outside the standard ONNX and ONNX-ML domains, naming the first such node.

    Vendor domains (com.microsoft, custom ops) have no int8 kernels on the devices edgeq targets.
    """
    for node in all_nodes(model.graph):
        if node.domain not in ACCEPTED_DOMAINS:
            raise ModelError(
                f"{where}: {node_label(node)} is in operator domain '{node.domain}', which edgeq "
                "cannot quantize or run on a device; export with standard ONNX operators only "
                "(no custom ops, no onnxruntime-optimized/fused graphs)"
            )
