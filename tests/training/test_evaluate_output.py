"""`crossearth evaluate --json` writes its metrics only where nothing is lost: never onto an
input, never over an existing file without --overwrite, checked before the work."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from engine.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
SAMPLE_LABELS = REPO / "resources" / "samples" / "raleigh_landcover_sample.tif"
MODEL = REPO / "resources" / "models" / "crossearth-landsat-lc-fast"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evaluate(image: Path, labels: Path, *extra: str) -> int:
    return main(["evaluate", str(MODEL), str(image), str(labels), "--device", "cpu", *extra])


def test_the_metrics_never_replace_the_image_or_the_labels(tmp_path, capsys):
    image, labels = tmp_path / "image.tif", tmp_path / "labels.tif"
    shutil.copy(SAMPLE, image)
    shutil.copy(SAMPLE_LABELS, labels)
    before = (_sha(image), _sha(labels))
    for target in (image, labels, tmp_path / "." / "labels.tif"):
        assert _evaluate(image, labels, "--json", str(target), "--overwrite") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("crossearth: ") and "\n" not in err and "reads" in err
    assert (_sha(image), _sha(labels)) == before


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path, capsys):
    report = tmp_path / "metrics.json"
    report.write_text("an earlier report")
    assert _evaluate(SAMPLE, SAMPLE_LABELS, "--json", str(report)) == 2
    assert "already exists" in capsys.readouterr().err
    assert report.read_text() == "an earlier report"
    assert _evaluate(SAMPLE, SAMPLE_LABELS, "--json", str(report), "--overwrite") == 0
    assert json.loads(report.read_text())["pixels"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary left
