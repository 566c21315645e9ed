"""One plan per job: everything a segmentation decides before the first tile is read.

`plan_segment` turns a request (input, output, model, options) into a frozen Plan. It finds the
package once, opens the input once (its files, the extent's window, its pixel size), resolves
the processing resolution once, makes the VRTs of an extent or of the processing grid, and on
the raster actually read decides bands, scaling, tile geometry, memory, the minimum region and
the runtime. Every input error is raised here, before a model is loaded or an output exists.
The local pipeline, the Ray driver and batch all run a Plan; none re-reads or re-resolves.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import CrossEarthError
from engine.files import (
    create_scratch_folder,
    create_temporary_folder,
    describe_path,
    remove_temporary,
)
from engine.models.model_card import ModelCard
from engine.models.packages import ModelPackage, find_package
from engine.raster.postprocess import class_indices, parse_min_region, sieve_bytes
from engine.raster.raster_input import (
    ValueScaling,
    choose_scaling,
    describe_bands,
    open_raster,
    parse_scaling,
    resolve_bands,
    scaling_warning,
    source_name,
    source_path,
    unnamed_bands_note,
)
from engine.raster.resolution import (
    ProcessingResolution,
    parse_gsd,
    processing_resolution,
    raster_gsd_m,
    source_geometry,
)
from engine.raster.subset import extent_window, subset_vrt, warp_to_gsd
from engine.run.memory import check_fits, segmentation_bytes
from engine.run.options import SegmentOptions, check_options
from engine.run.output_paths import RunOutputs, clear_stale_temporaries, dataset_files, plan_outputs
from engine.run.runtimes import LoadedModel

log = logging.getLogger(__name__)

ModelRequest = str | os.PathLike[str] | ModelPackage | LoadedModel | None


@dataclass(frozen=True)
class Plan:
    """A job, decided. `source` is what the run reads: the input, or a VRT (in `scratch`) of
    its extent or of the processing grid; whoever runs the plan removes `scratch` after."""

    input: Path | str
    input_files: tuple[Path, ...]  # every file GDAL reads for the input: no output replaces one
    source: Path | str
    window: Any  # the extent's window of the input; None: the whole raster
    scratch: Path | None
    options: SegmentOptions
    card: ModelCard
    package: ModelPackage | None  # None when the caller handed a loaded model
    loaded: LoadedModel | None
    runtime: str | None  # what runs the model here; None for a sharded run (per worker)
    outputs: RunOutputs
    bands: list[int]
    scaling: ValueScaling
    resolution: ProcessingResolution
    size: int  # tile and stride in source pixels
    stride: int
    model_tile: int  # the tile as the network sees it (before the card's input scale)
    height: int
    width: int
    crs: Any
    transform: Any
    warnings: tuple[str, ...]
    sieve_pixels: int = 0  # minimum region size in source pixels (0: no sieve)
    keep_classes: tuple[int, ...] = ()

    @property
    def profile(self) -> dict[str, Any]:
        """The output grid: the raster read (the input, its extent, or the processing grid)."""
        return {key: getattr(self, key) for key in ("height", "width", "crs", "transform")}

    @property
    def tags(self) -> dict[str, str]:
        """The tags every output of the job carries."""
        return {
            "CROSSEARTH_MODEL": self.card.name,
            "CROSSEARTH_MODEL_VERSION": self.card.version,
            "CROSSEARTH_SOURCE": describe_path(source_name(self.input)),
        }

    @property
    def resampled_tile(self) -> int | None:
        """The network's tile when tiles are resampled on the fly (None: read as they are)."""
        return self.model_tile if self.resolution.factor != 1.0 else None

    def remove_scratch(self) -> None:
        """Removes the plan's scratch folder (its VRTs), if it has one."""
        if self.scratch is not None:
            remove_temporary(self.scratch)


@dataclass(frozen=True)
class _Grid:
    """The pixel grid of the input, or of the extent's window of it (what raster_gsd_m and
    warp_to_gsd read of a dataset)."""

    crs: Any
    transform: Any
    width: int
    height: int


def plan_segment(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model: ModelRequest,
    options: SegmentOptions,
    *,
    sharded: bool = False,
) -> Plan:
    """The Plan of one job. `sharded`: the VRTs go beside the output (every Ray worker that
    can write the output can read them) and the runtime is left to each worker's device."""
    check_options(options)
    input_path = source_path(input_path)
    with open_raster(input_path) as dataset:
        input_files = dataset_files(dataset, input_path)
        outputs = plan_outputs(
            Path(output_path),
            input_files,
            confidence=options.confidence,
            polygons=options.polygons,
            overwrite=options.overwrite,
        )
        window = extent_window(dataset, options.extent) if options.extent is not None else None
        grid = _grid_of(dataset, window)
    card, package, loaded = _model_of(model)
    resolution = processing_resolution(
        parse_gsd(options.gsd), raster_gsd_m(grid), card.gsd_m, card.name
    )
    regrid = options.output_grid == "model" and resolution.factor != 1.0
    scratch = None
    if window is not None or regrid:
        scratch = create_temporary_folder(outputs.classes) if sharded else create_scratch_folder()
    try:
        source: Path | str = input_path
        if window is not None:
            assert scratch is not None
            source = subset_vrt(input_path, window, scratch)
        if regrid:
            assert scratch is not None
            source = warp_to_gsd(source, grid, resolution, scratch)
            resolution = _on_processing_grid(resolution)
        with open_raster(source) as reader:
            return _decide(
                reader,
                input_path,
                tuple(input_files),
                source,
                window,
                scratch,
                options,
                (card, package, loaded),
                outputs,
                resolution,
                sharded,
            )
    except BaseException:
        if scratch is not None:
            remove_temporary(scratch)
        raise


