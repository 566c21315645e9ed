"""The trained model as a package the engine and plugin load: weights + a card that records
what it was trained on, how, and how well it did on the held-out blocks."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import engine
from engine.crossearth.model import CrossEarth
from engine.crossearth.presets import make_card
from engine.error_codes import TRAIN_RUN_DIR, TRAIN_RUN_DIR_USED
from engine.errors import OutputError
from engine.files import describe_path, is_within
from engine.models.model_card import ClassInfo, printable_text
from engine.models.packages import (
    ModelPackage,
    check_package_output,
    file_in_the_way,
    find_package,
    save_package,
)
from training.checkpoints import CheckpointStore
from training.config import TrainConfig
from training.data import TRAIN, VAL, TrainingData

_HASH_LIMIT = 512 * 2**20  # files up to this size get a checksum in the card


def file_record(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    record: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size}
    if path.is_file() and record["bytes"] <= _HASH_LIMIT:
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return record


# A recorded path may climb this many folders above the recipe (a project's recipes/ beside
# its data/); further up it would describe the machine's folder layout, not the project's.
MAX_LEVELS_UP = 3


def portable_path(path: str | Path, root: Path) -> str:
    """`path` as a card records it, naming no folder of the machine that trained: relative to
    `root` (the recipe's folder, or the package's) where both lie in one project (a common
    folder other than the filesystem root, at most MAX_LEVELS_UP above `root`), else the file
    name alone."""
    target = Path(path).expanduser().resolve()
    root = root.expanduser().resolve()
    try:
        common = Path(os.path.commonpath([target, root]))
        relative = Path(os.path.relpath(target, root))
    except ValueError:  # another drive on Windows
        return target.name
    if common == Path(common.anchor):
        return target.name
    if relative.parts[: MAX_LEVELS_UP + 1] == ("..",) * (MAX_LEVELS_UP + 1):
        return target.name
    return relative.as_posix()


# Settings of the machine, not of the model: a card does not record them.
_MACHINE_SETTINGS = ("device", "threads")


def recipe_record(config: TrainConfig, recipe: Path | None = None) -> dict[str, Any]:
    """The recipe as the card records it: its paths portable (relative to the recipe file's
    folder, or to the output package without a recipe), without device or thread count."""
    root = recipe.parent if recipe is not None else config.output
    record = config.to_dict()
    for key in _MACHINE_SETTINGS:
        record.pop(key, None)

    def portable(value: Any) -> Any:
        return portable_path(value, root) if value else value

    image_paths = ("image", "labels", "polygons", "mask")
    record["images"] = [
        {k: portable(v) if k in image_paths else v for k, v in source.items()}
        for source in record["images"]
    ]
    record["test"] = [
        {k: portable(v) if k in ("image", "labels") else v for k, v in entry.items()}
        for entry in record["test"]
    ]
    for key in ("output", "run_dir"):
        record[key] = portable(record[key])
    # A base or teacher given as a package folder (not an installed package's name).
    for key in ("base", "teacher"):
        value = getattr(config, key)
        if value and Path(value).expanduser().exists():
            record[key] = portable(value)
    return record


def portable_command(command: str | None, root: Path) -> str | None:
    """The command line with every absolute path in it made portable like the recipe's."""
    if command is None:
        return None
    try:
        split = shlex.split(command)
    except ValueError:  # not a command line shlex wrote; recorded as given
        return command
    words = []
    for word in split:
        option, equals, value = word.partition("=") if word.startswith("-") else ("", "", word)
        if os.path.isabs(value):
            word = option + equals + portable_path(value, root)
        words.append(word)
    return shlex.join(words)


def _teacher_record(config: TrainConfig) -> dict[str, object]:
    """The teacher of a distilled model, as the card names it (nothing without one)."""
    if not config.teacher:
        return {}
    teacher = find_package(config.teacher)
    return {
        "teacher": {
            "model": teacher.card.name,
            "version": teacher.card.version,
            "distill_weight": config.distill_weight,
        }
    }


