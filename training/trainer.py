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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from engine.devices import resolve_device
from engine.errors import CrossEarthError
from engine.model_card import InputSpec
from engine.packages import ModelPackage, find_package
from engine.raster_input import describe_bands, open_raster
from engine.scaled_model import ScaledModel

from .batches import BatchMaker, batches_ahead, step_seed
from .checkpoints import CheckpointStore
from .config import ClassSpec, TrainConfig
from .data import TRAIN, VAL, TrainingData, WindowSampler, load_training_data
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


class TrainingCancelled(CrossEarthError):
    def __init__(self, step: int, checkpoint: Path | None) -> None:
        where = f"; resume from {checkpoint}" if checkpoint else ""
        super().__init__(f"training cancelled at step {step}{where}")
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
    if device.type != "cuda" or not enabled:
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def train(
    config: TrainConfig,
    progress: str = "bar",
    resume: str | Path | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    command: str | None = None,
) -> TrainResult:
    """Trains as the config says. `resume`: a checkpoint file, or "auto" for the newest in the
    run folder. `cancel`: checked every step; on cancel or Ctrl-C a checkpoint is written."""
    is_cancelled = (cancel.is_set if isinstance(cancel, threading.Event) else cancel) or (
        lambda: False
    )
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

    # --- what to train on, checked before anything heavy happens
    # The package at the end replaces only a package of ours, never an input.
    check_training_paths(config, overwrite=True, resume=resume)
    package = find_package(config.base) if config.base else None
    spec = package.card.input if package else _input_spec_from_scratch(config)
    base_classes = [ClassSpec(c.name, c.color) for c in package.card.classes] if package else None
    data = load_training_data(config, spec, base_classes)
    if package is None:
        data.set_input_spec(measured_spec(data, config))
    warnings = list(data.warnings)
    run_dir = config.run_dir
    assert run_dir is not None
    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # Made now, not when the package is written: a missing folder must not cost a run.
        config.output.parent.mkdir(parents=True, exist_ok=True)
        data.save_split(run_dir / "split.geojson")

    # --- the network
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
    if config.window % patch:
        raise CrossEarthError(
            f"window {config.window} must be a multiple of the patch size {patch}"
        )
    input_scale = config.input_scale or (package.card.input_scale if package else 1)
    if patch % input_scale:
        raise CrossEarthError(
            f"input_scale {input_scale} must divide the patch size {patch} (1, 2, 4, .. {patch})"
        )
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
    store = CheckpointStore(run_dir / "checkpoints", config.keep_checkpoints)

    # --- resume
    start_step, best = 0, {"mIoU": -1.0, "step": 0}
    if resume:
        state = store.load(resume, trainable_names=trainable)
        network.load_state_dict(state["network"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_step, best = state["step"], state["best"]
        stale = state.get("evaluations_without_gain", 0)
        # Checkpoints written before training time was recorded leave the total unknown.
        seconds_before = state.get("seconds")
    else:
        stale, seconds_before = 0, 0.0
    # A checkpoint at the last step resumes into no training at all and writes the package
    # again (say the first attempt failed to write it).
    if start_step > config.steps:
        raise CrossEarthError(
            f"the checkpoint is at step {start_step}, beyond steps = {config.steps}; "
            "raise steps to train further"
        )

    logbook = (
        TrainingLog(run_dir, progress if dist_info.main else "none", config.steps, start_step)
        if dist_info.main
        else None
    )
    # Validation tiles in source pixels: the training window's ground extent, at least a block.
    multiple = patch // input_scale
    tile = max(config.window // input_scale, math.ceil(config.block_size / multiple) * multiple)
    source_grid_model = ScaledModel(network.model, input_scale)
    maker = BatchMaker(data, config, dist_info.rank, input_scale)
    prefetch = batches_ahead(maker, start_step + 1, config.steps, config.accumulate)
    step = start_step
    stopped_early = False
    last_saved = start_step
    started = time.perf_counter()

    def training_seconds() -> float | None:
        if seconds_before is None:
            return None
        return seconds_before + time.perf_counter() - started

    def save(step_now: int) -> Path | None:
        nonlocal last_saved
        path = None
        if dist_info.main:
            path = store.save(
                step_now,
                {
                    "network": {
                        k: v for k, v in network.state_dict().items() if _trains(k, trainable)
                    },
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "best": best,
                    "evaluations_without_gain": stale,
                    "seconds": training_seconds(),
                    "config": config.to_dict(),
                },
            )
        last_saved = step_now
        return path

    try:
        network.train()
        batches = iter(prefetch)
        while step < config.steps:
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            parts: dict[str, float] = {}
            for micro in range(config.accumulate):
                batch = next(batches)
                assert batch.step == step and batch.micro == micro
                generator = torch.Generator().manual_seed(
                    step_seed(config.seed, dist_info.rank, step, micro, 1)
                )
                x = batch.inputs.to(device, non_blocking=True)
                masks = pixel_mask = None
                if config.mtp:
                    masks, pixel_mask = block_masks(
                        x.shape[0],
                        x.shape[2],
                        x.shape[3],
                        patch,
                        config.mtp_block,
                        config.mtp_ratio,
                        generator,
                    )
                    masks, pixel_mask = masks.to(device), pixel_mask.to(device)
                sync = (
                    forward.no_sync()
                    if dist_info.world > 1 and micro < config.accumulate - 1
                    else contextlib.nullcontext()
                )
                with sync:
                    with torch.autocast(
                        device.type, dtype=amp_dtype, enabled=amp_dtype is not None
                    ):
                        all_cls, all_masks, rebuilt = forward(x, masks)
                    losses = criterion(all_cls, all_masks, batch.labels.to(device), generator)
                    total = losses["total"]
                    if rebuilt is not None:
                        losses["reconstruction"] = config.mtp_weight * reconstruction_loss(
                            rebuilt, x, pixel_mask
                        )
                        total = total + losses["reconstruction"]
                    scaled = total / config.accumulate
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                for key, value in losses.items():
                    parts[key] = parts.get(key, 0.0) + float(value.detach()) / config.accumulate
            if scaler is not None:
                scaler.unscale_(optimizer)
            if config.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in network.parameters() if p.requires_grad], config.clip_grad
                )
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not all(math.isfinite(v) for v in parts.values()):
                raise CrossEarthError(
                    f"the loss became {parts['total']} at step {step}; lower lr or switch amp off"
                )
            if logbook is not None:
                logbook.step(
                    step,
                    {
                        "loss": parts.pop("total"),
                        **{f"loss_{k}": v for k, v in parts.items()},
                        "lr": learning_rate(config, step),
                    },
                )

            stop = torch.zeros(1)
            if step % config.eval_every == 0 or step == config.steps:
                if dist_info.main:
                    result = validate(source_grid_model, data, tile, device, amp_dtype=amp_dtype)
                    assert logbook is not None
                    logbook.validation(step, result)
                    score = result["mIoU"] if result["mIoU"] is not None else -1.0
                    if score > best["mIoU"]:
                        best = {"mIoU": score, "step": step}
                        stale = 0
                        store.save_best(network.model.state_dict(), best)
                    else:
                        stale += 1
                        if config.patience and stale >= config.patience:
                            stop[0] = 1
                            logbook.message(f"early stop: no better mIoU for {stale} evaluations")
                if dist_info.world > 1:
                    dist.broadcast(stop, 0)
            if step % config.checkpoint_every == 0 or stop[0] or step == config.steps:
                save(step)
            if stop[0]:
                stopped_early = True
                break
            if is_cancelled():
                raise TrainingCancelled(step, save(step) if last_saved != step else store.latest())
    except KeyboardInterrupt:
        checkpoint = save(step) if step > last_saved else store.latest()
        if logbook is not None:
            logbook.message(f"interrupted at step {step}; checkpoint {checkpoint}")
        raise
    finally:
        prefetch.close()
        if logbook is not None:
            logbook.close()

    result_package = None
    final: dict[str, Any] = {}
    if dist_info.main:
        best_state = store.load_best()
        if best_state is not None:
            network.model.load_state_dict(best_state)
        final = validate(source_grid_model, data, tile, device, amp_dtype=amp_dtype)
        result_package = write_package(
            config,
            network.model,
            data,
            final,
            package,
            setup.head_note,
            steps_done=step,
            best_step=best["step"],
            input_scale=input_scale,
            seconds=training_seconds(),
            command=command,
        )
    if result_package is not None and config.test:
        result_package = record_test_scores(result_package, config, device)
    if dist_info.world > 1:
        dist.barrier()
    return TrainResult(result_package, final, step, stopped_early, run_dir, warnings)


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
