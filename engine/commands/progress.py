"""Progress as the commands print it: a tqdm bar on stderr, JSON events on stdout (the plugin's
worker protocol), or nothing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def json_event(event: str, **fields: Any) -> None:
    """Prints one event of the worker protocol as a JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


def progress_printer(mode: str) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    """The progress callback of `mode` (bar, json or none) and the function that closes it."""
    if mode == "json":
        return (lambda f, m: json_event("progress", fraction=round(f, 4), message=m)), (
            lambda: None
        )
    if mode == "none":
        return (lambda f, m: None), (lambda: None)
    from tqdm import tqdm

    bars: list[tqdm] = []  # created on the first update, so input errors print no empty bar

    def update(fraction: float, message: str) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=100,
                    unit="%",
                    file=sys.stderr,
                    bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
                    leave=False,  # cleared when done: a failure's one line stands alone
                )
            )
        bar = bars[0]
        bar.n = round(fraction * 100, 1)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


@contextmanager
def progress_reporter(mode: str) -> Iterator[Callable[[float, str], None]]:
    """The progress callback of `mode` for the block; its bar is closed when the block ends."""
    update, close = progress_printer(mode)
    try:
        yield update
    finally:
        close()
