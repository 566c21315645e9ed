"""The model worker of a sharded run: a Ray actor that loads the model once and turns shards
into part files.

The class is plain Python (Ray wraps it in `remote_worker_class`), so this module imports
without Ray. A worker opens the raster itself and reads its shard's windows (no image data
goes through the driver). Input errors come back as a `WorkerFailure` value holding the
engine's one-line message (a deterministic failure: the driver stops the run), while a worker
that dies surfaces in the driver as Ray's actor error (the shard is retried elsewhere).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.distributed.parts import PartInfo, PartWriter
from engine.distributed.shards import Shard
from engine.errors import CrossEarthError
from engine.files import describe_path
from engine.models.packages import ModelPackage
from engine.raster.raster_input import TileReader, ValueScaling, open_raster
from engine.raster.raster_output import class_encoding
from engine.run.row_stream import stream_rows


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, as plain picklable values (decided once by the driver)."""

    source: str  # the raster the workers read: the input, or the VRT of its extent
    height: int
    width: int
    package: ModelPackage
    bands: tuple[int, ...]
    scaling: ValueScaling
    size: int
    model_tile: int | None  # the network's tile when it runs at another GSD (else None)
    batch_size: int
    confidence_dtype: str | None
    device: str  # "cpu" or "cuda" (Ray makes the actor's own GPU cuda:0)
    threads: int | None
    amp: bool
    work_folder: str
    runtime: str = "torch"  # decided by the driver (engine/run/runtimes.py)
    compile: bool = False  # torch.compile the model (engine/run/runner.py)


@dataclass(frozen=True)
class WorkerFailure:
    """A deterministic failure (damaged data, unreadable input) as its one-line message."""

    message: str


class _SkipCounter:
    """Wraps a TileReader and counts the shard's own tiles that are all nodata (skipped), so
    the run's skipped-tile count equals a single-process run's despite the halo."""

    def __init__(self, reader: TileReader, first: int, end: int) -> None:
        self.reader = reader
        self.first, self.end = first, end
        self.skipped = 0

    def read_tile(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        values, valid = self.reader.read_tile(row, col, size)
        if self.first <= row < self.end and not valid.any():
            self.skipped += 1
        return values, valid


class ShardWorker:
    """One model worker: `prepare` opens the raster and loads the model, `run` does a shard."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._dataset: Any = None
        self._runner: Any = None
        self._tiles_done = 0
        self._shard: int | None = None
        self._lock = threading.Lock()
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def pid(self) -> int:
        """The worker's process id, so the driver can tell workers apart in messages."""
        return os.getpid()

    def progress(self) -> int:
        """Tiles done in the shard now running (answered while `run` works: the actor runs
        two calls at a time, and the driver never sends it two shards at once)."""
        with self._lock:
            return self._tiles_done

    def state(self) -> tuple[int | None, int]:
        """(index of the shard now running or None, its tiles done so far)."""
        with self._lock:
            return self._shard, self._tiles_done

    def prepare(self) -> dict[str, Any]:
        """Opens the raster and loads the model; returns who and where the worker is, with
        `error` set when it cannot do the job (checked before any shard is sent)."""
        info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            info["device"] = self._prepare()
        except CrossEarthError as exc:
            info["error"] = str(exc)
        return info

    def _prepare(self) -> str:
        from engine.run.runtimes import load_model, make_runner

        spec = self.spec
        dataset = open_raster(spec.source)
        if (dataset.height, dataset.width) != (spec.height, spec.width):
            shape = f"{dataset.height} x {dataset.width}"
            dataset.close()
            raise CrossEarthError(
                f"{describe_path(spec.source)} is {shape} pixels here but {spec.height} x "
                f"{spec.width} where the run started: it is a different file"
            )
        self._dataset = dataset
        weights = spec.package.weights_path
        if not weights.is_file():
            raise CrossEarthError(f"the model weights {describe_path(weights)} do not exist here")
        loaded = load_model(spec.package, spec.device, spec.threads, spec.runtime)
        self._runner = make_runner(loaded, spec.batch_size, spec.amp, spec.model_tile, spec.compile)
        return loaded.device

    def _on_tiles(self, done: int, skipped: int) -> None:
        with self._lock:
            self._tiles_done = done

    def run(self, shard: Shard) -> PartInfo | WorkerFailure:
        """Streams the shard's tiles through the model into its part files."""
        started = time.perf_counter()
        with self._lock:
            self._tiles_done, self._shard = 0, shard.index
        try:
            return self._run(shard, started)
        finally:
            with self._lock:
                self._shard = None

    def _run(self, shard: Shard, started: float) -> PartInfo | WorkerFailure:
        from engine.run.runner import set_cpu_threads

        spec, card = self.spec, self.spec.package.card
        if self._runner is None:
            return WorkerFailure("internal error: a shard was sent to a worker not prepared")
        try:
            # Thread counts are per calling thread for some OpenMP runtimes; set them where the
            # model runs.
            set_cpu_threads(spec.threads)
            reader = _SkipCounter(
                TileReader(self._dataset, list(spec.bands), spec.scaling, card.input),
                shard.first,
                shard.end,
            )
            writer = PartWriter(
                Path(spec.work_folder),
                shard.index,
                shard.first,
                shard.end,
                spec.width,
                card.num_classes,
                class_encoding(card.num_classes)[0],
                spec.confidence_dtype,
            )
            try:
                for rows in stream_rows(
                    reader,  # type: ignore[arg-type]  # a TileReader with a skip counter
                    self._runner,
                    shard.tiles,
                    size=spec.size,
                    height=spec.height,
                    width=spec.width,
                    num_classes=card.num_classes,
                    batch_size=spec.batch_size,
                    rows=(shard.first, shard.end),
                    confidence_dtype=spec.confidence_dtype,
                    on_tiles=self._on_tiles,
                ):
                    writer.write(rows)
                return writer.finish(
                    tiles=len(shard.tiles),
                    tiles_skipped=reader.skipped,
                    seconds=time.perf_counter() - started,
                    worker=self.name,
                )
            except BaseException:
                writer.discard()
                raise
        except CrossEarthError as exc:
            return WorkerFailure(str(exc))


def remote_worker_class(num_cpus: float, num_gpus: float) -> Any:
    """ShardWorker as a Ray actor class holding `num_cpus` CPUs and `num_gpus` GPUs."""
    import ray

    # Ray's overloads list task options only; actor options such as max_concurrency are valid.
    decorator = ray.remote(  # type: ignore[call-overload]
        num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=2
    )
    return decorator(ShardWorker)