def _model_of(model: ModelRequest) -> tuple[ModelCard, ModelPackage | None, LoadedModel | None]:
    """(card, package, loaded model) of the request; the package is found once, here."""
    if isinstance(model, LoadedModel):
        return model.card, None, model
    package = model if isinstance(model, ModelPackage) else find_package(model)
    return package.card, package, None


def _grid_of(dataset: Any, window: Any) -> _Grid:
    if window is None:
        return _Grid(dataset.crs, dataset.transform, dataset.width, dataset.height)
    return _Grid(
        dataset.crs, dataset.window_transform(window), int(window.width), int(window.height)
    )


def _on_processing_grid(resolution: ProcessingResolution) -> ProcessingResolution:
    """The resolution of a run that reads the source already warped to the processing GSD
    (`output_grid="model"`): no resampling left, and the output is on that grid."""
    return ProcessingResolution(
        resolution.processing_gsd_m,
        1.0,
        f"native ({resolution.processing_gsd_m:g} m, the model's GSD)",
        resolution.notes,
    )


def _decide(
    reader: Any,
    input_path: Path | str,
    input_files: tuple[Path, ...],
    source: Path | str,
    window: Any,
    scratch: Path | None,
    options: SegmentOptions,
    model: tuple[ModelCard, ModelPackage | None, LoadedModel | None],
    outputs: RunOutputs,
    resolution: ProcessingResolution,
    sharded: bool,
) -> Plan:
    """The decisions made on the raster the run reads."""
    card, package, loaded = model
    scaling_request = (
        parse_scaling(options.scaling) if isinstance(options.scaling, str) else options.scaling
    )
    warnings = clear_stale_temporaries(outputs) + list(resolution.notes)
    bands = resolve_bands(reader, card.input, options.bands)
    assumed = unnamed_bands_note(reader, card.input, options.bands)
    if assumed is not None:
        warnings.append(assumed)
    size, stride, model_tile = _tile_plan(card, options, resolution, reader.height, reader.width)
    _check_memory(card, options, len(bands), size, model_tile, reader.width)
    if reader.crs is None:
        message = (
            f"{describe_path(source_name(input_path))} has no CRS; the output will have none either"
        )
        log.info(message)  # reported once, with the run's other warnings
        warnings.append(message)
    scaling = choose_scaling(reader, bands, card.input, scaling_request)
    guessed = scaling_warning(reader, bands, card.input, scaling)
    if guessed is not None:
        warnings.append(guessed)
    log.info(
        "bands %s (%s) -> model %s; scaling: %s",
        bands,
        ", ".join(describe_bands(reader)[b - 1] for b in bands),
        ", ".join(card.input.bands),
        scaling.description,
    )
    sieve_pixels = _sieve_pixels(options, reader)
    keep = class_indices(options.keep_classes, card.class_names)
    if options.simplify_m and outputs.polygons is None:
        warnings.append("simplify applies to class polygons; ask for polygons too")
    # In the order of Plan's fields.
    return Plan(
        input_path,
        input_files,
        source,
        window,
        scratch,
        options,
        card,
        package,
        loaded,
        None if sharded else _runtime(options, card, loaded, model_tile),
        outputs,
        bands,
        scaling,
        resolution,
        size,
        stride,
        model_tile,
        reader.height,
        reader.width,
        reader.crs,
        reader.transform,
        tuple(warnings),
        sieve_pixels,
        tuple(keep),
    )


def _tile_plan(
    card: ModelCard,
    options: SegmentOptions,
    resolution: ProcessingResolution,
    height: int,
    width: int,
) -> tuple[int, int, int]:
    """(tile, stride) in source pixels and the tile the network sees."""
    model_size, model_stride = tile_geometry(card, options)
    if resolution.factor == 1.0:
        size, stride = fit_tile_to_raster(model_size, model_stride, height, width, card)
        return size, stride, size
    return source_geometry(
        model_size, model_stride, resolution.factor, height, width, card.size_multiple
    )


def _check_memory(
    card: ModelCard, options: SegmentOptions, bands: int, size: int, model_tile: int, width: int
) -> None:
    check_fits(
        segmentation_bytes(
            tile=size,
            batch=options.batch_size,
            bands=bands,
            classes=card.num_classes,
            width=width,
            input_scale=card.input_scale * model_tile / size,
        ),
        f"segmenting with tiles of {size} px in batches of {options.batch_size}",
        "use a smaller tile size or batch size",
        ("tile", "batch"),
    )


def _sieve_pixels(options: SegmentOptions, reader: Any) -> int:
    """The minimum region in pixels of the raster read (0: no sieve), checked to fit."""
    minimum = parse_min_region(options.min_region)
    if minimum is None:
        return 0
    raster_gsd = raster_gsd_m(reader)
    pixels = minimum.pixels(raster_gsd**2 if raster_gsd else None)
    if pixels > 1:
        check_fits(
            sieve_bytes(reader.height, reader.width),
            f"the minimum region filter on {reader.height} x {reader.width} px",
            "segment a smaller extent, or leave the minimum region out and filter the result "
            "afterwards (QGIS: Raster > Analysis > Sieve)",
            ("min_region",),
        )
    return pixels


def _runtime(
    options: SegmentOptions, card: ModelCard, loaded: LoadedModel | None, model_tile: int
) -> str:
    from engine.run.runtimes import choose_runtime

    if loaded is not None:
        return loaded.runtime
    return choose_runtime(options.runtime, card, options.device, model_tile, options.compile)


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