def training_inputs(
    config: TrainConfig, resume: str | Path | None = None, extra: tuple[Path, ...] = ()
) -> list[Path]:
    """Every file or folder the run reads: rasters, labels, areas, test data, the base
    and teacher packages, the checkpoint to resume from and the recipe (`extra`)."""
    found: list[Path | str | None] = []
    for source in config.images:
        found += [source.image, source.labels, source.polygons, source.mask]
    for entry in config.test:
        found += [entry.get("image"), entry.get("labels")]
    for package in (config.base, config.teacher):
        if package:
            folder = Path(package).expanduser()
            found.append(folder if folder.exists() else find_package(package).path)
    if resume and str(resume) != "auto":
        found.append(resume)
    found += list(extra)
    return [Path(p) for p in found if p]


def check_training_paths(
    config: TrainConfig,
    *,
    overwrite: bool,
    resume: str | Path | None = None,
    extra_inputs: tuple[Path, ...] = (),
) -> None:
    """Refuses, before any training time is spent, an output or run folder that would replace
    or mix with an input, an output that is not ours to replace, and a --resume file that is no
    training checkpoint."""
    inputs = training_inputs(config, resume, extra_inputs)
    output = check_package_output(
        config.output, overwrite=overwrite, inputs=inputs, choose="choose another output"
    )
    run_dir = config.run_dir
    assert run_dir is not None
    shown = describe_path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise _run_folder_error(f"the run folder {shown} is a file")
    blocking = file_in_the_way(run_dir)
    if blocking is not None:
        raise _run_folder_error(
            f"the run folder {shown} cannot be made: {describe_path(blocking)} is a file"
        )
    # The checkpoint to resume from lives in the run folder by design.
    resumed = Path(resume) if resume and str(resume) != "auto" else None
    for source in inputs:
        if resumed is not None and source == resumed:
            continue
        if is_within(source, run_dir):
            relation = "is" if is_within(run_dir, source) else "contains"
            raise _run_folder_error(
                f"the run folder {shown} {relation} the input {describe_path(source)}; training "
                "writes checkpoints and logs there"
            )
        if source.is_dir() and is_within(run_dir, source):
            raise _run_folder_error(
                f"the run folder {shown} lies inside the input {describe_path(source)}"
            )
    if is_within(run_dir, output) or is_within(output, run_dir):
        raise _run_folder_error(
            f"the run folder {shown} and the output {describe_path(output)} lie one inside the "
            "other"
        )
    store = CheckpointStore(run_dir / "checkpoints", config.keep_checkpoints)
    if resume:
        store.check(resume)
    elif (earlier := store.latest()) is not None:
        # A new run would prune the earlier run's checkpoints as if they were its own.
        problem = f"the run folder {shown} holds checkpoints of an earlier run ({earlier.name})"
        raise OutputError(
            f"{problem}; resume it (resume auto) to continue that run, or {RUN_FOLDER_FIX}",
            code=TRAIN_RUN_DIR_USED,
            problem=problem,
        )


RUN_FOLDER_FIX = "choose another output (the run folder is OUTPUT.run) or another run folder"


def _run_folder_error(problem: str) -> OutputError:
    return OutputError(f"{problem}; {RUN_FOLDER_FIX}", code=TRAIN_RUN_DIR, problem=problem)


def _gsd(data: TrainingData) -> float | None:
    grid = data.images[0].grid
    if grid.crs is None or not grid.crs.is_projected:
        return None
    return round(abs(grid.transform.a) * grid.crs.linear_units_factor[1], 4)


def _class_infos(data: TrainingData) -> tuple[ClassInfo, ...]:
    """The card's classes: the training data's, in order, each with its colour."""
    classes = []
    for i, c in enumerate(data.classes):
        assert c.color is not None  # the training data gives every class a colour
        red, green, blue = c.color
        classes.append(ClassInfo(i, printable_text(c.name), (red, green, blue)))
    return tuple(classes)


