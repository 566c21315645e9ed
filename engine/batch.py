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

import contextlib
import dataclasses
import glob
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, CrossEarthError, InputError, OutputError, SegmentationCancelled
from .files import (
    create_temporary_folder,
    describe_path,
    publish,
    real_path,
    remove_temporary,
    same_file,
    write_error,
)
from .output_paths import AUX_SUFFIX, dataset_files
from .pipeline import CancelFlag, LoadedModel, SegmentOptions, SegmentResult
from .raster_input import first_line, open_raster
from .vector_io import feature_count, read_layer, vector_errors, write_layer
from .vrt import mosaic_vrt, wrapper_vrt

log = logging.getLogger(__name__)

# Extensions of the raster formats GDAL reads that folders and globs take (a fixed list, so a
# folder expands the same way with every GDAL build; name other files one by one).
RASTER_EXTENSIONS = frozenset(
    (
        *("tif", "tiff", "vrt", "img", "jp2", "j2k", "png", "jpg", "jpeg", "gif", "bmp", "webp"),
        *("nc", "hdf", "h5", "hdf5", "he5", "ntf", "ecw", "sid", "kea", "bil", "bip", "bsq"),
        *("asc", "dem", "dt0", "dt1", "dt2", "hgt", "ers", "rst", "sdat", "mrf", "pix"),
    )
)
CLASSES_SUFFIX = "_classes.tif"
CONFIDENCE_SUFFIX = "_confidence.tif"
POLYGONS_SUFFIX = "_classes.gpkg"
INDEX_GPKG = "index.gpkg"
INDEX_LAYER = "index"
MOSAIC = "mosaic.vrt"
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
INDEX_FIELDS = ("input", "output", "status", "message", "classes", "seconds", "crs")
_URL = re.compile(r"^(https?|ftp)://", re.I)
_CLOUD = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_EDGE_POINTS = 16  # points per footprint edge, so a reprojected footprint follows curved edges

Event = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class BatchInput:
    given: str  # as named on the command line or in the list (shown and written to the index)
    source: str  # as GDAL opens it

    @property
    def is_local(self) -> bool:
        """Whether the source is a local file (not a /vsi path or URL), which has a folder."""
        return not self.source.startswith("/vsi") and "://" not in self.source


@dataclass
class PlannedInput:
    input: BatchInput
    stem: str
    classes: Path
    confidence: Path | None
    polygons: Path | None
    pixels: int = 0
    crs: Any = None  # rasterio CRS or None
    footprint: list[tuple[float, float]] | None = None  # ring in the input's CRS
    files: list[Path] = field(default_factory=list)  # every local file GDAL reads for it
    status: str = ""  # set in the scan when the input does not run (skipped, failed)
    message: str = ""

    def outputs(self) -> list[Path]:
        """The output files of this input's run: classes, then confidence and polygons if asked."""
        return [p for p in (self.classes, self.confidence, self.polygons) if p is not None]

    def written(self) -> list[Path]:
        """Every file the run leaves for this input: the outputs plus their .aux.xml side files."""
        files = self.outputs() + [Path(f"{self.classes}{AUX_SUFFIX}")]
        if self.confidence is not None:
            files.append(Path(f"{self.confidence}{AUX_SUFFIX}"))
        return files


@dataclass
class BatchRow:
    input: str
    output: str  # file name in the output folder
    status: str
    message: str
    classes: dict[str, int] | None
    seconds: float | None
    crs: str
    footprint: list[tuple[float, float]] | None  # in the index's CRS


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


def gdal_name(item: str) -> str:
    """A URL as the GDAL path that reads it (http(s)/ftp through /vsicurl/, s3:// gs:// az://
    through /vsis3/ /vsigs/ /vsiaz/); anything else unchanged."""
    if _URL.match(item):
        return "/vsicurl/" + item
    scheme, sep, rest = item.partition("://")
    if sep and scheme.lower() in _CLOUD:
        return _CLOUD[scheme.lower()] + rest
    return item


def _is_glob(item: str) -> bool:
    return any(ch in item for ch in "*?[")


