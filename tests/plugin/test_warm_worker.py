"""The warm worker from the plugin's side (warm_worker.py through worker.run_engine): the model
loads once, cancel leaves the worker serving, a kill after the grace period ends it and the
next run starts a fresh one, a busy worker is never waited for."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossearth_qgis.environment.engine_env import resolve_interpreter
from crossearth_qgis.worker import warm_worker
from crossearth_qgis.worker.client import run_engine
from crossearth_qgis.worker.engine_errors import EngineCancelled
from crossearth_qgis.worker.requests import SegmentRequest
from engine.commands.serve import SERVED_COMMANDS

from .conftest import MODEL_NAME

IDLE_S = 120.0


def _segment(rasters: dict[str, Path], output: Path, **extra) -> list[str]:
    return SegmentRequest(str(rasters["rgb"]), str(output), model=MODEL_NAME, **extra).args()


def _run(args: list[str], **kwargs):
    messages: list[str] = []
    outcome = run_engine(
        args, on_progress=lambda f, m: messages.append(m), warm_idle_s=IDLE_S, **kwargs
    )
    return outcome, messages


def _worker() -> warm_worker.WarmWorker:
    return warm_worker._workers[str(resolve_interpreter().python)]


def test_the_plugin_and_the_engine_serve_the_same_commands():
    assert warm_worker.SERVED_COMMANDS == SERVED_COMMANDS


def test_two_runs_share_one_worker_and_load_the_model_once(rasters, tmp_path):
    first, first_messages = _run(_segment(rasters, tmp_path / "a.tif"))
    pid = _worker().pid
    second, second_messages = _run(_segment(rasters, tmp_path / "b.tif"))
    assert pid is not None and _worker().pid == pid
    assert any(m.startswith("loading model tiny-landcover") for m in first_messages)
    assert any(
        m.startswith("model tiny-landcover") and m.endswith("is loaded already")
        for m in second_messages
    )
    assert first.done["classes"] == second.done["classes"]
    assert sum(second.done["classes"].values()) == 200 * 170


def test_a_cancel_stops_the_run_and_the_worker_serves_the_next(rasters, tmp_path):
    _run(_segment(rasters, tmp_path / "warm.tif"))
    pid = _worker().pid
    output = tmp_path / "cancelled.tif"
    seen: list[str] = []
    with pytest.raises(EngineCancelled):
        run_engine(
            _segment(rasters, output, overlap=120, batch=1),  # about 70 tiles
            on_progress=lambda f, m: seen.append(m),
            is_cancelled=lambda: any(m.startswith("tile ") for m in seen),
            warm_idle_s=IDLE_S,
        )
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert _worker().pid == pid  # it unwound the run and stayed
    assert _run(_segment(rasters, tmp_path / "after.tif"))[0].done["tiles"] >= 1


def test_a_worker_that_does_not_stop_in_time_is_killed_and_replaced(rasters, tmp_path):
    _run(_segment(rasters, tmp_path / "warm.tif"))
    pid = _worker().pid
    output = tmp_path / "killed.tif"
    with pytest.raises(EngineCancelled):
        run_engine(
            _segment(rasters, output, overlap=120, batch=1),  # about 70 tiles
            is_cancelled=lambda: True,
            warm_idle_s=IDLE_S,
            terminate_grace_s=0.0,  # no time to unwind: killed with its process group
        )
    assert not _worker().alive()
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    outcome, _ = _run(_segment(rasters, tmp_path / "after.tif"))
    assert _worker().pid not in (None, pid) and outcome.done["tiles"] >= 1


def test_a_busy_worker_is_not_waited_for(rasters, tmp_path):
    interpreter = resolve_interpreter()
    with warm_worker.acquire(interpreter, IDLE_S, "segment") as taken:
        assert taken is not None
        with warm_worker.acquire(interpreter, IDLE_S, "segment") as second:
            assert second is None
        # meanwhile a run goes one-shot and succeeds
        outcome = run_engine(_segment(rasters, tmp_path / "one-shot.tif"), warm_idle_s=IDLE_S)
        assert outcome.done["tiles"] >= 1 and not taken.alive()
    with warm_worker.acquire(interpreter, IDLE_S, "train") as unserved:
        assert unserved is None
    with warm_worker.acquire(interpreter, 0.0, "segment") as off:
        assert off is None


def test_a_changed_environment_gets_a_new_worker(rasters, tmp_path, monkeypatch):
    _run(_segment(rasters, tmp_path / "a.tif"))
    pid = _worker().pid
    monkeypatch.setenv("CROSSEARTH_MODEL_CATALOG", str(tmp_path / "no-catalog.json"))
    _run(["check", "--json"])
    assert _worker().pid not in (None, pid)


def test_a_run_waits_for_a_quick_question_rather_than_load_its_model_cold(rasters, tmp_path):
    import threading

    interpreter = resolve_interpreter()
    asked = threading.Event()
    release = threading.Event()

    def question() -> None:
        with warm_worker.acquire(interpreter, IDLE_S, "fit") as worker:
            assert worker is not None
            asked.set()
            release.wait(10)

    thread = threading.Thread(target=question)
    thread.start()
    asked.wait(10)
    threading.Timer(0.3, release.set).start()
    with warm_worker.acquire(interpreter, IDLE_S, "segment") as worker:
        assert worker is not None and worker.command == "segment"
    thread.join()


def test_the_idle_time_is_set_in_the_options_page_and_zero_turns_it_off(qgis_iface):
    from crossearth_qgis import settings
    from crossearth_qgis.environment.options_page import CrossEarthOptionsPage
    from crossearth_qgis.worker.engine_task import EngineTask

    page = CrossEarthOptionsPage(None, qgis_iface)
    assert page.idle_spin.value() == settings.DEFAULT_WORKER_IDLE_MINUTES == 10
    page.idle_spin.setValue(3)
    page.apply()
    assert settings.worker_idle_s() == 180.0
    interpreter = resolve_interpreter()
    assert EngineTask("t", ["check"], interpreter, warm=True).warm_idle_s == 180.0
    assert EngineTask("t", ["check"], interpreter).warm_idle_s == 0.0
    page.idle_spin.setValue(0)
    assert page.idle_spin.text() == "off"
    page.apply()
    assert EngineTask("t", ["check"], interpreter, warm=True).warm_idle_s == 0.0
    page.deleteLater()
