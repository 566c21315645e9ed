"""The network a run trains and everything that updates it: the model (from the base package or
from scratch), which of its parts train, the optimizer, mixed precision and the loss."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from engine.errors import CrossEarthError
from engine.models.packages import ModelPackage
from engine.run.runner import autocast_dtype
from training.config import TrainConfig
from training.data import TrainingData
from training.losses import Mask2FormerLoss
from training.mtp import ReconstructionHeads
from training.network import (
    TrainingNetwork,
    from_architecture,
    from_package,
    parameter_groups,
    set_trainable,
)
from training.processes import Distributed

# The logger the run's warnings carried before this module was split out of the trainer, so
# that stderr reads as it did ("WARNING training.trainer: ...").
log = logging.getLogger("training.trainer")


@dataclass
class NetworkSetup:
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


def _amp(
    device: torch.device, enabled: bool
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    # The engine's choice of autocast dtype; float16 (no bfloat16 on this GPU) needs a scaler.
    dtype = autocast_dtype(device) if enabled else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


def build_network(
    config: TrainConfig,
    package: ModelPackage | None,
    data: TrainingData,
    device: torch.device,
    dist_info: Distributed,
    warnings: list[str],
) -> NetworkSetup:
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
    return NetworkSetup(
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