def _is_raster_name(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in RASTER_EXTENSIONS and not path.name.startswith(".")


def _is_own_output(path: Path, output_dir: Path | None) -> bool:
    """An earlier batch's output in the output folder: never taken as an input by a folder or
    a glob (the batch would segment its own results)."""
    if output_dir is None or real_path(path.parent) != real_path(output_dir):
        return False
    name = path.name.lower()
    return name == MOSAIC or name.endswith((CLASSES_SUFFIX, CONFIDENCE_SUFFIX))


def _list_file(item: str) -> Path | None:
    if item.startswith("@"):
        path = Path(item[1:]).expanduser()
        if not path.is_file():
            raise CrossEarthError(f"the list file {describe_path(path)} does not exist")
        return path
    if item.lower().endswith(".txt") and Path(item).is_file():
        return Path(item)
    return None


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CrossEarthError(
            f"cannot read the list file {describe_path(path)} ({first_line(exc)}); give a text "
            "file with one path or URL per line"
        ) from None
    base = path.absolute().parent
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("@") or (entry.lower().endswith(".txt") and "://" not in entry):
            raise CrossEarthError(
                f"line {number} of {describe_path(path)} names another list ({entry}); list "
                "rasters, folders or globs there, not lists"
            )
        remote = entry.startswith("/vsi") or "://" in entry
        if not remote and not os.path.isabs(os.path.expanduser(entry)):
            entry = str(base / entry)  # relative to the list, not to where the command runs
        items.append(entry)
    return items


def expand_inputs(items: Sequence[str], output_dir: Path | None = None) -> list[BatchInput]:
    """The inputs the items name, in order: list files read, folders and globs expanded
    (sorted by name, raster extensions only, the batch's own outputs left out), URLs as GDAL
    paths, the same file named twice taken once."""
    expanded: list[BatchInput] = []

    def add(item: str, *, from_list: bool = False) -> None:
        listed = None if from_list else _list_file(item)
        if listed is not None:
            entries = _read_list(listed)
            if not entries:
                raise CrossEarthError(f"the list file {describe_path(listed)} names no input")
            for entry in entries:
                add(entry, from_list=True)
            return
        source = gdal_name(item)
        if source.startswith("/vsi"):
            expanded.append(BatchInput(item, source))
            return
        path = Path(item).expanduser()
        if path.is_dir() and not (path / "hdr.adf").exists():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_raster_name(p))
            found = [p for p in found if not _is_own_output(p, output_dir)]
            if not found:
                raise CrossEarthError(
                    f"the folder {describe_path(path)} holds no raster files (looked for "
                    f"{', '.join('.' + e for e in sorted(RASTER_EXTENSIONS)[:6])}, ...); name "
                    "the files themselves"
                )
            expanded.extend(BatchInput(str(p), str(p)) for p in found)
            return
        if not path.exists() and _is_glob(item):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True))
            found = [p for p in matches if p.is_file() and _is_raster_name(p)]
            found = [p for p in found if not _is_own_output(p, output_dir)]
            if not found:
                raise CrossEarthError(f"no raster file matches '{item}'; check the pattern")
            expanded.extend(BatchInput(str(p), str(p)) for p in found)
            return
        expanded.append(BatchInput(item, str(path)))

    for item in items:
        add(os.fspath(item))
    if not expanded:
        raise CrossEarthError("no inputs given; name rasters, folders, globs or a list file")
    unique: list[BatchInput] = []
    seen: set[str] = set()
    for entry in expanded:
        key = str(real_path(entry.source)) if entry.is_local else entry.source
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def stem_of(entry: BatchInput) -> str:
    """The input's file name without its extension, safe as a file name everywhere."""
    name = entry.source
    if "://" in name:  # a URL (also inside /vsicurl/): its path, without query or fragment
        name = re.split(r"[?#]", name.split("://", 1)[1], maxsplit=1)[0]
    name = name.rstrip("/").rsplit("/", 1)[-1]
    name = os.fsencode(name).decode("utf-8", "replace").replace("\ufffd", "_")
    stem = Path(name).stem if "." in name.strip(".") else name
    stem = _UNSAFE.sub("_", stem).strip(" .")
    return stem or "raster"


def unique_stems(entries: Sequence[BatchInput]) -> list[str]:
    """One stem per input; a stem already taken (ignoring case, as some file systems do) gets
    `_2`, `_3`, ... in input order, so the names are the same every time."""
    taken: set[str] = set()
    stems = []
    for entry in entries:
        base = stem_of(entry)
        stem, number = base, 1
        while stem.casefold() in taken:
            number += 1
            stem = f"{base}_{number}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


# --- planning ---------------------------------------------------------------------------------


