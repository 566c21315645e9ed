"""`crossearth convert` replaces only a package it wrote, never an input, and reads the files
people actually have: legacy-format checkpoints, and says what a wrong file is."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.cli import main
from engine.crossearth.convert import read_checkpoint
from engine.errors import CrossEarthError

from ..helpers import checksums
from .conftest import TINY_CONFIG, TINY_STATE, requires_official


def convert_cli(capsys, checkpoint, output, *extra):
    code = main(["convert", str(checkpoint), str(output), "--preset", "potsdam-r-source", *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A small real checkpoint file (not a CrossEarth one: every refusal here comes first)."""
    path = tmp_path / "inputs" / "iter_40000.pth"
    path.parent.mkdir()
    torch.save({"state_dict": {"backbone.reins.a": torch.ones(2)}}, path)
    return path


def test_overwrite_refuses_a_file_at_the_output(tmp_path, capsys, checkpoint):
    output = tmp_path / "result"
    output.write_text("an analysis I want to keep\n")
    before = checksums(tmp_path)
    code, out, err = convert_cli(capsys, checkpoint, output, "--overwrite")
    assert code == 2 and out == ""
    assert err == (
        f"crossearth: {output} is a file, not a model package folder; it will not be replaced: "
        "choose another name or remove it yourself\n"
    )
    assert checksums(tmp_path) == before


def test_overwrite_refuses_a_folder_with_other_files(tmp_path, capsys, checkpoint):
    output = tmp_path / "project"
    output.mkdir()
    (output / "model.json").write_text("{}")
    (output / "survey.gpkg").write_bytes(b"SQLite format 3\x00")
    before = checksums(tmp_path)
    code, _, err = convert_cli(capsys, checkpoint, output, "--overwrite")
    assert code == 2 and err.count("\n") == 1
    assert "holds survey.gpkg, which is not part of a model package" in err
    assert "will not be replaced" in err
    assert checksums(tmp_path) == before


def test_an_output_holding_an_input_is_refused(tmp_path, capsys, checkpoint):
    backbone = checkpoint.parent / "dinov2_converted.pth"
    torch.save({"pos_embed": torch.zeros(1, 5, 4)}, backbone)
    before = checksums(tmp_path)
    for output, extra, message in [
        (checkpoint.parent, [], f"contains the input {checkpoint}"),
        (checkpoint, [], f"is the input {checkpoint}"),
        (tmp_path / "pkg", ["--backbone", str(tmp_path / "pkg" / "b.pth")], "contains the input"),
        (checkpoint.parent / "pkg", ["--backbone", str(checkpoint.parent)], "lies inside the"),
    ]:
        code, _, err = convert_cli(capsys, checkpoint, output, "--overwrite", *extra)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code = main(["convert", str(checkpoint), str(checkpoint.parent / "x"), "--mmseg-config",
                 str(checkpoint.parent / "x" / "cfg.py")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "contains the input" in err
    assert checksums(tmp_path) == before


def test_files_that_are_no_checkpoint_say_what_they_are(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    weights = tmp_path / "weights.safetensors"
    save_file({"a": torch.zeros(2)}, str(weights))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    before = checksums(tmp_path)
    for path, message in [
        (text, "is not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
        (weights, "is a safetensors file"),
        (empty, "is not a PyTorch checkpoint (an empty file)"),
    ]:
        code, _, err = convert_cli(capsys, path, tmp_path / "out")
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert checksums(tmp_path) == before


def test_a_legacy_format_checkpoint_is_read(tmp_path):
    state = {"backbone.reins.a": torch.arange(6.0).reshape(2, 3), "decode_head.b": torch.ones(4)}
    legacy = tmp_path / "old.pth"
    torch.save({"state_dict": state}, legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == b"\x80"  # a pickle, not a zip archive
    tensors = read_checkpoint(legacy)
    assert tensors.keys() == state.keys()
    assert all(torch.equal(tensors[k], state[k]) for k in state)
    # truncated, it is still called truncated
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(legacy.read_bytes()[:-100])
    with pytest.raises(CrossEarthError, match="truncated, corrupt or not a checkpoint"):
        read_checkpoint(truncated)


@requires_official
def test_legacy_checkpoint_converts_and_overwrite_replaces_our_package(tmp_path, capsys):
    state = torch.load(TINY_STATE, weights_only=True)["state_dict"]
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": state}, legacy, _use_new_zipfile_serialization=False)
    output = tmp_path / "pkg"
    args = ["convert", str(legacy), str(output), "--mmseg-config", str(TINY_CONFIG),
            "--classes", "a,b,c"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    first = checksums(output)
    inputs = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (legacy, TINY_CONFIG)}
    assert main([*args, "--name", "second"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--name", "second", "--overwrite"]) == 0, capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["legacy.pth", "pkg"]
    assert sorted(os.listdir(output)) == ["model.json", "weights.safetensors"]
    assert checksums(output)["weights.safetensors"] == first["weights.safetensors"]
    assert checksums(output)["model.json"] != first["model.json"]  # the new card, named second
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs} == inputs
