"""Validating a .tflite in LiteRT: against the float ONNX model, and bit for bit against edgeq's reference.

:func:`validate_tflite` runs the float ONNX model (onnxruntime) and the .tflite (LiteRT, or tflite_runtime) on
the same held-out samples and builds the usual :class:`~edgeq.validate.Report` (accuracy, agreement, SQNR,
sizes, latency). Each sample, in the float model's layout, is turned into the .tflite's input by the
permutation and quantization edgeq's writer stored in the file (``edgeq`` metadata: ONNX name, shape,
``perm_from_onnx``), with the scale and zero point of the file's own input tensor; outputs are dequantized
with the output tensor's and transposed back. Given the QDQ model the file was lowered from, the same int8
inputs also go through :func:`edgeq.lower.run`, and how many int8 output elements are bit-identical is
reported.

:func:`validate_android_package` does this for an Android package folder with LiteRT's builtin reference
kernels (the metrics, the bit-exactness) and, on the same inputs, with XNNPACK, LiteRT's default CPU path on a
phone, whose drift from the reference kernels is reported apart, in LSB.

Bit-exactness and drift are :class:`Exactness` values, stored in ``Report.notes`` as one line each
(``[reference-interpreter] output 'logits' (reference kernels): 3600 of 3600 int8 elements equal …``) so
that a report.json read back still has them: :meth:`Exactness.from_report`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeq import onnxutil
from edgeq._compat import StrEnum
from edgeq.errors import ConfigError, DataError, ModelError, UnsupportedError
from edgeq.lower.program import Program, QParams, dequantize, quantize
from edgeq.progress import track
from edgeq.validate.compare import as_labels, check_labels
from edgeq.validate.latency import percentile_ms
from edgeq.validate.metrics import OutputAccumulator, OutputMetrics
from edgeq.validate.report import Environment, Latency, ModelStats, Report
from edgeq.validate.thresholds import Thresholds

NO_THRESHOLDS = Thresholds()
TFLITE_FILE = "model.tflite"
FLOAT_FILE = "float.onnx"
QDQ_FILE = "model.int8.onnx"  # where edgeq's other packages keep the QDQ model; an Android package may add it
_NCHW_TO_NHWC = (0, 2, 3, 1)


class InterpreterKind(StrEnum):
    """The Python package whose TFLite interpreter runs the .tflite (both have the same Interpreter API)."""

    LITERT = "litert"  # ai_edge_litert, works with numpy 2
    TFLITE_RUNTIME = "tflite-runtime"  # tflite_runtime, the predecessor (last release 2.14, needs numpy<2)


class Delegate(StrEnum):
    """Which kernels run the .tflite."""

    # OpResolverType.BUILTIN_REF: TFLite's reference kernels, the arithmetic edgeq's reference reproduces.
    REFERENCE = "reference"
    # The default resolver: builtin optimized kernels plus the XNNPACK delegate, a phone's CPU path.
    XNNPACK = "xnnpack"


class Check(StrEnum):
    """What an :class:`Exactness` compares."""

    # The .tflite in the interpreter vs edgeq's reference interpreter on the lowered QDQ model.
    REFERENCE_INTERPRETER = "reference-interpreter"
    # LiteRT with XNNPACK vs LiteRT with its builtin reference kernels, on the same int8 inputs.
    XNNPACK_DRIFT = "xnnpack-drift"


_CHECK_TEXT = {
    Check.REFERENCE_INTERPRETER: "the .tflite vs edgeq's reference interpreter on the QDQ model",
    Check.XNNPACK_DRIFT: "LiteRT with XNNPACK vs LiteRT's builtin reference kernels",
}
_NOTE = re.compile(
    r"^\[(?P<check>[a-z-]+)\] output '(?P<output>.*)' \((?P<delegate>[a-z]+) kernels\): "
    r"(?P<equal>\d+) of (?P<elements>\d+) int8 elements "
    r"equal \([^)]*\), max \|diff\| (?P<max>\d+) LSB, \|diff\| counts (?P<counts>[\d: ]*) over "
    r"(?P<samples>\d+) samples"
)


@dataclass(frozen=True)
class Exactness:
    """Element-by-element agreement of one int8 output with another computation of it, over all samples.

    ``delegate``: the kernels that ran the .tflite being checked (XNNPACK for the drift).
    ``diff_counts``: ``(|diff| in LSB, number of elements)`` for every difference that occurred, ascending.
    """

    check: Check
    output: str
    delegate: Delegate
    samples: int
    elements: int
    equal: int
    max_diff_lsb: int
    diff_counts: tuple[tuple[int, int], ...]

    @property
    def exact_pct(self) -> float:
        """Percent of elements that are bit-identical (100 when there are none)."""
        return 100.0 * self.equal / self.elements if self.elements else 100.0

    def note(self) -> str:
        """The one-line Report note that :meth:`parse` reads back."""
        counts = " ".join(f"{d}:{c}" for d, c in self.diff_counts)
        return (
            f"[{self.check}] output '{self.output}' ({self.delegate} kernels): {self.equal} of "
            f"{self.elements} int8 elements equal ({self.exact_pct:.4f} %), max |diff| {self.max_diff_lsb} "
            f"LSB, |diff| counts {counts} over {self.samples} samples; {_CHECK_TEXT[self.check]}"
        )

    @classmethod
    def parse(cls, note: str) -> Exactness | None:
        """The Exactness a note written by :meth:`note` holds, or None for any other note."""
        m = _NOTE.match(note)
        if m is None or m["check"] not in set(Check) or m["delegate"] not in set(Delegate):
            return None
        counts = tuple(tuple(int(v) for v in pair.split(":")) for pair in m["counts"].split())
        return cls(
            check=Check(m["check"]),
            output=m["output"],
            delegate=Delegate(m["delegate"]),
            samples=int(m["samples"]),
            elements=int(m["elements"]),
            equal=int(m["equal"]),
            max_diff_lsb=int(m["max"]),
            diff_counts=counts,  # type: ignore[arg-type]
        )

    @classmethod
    def from_report(cls, report: Report, check: Check | str | None = None) -> tuple[Exactness, ...]:
        """Every Exactness in ``report``'s notes (only those of ``check`` when given), in note order."""
        found = (e for e in map(cls.parse, report.notes) if e is not None)
        return tuple(e for e in found if check is None or e.check == Check(check))


