"""Sharded segmentation: the same job as engine.run.pipeline.segment, run by Ray workers.

The driver plans the job exactly as `segment` does (engine/run/plan.py: destinations, model,
bands, scaling, tile geometry), splits the tile plan into shards, lets the workers write one
part file per shard into a hidden work folder beside the output, then streams the parts in order
into
the final outputs (OutputWriter, overviews, polygons) and removes the work folder. The class
raster equals a single-process run's; the driver holds one strip of rows at a time.

A run killed hard (SIGKILL, power loss) leaves the work folder; `resume=True` reuses its
finished parts when the job's parameters are the same. Cancel, Ctrl-C/SIGTERM and errors stop
the workers and leave no part file, no output and no Ray process this run started.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.cancel import cancel_check
from engine.distributed.actor import WorkerSpec
from engine.distributed.parts import PartInfo, WorkFolder, fingerprint
from engine.distributed.shards import Shard, default_shard_count, plan_shards, shards_from_rows
from engine.error_codes import (
    PARTS_DAMAGED,
    PARTS_INTERRUPTED,
    PARTS_OTHER_PARAMETERS,
)
from engine.errors import CrossEarthError, SegmentationCancelled
from engine.files import describe_path, real_path
from engine.models.packages import ModelPackage
from engine.raster.raster_output import class_encoding
from engine.run.memory import check_fits, segmentation_bytes
from engine.run.pipeline import (
    CancelFlag,
    LoadedModel,
    ProgressCallback,
    SegmentOptions,
    SegmentResult,
)
from engine.run.plan import Plan, plan_segment
from engine.run.row_stream import DecidedRows
from engine.run.runtimes import choose_runtime
from engine.run.tiling import TilePlan, plan_tiles
from engine.run.writer import OutputWriter, complete_outputs

log = logging.getLogger(__name__)

# Rows the driver moves from a part into the outputs at a time (its memory: one such strip).
ASSEMBLY_CHUNK_BYTES = 32 << 20
# Progress: the workers' tiles fill 0.02..0.90, assembling the outputs 0.90..0.95.
WORK_START, WORK_END = 0.02, 0.90


@dataclass
class ShardedResult(SegmentResult):
    """A SegmentResult with what the sharded run did (tiles and tiles_skipped count the tile
    plan as a single-process run does; tiles_computed adds the halo tiles shards share)."""

    workers: int = 0
    shards: int = 0
    shards_run: int = 0
    shards_reused: int = 0
    retries: int = 0
    tiles_computed: int = 0
    worker_throughput: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The sharded run's figures for the CLI's done event."""
        figures = ("workers", "shards", "shards_run", "shards_reused", "retries", "tiles_computed")
        return {
            **{name: getattr(self, name) for name in figures},
            "tiles_per_second": self.worker_throughput,
        }


def _is_remote(path: str) -> bool:
    return "://" in path or path.startswith("/vsi")


