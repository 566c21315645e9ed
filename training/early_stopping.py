"""Validation during a run: scoring the model on the held-out blocks on the source grid, and
the bookkeeping of the best score so far that decides early stopping."""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.crossearth.model import CrossEarth
from engine.run.scaled_model import ScaledModel
from training.config import TrainConfig
from training.data import TrainingData
from training.validate import validate


class Validation:
    """Scores the model being trained on the validation blocks, as the engine would run it
    (on the source grid, at the run's input scale)."""

    def __init__(
        self,
        model: CrossEarth,
        data: TrainingData,
        config: TrainConfig,
        device: torch.device,
        patch: int,
        input_scale: int,
        amp_dtype: torch.dtype | None,
    ) -> None:
        self.data, self.device, self.amp_dtype = data, device, amp_dtype
        # Validation tiles in source pixels: the training window's ground extent, at least a block.
        multiple = patch // input_scale
        self.tile = max(
            config.window // input_scale,
            math.ceil(config.block_size / multiple) * multiple,
        )
        self.source_grid_model = ScaledModel(model, input_scale)

    def score(self) -> dict[str, Any]:
        """The validation metrics of the model as it is now (mIoU among them)."""
        return validate(
            self.source_grid_model, self.data, self.tile, self.device, amp_dtype=self.amp_dtype
        )


class EarlyStopping:
    """The best validated mIoU so far (and its step), and how many evaluations since brought
    no better one: after `patience` of them (0: never) the run stops."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: dict[str, Any] = {"mIoU": -1.0, "step": 0}
        self.stale = 0  # evaluations without a better mIoU

    def improved(self, step: int, result: dict[str, Any]) -> bool:
        """Records the evaluation at `step`; True when it is the best so far."""
        # No mIoU (no validation pixel of any class) counts as the worst score.
        score = result["mIoU"] if result["mIoU"] is not None else -1.0
        if score > self.best["mIoU"]:
            self.best = {"mIoU": score, "step": step}
            self.stale = 0
            return True
        self.stale += 1
        return False

    @property
    def exhausted(self) -> bool:
        """True when patience has run out: stop the run."""
        return bool(self.patience) and self.stale >= self.patience
