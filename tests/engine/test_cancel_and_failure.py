"""Cancel and failures midway leave no output (neither final nor temporary files)."""

import threading

import pytest
import torch

from engine.errors import SegmentationCancelled
from engine.run.pipeline import LoadedModel, SegmentOptions, segment

from .conftest import LANDSAT


def test_cancel_halfway_leaves_no_file(tmp_path, pixel_model):
    cancel = threading.Event()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if fraction >= 0.4:
            cancel.set()

    out = tmp_path / "classes.tif"
    with pytest.raises(SegmentationCancelled):
        segment(
            LANDSAT,
            out,
            pixel_model,
            SegmentOptions(
                bands=[1, 2, 3],
                tile_size=32,
                overlap=0,
                batch_size=2,
                confidence=tmp_path / "conf.tif",
            ),
            progress=progress,
            cancel=cancel,
        )
    assert 0.4 <= max(seen) < 0.95  # it really was stopped halfway
    assert list(tmp_path.iterdir()) == []


def test_cancel_callable_is_honoured(tmp_path, pixel_model):
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(SegmentationCancelled):
        segment(
            LANDSAT,
            tmp_path / "x.tif",
            pixel_model,
            SegmentOptions(bands=[1, 2, 3], tile_size=32, overlap=0),
            cancel=cancelled,
        )
    assert list(tmp_path.iterdir()) == []


class FailingModel(torch.nn.Module):
    def __init__(self, inner, fail_after):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.fail_after = fail_after

    def forward(self, x):
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError("simulated failure inside the model")
        return self.inner(x)


def test_error_midway_leaves_no_file_and_keeps_existing_output(tmp_path, pixel_model):
    out = tmp_path / "classes.tif"
    out.write_bytes(b"previous result")
    model = LoadedModel(pixel_model.card, FailingModel(pixel_model.module, fail_after=5))
    with pytest.raises(RuntimeError, match="simulated"):
        segment(
            LANDSAT,
            out,
            model,
            SegmentOptions(bands=[1, 2, 3], tile_size=32, overlap=0, overwrite=True),
        )
    assert out.read_bytes() == b"previous result"  # untouched: the new file never replaced it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif"]


def test_reader_error_reaches_caller(tmp_path, pixel_model, monkeypatch):
    from engine.raster import raster_input

    original = raster_input.TileReader.read_tile
    calls = {"n": 0}

    def broken(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk vanished")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(raster_input.TileReader, "read_tile", broken)
    with pytest.raises(OSError, match="disk vanished"):
        segment(
            LANDSAT,
            tmp_path / "x.tif",
            pixel_model,
            SegmentOptions(bands=[1, 2, 3], tile_size=32, overlap=0),
        )
    assert list(tmp_path.iterdir()) == []
