"""`crossearth segment-batch`: many rasters, one class raster each, an index and a mosaic.

Inputs are files, folders (the rasters inside, by extension), globs, list files (`@list.txt`
or any existing `.txt`: one path, URL or GDAL /vsi path per line) and GDAL /vsi paths or URLs.
Everything that can be wrong with the command (an unreadable input, an option, an existing
output) is found before the first input runs; after that a failing input is recorded in the
index with its reason and the batch goes on.

Outputs in the output folder, named from each input's file name (stem):
`<stem>_classes.tif`, `<stem>_confidence.tif`, `<stem>_classes.gpkg`; equal stems (from
different folders) get `_2`, `_3`, ... in input order. `index.gpkg` has one footprint per
input with its status, and `mosaic.vrt` joins the class rasters when they share a CRS.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.error_codes import (
    CANCELLED_BATCH,
    INPUT_BANDS_COUNT,
    OUTPUT_BATCH_EXISTS,
    OUTPUT_BATCH_SUMMARY_EXISTS,
    OUTPUT_DIR_IS_FILE,
    OUTPUT_DIR_NOT_WRITABLE,
    OUTPUT_NOT_OURS,
    OUTPUT_REPLACES_INPUT,
    OUTPUT_SUMMARY_REPLACES_INPUT,
)
from engine.errors import (
    CrossEarthError,
    InputError,
    OutputError,
    SegmentationCancelled,
)
from engine.files import (
    create_temporary_folder,
    describe_path,
    remove_temporary,
    same_file,
)
from engine.raster.raster_input import first_line, open_raster
from engine.raster.vrt import wrapper_vrt
from engine.run.batch_index import (
    _footprint,
    _index_crs,
    _previous_rows,
    _ring,
    _write_index,
    _write_mosaic,
)
from engine.run.batch_inputs import (
    CLASSES_SUFFIX,
    CONFIDENCE_SUFFIX,
    FAILED,
    INDEX_GPKG,
    MOSAIC,
    OK,
    POLYGONS_SUFFIX,
    SKIPPED,
    BatchRow,
    PlannedInput,
    crs_name,
    expand_inputs,
    unique_stems,
)
from engine.run.options import PER_INPUT_FIELDS, options_from_args
from engine.run.output_paths import dataset_files, first_existing
from engine.run.pipeline import CancelFlag, LoadedModel, SegmentOptions, SegmentResult

log = logging.getLogger(__name__)


Event = Callable[[str, dict[str, Any]], None]


@dataclass
class BatchResult:
    rows: list[BatchRow]
    index: Path
    mosaic: Path | None
    note: str  # why there is no mosaic ("" when there is one)
    seconds: float

    def count(self, status: str) -> int:
        """How many inputs ended with `status` (for the summary line)."""
        return sum(1 for row in self.rows if row.status == status)


# --- inputs ------------------------------------------------------------------------------------


# --- planning ---------------------------------------------------------------------------------


def _scan(planned: PlannedInput, card: Any, options: SegmentOptions, extent: Any) -> None:
    """Opens the input (a usage error when it cannot be read) and records its size, CRS,
    footprint and files; marks it failed when its bands do not fit the model, skipped when
    the extent misses it."""
    from engine.raster.raster_input import resolve_bands
    from engine.raster.subset import extent_window

    with open_raster(planned.input.source) as dataset:
        planned.crs = dataset.crs
        if planned.input.is_local:
            planned.files = dataset_files(dataset, Path(planned.input.source))
        col0, row0, cols, rows = 0, 0, dataset.width, dataset.height
        if extent is not None:
            try:
                window = extent_window(dataset, extent)
            except CrossEarthError:
                planned.status, planned.message = SKIPPED, "outside the extent"
                window = None
            if window is not None:
                col0, row0 = int(window.col_off), int(window.row_off)
                cols, rows = int(window.width), int(window.height)
        planned.pixels = cols * rows
        planned.footprint = _ring(dataset.transform, col0, row0, cols, rows)
        if planned.status:
            return
        try:
            resolve_bands(dataset, card.input, options.bands)
        except CrossEarthError as exc:
            planned.status, planned.message = FAILED, str(exc)


def _check_output_dir(output_dir: Path) -> Path:
    output_dir = Path(output_dir).expanduser().absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(
            f"the output folder {output_dir} is a file; give a folder",
            code=OUTPUT_DIR_IS_FILE,
            path=output_dir,
        )
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"the output folder {existing} is not writable; choose another output folder",
            code=OUTPUT_DIR_NOT_WRITABLE,
            path=existing,
        )
    return output_dir


def _check_destinations(
    plans: list[PlannedInput], summary: list[Path], overwrite: bool, resume: bool
) -> None:
    """Nothing the batch writes is anything it reads; nothing existing is replaced unless
    --overwrite (or, for the index and mosaic, --resume) says so."""
    read = [(p, f) for p in plans for f in p.files]
    outputs = [t for p in plans for t in p.written()]
    for targets, code in (
        (outputs, OUTPUT_REPLACES_INPUT),
        (summary, OUTPUT_SUMMARY_REPLACES_INPUT),
    ):
        clash = _replaced_input(targets, read)
        if clash is not None:
            target, owner, source = clash
            given = describe_path(owner.input.given)
            what = (
                f"the batch's {target.name}"
                if code == OUTPUT_SUMMARY_REPLACES_INPUT
                else f"the output {target}"
            )
            raise OutputError(
                f"{what} would replace {source}, which the input {given} reads; choose another "
                "output folder",
                code=code,
                path=target,
                source=source,
                input=given,
            )
    if overwrite or resume:
        # --resume: an input with all its outputs is skipped; what an interrupted earlier run
        # left of the others, and the earlier index and mosaic, are replaced.
        return
    existing = first_existing(t for p in plans if not p.status for t in p.written())
    if existing is not None:
        raise OutputError(
            f"{existing} already exists; allow overwrite to replace it, or resume to "
            "keep the finished outputs of an earlier batch and do the rest",
            code=OUTPUT_BATCH_EXISTS,
            path=existing,
        )
    existing = first_existing(summary)
    if existing is not None:
        raise OutputError(
            f"{existing} already exists (from an earlier batch); resume to finish that batch "
            "or overwrite to redo it, or choose another output folder",
            code=OUTPUT_BATCH_SUMMARY_EXISTS,
            path=existing,
        )


def _replaced_input(
    targets: list[Path], read: list[tuple[PlannedInput, Path]]
) -> tuple[Path, PlannedInput, Path] | None:
    """The first target that is a file some input reads: (target, that input, the file)."""
    for target in targets:
        for owner, source in read:
            if same_file(target, source):
                return target, owner, source
    return None


def plan_batch(
    items: Sequence[str],
    output_dir: Path,
    card: Any,
    options: SegmentOptions,
    *,
    confidence: bool,
    polygons: bool,
    overwrite: bool,
    resume: bool,
) -> tuple[list[PlannedInput], Path, Path]:
    """Every input with its outputs, checked: returns (plans, index path, mosaic path)."""
    output_dir = _check_output_dir(output_dir)
    entries = expand_inputs(items, output_dir)
    plans = [
        PlannedInput(
            input=entry,
            stem=stem,
            classes=output_dir / f"{stem}{CLASSES_SUFFIX}",
            confidence=output_dir / f"{stem}{CONFIDENCE_SUFFIX}" if confidence else None,
            polygons=output_dir / f"{stem}{POLYGONS_SUFFIX}" if polygons else None,
        )
        for entry, stem in zip(entries, unique_stems(entries), strict=True)
    ]
    for plan in plans:
        _scan(plan, card, options, options.extent)
    index = output_dir / INDEX_GPKG
    mosaic = output_dir / MOSAIC
    _check_destinations(plans, [index, mosaic], overwrite, resume)
    if resume:
        for plan in plans:
            if not plan.status and all(p.exists() for p in plan.outputs()):
                _check_earlier_result(plan, card)
                plan.status, plan.message = SKIPPED, "finished by an earlier run (resumed)"
    return plans, index, mosaic


def _check_earlier_result(plan: PlannedInput, card: Any) -> None:
    """A finished output that resume keeps must be a result of this model: rasters the engine
    writes carry its name and version. Anything else under the output's name is refused, never
    taken for this input's result (nor replaced)."""
    for raster in (plan.classes, plan.confidence):
        if raster is None:
            continue
        try:
            with open_raster(raster) as dataset:
                tags = dataset.tags()
        except CrossEarthError:
            tags = {}
        ours = (tags.get("CROSSEARTH_MODEL"), tags.get("CROSSEARTH_MODEL_VERSION")) == (
            card.name,
            card.version,
        )
        if not ours:
            raise OutputError(
                f"{describe_path(raster)} is not a result of {card.name} {card.version}, so "
                f"resume will not keep it as the result of {describe_path(plan.input.given)}; "
                "move it away, or overwrite to redo that input",
                code=OUTPUT_NOT_OURS,
                path=describe_path(raster),
            )


