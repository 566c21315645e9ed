"""Writing packages replaces only a package this tool wrote, never an input; broken packages in
the models folder are listed with their problem and never hide the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.cli import main
from engine.errors import CrossEarthError
from engine.files import describe_path
from engine.models.loading import load_model
from engine.models.packages import find_package, list_packages, save_package

from ..helpers import checksums
from .conftest import PixelLinear, make_card, seeded

REPO = Path(__file__).resolve().parents[2]


def card():
    return make_card(num_classes=4, bands=("blue", "green", "red"))


def state(seed=0):
    return seeded(PixelLinear(3, 4), seed).state_dict()


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- replacing an existing output ---------------------------------------------------------


def test_overwrite_replaces_our_own_package_and_leaves_nothing_else(tmp_path, pixel_architecture):
    first = save_package(tmp_path / "pkg", card(), state(0))
    second = save_package(tmp_path / "pkg", card(), state(1), overwrite=True)
    assert second.path == first.path
    loaded = load_model(second.path)
    torch.testing.assert_close(loaded.conv.weight, state(1)["conv.weight"], rtol=0, atol=0)
    assert sorted(os.listdir(tmp_path)) == ["pkg"]  # no temporary, no old copy
    assert sorted(os.listdir(second.path)) == ["model.json", "weights.safetensors"]


def test_an_empty_folder_is_replaced(tmp_path, pixel_architecture):
    (tmp_path / "pkg").mkdir()
    with pytest.raises(CrossEarthError, match="already exists"):
        save_package(tmp_path / "pkg", card(), state())
    package = save_package(tmp_path / "pkg", card(), state(), overwrite=True)
    assert sorted(os.listdir(package.path)) == ["model.json", "weights.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["pkg"]


def test_a_package_with_its_exported_graph_is_replaced_whole(tmp_path, pixel_architecture):
    """model.onnx (added by `crossearth export`) is part of a package: replacing the package
    removes it with the rest; a graph that is a folder or a link makes it not ours."""
    first = save_package(tmp_path / "pkg", card(), state(0))
    (first.path / "model.onnx").write_bytes(b"graph")
    second = save_package(tmp_path / "pkg", card(), state(1), overwrite=True)
    assert sorted(os.listdir(second.path)) == ["model.json", "weights.safetensors"]
    (second.path / "model.onnx").mkdir()
    with pytest.raises(CrossEarthError, match="model.onnx is not a plain file"):
        save_package(tmp_path / "pkg", card(), state(2), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["pkg"]


def _foreign_outputs(tmp_path: Path, package: Path):
    """(name, make, message): outputs --overwrite must refuse, and why."""

    def file(path):
        path.write_text("my notes\n")

    def with_extra_file(path):
        save_package(path, package_card, state())
        (path / "notes.txt").write_text("field notes\n")

    def with_subfolder(path):
        save_package(path, package_card, state())
        (path / "photos").mkdir()
        (path / "photos" / "a.jpg").write_bytes(b"\xff\xd8 jpeg")

    def card_only(path):
        path.mkdir()
        (path / "model.json").write_text(json.dumps(package_card.to_json_dict()))

    def not_a_card(path):
        path.mkdir()
        (path / "model.json").write_text('{"project": "my survey"}')
        (path / "weights.safetensors").write_bytes(b"not weights")

    def link(path):
        path.symlink_to(package, target_is_directory=True)

    package_card = card()
    return [
        ("file", file, "is a file, not a model package folder"),
        ("extra", with_extra_file, "holds notes.txt, which is not part of a model package"),
        ("subfolder", with_subfolder, "holds photos, which is not part of a model package"),
        ("card-only", card_only, "has no weights.safetensors"),
        ("not-a-card", not_a_card, "is not a model package this tool wrote"),
        ("link", link, "is a symbolic link"),
    ]


def test_overwrite_refuses_what_this_tool_did_not_write(tmp_path, pixel_architecture):
    original = save_package(tmp_path / "original", card(), state())
    for name, make, message in _foreign_outputs(tmp_path, original.path):
        target = tmp_path / name
        make(target)
        before = checksums(tmp_path)
        with pytest.raises(CrossEarthError, match=message) as error:
            save_package(target, card(), state(1), overwrite=True)
        assert "will not be replaced" in str(error.value)
        assert "\n" not in str(error.value)
        assert checksums(tmp_path) == before, name  # untouched, and no temporary left


def test_output_that_is_holds_or_lies_in_an_input_is_refused(tmp_path, pixel_architecture):
    data = tmp_path / "data"
    data.mkdir()
    image = data / "image.tif"
    image.write_bytes(b"raster bytes")
    base = save_package(tmp_path / "base", card(), state())
    before = checksums(tmp_path)
    cases = [
        (data, [image], "contains the input"),
        (tmp_path / "data" / "image.tif", [image], "is the input"),
        (base.path, [base.path], "is the input"),
        (base.path / "inner", [base.path], "lies inside the input"),
    ]
    for output, inputs, message in cases:
        with pytest.raises(CrossEarthError, match=message):
            save_package(output, card(), state(1), overwrite=True, inputs=inputs)
    # through a symbolic link to the data folder: real paths are compared
    (tmp_path / "alias").symlink_to(data, target_is_directory=True)
    with pytest.raises(CrossEarthError, match="contains the input"):
        save_package(tmp_path / "alias", card(), state(), overwrite=True, inputs=[image])
    (tmp_path / "alias").unlink()
    assert checksums(tmp_path) == before


def test_a_failed_swap_puts_the_old_package_back(tmp_path, pixel_architecture, monkeypatch):
    save_package(tmp_path / "pkg", card(), state(0))
    before = checksums(tmp_path)
    real_rename = os.rename
    failed = []

    def rename(source, target):
        # The new package's rename into place fails (the disk went read-only); the rename
        # that puts the old package back is the next one from a temporary name and works.
        ours = Path(source).name.startswith(".crossearth-tmp-")
        if ours and Path(target).name == "pkg" and not failed:
            failed.append(source)
            raise OSError(30, "Read-only file system")
        return real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(CrossEarthError, match="read-only file system"):
        save_package(tmp_path / "pkg", card(), state(1), overwrite=True)
    monkeypatch.undo()
    assert failed
    assert checksums(tmp_path) == before  # the old package is back, nothing else is left
    torch.testing.assert_close(
        load_model(tmp_path / "pkg").conv.weight, state(0)["conv.weight"], rtol=0, atol=0
    )


# --- weights ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shown"), [(torch.int64, "I64"), (torch.bool, "BOOL"), (torch.uint8, "U8")]
)
def test_integer_or_boolean_weights_are_refused(tmp_path, pixel_architecture, dtype, shown):
    package = save_package(tmp_path / "pkg", card(), state())
    tensors = {k: v.to(dtype) for k, v in state().items()}
    save_file(tensors, str(package.weights_path))
    with pytest.raises(CrossEarthError) as error:
        load_model(package.path)
    message = str(error.value)
    assert "tensor 'conv.bias' is stored as " + shown in message
    assert "weights.safetensors" in message and "floating point" in message


# --- broken packages among the installed ones ------------------------------------------------


@pytest.fixture
def models_dir(tmp_path, monkeypatch, pixel_architecture):
    """A user models folder with one good package and three broken ones."""
    folder = tmp_path / "models"
    folder.mkdir()
    save_package(folder / "good", card(), state())
    nan_card = save_package(folder / "nan-mean", card(), state())
    text = (nan_card.path / "model.json").read_text()
    data = json.loads(text)
    data["input"]["mean"][1] = float("nan")
    data["name"] = "nan-model"
    (nan_card.path / "model.json").write_text(json.dumps(data))  # writes NaN, as json allows
    weightless = save_package(folder / "no-weights", card(), state())
    (weightless.path / "weights.safetensors").unlink()
    latin1 = save_package(folder / "latin1", card(), state())
    (latin1.path / "model.json").write_bytes(
        (latin1.path / "model.json").read_bytes().replace(b'"class 1"', b'"classe \xe9"')
    )
    monkeypatch.setenv("CROSSEARTH_MODELS_DIR", str(folder))
    return folder


def test_broken_packages_are_listed_and_do_not_hide_the_others(models_dir, capsys):
    packages, problems = list_packages()
    assert [p.path.name for p in packages if p.source == "user"] == ["good"]
    by_folder = {p.path.name: p.problem for p in problems}
    assert by_folder["nan-mean"] == "model.json: input.mean[1]: must be a finite number, got NaN"
    assert "has no weights.safetensors" in by_folder["no-weights"]
    assert "not UTF-8" in by_folder["latin1"] and "0xe9" in by_folder["latin1"]

    code, out, err = cli(capsys, "models")
    assert code == 0, err
    assert f"broken package: {models_dir / 'nan-mean'}: model.json: input.mean[1]" in out
    assert "test-model" in out and str(models_dir / "good") in out

    code, out, err = cli(capsys, "models", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [m["path"] for m in listed["models"] if m["source"] == "user"] == [
        str(models_dir / "good")
    ]
    assert {"path": str(models_dir / "nan-mean"), "problem": by_folder["nan-mean"]} in listed[
        "problems"
    ]
    assert all(set(p) == {"path", "problem"} for p in listed["problems"])


def test_the_plugin_reads_the_problems_as_lines(models_dir, capsys):
    pytest.importorskip("qgis.core")
    from crossearth_qgis.worker.models import catalog_from_json

    code, out, err = cli(capsys, "models", "--json")
    assert code == 0, err
    catalog = catalog_from_json(json.loads(out))
    assert f"{models_dir / 'nan-mean'}: model.json: input.mean[1]" in "\n".join(catalog.problems)
    assert "test-model" in [m.name for m in catalog.models]


def test_lookup_by_name_skips_broken_packages_and_names_a_broken_one(models_dir, capsys):
    assert find_package("good").path == models_dir / "good"
    assert find_package("test-model").path == models_dir / "good"
    with pytest.raises(CrossEarthError) as error:
        find_package("nan-mean")
    assert "installed model 'nan-mean' is broken" in str(error.value)
    assert "input.mean[1]: must be a finite number, got NaN" in str(error.value)
    with pytest.raises(CrossEarthError, match=r"'nope' not found.*3 broken package\(s\) skipped"):
        find_package("nope")
    code, _, err = cli(capsys, "info", "nan-mean")
    assert code == 2 and err.count("\n") == 1 and "input.mean[1]" in err


def test_unreadable_card_and_undecodable_folder_name_keep_the_list(models_dir, capsys, monkeypatch):
    # A folder whose name is not UTF-8, holding a good package, beside a broken one.
    odd = os.fsencode(models_dir) + b"/caf\xe9-model"
    os.mkdir(odd)
    good = models_dir / "good"
    for name in ("model.json", "weights.safetensors"):
        with open(odd + b"/" + name.encode(), "wb") as handle:
            handle.write((good / name).read_bytes())
    odd_broken = os.fsencode(models_dir) + b"/\xff\xfe-broken"
    os.mkdir(odd_broken)
    with open(odd_broken + b"/model.json", "wb") as handle:
        handle.write(b"{not json")
    # The text listing in a strict UTF-8 terminal, as a user runs it.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    listing = subprocess.run(
        [sys.executable, "-m", "engine.cli", "models"],
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr.decode(errors="replace")
    text = listing.stdout.decode("utf-8")
    shown_odd = describe_path(os.fsdecode(odd))  # undecodable bytes as escapes
    assert f"[user]  4 classes, bands blue/green/red  {shown_odd}\n" in text
    shown_broken = describe_path(os.fsdecode(odd_broken))
    assert f"broken package: {shown_broken}: model.json is not valid JSON" in text

    # model.json that cannot be read (permissions; root reads everything, so simulated)
    real_read = Path.read_bytes

    def read_bytes(self):
        if self.parent.name == "good":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    packages, problems = list_packages()
    names = {os.fsencode(p.path.name) for p in packages if p.source == "user"}
    assert names == {b"caf\xe9-model"}
    by_folder = {p.path.name: p.problem for p in problems}
    assert "Permission denied" in by_folder["good"]
    code, out, err = cli(capsys, "models", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert len(listed["problems"]) == 5


@pytest.mark.parametrize("linked", ["model.json", "weights.safetensors"])
def test_a_package_file_that_is_a_link_is_refused_in_one_line(tmp_path, capsys, linked):
    """A package's files are read where they are: a link could point anywhere on the disk."""
    real = save_package(tmp_path / "real", card(), state())
    package = tmp_path / "linked"
    package.mkdir()
    for name in ("model.json", "weights.safetensors"):
        source = real.path / name
        if name == linked:
            (package / name).symlink_to(source)
        else:
            (package / name).write_bytes(source.read_bytes())
    with pytest.raises(CrossEarthError) as error:
        find_package(package)
    assert error.value.code == "model.linked" and "symbolic link" in str(error.value)
    raster = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
    code, _, err = cli(capsys, "segment", raster, tmp_path / "out.tif", "--model", package)
    assert code == 2 and err.count("\n") == 1 and "symbolic link" in err
    assert not (tmp_path / "out.tif").exists()
