"""The training loop: one command on one CPU, one GPU, or several GPUs/processes (torchrun).

AdamW with linear warm-up then poly decay, gradient accumulation, autocast on CUDA (bf16, or
fp16 with loss scaling), gradient clipping, validation on held-out spatial blocks with early
stopping, checkpoints every N steps that resume exactly (batches are a function of the step),
and a model package with the best validated weights at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from engine.cancel import CancelFlag, cancel_check
from engine.errors import Cancelled, CrossEarthError
from engine.models.packages import ModelPackage
from training.batches import Batch, BatchMaker, batches_ahead, step_seed
from training.checkpoints import CheckpointStore
from training.config import TrainConfig
from training.data import TRAIN, VAL, TrainingData
from training.distill import distillation_loss
from training.early_stopping import EarlyStopping, Validation
from training.logs import TrainingLog
from training.mtp import block_masks, reconstruction_loss
from training.network_setup import NetworkSetup, build_network
from training.package import TrainingRun, write_package
from training.processes import Distributed, start_processes
from training.resume import check_within_steps, checkpoint_state, restore
from training.run_setup import load_run_data, run_teacher_maps


class TrainingCancelled(Cancelled):
    """Training stopped by its caller; the checkpoint it wrote resumes it."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        where = f"; resume from {checkpoint}" if checkpoint else ""
        super().__init__(
            f"training cancelled at step {step}{where}",
            step=step,
            checkpoint=str(checkpoint) if checkpoint else None,
        )
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    package: ModelPackage | None  # None on ranks other than 0
    metrics: dict[str, Any]
    steps: int
    stopped_early: bool
    run_dir: Path
    warnings: list[str] = field(default_factory=list)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up from 1e-6 x lr, then poly decay (power 0.9) to 0 at the last step."""
    if config.warmup and step <= config.warmup:
        return config.lr * (1e-6 + (1 - 1e-6) * step / config.warmup)
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    return config.lr * (1 - progress) ** config.poly_power


def train(
    config: TrainConfig,
    progress: str = "bar",
    resume: str | Path | None = None,
    cancel: CancelFlag = None,
    command: str | None = None,
    recipe: Path | None = None,
) -> TrainResult:
    """Trains as the config says. `resume`: a checkpoint file, or "auto" for the newest in the
    run folder. `cancel`: checked every step; on cancel or Ctrl-C a checkpoint is written.
    `recipe`: the YAML file the config came from; the card records paths relative to it."""
    is_cancelled = cancel_check(cancel)
    dist_info, device = start_processes(config)
    package, data, warnings = load_run_data(config, resume, dist_info)
    network = build_network(config, package, data, device, dist_info, warnings)
    teacher = run_teacher_maps(config, data, device, dist_info)
    trainer = _Trainer(config, data, network, device, dist_info, teacher)
    trainer.resume(resume)
    stopped_early = trainer.run(progress, is_cancelled)
    result_package, final = trainer.finish(package, command, recipe)
    return TrainResult(
        result_package, final, trainer.step, stopped_early, trainer.run_dir, warnings
    )


class _Trainer:
    """One run's loop state: the step, the best score so far, checkpoints and the logs."""

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        net: NetworkSetup,
        device: torch.device,
        dist_info: Distributed,
        teacher: list[np.ndarray] | None = None,
    ) -> None:
        assert config.run_dir is not None
        self.config, self.data, self.net = config, data, net
        self.teacher = teacher
        self.device, self.dist_info = device, dist_info
        self.run_dir = config.run_dir
        self.store = CheckpointStore(self.run_dir / "checkpoints", config.keep_checkpoints)
        self.step = 0
        self.scores = EarlyStopping(config.patience)
        # None when resumed from a checkpoint written before training time was recorded.
        self.seconds_before: float | None = 0.0
        self.last_saved = 0
        self.started = time.perf_counter()
        self.logbook: TrainingLog | None = None
        self.validation = Validation(
            net.network.model, data, config, device, net.patch, net.input_scale, net.amp_dtype
        )

    def resume(self, resume: str | Path | None) -> None:
        """Continues from a checkpoint: weights, optimizer, loss scaler, step and best score."""
        if resume:
            state = self.store.load(resume, trainable_names=self.net.trainable)
            loop = restore(self.net, state)
            self.step, self.scores.best, self.scores.stale = loop.step, loop.best, loop.stale
            self.seconds_before = loop.seconds
        self.last_saved = self.step
        check_within_steps(self.step, self.config.steps)

    def training_seconds(self) -> float | None:
        if self.seconds_before is None:
            return None
        return self.seconds_before + time.perf_counter() - self.started

    def save(self, step: int) -> Path | None:
        """A checkpoint of the trainable weights and the loop state (written by rank 0)."""
        path = None
        if self.dist_info.main:
            state = checkpoint_state(self.net, self.scores, self.training_seconds(), self.config)
            path = self.store.save(step, state)
        self.last_saved = step
        return path

    def run(self, progress: str, is_cancelled: Callable[[], bool]) -> bool:
        """Steps until the last step, an early stop (returns True) or a cancel; a cancel or
        Ctrl-C leaves a checkpoint to resume from."""
        config, main = self.config, self.dist_info.main
        first = self.step
        if main:
            self.logbook = TrainingLog(self.run_dir, progress, config.steps, first)
        maker = BatchMaker(
            self.data, config, self.dist_info.rank, self.net.input_scale, self.teacher
        )
        prefetch = batches_ahead(maker, first + 1, config.steps, config.accumulate)
        self.started = time.perf_counter()
        try:
            self.net.network.train()
            batches = iter(prefetch)
            while self.step < config.steps:
                self.step += 1
                self.optimisation_step(batches)
                stop = self.validate_if_due()
                step = self.step
                if step % config.checkpoint_every == 0 or stop or step == config.steps:
                    self.save(step)
                if stop:
                    return True
                if is_cancelled():
                    checkpoint = self.save(step) if self.last_saved != step else self.store.latest()
                    raise TrainingCancelled(step, checkpoint)
        except KeyboardInterrupt:
            step = self.step
            checkpoint = self.save(step) if step > self.last_saved else self.store.latest()
            if self.logbook is not None:
                self.logbook.message(f"interrupted at step {step}; checkpoint {checkpoint}")
            raise
        finally:
            prefetch.close()
            if self.logbook is not None:
                self.logbook.close()
        return False

    def optimisation_step(self, batches: Iterator[Batch]) -> None:
        """One optimizer step over `accumulate` micro-batches, logged on rank 0."""
        config, net, step = self.config, self.net, self.step
        for group in net.optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        parts: dict[str, float] = {}
        for micro in range(config.accumulate):
            batch = next(batches)
            assert batch.step == step and batch.micro == micro
            losses = self._backward(batch, micro)
            for key, value in losses.items():
                parts[key] = parts.get(key, 0.0) + float(value.detach()) / config.accumulate
        if net.scaler is not None:
            net.scaler.unscale_(net.optimizer)
        if config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in net.network.parameters() if p.requires_grad], config.clip_grad
            )
        if net.scaler is not None:
            net.scaler.step(net.optimizer)
            net.scaler.update()
        else:
            net.optimizer.step()
        net.optimizer.zero_grad(set_to_none=True)
        if not all(math.isfinite(v) for v in parts.values()):
            raise CrossEarthError(
                f"the loss became {parts['total']} at step {step}; lower lr or switch amp off"
            )
        if self.logbook is not None:
            self.logbook.step(
                step,
                {
                    "loss": parts.pop("total"),
                    **{f"loss_{k}": v for k, v in parts.items()},
                    "lr": learning_rate(config, step),
                },
            )

    def _backward(self, batch: Batch, micro: int) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch; gradients are synchronised across
        processes only on the last micro-batch of the step."""
        config, net, device = self.config, self.net, self.device
        generator = torch.Generator().manual_seed(
            step_seed(config.seed, self.dist_info.rank, self.step, micro, 1)
        )
        x = batch.inputs.to(device, non_blocking=True)
        masks = pixel_mask = None
        if config.mtp:
            masks, pixel_mask = block_masks(
                x.shape[0],
                x.shape[2],
                x.shape[3],
                net.patch,
                config.mtp_block,
                config.mtp_ratio,
                generator,
            )
            masks, pixel_mask = masks.to(device), pixel_mask.to(device)
        # DistributedDataParallel wraps the network exactly when there are several processes.
        ddp = net.forward
        sync = (
            ddp.no_sync()
            if isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
            and micro < config.accumulate - 1
            else contextlib.nullcontext()
        )
        with sync:
            with torch.autocast(
                device.type, dtype=net.amp_dtype, enabled=net.amp_dtype is not None
            ):
                all_cls, all_masks, rebuilt = net.forward(x, masks)
            losses = net.criterion(all_cls, all_masks, batch.labels.to(device), generator)
            total = losses["total"]
            if batch.teacher is not None:
                losses["distill"] = config.distill_weight * distillation_loss(
                    all_cls[-1], all_masks[-1], batch.teacher.to(device, non_blocking=True)
                )
                total = total + losses["distill"]
            if rebuilt is not None:
                assert pixel_mask is not None  # the heads rebuild only masked (mtp) batches
                losses["reconstruction"] = config.mtp_weight * reconstruction_loss(
                    rebuilt, x, pixel_mask
                )
                total = total + losses["reconstruction"]
            scaled = total / config.accumulate
            (net.scaler.scale(scaled) if net.scaler is not None else scaled).backward()
        return losses

    def validate_if_due(self) -> bool:
        """Validates every `eval_every` steps and at the last; keeps the best weights. True when
        early stopping ends the run (rank 0 decides, the others follow)."""
        config, step = self.config, self.step
        stop = torch.zeros(1)
        if step % config.eval_every == 0 or step == config.steps:
            if self.dist_info.main:
                result = self.validation.score()
                assert self.logbook is not None
                self.logbook.validation(step, result)
                if self.scores.improved(step, result):
                    self.store.save_best(self.net.network.model.state_dict(), self.scores.best)
                elif self.scores.exhausted:
                    stop[0] = 1
                    self.logbook.message(
                        f"early stop: no better mIoU for {self.scores.stale} evaluations"
                    )
            if self.dist_info.world > 1:
                dist.broadcast(stop, 0)
        return bool(stop[0])

    def finish(
        self, package: ModelPackage | None, command: str | None, recipe: Path | None = None
    ) -> tuple[ModelPackage | None, dict[str, Any]]:
        """Rank 0 writes the model package with the best validated weights (and scores it on
        the test images, if any); every rank waits for it."""
        result_package = None
        final: dict[str, Any] = {}
        if self.dist_info.main:
            model = self.net.network.model
            best_state = self.store.load_best()
            if best_state is not None:
                model.load_state_dict(best_state)
            final = self.validation.score()
            result_package = write_package(
                self.config,
                model,
                self.data,
                final,
                package,
                TrainingRun(
                    self.net.head_note,
                    steps_done=self.step,
                    best_step=self.scores.best["step"],
                    seconds=self.training_seconds(),
                    command=command,
                    recipe=recipe,
                ),
                input_scale=self.net.input_scale,
            )
        if result_package is not None and self.config.test:
            result_package = record_test_scores(result_package, self.config, self.device)
        if self.dist_info.world > 1:
            dist.barrier()
        return result_package, final


def record_test_scores(
    package: ModelPackage, config: TrainConfig, device: torch.device
) -> ModelPackage:
    """Scores the package on the held-out test images (as `crossearth evaluate` does) and
    adds the results to its card."""
    from engine.models.packages import open_package
    from engine.run.pipeline import SegmentOptions
    from training.evaluate import evaluate

    scores = {}
    for entry in config.test:
        image, labels = Path(entry["image"]), Path(entry["labels"])
        result = evaluate(
            package.path,
            image,
            labels,
            label_map=entry.get("label_map"),
            options=SegmentOptions(bands=entry.get("bands"), device=str(device)),
        )
        scores[image.name] = {k: v for k, v in result.items() if k not in ("model", "image")}
    card = dataclasses.replace(package.card, metrics={**package.card.metrics, "test": scores})
    card.save(package.path / "model.json")
    return open_package(package.path)


__all__ = ["TRAIN", "VAL", "TrainResult", "TrainingCancelled", "learning_rate", "train"]
