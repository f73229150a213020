"""The export stage: a torch module or an ONNX model in; a checked, static, float ONNX model out."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import onnx
import onnx.inliner

from edgeq import fileio, onnxutil
from edgeq.errors import ConfigError, ModelError
from edgeq.export import cleanup, constants, convfold, fold, shapes
from edgeq.export.check import check_domains, check_model
from edgeq.export.from_torch import export_torch, import_torch
from edgeq.export.graph import producers, rename_uses
from edgeq.export.opset import check_opset, check_requested_opset, upgrade_opset

#: Fold → re-infer rounds: a folded Reshape target can make another Shape static, and so on.
MAX_FOLD_ROUNDS = 8


def export(
    model: Any,
    *,
    example_inputs: Any = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    opset: int = 17,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> onnx.ModelProto:
    """Turn ``model`` into the float ONNX model the rest of edgeq works on, and return it.

    ``model`` is a ``torch.nn.Module`` (traced on ``example_inputs``: a tensor or a tuple of them), the path
    of an ONNX file, or an ``onnx.ModelProto`` (not modified). The result passes the full ONNX checker and
    has static shapes everywhere, opset ≥ 13 (older models are upgraded to ``opset``), weights as
    initializers, BatchNormalization (and per-channel Mul/Add) folded into the convs before it, constant
    subgraphs folded, and no Identity or inference Dropout. It computes what the input computes (to float32
    rounding), and the same input gives byte-for-byte the same model.

    ``input_names``/``output_names`` name a torch model's inputs and outputs, or rename an ONNX model's in
    order. ``input_shapes`` fixes dynamic input dimensions by input name; a dynamic batch dimension not given
    becomes 1 (logged). ``opset`` is the opset a torch model is exported with. With ``output`` the model is
    also written there (atomically; an existing file needs ``force``).
    """
    check_requested_opset(opset)
    if output is not None:
        fileio.check_output(output, force=force)  # fail before the work, not after it
    if not isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        proto, where = _from_torch(
            model, example_inputs, input_names=input_names, output_names=output_names, opset=opset
        )
        input_names = None  # given to the exporter
        if output_names is None:  # torch numbers unnamed outputs ("12"); name them as inputs are named
            count = len(proto.graph.output)
            output_names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    elif example_inputs is not None:
        raise ConfigError(
            "example_inputs is for torch modules only; an ONNX model's input shapes are given "
            "with input_shapes"
        )
    elif isinstance(model, onnx.ModelProto):
        where = f"model '{model.graph.name}'" if model.graph.name else "model"
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        where = str(model)
        proto = onnxutil.load_model(model)
    result = intake(
        proto,
        where=where,
        input_names=input_names,
        output_names=output_names,
        input_shapes=input_shapes,
        opset=opset,
    )
    if output is not None:
        onnxutil.save_model(result, output, force=force)
    return result


def _from_torch(
    module: Any,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    opset: int,
) -> tuple[onnx.ModelProto, str]:
    torch = import_torch(
        f"exporting a {type(module).__name__} (not an ONNX path or ModelProto, so a torch module)"
    )
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"cannot export a {type(module).__name__}: pass a torch.nn.Module, the path of an "
            ".onnx file or an onnx.ModelProto"
        )
    proto = export_torch(
        module, example_inputs, input_names=input_names, output_names=output_names, opset=opset
    )
    return proto, f"torch module {type(module).__name__}"


def intake(
    model: onnx.ModelProto,
    *,
    where: str,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """The ONNX half of :func:`export`, on a ModelProto it may modify; ``where`` names it in messages."""
    if model.functions:  # exporters wrap layers in local functions; their bodies are standard ops
        model = onnx.inliner.inline_local_functions(model)
    check_domains(model, where=where)
    check_opset(model, where=where)
    check_model(model, where=where, full=False)
    model = upgrade_opset(model, target=opset, where=where)
    _rename_io(model, input_names, kind="input", where=where)
    _rename_io(model, output_names, kind="output", where=where)
    constants.drop_initializer_inputs(model)
    shapes.fix_input_shapes(model, input_shapes, where=where)
    constants.constants_to_initializers(model)
    cleanup.remove_passthrough(model)
    model = shapes.infer_shapes(model, where=where)
    for _ in range(MAX_FOLD_ROUNDS):
        if not fold.fold_constants(model):
            break
        model = shapes.infer_shapes(model, where=where)
    convfold.fold_into_convs(model)
    cleanup.remove_unused(model)
    cleanup.unique_node_names(model)
    cleanup.prune_opset_imports(model)
    model = shapes.infer_shapes(model, where=where)
    shapes.require_static(model, where=where)
    try:
        check_model(model, where=where, full=True)
    except ModelError as e:
        raise ModelError(
            f"{e} (the model was valid before export simplified it: this is an edgeq bug, please report it)"
        ) from None
    return model


def _rename_io(model: onnx.ModelProto, names: Sequence[str] | None, *, kind: str, where: str) -> None:
    if names is None:
        return
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    values = [v for v in graph.input if v.name not in inits] if kind == "input" else list(graph.output)
    names = [str(n) for n in names]
    if len(names) != len(values):
        raise ConfigError(
            f"{where}: {kind}_names has {len(names)} names but the model has {len(values)} "
            f"{kind}s ({', '.join(repr(v.name) for v in values)})"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: {kind}_names {names} repeats a name")
    existing = inits | {v.name for v in graph.input} | {o for n in graph.node for o in n.output}
    made = producers(graph)
    for value, new in zip(values, names, strict=True):
        old = value.name
        if new == old:
            continue
        if new in existing:
            raise ConfigError(
                f"{where}: cannot name {kind} '{old}' '{new}': the model already has a tensor of that name"
            )
        if kind == "output":
            if old not in made or old in {v.name for v in graph.input}:
                raise ConfigError(f"{where}: output '{old}' is not computed by a node and cannot be renamed")
            node = made[old]
            node.output[list(node.output).index(old)] = new
        rename_uses(graph, old, new)
        value.name = new
        existing.add(new)
