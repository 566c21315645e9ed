"""A child process whose stdout and stderr are read line by line while the caller polls cancel.

Qt-free on purpose: the same loop serves QgsTask threads, Processing algorithms (which run in
their own thread) and the environment set-up, and it can be tested without an event loop.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

# How long a terminated worker gets to unwind (delete its temporary files) before it is killed.
TERMINATE_GRACE_S = 15.0
_POLL_S = 0.1


class ProcessCancelled(Exception):
    """The caller cancelled; the process was terminated (or killed if it did not stop)."""

    def __init__(self, killed: bool) -> None:
        super().__init__("cancelled")
        self.killed = killed


def creation_flags() -> int:
    # No console window flashing up for every worker on Windows.
    return getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0


def start_text_process(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None,
    cwd: Path | None,
    stdin: int = subprocess.DEVNULL,
    own_group: bool = False,
) -> subprocess.Popen:
    """A child with line-buffered UTF-8 text pipes for stdout and stderr (undecodable bytes
    replaced); `own_group`: in a process group of its own (POSIX), so that a kill of the group
    reaches whatever it starts."""
    return subprocess.Popen(
        [str(part) for part in command],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        env=env,
        cwd=str(cwd) if cwd else None,
        start_new_session=own_group and sys.platform != "win32",
        creationflags=creation_flags(),
    )


def pump_lines(stream: IO[str], tag: str, sink: queue.Queue) -> None:
    """Puts each line of `stream` into `sink` as (tag, line), then (tag, None) at its end."""
    try:
        for line in iter(stream.readline, ""):
            sink.put((tag, line.rstrip("\r\n")))
    finally:
        sink.put((tag, None))


def run_streaming(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    on_stdout: Callable[[str], None] | None = None,
    on_stderr: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    timeout_s: float | None = None,
    terminate_grace_s: float = TERMINATE_GRACE_S,
) -> int:
    """Runs `command` to completion and returns its exit code.

    Each output line goes to its callback as soon as it is printed. When `is_cancelled()`
    becomes true the process and everything it started get SIGTERM (the engine then unwinds
    and deletes its temporary output), SIGKILL after `terminate_grace_s`, and ProcessCancelled
    is raised once they have exited. A process past `timeout_s` is stopped the same way and
    TimeoutError is raised. Children a finished process left running are killed. Raises
    OSError when it cannot start.
    """
    # In a group of its own: stopping it reaches whatever it started, and a child it left
    # behind cannot hold the pipes (and this call) open.
    process = start_text_process(command, env=env, cwd=cwd, own_group=True)
    lines: queue.Queue = queue.Queue()
    readers = [
        threading.Thread(target=pump_lines, args=(process.stdout, "out", lines), daemon=True),
        threading.Thread(target=pump_lines, args=(process.stderr, "err", lines), daemon=True),
    ]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    exited_at: float | None = None
    open_streams = 2
    try:
        while open_streams:
            if is_cancelled is not None and is_cancelled():
                raise ProcessCancelled(_stop(process, terminate_grace_s))
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                _stop(process, terminate_grace_s)
                raise TimeoutError(f"{Path(str(command[0])).name} did not finish in {timeout_s} s")
            try:
                tag, line = lines.get(timeout=_POLL_S)
            except queue.Empty:
                if process.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > _DRAIN_S:
                        # What holds the pipes now is a child it left behind: stopped with it.
                        _stop(process, 0.0)
                continue
            if line is None:
                open_streams -= 1
                continue
            callback = on_stdout if tag == "out" else on_stderr
            if callback is not None:
                callback(line)
        # Both pipes closed: the process has exited or is about to.
        while process.poll() is None:
            if is_cancelled is not None and is_cancelled():
                raise ProcessCancelled(_stop(process, terminate_grace_s))
            time.sleep(_POLL_S / 2)
        return process.returncode
    finally:
        if process.poll() is None:  # an exception in a callback: never leave a worker behind
            _stop(process, terminate_grace_s)
        for reader, stream in zip(readers, (process.stdout, process.stderr), strict=True):
            reader.join(timeout=2)
            # A pipe still held by a process outside the group is left to the collector:
            # closing it under its reader would block until that process lets go.
            if stream is not None and not reader.is_alive():
                stream.close()


# How long the pipes may stay open after the process has exited (its last lines still being
# read) before what holds them is taken for a child it left behind.
_DRAIN_S = 1.0


def _stop(process: subprocess.Popen, grace_s: float) -> bool:
    """Terminates the process's group (the process alone on Windows), waits up to `grace_s`
    for the process, then kills the group: children it started or left behind go too. True
    when the process had to be killed."""
    if sys.platform == "win32":
        if process.poll() is not None:
            return False
        process.terminate()
        try:
            process.wait(timeout=grace_s)
            return False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return True
    running = process.poll() is None
    signal_group(process, signal.SIGTERM)
    killed = False
    if running:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            killed = True
    signal_group(process, signal.SIGKILL)  # what is left of the group, the leader included
    process.wait()
    return killed


def signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Sends `sig` to the process group `process` leads (POSIX; started with own_group)."""
    try:
        os.killpg(process.pid, sig)  # the group the process leads (start_new_session)
    except ProcessLookupError:
        return  # nothing of the group is left
    except PermissionError:
        if process.poll() is None:
            process.send_signal(sig)
