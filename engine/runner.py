"""Runs batches of tiles through a model on a device: autocast on CUDA, batch backs off on OOM."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from .errors import ConfigError, CrossEarthError, ResourceError
from .runtimes import checked_scores

log = logging.getLogger(__name__)


def set_cpu_threads(threads: int | None) -> None:
    """Sets torch's CPU thread count (None leaves torch's default); below 1 is a CrossEarthError."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(
                f"threads must be at least 1, got {threads}",
                code="option.threads",
                option="threads",
                value=threads,
            )
        torch.set_num_threads(threads)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `device`: bfloat16 or float16 on CUDA, None (float32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class BatchRunner:
    """Calls the model on [B, C, H, W] float32 batches and returns scores [B, K, H, W] float32."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        num_classes: int,
        batch_size: int,
        amp: bool = True,
    ) -> None:
        if batch_size < 1:
            raise CrossEarthError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.device = device
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.amp_dtype = autocast_dtype(device) if amp else None

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(batch)
        if self.device.type == "cuda":
            # From page-locked memory the copy to the GPU is asynchronous.
            inputs = inputs.pin_memory()
        inputs = inputs.to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            scores = self.model(inputs)
        return checked_scores(scores.float().cpu().numpy(), batch.shape, self.num_classes)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        start = 0
        while start < batch.shape[0]:
            chunk = batch[start : start + self.batch_size]
            try:
                outputs.append(self._forward(chunk))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if self.batch_size == 1:
                    raise ResourceError(
                        f"out of GPU memory on {self.device} even with batch size 1; use a "
                        "smaller tile size or the device cpu",
                        code="memory.gpu",
                        device=str(self.device),
                        options=["tile", "device"],
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of GPU memory: batch size reduced to %d", self.batch_size)
                continue
            start += chunk.shape[0]
        return np.concatenate(outputs, axis=0)
