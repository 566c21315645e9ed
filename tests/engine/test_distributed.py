"""Sharded inference on Ray: the same output as a single process, retries, resume, and nothing
left behind after a cancel, an error or SIGTERM.

The Ray tests share one local Ray instance (2 CPUs) started once for the module; the sharded
runs join it (an initialized Ray session is used as it is). The model is the bundled
crossearth-landsat-lc (a real CrossEarth network the Ray worker processes build themselves) on
crops of the Raleigh Landsat 7 sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from engine.commands.cli_messages import cli_message
from engine.distributed.parts import PartWriter, WorkFolder, work_folder_for
from engine.distributed.session import WorkerPlan, cluster_plan, parse_workers
from engine.distributed.shards import (
    default_shard_count,
    plan_shards,
    shards_from_rows,
)
from engine.errors import CrossEarthError, SegmentationCancelled
from engine.files import temporary_name
from engine.run.pipeline import SegmentOptions, segment
from engine.run.row_stream import DecidedRows
from engine.run.tiling import plan_tiles

from .conftest import write_tiled

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
MODEL = "crossearth-landsat-lc"


def child_env() -> dict[str, str]:
    # Taken when the child starts: ray.init sets RAY_AUTH_MODE for the clusters it starts,
    # which a second driver needs to join them.
    return {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}


def start_child(*args: str) -> subprocess.Popen:
    """`python ARGS` in the repository, in child_env(), its stdout and stderr piped (text)."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- planning and part files (no Ray) -------------------------------------------------------


def test_shards_split_whole_tile_rows_with_their_halo():
    size, stride, height = 64, 43, 301
    tiles = plan_tiles(height, 157, size, stride)
    starts = tiles.row_starts
    shards = plan_shards(tiles, height, size, 3)
    assert [s.first for s in shards][0] == 0 and shards[-1].end == height
    for shard, following in zip(shards, shards[1:], strict=False):
        assert shard.end == following.first
        assert following.first in starts
        # The border lies inside the overlap of the tile row above it.
        assert any(t.row < following.first < t.row + size for t in tiles)
    for shard in shards:
        # exactly the plan's tiles that touch the shard's rows, indices as in the whole plan
        assert list(shard.tiles) == [
            t for t in tiles if t.row < shard.end and t.row + size > shard.first
        ]
    # Own tiles partition the plan; halo tiles are recomputed by the shard below.
    assert sum(s.own_tiles() for s in shards) == len(tiles)
    assert [s.own_tiles() for s in shards] == [
        sum(1 for t in s.tiles if s.first <= t.row < s.end) for s in shards
    ]
    assert sum(len(s.tiles) for s in shards) > len(tiles)
    assert len(plan_shards(tiles, height, size, 99)) == len(starts)
    rows = [(s.first, s.end) for s in shards]
    assert shards_from_rows(tiles, height, size, rows) == shards
    assert shards_from_rows(tiles, height, size, [(0, 100), (100, height)]) is None  # not a row
    assert shards_from_rows(tiles, height, size, rows[:-1]) is None  # short of the height


def test_default_shard_count_bounds_the_halo_work():
    # A small raster: one shard per worker, never more shards than tile rows.
    assert default_shard_count(4, 2, 64, 43, 176, 192) == 2
    assert default_shard_count(1, 8, 64, 43, 40, 40) == 1
    assert default_shard_count(7, 1, 64, 43, 300, 300) == 1
    # Large enough that the halo costs <= 5 %: four shards per worker.
    assert default_shard_count(1000, 2, 64, 43, 43_000, 500) == 8
    # Huge: shards of at most 2**28 pixels.
    assert default_shard_count(10_000, 1, 512, 512, 5_120_000, 100_000) >= 1900


