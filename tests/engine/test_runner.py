"""The batch runner: batches in flight keep the rows identical, torch.compile gives the eager
scores (also for a short last batch) from a cache, compiling asks for PyTorch, and scores that
are not finite anywhere are refused."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from engine.errors import ConfigError, ModelError
from engine.raster.raster_input import TileReader, choose_scaling
from engine.run.row_stream import stream_rows
from engine.run.runner import BatchRunner, use_compile_cache
from engine.run.runtimes import choose_runtime
from engine.run.scores import checked_scores
from engine.run.tiling import plan_tiles

from .conftest import SmallConvNet, make_card, seeded


class RecordingRunner:
    """A runner that keeps `in_flight` batches submitted and logs when each is submitted and
    when its scores are taken."""

    def __init__(self, runner: BatchRunner, in_flight: int) -> None:
        self.runner = runner
        self.in_flight = in_flight
        self.events: list[tuple[str, int]] = []

    def submit(self, batch: np.ndarray):
        number = sum(kind == "submit" for kind, _ in self.events)
        self.events.append(("submit", number))
        scores = self.runner(batch)
        events = self.events

        class Pending:
            def result(self) -> np.ndarray:
                events.append(("result", number))
                return scores

        return Pending()


def _rows(path, runner, tiles, size, card):
    with rasterio.open(path) as dataset:
        reader = TileReader(
            dataset, [1, 2, 3], choose_scaling(dataset, [1, 2, 3], card.input, "auto"), card.input
        )
        return list(
            stream_rows(
                reader,
                runner,
                tiles,
                size=size,
                height=dataset.height,
                width=dataset.width,
                num_classes=card.num_classes,
                batch_size=3,
                rows=(0, dataset.height),
                confidence_dtype="float32",
            )
        )


def test_batches_in_flight_give_the_same_rows_while_the_next_batch_runs(landsat_rgb):
    card = make_card(num_classes=3, bands=("blue", "green", "red"), tile=96, stride=64)
    runner = BatchRunner(seeded(SmallConvNet(3, 3), seed=1), torch.device("cpu"), 3, 3)
    with rasterio.open(landsat_rgb) as dataset:
        tiles = plan_tiles(dataset.height, dataset.width, 96, 64)
    plain = _rows(landsat_rgb, runner, tiles, 96, card)
    recording = RecordingRunner(runner, in_flight=2)
    overlapped = _rows(landsat_rgb, recording, tiles, 96, card)

    assert len(plain) == len(overlapped) > 1
    for a, b in zip(plain, overlapped, strict=True):
        assert a.top == b.top
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_array_equal(a.confidence, b.confidence)
    batches = -(-len(tiles) // 3)
    assert batches >= 3
    # Batch n + 1 is submitted before the scores of batch n are taken, every batch once.
    assert recording.events[:3] == [("submit", 0), ("submit", 1), ("result", 0)]
    for n in range(batches - 1):
        assert recording.events.index(("submit", n + 1)) < recording.events.index(("result", n))
    assert sorted(recording.events) == sorted(
        [("submit", n) for n in range(batches)] + [("result", n) for n in range(batches)]
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 2, 5, 7), (1, 2, 7, 7)])
def test_scores_not_finite_in_one_element_are_refused(bad, where):
    scores = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    scores[where] = bad
    with pytest.raises(ModelError) as caught:
        checked_scores(scores, (2, 5, 8, 8), 3)
    assert caught.value.code == "model.nonfinite"


def test_finite_scores_pass_unchanged_up_to_the_largest_float32():
    scores = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    scores[0, 0, 0, 0] = np.finfo(np.float32).max
    scores[1, 2, 7, 7] = np.finfo(np.float32).min
    assert checked_scores(scores, (2, 5, 8, 8), 3) is scores


def test_on_the_cpu_one_batch_is_in_flight():
    runner = BatchRunner(seeded(SmallConvNet(3, 3)), torch.device("cpu"), 3, 4)
    assert runner.in_flight == 1


def test_compiled_model_gives_the_eager_scores_from_a_cache(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("CROSSEARTH_CACHE_DIR", str(tmp_path / "cache"))
    # What torch sets as soon as a model module is imported: a temporary folder, not ours.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    model = seeded(SmallConvNet(3, 3), seed=2)
    eager = BatchRunner(model, torch.device("cpu"), 3, 4)
    fast = BatchRunner(model, torch.device("cpu"), 3, 4, compile=True)
    batch = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    # Six tiles at batch size 4: a full batch and a short one, padded to the compiled shape.
    # Inductor's kernels sum in another order than eager: measured up to 1.4e-5 apart in
    # float32 scores (10 of 18,432), never a different class.
    np.testing.assert_allclose(fast(batch), eager(batch), atol=1e-4)
    assert fast(batch[:1]).shape == (1, 3, 32, 32)
    compiled_files = list((tmp_path / "cache" / "torch-compile").rglob("*"))
    assert any(p.is_file() for p in compiled_files)


def test_a_compile_cache_the_user_chose_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSEARTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache() == tmp_path / "mine"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert use_compile_cache() == tmp_path / "cache" / "torch-compile"


def test_compiling_asks_for_pytorch():
    card = make_card()
    assert choose_runtime("auto", card, "cpu", 64, compile=True) == "torch"
    with pytest.raises(ConfigError) as error:
        choose_runtime("onnxruntime", card, "cpu", 64, compile=True)
    assert error.value.code == "option.compile"
    assert "PyTorch runtime" in str(error.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_two_batches_are_in_flight_and_give_the_cpu_scores():
    model = seeded(SmallConvNet(3, 3), seed=3)
    cpu = BatchRunner(model, torch.device("cpu"), 3, 4)
    gpu = BatchRunner(
        seeded(SmallConvNet(3, 3), seed=3).to("cuda"), torch.device("cuda"), 3, 4, amp=False
    )
    assert gpu.in_flight == 2
    batches = [
        np.random.default_rng(n).normal(size=(4, 3, 64, 64)).astype(np.float32) for n in range(3)
    ]
    pending = [gpu.submit(b) for b in batches]  # all queued before any result is taken
    for batch, handle in zip(batches, pending, strict=True):
        np.testing.assert_allclose(handle.result(), cpu(batch), atol=1e-4)
