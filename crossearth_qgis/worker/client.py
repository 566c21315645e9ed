"""Running engine commands as worker processes: JSON progress, cancel, temporaries, errors.

`run_engine` is the one place that starts `<engine python> -m engine.cli ...` and interprets
what comes back; engine_task.EngineTask runs it as a QgsTask (the dock), and
processing/engine_run.py drives it from a QgsProcessingFeedback (the algorithms). The
command lines are built in requests.py, errors are worded in engine_errors.py and the time
left is estimated in eta.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..environment.engine_env import (
    SETUP_HINT,
    EngineEnvironmentError,
    Interpreter,
    engine_command,
    resolve_interpreter,
    worker_directory,
    worker_environment,
)
from . import warm_worker
from .engine_errors import EngineCancelled, EngineError, failure, reported_error
from .process import TERMINATE_GRACE_S, ProcessCancelled, run_streaming
from .protocol import read_event

log = logging.getLogger("crossearth_qgis.worker.client")

# The names the engine gives its temporaries (engine/files.py TEMP_PREFIX beside a destination,
# SCRATCH_PREFIX in the system temp folder); repeated here because the plugin never imports
# the engine. Only announced paths with these names are ever removed by the plugin.
TEMP_PREFIX = ".crossearth-tmp-"
SCRATCH_PREFIX = "crossearth-scratch-"
# After the prefix, the run that made it: <machine>p<pid>-<8 hex>-<name> (engine/files.py
# run_mark and temporary_name; tests/test_one_source.py holds the two equal).
HOST_MARK = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_RUN_MARKED = re.compile(r"(?P<host>[0-9a-f]{6})p(?P<pid>[0-9]{1,10})-[0-9a-f]{8}-.+")


def temporary_name(destination: Path) -> Path:
    """A fresh hidden name beside `destination` marked with this process's run, as the
    engine names its own (the plugin's reads of web layers)."""
    run = f"{HOST_MARK}p{os.getpid()}-{secrets.token_hex(4)}"
    return destination.with_name(f"{TEMP_PREFIX}{run}-{destination.name}")


def _run_is_over(name: str, prefix: str) -> bool:
    """`name` is a temporary of a run on this machine whose process is gone (a worker that was
    killed): never a running job's, never a name that merely starts with the prefix."""
    marked = _RUN_MARKED.fullmatch(name[len(prefix) :]) if name.startswith(prefix) else None
    if marked is None or marked["host"] != HOST_MARK:
        return False
    try:
        os.kill(int(marked["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return False


ProgressCallback = Callable[[float, str], None]
# `segment`'s exit code when the class raster is complete but an optional output (confidence,
# polygons) failed (PARTIAL_EXIT_CODE of engine/commands/segment.py; the plugin never imports
# the engine).
PARTIAL_EXIT_CODE = 3


@dataclass
class EngineOutcome:
    done: dict[str, Any] | None  # the final JSON event of `segment --progress json`
    stdout: list[str] = field(default_factory=list)  # the other stdout lines
    stderr: list[str] = field(default_factory=list)

    def json(self) -> Any:
        """stdout parsed as one JSON document (`models --json`, `check --json`, `info`)."""
        try:
            return json.loads("\n".join(self.stdout))
        except ValueError:
            raise EngineError(
                "The CrossEarth worker answered with something other than JSON; the engine "
                "code and the plugin may be from different versions.",
                "\n".join(self.stdout + self.stderr),
            ) from None

    @property
    def failed(self) -> dict[str, str]:
        """Optional outputs the worker could not write ({"polygons": "..."}): the class
        raster is complete all the same (exit code PARTIAL_EXIT_CODE)."""
        failed = self.done.get("failed") if self.done else None
        return {str(k): str(v) for k, v in failed.items()} if isinstance(failed, dict) else {}

    @property
    def warnings(self) -> list[str]:
        listed = list(self.done.get("warnings", [])) if self.done else []
        printed = [line[len("warning: ") :] for line in self.stdout if line.startswith("warning: ")]
        return listed + printed


def _is_engine_temporary(path: Path) -> bool:
    """An absolute path named the way engine/files.py names its temporaries, by a run on this
    machine that is over (the worker that announced it was stopped or died)."""
    if not path.is_absolute():
        return False
    if _run_is_over(path.name, TEMP_PREFIX):
        return True
    scratch_root = Path(os.path.realpath(tempfile.gettempdir()))
    return _run_is_over(path.name, SCRATCH_PREFIX) and (
        Path(os.path.realpath(path.parent)) == scratch_root
    )


def remove_announced_temporaries(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Deletes the temporaries a worker announced and left behind; returns what it removed.

    A worker that is terminated removes its temporaries itself; one that was killed (after the
    grace period, by the system, or any cancel on Windows, where terminate is a kill) cannot.
    Exactly the announced paths go, and only those named like engine temporaries: nothing is
    matched by pattern, so a file beside the output that merely looks similar is never touched.
    A link is removed itself, never what it points to.
    """
    removed: list[Path] = []
    for announced in dict.fromkeys(os.fspath(p) for p in paths):  # once each, in order
        path = Path(announced)
        if not _is_engine_temporary(path):
            log.warning("not removing %s: not named like an engine temporary", announced)
            continue
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue  # already gone: renamed into place or removed by the worker
        try:
            if stat.S_ISDIR(mode):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("could not remove the worker's temporary %s: %s", announced, exc)
            continue
        removed.append(path)
    return removed


@dataclass
class _WorkerOutput:
    """What a worker says, line by line: the JSON events of stdout (progress, done, temporary,
    error, cancelled) and its other lines, gathered into `outcome`."""

    on_progress: ProgressCallback | None
    on_log: Callable[[str], None] | None
    outcome: EngineOutcome = field(default_factory=lambda: EngineOutcome(done=None))
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)  # "error", "cancelled"
    temporaries: list[str] = field(default_factory=list)  # announced, to remove after a kill

    def stdout_line(self, line: str) -> None:
        """One stdout line: an event (checked: a malformed one raises ProtocolError, and the
        worker is stopped) or a plain line of the command's own output."""
        event = read_event(line)
        if event is None:
            self.outcome.stdout.append(line)
            return
        kind = event["event"]
        if kind == "progress" and self.on_progress is not None:
            fraction = min(1.0, max(0.0, float(event["fraction"])))
            self.on_progress(fraction, str(event.get("message", "")))
        elif kind == "done":
            self.outcome.done = event
        elif kind == "temporary" and isinstance(event.get("path"), str):
            self.temporaries.append(event["path"])
        elif kind in ("error", "cancelled"):
            self.reported[kind] = event  # code, message and fields

    def stderr_line(self, line: str) -> None:
        self.outcome.stderr.append(line)
        if self.on_log is not None and line.strip():
            self.on_log(line)


def run_engine(
    args: Sequence[str],
    *,
    interpreter: Interpreter | None = None,
    on_progress: ProgressCallback | None = None,
    on_log: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    timeout_s: float | None = None,
    terminate_grace_s: float = TERMINATE_GRACE_S,
    warm_idle_s: float = 0.0,
) -> EngineOutcome:
    """Runs one engine command in a worker process and waits for it.

    With `warm_idle_s` > 0 the command runs in the interpreter's warm worker (warm_worker.py),
    which stays for that many idle seconds with its model loaded; a busy one is not waited for:
    the command then runs in a one-shot worker as without it.

    Progress events go to `on_progress(fraction, message)`, stderr lines to `on_log`. Raises
    EngineEnvironmentError (no usable interpreter), EngineCancelled (is_cancelled() became
    true; the worker was stopped), or EngineError. Whenever the worker did not finish, the
    temporaries it announced (`{"event": "temporary"}`, `--progress json`) and left behind
    are removed, so no partial file remains even after a kill.
    """
    interpreter = interpreter or resolve_interpreter()
    command = engine_command(interpreter.python, list(args))
    env = worker_environment()
    output = _WorkerOutput(on_progress, on_log)
    log.info("running %s", " ".join(command))
    code = _run_worker(
        interpreter,
        command,
        env,
        args,
        output,
        is_cancelled=is_cancelled,
        timeout_s=timeout_s,
        terminate_grace_s=terminate_grace_s,
        warm_idle_s=warm_idle_s,
    )
    return _outcome_or_error(code, output, interpreter)


def _run_worker(
    interpreter: Interpreter,
    command: list[str],
    env: dict[str, str],
    args: Sequence[str],
    output: _WorkerOutput,
    *,
    is_cancelled: Callable[[], bool] | None,
    timeout_s: float | None,
    terminate_grace_s: float,
    warm_idle_s: float,
) -> int:
    """The worker's exit code, from the warm worker or a one-shot one. Cancel, a timeout and
    an interpreter that cannot start raise; the temporaries a worker that did not finish
    announced are removed, whatever happened."""
    code: int | None = None
    try:
        with warm_worker.acquire(interpreter, warm_idle_s, args[0] if args else "") as warm:
            if warm is not None:
                code = _run_warm(
                    warm,
                    args,
                    output.stdout_line,
                    output.stderr_line,
                    is_cancelled,
                    timeout_s,
                    terminate_grace_s,
                )
            else:
                code = run_streaming(
                    command,
                    env=env,
                    cwd=worker_directory(),
                    on_stdout=output.stdout_line,
                    on_stderr=output.stderr_line,
                    is_cancelled=is_cancelled,
                    timeout_s=timeout_s,
                    terminate_grace_s=terminate_grace_s,
                )
    except ProcessCancelled:
        raise EngineCancelled() from None
    except TimeoutError as exc:
        raise EngineError(f"The CrossEarth worker did not answer in time ({exc}).") from None
    except OSError as exc:
        raise EngineEnvironmentError(
            f"The CrossEarth engine environment is missing: {interpreter.describe()} cannot be "
            f"started ({exc.strerror or exc}). To fix it, {SETUP_HINT}."
        ) from None
    finally:
        # The worker has exited here (run_streaming never leaves one running). A worker that
        # stopped on an error removed its temporaries itself; one that was killed did not.
        if code != 0 and output.temporaries:
            remove_announced_temporaries(output.temporaries)
    return code


def _outcome_or_error(code: int, output: _WorkerOutput, interpreter: Interpreter) -> EngineOutcome:
    """The outcome of a worker that finished (or wrote its class raster: PARTIAL_EXIT_CODE),
    else the error its exit code, its error event and its stderr tell."""
    outcome = output.outcome
    details = "\n".join(outcome.stderr)
    if code == 0 or (code == PARTIAL_EXIT_CODE and outcome.done is not None):
        return outcome
    if code == 130 or "cancelled" in output.reported:
        raise EngineCancelled()
    if code == 2:
        raise reported_error(output.reported.get("error"), outcome.stderr, details)
    raise failure(code, outcome.stderr, interpreter)


def _run_warm(
    warm: warm_worker.WarmWorker,
    args: Sequence[str],
    on_stdout: Callable[[str], None],
    on_stderr: Callable[[str], None],
    is_cancelled: Callable[[], bool] | None,
    timeout_s: float | None,
    terminate_grace_s: float,
) -> int:
    """The command's exit code from the warm worker; a worker that died during the command
    answers as a one-shot worker that died would (its exit status)."""
    try:
        return warm.run(
            args,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            is_cancelled=is_cancelled,
            timeout_s=timeout_s,
            terminate_grace_s=terminate_grace_s,
        )
    except warm_worker.WorkerGone as gone:
        return gone.returncode if gone.returncode is not None else 1


def run_engine_json(
    args: Sequence[str], interpreter: Interpreter | None = None, timeout_s: float = 300.0
) -> Any:
    """A quick engine command whose answer is JSON on stdout (models, check, info)."""
    return run_engine(args, interpreter=interpreter, timeout_s=timeout_s).json()