class _DiffCounter:
    """Running |a − b| histogram of two int8 computations of one output."""

    def __init__(self, check: Check, output: str, delegate: Delegate) -> None:
        self.check, self.output, self.delegate = check, output, delegate
        self.counts = np.zeros(1, dtype=np.int64)
        self.samples = 0

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        d = np.abs(a.astype(np.int64) - b.astype(np.int64)).ravel()
        c = np.bincount(d, minlength=self.counts.size)
        if c.size > self.counts.size:
            c[: self.counts.size] += self.counts
            self.counts = c
        else:
            self.counts += c
        self.samples += 1

    def result(self) -> Exactness:
        nz = np.flatnonzero(self.counts)
        return Exactness(
            check=self.check,
            output=self.output,
            delegate=self.delegate,
            samples=self.samples,
            elements=int(self.counts.sum()),
            equal=int(self.counts[0]),
            max_diff_lsb=int(nz[-1]) if nz.size else 0,
            diff_counts=tuple((int(d), int(self.counts[d])) for d in nz),
        )


# ---- the interpreter ---------------------------------------------------------------------------------------


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def _interpreter_module(kind: InterpreterKind) -> tuple[Any, str]:
    if kind is InterpreterKind.LITERT:
        try:
            from ai_edge_litert import interpreter as module
        except Exception as e:  # ImportError, or a broken install failing inside its import
            raise UnsupportedError(
                f"interpreter 'litert': ai_edge_litert cannot be imported ({type(e).__name__}: "
                f"{str(e)[:200]}); pip install ai-edge-litert"
            ) from None
        return module, f"litert {_version('ai-edge-litert')}"
    try:
        from tflite_runtime import interpreter as module
    except Exception as e:  # not installed, or built against numpy 1 and failing on numpy 2
        raise UnsupportedError(
            f"interpreter 'tflite-runtime': tflite_runtime cannot be imported here ({type(e).__name__}: "
            f"{str(e)[:200]}); its last release (2.14) needs numpy<2: install it in such an environment, "
            "or use interpreter='litert' (its successor, the same kernels)"
        ) from None
    return module, f"tflite-runtime {_version('tflite-runtime')}"


class _Tflite:
    """One interpreter on one .tflite with one thread, fed arrays in the file's own layout and dtypes."""

    def __init__(self, data: bytes, *, kind: InterpreterKind, delegate: Delegate, where: str) -> None:
        module, self.runtime = _interpreter_module(kind)
        resolvers = getattr(module, "OpResolverType", None)
        if resolvers is None:
            raise UnsupportedError(
                f"interpreter '{kind}': this version has no OpResolverType, so its kernels cannot be chosen; "
                "upgrade it or use interpreter='litert'"
            )
        resolver = resolvers.BUILTIN_REF if delegate is Delegate.REFERENCE else resolvers.AUTO
        self.where, self.delegate = where, delegate
        try:
            self.it = module.Interpreter(
                model_content=data, num_threads=1, experimental_op_resolver_type=resolver
            )
            self.it.allocate_tensors()
        except Exception as e:  # the interpreter raises ValueError/RuntimeError with its C++ message
            raise ModelError(
                f"{where}: {self.runtime} cannot load the model ({_first_line(e)}); write it again with "
                "edgeq.backends.tflite.write_tflite"
            ) from None
        self.inputs = self.it.get_input_details()
        self.outputs = self.it.get_output_details()

    def run(self, arrays: Sequence[np.ndarray], *, sample: int) -> list[np.ndarray]:
        try:
            for d, a in zip(self.inputs, arrays, strict=True):
                self.it.set_tensor(d["index"], a)
            self.it.invoke()
        except Exception as e:
            raise ModelError(
                f"sample {sample}: {self.runtime} ({self.delegate}) failed to run {self.where}: "
                f"{_first_line(e)}"
            ) from None
        return [self.it.get_tensor(d["index"]) for d in self.outputs]  # get_tensor copies

    @property
    def kernels(self) -> str:
        return "builtin reference kernels" if self.delegate is Delegate.REFERENCE else "XNNPACK delegate"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ---- I/O bindings: .tflite tensors ↔ float ONNX tensors ---------------------------------------------------