def _ring(transform: Any, col0: float, row0: float, cols: float, rows: float) -> list:
    """The pixel window's outline in map coordinates, closed, with points along each edge."""
    n = _EDGE_POINTS
    pixels = (
        [(col0 + cols * i / n, row0) for i in range(n)]
        + [(col0 + cols, row0 + rows * i / n) for i in range(n)]
        + [(col0 + cols * (n - i) / n, row0 + rows) for i in range(n)]
        + [(col0, row0 + rows * (n - i) / n) for i in range(n)]
    )
    ring = [transform * point for point in pixels]
    return [*ring, ring[0]]


def _scan(planned: PlannedInput, card: Any, options: SegmentOptions, extent: Any) -> None:
    """Opens the input (a usage error when it cannot be read) and records its size, CRS,
    footprint and files; marks it failed when its bands do not fit the model, skipped when
    the extent misses it."""
    from .raster_input import resolve_bands
    from .subset import extent_window

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
            code="output.dir_is_file",
            path=output_dir,
        )
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"the output folder {existing} is not writable; choose another output folder",
            code="output.dir_not_writable",
            path=existing,
        )
    return output_dir


def _check_destinations(
    plans: list[PlannedInput], summary: list[Path], overwrite: bool, resume: bool
) -> None:
    """Nothing the batch writes is anything it reads; nothing existing is replaced unless
    --overwrite (or, for the index and mosaic, --resume) says so."""
    read = [(p, f) for p in plans for f in p.files]
    for plan in plans:
        for target in plan.written():
            for owner, source in read:
                if same_file(target, source):
                    raise OutputError(
                        f"the output {target} would replace {source}, which the input "
                        f"{describe_path(owner.input.given)} reads; choose another output folder",
                        code="output.replaces_input",
                        path=target,
                        source=source,
                        input=describe_path(owner.input.given),
                    )
    for target in summary:
        for owner, source in read:
            if same_file(target, source):
                raise OutputError(
                    f"the batch's {target.name} would replace the input "
                    f"{describe_path(owner.input.given)}; choose another output folder",
                    code="output.summary_replaces_input",
                    path=target,
                    input=describe_path(owner.input.given),
                )
    if overwrite or resume:
        # --resume: an input with all its outputs is skipped; what an interrupted earlier run
        # left of the others, and the earlier index and mosaic, are replaced.
        return
    for plan in plans:
        if plan.status:
            continue
        for target in plan.written():
            if target.exists() or target.is_symlink():
                raise OutputError(
                    f"{target} already exists; allow overwrite to replace it, or resume to "
                    "keep the finished outputs of an earlier batch and do the rest",
                    code="output.batch_exists",
                    path=target,
                )
    for target in summary:
        if target.exists() or target.is_symlink():
            raise OutputError(
                f"{target} already exists (from an earlier batch); resume to finish that batch "
                "or overwrite to redo it, or choose another output folder",
                code="output.batch_summary_exists",
                path=target,
            )


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
                plan.status, plan.message = SKIPPED, "finished by an earlier run (resumed)"
    return plans, index, mosaic


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


# SegmentOptions fields whose `segment` argument has another name; every other field is
# taken from the argument of its own name (converted below where `segment` converts it), so
# the batch runs each input exactly as `segment` would.
_RENAMED = {
    "tile_size": "tile",
    "batch_size": "batch",
    "confidence_dtype": "confidence_type",
    "simplify_m": "simplify",
    "amp": "no_amp",
}
PER_INPUT_FIELDS = ("confidence", "polygons")  # set per input from --confidence/--polygons


def option_argument(field_name: str) -> str:
    """The `segment` argument (dest) that sets a SegmentOptions field."""
    return _RENAMED.get(field_name, field_name)


def segment_options_from_args(args: Any) -> SegmentOptions:
    """SegmentOptions from parsed `segment-batch` arguments, as `segment` builds them."""
    values: dict[str, Any] = {}
    for option in dataclasses.fields(SegmentOptions):
        name = option_argument(option.name)
        if option.name in PER_INPUT_FIELDS or not hasattr(args, name):
            continue
        value = getattr(args, name)
        if option.name == "amp":
            value = not value
        elif option.name == "extent" and isinstance(value, str):
            from .subset import parse_extent

            value = parse_extent(value)
        elif option.name == "gsd" and isinstance(value, str):
            from .resolution import parse_gsd

            value = parse_gsd(value)
        elif option.name == "keep_classes" and isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
            if not all(value):
                raise ConfigError(
                    f"keep_classes '{getattr(args, name)}' has an empty name; separate names "
                    "with commas",
                    code="option.empty_name",
                    option="keep_classes",
                    value=getattr(args, name),
                )
        values[option.name] = value
    return SegmentOptions(**values)


