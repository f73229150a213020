"""Which opsets edgeq takes, and upgrading old ones.

Per-channel quantization (DequantizeLinear with an ``axis``) needs opset 13, so older models are upgraded with
onnx.version_converter. Opsets older than 7 predate the converter's reliable adapters and are refused, as are
opsets newer than both onnx and the installed onnxruntime know.
"""

from __future__ import annotations

import functools
import logging

import onnx
import onnx.version_converter
from onnx import helper

from edgeq.errors import ModelError
from edgeq.export.check import one_line
from edgeq.export.graph import DEFAULT_DOMAINS

log = logging.getLogger("edgeq.export")

#: Lowest opset edgeq works on (per-channel QuantizeLinear/DequantizeLinear).
MIN_OPSET = 13
#: Lowest opset the version converter upgrades from.
MIN_CONVERTIBLE_OPSET = 7


def _ort_accepts(version: int) -> bool:
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)])
    probe.ir_version = 8
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


@functools.cache
def max_opset() -> int:
    """The newest default-domain opset that both onnx and the installed onnxruntime accept.

    onnxruntime has no API for this, so it is probed once with a one-node model (a few milliseconds).
    """
    version = onnx.defs.onnx_opset_version()
    while version > MIN_OPSET and not _ort_accepts(version):
        version -= 1
    return version


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset version (ONNX's implicit default is 1 when none is imported)."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    return max(versions) if versions else 1


def _unsupported(where: str, version: int, why: str) -> ModelError:
    return ModelError(
        f"{where}: unsupported opset {version}: {why}; re-export the model with opset "
        f"{MIN_OPSET}–{max_opset()}"
    )


def check_requested_opset(opset: int) -> None:
    """Validate the ``opset`` option (what torch exports and old models are upgraded to)."""
    if not MIN_OPSET <= opset <= max_opset():
        raise ModelError(
            f"opset={opset} is outside what edgeq supports here; choose {MIN_OPSET}–{max_opset()}"
        )


def check_opset(model: onnx.ModelProto, *, where: str) -> int:
    """The model's default-domain opset, or a ModelError if edgeq cannot take it (even by upgrading)."""
    version = default_opset(model)
    if version > max_opset():
        raise _unsupported(where, version, f"newer than this onnx/onnxruntime support (up to {max_opset()})")
    if version < MIN_CONVERTIBLE_OPSET:
        raise _unsupported(
            where, version, f"too old to convert reliably (the converter starts at {MIN_CONVERTIBLE_OPSET})"
        )
    return version


def upgrade_opset(model: onnx.ModelProto, *, target: int, where: str) -> onnx.ModelProto:
    """Return ``model`` upgraded to opset ``target`` if it is older than 13, else ``model`` itself."""
    version = check_opset(model, where=where)
    if version >= MIN_OPSET:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, target)
    except Exception as e:  # the converter raises RuntimeError/ConvertError with C++ text
        raise _unsupported(
            where, version, f"onnx.version_converter cannot upgrade it to {target} ({one_line(e, 200)})"
        ) from None
    # The converter keeps the old IR version; the new opset may need a newer one.
    upgraded.ir_version = max(upgraded.ir_version, _min_ir_version(target))
    log.warning(
        "%s: upgraded the model from opset %d to %d (per-channel int8 needs opset ≥ %d)",
        where,
        version,
        target,
        MIN_OPSET,
    )
    return upgraded


def _min_ir_version(opset: int) -> int:
    return min(ir for _, ir, ai_onnx, *_ in helper.VERSION_TABLE if ai_onnx >= opset)
