"""Strict TOML → frozen dataclass loading.

An unknown key is an error that names the file, the line, the key and the nearest valid key; a value of the
wrong type names the expected type. Nested tables map to nested dataclasses, strings to enums,
arrays to tuples.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from edgeq.errors import ConfigError

T = TypeVar("T")


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file, returning its table and its text (kept to locate keys in error messages)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror}); check the path") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}; fix the syntax") from None


def _line_of(text: str, key: str) -> str:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", line) or re.match(
            rf"\s*\[+\s*[\w.]*{re.escape(key)}\s*\]", line
        ):
            return f":{i}"
    return ""


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _convert(value: Any, tp: Any, where: str, ctx: _Ctx) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None and optional:
        return None
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ctx.error(where, f"must be a table, not {type(value).__name__}")
        return from_dict(tp, value, ctx=ctx, prefix=where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in tp)
            raise ctx.error(where, f"is {value!r}; expected one of: {choices}") from None
    if origin is tuple:
        if not isinstance(value, list):
            raise ctx.error(where, f"must be an array, not {type(value).__name__}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]", ctx) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ctx.error(where, f"must have {len(args)} elements, not {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(v, a, f"{where}[{i}]", ctx) for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, dict):
            raise ctx.error(where, f"must be a table, not {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {k: _convert(v, vt, f"{where}.{k}", ctx) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(where, f"must be a number, not {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(where, f"must be an integer, not {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.error(where, f"must be true or false, not {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ctx.error(where, f"must be a string, not {value!r}")
        return value
    return value


@dataclasses.dataclass
class _Ctx:
    source: str
    text: str

    def error(self, key: str, message: str) -> ConfigError:
        leaf = key.rsplit(".", 1)[-1].split("[")[0]
        return ConfigError(f"{self.source}{_line_of(self.text, leaf)}: key '{key}' {message}")


def from_dict(
    cls: type[T],
    data: dict[str, Any],
    *,
    source: str = "<config>",
    text: str = "",
    ctx: _Ctx | None = None,
    prefix: str = "",
) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrongly typed values."""
    ctx = ctx or _Ctx(source, text)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(fields)}"
            raise ctx.error(where, f"is not a known key{hint}")
        kwargs[key] = _convert(value, hints[key], where, ctx)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{ctx.source}: required key '{where}' is missing; add it")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{ctx.source}: {prefix + ': ' if prefix else ''}{e}") from None


def load_toml_as(cls: type[T], path: Path) -> T:
    """Read ``path`` and build ``cls`` from it strictly."""
    data, text = read_toml(path)
    return from_dict(cls, data, source=str(path), text=text)


def to_dict(obj: Any) -> Any:
    """Plain (JSON/TOML-ready) form of a config dataclass: enums become their values, tuples lists."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