def test_worker_plans():
    assert parse_workers("auto") is None and parse_workers(" 3 ") == 3
    with pytest.raises(CrossEarthError, match="workers 'x' is not valid") as caught:
        parse_workers("x")
    assert caught.value.code == "workers.invalid" and caught.value.fields["value"] == "x"
    assert cli_message(caught.value).startswith("--workers 'x' is not valid")
    with pytest.raises(CrossEarthError, match="must be at least 1"):
        parse_workers(0)

    class FakeRay:
        @staticmethod
        def nodes():
            return [
                {"Alive": True, "Resources": {"CPU": 8.0}},
                {"Alive": True, "Resources": {"CPU": 2.0}},
                {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
            ]

    assert cluster_plan(FakeRay, "auto", None, None) == WorkerPlan(5, False, 2)
    assert cluster_plan(FakeRay, "cpu", 2, None) == WorkerPlan(2, False, 5)
    assert cluster_plan(FakeRay, "auto", None, 4) == WorkerPlan(2, False, 4)
    with pytest.raises(CrossEarthError, match="the Ray cluster has no GPUs"):
        cluster_plan(FakeRay, "cuda", None, None)


def _write_part(folder: Path, index: int, first: int, rows: np.ndarray, conf: bool = True):
    writer = PartWriter(
        folder,
        index,
        first,
        first + rows.shape[0],
        rows.shape[1],
        3,
        "uint8",
        "float32" if conf else None,
    )
    confidence = rows.astype(np.float32) / 10 if conf else None
    writer.write(DecidedRows(first, rows, confidence, int((rows == 255).sum())))
    return writer.finish(tiles=4, tiles_skipped=1, seconds=0.5, worker="test")


def test_part_files_are_checked_and_removed_by_name(tmp_path):
    output = tmp_path / "out.tif"
    work = WorkFolder(output)
    assert work.path == work_folder_for(output) == tmp_path / ".crossearth-work-out.tif"
    work.create({"fingerprint": "abc", "shards": [[0, 3], [3, 5]]})
    rows = np.array([[0, 1, 2, 255], [2, 2, 1, 0], [1, 1, 1, 1]], np.uint8)
    info = _write_part(work.path, 0, 0, rows)
    assert info.class_counts == [2, 6, 3] and info.nodata_pixels == 1
    assert np.array_equal(work.open_rows(info, "classes"), rows)
    assert work.finished_part(0, 0, 3, 4, "float32") == info
    assert work.finished_part(0, 0, 3, 4, None) is None  # other confidence: rerun
    _write_part(work.path, 0, 0, rows)
    # One flipped byte: the checksum fails, the part is removed and runs again.
    data = work.path / "part-00000.classes.npy"
    damaged = bytearray(data.read_bytes())
    damaged[-1] ^= 1
    data.write_bytes(bytes(damaged))
    assert work.finished_part(0, 0, 3, 4, "float32") is None
    assert not data.exists() and not (work.path / "part-00000.json").exists()
    assert work.read_manifest()["fingerprint"] == "abc"
    # Removal deletes only the names it writes (and their temporaries), never anything else.
    _write_part(work.path, 1, 3, rows[:2], conf=False)
    temporary_name(work.path / "part-00001.classes.npy").write_bytes(b"x")
    (work.path / "notes.txt").write_text("mine")
    assert work.remove() == [work.path / "notes.txt"]
    assert sorted(p.name for p in work.path.iterdir()) == ["notes.txt"]
    (work.path / "notes.txt").unlink()
    assert work.remove() == [] and not work.path.exists()


# -- sharded runs on Ray ----------------------------------------------------------------------

ray = pytest.importorskip("ray")


def _processes() -> dict[int, tuple[str, str, int]]:
    """pid -> (name, state, parent pid) of every process on this machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (name, fields[0], int(fields[1]))
    return found


def _live_descendants(pid: int) -> dict[int, str]:
    """The live (not zombie) processes below `pid`, with their names."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for child, (_, _, parent) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            name, state, _ = table[child]
            if state != "Z":
                found[child] = name
            todo.append(child)
    return found


def _still_alive(pids) -> set[int]:
    table = _processes()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


@pytest.fixture(scope="module")
def ray_cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # a new instance, never a cluster someone started on this machine
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",  # loopback only
        log_to_driver=False,
        object_store_memory=128 << 20,
        logging_level="ERROR",
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Workers run one thread each; the single-process reference does too, so both compute
    # every tile with the same kernels.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def crop(path: Path, rows: slice, cols: slice, nodata_box: int = 0) -> Path:
    """A window of the Raleigh sample (its CRS, GSD and band names); the top-left
    `nodata_box` pixels set to nodata."""
    with rasterio.open(SAMPLE) as src:
        data = src.read(window=((rows.start, rows.stop), (cols.start, cols.stop)))
        transform = src.window_transform(((rows.start, rows.stop), (cols.start, cols.stop)))
        profile = {
            "driver": "GTiff",
            "count": src.count,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": transform,
            "height": data.shape[1],
            "width": data.shape[2],
            "nodata": 0 if nodata_box else None,
        }
        names = src.descriptions
    if nodata_box:
        data[:, :nodata_box, :nodata_box] = 0
        data[:, nodata_box:][data[:, nodata_box:] == 0] = 1
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(names):
            dst.set_band_description(index + 1, name)
    return path


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as dst:
        return dst.read(1)


def polygon_summary(path: Path) -> tuple[int, dict[int, float]]:
    from osgeo import ogr

    source = ogr.Open(str(path))
    areas: dict[int, float] = {}
    count = 0
    for feature in source.GetLayer("classes"):
        index = feature.GetField("class_id")
        areas[index] = areas.get(index, 0.0) + feature.GetField("area_m2")
        count += 1
    return count, areas


def assert_same_outputs(single, sharded, confidence_atol: float = 1e-6) -> None:
    a, b = read(single.output), read(sharded.output)
    differing = int((a != b).sum())
    assert differing == 0, f"{differing} of {a.size} pixels differ"
    assert sharded.class_pixels == single.class_pixels
    assert sharded.nodata_pixels == single.nodata_pixels
    assert (sharded.tiles, sharded.tiles_skipped) == (single.tiles, single.tiles_skipped)
    with rasterio.open(single.output) as x, rasterio.open(sharded.output) as y:
        assert (x.transform, x.crs, x.nodata) == (y.transform, y.crs, y.nodata)
        assert x.colormap(1) == y.colormap(1)
        assert x.tags(1) == y.tags(1)
        assert x.overviews(1) == y.overviews(1)
    if single.confidence is not None:
        np.testing.assert_allclose(
            read(sharded.confidence), read(single.confidence), rtol=0, atol=confidence_atol
        )
    if single.polygons is not None:
        count, areas = polygon_summary(single.polygons)
        count_b, areas_b = polygon_summary(sharded.polygons)
        assert count_b == count
        assert areas_b == pytest.approx(areas)


def output_folders(tmp_path: Path) -> tuple[Path, Path]:
    """The single-process run's and the sharded run's output folders, made empty."""
    single_dir, sharded_dir = tmp_path / "single", tmp_path / "sharded"
    single_dir.mkdir()
    sharded_dir.mkdir()
    return single_dir, sharded_dir


def only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def raleigh(tmp_path_factory):
    """The Raleigh sample (176 x 192) and its single-process classes (batches of 2)."""
    folder = tmp_path_factory.mktemp("raleigh")
    raster = crop(folder / "raleigh.tif", slice(0, 176), slice(0, 192))
    reference = segment(
        raster, folder / "single.tif", MODEL, SegmentOptions(device="cpu", batch_size=2)
    )
    return raster, reference


def test_sharded_equals_single_process_odd_size_confidence_polygons(tmp_path, ray_cluster):
    from engine.distributed import segment_sharded

    raster = crop(tmp_path / "odd.tif", slice(9, 160), slice(31, 148), nodata_box=70)
    before = checksum(raster)
    single_dir, sharded_dir = output_folders(tmp_path)

    def options(folder: Path) -> SegmentOptions:
        return SegmentOptions(
            device="cpu",
            batch_size=2,
            confidence=folder / "conf.tif",
            polygons=folder / "classes.gpkg",
        )

    single = segment(raster, single_dir / "classes.tif", MODEL, options(single_dir))
    events = []
    sharded = segment_sharded(
        raster,
        sharded_dir / "classes.tif",
        MODEL,
        options(sharded_dir),
        workers=2,
        shards=3,
        progress=lambda f, m: events.append((f, m)),
    )
    assert (read(single.output).shape) == (151, 117)  # odd sizes
    assert single.tiles_skipped == 1  # the nodata corner's tile, an own tile of shard 0
    assert_same_outputs(single, sharded)
    assert (sharded.shards, sharded.shards_run, sharded.shards_reused) == (3, 3, 0)
    assert sharded.tiles_computed > sharded.tiles  # halo rows above shard borders
    assert len(sharded.worker_throughput) == 2
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("tile ") and "tiles/s" in m for _, m in events)
    assert only(sharded_dir) == ["classes.gpkg", "classes.tif", "classes.tif.aux.xml", "conf.tif"]
    assert checksum(raster) == before


