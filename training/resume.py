"""What a training checkpoint holds of a run (the trainable weights, optimizer, loss scaler and
loop state) and the run restored from one, so that a resumed run continues exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import CrossEarthError
from training.config import TrainConfig
from training.early_stopping import EarlyStopping
from training.network_setup import NetworkSetup


def _trains(name: str, trainable: set[str] | list[str]) -> bool:
    return name.startswith("reconstruction.") or name.removeprefix("model.") in trainable


def checkpoint_state(
    net: NetworkSetup, scores: EarlyStopping, seconds: float | None, config: TrainConfig
) -> dict[str, Any]:
    """A checkpoint's contents (the store adds the step): frozen weights are left out, since
    the base package gives them again."""
    return {
        "network": {k: v for k, v in net.network.state_dict().items() if _trains(k, net.trainable)},
        "optimizer": net.optimizer.state_dict(),
        "scaler": net.scaler.state_dict() if net.scaler is not None else None,
        "best": scores.best,
        "evaluations_without_gain": scores.stale,
        "seconds": seconds,
        "config": config.to_dict(),
    }


@dataclass(frozen=True)
class LoopState:
    """Where a checkpoint left the loop."""

    step: int
    best: dict[str, Any]
    stale: int
    seconds: float | None  # None: written before training time was recorded


def restore(net: NetworkSetup, state: dict[str, Any]) -> LoopState:
    """Loads a checkpoint's weights, optimizer and loss scaler into `net`; returns its loop
    state."""
    net.network.load_state_dict(state["network"], strict=False)
    net.optimizer.load_state_dict(state["optimizer"])
    if net.scaler is not None and state.get("scaler"):
        net.scaler.load_state_dict(state["scaler"])
    return LoopState(
        state["step"],
        state["best"],
        state.get("evaluations_without_gain", 0),
        # Checkpoints written before training time was recorded leave the total unknown.
        state.get("seconds"),
    )


def check_within_steps(step: int, steps: int) -> None:
    """Refuses a checkpoint beyond the run's last step."""
    # A checkpoint at the last step resumes into no training at all and writes the package
    # again (say the first attempt failed to write it).
    if step > steps:
        raise CrossEarthError(
            f"the checkpoint is at step {step}, beyond steps = {steps}; "
            "raise steps to train further"
        )