# --- running ----------------------------------------------------------------------------------


@dataclass
class BatchRequest:
    items: Sequence[str]
    output_dir: Path
    model: str | None = None
    options: SegmentOptions = field(default_factory=SegmentOptions)
    confidence: bool = False
    polygons: bool = False
    resume: bool = False
    workers: int | str | None = None  # with workers or cluster: each input runs sharded on Ray
    cluster: str | None = None

    @property
    def sharded(self) -> bool:
        """Whether each input runs on Ray workers (--workers or --cluster given)."""
        return self.workers is not None or bool(self.cluster)


def segment_options_from_args(args: Any) -> SegmentOptions:
    """SegmentOptions from parsed `segment-batch` arguments, as `segment` builds them (the
    confidence and polygon files are set per input)."""
    return options_from_args(args, skip=PER_INPUT_FIELDS)


def _check_request(request: BatchRequest) -> tuple[Any, Any]:
    """Option errors that concern every input: the model, tile geometry, scaling, bands.
    Returns (card, package)."""
    from engine.models.packages import find_package
    from engine.raster.raster_input import parse_scaling
    from engine.run.pipeline import tile_geometry

    options = request.options
    if isinstance(options.scaling, str):
        parse_scaling(options.scaling)
    package = find_package(request.model)
    tile_geometry(package.card, options)
    if options.bands is not None and len(options.bands) != len(package.card.input.bands):
        wanted = list(package.card.input.bands)
        raise InputError(
            f"bands lists {len(options.bands)} band(s) but the model takes {len(wanted)} "
            f"({', '.join(wanted)}); list one source band per model input",
            code=INPUT_BANDS_COUNT,
            option="bands",
            value=list(options.bands),
            wanted=wanted,
        )
    return package.card, package


