"""Knowledge distillation: a trained package (the teacher) guides the model being trained.

The teacher segments every training image once before training starts, as the engine would
(its own tiles, input scale and smooth blending); its per-pixel class probabilities are kept in
the run folder (float16 .npy files, rows in order, memory-mapped; reused by a resumed run) and
read with each training window, resized, flipped and turned with it. Offline, because a
teacher of a finer geometry costs more per window than a whole training step of the model it
teaches.

The loss is the KL divergence from the teacher's probabilities to the model's Mask2Former
semantic scores (class probabilities x query masks, normalised per pixel), at the resolution
of the model's masks, on pixels of training blocks only: the validation blocks stay unseen.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from engine.crossearth.model import semantic_scores
from engine.error_codes import CONFIG_TEACHER_CLASSES, CONFIG_TEACHER_INPUT
from engine.errors import ConfigError
from engine.files import atomic_write, file_sha256
from engine.models.loading import load_package_model
from engine.models.packages import ModelPackage
from engine.run.row_stream import stream_strips
from engine.run.tiling import plan_tiles
from training.data import ImageData, TrainingData

# Teacher probabilities below this class-sum (outside training blocks, outside the image) carry
# no weight in the loss.
_EPSILON = 1e-6
# How a cached map is stored; part of its cache key, so a map of another layout (an earlier
# version's) is never read as this one.
_LAYOUT = "rows [H, K, W] float16"


def check_teacher(teacher: ModelPackage, data: TrainingData) -> None:
    """The teacher must speak the trained model's classes and read the same input."""
    theirs = [c.name for c in teacher.card.classes]
    ours = [c.name for c in data.classes]
    if theirs != ours:
        raise ConfigError(
            f"teacher {teacher.card.name} has the classes {', '.join(theirs)}, the trained model "
            f"{', '.join(ours)}; distil from a model with the same classes in the same order",
            code=CONFIG_TEACHER_CLASSES,
        )
    spec, expected = teacher.card.input, data.spec
    same = (
        spec.bands == expected.bands
        and np.allclose(spec.mean, expected.mean)
        and np.allclose(spec.std, expected.std)
        and tuple(spec.value_range) == tuple(expected.value_range)
    )
    if not same:
        raise ConfigError(
            f"teacher {teacher.card.name} reads its bands with another normalisation "
            "(bands, value range, mean or std) than the trained model; distil from a model "
            "with the same input",
            code=CONFIG_TEACHER_INPUT,
        )


def teacher_maps(
    teacher: ModelPackage,
    data: TrainingData,
    device: torch.device,
    folder: Path,
    batch: int = 8,
) -> list[np.ndarray]:
    """The teacher's class probabilities [K, H, W] (float16, read-only memory maps) of every
    training image, computed once into `folder` and reused while teacher and image stay the
    same."""
    check_teacher(teacher, data)
    folder.mkdir(parents=True, exist_ok=True)
    weights = file_sha256(teacher.weights_path)
    maps = []
    model = None
    for index, image in enumerate(data.images):
        key = _cache_key(teacher, weights, image)
        path = folder / f"teacher-{index:02d}-{key}.npy"
        stored = _cached_map(path, (image.grid.height, len(data.classes), image.grid.width))
        if stored is None:  # absent, cut short or of another layout: this run's to (re)write
            if model is None:
                model = load_package_model(teacher, device)
            _write_map(model, teacher, image, len(data.classes), device, batch, path)
            stored = np.load(path, mmap_mode="r")
        # Stored row by row ([H, K, W], so each strip is one sequential checked write), seen
        # class-major like scores.
        maps.append(stored.transpose(1, 0, 2))
    return maps


