"""Static shapes: fixing dynamic input dimensions, shape inference, and refusing what stays dynamic.

Device runtimes plan memory ahead of time (TFLite Micro's arena, the C backend's static buffers), so every
tensor of an exported model has a fixed shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import onnx

from edgeq.errors import ModelError
from edgeq.export.check import one_line
from edgeq.export.graph import node_label

log = logging.getLogger("edgeq.export")


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    """Each dimension as an int (fixed), a str (named dynamic) or None (unnamed dynamic)."""
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(d.dim_value)
        else:
            out.append(d.dim_param if d.HasField("dim_param") and d.dim_param else None)
    return out


def _show(dims: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def fix_input_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None, *, where: str
) -> list[str]:
    """Set every input's dimensions to fixed values, in place; returns notes on the defaults taken.

    ``input_shapes`` gives full shapes by input name. A dynamic first dimension (the batch) of an input not
    listed there becomes 1; any other dynamic dimension must be given.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in inits}
    given = dict(input_shapes or {})
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise ModelError(
            f"{where}: input_shapes names '{unknown[0]}', which is not a model input; the inputs "
            f"are {', '.join(repr(n) for n in inputs)}"
        )
    notes = []
    for name, value_info in inputs.items():
        if not value_info.type.HasField("tensor_type"):
            raise ModelError(f"{where}: input '{name}' is not a tensor; edgeq handles tensor inputs only")
        tensor_type = value_info.type.tensor_type
        if not tensor_type.HasField("shape"):
            if name not in given:
                raise ModelError(
                    f"{where}: input '{name}' has no shape (unknown rank); give it with "
                    f"input_shapes={{'{name}': [...]}}"
                )
            tensor_type.shape.SetInParent()
        dims = _dims(value_info)
        if name in given:
            shape = [int(d) for d in given[name]]
            if any(d <= 0 for d in shape):
                raise ModelError(
                    f"{where}: input_shapes['{name}'] = {shape}: every dimension must be a positive integer"
                )
            if tensor_type.shape.dim and len(shape) != len(dims):
                raise ModelError(
                    f"{where}: input_shapes['{name}'] = {shape} has rank {len(shape)} but the "
                    f"input has rank {len(dims)} {_show(dims)}"
                )
            for i, (want, have) in enumerate(zip(shape, dims, strict=False)):  # dims is empty if rank-less
                if isinstance(have, int) and have != want:
                    raise ModelError(
                        f"{where}: input_shapes['{name}'] = {shape} sets dimension {i} to {want}, "
                        f"but the model fixes it to {have} {_show(dims)}"
                    )
        else:
            shape = list(dims)
            if shape and not isinstance(shape[0], int):
                shape[0] = 1
                notes.append(
                    f"input '{name}': dynamic batch dimension "
                    f"'{dims[0] or '?'}' fixed to 1 (set input_shapes to choose another)"
                )
            dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
            if dynamic:
                raise ModelError(
                    f"{where}: input '{name}' {_show(dims)} has dynamic dimension "
                    f"{dynamic[0]}; give its shape with input_shapes={{'{name}': [...]}}"
                )
        del tensor_type.shape.dim[:]
        for d in shape:
            tensor_type.shape.dim.add().dim_value = d
    for note in notes:
        log.warning("%s: %s", where, note)
    return notes


def infer_shapes(model: onnx.ModelProto, *, where: str) -> onnx.ModelProto:
    """Strict ONNX shape inference over fresh value_info (stale entries from the source are dropped)."""
    del model.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # InferenceError, or RuntimeError from an op's inference function
        raise ModelError(
            f"{where}: shape inference fails: {one_line(e)}; the input shapes may not fit the "
            "model (check input_shapes)"
        ) from None


def static_shape(model: onnx.ModelProto, name: str) -> tuple[int, ...] | None:
    """The fixed shape of tensor ``name`` from the model's value_info/inputs/outputs, or None if unknown."""
    graph = model.graph
    for value_info in [*graph.input, *graph.value_info, *graph.output]:
        if value_info.name == name and value_info.type.tensor_type.HasField("shape"):
            dims = _dims(value_info)
            return tuple(dims) if all(isinstance(d, int) for d in dims) else None  # type: ignore[arg-type]
    for tensor in graph.initializer:
        if tensor.name == name:
            return tuple(tensor.dims)
    return None


def require_static(model: onnx.ModelProto, *, where: str) -> None:
    """Every tensor the main graph computes must have a known, fixed shape after inference."""
    graph = model.graph
    known = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    for node in graph.node:
        for out in node.output:
            if not out:
                continue
            value_info = known.get(out)
            if value_info is None or not value_info.type.tensor_type.HasField("shape"):
                raise ModelError(
                    f"{where}: the shape of '{out}' ({node_label(node)}) cannot be inferred; "
                    "edgeq needs static shapes: export the model with fixed shapes"
                )
            dims = _dims(value_info)
            if not all(isinstance(d, int) for d in dims):
                raise ModelError(
                    f"{where}: '{out}' ({node_label(node)}) has dynamic shape {_show(dims)} even "
                    "with all inputs fixed (a data-dependent size); edgeq needs static shapes"
                )
