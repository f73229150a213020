"""Reading back a .tflite file's structure: operator codes, signature, metadata (no interpreter needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ai_edge_litert import schema_py_generated as fb

from edgeq.errors import ModelError

_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}


@dataclass(frozen=True)
class TensorSummary:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int


@dataclass(frozen=True)
class TfliteSummary:
    """What a .tflite file declares: schema version, operator codes ``(name, version)`` and I/O tensors."""

    version: int
    operator_codes: tuple[tuple[str, int], ...]
    operators: tuple[str, ...]
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]
    signatures: dict[str, dict[str, tuple[str, ...]]]
    metadata: dict[str, bytes]
    buffers: int


def _load(data: bytes) -> fb.ModelT:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TFLite flatbuffer (file identifier TFL3 missing)")
    try:
        return fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # a corrupt flatbuffer raises anything from struct.error to IndexError
        raise ModelError(f"corrupt TFLite flatbuffer ({type(e).__name__})") from None


def _text(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def _tensor(t: fb.TensorT) -> TensorSummary:
    q = t.quantization
    scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
    zp = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
    return TensorSummary(
        _text(t.name),
        tuple(int(d) for d in (t.shape if t.shape is not None else ())),
        _TYPE_NAMES.get(t.type, str(t.type)),
        scale,
        zp,
        int(q.quantizedDimension) if q else 0,
    )


def describe(data: bytes) -> TfliteSummary:
    """Summarise a .tflite flatbuffer."""
    m = _load(data)
    g = m.subgraphs[0]
    codes = tuple(
        (_OP_NAMES.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?"), int(c.version))
        for c in m.operatorCodes or []
    )
    tensors = g.tensors or []
    signatures = {}
    for s in m.signatureDefs or []:
        signatures[_text(s.signatureKey)] = {
            "inputs": tuple(_text(t.name) for t in s.inputs or []),
            "outputs": tuple(_text(t.name) for t in s.outputs or []),
        }
    metadata = {}
    for entry in m.metadata or []:
        buf = m.buffers[entry.buffer]
        metadata[_text(entry.name)] = bytes(buf.data) if buf.data is not None else b""
    return TfliteSummary(
        version=int(m.version),
        operator_codes=codes,
        operators=tuple(codes[op.opcodeIndex][0] for op in g.operators or []),
        inputs=tuple(_tensor(tensors[i]) for i in g.inputs),
        outputs=tuple(_tensor(tensors[i]) for i in g.outputs),
        signatures=signatures,
        metadata=metadata,
        buffers=len(m.buffers or []),
    )


def read_metadata(data: bytes) -> dict[str, Any]:
    """edgeq's JSON metadata from a .tflite file written by :func:`edgeq.backends.tflite.write_tflite`."""
    raw = describe(data).metadata.get("edgeq")
    if raw is None:
        raise ModelError("the .tflite file has no edgeq metadata (it was not written by edgeq)")
    return json.loads(raw.decode("utf-8"))