@dataclass(frozen=True)
class _Port:
    """One .tflite input or output and the float ONNX tensor it stands for.

    ``tflite_array = np.transpose(onnx_array, perm)``. ``qparams``: the int8 quantization, of the file's own
    tensor for int8 I/O or, for float I/O, of the int8 tensor behind its QUANTIZE/DEQUANTIZE (metadata).
    """

    onnx_name: str
    tensor: str  # the program tensor edgeq's writer made it from (metadata), else the .tflite tensor name
    shape: tuple[int, ...]
    dtype: np.dtype
    perm: tuple[int, ...]
    qparams: QParams | None

    @property
    def int_io(self) -> bool:
        return self.dtype.kind in "iu"


def _detail_qparams(d: Mapping[str, Any], where: str) -> QParams | None:
    q = d.get("quantization_parameters") or {}
    scales, zps = np.asarray(q.get("scales", ())), np.asarray(q.get("zero_points", ()))
    if scales.size == 0:
        return None
    if scales.size != 1:
        raise UnsupportedError(
            f"{where}: tensor '{d['name']}' is quantized per channel ({scales.size} scales); model inputs "
            "and outputs must be quantized per tensor"
        )
    return QParams.per_tensor(float(scales[0]), int(zps[0]))


def _edgeq_metadata(data: bytes, where: str) -> dict[str, Any] | None:
    from edgeq.backends.tflite import describe

    try:
        raw = describe(data).metadata.get("edgeq")
    except ModelError as e:
        raise ModelError(f"{where}: {e}") from None
    if raw is None:
        return None
    try:
        meta = json.loads(raw.decode("utf-8"))
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), list) for k in ("inputs", "outputs")
        ):
            raise ValueError("no inputs/outputs lists")
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{where}: the edgeq metadata is damaged ({e}); write the .tflite again") from None
    return meta