def run_batch(
    request: BatchRequest,
    on_event: Event | None = None,
    cancel: CancelFlag = None,
) -> BatchResult:
    """Segments every input of the request into the output folder, then writes the index and
    the mosaic. Raises CrossEarthError for usage errors (before anything is written) and
    SegmentationCancelled when stopped (finished outputs are kept; no index is written)."""
    emit = on_event or (lambda event, fields: None)
    started = time.perf_counter()
    card, package = _check_request(request)
    plans, index_path, mosaic_path = plan_batch(
        request.items,
        request.output_dir,
        card,
        request.options,
        confidence=request.confidence,
        polygons=request.polygons,
        overwrite=request.options.overwrite,
        resume=request.resume,
    )
    output_dir = index_path.parent
    output_dir.mkdir(parents=True, exist_ok=True)
    to_run = [plan for plan in plans if not plan.status]
    emit("batch", {"inputs": len(plans), "to_run": len(to_run), "output_dir": str(output_dir)})
    rows = _run_inputs(request, package, plans, index_path, emit, cancel)
    emit("progress", {"fraction": 0.999, "message": "writing the index and the mosaic"})
    index_crs = _index_crs([plan.crs for plan in plans])
    for row, plan in zip(rows, plans, strict=True):
        row.footprint = _footprint(plan, index_crs)
    _write_index(index_path, rows, index_crs)
    mosaic, note = _write_mosaic(mosaic_path, plans, rows)
    seconds = time.perf_counter() - started
    emit("progress", {"fraction": 1.0, "message": f"done in {seconds:.1f} s"})
    return BatchResult(rows, index_path, mosaic, note, seconds)


