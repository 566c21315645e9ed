"""Training checkpoints: written atomically (a crash mid-write keeps the previous one), the
last few kept, plus the best validated weights."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from engine.errors import CrossEarthError

_NAME = re.compile(r"^step_(\d+)\.pt$")


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

    def load(self, which: str | Path, trainable_names: list[str]) -> dict[str, Any]:
        """A checkpoint by path, or "auto" (the newest here). Refuses one whose trainable
        parameters differ from this run's (another model, classes or mode)."""
        path = self.latest() if str(which) == "auto" else Path(which)
        if path is None:
            raise CrossEarthError(f"no checkpoint to resume from in {self.folder}")
        if not path.is_file():
            raise CrossEarthError(f"checkpoint {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CrossEarthError(
                f"checkpoint {path} cannot be read ({exc}); use an earlier one"
            ) from None
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
