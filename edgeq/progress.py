"""Progress bars for long work: shown on an interactive terminal, silent in CI, pipes and tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled(requested: bool | None = None) -> bool:
    """Whether to draw progress: ``requested`` if given, else only on a TTY outside CI."""
    if requested is not None:
        return requested
    return sys.stderr.isatty() and not os.environ.get("CI")


def track(
    items: Iterable[T], *, description: str, total: int | None = None, show: bool | None = None
) -> Iterator[T]:
    """Iterate over ``items``, drawing a progress bar on stderr when :func:`enabled`."""
    if not enabled(show):
        yield from items
        return
    try:
        from rich.progress import Progress
    except ImportError:  # rich is an optional extra: fall back to a plain counter
        for i, item in enumerate(items, 1):
            print(f"\r{description}: {i}" + (f"/{total}" if total else ""), end="", file=sys.stderr)
            yield item
        print(file=sys.stderr)
        return
    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
