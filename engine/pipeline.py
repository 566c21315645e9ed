"""The segmentation job: raster in, class raster out, one strip of rows in memory at a time."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .blending import StripAccumulator, decide_classes
from .errors import CrossEarthError, SegmentationCancelled
from .model_card import ModelCard
from .packages import ModelPackage, find_package
from .prefetch import Prefetcher
from .raster_input import (
    TileReader,
    choose_scaling,
    describe_bands,
    open_raster,
    parse_scaling,
    resolve_bands,
)
from .raster_output import StreamingGeoTiff, check_output_path, class_raster, confidence_raster
from .subset import extent_window, subset_vrt
from .tiling import Tile, blend_window, plan_tiles
from .vectorize import polygonize

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
CancelFlag = threading.Event | Callable[[], bool] | None


@dataclass
class LoadedModel:
    """A model ready to run: its card and the module (already on its device, in eval mode)."""

    card: ModelCard
    module: Any  # torch.nn.Module; typed loosely so this module imports without torch


@dataclass
class SegmentOptions:
    tile_size: int | None = None  # default: the card's
    overlap: int | None = None  # default: the card's overlap, scaled to the tile size
    batch_size: int = 4
    bands: list[int] | None = None  # 1-based source bands in the model's order
    scaling: str | tuple[float, float] = "auto"  # auto, none or (low, high)
    device: str = "auto"
    threads: int | None = None
    amp: bool = True
    confidence: Path | None = None
    confidence_dtype: str = "float32"
    polygons: Path | None = None  # GeoPackage of class polygons
    extent: tuple[float, float, float, float] | None = None  # in the raster's CRS


@dataclass
class SegmentResult:
    output: Path
    confidence: Path | None
    polygons: Path | None
    class_names: list[str]
    class_pixels: dict[str, int]
    nodata_pixels: int
    tiles: int
    tiles_skipped: int
    seconds: float
    device: str
    bands: list[int]
    scaling: str
    warnings: list[str] = field(default_factory=list)


def _cancel_check(cancel: CancelFlag) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def tile_geometry(card: ModelCard, options: SegmentOptions) -> tuple[int, int]:
    """(tile size, stride), checked against what the model can take."""
    size = options.tile_size or card.tile_size
    if size < card.size_multiple or size % card.size_multiple:
        raise CrossEarthError(
            f"tile size {size} cannot be used with model '{card.name}': it must be a multiple "
            f"of {card.size_multiple} (e.g. {card.tile_size})"
        )
    if options.overlap is None:
        card_overlap = card.tile_size - card.tile_stride
        overlap = round(size * card_overlap / card.tile_size)
    else:
        overlap = options.overlap
    if not 0 <= overlap < size:
        raise CrossEarthError(
            f"overlap {overlap} must be at least 0 and below the tile size {size}"
        )
    return size, size - overlap


@dataclass
class _Batch:
    tiles: list[Tile]
    inputs: list[np.ndarray | None]  # None: all-nodata tile, skipped
    valid: list[np.ndarray]


def _batches(reader: TileReader, tiles: list[Tile], size: int, batch_size: int) -> Iterator[_Batch]:
    batch = _Batch([], [], [])
    runnable = 0
    for tile in tiles:
        values, valid = reader.read_tile(tile.row, tile.col, size)
        batch.tiles.append(tile)
        batch.inputs.append(values if valid.any() else None)
        batch.valid.append(valid)
        runnable += bool(valid.any())
        if runnable == batch_size:
            yield batch
            batch, runnable = _Batch([], [], []), 0
    if batch.tiles:
        yield batch


def segment(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model: str | os.PathLike[str] | ModelPackage | LoadedModel | None = None,
    options: SegmentOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
) -> SegmentResult:
    """Segments a raster into a class GeoTIFF (and optionally a confidence GeoTIFF).

    `model` is a package path or installed name (None: the bundled default), a ModelPackage, or
    a LoadedModel. Raises CrossEarthError for bad input and SegmentationCancelled when `cancel`
    is set; in both cases no output file is left behind.
    """
    import torch

    from .devices import resolve_device
    from .runner import BatchRunner, set_cpu_threads

    options = options or SegmentOptions()
    report = progress or (lambda fraction, message: None)
    is_cancelled = _cancel_check(cancel)
    started = time.perf_counter()
    input_path = Path(input_path)
    warnings_out: list[str] = []

    output = check_output_path(Path(output_path), [input_path])
    confidence_out = None
    if options.confidence is not None:
        confidence_out = check_output_path(Path(options.confidence), [input_path, output])
        if confidence_out == output:
            raise CrossEarthError("the confidence raster must have another name than the output")
    polygons_out = None
    if options.polygons is not None:
        polygons_out = check_output_path(Path(options.polygons), [input_path, output])
        if polygons_out.suffix.lower() != ".gpkg":
            raise CrossEarthError(
                f"polygon output {polygons_out.name} must be a GeoPackage (.gpkg)"
            )
    scaling_request = (
        parse_scaling(options.scaling) if isinstance(options.scaling, str) else options.scaling
    )
    device = resolve_device(options.device)
    set_cpu_threads(options.threads)

    scratch = tempfile.TemporaryDirectory(prefix="crossearth-")
    source = input_path
    if options.extent is not None:
        with open_raster(input_path) as dataset:
            window = extent_window(dataset, options.extent)
        source = subset_vrt(input_path, window, Path(scratch.name))
    with scratch, open_raster(source) as reader_ds:
        if isinstance(model, LoadedModel):
            card = model.card
        else:
            package = model if isinstance(model, ModelPackage) else find_package(model)
            card = package.card
        bands = resolve_bands(reader_ds, card.input, options.bands)
        size, stride = tile_geometry(card, options)
        if reader_ds.crs is None:
            message = f"{input_path.name} has no CRS; the output will have none either"
            log.warning(message)
            warnings_out.append(message)
        scaling = choose_scaling(reader_ds, bands, card.input, scaling_request)
        log.info(
            "bands %s (%s) -> model %s; scaling: %s",
            bands,
            ", ".join(describe_bands(reader_ds)[b - 1] for b in bands),
            ", ".join(card.input.bands),
            scaling.description,
        )
        report(0.0, f"loading model {card.name} on {device}")
        loaded = (
            model if isinstance(model, LoadedModel) else LoadedModel(card, _load(package, device))
        )
        runner = BatchRunner(
            loaded.module, device, card.num_classes, options.batch_size, amp=options.amp
        )

        height, width = reader_ds.height, reader_ds.width
        tiles = plan_tiles(height, width, size, stride)
        window = blend_window(size)
        strip = StripAccumulator(card.num_classes, size, width)
        profile = {
            "height": height,
            "width": width,
            "crs": reader_ds.crs,
            "transform": reader_ds.transform,
        }
        tags = {
            "CROSSEARTH_MODEL": card.name,
            "CROSSEARTH_MODEL_VERSION": card.version,
            "CROSSEARTH_SOURCE": input_path.name,
        }

        writers: list[StreamingGeoTiff] = []
        prefetch: Prefetcher[_Batch] | None = None
        counts = np.zeros(card.num_classes, np.int64)
        nodata_pixels = 0
        skipped = 0
        try:
            classes_out = class_raster(
                output, profile, card.class_names, [c.color for c in card.classes], tags
            )
            writers.append(classes_out)
            conf_out = None
            if confidence_out is not None:
                conf_out = confidence_raster(
                    confidence_out, profile, options.confidence_dtype, tags
                )
                writers.append(conf_out)
            class_nodata = classes_out.nodata

            def write_released(until_row: int) -> None:
                nonlocal nodata_pixels
                released = strip.release(until_row)
                if released is None:
                    return
                _, scores, weights, source_valid = released
                classes, confidence, covered = decide_classes(
                    scores, weights, with_confidence=conf_out is not None
                )
                valid = covered & source_valid
                classes = classes.astype(classes_out.dtype, copy=False)
                invalid = ~valid
                classes[invalid] = class_nodata
                # Nodata is a value no class has, so one histogram of all pixels counts both.
                counts[:] += np.bincount(classes.ravel(), minlength=card.num_classes)[
                    : card.num_classes
                ]
                nodata_pixels += int(invalid.sum())
                classes_out.write_rows(classes)
                if conf_out is not None:
                    assert confidence is not None
                    if options.confidence_dtype == "uint8":
                        confidence = np.rint(confidence * 100).astype(np.uint8)
                        confidence[invalid] = 255
                    else:
                        confidence[invalid] = -1.0
                    conf_out.write_rows(confidence)

            prefetch = Prefetcher(
                _batches(
                    TileReader(reader_ds, bands, scaling, card.input),
                    tiles,
                    size,
                    options.batch_size,
                )
            )
            done = 0
            report(0.0, f"segmenting {len(tiles)} tiles of {size} px on {device}")
            for batch in prefetch:
                if is_cancelled():
                    raise SegmentationCancelled()
                runnable = [x for x in batch.inputs if x is not None]
                scores = runner(np.stack(runnable)) if runnable else None
                position = 0
                for tile, inputs, valid in zip(batch.tiles, batch.inputs, batch.valid, strict=True):
                    write_released(tile.row)
                    if inputs is None:
                        skipped += 1
                        continue
                    tile_h = min(size, height - tile.row)
                    tile_w = min(size, width - tile.col)
                    strip.add(
                        scores[position, :, :tile_h, :tile_w],
                        window[:tile_h, :tile_w],
                        tile.row,
                        tile.col,
                        valid[:tile_h, :tile_w],
                    )
                    position += 1
                done += len(batch.tiles)
                report(0.95 * done / len(tiles), f"tile {done}/{len(tiles)}")
            write_released(height)
            if is_cancelled():
                raise SegmentationCancelled()
            report(0.96, "building overviews")
            for writer in writers:
                writer.commit()
        except BaseException:
            for writer in writers:
                writer.discard()
            raise
        finally:
            if prefetch is not None:
                prefetch.close()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    if polygons_out is not None:
        report(0.98, "vectorizing classes")
        try:
            if is_cancelled():
                raise SegmentationCancelled()
            polygonize(output, polygons_out, card.class_names)
        except BaseException:
            # The run's outputs go together: without the polygons, none of them remains.
            for path in (output, confidence_out, Path(f"{output}.aux.xml")):
                if path is not None:
                    path.unlink(missing_ok=True)
            raise
    seconds = time.perf_counter() - started
    report(1.0, f"done in {seconds:.1f} s")
    return SegmentResult(
        output=output,
        confidence=confidence_out,
        polygons=polygons_out,
        class_names=card.class_names,
        class_pixels={n: int(c) for n, c in zip(card.class_names, counts, strict=True)},
        nodata_pixels=nodata_pixels,
        tiles=len(tiles),
        tiles_skipped=skipped,
        seconds=seconds,
        device=str(device),
        bands=bands,
        scaling=scaling.description,
        warnings=warnings_out,
    )


def _load(package: ModelPackage, device: Any) -> Any:
    from .loading import load_package_model

    return load_package_model(package, device)
