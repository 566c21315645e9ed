"""The training loop: one command on one CPU, one GPU, or several GPUs/processes (torchrun).

AdamW with linear warm-up then poly decay, gradient accumulation, autocast on CUDA (bf16, or
fp16 with loss scaling), gradient clipping, validation on held-out spatial blocks with early
stopping, checkpoints every N steps that resume exactly (batches are a function of the step),
and a model package with the best validated weights at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from engine.cancel import CancelFlag, cancel_check
from engine.devices import resolve_device
from engine.errors import Cancelled, CrossEarthError
from engine.model_card import InputSpec
from engine.packages import ModelPackage, find_package
from engine.raster_input import describe_bands, open_raster
from engine.runner import autocast_dtype
from engine.scaled_model import ScaledModel

from .batches import Batch, BatchMaker, batches_ahead, step_seed
from .checkpoints import CheckpointStore
from .config import ClassSpec, TrainConfig
from .data import TRAIN, VAL, TrainingData, WindowSampler, load_training_data
from .distill import distillation_loss, teacher_maps
from .logs import TrainingLog
from .losses import Mask2FormerLoss
from .mtp import ReconstructionHeads, block_masks, reconstruction_loss
from .network import (
    TrainingNetwork,
    from_architecture,
    from_package,
    parameter_groups,
    set_trainable,
)
from .package import check_training_paths, write_package
from .validate import validate

log = logging.getLogger(__name__)


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


@dataclass
class _Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _distributed() -> _Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Distributed()
    return _Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up from 1e-6 x lr, then poly decay (power 0.9) to 0 at the last step."""
    if config.warmup and step <= config.warmup:
        return config.lr * (1e-6 + (1 - 1e-6) * step / config.warmup)
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    return config.lr * (1 - progress) ** config.poly_power


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


