"""Errors carry structure: a stable code and the fields they are about; the library speaks no
command-line flags, the CLI words them with its flags, and `--progress json` reports the error
as {"event": "error", "code", "message", "fields"}."""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import pytest
import rasterio
from rasterio.windows import Window

from engine.commands.cli_messages import cli_message, error_event, flag
from engine.errors import (
    ConfigFieldError,
    CrossEarthError,
    InputError,
    ModelError,
    OutputError,
    SegmentationCancelled,
)
from engine.models.model_card import card_from_dict
from engine.models.packages import find_package
from engine.raster.raster_input import open_raster, read_error

from .conftest import LANDSAT
from .test_cli import package, run_cli  # noqa: F401 (fixture)

BUNDLED_CARD = (
    Path(__file__).resolve().parents[2] / "resources" / "models" / "crossearth-landsat-lc"
)


def no_flags(text: str) -> None:
    assert " --" not in f" {text}", text


def test_a_plain_error_keeps_working_with_a_generic_code():
    error = CrossEarthError("something is wrong; fix it")
    assert error.code == "error" and error.fields == {}
    assert str(error) == "something is wrong; fix it" == cli_message(error)
    assert InputError("x").code == "input" and OutputError("x").code == "output"
    assert isinstance(ModelError("x"), CrossEarthError)


def test_missing_input_has_its_code_and_path(tmp_path):
    missing = tmp_path / "nothing.tif"
    with pytest.raises(InputError) as caught:
        open_raster(missing)
    assert caught.value.code == "input.not_found"
    assert caught.value.fields == {"path": str(missing)}
    assert "does not exist" in str(caught.value)


def test_read_error_names_the_window():
    with rasterio.open(LANDSAT) as dataset:
        error = read_error(dataset, Window(16, 32, 8, 4), OSError("block 3 is corrupt"))
    assert isinstance(error, InputError) and error.code == "input.read"
    assert error.fields["path"] == str(LANDSAT)
    assert error.fields["window"] == {"row": 32, "col": 16, "height": 4, "width": 8}
    assert error.fields["reason"] == "block 3 is corrupt"
    assert "at rows 32..36, columns 16..24" in str(error)


def test_bad_card_field_names_its_path():
    data = json.loads((BUNDLED_CARD / "model.json").read_text(encoding="utf-8"))
    data["tile"]["size"] = "big"
    with pytest.raises(ModelError) as caught:
        card_from_dict(data, where="x/model.json")
    assert caught.value.code == "model.card"
    assert caught.value.fields == {"path": "x/model.json", "field": "tile.size"}
    data = json.loads((BUNDLED_CARD / "model.json").read_text(encoding="utf-8"))
    data["architecture"]["config"]["backbone"]["depth"] = 0
    with pytest.raises(ModelError) as caught:
        card_from_dict(data, where="y/model.json")
    assert caught.value.code == "model.card"
    assert caught.value.fields["field"] == "architecture.config.backbone.depth"


def test_model_not_found_lists_the_installed_models(tmp_path):
    with pytest.raises(ModelError) as caught:
        find_package("no-such-model-anywhere")
    error = caught.value
    assert error.code == "model.not_found" and error.fields["option"] == "model"
    assert error.fields["name"] == "no-such-model-anywhere"
    assert isinstance(error.fields["installed"], list)


def test_cancel_has_its_code():
    error = SegmentationCancelled()
    assert error.code == "cancelled"
    assert error_event(error, "cancelled") == {
        "event": "cancelled",
        "code": "cancelled",
        "message": "segmentation cancelled; no output was written",
        "text": "segmentation cancelled; no output was written",
        "fields": {},
    }


