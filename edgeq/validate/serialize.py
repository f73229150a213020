"""Frozen dataclasses ⇄ JSON-able values, with the rounding that makes reruns give identical JSON.

Each float field says how it is rounded in its ``metadata``: ``sig(n)`` keeps n significant digits,
``dec(n)`` n decimals. Rounding is idempotent, so ``from_json(to_json(r)).to_json() == to_json(r)``.
Non-finite floats (an SQNR of +inf when two outputs are bit-identical) are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"``: JSON has no literal for them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def sig(digits: int) -> dict[str, Any]:
    """Field metadata: round to ``digits`` significant digits."""
    return {"round": ("sig", digits)}


def dec(digits: int) -> dict[str, Any]:
    """Field metadata: round to ``digits`` decimals."""
    return {"round": ("dec", digits)}


def round_float(x: float, spec: tuple[str, int] | None) -> float | str:
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if spec is None:
        return x
    kind, digits = spec
    # Through a decimal string: float(f"{x:.6g}") is the float nearest that decimal, and re-rounding it
    # gives the same string back, so rounding twice changes nothing.
    y = float(f"{x:.{digits}g}") if kind == "sig" else float(f"{x:.{digits}f}")
    return y + 0.0  # turns -0.0 into 0.0 so that a sign of zero cannot differ between reruns


def encode(value: Any, spec: tuple[str, int] | None = None) -> Any:
    """A dataclass tree as dicts, lists and rounded floats, keys in field order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {
            f.name: encode(getattr(value, f.name), f.metadata.get("round")) for f in dataclasses.fields(value)
        }
        extra = getattr(value, "_derived", None)
        if extra is not None:
            out.update(extra())
        return out
    if isinstance(value, (tuple, list)):
        return [encode(v, spec) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round_float(value, spec)
    raise TypeError(f"cannot encode {type(value).__name__}")  # a bug in a report class, not a user error


def decode(tp: Any, data: Any, where: str) -> Any:
    """Rebuild a value of type ``tp`` from :func:`encode`'s output; ``where`` names it in errors.

    Raises ``ValueError`` with ``where`` in the message; the caller turns it into a DataError.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return decode(args[0], data, where)
    if origin is tuple:
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a list")
        item = typing.get_args(tp)[0]
        return tuple(decode(item, d, f"{where}[{i}]") for i, d in enumerate(data))
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            if f.name in data:
                kwargs[f.name] = decode(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}: missing key '{f.name}'")
        return tp(**kwargs)  # keys that are not fields are derived values (passed, percentages): ignored
    if tp is float:
        if isinstance(data, str) and data in _NONFINITE:
            return _NONFINITE[data]
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        raise ValueError(f"{where}: expected a number, got {data!r}")
    if tp is bool:
        if not isinstance(data, bool):
            raise ValueError(f"{where}: expected true or false, got {data!r}")
        return data
    if tp is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise ValueError(f"{where}: expected an integer, got {data!r}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise ValueError(f"{where}: expected a string, got {data!r}")
        return data
    raise TypeError(f"cannot decode {tp!r}")  # a bug in a report class, not a user error