def test_sharded_extent_at_another_gsd_equals_single_process(tmp_path, ray_cluster):
    from engine.distributed import segment_sharded

    raster = crop(tmp_path / "in.tif", slice(0, 176), slice(0, 192))
    with rasterio.open(raster) as src:
        left, top = src.transform * (20.4, 11.7)
        right, bottom = src.transform * (171.2, 160.1)
    single_dir, sharded_dir = output_folders(tmp_path)

    def options(folder: Path) -> SegmentOptions:
        return SegmentOptions(
            device="cpu",
            batch_size=3,
            extent=(left, bottom, right, top),
            gsd=40.0,
            confidence=folder / "conf.tif",
            confidence_dtype="uint8",
        )

    single = segment(raster, single_dir / "c.tif", MODEL, options(single_dir))
    sharded = segment_sharded(
        raster, sharded_dir / "c.tif", MODEL, options(sharded_dir), workers=2, shards=2
    )
    assert read(single.output).shape == (150, 152)
    assert sharded.resolution == single.resolution and "40" in single.resolution
    assert_same_outputs(single, sharded, confidence_atol=0)
    # The extent's VRT was written beside the output and is gone with the work folder.
    assert only(sharded_dir) == ["c.tif", "c.tif.aux.xml", "conf.tif"]


