"""The warm engine worker: one `crossearth serve` process kept between runs.

A one-shot worker imports numpy, rasterio and a runtime and loads its model for every run;
the warm one does so once per model and device, so the dock's second run starts at once. It
runs one request at a time: a caller that finds it busy gets None from `acquire()` and starts a
one-shot worker instead. It exits by itself after the idle time (which gives its memory back),
when the plugin unloads (`stop_all`) or when QGIS exits (its stdin closes).

Qt-free like process.py: the same object serves QgsTask threads and Processing algorithms.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from ..environment.engine_env import (
    Interpreter,
    engine_command,
    worker_directory,
    worker_environment,
)
from .process import (
    TERMINATE_GRACE_S,
    ProcessCancelled,
    pump_lines,
    signal_group,
    start_text_process,
)
from .protocol import read_event

log = logging.getLogger("crossearth_qgis.worker.warm_worker")

DEFAULT_IDLE_EXIT_S = 600.0
# The commands `crossearth serve` runs (engine/commands/serve.py SERVED_COMMANDS, repeated as
# the plugin never imports the engine; a test pins the two): others always run one-shot.
SERVED_COMMANDS = ("segment", "fit", "models", "check", "info")
# Questions answered in well under a second once the worker is up: a run waits for one of
# these to end (up to QUICK_WAIT_S) rather than go one-shot and load its model cold.
QUICK_COMMANDS = ("fit", "models", "check", "info")
QUICK_WAIT_S = 30.0
_POLL_S = 0.05


class WorkerGone(Exception):
    """The warm worker exited while it ran a request (a crash, or killed from outside)."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"the warm worker exited with {returncode}")
        self.returncode = returncode


class WarmWorker:
    """A `crossearth serve` process of one engine interpreter, started on first use."""

    def __init__(
        self,
        interpreter: Interpreter,
        idle_exit_s: float = DEFAULT_IDLE_EXIT_S,
        env: dict[str, str] | None = None,
    ) -> None:
        self.interpreter = interpreter
        self.idle_exit_s = idle_exit_s
        # what a one-shot worker would get now (models folder, catalog...): fixed at start
        self.env = env if env is not None else worker_environment()
        self.busy = threading.Lock()
        self.command = ""  # what it runs now ("" when idle)
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.alive() else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _start(self) -> subprocess.Popen:
        self._lines = queue.Queue()  # nothing of an earlier process is read as this one's
        command = engine_command(
            self.interpreter.python, ["serve", "--idle-exit", f"{self.idle_exit_s:g}"]
        )
        process = start_text_process(
            command,
            env=self.env,
            cwd=worker_directory(),
            stdin=subprocess.PIPE,
            own_group=True,  # a kill of its group reaches whatever it started too
        )
        for stream, tag in ((process.stdout, "out"), (process.stderr, "err")):
            threading.Thread(
                target=pump_lines, args=(stream, tag, self._lines), daemon=True
            ).start()
        log.info("started the warm worker %s: %s", process.pid, " ".join(command))
        self._process = process
        return process

    def _send(self, message: dict) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        process.stdin.write(json.dumps(message) + "\n")
        process.stdin.flush()

    def run(
        self,
        args: Sequence[str],
        *,
        on_stdout: Callable[[str], None],
        on_stderr: Callable[[str], None],
        is_cancelled: Callable[[], bool] | None = None,
        timeout_s: float | None = None,
        terminate_grace_s: float = TERMINATE_GRACE_S,
    ) -> int:
        """Runs one engine command in the warm worker and returns its exit code, with the same
        lines and the same cancel and time-out behaviour as process.run_streaming. Raises
        WorkerGone when the worker died during the run (the caller may run it one-shot)."""
        if not self.alive():
            self._start()
        try:
            self._send({"args": list(args)})
        except OSError:  # it exited in the meantime (its idle time ran out): a fresh one
            self._start()
            self._send({"args": list(args)})
        started = time.monotonic()
        stop_by: float | None = None  # after a cancel: when it is killed if still running
        why: BaseException | None = None
        try:
            while True:
                if why is None and is_cancelled is not None and is_cancelled():
                    why = ProcessCancelled(killed=False)
                elif (
                    why is None and timeout_s is not None and time.monotonic() - started > timeout_s
                ):
                    why = TimeoutError(f"the engine did not finish in {timeout_s:g} s")
                if why is not None and stop_by is None:
                    stop_by = time.monotonic() + terminate_grace_s
                    with contextlib.suppress(OSError):
                        self._send({"cancel": True})
                if stop_by is not None and time.monotonic() > stop_by:
                    self.kill()
                    if isinstance(why, ProcessCancelled):
                        raise ProcessCancelled(killed=True)
                    raise why  # type: ignore[misc]
                try:
                    tag, line = self._lines.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if line is None:
                    if tag == "out":
                        code = self._reap()
                        if why is not None:
                            raise why  # type: ignore[misc]
                        raise WorkerGone(code)
                    continue
                if tag == "err":
                    on_stderr(line)
                    continue
                event = _serve_event(line)
                if event is None:
                    on_stdout(line)
                elif event.get("event") == "exit":
                    code = event["code"]
                    if why is not None:
                        raise why  # type: ignore[misc]
                    return code
                elif event.get("event") == "protocol":
                    log.warning("warm worker: %s", event.get("problem"))
        except (ProcessCancelled, TimeoutError, WorkerGone):
            raise  # the worker was stopped, or has finished or died
        except BaseException:
            # A malformed line, or a callback that failed mid-command: the command stops too.
            self.kill()
            raise

    def _reap(self) -> int | None:
        process = self._process
        if process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        return process.poll()

    def kill(self) -> None:
        """Ends the worker and everything it started, at once."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        if sys.platform == "win32":
            process.kill()
        else:
            signal_group(process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    def stop(self, grace_s: float = 5.0) -> None:
        """Asks the worker to exit (its stdin closes), killing it if it does not in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None


