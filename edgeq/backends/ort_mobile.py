"""ONNX Runtime Mobile: a QDQ .onnx → ``model.ort`` + the operator list for a reduced Android/iOS build.

The conversion is ONNX Runtime's own tool (``python -m onnxruntime.tools.convert_onnx_models_to_ort``), run as
a subprocess with an argument list in a private temporary folder, so the tool's side files never touch the
caller's folders. ``Fixed`` optimisation style bakes in the graph optimisations for the CPU/XNNPACK path
(``Runtime`` is for compiling EPs such as NNAPI and CoreML).

:func:`check_mobile_usability` reports, as data, how much of the model NNAPI and XNNPACK can take: NNAPI comes
from ONNX Runtime's own usability checker (``onnxruntime.tools.check_onnx_model_mobile_usability``), which
knows no XNNPACK; the XNNPACK figure is edgeq's estimate from the operators ONNX Runtime's XNNPACK EP
registers.

Note: ONNX Runtime's ``.ort`` serializer is not byte-deterministic (the same model converted twice gives files
with identical content in a different byte layout); the operator config is made deterministic here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from edgeq import fileio
from edgeq._compat import StrEnum
from edgeq.errors import ModelError

ORT_MODEL = "model.ort"
REQUIRED_OPERATORS = "required_operators.config"


class OptimizationStyle(StrEnum):
    """``fixed``: optimisations baked in (CPU, XNNPACK); ``runtime``: saved for replay (NNAPI, CoreML)."""

    FIXED = "Fixed"
    RUNTIME = "Runtime"


class TargetPlatform(StrEnum):
    """The CPU family whose platform-specific optimisations the ``fixed`` style bakes in."""

    ARM = "arm"
    AMD64 = "amd64"

    @classmethod
    def for_arch(cls, arch: str) -> TargetPlatform:
        """``aarch64``/``armv7``… → ARM, ``x86_64`` → AMD64."""
        return cls.AMD64 if arch.lower() in ("x86_64", "amd64", "x64") else cls.ARM


@dataclass(frozen=True)
class OrtConversion:
    """The files :func:`convert_to_ort` wrote."""

    ort_model: Path
    required_operators: Path
    optimization_style: OptimizationStyle
    target_platform: TargetPlatform


def convert_to_ort(
    model_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    optimization_style: OptimizationStyle = OptimizationStyle.FIXED,
    target_platform: TargetPlatform = TargetPlatform.ARM,
    ort_name: str = ORT_MODEL,
    config_name: str = REQUIRED_OPERATORS,
    timeout: float = 600.0,
    force: bool = False,
) -> OrtConversion:
    """Convert the ONNX model at ``model_path`` to ORT format in ``output_dir``.

    Writes ``ort_name`` and ``config_name`` (the required-operators config for ONNX Runtime's
    ``--include_ops_by_config`` reduced build) atomically. Raises :class:`ModelError` if ONNX Runtime
    cannot convert the model.
    """
    src = Path(model_path)
    if not src.is_file():
        raise ModelError(f"{src}: model file not found")
    out = Path(output_dir)
    for name in (ort_name, config_name):
        fileio.check_output(out / name, force=force)
    with tempfile.TemporaryDirectory(prefix="edgeq-ort-") as tmp_name:
        tmp = Path(tmp_name)
        # The tool converts every .onnx under a folder and names its outputs after the input: give it a folder
        # holding only this model under a fixed name, so the outputs' names are known.
        (tmp / "in").mkdir()
        shutil.copyfile(src, tmp / "in" / "model.onnx")
        argv = [
            sys.executable,
            "-m",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            "--output_dir",
            str(tmp / "out"),
            "--optimization_style",
            str(optimization_style),
            "--target_platform",
            str(target_platform),
            str(tmp / "in" / "model.onnx"),
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=tmp, check=False)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{src}: ORT-format conversion did not finish in {timeout:.0f} s") from None
        ort_file = tmp / "out" / "model.ort"
        config_file = tmp / "out" / "model.required_operators.config"
        if proc.returncode != 0 or not ort_file.is_file() or not config_file.is_file():
            detail = _last_error_line(proc.stderr + proc.stdout)
            raise ModelError(
                f"{src}: onnxruntime cannot convert the model to ORT format ({detail}); check that the model "
                "loads in onnxruntime (`edgeq inspect`)"
            )
        config = _stable_config(config_file.read_text(encoding="utf-8"), ort_name)
        ort_path = fileio.write_bytes(out / ort_name, ort_file.read_bytes(), force=force)
        config_path = fileio.write_text(out / config_name, config, force=force)
    return OrtConversion(ort_path, config_path, optimization_style, target_platform)


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "fail" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def _stable_config(text: str, ort_name: str) -> str:
    """The tool's config names the temporary .ort path in a comment: name the packaged file instead."""
    lines = []
    for line in text.splitlines():
        if line.startswith("# - "):
            line = f"# - {ort_name}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def required_operators(config_text: str) -> dict[str, dict[int, list[str]]]:
    """Parse a required-operators config into ``{domain: {opset: [ops]}}``."""
    ops: dict[str, dict[int, list[str]]] = {}
    for line in config_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, names = line.split(";", 2)
        ops.setdefault(domain, {})[int(opset)] = sorted(n for n in names.split(",") if n)
    return ops


