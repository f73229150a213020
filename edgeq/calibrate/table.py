"""The CalibrationTable: per-tensor statistics and chosen ranges of one model, and its JSON file.

File format (version 1)
-----------------------
A UTF-8 JSON object; keys are sorted, one tensor per line, so identical tables give byte-identical files::

    {
     "format": "edgeq-calibration-table",
     "method": {"bins": 2048, "name": "entropy", "percentile": 99.999},
     "model_sha256": "<64 hex digits>",
     "num_samples": 500,
     "tensors": {
      "<tensor name>": {"count":…,"counts":[[0,7,12,…],[40,3]],"e":-9,"max":6.0,"min":0.0,"offset":0,
                        "range":[0.0,5.87]},
      …
     },
     "version": 1,
     "window": 4096
    }

- ``format`` / ``version``: identify the file; a reader refuses other versions.
- ``model_sha256``: sha256 of the model's graph serialized deterministically (:func:`model_fingerprint`);
  the quantizer and :meth:`CalibrationTable.merge` refuse tables of another model.
- ``method``: the calibration method and its parameters, as in a recipe's ``[method]`` table.
- ``num_samples``: how many samples the statistics cover.
- ``window``: the maximum number of histogram bins per tensor (informative; always 4096 in version 1).
- ``tensors``: one entry per float activation tensor (graph inputs included), keyed by tensor name:

  - ``min``, ``max``: the exact extreme values seen (float32 values, written in shortest round-trip form);
  - ``count``: the number of values seen;
  - ``e``, ``offset``: histogram bins have width ``2**e``; value ``x`` is in bin ``floor(x * 2**-e)``;
    the histogram covers bins ``offset`` … ``floor(max * 2**-e)``, where ``offset = floor(min * 2**-e)``;
  - ``counts``: the histogram's counts, sparse: a list of runs ``[start, c0, c1, …]`` meaning bin
    ``offset + start`` holds ``c0`` values, the next ``c1`` …; bins in no run hold 0;
  - ``range``: the chosen ``[lo, hi]`` (contains 0, ``lo < hi``, float32 values). Ranges are read back as
    stored, so a hand-edited range is honoured; :meth:`CalibrationTable.with_method` recomputes them.

The statistics do not depend on the method, the batch size or the order of the samples, and the tables of two
disjoint sets of samples merge into exactly the table of their union (see :mod:`edgeq.calibrate.histogram`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx

from edgeq import fileio
from edgeq.calibrate.histogram import WINDOW, TensorStats, bin_exponent
from edgeq.calibrate.methods import compute_range, method_config
from edgeq.config.recipe import CalibrationMethod, MethodConfig
from edgeq.config.strict import from_dict, to_dict
from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.onnxutil import load_model

FORMAT = "edgeq-calibration-table"
VERSION = 1
_GAP = 3  # zero runs at least this long split the sparse counts; shorter ones are written inline


def model_fingerprint(model: str | os.PathLike[str] | onnx.ModelProto) -> str:
    """sha256 (hex) of the model's graph, serialized deterministically: what a table is tied to."""
    proto = load_model(model)
    return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()


def _encode_counts(counts: np.ndarray) -> list[list[int]]:
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(nz) > _GAP)
    starts = np.concatenate(([nz[0]], nz[breaks + 1]))
    ends = np.concatenate((nz[breaks], [nz[-1]])) + 1
    return [[int(s), *counts[s:e].tolist()] for s, e in zip(starts, ends, strict=True)]