def _infer_perm(onnx_shape: Sequence[int], shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Identity when the shapes agree, NCHW → NHWC when that explains them, else None."""
    onnx_shape = tuple(int(d) for d in onnx_shape)
    if not onnx_shape:  # rank unknown to the ONNX model: the first sample's shapes are checked instead
        return tuple(range(len(shape)))
    if len(onnx_shape) != len(shape):
        return None
    if all(a in (b, -1, 0) for a, b in zip(onnx_shape, shape, strict=True)):
        return tuple(range(len(shape)))
    if len(shape) == 4 and tuple(onnx_shape[i] for i in _NCHW_TO_NHWC) == shape:
        return _NCHW_TO_NHWC
    return None


def _ports(
    details: Sequence[Mapping[str, Any]],
    specs: Sequence[onnxutil.TensorSpec],
    meta: dict[str, Any] | None,
    *,
    role: str,
    where: str,
) -> list[_Port]:
    """Bind each .tflite input (``role`` "input") or output to the float model's tensor of the same name."""
    by_name = {s.name: s for s in specs}
    ports: list[_Port] = []
    entries = meta[f"{role}s"] if meta is not None else None
    if entries is not None and len(entries) != len(details):
        raise ModelError(
            f"{where}: the edgeq metadata lists {len(entries)} {role}s but the model has {len(details)}; "
            "the file was edited: write it again"
        )
    for i, d in enumerate(details):
        shape = tuple(int(x) for x in d["shape"])
        qp = _detail_qparams(d, where)
        if entries is not None:
            e = entries[i]
            onnx_name = str(e.get("onnx_name", e.get("tensor")))
            perm = tuple(int(p) for p in e.get("perm_from_onnx", range(len(shape))))
            if tuple(e.get("shape", ())) != shape or sorted(perm) != list(range(len(shape))):
                raise ModelError(
                    f"{where}: {role} '{d['name']}' has shape {list(shape)} but the edgeq metadata says "
                    f"{e.get('shape')} (perm {list(perm)}); the file was edited: write it again"
                )
            mq = e.get("quantization")
            meta_qp = QParams.per_tensor(mq["scale"], mq["zero_point"]) if mq else None
            if qp is None:
                qp = meta_qp  # float I/O: the int8 tensor behind the QUANTIZE / DEQUANTIZE
            elif meta_qp is not None and not qp.same_as(meta_qp):
                raise ModelError(
                    f"{where}: {role} '{d['name']}' is quantized with scale {qp.scale[0]:.9g}, zero point "
                    f"{qp.zero_point[0]} but the edgeq metadata says {meta_qp.scale[0]:.9g}, "
                    f"{meta_qp.zero_point[0]}; the file was edited: write it again"
                )
            tensor = str(e.get("tensor", d["name"]))
        else:
            # Not written by edgeq: pair by tensor name, or a lone input/output with the lone ONNX one.
            onnx_name = d["name"] if d["name"] in by_name else None
            if onnx_name is None and len(details) == 1 and len(specs) == 1:
                onnx_name = specs[0].name
            if onnx_name is None:
                raise ModelError(
                    f"{where}: {role} '{d['name']}' matches no {role} of the float model "
                    f"({', '.join(by_name)}) and the file has no edgeq metadata to say which it is; "
                    "write the .tflite with edgeq"
                )
            perm = _infer_perm(by_name[onnx_name].shape, shape)
            if perm is None:
                raise ModelError(
                    f"{where}: {role} '{d['name']}' has shape {list(shape)}, which is neither the float "
                    f"model's {list(by_name[onnx_name].shape)} nor its NHWC transpose; write the .tflite "
                    "with edgeq, whose metadata records the layout"
                )
            tensor = str(d["name"])
        if onnx_name not in by_name:
            raise ModelError(
                f"{where}: {role} '{onnx_name}' of the .tflite is not an {role} of the float model "
                f"({', '.join(by_name)}); pass the float model it was made from"
            )
        onnx_shape = tuple(int(x) for x in by_name[onnx_name].shape)
        # tflite dim k is ONNX dim perm[k]; a free ONNX dim (-1/0) matches any size; an unknown rank, anything
        # (the first sample's output shapes are checked against the float model's then).
        if (onnx_shape and len(onnx_shape) != len(shape)) or not all(
            a in (-1, 0) or a == shape[perm.index(j)] for j, a in enumerate(onnx_shape)
        ):
            raise ModelError(
                f"{where}: {role} '{onnx_name}' is {list(onnx_shape)} in the float model but "
                f"{list(shape)} (perm {list(perm)}) in the .tflite; pass the float model it was made from"
            )
        ports.append(_Port(onnx_name, tensor, shape, np.dtype(d["dtype"]), perm, qp))
    names = {p.onnx_name for p in ports}
    missing = [s.name for s in specs if s.name not in names]
    if missing:
        raise ModelError(
            f"{where}: the float model's {role}(s) {', '.join(missing)} are not {role}s of the .tflite; "
            "pass the float model it was made from"
        )
    return ports


def _quantize_tflite(x: np.ndarray, qp: QParams) -> np.ndarray:
    """What TFLite's reference QUANTIZE computes: float32 ``x / scale``, rounded half away from zero."""
    v = (np.asarray(x, dtype=np.float32) / np.float32(qp.scale[0])).astype(np.float64)
    q = np.trunc(v + np.copysign(0.5, v)) + qp.zero_point[0]
    return np.clip(q, -128, 127).astype(np.int8)


def _to_tflite(x: np.ndarray, port: _Port) -> np.ndarray:
    """A float sample in the ONNX layout → the .tflite input (transposed; quantized for int8 I/O).

    Rounds half to even as ONNX QuantizeLinear does, so the .tflite sees the int8 input the QDQ model sees.
    """
    x = np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), port.perm))
    if not port.int_io:
        return x.astype(port.dtype, copy=False)
    if port.qparams is None:
        raise UnsupportedError(
            f"input '{port.onnx_name}': the .tflite input is {port.dtype} without quantization parameters; "
            "edgeq cannot turn float samples into it"
        )
    return np.ascontiguousarray(quantize(x, port.qparams, port.dtype.name))


def _reference_input(x: np.ndarray, port: _Port) -> np.ndarray:
    """The int8 tensor the .tflite computes on: the input itself, or with float I/O its QUANTIZE's result."""
    return x if port.int_io else _quantize_tflite(x, port.qparams)


def _real(y: np.ndarray, port: _Port) -> np.ndarray:
    """A .tflite output → float32 in the ONNX layout."""
    if port.int_io and port.qparams is not None:
        y = dequantize(y, port.qparams)
    return np.transpose(np.asarray(y, dtype=np.float32), np.argsort(port.perm))


