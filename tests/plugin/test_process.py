"""The worker process tree: cancel, a time-out and a finished worker leave no child running and
never keep the caller waiting on pipes a child holds open."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from crossearth_qgis.worker.process import ProcessCancelled, run_streaming

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")


def _worker(tmp_path: Path, then: str) -> tuple[list[str], Path]:
    """A worker that starts a child sharing its stdout (as a library's helper would), writes
    the child's pid to a file, says "started", then does `then`."""
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            open({str(pid_file)!r}, "w").write(str(child.pid))
            print("started", flush=True)
            {then}
            """
        ),
        encoding="utf-8",
    )
    return [sys.executable, str(script)], pid_file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for every purpose here
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _gone_soon(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _returns_within(seconds: float, call) -> object:
    """call()'s result, or a failure (not a hung suite) when it takes longer than `seconds`."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return result[0]


def test_a_finished_worker_s_leftover_child_neither_holds_the_call_nor_survives(tmp_path):
    command, pid_file = _worker(tmp_path, "sys.exit(0)")
    lines: list[str] = []
    # the child sleeps 120 s with the worker's stdout open
    code = _returns_within(10, lambda: run_streaming(command, on_stdout=lines.append))
    assert code == 0 and lines == ["started"]
    assert _gone_soon(int(pid_file.read_text()))


def test_cancel_stops_the_worker_and_what_it_started(tmp_path):
    command, pid_file = _worker(tmp_path, "time.sleep(120)")
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(ProcessCancelled):
        run_streaming(command, on_stdout=lines.append, is_cancelled=lambda: bool(lines))
    assert time.monotonic() - started < 20
    assert _gone_soon(int(pid_file.read_text()))


def test_a_time_out_stops_the_worker_and_what_it_started(tmp_path):
    # The worker ignores SIGTERM: the kill after the grace period must reach the whole group.
    command, pid_file = _worker(
        tmp_path, "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    )
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_streaming(command, timeout_s=1.0, terminate_grace_s=0.5)
    assert time.monotonic() - started < 20
    assert _gone_soon(int(pid_file.read_text()))
