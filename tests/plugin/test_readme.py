"""The README's countable claims hold: its Processing algorithms and their parameters, its
bundled models and its commands are the ones the code has."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def test_readme_is_short_and_its_maintainer_notes_live_in_docs():
    assert len(README.splitlines()) <= 300
    for page in ("architecture.md", "benchmarks.md", "training-notes.md", "errors.md"):
        assert (REPO / "docs" / page).is_file(), page
        assert f"docs/{page}" in README, f"the README does not point to docs/{page}"


def test_the_algorithms_the_readme_lists_are_the_providers():
    from crossearth_qgis.processing import ALGORITHMS

    ids = {f"crossearth:{algorithm().name()}" for algorithm in ALGORITHMS}
    listed = set(re.findall(r"^\| `(crossearth:[a-z]+)`", README, re.M))
    assert listed == ids
    said = re.search(r"has (\w+) algorithms", README)
    assert said is not None and NUMBERS[said.group(1)] == len(ALGORITHMS)


def test_the_segment_algorithms_parameters_are_the_ones_listed():
    from crossearth_qgis.processing.segment_raster import SegmentRasterAlgorithm

    algorithm = SegmentRasterAlgorithm()
    algorithm.initAlgorithm({})
    names = [p.name() for p in algorithm.parameterDefinitions()]
    row = re.search(r"^\| `crossearth:segmentraster` [^|]*\| ([^|]*) \((\d+)\) \|", README, re.M)
    assert row is not None
    assert [n.strip() for n in row.group(1).split(",")] == names
    assert int(row.group(2)) == len(names)


def test_the_bundled_models_are_the_ones_described():
    models = REPO / "resources" / "models"
    bundled = sorted(p.name for p in models.iterdir() if (p / "model.json").is_file())
    default = (models / "DEFAULT").read_text(encoding="utf-8").strip()
    assert default in bundled
    assert f"`{default}` (default)" in README
    for name in bundled:
        assert f"`{name}`" in README, name


def test_the_commands_the_readme_shows_are_the_clis():
    from engine.cli import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    shown = set(re.findall(r"^crossearth ([a-z-]+)", README, re.M))
    assert shown <= commands, shown - commands
    assert commands - {"serve"} <= shown, "a command the README does not show"