def _run_inputs(
    request: BatchRequest,
    package: Any,
    plans: list[PlannedInput],
    index_path: Path,
    emit: Event,
    cancel: CancelFlag,
) -> list[BatchRow]:
    """One row per input, in order: run (the model loaded once, or Ray opened once) or
    carried over (skipped, failed in the scan). A stop keeps the finished outputs."""
    previous = _previous_rows(index_path) if request.resume else {}
    to_run = [plan for plan in plans if not plan.status]
    progress = _BatchProgress(emit, len(plans), sum(plan.pixels for plan in to_run) or 1)
    loaded: LoadedModel | None = None
    ray_session: Any = None
    rows: list[BatchRow] = []
    try:
        if to_run and request.sharded:
            ray_session = _open_ray(request, emit)
        elif to_run:
            loaded = _load_once(package, request.options, emit)
        for number, plan in enumerate(plans, 1):
            base = {"index": number, "total": len(plans), "input": plan.input.given}
            if plan.status:
                row = _row(plan, plan.status, plan.message, None, None)
                carried = previous.get(plan.classes.name) if plan.status == SKIPPED else None
                if carried is not None:
                    row.classes, row.seconds = carried
            else:
                emit("input", {**base, "output": str(plan.classes)})
                row = _run_one(plan, request, loaded, progress.of(number, plan), cancel)
                progress.done_pixels += plan.pixels
            rows.append(row)
            emit("input_done", {**base, **_row_fields(row)})
    except (KeyboardInterrupt, SegmentationCancelled):
        finished = sum(1 for row in rows if row.status == OK)
        output_dir = index_path.parent
        raise SegmentationCancelled(
            f"batch stopped after {len(rows)} of {len(plans)} inputs; the {finished} finished "
            f"output(s) in {output_dir} are kept and no index was written: run the same batch "
            "again with resume to do the rest",
            code=CANCELLED_BATCH,
            done=len(rows),
            total=len(plans),
            finished=finished,
            path=output_dir,
        ) from None
    finally:
        if ray_session is not None:
            ray_session.close()
    return rows


@dataclass
class _BatchProgress:
    """The whole batch's fraction: inputs weigh by their pixels."""

    emit: Event
    inputs: int
    total_pixels: int
    done_pixels: int = 0

    def of(self, number: int, plan: PlannedInput) -> Callable[[float, str], None]:
        """The progress callback of one input's run."""
        before = self.done_pixels

        def report(fraction: float, message: str) -> None:
            share = max(0.0, min(1.0, fraction)) * plan.pixels
            overall = min((before + share) / self.total_pixels, 0.999)
            self.emit(
                "progress",
                {
                    "fraction": round(overall, 4),
                    "message": f"{number}/{self.inputs} {plan.stem}: {message}",
                },
            )

        return report


def _open_ray(request: BatchRequest, emit: Event) -> Any:
    """One Ray connection (or local instance) for the whole batch: each input's sharded run
    uses it instead of starting Ray again. Ray is imported only here."""
    from engine.distributed.session import RaySession, local_plan
    from engine.distributed.session import parse_workers as worker_count

    options = request.options
    local = None
    if not request.cluster:
        local = local_plan(options.device, worker_count(request.workers), options.threads)
    where = f"connecting to Ray at {request.cluster}" if request.cluster else "starting Ray"
    emit("progress", {"fraction": 0.0, "message": where})
    session = RaySession()
    session.open(request.cluster or None, local)
    return session