# --- mobile usability ---------------------------------------------------------------------------------------

# Operators ONNX Runtime's XNNPACK EP registers kernels for (onnxruntime/core/providers/xnnpack,
# ORT >= 1.17): as float nodes, and as QDQ node groups (DQ → op → Q) for the quantized ones. XNNPACK also
# fuses a Clip/Relu that directly follows a node it took. Everything else stays on the CPU EP.
XNNPACK_FLOAT_OPS = frozenset(
    {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "Softmax", "Resize", "Gemm", "MatMul"}
)
XNNPACK_QDQ_OPS = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "Softmax", "Resize"})
XNNPACK_FUSABLE = frozenset({"Clip", "Relu"})


@dataclass(frozen=True)
class EpCoverage:
    """How much of a model one execution provider would run.

    ``suitability``: ``yes`` / ``maybe`` / ``no``, ONNX Runtime's own rule for compiling EPs (one partition
    covering > 75 % of the nodes is ``yes``: it weighs the cost of copying between partitions), or None for a
    CPU EP such as XNNPACK, which shares memory with the CPU EP. ``source`` says where the figures come from.
    """

    provider: str
    nodes: int
    supported_nodes: int
    partitions: int
    partition_sizes: tuple[int, ...]
    unsupported_ops: tuple[str, ...]
    nodes_unsupported_due_to_op: int
    nodes_unsupported_due_to_dynamic_shape: int
    suitability: str | None
    caveats: tuple[str, ...]
    source: str

    @property
    def coverage(self) -> float:
        """Fraction of nodes the provider can take."""
        return self.supported_nodes / self.nodes if self.nodes else 0.0


@dataclass(frozen=True)
class MobileUsability:
    """The mobile-usability check's result, as data (``to_dict`` for JSON)."""

    model: str
    dynamic_inputs: tuple[str, ...]
    dynamic_values: int
    providers: tuple[EpCoverage, ...]

    def provider(self, name: str) -> EpCoverage:
        for p in self.providers:
            if p.provider.lower() == name.lower():
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for p, src in zip(d["providers"], self.providers, strict=True):
            p["coverage"] = round(src.coverage, 4)
        return d


class _NodeSetChecker:
    """Duck-types the usability checker's supported-ops checker over a precomputed set of supported nodes."""

    def __init__(self, supported: set[int]):
        self._supported = supported

    def is_op_supported(self, node: onnx.NodeProto) -> bool:
        return id(node) in self._supported

    def get_caveats(self) -> list[str]:
        return []