def _check_request(request: BatchRequest) -> tuple[Any, Any]:
    """Option errors that concern every input: the model, tile geometry, scaling, bands.
    Returns (card, package)."""
    from .packages import find_package
    from .pipeline import tile_geometry
    from .raster_input import parse_scaling

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
            code="input.bands_count",
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
    previous = _previous_rows(index_path) if request.resume else {}
    to_run = [plan for plan in plans if not plan.status]
    total_pixels = sum(plan.pixels for plan in to_run) or 1
    output_dir = index_path.parent
    output_dir.mkdir(parents=True, exist_ok=True)
    emit("batch", {"inputs": len(plans), "to_run": len(to_run), "output_dir": str(output_dir)})

    loaded: LoadedModel | None = None
    ray_session: Any = None
    rows: list[BatchRow] = []
    done_pixels = 0
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
                rows.append(row)
                emit("input_done", {**base, **_row_fields(row)})
                continue
            emit("input", {**base, "output": str(plan.classes)})

            def report(
                fraction: float,
                message: str,
                plan: PlannedInput = plan,
                number: int = number,
                before: int = done_pixels,
            ) -> None:
                # The whole batch's fraction: inputs weigh by their pixels.
                share = max(0.0, min(1.0, fraction)) * plan.pixels
                overall = min((before + share) / total_pixels, 0.999)
                emit(
                    "progress",
                    {
                        "fraction": round(overall, 4),
                        "message": f"{number}/{len(plans)} {plan.stem}: {message}",
                    },
                )

            row = _run_one(plan, request, loaded, report, cancel)
            rows.append(row)
            done_pixels += plan.pixels
            emit("input_done", {**base, **_row_fields(row)})
    except (KeyboardInterrupt, SegmentationCancelled):
        finished = sum(1 for row in rows if row.status == OK)
        raise SegmentationCancelled(
            f"batch stopped after {len(rows)} of {len(plans)} inputs; the {finished} finished "
            f"output(s) in {output_dir} are kept and no index was written: run the same batch "
            "again with resume to do the rest",
            code="cancelled.batch",
            done=len(rows),
            total=len(plans),
            finished=finished,
            path=output_dir,
        ) from None
    finally:
        if ray_session is not None:
            ray_session.close()
    emit("progress", {"fraction": 0.999, "message": "writing the index and the mosaic"})
    index_crs = _index_crs([plan.crs for plan in plans])
    for row, plan in zip(rows, plans, strict=True):
        row.footprint = _footprint(plan, index_crs)
    _write_index(index_path, rows, index_crs)
    mosaic, note = _write_mosaic(mosaic_path, plans, rows)
    seconds = time.perf_counter() - started
    emit("progress", {"fraction": 1.0, "message": f"done in {seconds:.1f} s"})
    return BatchResult(rows, index_path, mosaic, note, seconds)


def _open_ray(request: BatchRequest, emit: Event) -> Any:
    """One Ray connection (or local instance) for the whole batch: each input's sharded run
    uses it instead of starting Ray again. Ray is imported only here."""
    from .distributed.session import RaySession, local_plan
    from .distributed.session import parse_workers as worker_count

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
    from .pipeline import tile_geometry
    from .runtimes import choose_runtime, load_model

    tile = tile_geometry(package.card, options)[0]
    runtime = choose_runtime(
        options.runtime, package.card, options.device, tile, options.compile
    )
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
        from .distributed.driver import segment_sharded

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
    from .pipeline import segment

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
        crs=_crs_name(plan.crs),
        footprint=None,
    )


def _row_fields(row: BatchRow) -> dict[str, Any]:
    return {
        "status": row.status,
        "message": row.message,
        "output": row.output,
        "classes": row.classes,
        "seconds": row.seconds,
    }


def _crs_name(crs: Any) -> str:
    if crs is None:
        return ""
    authority = crs.to_authority()
    return ":".join(authority) if authority else crs.to_wkt()


# --- index and mosaic ---------------------------------------------------------------------------


def _index_crs(crss: Iterable[Any]) -> Any:
    """The inputs' CRS when they all share one, else EPSG:4326 (None when none has a CRS)."""
    from rasterio.crs import CRS

    known = [crs for crs in crss if crs is not None]
    if not known:
        return None
    if all(crs == known[0] for crs in known):
        return known[0]  # inputs without a CRS have no place in it: their rows get no footprint
    return CRS.from_epsg(4326)


