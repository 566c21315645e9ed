"""File-system helpers shared by the writers of rasters and packages."""

from __future__ import annotations

import os
from pathlib import Path


def give_ordinary_permissions(path: Path) -> None:
    """Temporary files and folders are created private (0600/0700); a finished output should
    get the permissions any new file gets under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)