def _int8(y: np.ndarray, port: _Port) -> np.ndarray:
    """The int8 values of a .tflite output: as they are, or recovered from a float output's DEQUANTIZE."""
    if port.int_io:
        return y
    # y = scale·(q − zp) to float32 precision: y/scale is within 2e-5 of the integer q − zp (|q − zp| < 256).
    q = np.rint(y.astype(np.float64) / port.qparams.scale[0]) + port.qparams.zero_point[0]
    return q.astype(np.int64)


def _reference_names(program: Program, ports: Sequence[_Port], *, role: str, where: str) -> list[str]:
    """The program tensor behind each port; ModelError unless the program matches the .tflite's I/O."""
    names = program.inputs if role == "input" else program.outputs
    out = []
    for port in ports:
        name = next(
            (n for n in names if (b := program.binding(n)) is not None and b.onnx_name == port.onnx_name),
            port.tensor if port.tensor in names else None,
        )
        if name is None:
            raise ModelError(
                f"{where}: {role} '{port.onnx_name}' of the .tflite is not a program {role} of the QDQ "
                f"model ({', '.join(names)}); pass the QDQ model the .tflite was lowered from"
            )
        t = program.tensors[name]
        if t.shape != port.shape or t.qparams is None or port.qparams is None:
            same = False
        else:
            same = t.qparams.same_as(port.qparams)
        if not same:

            def q(p: QParams | None) -> str:
                return "unquantized" if p is None else f"scale {p.scale[0]:.9g} zero point {p.zero_point[0]}"

            raise ModelError(
                f"{where}: {role} '{port.onnx_name}' is {list(t.shape)} {q(t.qparams)} in the QDQ model but "
                f"{list(port.shape)} {q(port.qparams)} in the .tflite; pass the QDQ model the .tflite was "
                "lowered from"
            )
        out.append(name)
    return out


# ---- latency -----------------------------------------------------------------------------------------------


