"""Groups of tensors that must share one set of quantization parameters (a union-find with constraints).

A group's parameters come from the union of its members' calibrated ranges, or are fixed by an op (softmax
output 1/256, -128). Merging two groups is refused when the result would break a member's promise: two
different fixed parameter sets, a fixed set that cannot represent a member's range, or a folded Relu/Clip
whose clamp would no longer be exact (its zero point must stay qmin, its top must not pass the clip's max).
The caller then re-quantizes instead of sharing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

from edgeq.quantize.params import QParams, QuantType, activation_params


@dataclass
class _Group:
    members: list[Hashable]
    fixed: QParams | None = None
    ranges: list[tuple[float, float]] = field(default_factory=list)
    folds: list[float] = field(default_factory=list)  # clip max of each folded activation in the group

    def merged(self, other: _Group) -> _Group:
        return _Group(
            self.members + other.members,
            self.fixed or other.fixed,
            self.ranges + other.ranges,
            self.folds + other.folds,
        )

    def params(self, dtype: QuantType) -> QParams:
        if self.fixed is not None:
            return self.fixed
        lo = min((r[0] for r in self.ranges), default=0.0)
        hi = max((r[1] for r in self.ranges), default=0.0)
        return activation_params(lo, hi, dtype)


class SharedParams:
    """Tensors (any hashable keys) registered once, then linked; :meth:`params` resolves a key's group."""

    def __init__(self, dtype: QuantType):
        self.dtype = dtype
        self._parent: dict[Hashable, Hashable] = {}
        self._groups: dict[Hashable, _Group] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._parent

    def add(
        self,
        key: Hashable,
        *,
        value_range: tuple[float, float] | None = None,
        fixed: QParams | None = None,
        fold_max: float | None = None,
    ) -> None:
        """Register ``key``: its calibrated range (None when it only follows its group), fixed parameters,
        or the clip maximum of a folded activation (whose range must then start at 0)."""
        if key in self._parent:
            raise ValueError(f"{key!r} registered twice")
        group = _Group([key], fixed=fixed)
        if value_range is not None:
            group.ranges.append(value_range)
        if fold_max is not None:
            group.folds.append(fold_max)
        self._parent[key] = key
        self._groups[key] = group

    def _root(self, key: Hashable) -> Hashable:
        while self._parent[key] != key:
            self._parent[key] = self._parent[self._parent[key]]
            key = self._parent[key]
        return key

    def _compatible(self, group: _Group, a: _Group, b: _Group) -> bool:
        if a.fixed is not None and b.fixed is not None and a.fixed != b.fixed:
            return False
        p = group.params(self.dtype)
        lo, hi = p.representable()
        if group.fixed is not None:
            # A fixed set (e.g. [0, 255/256] for a logistic output) must still cover every calibrated range it
            # absorbs, up to one step (the fixed set itself clips a sigmoid's 1.0 by that much).
            step = p.scale[0]
            if any(r[0] < lo - step or r[1] > hi + step for r in group.ranges):
                return False
        for clip_max in group.folds:
            if p.zero_point[0] != self.dtype.qmin:
                return False
            if math.isfinite(clip_max) and hi > clip_max * (1 + 1e-6):
                return False
        return True

    def link(self, a: Hashable, b: Hashable) -> bool:
        """Make ``a`` and ``b`` share parameters; False (and nothing changes) if that would break a member."""
        ra, rb = self._root(a), self._root(b)
        if ra == rb:
            return True
        ga, gb = self._groups[ra], self._groups[rb]
        merged = ga.merged(gb)
        if not self._compatible(merged, ga, gb):
            return False
        self._parent[rb] = ra
        self._groups[ra] = merged
        del self._groups[rb]
        return True

    def params(self, key: Hashable) -> QParams:
        return self._groups[self._root(key)].params(self.dtype)