def _decode_counts(runs: Any, length: int, where: str) -> np.ndarray:
    out = np.zeros(length, dtype=np.int64)
    if not isinstance(runs, list):
        raise DataError(f"{where}: 'counts' must be a list of runs [start, c0, c1, …]")
    for run in runs:
        if (
            not isinstance(run, list)
            or len(run) < 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in run)
        ):
            raise DataError(f"{where}: 'counts' has a malformed run; each is [start, c0, c1, …] of integers")
        start, values = run[0], run[1:]
        if start < 0 or start + len(values) > length:
            raise DataError(f"{where}: a 'counts' run lies outside the {length} bins from min to max")
        out[start : start + len(values)] += values
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class CalibrationTable:
    """Statistics and calibrated ranges of every float activation of one model.

    Build one with :func:`edgeq.calibrate.calibrate`; save it with :meth:`save` and read it with :meth:`load`.
    ``stats`` and ``tensor_ranges`` are read-only mappings sorted by tensor name.
    """

    model_sha256: str
    method: MethodConfig
    num_samples: int
    stats: Mapping[str, TensorStats]
    tensor_ranges: Mapping[str, tuple[float, float]] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        stats = {k: self.stats[k] for k in sorted(self.stats)}
        object.__setattr__(self, "stats", MappingProxyType(stats))
        if self.tensor_ranges is None:
            ranges = {k: compute_range(s, self.method) for k, s in stats.items()}
        else:
            ranges = {k: (float(self.tensor_ranges[k][0]), float(self.tensor_ranges[k][1])) for k in stats}
        object.__setattr__(self, "tensor_ranges", MappingProxyType(ranges))

    # ------------------------------------------------------------------------------------------ queries

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Tensor name → calibrated ``(lo, hi)``; every range contains 0 and has ``lo < hi``."""
        return dict(self.tensor_ranges)

    @property
    def tensors(self) -> list[str]:
        """The calibrated tensor names, sorted."""
        return list(self.stats)

    def check_model(self, model: str | os.PathLike[str] | onnx.ModelProto) -> None:
        """Raise ModelError unless this table was calibrated on ``model``."""
        fingerprint = model_fingerprint(model)
        if fingerprint != self.model_sha256:
            raise ModelError(
                f"the calibration table belongs to another model (graph sha256 "
                f"{self.model_sha256[:12]}…, this model {fingerprint[:12]}…); re-run edgeq calibrate "
                "on this model"
            )

    # --------------------------------------------------------------------------------------- derivation

    def with_method(self, method: MethodConfig | CalibrationMethod | str) -> CalibrationTable:
        """The same statistics with ranges recomputed by ``method`` (a bare name keeps percentile/bins)."""
        config = method_config(method, base=self.method)
        return CalibrationTable(self.model_sha256, config, self.num_samples, self.stats)

    def merge(self, other: CalibrationTable) -> CalibrationTable:
        """The table of the union of both tables' samples (exact: equal to calibrating on all of them)."""
        if not isinstance(other, CalibrationTable):
            raise TypeError(f"cannot merge a CalibrationTable with a {type(other).__name__}")
        if other.model_sha256 != self.model_sha256:
            raise DataError(
                f"cannot merge calibration tables of different models (graph sha256 "
                f"{self.model_sha256[:12]}… and {other.model_sha256[:12]}…); calibrate every shard "
                "on the same model file"
            )
        if other.method != self.method:
            raise DataError(
                f"cannot merge calibration tables with different methods ({_describe(self.method)} "
                f"and {_describe(other.method)}); call .with_method(...) on one of them first"
            )
        if set(other.stats) != set(self.stats):
            diff = sorted(set(other.stats) ^ set(self.stats))
            raise DataError(
                f"cannot merge calibration tables over different tensors (e.g. '{diff[0]}'); "
                "they were not made from the same model"
            )
        stats = {k: self.stats[k].merge(other.stats[k]) for k in self.stats}
        return CalibrationTable(self.model_sha256, self.method, self.num_samples + other.num_samples, stats)

    @staticmethod
    def merge_all(tables: Iterable[CalibrationTable]) -> CalibrationTable:
        """Merge any number of tables (at least one)."""
        it = iter(tables)
        try:
            out = next(it)
        except StopIteration:
            raise DataError("no calibration tables to merge") from None
        for t in it:
            out = out.merge(t)
        return out

    # --------------------------------------------------------------------------------------------- I/O

    def to_json(self) -> str:
        """The table as the documented JSON text (deterministic)."""
        lines = []
        for name, s in self.stats.items():
            entry = {
                "count": s.count,
                "counts": _encode_counts(s.counts),
                "e": s.e,
                "max": s.max,
                "min": s.min,
                "offset": s.offset,
                "range": list(self.tensor_ranges[name]),
            }
            lines.append(f"  {_dumps(name)}: {_dumps(entry)}")
        tensors = "{\n" + ",\n".join(lines) + "\n }" if lines else "{}"
        top = {
            "format": FORMAT,
            "method": to_dict(self.method),
            "model_sha256": self.model_sha256,
            "num_samples": self.num_samples,
            "tensors": None,
            "version": VERSION,
            "window": WINDOW,
        }
        parts = [f" {_dumps(k)}: {tensors if k == 'tensors' else _dumps(v)}" for k, v in top.items()]
        return "{\n" + ",\n".join(parts) + "\n}\n"

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the table to ``path`` atomically; refuses to overwrite unless ``force``."""
        return fileio.write_text(path, self.to_json(), force=force)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationTable:
        """Read a table written by :meth:`save`, with clear errors for a missing, corrupt or foreign file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{path}: calibration table not found; run edgeq calibrate to make one") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the calibration table ({e})") from None
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_json(cls, text: str, *, source: str = "<calibration table>") -> CalibrationTable:
        """Parse the JSON text of a table (see the module docstring for the format)."""
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except (json.JSONDecodeError, ValueError) as e:
            raise DataError(
                f"{source}: not a calibration table (invalid JSON: {e}); the file is corrupt or "
                "truncated: re-run edgeq calibrate"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(
                f'{source}: not an edgeq calibration table (no "format": "{FORMAT}"); pass a '
                "file written by edgeq calibrate"
            )
        version = data.get("version")
        if version != VERSION:
            raise DataError(
                f"{source}: calibration table format version {version!r} is not supported (this "
                f"edgeq reads version {VERSION}); re-run edgeq calibrate with this edgeq"
            )
        expected = {"format", "method", "model_sha256", "num_samples", "tensors", "version", "window"}
        if set(data) != expected:
            extra = sorted(set(data) ^ expected)
            raise DataError(
                f"{source}: unexpected or missing key '{extra[0]}'; the file is not a version "
                f"{VERSION} calibration table"
            )
        if data["window"] != WINDOW:
            raise DataError(
                f"{source}: histogram window {data['window']!r} is not {WINDOW}; the file is corrupt"
            )
        sha = data["model_sha256"]
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise DataError(f"{source}: 'model_sha256' is not a sha256 hex digest; the file is corrupt")
        n = data["num_samples"]
        if not _is_int(n) or n < 0:
            raise DataError(f"{source}: 'num_samples' must be a non-negative integer")
        if not isinstance(data["method"], dict):
            raise DataError(f"{source}: 'method' must be an object like a recipe's [method] table")
        try:
            method = from_dict(MethodConfig, data["method"], source=source, prefix="method")
        except ConfigError as e:
            raise DataError(str(e)) from None
        tensors = data["tensors"]
        if not isinstance(tensors, dict):
            raise DataError(f"{source}: 'tensors' must be an object keyed by tensor name")
        stats, ranges = {}, {}
        for name, entry in tensors.items():
            stats[name], ranges[name] = _read_entry(entry, f"{source}: tensor '{name}'")
        return cls(sha, method, n, stats, ranges)

    def __repr__(self) -> str:
        return (
            f"CalibrationTable(model_sha256={self.model_sha256[:12]}…, method={_describe(self.method)}, "
            f"num_samples={self.num_samples}, tensors={len(self.stats)})"
        )


def _describe(method: MethodConfig) -> str:
    if method.name is CalibrationMethod.PERCENTILE:
        return f"percentile {method.percentile}"
    if method.name in (CalibrationMethod.ENTROPY, CalibrationMethod.MSE):
        return f"{method.name} over {method.bins} bins"
    return str(method.name)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid number in a calibration table")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_entry(entry: Any, where: str) -> tuple[TensorStats, tuple[float, float]]:
    keys = {"count", "counts", "e", "max", "min", "offset", "range"}
    if not isinstance(entry, dict) or set(entry) != keys:
        raise DataError(f"{where}: entry must have exactly the keys {', '.join(sorted(keys))}")
    for key in ("count", "e", "offset"):
        if not _is_int(entry[key]):
            raise DataError(f"{where}: '{key}' must be an integer")
    for key in ("min", "max"):
        if not _is_number(entry[key]):
            raise DataError(f"{where}: '{key}' must be a finite number")
    lo, hi = float(entry["min"]), float(entry["max"])
    count = entry["count"]
    if count == 0:
        stats = TensorStats.empty()
        if entry["counts"]:
            raise DataError(f"{where}: count is 0 but counts are not empty")
    else:
        e, offset = entry["e"], entry["offset"]
        if lo > hi or e != bin_exponent(lo, hi):
            raise DataError(
                f"{where}: min > max, or 'e' is not the bin exponent of [min, max]; the file is "
                "corrupt: re-run edgeq calibrate"
            )
        length = math.floor(math.ldexp(hi, -e)) - offset + 1
        if not 0 < length <= WINDOW:
            raise DataError(
                f"{where}: min, max, e and offset give {length} bins, not 1…{WINDOW}; the file is corrupt"
            )
        stats = TensorStats(lo, hi, count, e, offset, _decode_counts(entry["counts"], length, where))
        problem = stats.check()
        if problem:
            raise DataError(
                f"{where}: inconsistent statistics ({problem}); the file is corrupt: re-run edgeq calibrate"
            )
    rng = entry["range"]
    if not (isinstance(rng, list) and len(rng) == 2 and all(_is_number(v) for v in rng)):
        raise DataError(f"{where}: 'range' must be [lo, hi] of two finite numbers")
    rlo, rhi = float(rng[0]), float(rng[1])
    if not rlo <= 0.0 <= rhi or not rlo < rhi:
        raise DataError(
            f"{where}: range [{rlo}, {rhi}] must contain 0 and have lo < hi; fix the range or re-run "
            "edgeq calibrate"
        )
    return stats, (rlo, rhi)