def _time(calls: Sequence[Callable[[], object]], *, runs: int) -> list[Latency]:
    """Median and p90 of single calls, each timed in turn run after run so drift in clock or load hits all."""
    for _ in range(max(3, runs // 10)):
        for call in calls:
            call()
    times: list[list[int]] = [[] for _ in calls]
    for _ in range(runs):
        for call, t in zip(calls, times, strict=True):
            start = time.perf_counter_ns()
            call()
            t.append(time.perf_counter_ns() - start)
    return [Latency(median_ms=percentile_ms(t, 50), p90_ms=percentile_ms(t, 90), runs=runs) for t in times]


# ---- the validation ----------------------------------------------------------------------------------------


def _read_tflite(tflite: str | os.PathLike[str] | bytes | bytearray | memoryview) -> tuple[bytes, str | None]:
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        return bytes(tflite), None
    path = Path(tflite)
    if not path.is_file():
        raise ModelError(f"{path}: .tflite file not found")
    return path.read_bytes(), str(path)


def _float_size(
    model: str | os.PathLike[str] | onnx.ModelProto, proto: onnx.ModelProto
) -> tuple[str | None, int]:
    if isinstance(model, onnx.ModelProto):
        return None, len(onnxutil.serialize(proto))
    return str(model), os.path.getsize(model)


def _check_positive(name: str, value: int | None, *, zero: bool = False) -> None:
    low = 0 if zero else 1
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise ConfigError(f"{name}={value!r}: expected an integer ≥ {low}{'' if zero else ' or None'}")


def _enum(cls: type[StrEnum], value: object, option: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(
            f"{option}={value!r}: not one of {', '.join(repr(v.value) for v in cls)}"  # type: ignore[attr-defined]
        ) from None


def _load_program(qdq_model: object) -> tuple[Program, str]:
    if isinstance(qdq_model, Program):
        return qdq_model, "the given program"
    from edgeq.lower import lower

    where = "the QDQ model" if isinstance(qdq_model, onnx.ModelProto) else str(qdq_model)
    return lower(qdq_model), where


def _metrics_note(prefix: str, m: OutputMetrics) -> str:
    parts = []
    if m.classifier:
        parts.append(f"top-1 agreement with float {m.agreement_pct:.2f} % ({m.agree}/{m.predictions})")
        if m.quant_accuracy_pct is not None:
            parts.append(f"accuracy {m.quant_accuracy_pct:.2f} %")
    parts.append(f"SQNR {m.sqnr_db:.2f} dB")
    steps = f" ({m.max_abs_error_steps:.2f} LSB)" if m.max_abs_error_steps is not None else ""
    parts.append(f"max |error| {m.max_abs_error:.6g}{steps}")
    return f"{prefix}, output '{m.name}': " + ", ".join(parts)


def _inputs_note(ports: Sequence[_Port], *, from_metadata: bool) -> str:
    """How float samples became the .tflite's inputs."""
    parts = []
    for p in ports:
        how = (
            f", quantized with the .tflite input's scale {p.qparams.scale[0]:.9g} and zero point "
            f"{p.qparams.zero_point[0]} (round half to even, as ONNX QuantizeLinear)"
            if p.int_io
            else " (float32: the .tflite quantizes it)"
        )
        parts.append(f"'{p.onnx_name}' transposed by {list(p.perm)}{how}")
    source = (
        "per the edgeq metadata" if from_metadata else "inferred from shapes and names (no edgeq metadata)"
    )
    return f"inputs: {'; '.join(parts)} {source}"


def _validate(
    data_bytes: bytes,
    tflite_path: str | None,
    *,
    float_model: str | os.PathLike[str] | onnx.ModelProto,
    data: object,
    labels: Any,
    qdq_model: object,
    thresholds: Thresholds,
    num_samples: int | None,
    interpreter: InterpreterKind,
    delegate: Delegate,
    drift: bool,
    progress: bool | None,
    latency_runs: int,
    reference_samples: int | None,
    extra_notes: Sequence[str] = (),
    no_reference_note: str = (
        "bit-exactness not checked: pass qdq_model (the QDQ model the .tflite was lowered from) to "
        "compare with edgeq's reference interpreter"
    ),
) -> Report:
    from edgeq.data import open_samples  # lazily: edgeq.data pulls in image decoding

    where = tflite_path or "the .tflite"
    fm = onnxutil.load_model(float_model)
    meta = _edgeq_metadata(data_bytes, where)  # first: it says clearly when the file is no .tflite at all
    main = _Tflite(data_bytes, kind=interpreter, delegate=delegate, where=where)
    # Drift is measured against the reference kernels, so the main interpreter must be those.
    xnn = _Tflite(data_bytes, kind=interpreter, delegate=Delegate.XNNPACK, where=where) if drift else None
    f_inputs, f_outputs = onnxutil.input_specs(fm), onnxutil.output_specs(fm)
    in_ports = _ports(main.inputs, f_inputs, meta, role="input", where=where)
    out_ports = _ports(main.outputs, f_outputs, meta, role="output", where=where)
    out_names = [s.name for s in f_outputs]
    # Report order: the float model's outputs; position of each in the .tflite's outputs.
    order = [next(i for i, p in enumerate(out_ports) if p.onnx_name == name) for name in out_names]

    program = ref_in = ref_out = None
    notes = [
        f"int8: {tflite_path or '.tflite bytes'} in {main.runtime} with the {main.kernels}, 1 thread; "
        f"float: onnxruntime, 1 thread",
        _inputs_note(in_ports, from_metadata=meta is not None),
        *extra_notes,
    ]
    if qdq_model is not None:
        program, qdq_where = _load_program(qdq_model)
        ref_in = _reference_names(program, in_ports, role="input", where=qdq_where)
        ref_out = _reference_names(program, out_ports, role="output", where=qdq_where)
    f_sess = onnxutil.ort_session(fm, threads=1)

    samples = open_samples(data, inputs=f_inputs, limit=num_samples)
    try:
        total: int | None = len(samples)
    except TypeError:  # a generator: the count is known at the end
        total = None
    lab = as_labels(labels)
    accs: list[OutputAccumulator] = []
    xnn_accs: list[OutputAccumulator] = []
    exact = [_DiffCounter(Check.REFERENCE_INTERPRETER, p.onnx_name, delegate) for p in out_ports]
    drifts = [_DiffCounter(Check.XNNPACK_DRIFT, p.onnx_name, Delegate.XNNPACK) for p in out_ports]
    first: tuple[dict[str, np.ndarray], list[np.ndarray]] | None = None
    n = 0
    for feed in track(samples, description="validating .tflite", total=total, show=progress):
        try:
            fo = f_sess.run(out_names, feed)
        except Exception as e:  # onnxruntime raises its own exception types
            raise DataError(
                f"sample {n}: onnxruntime failed to run the float model: {_first_line(e)}"
            ) from None
        xs = [_to_tflite(feed[p.onnx_name], p) for p in in_ports]
        ys = main.run(xs, sample=n)
        if first is None:
            first = ({k: np.array(v) for k, v in feed.items()}, xs)
            for name, i, f in zip(out_names, order, fo, strict=True):
                real = _real(ys[i], out_ports[i])
                if real.shape != f.shape:
                    raise ModelError(
                        f"{where}: output '{name}' gives shape {list(real.shape)} (in the ONNX layout) but "
                        f"the float model {list(f.shape)}; pass the float model it was made from"
                    )
                step = out_ports[i].qparams.scale[0] if out_ports[i].qparams is not None else None
                accs.append(OutputAccumulator(name, f.shape, step=step))
                xnn_accs.append(OutputAccumulator(name, f.shape, step=step))
            if lab is not None:
                if num_samples is not None:  # labels belong to the whole data source; a limit takes its head
                    lab = lab[: num_samples * max(a.rows_per_sample for a in accs)]
                check_labels(lab, accs, total)
        yx = xnn.run(xs, sample=n) if xnn is not None else None
        for acc, xacc, i, f in zip(accs, xnn_accs, order, fo, strict=True):
            rows = acc.rows_per_sample
            sample_labels = None
            if lab is not None and rows:
                sample_labels = lab[n * rows : (n + 1) * rows]
                if sample_labels.size < rows:
                    raise DataError(
                        f"labels: {lab.size} labels but the data has more than {n} samples; "
                        "give exactly one label per sample"
                    )
            acc.update(f, _real(ys[i], out_ports[i]), labels=sample_labels)
            if yx is not None:
                xacc.update(f, _real(yx[i], out_ports[i]), labels=sample_labels)
                drifts[i].update(_int8(yx[i], out_ports[i]), _int8(ys[i], out_ports[i]))
        if program is not None and (reference_samples is None or n < reference_samples):
            from edgeq.lower.reference import run

            feed_q = {name: _reference_input(x, p) for name, x, p in zip(ref_in, xs, in_ports, strict=True)}
            want = run(program, feed_q, fc_rescale="double")  # BUILTIN_REF's FULLY_CONNECTED arithmetic
            for i, p in enumerate(out_ports):
                exact[i].update(_int8(ys[i], p), want[ref_out[i]])
        n += 1
    if n == 0:
        raise DataError("the validation data holds no samples; give at least one")
    if lab is not None:
        check_labels(lab, accs, n)

    if program is not None:
        notes += [exact[i].result().note() for i in order]
    else:
        notes.append(no_reference_note)
    if xnn is not None:
        notes += [drifts[i].result().note() for i in order]
        notes += [_metrics_note("XNNPACK", a.result(labelled=lab is not None)) for a in xnn_accs]

    f_lat = q_lat = None
    if latency_runs:
        timed = xnn if xnn is not None else main
        feed0, xs0 = first
        f_lat, q_lat = _time(
            [lambda: f_sess.run(None, feed0), lambda: timed.run(xs0, sample=0)], runs=latency_runs
        )
        notes.append(
            f"latency: batch 1, 1 thread, median of {latency_runs} runs after warm-up, the two models timed "
            f"alternately; int8 with the {timed.kernels}"
        )
    f_path, f_size = _float_size(float_model, fm)
    runtime = f"{main.runtime} ({main.kernels})"
    if latency_runs and xnn is not None:
        runtime = f"{main.runtime} ({main.kernels}; latency with the {xnn.kernels})"
    return Report(
        outputs=tuple(a.result(labelled=lab is not None) for a in accs),
        float_model=ModelStats(path=f_path, size_bytes=f_size, latency=f_lat),
        quant_model=ModelStats(path=tflite_path, size_bytes=len(data_bytes), latency=q_lat),
        environment=dataclasses.replace(Environment.host(), device="local", runtime=runtime),
        thresholds=thresholds,
        notes=tuple(notes),
    )


def validate_tflite(
    tflite: str | os.PathLike[str] | bytes,
    *,
    float_model: str | os.PathLike[str] | onnx.ModelProto,
    data: object,
    labels: np.ndarray | Sequence[int] | str | os.PathLike[str] | None = None,
    qdq_model: str | os.PathLike[str] | onnx.ModelProto | Program | None = None,
    thresholds: Thresholds = NO_THRESHOLDS,
    num_samples: int | None = None,
    interpreter: InterpreterKind | str = InterpreterKind.LITERT,
    delegate: Delegate | str = Delegate.REFERENCE,
    progress: bool | None = None,
    latency_runs: int = 50,
    reference_samples: int | None = None,
) -> Report:
    """Validate a .tflite (a path or its bytes) against its float ONNX model on ``data``, here.

    ``data``: anything :func:`edgeq.data.open_samples` accepts for the float model's inputs (a .npy/.npz, an
    array, an iterable of {input name: array}); ``labels`` one class per sample (array or file).
    ``num_samples``: the first samples only. Each sample runs in onnxruntime (float) and, converted to the
    .tflite's layout and int8 as the file's edgeq metadata and input quantization say, in ``interpreter``
    (``litert``: ai_edge_litert; ``tflite-runtime``: tflite_runtime, when installed) with ``delegate``
    (``reference``: TFLite's builtin reference kernels; ``xnnpack``: the default resolver with XNNPACK).

    ``qdq_model``: the QDQ model the .tflite was lowered from (or its lowered :class:`Program`): the same
    int8 inputs also run in :func:`edgeq.lower.run` (on the first ``reference_samples`` samples, default all)
    and the notes say, per output, how many int8 elements are bit-identical and the largest difference in
    LSB (see :class:`Exactness`). ``latency_runs``: single-threaded batch-1 runs of each model, timed
    alternately after warm-up (0: no timing). The Report's JSON is identical between reruns except latency.
    """
    data_bytes, path = _read_tflite(tflite)
    _check_positive("num_samples", num_samples)
    _check_positive("reference_samples", reference_samples)
    _check_positive("latency_runs", latency_runs, zero=True)
    return _validate(
        data_bytes,
        path,
        float_model=float_model,
        data=data,
        labels=labels,
        qdq_model=qdq_model,
        thresholds=thresholds,
        num_samples=num_samples,
        interpreter=_enum(InterpreterKind, interpreter, "interpreter"),
        delegate=_enum(Delegate, delegate, "delegate"),
        drift=False,
        progress=progress,
        latency_runs=latency_runs,
        reference_samples=reference_samples,
    )


def _plain_name(value: object) -> str | None:
    """A file name that stays inside the package folder, or None (metadata is untrusted input)."""
    if not isinstance(value, str) or not value or value in (".", "..") or Path(value).name != value:
        return None
    return value if "\\" not in value else None


def _find_qdq(folder: Path, manifest: Mapping[str, Any]) -> Path | None:
    """The QDQ model in an Android package, if someone put it there: the manifest's int8 model, the file
    metadata.json names as the source model, or model.int8.onnx."""
    candidates: list[object] = [(manifest.get("models") or {}).get("int8", {}).get("file")]
    meta = folder / "metadata.json"
    if meta.is_file():
        try:
            candidates.append(json.loads(meta.read_text(encoding="utf-8")).get("source_model"))
        except (OSError, ValueError, AttributeError):
            pass  # a damaged metadata.json names no QDQ model; the validation itself does not need it
    candidates.append(QDQ_FILE)
    for c in candidates:
        name = _plain_name(c)
        if name and name.endswith(".onnx") and name != FLOAT_FILE and (folder / name).is_file():
            return folder / name
    return None


def validate_android_package(
    folder: str | os.PathLike[str],
    *,
    data: object,
    labels: np.ndarray | Sequence[int] | str | os.PathLike[str] | None = None,
    thresholds: Thresholds = NO_THRESHOLDS,
    num_samples: int | None = None,
    progress: bool | None = None,
    latency_runs: int = 50,
    reference_samples: int | None = None,
) -> Report:
    """Validate an Android package folder's model.tflite against its float.onnx, here, in LiteRT.

    The metrics come from LiteRT's builtin reference kernels; the same int8 inputs also run with XNNPACK (what
    a phone's CPU path runs), whose difference from the reference kernels is reported apart, in LSB, with its
    own agreement and SQNR against float, and whose latency is the int8 latency reported. When the folder
    also holds the QDQ model (the manifest's int8 model, metadata.json's source model, or model.int8.onnx)
    the reference kernels are checked bit for bit against edgeq's reference interpreter. A folder with a
    package.json is verified first (sizes and SHA-256 of every file).
    """
    from edgeq.packaging.base import MANIFEST, Package

    root = Path(folder)
    if not root.is_dir():
        raise ModelError(
            f"{root}: package folder not found; create it with `edgeq package --target android-arm64`"
        )
    manifest: Mapping[str, Any] = {}
    if (root / MANIFEST).is_file():
        manifest = Package.load(root, verify=True).manifest
    tflite, float_path = root / TFLITE_FILE, root / FLOAT_FILE
    if not tflite.is_file():
        raise ModelError(
            f"{root}: no {TFLITE_FILE}; package for a target whose runtimes include 'litert' "
            "(e.g. android-arm64)"
        )
    if not float_path.is_file():
        raise ModelError(
            f"{root}: no {FLOAT_FILE} to compare with; package again with the float model "
            "(edgeq package --float FLOAT.onnx)"
        )
    _check_positive("num_samples", num_samples)
    _check_positive("reference_samples", reference_samples)
    _check_positive("latency_runs", latency_runs, zero=True)
    qdq = _find_qdq(root, manifest)
    extra = (
        [f"reference: {qdq.name}, the package's QDQ model, lowered and run by edgeq's reference interpreter"]
        if qdq is not None
        else []
    )
    return _validate(
        tflite.read_bytes(),
        str(tflite),
        float_model=float_path,
        data=data,
        labels=labels,
        qdq_model=qdq,
        thresholds=thresholds,
        num_samples=num_samples,
        interpreter=InterpreterKind.LITERT,
        delegate=Delegate.REFERENCE,
        drift=True,
        progress=progress,
        latency_runs=latency_runs,
        reference_samples=reference_samples,
        extra_notes=extra,
        no_reference_note=(
            f"bit-exactness not checked: the package holds no QDQ model (copy it in as {QDQ_FILE} to compare "
            "with edgeq's reference interpreter)"
        ),
    )


__all__ = [
    "Check",
    "Delegate",
    "Exactness",
    "InterpreterKind",
    "validate_android_package",
    "validate_tflite",
]
