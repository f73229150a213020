"""Timing single inferences of two sessions fairly."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from edgeq.validate.report import Latency


def percentile_ms(times_ns: list[int], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, numpy's default) of ``times_ns``, in milliseconds."""
    return float(np.percentile(np.asarray(times_ns, dtype=np.float64), q)) / 1e6


def time_pair(
    sessions: tuple[object, object], feed: Mapping[str, np.ndarray], *, runs: int, warmup: int | None = None
) -> tuple[Latency, Latency]:
    """Median and p90 latency of each of two onnxruntime sessions on ``feed``.

    The two are timed alternately, run after run, so that a change in clock speed or background load
    during the measurement falls on both alike rather than on whichever ran second.
    """
    warmup = max(3, runs // 10) if warmup is None else warmup
    feed = dict(feed)
    for _ in range(warmup):
        for s in sessions:
            s.run(None, feed)
    times: tuple[list[int], list[int]] = ([], [])
    for _ in range(runs):
        for s, t in zip(sessions, times, strict=True):
            start = time.perf_counter_ns()
            s.run(None, feed)
            t.append(time.perf_counter_ns() - start)
    return tuple(
        Latency(median_ms=percentile_ms(t, 50), p90_ms=percentile_ms(t, 90), runs=runs, threads=1)
        for t in times
    )  # type: ignore[return-value]
