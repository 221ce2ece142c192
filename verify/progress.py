"""Progress from inside a cell: a suite's sampler reports each finished chunk of
seeds, and the runner (the only listener) turns it into its progress line.

A library call with nobody listening pays one ``None`` check per chunk.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

_listener: Optional[Callable[[float], None]] = None


@contextlib.contextmanager
def listening(callback: Callable[[float], None]) -> Iterator[None]:
    """Within the block, :func:`chunk_done` calls ``callback(fraction of the cell done)``."""
    global _listener
    previous, _listener = _listener, callback
    try:
        yield
    finally:
        _listener = previous


def chunk_done(done: int, total: int) -> None:
    """``done`` of the cell's ``total`` seeds are finished."""
    if _listener is not None and total > 0:
        _listener(min(done / total, 1.0))


def chunk_starts(total: int, size: int) -> Iterator[int]:
    """``range(0, total, size)``, reporting each chunk as done when the next one
    is asked for (so a loop over it reports a chunk after its body ran)."""
    for start in range(0, total, size):
        yield start
        chunk_done(min(start + size, total), total)
