"""Models kept loaded between runs in one process (the warm worker, `crossearth serve`).

Outside `keep_loaded()` nothing is kept: every run loads its model and frees it, as a one-shot
command should. Inside, the last few models stay in memory, keyed by the package's files
(a package replaced on disk is loaded again), the device, the thread count and the runtime.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_kept: OrderedDict[tuple[Any, ...], Any] | None = None
_limit = 0


@contextlib.contextmanager
def keep_loaded(count: int = 1) -> Iterator[None]:
    """Keeps up to `count` loaded models (the most recently used) until the block ends."""
    global _kept, _limit
    _kept, _limit = OrderedDict(), max(1, count)
    try:
        yield
    finally:
        _kept, _limit = None, 0


def _files_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of each file of the package: changes when it does."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        return tuple(
            (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file()
        )
    except OSError:
        return ()


def holds(key: tuple[Any, ...], folder: Path) -> bool:
    """Whether `loaded(key, folder, ...)` would answer from memory."""
    return _kept is not None and (*key, str(folder), _files_stamp(folder)) in _kept


def loaded(key: tuple[Any, ...], folder: Path, load: Callable[[], Any]) -> Any:
    """The model `load()` gives, from memory when this key and these files were loaded before
    (only inside keep_loaded)."""
    if _kept is None:
        return load()
    full_key = (*key, str(folder), _files_stamp(folder))
    if full_key in _kept:
        _kept.move_to_end(full_key)
        return _kept[full_key]
    model = load()
    _kept[full_key] = model
    while len(_kept) > _limit:
        _kept.popitem(last=False)
    return model


def cached_count() -> int:
    """How many models are kept now (0 outside keep_loaded)."""
    return len(_kept) if _kept is not None else 0
