"""Seeded, bounded fuzzing: a valid GeoTIFF damaged at many byte offsets gives either a valid
output or one clear line with exit code 2 — never a traceback, never a partial file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine import files as engine_files
from engine.files import TEMP_PREFIX

from ..helpers import damage
from .conftest import segment_args, write_tiled
from .test_cli import package, run_cli  # noqa: F401 (fixture)

CASES = 150
SEED = 20261130


def _valid_geotiff(path: Path) -> Path:
    data = np.random.default_rng(SEED).integers(0, 255, (3, 300, 280), dtype=np.uint8)
    return write_tiled(path, data, block=128)


def test_damaged_geotiff_gives_valid_output_or_one_line(tmp_path, capsys, package):  # noqa: F811
    source = _valid_geotiff(tmp_path / "valid.tif")
    original = source.read_bytes()
    rng = np.random.default_rng(SEED)
    outcomes = {"ok": 0, "refused": 0}
    for case in range(CASES):
        damaged, what = damage(original, rng, header=512)
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        raster = folder / "damaged.tif"
        raster.write_bytes(damaged)
        digest = hashlib.sha256(damaged).hexdigest()
        out = folder / "out.tif"
        code, _, err = run_cli(capsys, *segment_args(package, raster, out, "--scaling", "none"))
        assert hashlib.sha256(raster.read_bytes()).hexdigest() == digest, what
        assert not list(folder.glob(f"{TEMP_PREFIX}*")), what
        assert engine_files.registered_temporaries() == [], what
        lines = [line for line in err.splitlines() if line.strip()]
        if code == 0:
            with rasterio.open(out) as result:
                assert result.shape == (300, 280), what
                result.read(1)
            outcomes["ok"] += 1
        else:
            assert code == 2, (what, err)
            assert len(lines) == 1 and lines[0].startswith("crossearth: "), (what, err)
            assert not out.exists(), what
            outcomes["refused"] += 1
    # Both kinds of outcome occur: the damage is not all harmless nor all fatal.
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0, outcomes


@pytest.mark.parametrize("cut", [8, 100, 1000])
def test_cut_header_is_one_line(tmp_path, capsys, package, cut):  # noqa: F811
    raster = tmp_path / "cut.tif"
    raster.write_bytes(_valid_geotiff(tmp_path / "valid.tif").read_bytes()[:cut])
    code, _, err = run_cli(
        capsys, "segment", raster, tmp_path / "o.tif", "--model", package.path, "--progress=none"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cut.tif" in err