def _amp(
    device: torch.device, enabled: bool
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    # The engine's choice of autocast dtype; float16 (no bfloat16 on this GPU) needs a scaler.
    dtype = autocast_dtype(device) if enabled else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


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
    dist_info, device = _start_processes(config)
    package, data, warnings = _load_data(config, resume, dist_info)
    network = _build_network(config, package, data, device, dist_info, warnings)
    teacher = _teacher_maps(config, data, device, dist_info)
    trainer = _Trainer(config, data, network, device, dist_info, teacher)
    trainer.resume(resume)
    stopped_early = trainer.run(progress, is_cancelled)
    result_package, final = trainer.finish(package, command, recipe)
    return TrainResult(
        result_package, final, trainer.step, stopped_early, trainer.run_dir, warnings
    )


def _start_processes(config: TrainConfig) -> tuple[_Distributed, torch.device]:
    """This process's rank and device (joining the process group under torchrun), threads and
    the seed every rank starts from."""
    dist_info = _distributed()
    device = resolve_device(config.device)
    if dist_info.world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    return dist_info, device


def _load_data(
    config: TrainConfig, resume: str | Path | None, dist_info: _Distributed
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


def _teacher_maps(
    config: TrainConfig, data: TrainingData, device: torch.device, dist_info: _Distributed
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


@dataclass
class _Network:
    """The model being trained and everything that updates it."""

    network: TrainingNetwork
    forward: torch.nn.Module  # the network, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    criterion: Mask2FormerLoss
    trainable: list[str]
    head_note: str
    patch: int
    input_scale: int


def _build_network(
    config: TrainConfig,
    package: ModelPackage | None,
    data: TrainingData,
    device: torch.device,
    dist_info: _Distributed,
    warnings: list[str],
) -> _Network:
    """The network (from the base package or from scratch), which parts train, the optimizer
    and the loss. Appends to `warnings` what the recipe asked for and cannot have."""
    if package is not None:
        setup = from_package(package, data.classes, config.class_map, config.new_head)
        mode = config.mode
    else:
        assert config.architecture is not None
        setup = from_architecture(
            config.architecture,
            len(data.classes),
            len(data.bands),
            config.window,
            config.patch_size,
        )
        mode = "full"
        if config.mode != "full":
            message = "a model trained from scratch has no pretrained backbone to freeze: mode full"
            warnings.append(message)
            log.warning(message)
    model = setup.model
    patch = model.config.backbone.patch_size
    input_scale = _input_scale(config, package, patch)
    trainable = set_trainable(model, mode, config.mtp)
    reconstruction = (
        ReconstructionHeads(model.config.backbone.embed_dim, len(data.bands))
        if config.mtp
        else None
    )
    network = TrainingNetwork(model, reconstruction).to(device)
    amp_dtype, scaler = _amp(device, config.amp)
    optimizer = torch.optim.AdamW(
        parameter_groups({"": network}, config.weight_decay),
        lr=config.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    forward: torch.nn.Module = network
    if dist_info.world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
    criterion = Mask2FormerLoss(len(data.classes), num_points=config.num_points)
    return _Network(
        network,
        forward,
        optimizer,
        scaler,
        amp_dtype,
        criterion,
        trainable,
        setup.head_note,
        patch,
        input_scale,
    )


def _input_scale(config: TrainConfig, package: ModelPackage | None, patch: int) -> int:
    """The recipe's input scale (else the base package's), checked against the patch size."""
    if config.window % patch:
        raise CrossEarthError(
            f"window {config.window} must be a multiple of the patch size {patch}"
        )
    input_scale = config.input_scale or (package.card.input_scale if package else 1)
    if patch % input_scale:
        raise CrossEarthError(
            f"input_scale {input_scale} must divide the patch size {patch} (1, 2, 4, .. {patch})"
        )
    return input_scale


class _Trainer:
    """One run's loop state: the step, the best score so far, checkpoints and the logs."""

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        net: _Network,
        device: torch.device,
        dist_info: _Distributed,
        teacher: list[np.ndarray] | None = None,
    ) -> None:
        assert config.run_dir is not None
        self.config, self.data, self.net = config, data, net
        self.teacher = teacher
        self.device, self.dist_info = device, dist_info
        self.run_dir = config.run_dir
        self.store = CheckpointStore(self.run_dir / "checkpoints", config.keep_checkpoints)
        self.step = 0
        self.best: dict[str, Any] = {"mIoU": -1.0, "step": 0}
        self.stale = 0  # evaluations without a better mIoU, for early stopping
        # None when resumed from a checkpoint written before training time was recorded.
        self.seconds_before: float | None = 0.0
        self.last_saved = 0
        self.started = time.perf_counter()
        self.logbook: TrainingLog | None = None
        # Validation tiles in source pixels: the training window's ground extent, at least a block.
        multiple = net.patch // net.input_scale
        self.tile = max(
            config.window // net.input_scale,
            math.ceil(config.block_size / multiple) * multiple,
        )
        self.source_grid_model = ScaledModel(net.network.model, net.input_scale)

    def resume(self, resume: str | Path | None) -> None:
        """Continues from a checkpoint: weights, optimizer, loss scaler, step and best score."""
        if resume:
            net = self.net
            state = self.store.load(resume, trainable_names=net.trainable)
            net.network.load_state_dict(state["network"], strict=False)
            net.optimizer.load_state_dict(state["optimizer"])
            if net.scaler is not None and state.get("scaler"):
                net.scaler.load_state_dict(state["scaler"])
            self.step, self.best = state["step"], state["best"]
            self.stale = state.get("evaluations_without_gain", 0)
            # Checkpoints written before training time was recorded leave the total unknown.
            self.seconds_before = state.get("seconds")
        self.last_saved = self.step
        # A checkpoint at the last step resumes into no training at all and writes the package
        # again (say the first attempt failed to write it).
        if self.step > self.config.steps:
            raise CrossEarthError(
                f"the checkpoint is at step {self.step}, beyond steps = {self.config.steps}; "
                "raise steps to train further"
            )

    def training_seconds(self) -> float | None:
        if self.seconds_before is None:
            return None
        return self.seconds_before + time.perf_counter() - self.started

    def save(self, step: int) -> Path | None:
        """A checkpoint of the trainable weights and the loop state (written by rank 0)."""
        path = None
        if self.dist_info.main:
            net = self.net
            path = self.store.save(
                step,
                {
                    "network": {
                        k: v
                        for k, v in net.network.state_dict().items()
                        if _trains(k, net.trainable)
                    },
                    "optimizer": net.optimizer.state_dict(),
                    "scaler": net.scaler.state_dict() if net.scaler is not None else None,
                    "best": self.best,
                    "evaluations_without_gain": self.stale,
                    "seconds": self.training_seconds(),
                    "config": self.config.to_dict(),
                },
            )
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
                result = self._validate()
                assert self.logbook is not None
                self.logbook.validation(step, result)
                score = result["mIoU"] if result["mIoU"] is not None else -1.0
                if score > self.best["mIoU"]:
                    self.best = {"mIoU": score, "step": step}
                    self.stale = 0
                    self.store.save_best(self.net.network.model.state_dict(), self.best)
                else:
                    self.stale += 1
                    if config.patience and self.stale >= config.patience:
                        stop[0] = 1
                        self.logbook.message(
                            f"early stop: no better mIoU for {self.stale} evaluations"
                        )
            if self.dist_info.world > 1:
                dist.broadcast(stop, 0)
        return bool(stop[0])

    def _validate(self) -> dict[str, Any]:
        return validate(
            self.source_grid_model, self.data, self.tile, self.device, amp_dtype=self.net.amp_dtype
        )

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
            final = self._validate()
            result_package = write_package(
                self.config,
                model,
                self.data,
                final,
                package,
                self.net.head_note,
                steps_done=self.step,
                best_step=self.best["step"],
                input_scale=self.net.input_scale,
                seconds=self.training_seconds(),
                command=command,
                recipe=recipe,
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
    from engine.packages import open_package
    from engine.pipeline import SegmentOptions

    from .evaluate import evaluate

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


def _trains(name: str, trainable: set[str] | list[str]) -> bool:
    return name.startswith("reconstruction.") or name.removeprefix("model.") in trainable


__all__ = ["TRAIN", "VAL", "TrainResult", "TrainingCancelled", "learning_rate", "train"]
