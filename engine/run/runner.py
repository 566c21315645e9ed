"""Runs batches of tiles through a model on a device: autocast on CUDA, batch backs off on OOM."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import cast

import numpy as np
import torch

from engine.error_codes import MEMORY_GPU, OPTION_THREADS
from engine.errors import ConfigError, CrossEarthError, ResourceError
from engine.models.packages import user_cache_dir
from engine.run.scores import checked_scores

log = logging.getLogger(__name__)


def set_cpu_threads(threads: int | None) -> None:
    """Sets torch's CPU thread count (None leaves torch's default); below 1 is a CrossEarthError."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(
                f"threads must be at least 1, got {threads}",
                code=OPTION_THREADS,
                option="threads",
                value=threads,
            )
        torch.set_num_threads(threads)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `device`: bfloat16 or float16 on CUDA, None (float32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class PendingScores:
    """Scores of a submitted batch, ready once `result()` returns. On CUDA the batch may still
    be running when `submit` returns, so the caller can blend the previous batch meanwhile."""

    def __init__(
        self,
        parts: list[tuple[torch.Tensor, torch.cuda.Event | None]],
        shape: tuple[int, ...],
        classes: int,
    ) -> None:
        self._parts = parts
        self._shape = shape
        self._classes = classes

    def result(self) -> np.ndarray:
        """Scores [B, K, H, W] float32 (waits for the device when it is still working)."""
        arrays = []
        for host, done in self._parts:
            if done is not None:
                done.synchronize()
            arrays.append(host.numpy())
        scores = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        return checked_scores(scores, self._shape, self._classes)


def use_compile_cache() -> Path:
    """Points Inductor's caches (the FX graph and its kernels) at the user's cache folder, so
    a later run with the same model and shapes starts without compiling again, and returns the
    folder. A folder the user chose ($TORCHINDUCTOR_CACHE_DIR) is kept; torch's own default (a
    temporary folder, set as soon as a model module is imported) is not."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        torch_default: str | None = default_cache_dir()
    except ImportError:  # a later torch moved it: only an unset variable is ours to set
        torch_default = None
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or current == torch_default:
        current = str(user_cache_dir() / "torch-compile")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = current
    return Path(current)


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """`torch.compile` of the model for fixed tile and batch shapes, cached (see
    use_compile_cache)."""
    use_compile_cache()
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return cast(torch.nn.Module, torch.compile(model, dynamic=False))


class BatchRunner:
    """Calls the model on [B, C, H, W] float32 batches and returns scores [B, K, H, W] float32.

    `compile`: the model runs through torch.compile (the first batch compiles it; a short last
    batch is padded to the batch size so no second shape is compiled). On CUDA, `submit`
    returns before the device is done (`in_flight` batches may be queued on it)."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        num_classes: int,
        batch_size: int,
        amp: bool = True,
        compile: bool = False,
    ) -> None:
        if batch_size < 1:
            raise CrossEarthError(f"batch size must be at least 1, got {batch_size}")
        self.model = compiled(model) if compile else model
        self.compiled = compile
        self.device = device
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.amp_dtype = autocast_dtype(device) if amp else None
        # Two batches on a GPU: it runs one while the host blends the other and prepares the
        # next; on the CPU the host and the model share the same cores, so one.
        self.in_flight = 2 if device.type == "cuda" else 1

    def _launch(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        count = batch.shape[0]
        if self.compiled and count < self.batch_size:
            padding = np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        inputs = torch.from_numpy(batch)
        cuda = self.device.type == "cuda"
        if cuda:
            # From page-locked memory the copy to the GPU is asynchronous.
            inputs = inputs.pin_memory()
        inputs = inputs.to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            scores = self.model(inputs)[:count].float()
        if not cuda:
            return scores, None
        host = torch.empty(scores.shape, dtype=scores.dtype, pin_memory=True)
        host.copy_(scores, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def submit(self, batch: np.ndarray) -> PendingScores:
        """Starts the model on a batch; the scores come from the returned `result()`."""
        parts = []
        start = 0
        while start < batch.shape[0]:
            chunk = batch[start : start + self.batch_size]
            try:
                parts.append(self._launch(chunk))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if self.batch_size == 1:
                    raise ResourceError(
                        f"out of GPU memory on {self.device} even with batch size 1; use a "
                        "smaller tile size or the device cpu",
                        code=MEMORY_GPU,
                        device=str(self.device),
                        options=["tile", "device"],
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of GPU memory: batch size reduced to %d", self.batch_size)
                continue
            start += chunk.shape[0]
        return PendingScores(parts, batch.shape, self.num_classes)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Scores [B, K, H, W] float32 for normalized tiles [B, C, H, W]."""
        return self.submit(batch).result()
