"""`crossearth serve`, the warm worker: requests on stdin, the CLI's events and exit codes on
stdout, models kept loaded between runs, cancel, idle exit and malformed requests."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine.commands.serve import SERVED_COMMANDS

from .conftest import write_raster

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"


class Serve:
    """A `crossearth serve` process of the Light engine, read line by line."""

    def __init__(self, python: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [str(python), "-m", "engine.cli", "serve", *extra],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.event()["event"] == "ready"

    def event(self) -> dict:
        line = self.process.stdout.readline()
        assert line, "the worker closed its stdout"
        return json.loads(line) if line.startswith("{") else {"line": line.rstrip("\n")}

    def send(self, message: dict | str) -> None:
        self.process.stdin.write(
            (message if isinstance(message, str) else json.dumps(message)) + "\n"
        )
        self.process.stdin.flush()

    def run(self, *args: str, on_event=None) -> tuple[int, list[dict]]:
        self.send({"args": list(args)})
        events = []
        while True:
            event = self.event()
            if event.get("event") == "exit":
                return event["code"], events
            events.append(event)
            if on_event is not None:
                on_event(event)

    def close(self) -> int:
        self.process.stdin.close()
        code = self.process.wait(timeout=30)
        self.process.stdout.close()
        self.process.stderr.close()
        return code


@pytest.fixture
def serve(light_python):
    worker = Serve(light_python, "--idle-exit", "60")
    yield worker
    if worker.process.poll() is None:
        worker.process.kill()
    worker.close()


def _segment(output: Path, source: Path = SAMPLE, *extra: str) -> list[str]:
    return ["segment", str(source), str(output), "--progress", "json", *extra]


def _messages(events: list[dict]) -> list[str]:
    return [e["message"] for e in events if e.get("event") == "progress"]


def test_the_second_run_reuses_the_loaded_model_and_gives_the_same_pixels(serve, tmp_path):
    first_code, first = serve.run(*_segment(tmp_path / "a.tif"))
    second_code, second = serve.run(*_segment(tmp_path / "b.tif"))
    assert (first_code, second_code) == (0, 0)
    assert "loading model crossearth-landsat-lc-fast (onnxruntime)" in _messages(first)
    assert "model crossearth-landsat-lc-fast (onnxruntime) is loaded already" in _messages(second)
    assert not any(m.startswith("loading model") for m in _messages(second))
    done = [e for e in first + second if e.get("event") == "done"]
    # the sample's pixels per class, as a one-shot run gives them (README, test_cli)
    assert list(done[0]["classes"].values()) == [6112, 1436, 270, 19239, 530]
    assert done[1]["classes"] == done[0]["classes"]
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert serve.close() == 0  # end of input: the worker exits


def test_a_replaced_package_is_loaded_again(serve, tmp_path):
    package = tmp_path / "model"
    source = REPO / "resources" / "models" / "crossearth-landsat-lc-fast"
    package.mkdir()
    for item in source.iterdir():
        (package / item.name).write_bytes(item.read_bytes())
    serve.run(*_segment(tmp_path / "a.tif"), "--model", str(package))
    card = package / "model.json"
    time.sleep(0.01)
    card.write_text(card.read_text())  # a new modification time: another package for all we know
    code, events = serve.run(*_segment(tmp_path / "b.tif"), "--model", str(package))
    assert code == 0 and any(m.startswith("loading model") for m in _messages(events))


def test_errors_and_exit_codes_are_the_clis_and_the_worker_stays(serve, tmp_path):
    code, events = serve.run(*_segment(tmp_path / "out.tif", tmp_path / "missing.tif"))
    assert code == 2 and events[-1]["event"] == "error" and events[-1]["code"]
    usage, events = serve.run("segment", "--no-such-option")
    assert usage == 2
    code, events = serve.run("models", "--json")
    assert code == 0 and events[0]["default"] == "crossearth-landsat-lc-fast"  # models --json


def test_malformed_and_unserved_requests_are_protocol_events(serve):
    serve.send("not json")
    assert serve.event() == {"event": "protocol", "problem": "not a JSON object: not json"}
    code, events = serve.run("serve")
    assert code == 2 and events == [
        {
            "event": "protocol",
            "problem": f"'serve' is not served here; serve runs {', '.join(SERVED_COMMANDS)}",
        }
    ]
    serve.send({"args": []})
    assert serve.event()["event"] == "protocol" and serve.event() == {"event": "exit", "code": 2}


def test_cancel_stops_the_run_without_output_and_the_worker_serves_on(serve, tmp_path):
    with rasterio.open(SAMPLE) as src:
        data, crs, transform = src.read(), src.crs.to_wkt(), src.transform
    tall = write_raster(
        tmp_path / "tall.tif", np.concatenate([data] * 60, axis=1), crs=crs, transform=transform
    )
    output = tmp_path / "tall_classes.tif"

    def cancel_at_the_first_tile(event: dict) -> None:
        if event.get("event") == "progress" and event["message"].startswith("tile "):
            serve.send({"cancel": True})

    code, events = serve.run(
        *_segment(output, tall, "--tile", "64"), on_event=cancel_at_the_first_tile
    )
    assert code == 130 and events[-1]["event"] == "cancelled"
    assert not output.exists() and list(tmp_path.glob(".crossearth-tmp-*")) == []
    assert serve.run(*_segment(tmp_path / "after.tif"))[0] == 0
    serve.send({"cancel": True})  # with nothing running: ignored
    assert serve.run("check", "--json")[0] == 0


def test_an_idle_worker_exits_by_itself(light_python):
    worker = Serve(light_python, "--idle-exit", "1")
    assert worker.process.wait(timeout=30) == 0
    worker.close()


def test_sigterm_ends_an_idle_worker(light_python):
    import signal

    worker = Serve(light_python, "--idle-exit", "60")
    assert worker.run("check", "--json")[0] == 0
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 130
    worker.close()