def _load_once(package: Any, options: SegmentOptions, emit: Event) -> LoadedModel:
    """The model on its runtime and device, once for all inputs of a single-process batch
    (the runtime is chosen for the model's own tile size)."""
    from engine.run.pipeline import tile_geometry
    from engine.run.runtimes import choose_runtime, load_model

    tile = tile_geometry(package.card, options)[0]
    runtime = choose_runtime(options.runtime, package.card, options.device, tile, options.compile)
    emit("progress", {"fraction": 0.0, "message": f"loading model {package.card.name} ({runtime})"})
    return load_model(package, options.device, options.threads, runtime)


def _run_one(
    plan: PlannedInput,
    request: BatchRequest,
    loaded: LoadedModel | None,
    report: Callable[[float, str], None],
    cancel: CancelFlag,
) -> BatchRow:
    options = dataclasses.replace(
        request.options,
        confidence=plan.confidence,
        polygons=plan.polygons,
        # --resume: what an interrupted earlier run left of this input is replaced.
        overwrite=request.options.overwrite or request.resume,
    )
    staging: Path | None = None
    try:
        source = plan.input.source
        if os.fspath(Path(source)) != source:
            # A path Path() would change ('//' in /vsicurl/https://...): read through a VRT
            # beside the outputs, which every worker reaches as it reaches the outputs.
            staging = create_temporary_folder(plan.classes)
            source = _wrapper_vrt(source, staging / f"{plan.stem}.vrt")
        result = _segment(source, plan, options, request, loaded, report, cancel)
    except (KeyboardInterrupt, SegmentationCancelled):
        raise  # the batch stops (run_batch says what is kept)
    except CrossEarthError as exc:
        return _row(plan, FAILED, str(exc), None, None)
    except Exception as exc:  # one broken input must not end a batch of thousands
        log.exception("segmenting %s failed", plan.input.given)
        return _row(plan, FAILED, f"unexpected error: {type(exc).__name__}: {first_line(exc)}")
    finally:
        if staging is not None:
            remove_temporary(staging)
    if result.failed:
        # The class raster stands; the row fails so that --resume makes what is missing.
        missing = "; ".join(f"{name} not written: {why}" for name, why in result.failed.items())
        message = f"the class raster is complete, {missing}"
        return _row(plan, FAILED, message, result.class_pixels, result.seconds)
    message = "; ".join(result.warnings)
    return _row(plan, OK, message, result.class_pixels, result.seconds)


def _segment(
    source: str,
    plan: PlannedInput,
    options: SegmentOptions,
    request: BatchRequest,
    loaded: LoadedModel | None,
    report: Callable[[float, str], None],
    cancel: CancelFlag,
) -> SegmentResult:
    if request.sharded:
        # Ray is imported only here: a batch without --workers/--cluster never loads it.
        from engine.distributed.driver import segment_sharded

        return segment_sharded(
            source,
            plan.classes,
            request.model,
            options,
            workers=request.workers if request.workers is not None else "auto",
            cluster=request.cluster,
            resume=request.resume,
            progress=report,
            cancel=cancel,
        )
    from engine.run.pipeline import segment

    return segment(source, plan.classes, loaded, options, progress=report, cancel=cancel)


def _wrapper_vrt(source: str, target: Path) -> str:
    return str(wrapper_vrt(source, target))


def _row(
    plan: PlannedInput,
    status: str,
    message: str,
    classes: dict[str, int] | None = None,
    seconds: float | None = None,
) -> BatchRow:
    given = plan.input.given
    if plan.input.is_local:
        given = str(Path(given).expanduser().absolute())
    return BatchRow(
        input=given,
        output=plan.classes.name
        if status == OK or (status == SKIPPED and plan.classes.exists())
        else "",
        status=status,
        message=" ".join(message.split()),
        classes=classes,
        seconds=None if seconds is None else round(seconds, 2),
        crs=crs_name(plan.crs),
        footprint=None,
    )


def _row_fields(row: BatchRow) -> dict[str, Any]:
    """The input_done event's fields."""
    fields = ("status", "message", "output", "classes", "seconds")
    return {name: getattr(row, name) for name in fields}


# --- index and mosaic ---------------------------------------------------------------------------
