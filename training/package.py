"""The trained model as a package the engine and plugin load: weights + a card that records
what it was trained on, how, and how well it did on the held-out blocks."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any

import torch

import engine
from engine.crossearth.presets import make_card
from engine.model_card import ClassInfo
from engine.packages import ModelPackage, save_package

from .config import TrainConfig
from .data import TRAIN, VAL, TrainingData

_HASH_LIMIT = 512 * 2**20  # files up to this size get a checksum in the card


def file_record(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    record: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size}
    if path.is_file() and record["bytes"] <= _HASH_LIMIT:
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return record


def _gsd(data: TrainingData) -> float | None:
    grid = data.images[0].grid
    if grid.crs is None or not grid.crs.is_projected:
        return None
    return round(abs(grid.transform.a) * grid.crs.linear_units_factor[1], 4)


def write_package(
    config: TrainConfig,
    model: torch.nn.Module,
    data: TrainingData,
    metrics: dict[str, Any],
    base: ModelPackage | None,
    head_note: str,
    *,
    steps_done: int,
    best_step: int,
    seconds: float | None,
    command: str | None,
    input_scale: int = 1,
) -> ModelPackage:
    classes = tuple(ClassInfo(i, c.name, tuple(c.color)) for i, c in enumerate(data.classes))  # type: ignore[arg-type]
    tile = config.tile_size or (base.card.tile_size if base else config.window // input_scale)
    stride = config.tile_stride or (
        base.card.tile_stride if base and not config.tile_size else round(tile * 2 / 3)
    )
    provenance = {
        "trained_with": f"crossearth train (crossearth-qgis {engine.__version__})",
        "command": command,
        "base": (
            {"model": base.card.name, "version": base.card.version}
            if base
            else {"architecture": config.architecture, "initialisation": "random"}
        ),
        "head": head_note,
        "mode": config.mode if base else "full",
        "data": [
            {
                "image": file_record(s.image),
                "labels": file_record(s.labels) or file_record(s.polygons),
                "class_field": s.class_field,
                "labelled_area": file_record(s.mask),
            }
            for s in config.images
        ],
        "bands_used": data.bands,
        "label_map": {str(k): v for k, v in (config.label_map or {}).items()} or None,
        "split": {
            "method": f"spatial blocks of {data.block_size} px, {config.val_fraction:.0%} of "
            "labelled pixels held out for validation",
            "train_blocks": len(data.blocks_of(TRAIN)),
            "val_blocks": len(data.blocks_of(VAL)),
            "train_pixels": dict(
                zip([c.name for c in data.classes], map(int, data.class_pixels(TRAIN)), strict=True)
            ),
            "val_pixels": dict(
                zip([c.name for c in data.classes], map(int, data.class_pixels(VAL)), strict=True)
            ),
        },
        "steps": steps_done,
        "best_step": best_step,
        "seconds": round(seconds, 1) if seconds is not None else None,
        "seed": config.seed,
        "recipe": config.to_dict(),
        "software": {"torch": torch.__version__, "python": platform.python_version()},
    }
    card = make_card(
        config.name or config.output.name,
        model.config,  # type: ignore[attr-defined]
        classes,
        bands=tuple(data.spec.bands),
        tile=(tile, stride),
        mean=tuple(data.spec.mean),
        std=tuple(data.spec.std),
        value_range=tuple(data.spec.value_range),  # type: ignore[arg-type]
        gsd_m=config.gsd_m or (base.card.gsd_m if base else _gsd(data)),
        description=config.description
        or f"CrossEarth fine-tuned on {', '.join(s.image.name for s in config.images)}",
        license=config.license,
        provenance=provenance,
        metrics={"validation": metrics},
        input_scale=input_scale,
    )
    dtype = getattr(torch, config.weights_dtype)
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    return save_package(config.output, card, state, overwrite=True)
