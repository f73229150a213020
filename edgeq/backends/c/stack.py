"""Worst-case stack depth from GCC's call-graph files (``-fcallgraph-info=su``): static, per call path.

Every compiled function reports its frame size; the deepest path from ``edgeq_run`` through the calls GCC saw
is the stack the model needs beyond its caller's frame. Library functions (memcpy, memset, soft-float helpers)
carry no information and are charged a fixed allowance. Indirect calls and recursion do not occur in edgeq's
generated code; if they did, the estimate would say it is not bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Bytes charged for a call into a function GCC compiled elsewhere (libc's memcpy/memset, libgcc helpers).
LIBRARY_FRAME = 64

_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_BYTES = re.compile(r"\\n(\d+) bytes \(([a-z,]+)\)")


@dataclass(frozen=True)
class StackEstimate:
    bytes: int
    path: tuple[str, ...]  # the deepest call chain, root first
    bounded: bool  # False if a frame is dynamic-unbounded or the graph has a cycle


def _short(title: str) -> str:
    return title.rsplit(":", 1)[-1]


def worst_case_stack(ci_files: Iterable[Path], *, root: str = "edgeq_run") -> StackEstimate:
    frames: dict[str, int] = {}
    bounded_frames: dict[str, bool] = {}
    calls: dict[str, set[str]] = {}
    for path in ci_files:
        text = Path(path).read_text(errors="replace")
        for title, label in _NODE.findall(text):
            m = _BYTES.search(label)
            if m:
                frames[title] = int(m.group(1))
                bounded_frames[title] = "dynamic" not in m.group(2) or "bounded" in m.group(2)
        for src, dst in _EDGE.findall(text):
            calls.setdefault(src, set()).add(dst)
    memo: dict[str, tuple[int, tuple[str, ...], bool]] = {}
    visiting: set[str] = set()

    def depth(fn: str) -> tuple[int, tuple[str, ...], bool]:
        if fn in memo:
            return memo[fn]
        if fn in visiting:
            return 0, (_short(fn),), False  # recursion
        visiting.add(fn)
        own = frames.get(fn, LIBRARY_FRAME)
        ok = bounded_frames.get(fn, True)
        best: tuple[int, tuple[str, ...], bool] = (0, (), True)
        for callee in sorted(calls.get(fn, ())):
            d = depth(callee)
            if d[0] > best[0]:
                best = d
            ok = ok and d[2]
        visiting.discard(fn)
        memo[fn] = (own + best[0], (_short(fn), *best[1]), ok and best[2])
        return memo[fn]

    if root not in frames and root not in calls:
        return StackEstimate(0, (), False)
    total, chain, ok = depth(root)
    return StackEstimate(total, chain, ok)


__all__ = ["LIBRARY_FRAME", "StackEstimate", "worst_case_stack"]
