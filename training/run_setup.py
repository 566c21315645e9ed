"""What a run trains on, ready before its first step: the base package, the training data with
its input statistics, the run folder with the split that was drawn, and the teacher's maps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from engine.errors import CrossEarthError
from engine.models.model_card import InputSpec
from engine.models.packages import ModelPackage, find_package
from engine.raster.raster_input import describe_bands, open_raster
from training.batches import step_seed
from training.config import ClassSpec, TrainConfig
from training.data import TrainingData, WindowSampler, load_training_data
from training.distill import teacher_maps
from training.package import check_training_paths
from training.processes import Distributed


def _input_spec_from_scratch(config: TrainConfig) -> InputSpec:
    with open_raster(config.images[0].image) as dataset:
        chosen = config.bands or list(range(1, dataset.count + 1))
        names = config.band_names or [describe_bands(dataset)[b - 1] for b in chosen]
    if len(names) != len(chosen):
        raise CrossEarthError(
            f"band_names lists {len(names)} names for {len(chosen)} bands; give one per band"
        )
    count = len(names)
    return InputSpec(
        bands=tuple(names), value_range=(0.0, 255.0), mean=(127.5,) * count, std=(64.0,) * count
    )


def measured_spec(data: TrainingData, config: TrainConfig, windows: int = 128) -> InputSpec:
    """Per-band mean and standard deviation of the training windows (models from scratch)."""
    sampler = WindowSampler(data, config.window, (1.0, 1.0), False)
    rng = np.random.default_rng(step_seed(config.seed, 0, 0, 0, 3))
    sums = np.zeros(len(data.bands))
    squares = np.zeros(len(data.bands))
    count = 0
    for _ in range(windows):
        image, row, col, size = sampler.sample(rng)
        values, valid, _ = data.read_training_window(image, row, col, size)
        pixels = values[:, valid].astype(np.float64)
        sums += pixels.sum(1)
        squares += (pixels**2).sum(1)
        count += pixels.shape[1]
    mean = sums / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 1e-6))
    return dataclasses.replace(
        data.spec,
        mean=tuple(round(float(m), 4) for m in mean),
        std=tuple(round(float(s), 4) for s in std),
    )


def load_run_data(
    config: TrainConfig, resume: str | Path | None, dist_info: Distributed
) -> tuple[ModelPackage | None, TrainingData, list[str]]:
    """What to train on, checked before anything heavy happens: the base package (if any), the
    training data, and the run folder with the split that was drawn."""
    # The package at the end replaces only a package of ours, never an input.
    check_training_paths(config, overwrite=True, resume=resume)
    package = find_package(config.base) if config.base else None
    spec = package.card.input if package else _input_spec_from_scratch(config)
    base_classes = [ClassSpec(c.name, c.color) for c in package.card.classes] if package else None
    data = load_training_data(config, spec, base_classes)
    if package is None:
        data.set_input_spec(measured_spec(data, config))
    assert config.run_dir is not None
    if dist_info.main:
        config.run_dir.mkdir(parents=True, exist_ok=True)
        # Made now, not when the package is written: a missing folder must not cost a run.
        config.output.parent.mkdir(parents=True, exist_ok=True)
        data.save_split(config.run_dir / "split.geojson")
    return package, data, list(data.warnings)


def run_teacher_maps(
    config: TrainConfig, data: TrainingData, device: torch.device, dist_info: Distributed
) -> list[np.ndarray] | None:
    """The teacher's probability maps of the training images (rank 0 computes them into the
    run folder, the other ranks then read them), or None without a teacher."""
    if not config.teacher:
        return None
    assert config.run_dir is not None
    teacher = find_package(config.teacher)
    folder = config.run_dir / "teacher"
    if dist_info.main:
        maps = teacher_maps(teacher, data, device, folder)
    if dist_info.world > 1:
        dist.barrier()
        if not dist_info.main:
            maps = teacher_maps(teacher, data, device, folder)
    return maps
