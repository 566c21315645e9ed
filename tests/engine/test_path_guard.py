"""The one output-path guard (engine/files.py): a destination is never a file the run reads,
never a folder, never an existing file without overwrite, and a name stays in its folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.error_codes import (
    OUTPUT_EXISTS,
    OUTPUT_IS_FOLDER,
    OUTPUT_OUTSIDE,
    OUTPUT_REPLACES_INPUT,
)
from engine.errors import OutputError
from engine.files import check_destination, child_path, same_file

NAME_PARTS = st.sampled_from(["a", "b.tif", "..", ".", "", "/", "\\", "\0", " ", "x/..", "é"])


@given(st.lists(NAME_PARTS, max_size=4).map("".join) | st.text(max_size=12))
@settings(max_examples=500, deadline=None)
def test_a_name_either_stays_in_its_folder_or_is_refused_in_one_line(name):
    folder = Path("/srv/models")
    try:
        path = child_path(folder, name, "model package")
    except OutputError as exc:
        assert exc.code == OUTPUT_OUTSIDE and "\n" not in str(exc)
        return
    assert path.parent == folder and path.name == name
    assert os.path.normpath(path).startswith(str(folder) + os.sep)


@pytest.fixture
def reads(tmp_path):
    """A run's inputs, and every other name that reaches one of them."""
    data = tmp_path / "data"
    data.mkdir()
    image, labels = data / "image.tif", data / "labels.tif"
    image.write_bytes(b"image")
    labels.write_bytes(b"labels")
    (tmp_path / "link.tif").symlink_to(image)
    os.link(labels, tmp_path / "hard.tif")
    (tmp_path / "existing.json").write_text("{}")
    return tmp_path, [image, labels]


SPELLINGS = st.sampled_from(
    [
        "data/image.tif",
        "data/../data/labels.tif",
        "link.tif",
        "hard.tif",
        "./data/./image.tif",
        "data",
        "existing.json",
        "new.json",
        "data/new.json",
    ]
)


@given(SPELLINGS, st.booleans())
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_destination_is_never_a_file_the_run_reads(reads, spelling, overwrite):
    root, inputs = reads
    before = {p: p.read_bytes() for p in inputs}
    try:
        target = check_destination(
            root / spelling, what="metrics file", reads=inputs, overwrite=overwrite
        )
    except OutputError as exc:
        assert exc.code in (OUTPUT_REPLACES_INPUT, OUTPUT_IS_FOLDER, OUTPUT_EXISTS)
        assert "\n" not in str(exc)
        assert exc.code != OUTPUT_EXISTS or not overwrite
        return
    assert not any(same_file(target, p) for p in inputs)
    assert not target.is_dir() and (overwrite or not target.exists())
    assert {p: p.read_bytes() for p in inputs} == before