def _file_state(path: Path) -> dict[str, Any]:
    """What identifies a file's content cheaply: real path, size and modification time."""
    text = os.fsdecode(path)
    if _is_remote(text):
        return {"path": text}
    try:
        stat = os.stat(path)
    except OSError:
        return {"path": os.fsdecode(real_path(path))}
    return {
        "path": os.fsdecode(real_path(path)),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def job_parameters(plan: Plan) -> dict[str, Any]:
    """Everything a part's content depends on; its fingerprint decides whether parts of an
    earlier run may be reused."""
    job, options, window = plan, plan.options, plan.window
    package = job.package
    assert package is not None
    return {
        "input": _file_state(Path(plan.input)),
        "input_files": [_file_state(f) for f in plan.input_files[1:]],
        "model": {
            "path": os.fsdecode(real_path(package.path)),
            "card": package.card.to_json_dict(),
            "weights": _file_state(package.weights_path),
        },
        "bands": list(job.bands),
        "scaling": {
            "gain": list(job.scaling.gain),
            "offset": list(job.scaling.offset),
            "clip": list(job.scaling.clip) if job.scaling.clip else None,
        },
        "tile": job.size,
        "stride": job.stride,
        "height": plan.height,
        "width": plan.width,
        "extent": list(options.extent) if options.extent is not None else None,
        "window": None
        if window is None
        else [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
        "confidence": options.confidence_dtype if job.outputs.confidence is not None else None,
        "amp": options.amp,
        "gsd": str(options.gsd),
        "output_grid": options.output_grid,
        "resolution": [job.resolution.factor, job.model_tile],
    }


def _check_model(model: Any) -> None:
    if isinstance(model, LoadedModel):
        raise CrossEarthError(
            "a sharded run loads the model in every worker: give a model package (folder or "
            "installed name), not a model loaded in this process"
        )


def _check_workers_fit(job: Plan, workers: Any) -> None:
    """Local CPU workers each hold the model and a run's buffers: refuse a worker count the
    machine's memory cannot hold (the plan's own check counts one)."""
    package = job.package
    assert package is not None
    try:
        weights = package.weights_path.stat().st_size
    except OSError:
        weights = 0
    per_worker = weights + segmentation_bytes(
        tile=job.size,
        batch=job.options.batch_size,
        bands=len(job.bands),
        classes=job.card.num_classes,
        width=job.width,
        input_scale=job.card.input_scale * job.model_tile / job.size,
    )
    check_fits(
        workers.count * per_worker,
        f"segmenting with {workers.count} workers",
        "use fewer workers (or a smaller tile size or batch size)",
        ("workers", "tile", "batch"),
    )


def _open_work_folder(
    work: WorkFolder, parameters: dict[str, Any], resume: bool, overwrite: bool
) -> dict[str, Any] | None:
    """Checks an existing work folder; returns its manifest when the run continues it."""
    shown = describe_path(work.path)
    if not work.exists():
        if resume:
            log.info("nothing to resume (%s does not exist): segmenting everything", shown)
        return None
    if work.path.is_symlink() or not work.path.is_dir():
        raise CrossEarthError(
            f"{shown} exists and is not a folder this tool made; remove it or choose another "
            "output name"
        )
    manifest = work.read_manifest()
    if manifest is None:
        if work.unknown_entries():
            raise CrossEarthError(
                f"{shown} holds files this tool did not write; remove or rename the folder"
            )
        return None  # a run killed before its manifest: nothing to reuse
    if not resume:
        if not overwrite:
            raise CrossEarthError(
                f"{shown} holds the parts of an interrupted run writing this output; resume to "
                "continue it (with the same parameters) or overwrite to start again",
                code=PARTS_INTERRUPTED,
                path=shown,
            )
        work.remove_temporaries()
        work.remove()
        return None
    if manifest.get("fingerprint") != fingerprint(parameters):
        raise CrossEarthError(
            f"{shown} holds the parts of a run with other parameters (input, model, bands, "
            "scaling, tile, extent or confidence differ); resume only with the same "
            "parameters, or remove the folder to start again",
            code=PARTS_OTHER_PARAMETERS,
            path=shown,
        )
    return manifest


def segment_sharded(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model: str | os.PathLike[str] | ModelPackage | None = None,
    options: SegmentOptions | None = None,
    *,
    workers: int | str | None = "auto",
    cluster: str | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
    shards: int | None = None,
) -> ShardedResult:
    """Segments a raster like engine.run.pipeline.segment, with the tiles run by Ray workers.

    `workers`: a number or 'auto' (one per GPU; on CPU, see engine.distributed.session).
    `cluster`: None for a local Ray instance started for this run, or an address ('auto',
    'host:port', 'ray://host:port') to join; an already connected Ray session is used as it is.
    `resume`: reuse the finished parts a killed run of the same job left. `shards`: the number
    of shards (default: engine.distributed.shards.default_shard_count).

    Raises CrossEarthError for bad input (one line) and SegmentationCancelled when `cancel` is
    set; then no output, no part file and no Ray process of this run is left.
    """
    from engine.distributed.session import RaySession, parse_workers

    started = time.perf_counter()
    requested_workers = parse_workers(workers)
    _check_model(model)
    if shards is not None and shards < 1:
        raise CrossEarthError(f"shards must be at least 1, got {shards}")
    job = plan_segment(input_path, output_path, model, options or SegmentOptions(), sharded=True)
    run = _RunResources(RaySession(), job)
    request = _Request(requested_workers, cluster, resume, shards, progress or (lambda f, m: None))
    succeeded = False
    try:
        outcome = _run_sharded(run, job, request, cancel_check(cancel))
        succeeded = True
    finally:
        run.close(succeeded)
    work = outcome.work
    left = work.remove()
    seconds = time.perf_counter() - started
    request.report(1.0, f"done in {seconds:.1f} s")
    result = _result(job, outcome, seconds)
    if left:
        result.warnings.append(
            f"{describe_path(work.path)} was kept: it holds files this tool did not write"
        )
    return result


@dataclass(frozen=True)
class _Request:
    """How the sharded run was asked to run, beside its plan."""

    workers: int | None  # None: auto
    cluster: str | None
    resume: bool
    shards: int | None
    report: ProgressCallback


@dataclass
class _Outcome:
    """What the sharded run did, for its result."""

    work: WorkFolder
    tiles: TilePlan
    plan: list[Shard]
    parts: dict[int, PartInfo]
    todo: list[Shard]
    worker_plan: Any
    stats: Any
    counts: Any
    nodata_pixels: int
    failed: dict[str, str]


def _run_sharded(run: _RunResources, job: Plan, request: _Request, is_cancelled: Any) -> _Outcome:
    """The run's named steps: the tile plan, the work folder (and what a killed run left in
    it), Ray and its workers, the shards still to do, and the outputs assembled from parts."""
    report = request.report
    options = job.options
    confidence_dtype = options.confidence_dtype if job.outputs.confidence else None
    tiles = plan_tiles(job.height, job.width, job.size, job.stride)
    parameters = job_parameters(job)
    work = run.work = WorkFolder(job.outputs.classes)
    manifest = _open_work_folder(work, parameters, request.resume, options.overwrite)
    run.owns_work = True
    plan, parts = _finished_parts(work, manifest, tiles, job, confidence_dtype)

    worker_plan = None
    ray = None
    if plan is None or len(parts) < len(plan):
        if is_cancelled():
            raise SegmentationCancelled()
        ray, worker_plan = _start_ray(run.session, request, job)
    if plan is None:
        assert worker_plan is not None
        plan = _new_shard_plan(work, parameters, tiles, job, request.shards, worker_plan.count)
    todo = [shard for shard in plan if shard.index not in parts]
    reused = len(plan) - len(todo)
    if reused:
        report(WORK_START, f"resuming: {reused} of {len(plan)} shard(s) already done")

    stats = None
    if todo:
        assert ray is not None and worker_plan is not None
        spec = _worker_spec(job, worker_plan, confidence_dtype, work)
        stats = _run_shards(
            run,
            ray,
            spec,
            worker_plan,
            todo,
            total_tiles=sum(len(shard.tiles) for shard in plan),
            done_tiles=sum(len(shard.tiles) for shard in plan if shard.index in parts),
            report=report,
            is_cancelled=is_cancelled,
        )
        parts.update(stats.parts)
    counts, nodata_pixels, failed = _assemble(job, work, plan, parts, report, is_cancelled)
    return _Outcome(
        work, tiles, plan, parts, todo, worker_plan, stats, counts, nodata_pixels, failed
    )


def _result(job: Plan, outcome: _Outcome, seconds: float) -> ShardedResult:
    """What the run wrote and did, for the caller and the CLI's done event."""
    worker_plan, stats, parts = outcome.worker_plan, outcome.stats, outcome.parts
    return ShardedResult.of(
        job,
        counts=outcome.counts,
        nodata_pixels=outcome.nodata_pixels,
        tiles=len(outcome.tiles),
        tiles_skipped=sum(part.tiles_skipped for part in parts.values()),
        seconds=seconds,
        device=f"ray: {worker_plan.describe()}" if worker_plan else "ray: all parts reused",
        failed=outcome.failed,
        workers=min(worker_plan.count, len(outcome.todo)) if worker_plan else 0,
        shards=len(outcome.plan),
        shards_run=len(outcome.todo),
        shards_reused=len(outcome.plan) - len(outcome.todo),
        retries=stats.retries if stats else 0,
        tiles_computed=stats.tiles_computed if stats else 0,
        worker_throughput=stats.throughput if stats else {},
    )


class _RunResources:
    """What a sharded run started and must not leave behind: the Ray session, the shard
    scheduler (its workers), the work folder of part files and the scratch folder of VRTs."""

    def __init__(self, session: Any, job: Plan) -> None:
        self.session = session
        self.scheduler: Any = None
        self.work: WorkFolder | None = None
        self.owns_work = False  # once the work folder was checked as ours to remove
        self.job = job

    def close(self, succeeded: bool) -> None:
        """Stops the workers and Ray; after a failure also removes the part files."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.session.close()
        if not succeeded and self.owns_work and self.work is not None:
            self.work.remove_temporaries()
            self.work.remove()
        self.job.remove_scratch()


def _finished_parts(
    work: WorkFolder,
    manifest: dict[str, Any] | None,
    tiles: TilePlan,
    job: Plan,
    confidence_dtype: str | None,
) -> tuple[list[Shard] | None, dict[int, PartInfo]]:
    """A resumed run's shard plan and the parts its workers finished (none for a new run)."""
    parts: dict[int, PartInfo] = {}
    if manifest is None:
        return None, parts
    rows = [tuple(r) for r in manifest.get("shards", [])]
    plan = shards_from_rows(tiles, job.height, job.size, rows)
    if plan is None:
        raise CrossEarthError(
            f"the shard plan in {describe_path(work.path)} does not fit this raster; "
            "remove the folder to start again"
        )
    for shard in plan:
        part = work.finished_part(shard.index, shard.first, shard.end, job.width, confidence_dtype)
        if part is not None:
            parts[shard.index] = part
    work.remove_temporaries()
    return plan, parts


def _start_ray(session: Any, request: _Request, job: Plan) -> tuple[Any, Any]:
    """Starts (or joins) Ray; returns it and the worker plan (count, device, threads)."""
    from engine.distributed.session import cluster_plan, local_plan

    options, cluster = job.options, request.cluster
    request.report(0.0, "starting Ray" if cluster is None else f"connecting to Ray at {cluster}")
    local = (
        local_plan(options.device, request.workers, options.threads) if cluster is None else None
    )
    if local is not None and not local.gpu:
        _check_workers_fit(job, local)
    ray = session.open(cluster, local)
    worker_plan = local if session.opened and cluster is None else None
    if worker_plan is None:
        worker_plan = cluster_plan(ray, options.device, request.workers, options.threads)
    return ray, worker_plan


def _new_shard_plan(
    work: WorkFolder,
    parameters: dict[str, Any],
    tiles: TilePlan,
    job: Plan,
    shards: int | None,
    workers: int,
) -> list[Shard]:
    """Splits the tile plan into shards and records them in the work folder's manifest."""
    count = shards or default_shard_count(
        len(tiles.row_starts), workers, job.size, job.stride, job.height, job.width
    )
    plan = plan_shards(tiles, job.height, job.size, count)
    work.create(
        {
            "fingerprint": fingerprint(parameters),
            "parameters": parameters,
            "shards": [[shard.first, shard.end] for shard in plan],
        }
    )
    return plan


def _worker_spec(
    job: Plan, worker_plan: Any, confidence_dtype: str | None, work: WorkFolder
) -> WorkerSpec:
    """What every worker needs to segment its shards; all paths absolute, as workers may run
    in another folder. The runtime is chosen for the workers' device, not the driver's."""
    assert job.package is not None
    options, path = job.options, job.source
    return WorkerSpec(
        source=os.fsdecode(path if _is_remote(str(path)) else Path(path).absolute()),
        height=job.height,
        width=job.width,
        package=dataclasses.replace(job.package, path=job.package.path.absolute()),
        bands=tuple(job.bands),
        scaling=job.scaling,
        size=job.size,
        model_tile=job.resampled_tile,
        batch_size=options.batch_size,
        confidence_dtype=confidence_dtype,
        device="cuda" if worker_plan.gpu else "cpu",
        threads=worker_plan.threads,
        amp=options.amp,
        work_folder=os.fsdecode(work.path),
        runtime=choose_runtime(
            options.runtime,
            job.card,
            "cuda" if worker_plan.gpu else "cpu",
            job.model_tile,
            options.compile,
        ),
        compile=options.compile,
    )


def _run_shards(
    run: _RunResources,
    ray: Any,
    spec: WorkerSpec,
    worker_plan: Any,
    todo: list[Shard],
    *,
    total_tiles: int,
    done_tiles: int,
    report: ProgressCallback,
    is_cancelled: Any,
) -> Any:
    """Runs the shards on the workers; returns the scheduler's statistics and the parts."""
    from engine.distributed.scheduler import ShardScheduler

    run.scheduler = ShardScheduler(
        ray,
        spec,
        worker_plan,
        lambda f, m: report(WORK_START + (WORK_END - WORK_START) * f, m),
        is_cancelled,
        total_tiles=total_tiles,
        done_tiles=done_tiles,
    )
    stats = run.scheduler.run(todo)
    # The workers are done: free their memory (and the Ray instance) before writing.
    run.scheduler.stop()
    run.scheduler = None
    run.session.close()
    return stats


def _assemble(
    job: Plan,
    work: WorkFolder,
    plan: list[Shard],
    parts: dict[int, PartInfo],
    report: ProgressCallback,
    is_cancelled: Any,
) -> tuple[np.ndarray, int, dict[str, str]]:
    """Streams the parts, in order, into the run's outputs and publishes them (as the
    single-process run does). Returns (class counts, nodata pixels, failed outputs)."""
    card = job.card
    nodata = class_encoding(card.num_classes)[1]
    height, width = job.height, job.width
    writer: OutputWriter | None = None
    try:
        writer = OutputWriter(
            card, job.outputs, job.profile, job.tags, job.options.confidence_dtype
        )
        bytes_per_row = width * (2 + (4 if writer.confidence is not None else 0))
        step = max(1, ASSEMBLY_CHUNK_BYTES // bytes_per_row)
        expected = np.zeros(card.num_classes, np.int64)
        for shard in plan:
            part = parts[shard.index]
            expected += np.asarray(part.class_counts, np.int64)
            classes = work.open_rows(part, "classes")
            confidence = work.open_rows(part, "confidence") if writer.confidence else None
            for top in range(0, shard.rows, step):
                if is_cancelled():
                    raise SegmentationCancelled()
                block = np.array(classes[top : top + step])
                scores = None if confidence is None else np.array(confidence[top : top + step])
                writer.write(
                    DecidedRows(shard.first + top, block, scores, int((block == nodata).sum()))
                )
                report(
                    WORK_END + 0.05 * (shard.first + top + block.shape[0]) / height,
                    f"writing rows {shard.first + top + block.shape[0]}/{height}",
                )
            del classes, confidence  # closes the memory maps
        if not np.array_equal(expected, writer.counts):
            problem = (
                f"the part files in {describe_path(work.path)} do not hold the rows their "
                "workers counted"
            )
            raise CrossEarthError(
                f"{problem}; run again without resume", code=PARTS_DAMAGED, problem=problem
            )
        failed = complete_outputs(writer, job, report, is_cancelled)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    return writer.counts, writer.nodata_pixels, failed
