"""Static memory planning: every activation of a program gets an offset in one arena, reused over time.

A :class:`Buffer` is a block of bytes live from the op that first writes it to the op that last reads it
(both inclusive). Two buffers may share bytes only if their lifetimes do not overlap. The *liveness lower
bound* is the largest total size of the buffers live at one time: no placement can use less. Placement is
greedy — each buffer goes to the lowest offset where it fits beside the already placed buffers that are live
at the same time — tried in a few orders (largest first, as TFLite Micro's greedy planner; longest-lived
first; earliest first; largest size x lifetime first), keeping the smallest arena, then refined by a seeded
search over swaps of the placement order while the arena is above the bound. On the benchmark networks and on
random lifetimes this lands on the bound (to the alignment padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Buffer:
    """A block of the arena: ``size`` bytes live over ops ``first`` … ``last`` (inclusive)."""

    name: str
    size: int
    first: int
    last: int

    def overlaps(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class MemoryPlan:
    """Where each buffer lives in the arena, how big the arena is, and the bound it is measured against."""

    arena_size: int
    lower_bound: int
    offsets: dict[str, int]
    buffers: tuple[Buffer, ...]
    peak_op: int  # an op index at which the live bytes reach lower_bound
    strategy: str

    @property
    def ratio(self) -> float:
        """arena_size / lower_bound (1.0 when there is nothing to place)."""
        return self.arena_size / self.lower_bound if self.lower_bound else 1.0

    def live_at(self, op_index: int) -> list[Buffer]:
        return [b for b in self.buffers if b.first <= op_index <= b.last]

    def check(self) -> None:
        """RuntimeError unless the plan is sound: buffers in bounds, no two live at once share a byte."""
        for b in self.buffers:
            off = self.offsets[b.name]
            if off < 0 or off + b.size > self.arena_size:
                raise RuntimeError(f"memory plan: buffer {b.name} lies outside the arena")
        for i, a in enumerate(self.buffers):
            for b in self.buffers[i + 1 :]:
                if a.overlaps(b):
                    oa, ob = self.offsets[a.name], self.offsets[b.name]
                    if not (oa + a.size <= ob or ob + b.size <= oa):
                        raise RuntimeError(f"memory plan: live buffers {a.name} and {b.name} overlap")


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def liveness_lower_bound(buffers: Sequence[Buffer]) -> tuple[int, int]:
    """(max over ops of the bytes live at that op, the first op reaching it)."""
    if not buffers:
        return 0, 0
    times = sorted({b.first for b in buffers})  # the live set only grows at a buffer's first op
    best, at = 0, times[0]
    for t in times:
        live = sum(b.size for b in buffers if b.first <= t <= b.last)
        if live > best:
            best, at = live, t
    return best, at


def _place(order: Sequence[Buffer], alignment: int) -> tuple[dict[str, int], int]:
    placed: list[tuple[int, int, Buffer]] = []  # (offset, aligned size, buffer)
    offsets: dict[str, int] = {}
    arena = 0
    for buf in order:
        size = _align(buf.size, alignment)
        busy = sorted((off, sz) for off, sz, other in placed if other.overlaps(buf))
        offset = 0
        for off, sz in busy:
            if offset + size <= off:
                break
            offset = max(offset, _align(off + sz, alignment))
        offsets[buf.name] = offset
        placed.append((offset, size, buf))
        arena = max(arena, offset + size)
    return offsets, arena


_ORDERS = {
    "largest-first": lambda b: (-b.size, b.first, b.name),
    "longest-lived-first": lambda b: (-(b.last - b.first), -b.size, b.name),
    "earliest-first": lambda b: (b.first, -b.size, b.name),
    "largest-area-first": lambda b: (-(b.size * (b.last - b.first + 1)), b.name),
}


def plan_memory(buffers: Sequence[Buffer], *, alignment: int = 4, search: int = 400) -> MemoryPlan:
    """Place ``buffers`` in one arena; deterministic for the same input.

    The fixed orders come first; while the arena is still above the (aligned) lower bound, up to ``search``
    seeded random perturbations of the best order are tried (swap two buffers, keep the change if the arena
    does not grow): cheap, and it closes the gaps the greedy orders leave on chains of mixed sizes.
    """
    names = [b.name for b in buffers]
    if len(set(names)) != len(names):
        raise ValueError("plan_memory: buffer names must be unique")
    bound, peak = liveness_lower_bound(buffers)
    aligned_bound, _ = liveness_lower_bound(
        [Buffer(b.name, _align(b.size, alignment), b.first, b.last) for b in buffers]
    )
    best: tuple[int, str, dict[str, int], list[Buffer]] | None = None
    for strategy, key in _ORDERS.items():
        order = sorted(buffers, key=key)
        offsets, arena = _place(order, alignment)
        if best is None or arena < best[0]:
            best = (arena, strategy, offsets, order)
    if best is not None and best[0] > aligned_bound and len(buffers) > 1:
        import random

        rng = random.Random(0)
        arena, strategy, offsets, order = best
        for _ in range(search):
            i, j = rng.randrange(len(order)), rng.randrange(len(order))
            if i == j:
                continue
            trial = list(order)
            trial[i], trial[j] = trial[j], trial[i]
            t_offsets, t_arena = _place(trial, alignment)
            if t_arena <= arena:
                if t_arena < arena:
                    strategy = f"{best[1]}+search"
                order, offsets, arena = trial, t_offsets, t_arena
                if arena <= aligned_bound:
                    break
        best = (arena, strategy, offsets, order)
    arena, strategy, offsets = best[:3] if best else (0, "empty", {})
    plan = MemoryPlan(arena, bound, offsets, tuple(buffers), peak, strategy)
    plan.check()
    return plan


__all__ = ["Buffer", "MemoryPlan", "liveness_lower_bound", "plan_memory"]