def _named_workers() -> list[str]:
    return [name for name in ray.util.list_named_actors() if name.startswith("crossearth-worker-")]


def test_a_killed_worker_is_replaced_and_the_output_is_the_same(tmp_path, ray_cluster, raleigh):
    from engine.distributed import segment_sharded

    raster, reference = raleigh
    killed: list[int] = []

    def progress(fraction: float, message: str) -> None:
        if killed or not message.startswith("tile "):
            return
        for name in _named_workers():
            actor = ray.get_actor(name)
            shard, done = ray.get(actor.state.remote())
            # Busy with a shard (on a loaded machine progress may arrive between its tiles or
            # just after a shard started: either way the shard is unfinished).
            if shard is not None and done < 6:
                pid = ray.get(actor.pid.remote())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return

    result = segment_sharded(
        raster,
        tmp_path / "classes.tif",
        MODEL,
        SegmentOptions(device="cpu", batch_size=2),
        workers=2,
        shards=4,
        progress=progress,
    )
    assert killed, "no worker was busy when the test looked"
    assert result.retries == 1
    assert result.shards_run == 4
    assert np.array_equal(read(result.output), read(reference.output))
    assert result.class_pixels == reference.class_pixels
    assert only(tmp_path) == ["classes.tif", "classes.tif.aux.xml"]
    assert _named_workers() == [] or _wait_for(lambda: _named_workers() == [])


