"""Validation during training: the model on every validation block, with context around it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training.config import IGNORE
from training.data import VAL, TrainingData
from training.metrics import metrics, update_confusion


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    data: TrainingData,
    tile: int,
    device: torch.device,
    batch: int = 4,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Each validation block is predicted from a `tile`-sized window centred on it (so blocks
    get the context they have at inference) and scored on its own labelled pixels. `tile` must
    be at least the block size."""
    if tile < data.block_size:
        raise ValueError(f"validation tile {tile} is smaller than the block size {data.block_size}")
    was_training = model.training
    model.eval()
    classes = len(data.classes)
    confusion = np.zeros((classes, classes), np.int64)
    blocks = data.blocks_of(VAL)
    for start in range(0, len(blocks), batch):
        chunk = blocks[start : start + batch]
        inputs, references, offsets = [], [], []
        for block in chunk:
            image = data.images[block.image]
            top = block.row + block.size // 2 - tile // 2
            left = block.col + block.size // 2 - tile // 2
            values, valid = image.reader.read_box(top, left, tile, tile)
            normalized = image.reader.normalize(values)
            normalized[:, ~valid] = 0.0
            inputs.append(normalized)
            references.append(image.read_labels(block.row, block.col, block.size, block.size))
            offsets.append((block.row - top, block.col - left))
        x = torch.from_numpy(np.stack(inputs)).to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            predicted = model(x).float().argmax(1).cpu().numpy()
        for prediction, reference, (dr, dc), block in zip(
            predicted, references, offsets, chunk, strict=True
        ):
            window = prediction[dr : dr + block.size, dc : dc + block.size]
            update_confusion(confusion, reference, window, IGNORE)
    model.train(was_training)
    return metrics(confusion, [c.name for c in data.classes])
