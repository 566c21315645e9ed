"""Small helpers shared by test modules of several folders (engine, model, training)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