def _cached_map(path: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The cached map at `path` (a read-only memory map) when it is complete, float16 and of
    `shape`; otherwise None."""
    try:
        stored = np.load(path, mmap_mode="r")
    except (OSError, ValueError):  # absent, shorter than its header says, or not an array
        return None
    complete = path.stat().st_size == stored.offset + stored.nbytes
    if not complete or stored.dtype != np.float16 or stored.shape != shape:
        return None
    return stored


def _cache_key(teacher: ModelPackage, weights_sha256: str, image: ImageData) -> str:
    described = {
        "layout": _LAYOUT,
        "weights": weights_sha256,
        "input_scale": teacher.card.input_scale,
        "tile": [teacher.card.tile_size, teacher.card.tile_stride],
        "image": str(image.source.image),
        "bands": list(image.reader.bands),
        "shape": [image.grid.height, image.grid.width],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def _write_map(
    model: torch.nn.Module,
    teacher: ModelPackage,
    image: ImageData,
    classes: int,
    device: torch.device,
    batch: int,
    path: Path,
) -> None:
    """Tiles, blends and normalises the teacher's scores into `path` (temporary name, renamed
    when complete), one strip of tile rows at a time: the engine's row stream, with the
    strips kept as probabilities instead of decided classes."""
    height, width = image.grid.height, image.grid.width
    tile, stride = teacher.card.tile_size, teacher.card.tile_stride

    def run(inputs: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(inputs).to(device)).float().cpu().numpy()

    strips = stream_strips(
        image.reader,  # the engine's tile reading: normalized, nodata at the mean, reflected
        run,
        plan_tiles(height, width, tile, stride),
        _probabilities,
        size=tile,
        height=height,
        width=width,
        num_classes=classes,
        batch_size=batch,
        top=0,
        end=height,
    )
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
        "fortran_order": False,
        "shape": (height, classes, width),
    }
    with closing(strips), atomic_write(path) as temp, open(temp, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for probabilities in strips:
            _append_rows(out, probabilities)


def _append_rows(out: BinaryIO, probabilities: np.ndarray) -> None:
    """Appends a strip's rows in order, as [rows, K, W]: each strip is one sequential write."""
    out.write(np.ascontiguousarray(probabilities.transpose(1, 0, 2)).tobytes())


def _probabilities(
    top: int, sums: np.ndarray, weights: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """A strip's finished rows as float16 probabilities [K, rows, W] (0 where the teacher has
    no score or the image no data)."""
    scores = sums / np.maximum(weights, _EPSILON)
    total = scores.sum(0)
    probabilities = np.where(total > _EPSILON, scores / np.maximum(total, _EPSILON), 0.0)
    probabilities[:, ~valid] = 0.0  # nodata pixels teach nothing
    return probabilities.astype(np.float16)


def read_teacher(
    maps: list[np.ndarray], data: TrainingData, image: int, row: int, col: int, size: int
) -> np.ndarray:
    """Teacher probabilities [K, size, size] float32 of a window; zero outside the image and
    outside training blocks (validation blocks must not teach)."""
    source = maps[image]
    classes, height, width = source.shape
    out = np.zeros((classes, size, size), np.float32)
    top, left = max(row, 0), max(col, 0)
    bottom, right = min(row + size, height), min(col + size, width)
    if bottom > top and right > left:
        out[:, top - row : bottom - row, left - col : right - col] = source[
            :, top:bottom, left:right
        ]
    out[:, ~data.training_area(image, row, col, size)] = 0.0
    return out


def distillation_loss(
    cls_logits: torch.Tensor, mask_logits: torch.Tensor, teacher: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || model) per pixel at the masks' resolution, weighted by where the teacher
    speaks (its probabilities sum to 1 on training pixels, 0 elsewhere).

    cls_logits [B, Q, K + 1], mask_logits [B, Q, h, w], teacher [B, K, H, W] (H, W multiples
    of h, w)."""
    size = (mask_logits.shape[-2], mask_logits.shape[-1])
    target = F.adaptive_avg_pool2d(teacher.float(), size)
    weight = target.sum(1)
    target = target / weight.clamp(min=_EPSILON)[:, None]
    scores = semantic_scores(cls_logits.float(), mask_logits.float(), size)
    log_model = (
        scores.clamp(min=_EPSILON).log() - scores.sum(1, keepdim=True).clamp(min=_EPSILON).log()
    )
    kl = (target * (target.clamp(min=_EPSILON).log() - log_model)).sum(1)
    return (kl * weight).sum() / weight.sum().clamp(min=1.0)
