"""`crossearth serve`: the warm worker the plugin keeps between runs.

It reads one request per line on stdin, `{"args": ["segment", ...]}`, runs it exactly as the
command line would (the same events on stdout, the same exit codes) and then answers
`{"event": "exit", "code": N}`. Imports and loaded models stay between requests
(engine/models/model_cache.py), so a second run of a model starts without loading anything.
`{"cancel": true}` stops the running command as Ctrl-C would: it unwinds and removes its
temporaries. The worker exits when stdin closes (its client is gone) or after `--idle-exit`
seconds without a request, which gives the memory back.
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# What a request may run: the commands whose work is worth keeping warm, and the quick
# questions the plugin asks. `serve` itself is never nested.
SERVED_COMMANDS = ("segment", "fit", "models", "check", "info")
CANCELLED_EXIT_CODE = 130
# How long after a cancel an interrupt between requests still counts as that cancel.
LATE_CANCEL_S = 2.0


def register(commands: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    """Adds `serve` to the engine's sub-commands; returns its handler."""
    serve = commands.add_parser(
        "serve",
        help="a warm worker: run requests read from stdin, keeping models loaded (the plugin's)",
    )
    serve.add_argument(
        "--idle-exit",
        type=float,
        default=600.0,
        help="exit after this many seconds without a request (default 600)",
    )
    serve.add_argument(
        "--keep-models", type=int, default=1, help="how many loaded models to keep (default 1)"
    )
    return run


def _event(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class _Requests:
    """Reads stdin on a thread of its own: requests are queued, a cancel interrupts the
    command that runs (only while one runs), end of input is None."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._running = False
        self.interrupted_at = -LATE_CANCEL_S
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                _event("protocol", problem=f"not a JSON object: {line.strip()[:200]}")
                continue
            if message.get("cancel"):
                self._interrupt()
            else:
                self.queue.put(message)
        self._interrupt()  # the client is gone: nobody waits for the running command
        self.queue.put(None)

    def _interrupt(self) -> None:
        with self._lock:
            if self._running:
                self.interrupted_at = time.monotonic()
                _thread.interrupt_main()

    def late_cancel(self) -> bool:
        """Whether a KeyboardInterrupt between requests is a cancel that arrived as its command
        ended (ignored), rather than SIGTERM or Ctrl-C for the worker itself (it exits)."""
        return time.monotonic() - self.interrupted_at < LATE_CANCEL_S

    def run(self, argv: Sequence[str]) -> int:
        from engine.cli import main

        with self._lock:
            self._running = True
        try:
            return main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            return exc.code if isinstance(exc.code, int) else 2
        except KeyboardInterrupt:  # a cancel that came before main() could handle it
            return CANCELLED_EXIT_CODE
        except Exception:  # a bug: as a one-shot worker would, with its traceback on stderr
            traceback.print_exc()
            return 1
        finally:
            with self._lock:
                self._running = False


def _request_args(message: dict[str, Any]) -> list[str] | str:
    """The request's command line, or why it cannot be run."""
    args = message.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        return 'a request is {"args": ["segment", ...]}: a non-empty list of strings'
    if args[0] not in SERVED_COMMANDS:
        return f"'{args[0]}' is not served here; serve runs {', '.join(SERVED_COMMANDS)}"
    return args


def run(args: argparse.Namespace) -> int:
    """Serves requests until stdin closes or the idle time passes; 0 then."""
    from engine.models.model_cache import keep_loaded

    requests = _Requests()
    _event("ready", pid=os.getpid())
    with keep_loaded(args.keep_models):
        while True:
            try:
                message = requests.queue.get(timeout=args.idle_exit)
            except queue.Empty:
                return 0
            except KeyboardInterrupt:
                if requests.late_cancel():
                    continue
                return CANCELLED_EXIT_CODE
            if message is None:
                return 0
            argv = _request_args(message)
            if isinstance(argv, str):
                _event("protocol", problem=argv)
                code = 2
            else:
                code = requests.run(argv)
            try:
                _event("exit", code=code)
            except KeyboardInterrupt:
                if not requests.late_cancel():
                    return CANCELLED_EXIT_CODE
                _event("exit", code=code)
