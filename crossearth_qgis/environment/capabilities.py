"""What the selected engine environment can do (its `check --json` report), kept once probed.

Whoever offers choices from it (Processing's runtimes) subscribes with `on_change`; this
module knows none of them, so the environment stays below the parts that use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import settings

_listeners: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Calls `listener` whenever a new report is kept (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


def forget_listener(listener: Callable[[], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def remember(python: Path, report: dict[str, Any]) -> None:
    """Keeps what the engine at `python` said it can do, and tells the listeners."""
    settings.set_value(settings.CAPABILITIES, json.dumps({"python": str(python), "report": report}))
    for listener in list(_listeners):
        listener()


def known(python: Path) -> dict[str, Any] | None:
    """What the engine at `python` can do, as its last probe found; None when it was never
    probed (or another environment was)."""
    try:
        found = json.loads(settings.get(settings.CAPABILITIES) or "{}")
    except ValueError:
        return None
    if not isinstance(found, dict) or found.get("python") != str(python):
        return None
    report = found.get("report")
    return report if isinstance(report, dict) else None
