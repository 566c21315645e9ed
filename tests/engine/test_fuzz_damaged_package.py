"""Seeded, bounded fuzzing of model packages: a package whose model.json or weights.safetensors
is damaged at many byte offsets segments (the damage was harmless) or ends in one clear line
with exit code 2 — never a traceback, never a partial output, never a changed input."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from engine import files as engine_files
from engine.files import TEMP_PREFIX

from ..helpers import damage
from .conftest import segment_args, write_tiled
from .test_cli import package, run_cli  # noqa: F401 (fixture)

CASES = 150
SEED = 20261207


def _digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("damaged_file", ["model.json", "weights.safetensors"])
def test_a_damaged_package_gives_valid_output_or_one_line(
    tmp_path,
    capsys,
    package,  # noqa: F811
    damaged_file,
):
    data = np.random.default_rng(SEED).integers(0, 255, (3, 96, 80), dtype=np.uint8)
    raster = write_tiled(tmp_path / "in.tif", data, block=16)
    original = (package.path / damaged_file).read_bytes()
    rng = np.random.default_rng(SEED + len(damaged_file))
    outcomes = {"ok": 0, "refused": 0}
    for case in range(CASES):
        damaged, what = damage(original, rng)
        folder = tmp_path / f"case{case}"
        shutil.copytree(package.path, folder / "pkg")
        (folder / "pkg" / damaged_file).write_bytes(damaged)
        digests = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "pkg").iterdir()
        }
        out = folder / "out.tif"
        code, _, err = run_cli(
            capsys, *segment_args(package, raster, out)[:3], "--model", folder / "pkg",
            "--device", "cpu", "--progress", "none",
        )  # fmt: skip
        after = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "pkg").iterdir()
        }
        assert after == digests, what
        assert not list(folder.rglob(f"{TEMP_PREFIX}*")), what
        assert engine_files.registered_temporaries() == [], what
        lines = [line for line in err.splitlines() if line.strip()]
        if code == 0:
            assert out.exists(), what
            outcomes["ok"] += 1
        else:
            assert code == 2, (what, err)
            assert len(lines) == 1 and lines[0].startswith("crossearth: "), (what, err)
            assert "Traceback" not in err and not out.exists(), what
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0, outcomes  # the damage is not all harmless
