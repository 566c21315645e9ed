"""Training logs: a CSV of every step, TensorBoard scalars, and progress for people or the
plugin (JSON lines)."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TrainingLog:
    def __init__(self, folder: Path, progress: str, total_steps: int, first_step: int) -> None:
        self.folder = folder
        self.progress = progress
        self.total = total_steps
        self._csv_files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        self._board = None
        if first_step > 0:
            # A resumed run repeats the steps after its checkpoint; the rows the interrupted
            # run logged for them would otherwise appear twice.
            for name in ("train_log", "val_log"):
                _drop_rows_after(folder / f"{name}.csv", first_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = first_step + 1 if first_step > 0 else None
            self._board = SummaryWriter(str(folder / "tensorboard"), purge_step=purge)
        except ImportError:
            log.warning("tensorboard is not installed: no TensorBoard logs (CSV logs are written)")
        self._bar = None
        if progress == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=first_step, unit="step", file=sys.stderr)

    def _row(self, name: str, row: dict[str, Any]) -> None:
        if name not in self._writers:
            path = self.folder / f"{name}.csv"
            new = not path.exists()
            handle = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - kept open
            writer = csv.DictWriter(handle, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            self._csv_files[name], self._writers[name] = handle, writer
        self._writers[name].writerow(row)
        self._csv_files[name].flush()

    def step(self, step: int, values: dict[str, float]) -> None:
        self._row("train_log", {"step": step, **{k: round(v, 6) for k, v in values.items()}})
        if self._board is not None:
            for key, value in values.items():
                self._board.add_scalar(f"train/{key}", value, step)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{values.get('loss', 0):.3f}", refresh=False)
        elif self.progress == "json" and (step % 5 == 0 or step == self.total):
            self.event(
                "progress",
                fraction=round(step / self.total, 4),
                message=f"step {step}/{self.total}, loss {values.get('loss', 0):.3f}",
            )

    def validation(self, step: int, result: dict[str, Any]) -> None:
        row = {"step": step, "mIoU": result["mIoU"], "overall_accuracy": result["overall_accuracy"]}
        row.update({f"IoU {k}": v for k, v in result["iou"].items()})
        self._row("val_log", row)
        if self._board is not None:
            self._board.add_scalar("val/mIoU", result["mIoU"] or 0.0, step)
            for name, value in result["iou"].items():
                if value is not None:
                    self._board.add_scalar(f"val/IoU/{name}", value, step)
        self.message(f"step {step}: validation mIoU {100 * (result['mIoU'] or 0):.1f}%")

    def message(self, text: str) -> None:
        if self.progress == "json":
            self.event("log", message=text)
        elif self._bar is not None:
            self._bar.write(text)
        elif self.progress != "none":
            print(text, file=sys.stderr)

    def event(self, name: str, **fields: Any) -> None:
        print(json.dumps({"event": name, **fields}), flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._board is not None:
            self._board.close()
        for handle in self._csv_files.values():
            handle.close()


def _drop_rows_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= step]
    if len(kept) == len(rows):
        return
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(kept)
    partial.replace(path)
