"""Small helpers shared by test modules of several folders (engine, model, training)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def checksums(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder` (and the folder itself) with its content hash."""
    result = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            result[os.path.relpath(os.path.join(root, name), folder)] = "folder"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return result


def damage(data: bytes, rng: np.random.Generator, header: int = 0) -> tuple[bytes, str]:
    """One seeded damage of `data`: a flipped bit, 16 zeroed bytes, 64 random bytes or a cut,
    and what it was. With `header`, half of the damage lands in the first `header` bytes (where
    a file format keeps its structure)."""
    kind = str(rng.choice(["flip", "zero", "noise", "truncate"]))
    near_start = header and rng.random() < 0.5
    offset = int(rng.integers(0, min(header, len(data)) if near_start else len(data)))
    damaged = bytearray(data)
    if kind == "flip":
        damaged[offset] ^= 1 << int(rng.integers(0, 8))
    elif kind == "zero":
        damaged[offset : offset + 16] = bytes(len(damaged[offset : offset + 16]))
    elif kind == "noise":
        chunk = len(damaged[offset : offset + 64])
        damaged[offset : offset + chunk] = rng.integers(0, 256, chunk, np.uint8).tobytes()
    else:
        damaged = damaged[:offset]
    return bytes(damaged), f"{kind} at {offset}"