def _serve_event(line: str) -> dict | None:
    """The serve protocol's own events (ready, exit, protocol), checked; None for a command's
    line (its events are read by the caller)."""
    event = read_event(line)
    if event is not None and event.get("event") in ("ready", "exit", "protocol"):
        return event
    return None


_workers: dict[str, WarmWorker] = {}
_workers_lock = threading.Lock()


@contextlib.contextmanager
def acquire(
    interpreter: Interpreter, idle_exit_s: float, command: str
) -> Iterator[WarmWorker | None]:
    """The warm worker of this interpreter for one run of `command`, or None when it is busy,
    does not serve that command, or warm workers are off (idle_exit_s <= 0)."""
    if idle_exit_s <= 0 or command not in SERVED_COMMANDS:
        yield None
        return
    key = str(interpreter.python)
    env = worker_environment()
    with _workers_lock:
        worker = _workers.get(key)
        changed = worker is not None and (worker.idle_exit_s, worker.env) != (idle_exit_s, env)
        if worker is not None and changed and worker.busy.acquire(blocking=False):
            worker.stop()  # its environment or idle time changed: a new one from now on
            worker.busy.release()
            worker = None
        if worker is None:
            worker = _workers[key] = WarmWorker(interpreter, idle_exit_s, env)
        # a busy one, or one still running with the settings of before: this run goes one-shot
        usable = (worker.idle_exit_s, worker.env) == (idle_exit_s, env)
        taken = usable and worker.busy.acquire(blocking=False)
        answering = usable and not taken and worker.command in QUICK_COMMANDS
    if answering and command not in QUICK_COMMANDS:
        taken = worker.busy.acquire(timeout=QUICK_WAIT_S)
    if not taken:
        yield None
        return
    worker.command = command
    try:
        yield worker
    finally:
        worker.command = ""
        worker.busy.release()


def stop_all() -> None:
    """Ends every warm worker (the plugin unloads)."""
    with _workers_lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.stop()
