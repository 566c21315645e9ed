"""Training batches, each a pure function of (seed, rank, step, micro-batch): resuming at any
step rebuilds exactly the batches an uninterrupted run would have used."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.run.prefetch import Prefetcher
from training.augment import (
    EarthStyle,
    PhotometricDistortion,
    flip_rotate,
    ignore_invalid,
    resize_bilinear,
    resize_window,
)
from training.config import TrainConfig
from training.data import TRAIN, TrainingData, WindowSampler
from training.distill import read_teacher


def step_seed(seed: int, rank: int, step: int, micro: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step, micro, stream]).generate_state(1)[0])


@dataclass
class Batch:
    step: int
    micro: int
    inputs: torch.Tensor  # [B, C, S, S] normalized
    labels: torch.Tensor  # [B, S, S] uint8, IGNORE where unlabelled
    # [B, K, S, S] a teacher's class probabilities (0 outside training blocks), if distilling
    teacher: torch.Tensor | None = None


class BatchMaker:
    def __init__(
        self,
        data: TrainingData,
        config: TrainConfig,
        rank: int = 0,
        input_scale: int = 1,
        teacher: list[np.ndarray] | None = None,
    ) -> None:
        self.data = data
        self.teacher = teacher  # the teacher's probability maps per image (training/distill.py)
        self.config = config
        self.rank = rank
        self.sampler = WindowSampler(
            data, config.window, config.scale_range, config.class_balanced, input_scale
        )
        self.photometric = (
            PhotometricDistortion(data.band_names, data.value_range) if config.photometric else None
        )
        self.style = fit_earth_style(data, config) if config.esi_prob > 0 else None

    def window(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(normalized input, labels, teacher probabilities or None) of one random window."""
        image, row, col, size = self.sampler.sample(rng)
        values, valid, labels = self.data.read_training_window(image, row, col, size)
        values, valid, labels = resize_window(values, valid, labels, self.config.window)
        arrays = [values, valid, labels]
        if self.teacher is not None:
            taught = read_teacher(self.teacher, self.data, image, row, col, size)
            arrays.append(resize_bilinear(taught, self.config.window))
        values, valid, labels, *taught_window = flip_rotate(
            arrays, rng, self.config.flips, self.config.rotate90
        )
        if self.photometric is not None:
            values = self.photometric(values, rng)
        if self.style is not None and rng.random() < self.config.esi_prob:
            values = self.style.apply(
                values,
                valid,
                rng,
                self.config.esi_random_weight,
                self.config.esi_keep,
                self.config.esi_block,
            )
        normalized = self.data.images[image].reader.normalize(values)
        normalized[:, ~valid] = 0.0
        teacher = taught_window[0] * valid if taught_window else None
        return normalized.astype(np.float32), ignore_invalid(labels, valid), teacher

    def make(self, step: int, micro: int) -> Batch:
        rng = np.random.default_rng(step_seed(self.config.seed, self.rank, step, micro, 0))
        windows = [self.window(rng) for _ in range(self.config.batch)]
        inputs = torch.from_numpy(np.stack([w[0] for w in windows]))
        labels = torch.from_numpy(np.stack([w[1] for w in windows]))
        taught = [w[2] for w in windows if w[2] is not None]
        teacher = torch.from_numpy(np.stack(taught)) if taught else None
        return Batch(step, micro, inputs, labels, teacher)


def fit_earth_style(data: TrainingData, config: TrainConfig, windows: int = 128) -> EarthStyle:
    """The Gaussian of window styles, fitted on windows of the training blocks."""
    sampler = WindowSampler(data, config.window, (1.0, 1.0), False)
    rng = np.random.default_rng(step_seed(config.seed, 0, 0, 0, 7))
    styles = []
    for _ in range(windows):
        image, row, col, size = sampler.sample(rng)
        values, valid, _ = data.read_training_window(image, row, col, size)
        style = EarthStyle.window_style(values, valid)
        if style is not None:
            styles.append(style)
    if not styles:
        styles = [np.zeros(2 * len(data.bands))]
    return EarthStyle.fit(styles, data.value_range)


def batches_ahead(
    maker: BatchMaker, first_step: int, last_step: int, accumulate: int
) -> Prefetcher[Batch]:
    """The batches of steps first..last (each with its micro-batches), built in a background
    thread while the model trains."""
    return Prefetcher(
        maker.make(step, micro)
        for step in range(first_step, last_step + 1)
        for micro in range(accumulate)
    )


__all__ = ["TRAIN", "Batch", "BatchMaker", "batches_ahead", "fit_earth_style", "step_seed"]
