"""Engine commands in modules of their own: each `register(subparsers)` adds its sub-parser and
returns the function that runs it (the protocol of the `crossearth.commands` entry points).

pyproject.toml declares every one of them in that group, as training declares its own;
ENGINE_COMMANDS is the same list for an environment whose installed metadata predates a
command (tests/test_architecture.py pins the two to each other).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]

ENGINE_COMMANDS = {
    "segment": "engine.commands.segment:register",
    "segment-batch": "engine.commands.segment_batch:register",
    "convert": "engine.commands.convert:register",
    "models": "engine.commands.models:register",
    "download": "engine.commands.download:register",
    "check": "engine.commands.check:register",
    "info": "engine.commands.info:register",
    "export": "engine.commands.export:register",
    "fit": "engine.commands.fit:register",
    "serve": "engine.commands.serve:register",
}