def _footprint(plan: PlannedInput, index_crs: Any) -> list[tuple[float, float]] | None:
    if plan.footprint is None:
        return None
    if index_crs is None or plan.crs is None:
        both_without = index_crs is None and plan.crs is None
        return plan.footprint[::_EDGE_POINTS] if both_without else None
    if plan.crs == index_crs:
        return plan.footprint[::_EDGE_POINTS]  # straight edges: the four corners suffice
    from rasterio.warp import transform

    xs, ys = zip(*plan.footprint, strict=True)
    try:
        tx, ty = transform(plan.crs, index_crs, list(xs), list(ys))
    except Exception:  # a CRS PROJ cannot transform: the row keeps no footprint
        log.warning("cannot reproject the footprint of %s", plan.input.given)
        return None
    return list(zip(tx, ty, strict=True))


def _index_values(row: BatchRow) -> dict[str, Any]:
    return {
        "input": row.input,
        "output": row.output,
        "status": row.status,
        "message": row.message,
        "classes": json.dumps(row.classes) if row.classes is not None else "",
        "seconds": row.seconds,
        "crs": row.crs,
    }


def _write_index(destination: Path, rows: list[BatchRow], crs: Any) -> None:
    """index.gpkg: one footprint polygon per input with its status, output and class counts."""
    import shapely

    failures: tuple[type[Exception], ...] = (RuntimeError, *vector_errors())
    staging = create_temporary_folder(destination)
    temp = staging / destination.name
    try:
        geometries = np.array(
            [shapely.Polygon(row.footprint) if row.footprint else None for row in rows],
            dtype=object,
        )
        columns = {name: [_index_values(row)[name] for row in rows] for name in INDEX_FIELDS}
        fields = {
            name: np.array([np.nan if v is None else v for v in values], np.float64)
            if name == "seconds"
            else np.array([None if v is None else str(v) for v in values], dtype=object)
            for name, values in columns.items()
        }
        write_layer(
            temp,
            INDEX_LAYER,
            shapely.to_wkb(geometries),
            fields,
            crs.to_wkt() if crs is not None else None,
            "Polygon",
        )
        found = feature_count(temp, INDEX_LAYER)
        if found != len(rows):
            raise RuntimeError(f"{found} of {len(rows)} rows were written")
        publish(temp, destination)
    except failures as exc:
        raise write_error(destination, exc) from None
    finally:
        remove_temporary(staging)


def _previous_rows(index: Path) -> dict[str, tuple[dict[str, int] | None, float | None]]:
    """Class counts and times of the finished inputs of an earlier batch's index (for the rows
    --resume skips); empty when there is none or it cannot be read."""
    found: dict[str, tuple[dict[str, int] | None, float | None]] = {}
    records: list[dict[str, Any]] = []
    with contextlib.suppress(Exception):
        if index.exists():
            table = read_layer(index, INDEX_LAYER, list(INDEX_FIELDS)).fields
            records = [
                {name: table[name][i] for name in INDEX_FIELDS}
                for i in range(len(table[INDEX_FIELDS[0]]))
            ]
    for record in records:
        if record.get("status") != OK or not record.get("output"):
            continue
        with contextlib.suppress(ValueError, TypeError):
            classes = json.loads(record["classes"]) if record.get("classes") else None
            seconds = float(record["seconds"]) if record.get("seconds") not in ("", None) else None
            found[str(record["output"])] = (classes, seconds)
    return found


def _write_mosaic(
    destination: Path, plans: list[PlannedInput], rows: list[BatchRow]
) -> tuple[Path | None, str]:
    """mosaic.vrt over the class rasters that exist, when they share a CRS; else a note."""
    outputs = [
        (plan, row)
        for plan, row in zip(plans, rows, strict=True)
        if row.status == OK or (row.status == SKIPPED and plan.classes.exists())
    ]
    if not outputs:
        return None, "no mosaic: no input has a class raster"
    crss = [plan.crs for plan, _ in outputs]
    if any(crs is None for crs in crss) or any(crs != crss[0] for crs in crss):
        names = sorted({_crs_name(crs) or "none" for crs in crss})
        shown = ", ".join(name if len(name) < 40 else name[:37] + "..." for name in names)
        return None, f"no mosaic: the outputs are in different CRSs ({shown})"
    # Written beside the class rasters, so the VRT names them relative to itself and the
    # folder can be moved as a whole.
    mosaic_vrt([plan.classes for plan, _ in outputs], destination)
    return destination, ""
