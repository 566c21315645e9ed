"""The segmentation job: raster in, class raster out, one strip of rows in memory at a time."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .cancel import CancelFlag, cancel_check
from .errors import ConfigError, CrossEarthError, SegmentationCancelled
from .files import create_scratch_folder, describe_path, remove_temporary
from .memory import check_fits, segmentation_bytes
from .model_card import ModelCard
from .output_paths import RunOutputs, clear_stale_temporaries, dataset_files, plan_outputs
from .packages import ModelPackage, find_package
from .postprocess import class_indices, parse_min_region, sieve, sieve_bytes
from .raster_input import (
    TileReader,
    ValueScaling,
    choose_scaling,
    describe_bands,
    open_raster,
    parse_scaling,
    resolve_bands,
    source_name,
    source_path,
)
from .raster_output import (
    CONFIDENCE_NODATA,
    StreamingGeoTiff,
    class_raster,
    confidence_raster,
)
from .resolution import (
    ProcessingResolution,
    parse_gsd,
    processing_resolution,
    raster_gsd_m,
    source_geometry,
)
from .row_stream import DecidedRows, stream_rows
from .runtimes import LoadedModel
from .subset import extent_window, subset_vrt, warp_to_gsd
from .tiling import plan_tiles
from .vectorize import polygonize

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]


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
    overwrite: bool = False  # replace existing output files (never an input)
    gsd: str | float = "auto"  # processing resolution: auto (the model's), native, or metres
    output_grid: str = "source"  # source: the input's grid; model: the processing grid
    min_region: str | None = None  # sieve: pixels ("20", "20px") or area ("5000m2", "0.5ha")
    keep_classes: list[str] | None = None  # classes whose small regions are kept
    simplify_m: float | None = None  # polygon simplification tolerance in metres
    runtime: str = "auto"  # auto, torch, onnxruntime or openvino (engine/runtimes.py)
    compile: bool = False  # torch.compile the model (PyTorch runtime; engine/runner.py)


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
    resolution: str = ""
    # Optional outputs the run could not write ({"polygons": "the disk is full ..."}); the
    # class raster is complete and in place all the same.
    failed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls: type[_Result],
        job: Job,
        *,
        counts: Any,
        nodata_pixels: int,
        tiles: int,
        tiles_skipped: int,
        seconds: float,
        device: str,
        failed: dict[str, str] | None = None,
        **extra: Any,
    ) -> _Result:
        """What a finished job wrote and how it ran (`extra`: a subclass's own fields)."""
        names = job.card.class_names
        failed = failed or {}
        return cls(
            output=job.outputs.classes,
            confidence=None if "confidence" in failed else job.outputs.confidence,
            polygons=None if "polygons" in failed else job.outputs.polygons,
            class_names=names,
            class_pixels={n: int(c) for n, c in zip(names, counts, strict=True)},
            nodata_pixels=nodata_pixels,
            tiles=tiles,
            tiles_skipped=tiles_skipped,
            seconds=seconds,
            device=device,
            bands=job.bands,
            scaling=job.scaling.description,
            warnings=job.warnings,
            resolution=job.resolution.description,
            failed=failed,
            **extra,
        )


_Result = TypeVar("_Result", bound=SegmentResult)


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
class Job:
    """Everything decided before the first tile is read (single-process and sharded runs
    share it, so both read, scale and tile the raster identically)."""

    card: ModelCard
    package: ModelPackage | None
    outputs: RunOutputs
    bands: list[int]
    scaling: ValueScaling
    size: int  # tile and stride in source pixels
    stride: int
    warnings: list[str]
    resolution: ProcessingResolution
    model_tile: int  # the tile as the network sees it (before the card's input scale)
    sieve_pixels: int = 0  # minimum region size in source pixels (0: no sieve)
    keep_classes: tuple[int, ...] = ()


class OutputWriter:
    """Streams decided rows into the run's class (and confidence) GeoTIFFs, counting classes;
    `finish` completes the files, `publish` renames them into place, `discard` removes them."""

    def __init__(
        self,
        card: ModelCard,
        outputs: RunOutputs,
        profile: dict[str, Any],
        tags: dict[str, str],
        confidence_dtype: str,
    ) -> None:
        self.num_classes = card.num_classes
        self.confidence_dtype = confidence_dtype
        self.counts = np.zeros(card.num_classes, np.int64)
        self.nodata_pixels = 0
        self.files: list[StreamingGeoTiff] = []
        try:
            self.classes = class_raster(
                outputs.classes, profile, card.class_names, [c.color for c in card.classes], tags
            )
            self.files.append(self.classes)
            self.confidence = None
            if outputs.confidence is not None:
                self.confidence = confidence_raster(
                    outputs.confidence, profile, confidence_dtype, tags
                )
                self.files.append(self.confidence)
        except BaseException:
            self.discard()
            raise

    def write(self, rows: DecidedRows) -> None:
        """Appends the next decided rows to the files and adds them to the class counts."""
        # Nodata is a value no class has, so one histogram of all pixels counts both.
        self.counts += np.bincount(rows.classes.ravel(), minlength=self.num_classes)[
            : self.num_classes
        ]
        self.nodata_pixels += rows.nodata_pixels
        self.classes.write_rows(rows.classes)
        if self.confidence is not None:
            assert rows.confidence is not None
            self.confidence.write_rows(rows.confidence)

    def finish_classes(self, sieve_pixels: int = 0, keep_classes: tuple[int, ...] = ()) -> None:
        """Completes the class raster; a minimum region size sieves it first (and the class
        counts follow it)."""
        postprocess = None
        if sieve_pixels > 1:

            def postprocess(path: Path) -> None:
                self.counts = sieve(path, sieve_pixels, list(keep_classes), self.num_classes)

        self.classes.finish(postprocess)

    def publish_classes(self) -> list[Path]:
        """Renames the finished class raster (and its .aux.xml) into place; returns both."""
        published = self.classes.publish()
        aux = Path(f"{published}.aux.xml")
        return [published, aux] if aux.exists() else [published]

    def complete_confidence(self) -> str | None:
        """Finishes and publishes the confidence raster, if the run makes one. A failure is
        returned as its one line and the confidence file removed: the class raster, already
        in place, stands."""
        if self.confidence is None:
            return None
        try:
            self.confidence.finish()
            self.confidence.publish()
        except CrossEarthError as exc:
            self.confidence.discard()
            return str(exc)
        return None

    def discard(self) -> None:
        """Removes the unfinished files; nothing that existed before the run is touched."""
        for file in self.files:
            file.discard()


def prepare_job(
    reader_ds: Any,
    input_path: Path | str,
    output_path: Path,
    model: str | os.PathLike[str] | ModelPackage | LoadedModel | None,
    options: SegmentOptions,
    input_files: list[Path],
) -> Job:
    """Checks destinations, model, bands, scaling, tile geometry and memory: every input
    error is raised here, before the model is loaded or any file is created."""
    outputs = plan_outputs(
        output_path,
        input_files,
        confidence=options.confidence,
        polygons=options.polygons,
        overwrite=options.overwrite,
    )
    if options.confidence_dtype not in CONFIDENCE_NODATA:
        raise CrossEarthError(
            f"confidence type '{options.confidence_dtype}' is not valid; use float32 or uint8"
        )
    scaling_request = (
        parse_scaling(options.scaling) if isinstance(options.scaling, str) else options.scaling
    )
    if isinstance(model, LoadedModel):
        card, package = model.card, None
    else:
        package = model if isinstance(model, ModelPackage) else find_package(model)
        card = package.card
    warnings_out = clear_stale_temporaries(outputs)
    bands = resolve_bands(reader_ds, card.input, options.bands)
    resolution = processing_resolution(
        parse_gsd(options.gsd), raster_gsd_m(reader_ds), card.gsd_m, card.name
    )
    warnings_out += resolution.notes
    model_size, model_stride = tile_geometry(card, options)
    height, width = reader_ds.height, reader_ds.width
    if resolution.factor == 1.0:
        size, stride = fit_tile_to_raster(model_size, model_stride, height, width, card)
        model_tile = size
    else:
        size, stride, model_tile = source_geometry(
            model_size, model_stride, resolution.factor, height, width, card.size_multiple
        )
    check_fits(
        segmentation_bytes(
            tile=size,
            batch=options.batch_size,
            bands=len(bands),
            classes=card.num_classes,
            width=reader_ds.width,
            input_scale=card.input_scale * model_tile / size,
        ),
        f"segmenting with tiles of {size} px in batches of {options.batch_size}",
        "use a smaller tile size or batch size",
        ("tile", "batch"),
    )
    if reader_ds.crs is None:
        message = (
            f"{describe_path(source_name(input_path))} has no CRS; the output will have none either"
        )
        log.info(message)  # reported once, with the run's other warnings
        warnings_out.append(message)
    scaling = choose_scaling(reader_ds, bands, card.input, scaling_request)
    log.info(
        "bands %s (%s) -> model %s; scaling: %s",
        bands,
        ", ".join(describe_bands(reader_ds)[b - 1] for b in bands),
        ", ".join(card.input.bands),
        scaling.description,
    )
    sieve_pixels = 0
    minimum = parse_min_region(options.min_region)
    raster_gsd = raster_gsd_m(reader_ds)
    if minimum is not None:
        sieve_pixels = minimum.pixels(raster_gsd**2 if raster_gsd else None)
    if sieve_pixels > 1:
        check_fits(
            sieve_bytes(height, width),
            f"the minimum region filter on {height} x {width} px",
            "segment a smaller extent, or leave the minimum region out and filter the result "
            "afterwards (QGIS: Raster > Analysis > Sieve)",
            ("min_region",),
        )
    keep = class_indices(options.keep_classes, card.class_names)
    if options.simplify_m is not None and not (
        math.isfinite(options.simplify_m) and options.simplify_m >= 0
    ):
        raise ConfigError(
            f"simplify {options.simplify_m} must be a distance in metres >= 0",
            code="option.simplify",
            option="simplify",
            value=options.simplify_m,
        )
    if options.simplify_m and outputs.polygons is None:
        warnings_out.append("simplify applies to class polygons; ask for polygons too")
    return Job(
        card,
        package,
        outputs,
        bands,
        scaling,
        size,
        stride,
        warnings_out,
        resolution,
        model_tile,
        sieve_pixels,
        tuple(keep),
    )


def fit_tile_to_raster(
    size: int, stride: int, height: int, width: int, card: ModelCard
) -> tuple[int, int]:
    """A tile larger than the raster is clamped to it (rounded up to the model's size
    multiple): one tile then covers everything, and no memory is spent on padding."""
    longest = max(height, width)
    if size <= longest:
        return size, stride
    multiple = card.size_multiple
    clamped = max(multiple, -(-longest // multiple) * multiple)
    if clamped >= size:
        return size, stride
    overlap = round((size - stride) * clamped / size)
    return clamped, max(1, clamped - overlap)


def input_files_of(input_path: Path | str) -> list[Path]:
    """Every file GDAL reads for the input (checked against every file a run writes)."""
    with open_raster(input_path) as dataset:
        return dataset_files(dataset, input_path)


def segment(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model: str | os.PathLike[str] | ModelPackage | LoadedModel | None = None,
    options: SegmentOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
) -> SegmentResult:
    """Segments a raster into a class GeoTIFF (and optionally a confidence GeoTIFF and class
    polygons).

    `model` is a package path or installed name (None: the bundled default), a ModelPackage, or
    a LoadedModel. Raises CrossEarthError for bad input and SegmentationCancelled when `cancel`
    is set; in both cases no output file is left behind and no existing file is touched.
    """
    options = options or SegmentOptions()
    report = progress or (lambda fraction, message: None)
    is_cancelled = cancel_check(cancel)
    started = time.perf_counter()
    input_path = source_path(input_path)
    input_files = input_files_of(input_path)
    if options.output_grid not in ("source", "model"):
        raise CrossEarthError(
            f"output grid '{options.output_grid}' is not valid; use source or model"
        )
    scratch: Path | None = None
    try:
        source = input_path
        if options.extent is not None:
            with open_raster(input_path) as dataset:
                window = extent_window(dataset, options.extent)
            scratch = create_scratch_folder()
            source = subset_vrt(input_path, window, scratch)
        if options.output_grid == "model":
            scratch = scratch or create_scratch_folder()
            source = on_processing_grid(source, model, options, scratch)
        with open_raster(source) as reader_ds:
            job = prepare_job(reader_ds, input_path, Path(output_path), model, options, input_files)
            loaded = model if isinstance(model, LoadedModel) else None
            tiles, counts, nodata_pixels, skipped, device, failed = _run(
                reader_ds, input_path, job, loaded, options, report, is_cancelled
            )
    finally:
        if scratch is not None:
            remove_temporary(scratch)
    seconds = time.perf_counter() - started
    report(1.0, f"done in {seconds:.1f} s")
    return SegmentResult.of(
        job,
        counts=counts,
        nodata_pixels=nodata_pixels,
        tiles=tiles,
        tiles_skipped=skipped,
        seconds=seconds,
        device=device,
        failed=failed,
    )


def on_processing_grid(
    source: Path | str,
    model: str | os.PathLike[str] | ModelPackage | LoadedModel | None,
    options: SegmentOptions,
    scratch: Path,
) -> Path | str:
    """For `output_grid="model"`: a VRT of the source warped to the processing GSD (area
    average when coarsening, bilinear when refining); the run then needs no resampling and
    writes on that grid."""
    if isinstance(model, LoadedModel):
        card = model.card
    else:
        card = (model if isinstance(model, ModelPackage) else find_package(model)).card
    with open_raster(source) as dataset:
        resolution = processing_resolution(
            parse_gsd(options.gsd), raster_gsd_m(dataset), card.gsd_m, card.name
        )
        if resolution.factor == 1.0:
            return source
        return warp_to_gsd(source, dataset, resolution, scratch)


def _run(
    reader_ds: Any,
    input_path: Path | str,
    job: Job,
    loaded: LoadedModel | None,
    options: SegmentOptions,
    report: ProgressCallback,
    is_cancelled: Callable[[], bool],
) -> tuple[int, np.ndarray, int, int, str, dict[str, str]]:
    """Loads the model, streams the tiles through it into the outputs, and publishes them.
    Returns (tiles, class counts, nodata pixels, skipped tiles, device, failed outputs)."""
    from .runtimes import choose_runtime, is_loaded, load_model, make_runner, release

    card, size, stride = job.card, job.size, job.stride
    if loaded is None:
        assert job.package is not None
        runtime = choose_runtime(
            options.runtime, card, options.device, job.model_tile, options.compile
        )
        if runtime == "torch":
            from .devices import resolve_device

            resolve_device(options.device)  # a missing GPU is refused before loading starts
        if is_loaded(job.package, options.device, options.threads, runtime):
            report(0.0, f"model {card.name} ({runtime}) is loaded already")
        else:
            report(0.0, f"loading model {card.name} ({runtime})")
        loaded = load_model(job.package, options.device, options.threads, runtime)
    device = loaded.device if loaded.runtime == "torch" else f"cpu ({loaded.runtime})"
    resampled = job.resolution.factor != 1.0
    runner = make_runner(
        loaded,
        options.batch_size,
        options.amp,
        job.model_tile if resampled else None,
        compile=options.compile,
    )

    height, width = reader_ds.height, reader_ds.width
    tiles = plan_tiles(height, width, size, stride)
    profile = {
        "height": height,
        "width": width,
        "crs": reader_ds.crs,
        "transform": reader_ds.transform,
    }
    tags = {
        "CROSSEARTH_MODEL": card.name,
        "CROSSEARTH_MODEL_VERSION": card.version,
        "CROSSEARTH_SOURCE": describe_path(source_name(input_path)),
    }
    writer: OutputWriter | None = None
    counted = {"skipped": 0}

    def tiles_done(done: int, skipped: int) -> None:
        counted["skipped"] = skipped
        report(0.95 * done / len(tiles), f"tile {done}/{len(tiles)}")

    try:
        writer = OutputWriter(card, job.outputs, profile, tags, options.confidence_dtype)
        report(0.0, f"segmenting {len(tiles)} tiles of {size} px on {device}")
        for rows in stream_rows(
            TileReader(reader_ds, job.bands, job.scaling, card.input),
            runner,
            tiles,
            size=size,
            height=height,
            width=width,
            num_classes=card.num_classes,
            batch_size=options.batch_size,
            rows=(0, height),
            confidence_dtype=options.confidence_dtype if job.outputs.confidence else None,
            is_cancelled=is_cancelled,
            on_tiles=tiles_done,
        ):
            writer.write(rows)
        failed = complete_outputs(writer, job, options, report, is_cancelled)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        release(loaded)
    return len(tiles), writer.counts, writer.nodata_pixels, counted["skipped"], device, failed


def complete_outputs(
    writer: OutputWriter,
    job: Job,
    options: SegmentOptions,
    report: ProgressCallback,
    is_cancelled: Callable[[], bool],
) -> dict[str, str]:
    """Finishes the written rows into the run's outputs. The class raster is finished (sieve,
    overviews) and published first; the confidence raster and the polygons follow, and a
    failure of either (a full disk, a layer that cannot be written) is returned as one line
    per output ({"polygons": "..."}): a complete class raster is never discarded for them. A
    cancel removes every output the run published. Single-process and sharded runs end with
    this same step."""
    report(0.96, "building overviews")
    writer.finish_classes(job.sieve_pixels, job.keep_classes)
    if is_cancelled():
        raise SegmentationCancelled()
    published = writer.publish_classes()
    failed: dict[str, str] = {}
    try:
        problem = writer.complete_confidence()
        if problem is not None:
            failed["confidence"] = problem
        elif job.outputs.confidence is not None:
            published.append(job.outputs.confidence)
        if job.outputs.polygons is not None:
            report(0.98, "vectorizing classes")
            if is_cancelled():
                raise SegmentationCancelled()
            try:
                polygonize(
                    job.outputs.classes,
                    job.outputs.polygons,
                    job.card.class_names,
                    simplify_m=options.simplify_m,
                )
            except CrossEarthError as exc:
                failed["polygons"] = str(exc)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    for name, problem in failed.items():
        log.info("%s not written: %s", name, problem)  # the caller reports it
    return failed