def _wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_killed_driver_then_resume_runs_only_the_unfinished_shards(tmp_path, ray_cluster, raleigh):
    from engine.distributed import segment_sharded

    raster, reference = raleigh
    output = tmp_path / "classes.tif"
    work = work_folder_for(output)

    def resume(options: SegmentOptions):
        return segment_sharded(raster, output, MODEL, options, workers=2, resume=True)

    # One worker runs 4 shards one after the other; the driver is killed after the first.
    child = start_child(
        "-m",
        "tests.engine.sharded_cli_child",
        "4",
        "segment",
        str(raster),
        str(output),
        "--model",
        MODEL,
        "--workers",
        "1",
        "--threads",
        "1",
        "--batch",
        "2",
        "--device",
        "cpu",
        "--cluster",
        ray_cluster,
        "--progress",
        "json",
    )
    try:
        assert _wait_for(lambda: len(list(work.glob("part-*.json"))) >= 1, timeout=120), (
            child.stderr.read() if child.poll() is not None else "no part appeared"
        )
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    # Ray ends the dead driver's worker (its CPU comes back); only then are the parts final.
    assert _wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, timeout=60)
    finished = len(list(work.glob("part-*.json")))
    assert 1 <= finished < 4
    assert not output.exists()

    # The work folder is not taken over by a run that did not ask to resume it ...
    with pytest.raises(CrossEarthError, match="interrupted run writing this output; resume") as e:
        segment_sharded(raster, output, MODEL, SegmentOptions(device="cpu"), workers=2)
    assert e.value.code == "parts.interrupted"
    assert "pass --resume to continue it" in cli_message(e.value)
    # ... nor resumed with other parameters.
    with pytest.raises(CrossEarthError, match="holds the parts of a run with other parameters"):
        resume(SegmentOptions(device="cpu", tile_size=32))
    assert len(list(work.glob("part-*.json"))) == finished

    result = resume(SegmentOptions(device="cpu", batch_size=2))
    assert (result.shards, result.shards_reused, result.shards_run) == (
        4,
        finished,
        4 - finished,
    )
    assert np.array_equal(read(result.output), read(reference.output))
    assert result.class_pixels == reference.class_pixels
    assert only(tmp_path) == ["classes.tif", "classes.tif.aux.xml"]


def test_cancel_leaves_no_part_no_output_no_worker(tmp_path, ray_cluster, raleigh):
    from engine.distributed import segment_sharded

    raster, _ = raleigh
    cancel = threading.Event()
    seen = []

    def progress(fraction: float, message: str) -> None:
        seen.append(message)
        if message.startswith("tile ") and not message.startswith("tile 0/"):
            cancel.set()

    with pytest.raises(SegmentationCancelled):
        segment_sharded(
            raster,
            tmp_path / "classes.tif",
            MODEL,
            SegmentOptions(device="cpu", confidence=tmp_path / "conf.tif"),
            workers=2,
            shards=4,
            progress=progress,
            cancel=cancel,
        )
    assert any(m.startswith("tile ") for m in seen)
    assert only(tmp_path) == []
    assert _wait_for(lambda: _named_workers() == [])


def _damaged_copy(source: Path, path: Path) -> tuple[Path, int]:
    """A tiled, compressed copy whose bottom-right block is damaged; returns its first row."""
    from osgeo import gdal

    with rasterio.open(source) as src:
        data, crs, transform, names = src.read(), src.crs, src.transform, src.descriptions
    write_tiled(path, data, 64, crs=crs, transform=transform, names=names)
    handle = gdal.Open(str(path))
    offset = int(handle.GetRasterBand(1).GetMetadataItem("BLOCK_OFFSET_2_2", "TIFF"))
    handle = None
    damaged = bytearray(path.read_bytes())
    damaged[offset + 2 : offset + 200] = b"\xff" * 198
    path.write_bytes(bytes(damaged))
    return path, 128


def test_damaged_data_stops_the_run_with_one_line(tmp_path, ray_cluster, raleigh):
    from engine.distributed import segment_sharded

    raster, _ = raleigh
    damaged, first_bad_row = _damaged_copy(raster, tmp_path / "damaged.tif")
    before = checksum(damaged)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CrossEarthError) as caught:
        segment_sharded(
            damaged, out / "classes.tif", MODEL, SegmentOptions(device="cpu"), workers=2, shards=3
        )
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read {damaged}")
    rows = message.split(" at rows ")[1].split(",")[0]
    assert int(rows.split("..")[1]) > first_bad_row  # the window holds the damaged block
    assert only(out) == []
    assert checksum(damaged) == before
    assert _wait_for(lambda: _named_workers() == [])


