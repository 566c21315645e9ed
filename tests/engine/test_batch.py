"""`crossearth segment-batch`: many real rasters (crops of the bundled samples, one reprojected),
one output each, the index of footprints, the VRT mosaic, failures recorded, usage errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from osgeo import gdal, ogr
from rasterio.warp import transform_bounds

from engine import files as engine_files
from engine.cli import main
from engine.commands.cli_messages import cli_message
from engine.errors import CrossEarthError, SegmentationCancelled
from engine.files import TEMP_PREFIX
from engine.run.batch import BatchRequest, run_batch
from engine.run.batch_inputs import BatchInput, expand_inputs, gdal_name, unique_stems
from engine.run.pipeline import SegmentOptions

from .conftest import http_server

REPO = Path(__file__).resolve().parents[2]
RALEIGH = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"  # 5 named bands
RALEIGH_2000 = REPO / "resources" / "data" / "raleigh" / "landsat7_2000.tif"  # 5 named bands
OLINDA = REPO / "resources" / "samples" / "landsat7_olinda_6band.tif"  # 6 unnamed bands
BUNDLED = REPO / "resources" / "models" / "crossearth-landsat-lc"  # 5 bands, 5 classes
CLASS_NAMES = ["developed", "herbaceous / agriculture", "shrubland", "forest", "water"]

gdal.UseExceptions()


def crop(source: Path, target: Path, x: int, y: int, width: int, height: int) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    gdal.Translate(str(target), str(source), srcWin=[x, y, width, height])
    return target


def checksums(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def batch(capsys, *args):
    return run_cli(capsys, "segment-batch", *args, "--model", BUNDLED, "--device", "cpu")


def batch_of_two(capsys, scenes, out: Path, *options):
    """segment-batch of scenes a and b into `out` with `options`, without progress output."""
    return batch(
        capsys, scenes["a"], scenes["b"], "--output-dir", out, *options, "--progress", "none"
    )


def index_rows(path: Path) -> list[dict]:
    data = ogr.Open(str(path))
    layer = data.GetLayerByName("index")
    rows = []
    for feature in layer:
        row = {name: feature.GetField(name) for name in ("input", "output", "status", "message")}
        row["classes"] = json.loads(feature.GetField("classes") or "null")
        row["seconds"] = feature.GetField("seconds")
        geometry = feature.GetGeometryRef()
        row["envelope"] = geometry.GetEnvelope() if geometry is not None else None
        rows.append(row)
    srs = layer.GetSpatialRef()
    rows_srs = srs.GetAuthorityCode(None) if srs is not None else None
    data = None
    return [{**row, "srs": rows_srs} for row in rows]


def no_leftovers(*folders: Path) -> None:
    for folder in folders:
        assert not [p for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert engine_files.registered_temporaries() == []


@pytest.fixture
def scenes(tmp_path: Path) -> dict[str, Path]:
    """Small real crops: two sizes in EPSG:32119, one warped to EPSG:3857, one 6-band scene in
    EPSG:31985."""
    folder = tmp_path / "scenes"
    a = crop(RALEIGH, folder / "raleigh_a.tif", 0, 0, 64, 48)
    b = crop(RALEIGH_2000, folder / "raleigh_b.tif", 200, 150, 80, 56)
    warped = tmp_path / "warped" / "raleigh_3857.tif"
    warped.parent.mkdir()
    gdal.Warp(
        str(warped),
        str(crop(RALEIGH, tmp_path / "w" / "src.tif", 64, 64, 60, 60)),
        dstSRS="EPSG:3857",
    )
    olinda = crop(OLINDA, tmp_path / "other" / "olinda.tif", 100, 100, 56, 72)
    return {"a": a, "b": b, "warped": warped, "olinda": olinda}


def test_mixed_sizes_bands_and_crs(tmp_path, capsys, scenes):
    inputs = [scenes["a"], scenes["warped"], scenes["olinda"], scenes["b"]]
    before = checksums(inputs)
    out = tmp_path / "out"
    # The 6-band scene has no band names: --bands picks the model's five for every input.
    code, stdout, err = batch(
        capsys,
        *inputs,
        "--output-dir",
        out,
        "--bands",
        "1,2,3,4,5",
        "--confidence",
        "--progress",
        "none",
    )
    assert code == 0, err
    assert checksums(inputs) == before
    for source in inputs:
        stem = source.stem
        with rasterio.open(source) as src, rasterio.open(out / f"{stem}_classes.tif") as dst:
            assert dst.crs == src.crs and dst.shape == src.shape
            assert dst.transform.almost_equals(src.transform)
        with rasterio.open(out / f"{stem}_confidence.tif") as conf:
            assert conf.shape == src.shape and conf.dtypes[0] == "float32"
    rows = index_rows(out / "index.gpkg")
    assert [r["input"] for r in rows] == [str(p) for p in inputs]
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [r["output"] for r in rows] == [f"{p.stem}_classes.tif" for p in inputs]
    assert rows[0]["srs"] == "4326"  # mixed CRSs: footprints in EPSG:4326
    for row, source in zip(rows, inputs, strict=True):
        assert list(row["classes"]) == CLASS_NAMES and row["seconds"] > 0
        with rasterio.open(source) as src:
            data = src.read(1)
            valid = int((data != src.nodata).sum()) if src.nodata is not None else data.size
            assert sum(row["classes"].values()) == valid
            west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        xmin, xmax, ymin, ymax = row["envelope"]
        assert xmin == pytest.approx(west, abs=1e-6) and xmax == pytest.approx(east, abs=1e-6)
        assert ymin == pytest.approx(south, abs=1e-6) and ymax == pytest.approx(north, abs=1e-6)
    # Olinda (Brazil) and Raleigh (North Carolina) footprints are where they belong.
    assert rows[2]["envelope"][0] < -34 and rows[2]["envelope"][2] < -7
    assert -79 < rows[0]["envelope"][0] < -78 and 35 < rows[0]["envelope"][2] < 36
    assert not (out / "mosaic.vrt").exists()
    assert "no mosaic: the outputs are in different CRSs" in stdout
    assert "EPSG:3857" in stdout and "EPSG:31985" in stdout and "EPSG:32119" in stdout
    expected = {"index.gpkg"} | {
        name
        for p in inputs
        for name in (
            f"{p.stem}_classes.tif",
            f"{p.stem}_classes.tif.aux.xml",
            f"{p.stem}_confidence.tif",
        )
    }
    assert {p.name for p in out.iterdir()} == expected
    no_leftovers(out, scenes["a"].parent)


def test_same_crs_gets_a_mosaic_and_deterministic_names(tmp_path, capsys, scenes):
    twin = crop(RALEIGH, tmp_path / "elsewhere" / "raleigh_a.tif", 100, 90, 48, 40)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n\n{twin}\n", encoding="utf-8")
    out = tmp_path / "out"
    # The folder gives raleigh_a and raleigh_b (sorted); the list adds a second raleigh_a,
    # which becomes raleigh_a_2; raleigh_b named again is taken once.
    code, stdout, err = batch(
        capsys,
        scenes["a"].parent,
        f"@{listing}",
        scenes["b"],
        "--output-dir",
        out,
        "--polygons",
        "--progress",
        "none",
    )
    assert code == 0, err
    rows = index_rows(out / "index.gpkg")
    assert [r["output"] for r in rows] == [
        "raleigh_a_classes.tif",
        "raleigh_b_classes.tif",
        "raleigh_a_2_classes.tif",
    ]
    assert [r["input"] for r in rows] == [str(scenes["a"]), str(scenes["b"]), str(twin)]
    for row in rows:
        assert (out / row["output"].replace(".tif", ".gpkg")).exists()
    assert rows[0]["srs"] == "32119"  # one CRS: footprints in it, exactly the bounds
    with rasterio.open(scenes["b"]) as src:
        left, bottom, right, top = src.bounds
    assert rows[1]["envelope"] == pytest.approx((left, right, bottom, top))
    mosaic = gdal.Open(str(out / "mosaic.vrt"))
    assert mosaic.GetSpatialRef().GetAuthorityCode(None) == "32119"
    sources = sorted(Path(f).name for f in mosaic.GetFileList()[1:])
    assert sources == ["raleigh_a_2_classes.tif", "raleigh_a_classes.tif", "raleigh_b_classes.tif"]
    # Relative source names: the output folder can be moved as a whole.
    assert 'relativeToVRT="1"' in (out / "mosaic.vrt").read_text()
    band = mosaic.GetRasterBand(1)
    assert band.GetColorTable() is not None
    values = band.ReadAsArray()
    assert set(np.unique(values)) <= set(range(5)) | {band.GetNoDataValue()}
    # The mosaic shows each output where it lies: the twin's pixels at its place.
    with rasterio.open(out / "raleigh_a_2_classes.tif") as twin_out:
        col, row = ~mosaic_transform(mosaic) * (twin_out.bounds.left, twin_out.bounds.top)
        window = values[
            round(row) : round(row) + twin_out.height, round(col) : round(col) + twin_out.width
        ]
        assert np.array_equal(window, twin_out.read(1))
    mosaic = None
    assert f"mosaic: {out / 'mosaic.vrt'}" in stdout
    no_leftovers(out)


def mosaic_transform(dataset):
    from affine import Affine

    return Affine.from_gdal(*dataset.GetGeoTransform())


def test_a_damaged_input_fails_alone(tmp_path, capsys, scenes):
    damaged = tmp_path / "scenes" / "damaged.tif"
    gdal.Translate(
        str(damaged),
        str(RALEIGH),
        srcWin=[0, 0, 64, 64],
        creationOptions=["TILED=YES", "BLOCKXSIZE=32", "BLOCKYSIZE=32", "COMPRESS=DEFLATE"],
    )
    with rasterio.open(damaged) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    data = bytearray(damaged.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    damaged.write_bytes(bytes(data))
    before = checksums([damaged, scenes["a"]])
    out = tmp_path / "out"
    code, stdout, err = batch(
        capsys, scenes["a"], damaged, scenes["b"], "--output-dir", out, "--progress", "json"
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"crossearth: 1 of 3 inputs failed (status 'failed' in {out / 'index.gpkg'}); "
        "the others are done"
    ]
    assert checksums([damaged, scenes["a"]]) == before
    rows = index_rows(out / "index.gpkg")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    failed = rows[1]
    assert "damaged.tif at rows" in failed["message"] and failed["output"] == ""
    assert failed["classes"] is None and failed["envelope"] is not None
    assert not (out / "damaged_classes.tif").exists()
    assert (out / "raleigh_b_classes.tif").exists() and (out / "mosaic.vrt").exists()
    events = [json.loads(line) for line in stdout.splitlines()]
    done = [e for e in events if e["event"] == "input_done"]
    assert [(e["index"], e["status"]) for e in done] == [(1, "ok"), (2, "failed"), (3, "ok")]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1] == {
        **events[-1],
        "event": "done",
        "inputs": 3,
        "ok": 2,
        "failed": 1,
        "skipped": 0,
        "mosaic": str(out / "mosaic.vrt"),
    }
    no_leftovers(out)


def test_unreadable_input_stops_before_anything_is_written(tmp_path, capsys, scenes):
    broken = tmp_path / "scenes" / "broken.tif"
    broken.write_bytes(scenes["a"].read_bytes()[:100])
    out = tmp_path / "out"
    code, _, err = batch(capsys, scenes["a"], broken, "--output-dir", out, "--progress", "none")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("crossearth: ") and "broken.tif" in line
    assert "not a raster GDAL can read" in line
    assert not out.exists()
    code, _, err = batch(
        capsys, scenes["a"], tmp_path / "missing.tif", "--output-dir", out, "--progress", "none"
    )
    assert code == 2 and "missing.tif does not exist" in err and not out.exists()


def test_existing_outputs_and_resume(tmp_path, capsys, scenes):
    out = tmp_path / "out"
    inputs = [scenes["a"], scenes["b"]]
    code, _, err = batch(capsys, *inputs, "--output-dir", out, "--progress", "none")
    assert code == 0, err
    first = index_rows(out / "index.gpkg")
    # Again without --overwrite or --resume: refused, nothing touched.
    kept = checksums(sorted(out.iterdir()))
    code, _, err = batch(capsys, *inputs, "--output-dir", out, "--progress", "none")
    assert code == 2 and "raleigh_a_classes.tif already exists" in err
    assert "--overwrite" in err and "--resume" in err
    assert checksums(sorted(out.iterdir())) == kept
    # An interrupted batch: one output missing. --resume does only that one.
    (out / "raleigh_b_classes.tif").unlink()
    (out / "raleigh_b_classes.tif.aux.xml").unlink()
    code, stdout, err = batch(
        capsys, *inputs, "--output-dir", out, "--progress", "none", "--resume"
    )
    assert code == 0, err
    rows = index_rows(out / "index.gpkg")
    assert [r["status"] for r in rows] == ["skipped", "ok"]
    assert "earlier run" in rows[0]["message"]
    # The skipped row keeps what the earlier index said about it.
    assert rows[0]["classes"] == first[0]["classes"] and rows[0]["seconds"] == first[0]["seconds"]
    assert rows[1]["classes"] == first[1]["classes"]
    assert (out / "raleigh_b_classes.tif").exists() and (out / "mosaic.vrt").exists()
    code, _, err = batch(
        capsys, *inputs, "--output-dir", out, "--resume", "--overwrite", "--progress", "none"
    )
    assert code == 2 and "pass one of them" in err
    no_leftovers(out)


@pytest.mark.parametrize("foreign", ["not a raster", "another raster"])
def test_resume_never_takes_a_foreign_file_for_a_finished_result(tmp_path, capsys, scenes, foreign):
    out = tmp_path / "out"
    inputs = [scenes["a"], scenes["b"]]
    code, _, err = batch(capsys, *inputs, "--output-dir", out, "--progress", "none")
    assert code == 0, err
    # The user's file under b's output name, an earlier output gone.
    (out / "raleigh_b_classes.tif.aux.xml").unlink()
    theirs = out / "raleigh_b_classes.tif"
    if foreign == "not a raster":
        theirs.write_text("my notes")
    else:
        with rasterio.open(scenes["b"]) as src:
            profile, data = src.profile, src.read(1)
        with rasterio.open(theirs, "w", **(profile | {"count": 1})) as dst:
            dst.write(data, 1)
    kept = theirs.read_bytes()
    (out / "raleigh_a_classes.tif").unlink()  # resume has work to do
    code, _, err = batch(capsys, *inputs, "--output-dir", out, "--progress", "none", "--resume")
    assert code == 2 and err.count("\n") == 1
    assert "is not a result of" in err and "raleigh_b_classes.tif" in err
    assert theirs.read_bytes() == kept
    assert not (out / "raleigh_a_classes.tif").exists()


def test_extent_skips_inputs_it_misses(tmp_path, capsys, scenes):
    with rasterio.open(scenes["a"]) as src:
        left, bottom, right, top = src.bounds
    extent = f"{left},{bottom + 10 * 28.5},{left + 20 * 28.5},{top}"
    out = tmp_path / "out"
    code, _, err = batch_of_two(capsys, scenes, out, "--extent", extent)
    assert code == 0, err
    rows = index_rows(out / "index.gpkg")
    assert [(r["status"], r["message"]) for r in rows] == [
        ("ok", ""),
        ("skipped", "outside the extent"),
    ]
    with rasterio.open(out / "raleigh_a_classes.tif") as dst:
        assert dst.shape == (38, 20)
    assert rows[0]["envelope"] == pytest.approx((left, left + 20 * 28.5, bottom + 10 * 28.5, top))
    assert not (out / "raleigh_b_classes.tif").exists()


def test_vsi_paths_and_urls(tmp_path, capsys, scenes, monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(scenes["a"], "inner/zipped.tif")
    with http_server(scenes["b"].parent) as address:
        url = f"{address}/raleigh_b.tif"
        out = tmp_path / "out"
        code, _, err = batch(
            capsys,
            f"/vsizip/{archive}/inner/zipped.tif",
            url,
            "--output-dir",
            out,
            "--progress",
            "none",
        )
    assert code == 0, err
    rows = index_rows(out / "index.gpkg")
    assert [r["input"] for r in rows] == [f"/vsizip/{archive}/inner/zipped.tif", url]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    with rasterio.open(out / "raleigh_b_classes.tif") as dst, rasterio.open(scenes["b"]) as src:
        assert dst.shape == src.shape and dst.crs == src.crs
    with rasterio.open(out / "zipped_classes.tif") as dst:
        assert dst.shape == (48, 64)
    no_leftovers(out)


def test_batch_needs_no_gdal_bindings(tmp_path, scenes, monkeypatch):
    """The engine's environment has rasterio and pyogrio, not osgeo: index, mosaic and polygons
    all work without it."""
    monkeypatch.setitem(sys.modules, "osgeo", None)  # `from osgeo import ...` fails
    out = tmp_path / "out"
    result = run_batch(
        BatchRequest(
            items=[str(scenes["a"]), str(scenes["b"])],
            output_dir=out,
            model=str(BUNDLED),
            options=SegmentOptions(device="cpu"),
            polygons=True,
        )
    )
    assert result.index == out / "index.gpkg" and result.mosaic == out / "mosaic.vrt"
    monkeypatch.delitem(sys.modules, "osgeo")
    rows = index_rows(result.index)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r["envelope"] is not None for r in rows)
    for stem in ("raleigh_a", "raleigh_b"):
        data = ogr.Open(str(out / f"{stem}_classes.gpkg"))  # the layer needs its dataset
        polygons = data.GetLayerByName("classes")
        assert polygons.GetFeatureCount() > 0
        assert ogr.GeometryTypeToName(polygons.GetGeomType()) == "Multi Polygon"
        polygons = data = None
    with (
        rasterio.open(out / "mosaic.vrt") as mosaic,
        rasterio.open(out / "raleigh_a_classes.tif") as part,
    ):
        window = mosaic.window(*part.bounds)
        assert (mosaic.read(1, window=window) == part.read(1)).all()


def test_input_expansion(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.tif", "a.TIF", "notes.txt", "a.tif.aux.xml", ".hidden.tif", "c.jp2"):
        (folder / name).write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "d.tif").write_bytes(b"")
    # An earlier batch's outputs in the output folder are never taken as inputs.
    (folder / "a_classes.tif").write_bytes(b"")
    (folder / "mosaic.vrt").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(
        "in/b.tif\n# comment\n\nhttps://example.com/x/scene.tif?sig=1\ns3://bucket/k/s.tif\n"
    )
    found = expand_inputs(
        [str(folder), str(folder / "**" / "*.tif"), str(listing), "/vsis3/b/k.tif"],
        output_dir=folder,
    )
    assert [f.source for f in found] == [
        str(folder / "a.TIF"),
        str(folder / "b.tif"),
        str(folder / "c.jp2"),
        str(folder / "sub" / "d.tif"),  # the glob; the folder's files are taken once
        "/vsicurl/https://example.com/x/scene.tif?sig=1",
        "/vsis3/bucket/k/s.tif",
        "/vsis3/b/k.tif",
    ]
    assert [f.given for f in found][4] == "https://example.com/x/scene.tif?sig=1"
    assert gdal_name("gs://b/x.tif") == "/vsigs/b/x.tif"
    stems = unique_stems(
        [BatchInput(s, s) for s in ("a/x.tif", "b/X.tif", "c/x_2.tif", "d/x.tif")] + found[4:6]
    )
    assert stems == ["x", "X_2", "x_2_2", "x_3", "scene", "s"]
    with pytest.raises(CrossEarthError, match="the list file .*none.txt does not exist"):
        expand_inputs([f"@{tmp_path / 'none.txt'}"])
    with pytest.raises(CrossEarthError, match="no raster file matches"):
        expand_inputs([str(tmp_path / "*.nothing")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CrossEarthError, match="holds no raster files"):
        expand_inputs([str(empty)])
    nested = tmp_path / "nested.txt"
    nested.write_text("other.txt\n")
    with pytest.raises(CrossEarthError, match="line 1 of .*names another list"):
        expand_inputs([str(nested)])


def test_batch_with_two_ray_workers(tmp_path, capsys, scenes):
    pytest.importorskip("engine.distributed.driver", reason="the sharded core is not built yet")
    out = tmp_path / "out"
    code, stdout, err = batch_of_two(capsys, scenes, out, "--workers", "2")
    assert code == 0, err
    single = tmp_path / "single"
    code, _, err = batch_of_two(capsys, scenes, single)
    assert code == 0, err
    for name in ("raleigh_a_classes.tif", "raleigh_b_classes.tif"):
        with rasterio.open(out / name) as sharded, rasterio.open(single / name) as alone:
            assert np.array_equal(sharded.read(1), alone.read(1))
    assert [r["status"] for r in index_rows(out / "index.gpkg")] == ["ok", "ok"]
    no_leftovers(out)


def test_every_segment_option_reaches_each_input():
    from dataclasses import fields

    from engine.cli import build_parser
    from engine.raster.resolution import parse_gsd
    from engine.run.batch import segment_options_from_args
    from engine.run.options import PER_INPUT_FIELDS, option_argument

    parser = build_parser()
    plain = parser.parse_args(["segment-batch", "x.tif", "--output-dir", "o"])
    for option in fields(SegmentOptions):
        if option.name not in PER_INPUT_FIELDS:
            assert hasattr(plain, option_argument(option.name)), option.name
    assert segment_options_from_args(plain) == SegmentOptions()
    args = parser.parse_args(
        ["segment-batch", "x.tif", "--output-dir", "o", "--tile=32", "--overlap=8", "--batch=2"]
        + ["--bands=1,2,3,4,5", "--scaling=0,255", "--device=cpu", "--threads=1", "--no-amp"]
        + ["--confidence-type=uint8", "--extent=1,2,3,4", "--overwrite", "--gsd=native"]
        + ["--output-grid=model", "--min-region=20", "--keep-classes=water,forest"]
        + ["--simplify=2.5", "--confidence", "--polygons"]
    )
    assert segment_options_from_args(args) == SegmentOptions(
        tile_size=32,
        overlap=8,
        batch_size=2,
        bands=[1, 2, 3, 4, 5],
        scaling="0,255",
        device="cpu",
        threads=1,
        amp=False,
        confidence_dtype="uint8",
        extent=(1.0, 2.0, 3.0, 4.0),
        overwrite=True,
        gsd=parse_gsd("native"),
        output_grid="model",
        min_region="20",
        keep_classes=["water", "forest"],
        simplify_m=2.5,
    )


def test_cancel_keeps_finished_outputs_and_writes_no_index(tmp_path, scenes):
    out = tmp_path / "out"
    stop = threading.Event()
    events: list[tuple[str, dict]] = []

    def on_event(event: str, fields: dict) -> None:
        events.append((event, fields))
        if event == "input_done":
            stop.set()  # cancel once the first input is done

    request = BatchRequest(
        items=[str(scenes["a"]), str(scenes["b"])],
        output_dir=out,
        model=str(BUNDLED),
        options=SegmentOptions(device="cpu"),
    )
    with pytest.raises(SegmentationCancelled) as caught:
        run_batch(request, on_event, cancel=stop)
    message = str(caught.value)
    assert "batch stopped after 1 of 2 inputs" in message and "with resume" in message
    assert cli_message(caught.value).endswith("run the same command with --resume to do the rest")
    assert sorted(p.name for p in out.iterdir()) == [
        "raleigh_a_classes.tif",
        "raleigh_a_classes.tif.aux.xml",
    ]
    no_leftovers(out)
    # --resume does the rest and writes the index of both.
    request.resume = True
    result = run_batch(request)
    assert [row.status for row in result.rows] == ["skipped", "ok"]
    assert result.mosaic == out / "mosaic.vrt"


def test_an_output_named_like_another_input_never_replaces_it(tmp_path, capsys, scenes):
    """a.tif's class raster is a_classes.tif: when that is another input of the same batch
    (written into the inputs' own folder), the batch is refused before anything is written."""
    folder = scenes["a"].parent
    other = folder / "raleigh_a_classes.tif"
    shutil.copy(scenes["b"], other)
    before = checksums(sorted(folder.iterdir()))
    code, _, err = batch(capsys, scenes["a"], other, "--output-dir", folder, "--progress", "none")
    assert code == 2 and err.count("\n") == 1, err
    assert "would replace" in err and "raleigh_a_classes.tif" in err
    assert checksums(sorted(folder.iterdir())) == before
