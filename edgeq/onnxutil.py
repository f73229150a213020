"""Loading, describing and saving ONNX models safely.

Models are untrusted input: a truncated or corrupt file is a :class:`ModelError`, and external-data references
that point outside the model's own folder are refused before anything reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeq import fileio
from edgeq.errors import ModelError

ModelLike = "str | os.PathLike[str] | onnx.ModelProto"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, static shape (``-1`` for a dimension that is not fixed) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_static(self) -> bool:
        return all(d > 0 for d in self.shape)


def _check_external_data(model: onnx.ModelProto, base: Path) -> None:
    base = base.resolve()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents:
            raise ModelError(
                f"tensor '{t.name}': external data path '{location}' is outside the model's folder "
                f"{base}; move the data file next to the model"
            )
        if not target.is_file():
            raise ModelError(f"tensor '{t.name}': external data file '{location}' not found in {base}")


def load_model(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """Read an ONNX model from ``model`` (a path or a ModelProto, returned as is), with clear errors."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning …: all mean a corrupt file
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(e).__name__}); the file may be truncated "
            "or not ONNX: re-export it"
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(
            f"{path}: the ONNX model has an empty graph; the file may be truncated: re-export it"
        )
    _check_external_data(proto, path.parent)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        onnx.load_external_data_for_model(proto, str(path.parent))
    return proto


def _spec(value_info: onnx.ValueInfoProto) -> TensorSpec:
    tt = value_info.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim)
    dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.dtype(np.float32)
    return TensorSpec(value_info.name, dims, np.dtype(dtype))


def input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The graph inputs that are real inputs (not initializers)."""
    inits = {i.name for i in model.graph.initializer}
    return [_spec(v) for v in model.graph.input if v.name not in inits]


def output_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The graph outputs."""
    return [_spec(v) for v in model.graph.output]


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic bytes of ``model`` (protobuf map fields are sorted by ``deterministic=True``)."""
    return model.SerializeToString(deterministic=True)


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Atomically write ``model`` to ``path``; refuses to overwrite unless ``force``."""
    data = serialize(model)
    if len(data) > 2**31 - 1:
        raise ModelError(f"{path}: model is larger than 2 GB, which a single ONNX file cannot hold")
    return fileio.write_bytes(path, data, force=force)


def ort_session(
    model: onnx.ModelProto | bytes | str | os.PathLike[str], *, threads: int = 1, optimize: bool = True
):
    """An onnxruntime CPU InferenceSession with a fixed thread count (deterministic, comparable timings)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, onnx.ModelProto):
        model = serialize(model)
    elif not isinstance(model, bytes):
        model = str(model)
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load the model: {str(e).splitlines()[0][:300]}") from None
