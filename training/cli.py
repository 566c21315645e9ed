"""`crossearth train` and `crossearth evaluate`, plugged into the engine's command line."""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.commands.arguments import add_overwrite_option, add_progress_option
from engine.errors import CrossEarthError
from engine.files import atomic_write, check_destination
from engine.option_values import WEIGHTS_DTYPES, parse_band_numbers

# Numeric settings that the command line can override, as (option, type).
NUMERIC_OPTIONS = (
    ("steps", int),
    ("batch", int),
    ("accumulate", int),
    ("lr", float),
    ("window", int),
    ("block-size", int),
    ("val-fraction", float),
    ("eval-every", int),
    ("checkpoint-every", int),
    ("patience", int),
    ("seed", int),
    ("threads", int),
    ("distill-weight", float),
    ("warmup", int),
    ("num-points", int),
    ("patch-size", int),
    ("input-scale", int),
)


def _label_map(text: str | None) -> dict[Any, Any] | None:
    """'1=forest,2=water,7=ignore' -> {1: 'forest', 2: 'water', 7: 'ignore'}."""
    if not text:
        return None
    table: dict[Any, Any] = {}
    for part in text.split(","):
        if "=" not in part:
            raise CrossEarthError(f"--label-map entry '{part}' must look like VALUE=CLASS")
        raw, target = (p.strip() for p in part.split("=", 1))
        key: Any = int(raw) if raw.lstrip("-").isdigit() else raw
        table[key] = int(target) if target.isdigit() else target
    return table


def _bands(text: str | None) -> list[int] | None:
    return parse_band_numbers(text) if text else None


# `crossearth train` and `crossearth evaluate` are found through the entry-point group
# `crossearth.commands` (pyproject.toml): each entry names a `register(subparsers)` that adds
# the sub-parser of that name and returns its handler; the engine names nothing in training.


