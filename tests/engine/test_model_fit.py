"""engine/models/model_fit.py: which models take a raster, and the advice when the chosen one
does not (the same text from `crossearth fit`, segment's band error and, through them, the
plugin)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from engine.models.model_fit import (
    FINE_TUNE_HINT,
    FULL_ENVIRONMENT,
    Candidate,
    RasterFacts,
    assess,
    band_mapping,
)

from .conftest import LANDSAT, write_raster

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
LANDSAT_BANDS = ("blue", "green", "red", "nir", "swir1")


def facts(names: list[str | None], gsd: float | None = 0.3, dtype: str = "uint8") -> RasterFacts:
    return RasterFacts("ortho.tif", tuple((n,) if n else () for n in names), dtype, gsd)


RGB = Candidate("rgb-aerial", ("red", "green", "blue"), 0.3, path="/models/rgb-aerial")
LANDSAT_MODEL = Candidate("landsat", LANDSAT_BANDS, 28.5, path="/models/landsat")


def hub_model(name: str, bands: tuple[str, ...], gsd: float, size_text: str) -> Candidate:
    """A model of the hub, not downloaded yet: it needs the Full environment."""
    return Candidate(
        name, bands, gsd, size_text=size_text, license="MIT (hub)", requires=FULL_ENVIRONMENT
    )


NRG_DOWNLOAD = hub_model("nrg-download", ("nir", "red", "green"), 0.09, "1.68 GB")
RGB_DOWNLOAD = hub_model("rgb-download", ("red", "green", "blue"), 0.5, "1.72 GB")


def test_band_mapping_by_name_in_order_or_none():
    assert band_mapping(facts(["blue", "green", "red", "nir"]), ["red", "green", "blue"]) == (
        (3, 2, 1),
        True,
    )
    # Unnamed bands are taken in order, flagged as a guess.
    assert band_mapping(facts([None, None, None, None]), ["red", "green", "blue"]) == (
        (1, 2, 3),
        False,
    )
    # Too few bands, or every band named and the model's not among them: no mapping.
    assert band_mapping(facts(["red", "green"]), ["red", "green", "blue"]) is None
    assert band_mapping(facts(["red", "green", "blue"]), ["nir", "red", "green"]) is None


def test_an_rgb_layer_and_the_landsat_model_get_the_models_that_take_it():
    report = assess(
        facts(["red", "green", "blue"]),
        LANDSAT_MODEL,
        [RGB, LANDSAT_MODEL, RGB_DOWNLOAD, NRG_DOWNLOAD],
    )
    assert not report.fits
    assert report.problems[0] == (
        "it has 3 band(s) and the model needs 5 (blue, green, red, nir, swir1)"
    )
    assert "95x finer than the 28.5 m" in report.problems[1]
    assert [f.candidate.name for f in report.installed] == ["rgb-aerial"]
    assert [f.candidate.name for f in report.downloads] == ["rgb-download"]  # nrg: no NIR band
    text = report.text()
    assert text.startswith("'ortho.tif' does not fit the model 'landsat': it has 3 band(s)")
    # Installed first, then downloads with their size, licence (without its sources) and set-up.
    assert text.index("rgb-aerial (installed") < text.index("rgb-download (download 1.72 GB")
    assert "(licence MIT; needs the Full engine environment (PyTorch))" in text
    assert "bands 1,2,3 as red, green, blue" in text


def test_installed_models_that_run_here_come_before_those_needing_a_set_up():
    needs_torch = Candidate(
        "rgb-torch", ("red", "green", "blue"), 0.3, path="/m/t", requires=FULL_ENVIRONMENT
    )
    report = assess(facts(["red", "green", "blue"]), None, [needs_torch, RGB])
    assert [f.candidate.name for f in report.installed] == ["rgb-aerial", "rgb-torch"]
    assert report.fits and report.model is None


def test_gsd_beyond_four_times_and_complex_data_do_not_fit():
    coarse = assess(facts(["red", "green", "blue"], gsd=1.3), RGB, [])
    assert coarse.problems == (
        "its 1.3 m pixels are 4x coarser than the 0.3 m the model was trained at",
    )
    assert assess(facts(["red", "green", "blue"], gsd=1.1), RGB, []).fits  # 3.7x: still fits
    complex_data = assess(facts(["red", "green", "blue"], dtype="complex64"), RGB, [])
    assert "complex64 values are not image data" in complex_data.problems[0]


def test_with_nothing_that_fits_the_advice_says_what_would():
    unnamed = assess(facts([None] * 6, gsd=0.3), RGB, [RGB])
    assert unnamed.fits  # six unnamed bands take an RGB model, as a guess
    report = assess(facts(["a", "b", "c"], gsd=28.5), LANDSAT_MODEL, [LANDSAT_MODEL, RGB])
    assert report.installed == () and report.downloads == ()
    assert report.would == (FINE_TUNE_HINT,)
    # Six unnamed bands for a five-band model at a far GSD: the bands could be given by
    # number; the GSD still keeps it from fitting, and nothing else fits either.
    far = assess(facts([None] * 6, gsd=0.3), LANDSAT_MODEL, [LANDSAT_MODEL])
    assert not far.fits and far.installed == ()
    assert far.would == (
        "use bands 1,2,3,4,5 as blue, green, red, nir, swir1 (Bands: 1,2,3,4,5)",
        FINE_TUNE_HINT,
    )
    assert "No model here takes it; what would: use bands 1,2,3,4,5" in far.text()


def test_facts_of_a_real_raster(tmp_path):
    with rasterio.open(LANDSAT) as src:
        path = write_raster(
            tmp_path / "nrg.tif",
            src.read([4, 3, 2]),
            crs=src.crs.to_wkt(),
            transform=src.transform,
            descriptions=["nir", "red", "green"],
        )
    with rasterio.open(path) as dataset:
        found = RasterFacts.of_dataset(dataset, "nrg.tif")
    # A 3-band byte GeoTIFF says red/green/blue as colours: the descriptions win.
    assert found.band_names == (("nir", "red"), ("red", "green"), ("green", "blue"))
    assert band_mapping(found, ["nir", "red", "green"]) == ((1, 2, 3), True)
    assert found.dtype == "uint8" and found.gsd_m == pytest.approx(28.5, rel=0.01)


def _cli(python: Path | str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "engine.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def rgb_sample(tmp_path: Path) -> Path:
    with rasterio.open(SAMPLE) as src:
        return write_raster(
            tmp_path / "rgb.tif",
            src.read([3, 2, 1]),
            crs=src.crs.to_wkt(),
            transform=src.transform,
            descriptions=["red", "green", "blue"],
        )


def test_segment_and_fit_give_the_same_advice_in_a_light_environment(
    light_python, rgb_sample, tmp_path
):
    output = tmp_path / "out.tif"
    segment = _cli(light_python, "segment", str(rgb_sample), str(output), "--progress", "json")
    assert segment.returncode == 2 and not output.exists()
    event = json.loads(segment.stdout.strip().splitlines()[-1])
    assert event["code"] == "input.bands_missing"
    advice = event["fields"]["advice"]
    assert advice["model"] == "crossearth-landsat-lc-fast" and not advice["fits"]
    downloads = advice["downloads"]
    assert downloads and all(d["requires"] == FULL_ENVIRONMENT for d in downloads)
    assert all(d["model_bands"] == ["red", "green", "blue"] for d in downloads)
    fit = _cli(
        light_python, "fit", str(rgb_sample), "--model", "crossearth-landsat-lc-fast", "--json"
    )
    assert fit.returncode == 0, fit.stderr
    report = json.loads(fit.stdout)
    assert report["downloads"] == downloads
    # The CLI's one line: the band problem, then the same advice as `fit` gives.
    line = segment.stderr.strip().splitlines()[-1]
    assert line.startswith("crossearth: the raster has 3 band(s) but the model needs 5")
    assert line.endswith(report["text"].split(". ", 1)[1])


def test_fit_for_a_web_layer_and_bad_options(light_python):
    web = _cli(
        light_python,
        "fit",
        "--layer-bands",
        "red,green,blue",
        "--layer-gsd",
        "0.3",
        "--layer-name",
        "OSM",
        "--json",
    )
    report = json.loads(web.stdout)
    assert report["fits"] and report["downloads"][0]["name"] == "whu-building-a2s"  # 0.3 m
    named = _cli(light_python, "fit", str(SAMPLE), "--layer-name", "Raleigh", "--json")
    assert json.loads(named.stdout)["raster"] == "Raleigh"
    nothing = _cli(light_python, "fit")
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == (
        "crossearth: fit needs a raster, or the band names of a layer with --layer-bands"
    )
    bad = _cli(light_python, "fit", "--layer-bands", "red", "--layer-gsd", "-1")
    assert bad.returncode == 2 and "is not a pixel size" in bad.stderr


def test_the_fit_command_runs_without_torch_in_the_full_environment(rgb_sample):
    code = (
        "import sys; from engine.cli import main; rc = main(['fit', sys.argv[1], '--json']); "
        "assert 'torch' not in sys.modules, 'fit imported torch'; sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(rgb_sample)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fits"] is True
