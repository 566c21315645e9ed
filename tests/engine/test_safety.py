"""Trust: `segment` never replaces an input, never leaves a partial file and never ends in a
traceback. Every case asserts the one-line message, exit code 2, the inputs' checksums and
that nothing is left beside the outputs or in the temp dir."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from engine import files as engine_files
from engine.files import TEMP_PREFIX, run_mark
from engine.models.architectures import register_architecture, unregister_architecture
from engine.models.packages import save_package
from engine.raster.raster_output import _check_aux

from .conftest import (
    LANDSAT,
    REPO,
    PixelLinear,
    make_card,
    seeded,
    segment_args,
    write_raster,
    write_tiled,
)
from .test_cli import package, run_cli  # noqa: F401 (fixture)


def checksum(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): checksum(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(autouse=True)
def clean_tmpdir(tmp_path, monkeypatch):
    """A private system temp dir for every test here, empty again when the test ends."""
    folder = tmp_path / "systemp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == [], "the run left files in the temp dir"


@pytest.fixture
def rgb(tmp_path) -> Path:
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])[:, :96, :80]
    folder = tmp_path / "in"
    folder.mkdir()
    return write_raster(folder / "rgb.tif", data, descriptions=["blue", "green", "red"])


def expect_refused(capsys, args, message: str, watched: list[Path]) -> str:
    """Runs the CLI, asserts exit 2 with one line holding `message`, and that every watched
    folder is byte for byte as before."""
    before = {folder: snapshot(folder) for folder in watched}
    code, out, err = run_cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("crossearth: "), err
    assert message in lines[0], lines[0]
    for folder in watched:
        assert snapshot(folder) == before[folder], f"{folder} changed"
        assert not [p for p in folder.rglob(f"{TEMP_PREFIX}*")]
    assert engine_files.registered_temporaries() == []
    return lines[0]


# --- data loss: what the run writes never is what it reads ---------------------------------


def test_vrt_output_onto_its_source_is_refused(tmp_path, capsys, package, rgb):  # noqa: F811
    from osgeo import gdal

    vrt = tmp_path / "in" / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(rgb)]).FlushCache()
    expect_refused(
        capsys,
        segment_args(package, vrt, rgb, "--overwrite"),
        f"is {rgb}, a file the input mosaic.vrt reads",
        [rgb.parent],
    )


def test_confidence_through_dotdot_onto_the_output_is_refused(
    tmp_path,
    capsys,
    package,  # noqa: F811
    rgb,
):
    out = tmp_path / "out"
    out.mkdir()
    expect_refused(
        capsys,
        segment_args(package, rgb, out / "x.tif", "--confidence", out / ".." / "out" / "x.tif"),
        "are the same file",
        [rgb.parent, out],
    )


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_output_that_links_to_the_input_is_refused(tmp_path, capsys, package, rgb, link):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    target = out / "result.tif"
    (os.symlink if link == "symlink" else os.link)(rgb, target)
    expect_refused(
        capsys,
        segment_args(package, rgb, target, "--overwrite"),
        "is the input raster",
        [rgb.parent, out],
    )


def test_output_onto_a_sidecar_the_input_reads_is_refused(tmp_path, capsys, package, rgb):  # noqa: F811
    # The input's .aux.xml is in GDAL's file list; a confidence raster of that name would
    # replace it.
    from osgeo import gdal

    aux = Path(f"{rgb}.aux.xml")
    handle = gdal.Open(str(rgb), gdal.GA_ReadOnly)  # read-only: metadata goes to the .aux.xml
    handle.SetMetadataItem("NOTE", "keep me")
    handle = None
    with rasterio.open(rgb) as src:
        assert aux in [Path(f) for f in src.files]
    expect_refused(
        capsys,
        segment_args(package, rgb, tmp_path / "c.tif", "--confidence", aux, "--overwrite"),
        "a file the input rgb.tif reads",
        [rgb.parent],
    )


def test_existing_output_needs_overwrite(tmp_path, capsys, package, rgb):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.tif").write_bytes(b"an earlier result")
    expect_refused(
        capsys, segment_args(package, rgb, out / "x.tif"), "pass --overwrite", [out, rgb.parent]
    )
    code, _, err = run_cli(capsys, *segment_args(package, rgb, out / "x.tif", "--overwrite"))
    assert code == 0, err
    with rasterio.open(out / "x.tif") as dst:
        assert dst.shape == (96, 80)


def test_stale_metadata_sidecar_counts_as_existing_output(tmp_path, capsys, package, rgb):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    Path(f"{out / 'x.tif'}.aux.xml").write_text("<PAMDataset/>")
    expect_refused(
        capsys, segment_args(package, rgb, out / "x.tif"), "x.tif.aux.xml already exists", [out]
    )


def test_no_scratch_folder_without_extent_and_none_left_with_one(
    tmp_path,
    capsys,
    package,  # noqa: F811
    rgb,
    clean_tmpdir,
):
    code, _, err = run_cli(capsys, *segment_args(package, rgb, tmp_path / "a.tif"))
    assert code == 0, err
    assert list(clean_tmpdir.iterdir()) == []
    with rasterio.open(rgb) as src:
        left, bottom, right, top = src.bounds
    extent = f"{left},{bottom},{(left + right) / 2},{top}"
    code, _, err = run_cli(
        capsys, *segment_args(package, rgb, tmp_path / "b.tif", "--extent", extent)
    )
    assert code == 0, err
    assert list(clean_tmpdir.iterdir()) == []


def test_stale_leftovers_of_our_prefix_are_removed_and_reported(tmp_path, capsys, package, rgb):  # noqa: F811
    """Only what a run that is over left (its process gone) is removed, and only after a
    day: a running job's temporaries, the user's look-alikes and fresh ones stay."""
    out = tmp_path / "out"
    out.mkdir()
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(ended.stdout)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mark = run_mark().rsplit("p", 1)[0]
        old = out / f"{TEMP_PREFIX}{mark}p{dead_pid}-0badf00d-x.tif"
        fresh = out / f"{TEMP_PREFIX}{mark}p{dead_pid}-12345678-x.tif"
        live = out / f"{TEMP_PREFIX}{mark}p{running.pid}-0badf00d-x.tif"
        other_host = out / f"{TEMP_PREFIX}abcdefp{dead_pid}-0badf00d-x.tif"
        users = out / f"{TEMP_PREFIX}my-notes.txt"
        unrelated = out / ".x.json"
        for path in (old, fresh, live, other_host, users, unrelated):
            path.write_bytes(b"")
        two_days_ago = time.time() - 2 * 86400
        for path in (old, live, other_host, users, unrelated):
            os.utime(path, (two_days_ago, two_days_ago))
        code, stdout, err = run_cli(capsys, *segment_args(package, rgb, out / "x.tif"))
    finally:
        running.kill()
        running.wait()
    assert code == 0, err
    assert not old.exists()
    assert all(p.exists() for p in (fresh, live, other_host, users, unrelated))
    assert "removed 1 temporary file(s) older than a day" in stdout


# --- a full disk, a denied rename: checked writes -------------------------------------------


def _limited_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_after_the_class_raster_keeps_it_and_says_what_is_missing(
    tmp_path,
    package,  # noqa: F811
    rgb,
):
    # Files may not grow past 16 KiB in the child: the small class raster fits, the float
    # confidence raster and the GeoPackage (SQLite's pages alone are larger) do not, as on a
    # disk that fills up at the end of a run.
    out = tmp_path / "out"
    out.mkdir()
    before = checksum(rgb)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.engine.cli_with_test_model",
            *map(str, segment_args(package, rgb, out / "x.tif")),
            "--confidence",
            str(out / "conf.tif"),
            "--polygons",
            str(out / "x.gpkg"),
            "--progress",
            "none",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=_limited_file_size(16 * 1024),
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 3, result.stderr
    assert len(lines) == 2, lines
    # Caught at the write (EFBIG) or, when GDAL only logs it at close, by the read-back.
    confidence, polygons = lines
    assert (
        confidence.startswith("crossearth: confidence not written: ") and "conf.tif" in confidence
    )
    assert "disk" in confidence and "full" in confidence, lines
    assert polygons.startswith("crossearth: polygons not written: ") and "x.gpkg" in polygons
    # The class raster is complete, readable and the only output; no temporary is left.
    assert sorted(p.name for p in out.iterdir()) in (["x.tif"], ["x.tif", "x.tif.aux.xml"])
    with rasterio.open(out / "x.tif") as classes:
        assert classes.shape == (96, 80)
        assert set(np.unique(classes.read(1)).tolist()) <= set(range(len(package.card.classes)))
    assert checksum(rgb) == before


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])  # denied; owned by another user
def test_denied_final_rename_is_one_line(tmp_path, capsys, package, rgb, monkeypatch, code):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == out / "x.tif":
            raise PermissionError(code, os.strerror(code), str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(engine_files.os, "replace", replace)
    expect_refused(
        capsys, segment_args(package, rgb, out / "x.tif"), "permission denied writing", [out]
    )


def test_failure_while_building_overviews_is_one_line(tmp_path, capsys, package, monkeypatch):  # noqa: F811
    from rasterio.errors import RasterioIOError

    big = write_raster(
        tmp_path / "big.tif",
        np.random.default_rng(0).integers(0, 255, (3, 600, 600), dtype=np.uint8),
        descriptions=["blue", "green", "red"],
    )
    out = tmp_path / "out"
    out.mkdir()

    from engine.raster import raster_output

    real_open = raster_output.rasterio.open

    class NoSpaceForOverviews:
        def __init__(self, dataset):
            self._dataset = dataset

        def __getattr__(self, name):
            return getattr(self._dataset, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._dataset.close()

        def build_overviews(self, *args, **kwargs):
            raise RasterioIOError("Write failed: No space left on device")

    def open_(path, mode="r", **kwargs):
        dataset = real_open(path, mode, **kwargs)
        return NoSpaceForOverviews(dataset) if mode in ("w", "r+") else dataset

    monkeypatch.setattr(raster_output.rasterio, "open", open_)
    expect_refused(capsys, segment_args(package, big, out / "x.tif"), "disk is full", [out])


@pytest.mark.parametrize("content", [b"", b"<PAMDataset><PAMRasterBand band="])
def test_empty_or_cut_metadata_sidecar_is_refused(tmp_path, content):
    aux = tmp_path / "x.tif.aux.xml"
    aux.write_bytes(content)
    from engine.errors import CrossEarthError

    with pytest.raises(CrossEarthError, match="could not be written completely"):
        _check_aux(aux, ["water", "forest"], tmp_path / "out.tif.aux.xml")


# --- killed with SIGKILL: the exact leftovers are announced --------------------------------


def test_sigkill_leaves_only_announced_temporaries(tmp_path, package, rgb, clean_tmpdir):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / ".x.json").write_text("{}")  # an unrelated hidden file
    big = write_raster(
        tmp_path / "in" / "big.tif",
        np.random.default_rng(1).integers(0, 255, (3, 2048, 1024), dtype=np.uint8),
        descriptions=["blue", "green", "red"],
    )
    env = dict(os.environ, TMPDIR=str(clean_tmpdir))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.engine.cli_with_test_model",
            *map(str, segment_args(package, big, out / "x.tif")),
            "--progress=json",
            "--tile",
            "64",
            "--batch",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    announced = []
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "temporary":
            announced.append(Path(event["path"]))
        if event["event"] == "progress" and event["fraction"] > 0.05:
            break
    process.kill()
    process.wait()
    process.stdout.close()
    left = sorted(p for p in out.iterdir() if p.name != ".x.json")
    assert announced and left and set(left) <= set(announced)
    assert all(p.name.startswith(TEMP_PREFIX) for p in left)
    # A later run in the same folder removes them once they are a day old, and says so.
    for path in left:
        os.utime(path, (time.time() - 90000, time.time() - 90000))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.engine.cli_with_test_model",
            *map(str, segment_args(package, rgb, out / "y.tif")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"removed {len(left)} temporary file(s)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [".x.json", "y.tif", "y.tif.aux.xml"]
    assert list(clean_tmpdir.iterdir()) == []


# --- silent wrong results: NaN and infinities are nodata ------------------------------------


def _float_raster(tmp_path, poison) -> Path:
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])[:, :64, :64].astype(np.float32) * 40.0
    poison(data)
    return write_raster(
        tmp_path / "float.tif", data, nodata=None, descriptions=["blue", "green", "red"]
    )


@pytest.mark.parametrize("scaling", ["auto", "0,10200"])
def test_nan_and_inf_pixels_are_nodata(tmp_path, capsys, package, scaling):  # noqa: F811
    def poison(data):
        data[:, 10:20, :] = np.nan
        data[1, 30, 5] = np.inf
        data[2, 40, 7] = -np.inf

    raster = _float_raster(tmp_path, poison)
    out = tmp_path / "x.tif"
    code, stdout, err = run_cli(
        capsys, *segment_args(package, raster, out, "--scaling", scaling, "--progress=json")
    )
    assert code == 0, err
    done = json.loads(stdout.splitlines()[-1])
    assert "nan" not in done["scaling"].lower() and "inf" not in done["scaling"].lower()
    with rasterio.open(out) as dst:
        classes = dst.read(1)
        nodata = dst.nodata
    invalid = classes == nodata
    assert invalid[10:20].all() and invalid[30, 5] and invalid[40, 7]
    assert int(invalid.sum()) == 10 * 64 + 2 == done["nodata_pixels"]
    # The valid pixels are not one class everywhere: the statistics were not poisoned.
    assert len(np.unique(classes[~invalid])) > 1


def test_all_nan_raster_is_one_clear_line(tmp_path, capsys, package):  # noqa: F811
    raster = _float_raster(tmp_path, lambda data: data.fill(np.nan))
    expect_refused(
        capsys,
        segment_args(package, raster, tmp_path / "out.tif"),
        "holds no valid pixels",
        [tmp_path],
    )


# --- read errors after the header ----------------------------------------------------------


def _tiled_copy(tmp_path, name: str) -> Path:
    data = np.random.default_rng(2).integers(0, 255, (3, 512, 512), dtype=np.uint8)
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    return write_tiled(path, data, block=256)


def _refused_unscaled(tmp_path, capsys, package, source: Path, message: str) -> str:  # noqa: F811
    """Segments `source` without scaling into an empty tmp_path/out; asserts the refusal
    (`message` in its line, the source's folder and out/ untouched) and returns its line."""
    out = tmp_path / "out"
    out.mkdir()
    return expect_refused(
        capsys,
        segment_args(package, source, out / "x.tif", "--scaling", "none"),
        message,
        [source.parent, out],
    )


def test_truncated_geotiff_names_file_and_window(tmp_path, capsys, package):  # noqa: F811
    raster = _tiled_copy(tmp_path, "cut.tif")
    data = raster.read_bytes()
    raster.write_bytes(data[: len(data) * 2 // 3])
    line = _refused_unscaled(tmp_path, capsys, package, raster, "cut.tif")
    assert "at rows" in line or "not a raster GDAL can read" in line


def test_corrupt_block_names_file_and_window(tmp_path, capsys, package):  # noqa: F811
    raster = _tiled_copy(tmp_path, "corrupt.tif")
    with rasterio.open(raster) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    data = bytearray(raster.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    raster.write_bytes(bytes(data))
    line = _refused_unscaled(tmp_path, capsys, package, raster, "corrupt.tif at rows ")
    assert "damaged" in line


def test_vrt_with_missing_source_names_the_file(tmp_path, capsys, package):  # noqa: F811
    from osgeo import gdal

    raster = _tiled_copy(tmp_path, "part.tif")
    vrt = tmp_path / "in" / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(raster)]).FlushCache()
    raster.unlink()
    _refused_unscaled(tmp_path, capsys, package, vrt, "mosaic.vrt")


# --- requests that cannot fit ------------------------------------------------------------


def test_tile_larger_than_the_raster_is_clamped(tmp_path, capsys, package, rgb):  # noqa: F811
    code, stdout, err = run_cli(
        capsys,
        *segment_args(package, rgb, tmp_path / "a.tif", "--tile", "100000", "--progress=json"),
    )
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["tiles"] == 1
    progress = [json.loads(line) for line in stdout.splitlines()]
    assert any("tiles of 96 px" in e.get("message", "") for e in progress)


def test_batch_beyond_the_machine_is_refused(tmp_path, capsys, package, rgb):  # noqa: F811
    expect_refused(
        capsys,
        segment_args(package, rgb, tmp_path / "a.tif", "--batch", "100000000"),
        "GiB are available; use a smaller --tile or --batch",
        [rgb.parent, tmp_path],
    )


@pytest.mark.parametrize("extent", ["nan,0,1,1", "0,0,inf,1", "-inf,0,1,1", "0,0,1,nan"])
def test_extent_must_be_finite(tmp_path, capsys, package, rgb, extent):  # noqa: F811
    expect_refused(
        capsys,
        segment_args(package, rgb, tmp_path / "a.tif", f"--extent={extent}"),
        "not a finite number",
        [rgb.parent, tmp_path],
    )


# --- names and warnings ------------------------------------------------------------------


def test_file_names_that_are_not_utf8(tmp_path, capsys, package, rgb):  # noqa: F811
    odd_input = Path(os.fsdecode(bytes(tmp_path / "in") + b"/caf\xe9.tif"))
    os.link(rgb, odd_input)
    expect_refused(
        capsys,
        segment_args(package, odd_input, tmp_path / "a.tif"),
        "is not valid UTF-8",
        [rgb.parent],
    )
    odd_output = Path(os.fsdecode(bytes(tmp_path) + b"/r\xe9sultat.tif"))
    expect_refused(
        capsys,
        segment_args(package, rgb, odd_output),
        "is not valid UTF-8",
        [rgb.parent, tmp_path],
    )


def test_georeferencing_warning_of_a_jpeg_is_one_line(tmp_path, capsys, package, rgb):  # noqa: F811
    from osgeo import gdal

    jpeg = tmp_path / "photo.jpg"
    gdal.Translate(str(jpeg), str(rgb), format="JPEG").FlushCache()
    for sidecar in tmp_path.glob("photo.jpg.aux.xml"):
        sidecar.unlink()
    code, stdout, err = run_cli(
        capsys, *segment_args(package, jpeg, tmp_path / "a.tif", "--gsd", "native")
    )
    assert code == 0, err
    assert err.strip() == "", err
    warned = [line for line in stdout.splitlines() if line.startswith("warning: ")]
    assert warned == ["warning: photo.jpg has no CRS; the output will have none either"]


@pytest.mark.parametrize(
    "geotransform",
    ["nan, 30, 0, 4000000, 0, -30", "500000, 0, 0, 4000000, 0, -30", "500000, inf, 0, 0, 0, -30"],
)
def test_a_raster_whose_geotransform_is_not_a_grid_is_refused(
    tmp_path,
    capsys,
    package,  # noqa: F811
    rgb,
    geotransform,
):
    vrt = tmp_path / "in" / "broken.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">rgb.tif</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt.write_text(
        f'<VRTDataset rasterXSize="80" rasterYSize="96"><GeoTransform>{geotransform}'
        f"</GeoTransform>{bands}</VRTDataset>"
    )
    expect_refused(
        capsys,
        segment_args(package, vrt, tmp_path / "out" / "x.tif"),
        "has a geotransform that is not a grid",
        [tmp_path / "in"],
    )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("gsd", ["0.001", "0.00000001"])
def test_an_absurdly_fine_gsd_is_refused_before_any_work(tmp_path, capsys, package, rgb, gsd):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    message = expect_refused(
        capsys, segment_args(package, rgb, out / "x.tif", "--gsd", gsd), "finer than", [out]
    )
    assert "or native" in message and time.monotonic() - started < 10


def test_an_absurdly_fine_gsd_in_the_card_is_refused_before_any_work(tmp_path, capsys, rgb):
    register_architecture(
        "test-pixel-linear", lambda config, card: PixelLinear(3, card.num_classes), replace=True
    )
    try:
        card = make_card(num_classes=4, bands=("blue", "green", "red"), tile=64, stride=48)
        card = dataclasses.replace(card, gsd_m=1e-6)
        fine = save_package(tmp_path / "fine", card, seeded(PixelLinear(3, 4)).state_dict())
        out = tmp_path / "out"
        out.mkdir()
        message = expect_refused(
            capsys, segment_args(fine, rgb, out / "x.tif"), "the model's GSD", [out]
        )
        assert "finer than" in message
    finally:
        unregister_architecture("test-pixel-linear")


@pytest.mark.parametrize(("dtype", "scale", "warned"), [("uint8", 1, False), ("uint16", 257, True)])
def test_auto_scaling_says_when_it_had_to_guess_the_range(
    tmp_path,
    capsys,
    package,  # noqa: F811
    rgb,
    dtype,
    scale,
    warned,
):
    """The same scene as 8-bit and as 16-bit digital numbers: the 16-bit one is stretched band
    by band, which the run says (and a given range does not need)."""
    with rasterio.open(rgb) as src:
        data = src.read().astype(dtype) * scale
    scene = write_raster(
        tmp_path / "in" / f"scene-{dtype}.tif", data, descriptions=["blue", "green", "red"]
    )
    code, out, err = run_cli(capsys, *segment_args(package, scene, tmp_path / f"{dtype}.tif"))
    assert code == 0, err
    assert ("stretched each band" in out) == warned
    if warned:
        code, out, err = run_cli(
            capsys,
            *segment_args(package, scene, tmp_path / "given.tif", "--scaling", "0,65535"),
        )
        assert code == 0 and "stretched each band" not in out


@pytest.mark.parametrize(
    ("named", "given", "noted"), [(True, None, False), (False, None, True), (False, "3,2,1", False)]
)
def test_bands_taken_by_position_are_said(
    tmp_path,
    capsys,
    package,  # noqa: F811
    named,
    given,
    noted,
):
    """Without band names the engine cannot tell BGR from RGB: it says what it assumed."""
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])[:, :96, :80]
    names = ["blue", "green", "red"] if named else None
    # GDAL calls a new 3-band 8-bit GeoTIFF RGB; a scene whose bands nothing names:
    unnamed = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined]
    scene = write_raster(
        tmp_path / "scene.tif", data, descriptions=names, colorinterp=None if named else unnamed
    )
    extra = ["--bands", given] if given else []
    code, out, err = run_cli(capsys, *segment_args(package, scene, tmp_path / "x.tif", *extra))
    assert code == 0, err
    assert ("read in order (1 as blue, 2 as green, 3 as red)" in out) == noted, out
