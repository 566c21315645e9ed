"""Reading the worker protocol: one JSON event per stdout line (engine/commands/progress.py).

A line that is not a JSON object with an "event" is a plain line (a command's own output, a
library's print). An event of a kind the plugin knows whose fields are of the wrong type is a
worker error (ProtocolError): the plugin never guesses, never crashes on it, and never shows a
result built from it. Events of kinds it does not know are passed on unread, so a newer engine
may add some.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .engine_errors import EngineError

# The longest part of a bad line quoted in the error.
_QUOTED = 200


class ProtocolError(EngineError):
    """The worker sent an event the plugin cannot read."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _text_map(value: Any) -> bool:
    return isinstance(value, dict) and all(_text(v) for v in value.values())


def _classes(value: Any) -> bool:
    """Pixels per class name (segment) or the class names (download)."""
    if isinstance(value, dict):
        return all(_whole(v) for v in value.values())
    return _texts(value)


# kind -> {field: check}; a field may be absent, but when present it must pass.
_FIELDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "progress": {"fraction": _number, "message": _text},
    "temporary": {"path": _text},
    "done": {
        "warnings": _texts,
        "failed": _text_map,
        "seconds": _number,
        "tiles": _whole,
        "device": _text,
        "output": _text,
        "classes": _classes,
        "package": _text,
        "kept": _texts,
    },
    "error": {"message": _text, "code": _text, "fields": lambda v: isinstance(v, dict)},
    "cancelled": {"message": _text},
    "ready": {},
    "exit": {"code": _whole},
    "protocol": {"problem": _text},
}
_REQUIRED = {"progress": ("fraction",), "temporary": ("path",), "exit": ("code",)}


def read_event(line: str) -> dict[str, Any] | None:
    """The event `line` carries, its fields checked; None for a plain line. A known event with
    a missing or mistyped field raises ProtocolError."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None  # not JSON after all: a plain line that starts with a brace
    if not isinstance(event, dict) or "event" not in event:
        return None
    kind = event["event"]
    if not isinstance(kind, str):
        raise _bad(line, "its event name is not text")
    checks = _FIELDS.get(kind)
    if checks is None:
        return event  # a kind this plugin does not know: passed on, not read
    for name in _REQUIRED.get(kind, ()):
        if name not in event:
            raise _bad(line, f"a {kind} event without {name}")
    for name, check in checks.items():
        if name in event and not check(event[name]):
            raise _bad(line, f"the {kind} event's {name} is {type(event[name]).__name__}")
    return event


def _bad(line: str, problem: str) -> ProtocolError:
    quoted = line if len(line) <= _QUOTED else f"{line[:_QUOTED]}..."
    return ProtocolError(
        f"The CrossEarth worker sent a line the plugin cannot read ({problem}), so its result "
        "is not used; the engine code and the plugin may be from different versions: set up "
        "the engine environment again in Settings > Options > CrossEarth.",
        quoted,
    )