def _tiling(config: TrainConfig, base: ModelPackage | None, input_scale: int) -> tuple[int, int]:
    """The card's tile size and stride: the recipe's, else the base package's, else the
    training window's ground extent with a third of overlap."""
    tile = config.tile_size or (base.card.tile_size if base else config.window // input_scale)
    stride = config.tile_stride or (
        base.card.tile_stride if base and not config.tile_size else round(tile * 2 / 3)
    )
    return tile, stride


def _data_record(config: TrainConfig) -> list[dict[str, object]]:
    """The training images, labels and labelled areas, each by name, size and checksum."""
    return [
        {
            "image": file_record(s.image),
            "labels": file_record(s.labels) or file_record(s.polygons),
            "class_field": s.class_field,
            "labelled_area": file_record(s.mask),
        }
        for s in config.images
    ]


def _split_record(config: TrainConfig, data: TrainingData) -> dict[str, object]:
    """How the labelled pixels were split into training and validation blocks."""
    names = [c.name for c in data.classes]
    return {
        "method": f"spatial blocks of {data.block_size} px, {config.val_fraction:.0%} of "
        "labelled pixels held out for validation",
        "train_blocks": len(data.blocks_of(TRAIN)),
        "val_blocks": len(data.blocks_of(VAL)),
        "train_pixels": dict(zip(names, map(int, data.class_pixels(TRAIN)), strict=True)),
        "val_pixels": dict(zip(names, map(int, data.class_pixels(VAL)), strict=True)),
    }


@dataclass(frozen=True)
class TrainingRun:
    """How the weights came about, as the card records it: the head's note, the steps done and
    the best one, the training time (earlier parts of a resumed run included), the command and
    the YAML recipe the config came from, if any (the card's paths are relative to it)."""

    head_note: str
    steps_done: int
    best_step: int
    seconds: float | None = None
    command: str | None = None
    recipe: Path | None = None


def _provenance(
    config: TrainConfig, data: TrainingData, base: ModelPackage | None, run: TrainingRun
) -> dict[str, object]:
    """The card's account of how the model was made: software, command, base model, data,
    split, steps, time, seed and the recipe, naming no folder of the machine that trained."""
    root = run.recipe.parent if run.recipe is not None else config.output
    return {
        "trained_with": f"crossearth train (crossearth-qgis {engine.__version__})",
        "command": portable_command(run.command, root),
        "base": (
            {"model": base.card.name, "version": base.card.version}
            if base
            else {"architecture": config.architecture, "initialisation": "random"}
        ),
        "head": run.head_note,
        "mode": config.mode if base else "full",
        **_teacher_record(config),
        "data": _data_record(config),
        "bands_used": data.bands,
        "label_map": {str(k): v for k, v in (config.label_map or {}).items()} or None,
        "split": _split_record(config, data),
        "steps": run.steps_done,
        "best_step": run.best_step,
        "seconds": round(run.seconds, 1) if run.seconds is not None else None,
        "seed": config.seed,
        "recipe": recipe_record(config, run.recipe),
        "software": {"torch": torch.__version__, "python": platform.python_version()},
    }


def write_package(
    config: TrainConfig,
    model: CrossEarth,
    data: TrainingData,
    metrics: dict[str, Any],
    base: ModelPackage | None,
    run: TrainingRun,
    input_scale: int = 1,
) -> ModelPackage:
    """Saves the trained weights with their card (`metrics`: the validation scores)."""
    classes = _class_infos(data)
    tiling = _tiling(config, base, input_scale)
    card = make_card(
        printable_text(config.name or config.output.name),
        model.config,
        classes,
        bands=tuple(printable_text(b) for b in data.spec.bands),
        tile=tiling,
        mean=tuple(data.spec.mean),
        std=tuple(data.spec.std),
        value_range=(float(data.spec.value_range[0]), float(data.spec.value_range[1])),
        gsd_m=config.gsd_m or (base.card.gsd_m if base else _gsd(data)),
        description=printable_text(
            config.description
            or f"CrossEarth fine-tuned on {', '.join(s.image.name for s in config.images)}"
        ),
        license=printable_text(config.license),
        provenance=_provenance(config, data, base, run),
        metrics={"validation": metrics},
        input_scale=input_scale,
    )
    dtype = getattr(torch, config.weights_dtype)
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    return save_package(config.output, card, state, overwrite=True)