def _xnnpack_supported(graph: onnx.GraphProto) -> set[int]:
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    supported: set[int] = set()

    def is_qdq_group(node: onnx.NodeProto) -> bool:
        data_inputs = [i for i in node.input[:1] if i]
        ins = [producer.get(i) for i in data_inputs]
        outs = [c for o in node.output for c in consumers.get(o, [])]
        return (
            bool(ins)
            and all(p is not None and p.op_type == "DequantizeLinear" for p in ins)
            and bool(outs)
            and all(c.op_type == "QuantizeLinear" for c in outs)
        )

    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in XNNPACK_QDQ_OPS and is_qdq_group(node):
            supported.add(id(node))
            for i in node.input:
                p = producer.get(i)
                if p is not None and p.op_type == "DequantizeLinear":
                    supported.add(id(p))
            for o in node.output:
                for c in consumers.get(o, []):
                    supported.add(id(c))
        elif node.op_type in XNNPACK_FLOAT_OPS and not is_qdq_group(node):
            supported.add(id(node))
    for node in graph.node:
        if node.op_type in XNNPACK_FUSABLE:
            p = producer.get(node.input[0]) if node.input else None
            if p is not None and id(p) in supported and p.op_type in XNNPACK_FLOAT_OPS:
                supported.add(id(node))
    # A weight/bias DequantizeLinear whose only consumer XNNPACK took belongs to that group.
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and id(node) not in supported:
            users = [c for o in node.output for c in consumers.get(o, [])]
            if users and all(id(c) in supported and c.op_type in XNNPACK_QDQ_OPS for c in users):
                supported.add(id(node))
    return supported


def _coverage(provider: str, info: Any, source: str, *, compiling: bool) -> EpCoverage:
    return EpCoverage(
        provider=provider,
        nodes=int(info.num_nodes),
        supported_nodes=int(info.num_supported_nodes),
        partitions=int(info.num_partitions),
        partition_sizes=tuple(len(g) for g in info.supported_groups),
        unsupported_ops=tuple(sorted(info.unsupported_ops)),
        nodes_unsupported_due_to_op=int(info.nodes_unsupported_due_to_op),
        nodes_unsupported_due_to_dynamic_shape=int(info.nodes_unsupported_due_to_dynamic_input),
        suitability=info.suitability().name.lower() if compiling else None,
        caveats=tuple(info.supported_ops_checker.get_caveats()),
        source=source,
    )


def check_mobile_usability(model_path: str | os.PathLike[str]) -> MobileUsability:
    """ONNX Runtime's mobile-usability analysis of the model at ``model_path``: NNAPI and XNNPACK coverage.

    As ``check_onnx_model_mobile_usability`` does, the model is first optimised at ONNX Runtime's basic level
    (what a mobile session does before partitioning) and shape-inferred.
    """
    try:
        from onnxruntime.tools.mobile_helpers import usability_checker as uc
        from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model
    except ImportError as e:  # the helpers moved between onnxruntime releases
        raise ModelError(
            f"this onnxruntime has no mobile usability checker ({e}); install onnxruntime>=1.18"
        ) from None
    src = Path(model_path)
    if not src.is_file():
        raise ModelError(f"{src}: model file not found")
    quiet = logging.getLogger("edgeq.ort_mobile.usability")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    with tempfile.TemporaryDirectory(prefix="edgeq-usability-") as tmp:
        optimized = Path(tmp) / "model.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                optimize_model(src, optimized, use_external_initializers=True)
                model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        except Exception as e:
            raise ModelError(
                f"{src}: onnxruntime cannot optimise the model for the usability check: "
                f"{str(e).splitlines()[0][:200]}"
            ) from None
        dynamic, n_dynamic = uc.check_shapes(model.graph, quiet)
        nnapi = uc.check_nnapi_partitions(model, require_fixed_input_sizes=True)
        xnn = uc.check_partitioning(model.graph, _NodeSetChecker(_xnnpack_supported(model.graph)), True)
    return MobileUsability(
        model=src.name,
        dynamic_inputs=tuple(v.name for v in dynamic),
        dynamic_values=int(n_dynamic),
        providers=(
            _coverage(
                "NNAPI",
                nnapi,
                "onnxruntime.tools.mobile_helpers.usability_checker (nnapi_supported_ops.md)",
                compiling=True,
            ),
            _coverage(
                "XNNPACK",
                xnn,
                "edgeq estimate: operators registered by onnxruntime's XNNPACK EP",
                compiling=False,
            ),
        ),
    )