def register_train(commands: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    """Adds `train` to the engine's sub-commands; returns its handler."""
    train = commands.add_parser(
        "train",
        help="fine-tune a model package (or train an architecture) on local labels",
        description="Fine-tune a CrossEarth model on your imagery and labels. Settings come from "
        "a YAML recipe (--config) and/or the options below (options win).",
    )
    train.add_argument("--config", type=Path, help="YAML training recipe")
    train.add_argument("--base", help="model package folder or installed name to fine-tune")
    train.add_argument(
        "--architecture", help="train this architecture from scratch (vit-ti, vit-s, tiny, ...)"
    )
    train.add_argument("--image", type=Path, action="append", help="training raster (repeatable)")
    train.add_argument("--labels", type=Path, action="append", help="label raster for each --image")
    train.add_argument(
        "--polygons", type=Path, action="append", help="label polygons for each --image"
    )
    train.add_argument("--class-field", help="attribute of the polygons holding the class")
    train.add_argument("--mask", type=Path, action="append", help="labelled area for each --image")
    train.add_argument("--classes", help="class names in order, comma-separated")
    train.add_argument("--label-map", help="label values to classes: 1=forest,2=water,9=ignore")
    train.add_argument("--bands", help="image bands in the model's order, e.g. 3,2,1")
    train.add_argument("--output", type=Path, help="package folder to write")
    train.add_argument(
        "--run-dir", type=Path, help="checkpoints, logs and split (default: OUTPUT.run)"
    )
    train.add_argument("--mode", choices=["reins", "full"], help="reins (default): frozen backbone")
    train.add_argument(
        "--new-head", action="store_true", default=None, help="re-initialise the head"
    )
    train.add_argument("--mtp", action="store_true", default=None, help="multi-task training")
    train.add_argument(
        "--teacher",
        help="a model package (folder or installed name) with the same classes and input that "
        "the model also learns from (knowledge distillation; weight: --distill-weight)",
    )
    train.add_argument(
        "--class-balanced", action="store_true", default=None, help="balance classes"
    )
    for name, kind in NUMERIC_OPTIONS:
        train.add_argument(f"--{name}", type=kind)
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--name", help="model name in the card")
    train.add_argument("--weights-dtype", choices=WEIGHTS_DTYPES)
    train.add_argument("--resume", help="checkpoint file, or 'auto' for the newest of the run")
    add_overwrite_option(
        train, "replace an existing output package this tool wrote (nothing else is replaced)"
    )
    add_progress_option(train)
    return cmd_train


def register_evaluate(
    commands: argparse._SubParsersAction,
) -> Callable[[argparse.Namespace], int]:
    """Adds `evaluate` to the engine's sub-commands; returns its handler."""
    evaluate = commands.add_parser(
        "evaluate", help="score a model on an image against reference labels"
    )
    evaluate.add_argument("model", help="model package folder or installed name")
    evaluate.add_argument("image", type=Path)
    evaluate.add_argument("labels", type=Path, help="label raster or polygons")
    evaluate.add_argument("--class-field", help="class attribute of polygon labels")
    evaluate.add_argument("--layer", help="layer of a multi-layer vector file")
    evaluate.add_argument("--label-map", help="label values to classes: 1=forest,2=water,9=ignore")
    evaluate.add_argument("--bands", help="image bands in the model's order")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--tile", type=int)
    evaluate.add_argument("--overlap", type=int)
    evaluate.add_argument("--batch", type=int, default=4)
    evaluate.add_argument("--json", type=Path, help="also write the metrics as JSON")
    add_overwrite_option(evaluate, "replace an existing --json file (never an input)")
    return cmd_evaluate


def _images(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    if not args.image:
        return None
    labels, polygons, masks = args.labels or [], args.polygons or [], args.mask or []
    sources = labels or polygons
    if len(sources) != len(args.image) or (labels and polygons):
        raise CrossEarthError(
            "give one --labels (or one --polygons) per --image, in the same order"
        )
    if masks and len(masks) != len(args.image):
        raise CrossEarthError("give one --mask per --image, or none")
    entries = []
    for i, image in enumerate(args.image):
        entry: dict[str, Any] = {"image": image}
        entry["labels" if labels else "polygons"] = sources[i]
        if polygons:
            entry["class_field"] = args.class_field
        if masks:
            entry["mask"] = masks[i]
        entries.append(entry)
    return entries


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import from_dict, load_yaml
    from training.package import check_training_paths
    from training.trainer import train

    overrides: dict[str, Any] = {
        "base": args.base,
        "architecture": args.architecture,
        "images": _images(args),
        "classes": args.classes.split(",") if args.classes else None,
        "label_map": _label_map(args.label_map),
        "bands": _bands(args.bands),
        "output": args.output,
        "run_dir": args.run_dir,
        "mode": args.mode,
        "new_head": args.new_head,
        "mtp": args.mtp,
        "teacher": args.teacher,
        "class_balanced": args.class_balanced,
        "device": args.device,
        "name": args.name,
        "weights_dtype": args.weights_dtype,
    }
    for option, _ in NUMERIC_OPTIONS:
        name = option.replace("-", "_")
        overrides[name] = getattr(args, name)
    if args.config:
        config = load_yaml(args.config, overrides)
    else:
        config = from_dict({k: v for k, v in overrides.items() if v is not None}, "command line")
    # A bad output, run folder or --resume file is refused before any data is read. A resumed
    # run may write its package again over the one it wrote before (never over anything else).
    check_training_paths(
        config,
        overwrite=bool(args.overwrite or args.resume),
        resume=args.resume,
        extra_inputs=(args.config,) if args.config else (),
    )
    command = shlex.join(["crossearth", *args.argv])
    result = train(
        config, progress=args.progress, resume=args.resume, command=command, recipe=args.config
    )
    summary = {
        "package": str(result.package.path) if result.package else None,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "mIoU": result.metrics.get("mIoU"),
        "iou": result.metrics.get("iou"),
        "run_dir": str(result.run_dir),
        "warnings": result.warnings,
    }
    if args.progress == "json":
        print(json.dumps({"event": "done", **summary}), flush=True)
    else:
        from training.metrics import format_metrics

        for warning in result.warnings:
            print(f"warning: {warning}")
        print(
            f"wrote {summary['package']} after {result.steps} steps (run folder {result.run_dir})"
        )
        if result.metrics:
            print("validation on held-out blocks:")
            print(format_metrics(result.metrics))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.run.pipeline import SegmentOptions
    from training.evaluate import evaluate
    from training.metrics import format_metrics

    options = SegmentOptions(
        tile_size=args.tile,
        overlap=args.overlap,
        batch_size=args.batch,
        bands=_bands(args.bands),
        device=args.device,
    )
    report = None
    if args.json:  # checked before the work: the metrics never replace an input
        model = Path(args.model)
        reads = [args.image, args.labels, *(model.iterdir() if model.is_dir() else [model])]
        report = check_destination(
            args.json, what="metrics file", reads=reads, overwrite=args.overwrite
        )
    result = evaluate(
        args.model,
        args.image,
        args.labels,
        class_field=args.class_field,
        layer=args.layer,
        label_map=_label_map(args.label_map),
        options=options,
    )
    print(f"{result['model']} on {result['image']} against {result['labels']}")
    print(format_metrics(result))
    if report is not None:
        with atomic_write(report) as temp:
            temp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {report}")
    return 0