def test_code_and_fields_survive_pickling():
    # Errors raised in Ray workers reach the driver pickled.
    for error in (
        OutputError("o exists", code="output.exists", what="output", path="/o.tif"),
        ConfigFieldError("backbone.depth", "must be at least 1"),
        SegmentationCancelled(),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.code == error.code and copy.fields == error.fields
    assert pickle.loads(pickle.dumps(ConfigFieldError("a.b", "bad"))).field == "a.b"


def test_library_messages_speak_no_flags_and_the_cli_adds_them():
    error = InputError(
        "cannot tell which of the raster's 6 bands (1, 2, 3, 4, 5, 6) are the model's red, "
        "green, blue; choose the bands, e.g. bands=1,2,3",
        code="input.bands_ambiguous",
        option="bands",
        suggestion="1,2,3",
        count=6,
        described="1, 2, 3, 4, 5, 6",
        wanted=["red", "green", "blue"],
    )
    no_flags(str(error))
    assert cli_message(error).endswith("; pass --bands, e.g. --bands 1,2,3")
    # A raise site without the fields its code promises still prints its message.
    assert cli_message(InputError("short", code="input.bands_ambiguous")) == "short"
    assert flag("keep_classes") == "--keep-classes" and flag("tile_size") == "--tile"


def test_existing_output_is_an_error_event_with_code_and_fields(tmp_path, capsys, package):  # noqa: F811
    output = tmp_path / "o.tif"
    output.write_bytes(b"mine")
    code, out, err = run_cli(
        capsys, "segment", LANDSAT, output, "--model", package.path, "--bands", "1,2,3",
        "--progress", "json",
    )  # fmt: skip
    assert code == 2 and output.read_bytes() == b"mine"
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [event] = [e for e in events if e["event"] == "error"]
    assert set(event) == {"event", "code", "message", "text", "fields"}
    assert event["code"] == "output.exists"
    no_flags(event["text"])  # the library's own wording, for front ends without flags
    assert event["fields"] == {"what": "output", "path": str(output), "option": "overwrite"}
    # The CLI's wording, flags included, on stderr and in the event alike.
    assert event["message"] == (
        f"output {output} already exists; pass --overwrite to replace it, or choose another name"
    )
    assert err.strip() == f"crossearth: {event['message']}"


def test_flag_free_library_wording_for_the_cli_only_options(tmp_path, capsys, package):  # noqa: F811
    code, out, err = run_cli(
        capsys, "segment", LANDSAT, tmp_path / "o.tif", "--model", package.path,
        "--bands", "1,2,9", "--progress", "json",
    )  # fmt: skip
    assert code == 2
    [event] = [json.loads(line) for line in out.splitlines() if '"error"' in line]
    assert event["code"] == "input.bands_range"
    assert event["fields"] == {"option": "bands", "value": [9], "count": 6}
    assert event["message"] == "--bands 9 out of range: the raster has bands 1..6"
    assert not (tmp_path / "o.tif").exists()


REPO = Path(__file__).resolve().parents[2]
# The command-line layer: where flags belong.
# The command line speaks of flags: engine/cli.py, every command module and training/cli.py.
CLI_MODULES = {"engine/cli.py", "training/cli.py"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def _raised_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """The string pieces of every raised error's arguments and every `warnings_out.append`."""
    found = []
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            target = node.exc
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("append", "warning", "warn")
            and isinstance(node.func.value, ast.Name)
            and "warn" in node.func.value.id
        ):
            target = node
        if target is None:
            continue
        for argument in target.args:
            for piece in ast.walk(argument):
                if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                    found.append((piece.lineno, piece.value))
    return found


def test_library_errors_and_warnings_speak_no_flags():
    offenders = []
    for path in sorted([*REPO.glob("engine/**/*.py"), *REPO.glob("training/**/*.py")]):
        relative = path.relative_to(REPO).as_posix()
        if relative in CLI_MODULES or relative.startswith("engine/commands/"):
            continue
        for line, text in _raised_texts(ast.parse(path.read_text(encoding="utf-8"))):
            # `ray start --head` is Ray's command, not ours
            if FLAG.search(text.replace("ray start --head", "")):
                offenders.append(f"{relative}:{line}: {text}")
    assert offenders == []


@pytest.mark.parametrize(
    ("error", "cli_line"),
    [
        (
            OutputError("x", code="output.batch_exists", path="/o/a_classes.tif"),
            "/o/a_classes.tif already exists; pass --overwrite to replace it, or --resume to "
            "keep the finished outputs of an earlier batch and do the rest",
        ),
        (
            OutputError("x", code="output.dir_is_file", path="/o"),
            "--output-dir /o is a file; give a folder",
        ),
        (
            CrossEarthError("x", code="parts.damaged", problem="the part file p is short"),
            "the part file p is short; run again without --resume",
        ),
        (
            OutputError("x", code="train.run_dir", problem="the run folder r is a file"),
            "the run folder r is a file; choose another --output (the run folder is OUTPUT.run) "
            "or another --run-dir",
        ),
        (
            InputError(
                "x",
                code="train.resume_file",
                problem="w is a model checkpoint",
                weights="model",
                folder="r/checkpoints",
            ),
            "w is a model checkpoint; to train from these weights convert it with 'crossearth "
            "convert' and pass the package with --base; to resume, pass a step_NNNNNNN.pt file "
            "from r/checkpoints or --resume auto",
        ),
        (
            InputError("x", code="labels.class_field", path="roads.gpkg"),
            "roads.gpkg holds polygons: give --class-field",
        ),
    ],
)
def test_the_cli_words_library_codes_with_its_flags(error, cli_line):
    assert cli_message(error) == cli_line


def test_a_usage_error_is_a_json_event_too(capsys):
    from engine.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["segment", "in.tif", "out.tif", "--progress", "json", "--tile", "big"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    event = json.loads(out.strip().splitlines()[-1])
    assert event["event"] == "error" and event["code"] == "usage"
    assert event["message"] == "argument --tile: 'big' is not a whole number"
    assert event["fields"]["usage"].startswith("usage: crossearth segment")
    assert "error: argument --tile: 'big' is not a whole number" in err  # argparse's line
    # Without JSON progress: argparse's output only.
    with pytest.raises(SystemExit):
        main(["segment", "in.tif", "out.tif", "--tile", "big"])
    out, err = capsys.readouterr()
    assert out == "" and "is not a whole number" in err