def test_a_worker_that_cannot_read_the_input_is_one_line(tmp_path, ray_cluster):
    from engine.distributed import segment_sharded

    raster = crop(tmp_path / "in.tif", slice(0, 64), slice(0, 64))
    hidden = tmp_path / "moved.tif"

    def progress(fraction: float, message: str) -> None:
        # The driver has read the input; the workers, which open it themselves, do not find it.
        if message == "starting Ray" and raster.exists():
            raster.rename(hidden)

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CrossEarthError) as caught:
        segment_sharded(
            raster,
            out / "c.tif",
            MODEL,
            SegmentOptions(device="cpu"),
            workers=1,
            progress=progress,
        )
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot do the job: input raster" in message and str(raster) in message
    assert "every worker must reach the input" in message
    assert only(out) == []


def test_sigterm_stops_a_local_ray_run_and_leaves_no_ray_process(tmp_path, raleigh):
    raster, _ = raleigh
    output = tmp_path / "classes.tif"
    child = start_child(
        "-m",
        "engine.cli",
        "segment",
        str(raster),
        str(output),
        "--workers",
        "2",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--progress",
        "json",
    )
    events = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            event = json.loads(line)
            events.append(event)
            if event.get("event") == "progress" and event["message"].startswith("tile "):
                break
        ray_started = _live_descendants(child.pid)
        child.send_signal(signal.SIGTERM)
        rest, errors = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    events += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert child.returncode == 130, errors
    assert events[-1]["event"] == "cancelled"
    assert "interrupted; no output was written" in errors
    assert only(tmp_path) == []
    # The run had started Ray's daemons and its workers; none of them is left.
    names = set(ray_started.values())
    assert {"raylet", "gcs_server"} <= names, names
    # (/proc/PID/comm keeps 15 characters of "ray::ShardWorker")
    assert sum(name.startswith("ray::ShardWork") for name in ray_started.values()) == 2, names
    assert _wait_for(lambda: not _still_alive(ray_started), timeout=30), {
        pid: ray_started[pid] for pid in _still_alive(ray_started)
    }


def test_without_workers_ray_is_not_imported_and_resume_needs_them(tmp_path, capsys):
    code = (
        "import sys, engine.cli, engine.distributed, engine.run.pipeline;"
        "engine.cli.build_parser().parse_args(['segment', 'a.tif', 'b.tif']);"
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env()).returncode == 0
    from engine.cli import main

    raster = crop(tmp_path / "in.tif", slice(0, 32), slice(0, 32))
    assert main(["segment", str(raster), str(tmp_path / "o.tif"), "--resume"]) == 2
    assert "--resume continues a sharded run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", str(raster), str(tmp_path / "o.tif"), "--workers", "0"])
    assert "0 must be at least 1 (or auto)" in capsys.readouterr().err
    assert only(tmp_path) == ["in.tif"]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_cluster_that_does_not_answer_is_one_line_in_seconds(tmp_path, scheme):
    """Ray itself keeps retrying a dead address for minutes; the engine refuses it at once."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"{scheme}127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there
    raster = crop(tmp_path / "in.tif", slice(0, 64), slice(0, 64))
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "engine.cli", "segment", str(raster), str(out / "c.tif")]
    command += ["--model", str(MODEL), "--device", "cpu", "--cluster", address]
    command += ["--progress", "none"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert time.monotonic() - started < 60
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("crossearth: cannot reach the Ray cluster at ")
    assert only(out) == []


def test_the_reachability_check_passes_what_answers_and_leaves_auto_to_ray():
    import socket

    from engine.distributed.session import check_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    check_reachable("auto")  # Ray's own search for a cluster on this machine
    with pytest.raises(CrossEarthError, match="cannot reach the Ray cluster"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=2)
