"""Training checkpoints: written atomically (a crash mid-write keeps the previous one), the
last few kept, plus the best validated weights."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from engine.error_codes import TRAIN_NOTHING_TO_RESUME, TRAIN_RESUME_FILE
from engine.errors import CrossEarthError, InputError
from engine.files import describe_path

_NAME = re.compile(r"^step_(\d+)\.pt$")
# What every checkpoint `CheckpointStore.save` writes holds.
_TRAINING_KEYS = ("step", "network", "optimizer", "best")


def read_training_checkpoint(path: Path, folder: Path, mmap: bool = False) -> dict[str, Any]:
    """The contents of a training checkpoint (`step_NNNNNNN.pt`), or a one-line refusal that
    says what the file is instead and what to pass."""
    from engine.crossearth.convert import torch_file_kind

    shown = describe_path(path)

    def refusal(problem: str, weights: str | None = None) -> InputError:
        # weights: what the file holds instead ("package", "model"), which has a fix of its own
        fix = {
            "package": "to fine-tune a package give its folder as the base; ",
            "model": "to train from these weights convert it with 'crossearth convert' and give "
            "the package as the base; ",
        }.get(weights or "", "")
        return InputError(
            f"{problem}; {fix}to resume, give a step_NNNNNNN.pt file from "
            f"{describe_path(folder)} or resume auto",
            code=TRAIN_RESUME_FILE,
            problem=problem,
            weights=weights,
            folder=describe_path(folder),
        )

    try:
        if path.is_dir():
            raise refusal(f"the resume checkpoint {shown} is a folder, not a checkpoint file")
        if not path.is_file():
            raise refusal(f"checkpoint {shown} does not exist")
        kind = torch_file_kind(path)
    except OSError as exc:
        raise CrossEarthError(f"cannot read checkpoint {shown}: {exc.strerror or exc}") from None
    if kind == "safetensors":
        raise refusal(
            f"{shown} is a safetensors file (a model package's weights), not a training checkpoint",
            weights="package",
        )
    if kind not in ("zip", "pickle"):
        raise refusal(f"{shown} is not a PyTorch file, so not a training checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and kind == "zip")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise refusal(
            f"checkpoint {shown} cannot be read ({first}); it is damaged or not a training "
            "checkpoint"
        ) from None
    if (
        isinstance(state, dict)
        and all(k in state for k in _TRAINING_KEYS)
        and isinstance(state["network"], dict)
        and isinstance(state["optimizer"], dict)
    ):
        return state
    if isinstance(state, dict) and "model" in state and "best" in state:
        what = "the best weights of a run (best.pt), which hold no optimizer state to resume"
    elif isinstance(state, dict) and any(
        isinstance(v, torch.Tensor) or k in ("state_dict", "model", "module")
        for k, v in state.items()
    ):
        raise refusal(
            f"{shown} is a model checkpoint (weights only, no optimizer state)", weights="model"
        )
    else:
        what = "not a training checkpoint"
    raise refusal(f"{shown} is {what}")


def _atomic_save(payload: Any, path: Path) -> None:
    temp = path.with_name(f".{path.name}.partial")
    torch.save(payload, temp)
    os.replace(temp, path)


class CheckpointStore:
    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = max(1, keep)

    def _all(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        found = self._all()
        return found[-1][1] if found else None

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step_{step:07d}.pt"
        _atomic_save({"step": step, **payload}, path)
        for _, old in self._all()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def resume_path(self, which: str | Path) -> Path:
        """The checkpoint `--resume` names: a file, or "auto" (the newest here)."""
        path = self.latest() if str(which) == "auto" else Path(which).expanduser()
        if path is None:
            raise InputError(
                f"no checkpoint to resume from in {describe_path(self.folder)}; start without "
                "resuming",
                code=TRAIN_NOTHING_TO_RESUME,
                folder=describe_path(self.folder),
            )
        return path

    def check(self, which: str | Path) -> Path:
        """Refuses, before any training work, a --resume that is not a training checkpoint
        (a model's .pth, a package's weights, a text file); the tensors stay on disk."""
        path = self.resume_path(which)
        read_training_checkpoint(path, self.folder, mmap=True)
        return path

    def load(self, which: str | Path, trainable_names: list[str]) -> dict[str, Any]:
        """A checkpoint by path, or "auto" (the newest here). Refuses one whose trainable
        parameters differ from this run's (another model, classes or mode)."""
        path = self.resume_path(which)
        state = read_training_checkpoint(path, self.folder)
        names = {k.removeprefix("model.") for k in state["network"] if k.startswith("model.")}
        if names != set(trainable_names):
            raise CrossEarthError(
                f"checkpoint {path.name} was made for another model, class list or mode "
                f"({len(names)} trained tensors, this run trains {len(trainable_names)})"
            )
        return state

    def save_best(self, model_state: dict[str, torch.Tensor], best: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_save({"model": model_state, "best": best}, self.folder / "best.pt")

    def load_best(self) -> dict[str, torch.Tensor] | None:
        path = self.folder / "best.pt"
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)["model"]
