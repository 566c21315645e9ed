"""The worker protocol reader: any line at all is a plain line, a checked event or a worker
error (ProtocolError); never a crash, never a result built from a bad event."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossearth_qgis.environment.engine_env import Interpreter
from crossearth_qgis.worker import client
from crossearth_qgis.worker.protocol import ProtocolError, read_event

from .test_process import _gone_soon

KINDS = ["progress", "temporary", "done", "error", "cancelled", "ready", "exit", "protocol"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@given(st.text(max_size=300))
@settings(max_examples=400, deadline=None)
def test_any_text_is_a_plain_line_an_event_or_a_protocol_error(line):
    try:
        event = read_event(line)
    except ProtocolError as exc:
        assert "\n" not in str(exc) and len(exc.details) <= 203
        return
    assert event is None or isinstance(event["event"], str)


@given(
    st.sampled_from(KINDS),
    st.dictionaries(
        st.sampled_from(
            ["fraction", "message", "path", "warnings", "failed", "seconds", "tiles", "code"]
        ),
        JSON_VALUES,
        max_size=4,
    ),
)
@settings(max_examples=400, deadline=None)
def test_an_event_with_any_fields_is_read_checked_or_refused(kind, fields):
    line = json.dumps({"event": kind, **fields}, allow_nan=True)
    try:
        event = read_event(line)
    except ProtocolError:
        return
    assert event is not None and event["event"] == kind
    if kind == "progress":  # what the reader lets through is what the plugin can use
        fraction = event["fraction"]
        assert isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
        assert fraction == fraction and abs(fraction) != float("inf")
        assert isinstance(event.get("message", ""), str)
    if kind == "done" and "warnings" in event:
        assert all(isinstance(w, str) for w in event["warnings"])


@given(st.lists(st.text(max_size=80) | JSON_VALUES.map(json.dumps), max_size=20))
@settings(max_examples=200, deadline=None)
def test_the_worker_output_survives_any_sequence_of_lines(lines):
    progress: list[tuple[float, str]] = []
    output = client._WorkerOutput(lambda f, m: progress.append((f, m)), None)
    for line in lines:
        try:
            output.stdout_line(line)
        except ProtocolError:
            break
    assert all(0.0 <= f <= 1.0 and isinstance(m, str) for f, m in progress)


@pytest.mark.parametrize(
    "bad",
    [
        '{"event": "progress", "fraction": "half", "message": "tile 1/2"}',
        '{"event": "progress", "fraction": NaN, "message": "tile 1/2"}',
        '{"event": "progress", "message": "no fraction"}',
        '{"event": "done", "warnings": "not a list", "seconds": 1}',
        '{"event": "done", "seconds": "soon"}',
        '{"event": 7}',
    ],
)
def test_a_worker_that_sends_a_bad_event_is_a_worker_error_and_is_stopped(
    tmp_path, monkeypatch, bad
):
    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "engine.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            print("a plain line first", flush=True)
            print({bad!r}, flush=True)
            time.sleep(60)  # still running when the plugin reads the bad line
            """
        ),
        encoding="utf-8",
    )

    monkeypatch.setattr(client, "engine_command", lambda python, args: [str(python), str(script)])
    interpreter = Interpreter(python=Path(sys.executable), source="test")
    with pytest.raises(ProtocolError) as error:
        client.run_engine(["segment"], interpreter=interpreter, terminate_grace_s=0.5)
    assert "cannot read" in str(error.value) and "\n" not in str(error.value)
    assert bad[:40] in error.value.details
    assert _gone_soon(int(pid_file.read_text()))  # the worker was stopped, not left running
