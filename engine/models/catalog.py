"""The released CrossEarth checkpoints that `crossearth download` installs: where each lives on
the Hugging Face Hub, its size and checksum, and the preset that converts it.

The built-in catalog covers every checkpoint preset (engine/crossearth/presets.py). Sizes and
SHA-256 digests are those the Hub publishes for the LFS files of repository
Cusyoung/CrossEarth at the pinned commit (its "Git LFS Details" and commit pages): exact where
the byte count was published, else the rounded size the Hub shows (flagged approximate). Where
no digest is listed here, the download is checked against the SHA-256 the Hub itself sends for
LFS files (its ETag / X-Linked-Etag header).

$CROSSEARTH_MODEL_CATALOG may name a JSON catalog used instead of the built-in one (a mirror
with other files, or the tests' local server); its format is `catalog_from_json`'s.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.crossearth.presets import (
    ARCHITECTURES,
    CHECKPOINTS,
    OFFICIAL_LICENSE,
    CheckpointPreset,
    ClassList,
)
from engine.error_codes import MODEL_NOT_DOWNLOADABLE
from engine.errors import CrossEarthError, ModelError
from engine.files import describe_path

CATALOG_ENV = "CROSSEARTH_MODEL_CATALOG"
HUB_REPO = "Cusyoung/CrossEarth"
# The newest commit of the repository (Dec 2024, "Upload 2 files": D2M); every released file
# is in its tree. A commit, not "main": the files and their digests cannot change under us.
HUB_REVISION = "c780c2621e83477c19ba89444ae866b4f2c90629"
GB = 1_000_000_000
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repository at a revision."""

    repo: str
    filename: str
    revision: str
    size: int | None  # bytes
    size_exact: bool  # False: the Hub's rounded figure (e.g. "1.68 GB")
    sha256: str | None  # None: checked against the Hub's own LFS digest (ETag)

    @property
    def source(self) -> str:
        """The file as an hf:// address pinned to its revision, for cards and messages."""
        return f"hf://{self.repo}/{self.filename}@{self.revision}"

    def to_json(self) -> dict[str, Any]:
        """The file as plain JSON data (`crossearth models --available --json`)."""
        return {
            "repo": self.repo,
            "filename": self.filename,
            "revision": self.revision,
            "size": self.size,
            "size_exact": self.size_exact,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class CatalogEntry:
    """A downloadable model: the preset that converts it and the files it needs."""

    preset: CheckpointPreset
    checkpoint: HubFile | None  # None: announced, not released
    backbone: HubFile | None  # the frozen DINOv2 weights, for rein+head checkpoints
    license: str

    @property
    def name(self) -> str:
        """The model's name, as `crossearth download` and the plugin know it."""
        return self.preset.name

    @property
    def downloadable(self) -> bool:
        """Whether a checkpoint is published for it (some official models are not released)."""
        return self.checkpoint is not None

    @property
    def files(self) -> list[HubFile]:
        """The files a download fetches: the checkpoint and, if separate, the backbone."""
        return [f for f in (self.checkpoint, self.backbone) if f is not None]

    @property
    def download_size(self) -> int | None:
        """Bytes to download, or None when any file's size is unknown."""
        sizes = [f.size for f in self.files if f.size is not None]
        return sum(sizes) if sizes and len(sizes) == len(self.files) else None

    @property
    def size_exact(self) -> bool:
        """Whether every size is measured rather than estimated (a `~` in messages otherwise)."""
        return all(f.size_exact for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON data for `models --available --json` and the plugin's picker."""
        preset = self.preset
        return {
            "name": self.name,
            "description": preset.description,
            "architecture": preset.architecture,
            "classes": [
                {"index": c.index, "name": c.name, "color": list(c.color)}
                for c in preset.classes.infos()
            ],
            "bands": list(preset.bands),
            "gsd_m": preset.gsd_m,
            "tile": list(preset.tile),
            "license": self.license,
            "downloadable": self.downloadable,
            "size": self.download_size,
            "size_exact": self.size_exact,
            # Worded here once: the plugin shows it as it is (it may not import the engine).
            "size_text": format_size(self.download_size, self.size_exact),
            "checkpoint": self.checkpoint.to_json() if self.checkpoint else None,
            "backbone": self.backbone.to_json() if self.backbone else None,
        }


def _hub(filename: str, size: int, sha256: str | None, exact: bool) -> HubFile:
    return HubFile(HUB_REPO, filename, HUB_REVISION, size, exact, sha256)


# Checkpoint file -> (size in bytes, exact?, sha256 or None), as the Hub lists them.
_HUB_FILES: dict[str, tuple[int, bool, str | None]] = {
    "Potsdam(i)-source.pth": (1_680_000_000, False, None),
    "Potsdam(r)-source.pth": (
        1_680_000_000,
        False,
        "4c00faa355975d78d844cf23a250be68009d1c501179f012738fe921cc84376b",
    ),
    "Vaihingen-source.pth": (1_680_000_000, False, None),
    "Potsdam(r)2RescueNet.pth": (1_680_000_000, False, None),
    "Potsdam(i)2RescueNet.pth": (
        1_680_000_000,
        False,
        "6b4d5cfbb72b33db2edbe007189320bb1485ecdab76923fbdc1b5d28cb63a2a5",
    ),
    "WHU-Building-A2S.pth": (
        1_680_000_000,
        False,
        "8d1a2f9f284327419ac4be794808f6ff12ab65279351636b762634041a85fcbe",
    ),
    "WHU-Building-S2A.pth": (1_680_000_000, False, None),
    "D2M-Rein.pth": (
        1_715_006_497,
        True,
        "5dba96fde4329103f5ee9a36e6fe475182def71540c1b6e856e9a52ef2dd15e6",
    ),
    "casid-sub-source.pth": (1_720_000_000, False, None),
    "casid-tem-source.pth": (
        1_725_090_397,
        True,
        "475c8b3be4a1ed906390940c07ca2ef705dfb2ecf273d961fe244946ed0df9fd",
    ),
    "casid-tms-source.pth": (
        1_715_648_609,
        True,
        "54545d57b7861948bd94edae89995c8bccf8df0a2d5e2c3112bd6e917c4b842a",
    ),
    "casid-trf-source.pth": (
        1_720_000_000,
        False,
        "0bcc74708910561f745a1f10350765a2756f2e29669a1bc4c2994a1bf09686f5",
    ),
}
# The repository also publishes the frozen DINOv2 backbones (patch 16) that rein+head
# checkpoints need: dinov2_converted.pth (1,216,917,864 bytes, sha256 ccac1928...8300c) and
# dinov2_converted_1024x1024.pth (1,229,500,776 bytes, sha256 ddfdeb7b...7981e6). The task
# checkpoints above are 1.7 GB, the whole network with its backbone (Reins + head alone are
# 94.5 MB, see dinov2_rein_and_head.pth), so no entry needs one; `CatalogEntry.backbone`
# carries such a file for catalogs that do.


def builtin_catalog() -> list[CatalogEntry]:
    """Every checkpoint preset, with its file on the Hub where one is released."""
    entries = []
    for preset in CHECKPOINTS.values():
        facts = _HUB_FILES.get(preset.checkpoint)
        checkpoint = _hub(preset.checkpoint, facts[0], facts[2], facts[1]) if facts else None
        entries.append(CatalogEntry(preset, checkpoint, None, OFFICIAL_LICENSE))
    return entries


def load_catalog(path: Path | str | None = None) -> list[CatalogEntry]:
    """The catalog file at `path` or $CROSSEARTH_MODEL_CATALOG, else the built-in catalog."""
    path = path or os.environ.get(CATALOG_ENV) or None
    if path is None:
        return builtin_catalog()
    path = Path(path).expanduser()
    shown = describe_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CrossEarthError(
            f"cannot read the model catalog {shown} (${CATALOG_ENV}): {exc.strerror or exc}"
        ) from None
    except ValueError as exc:
        raise CrossEarthError(f"the model catalog {shown} is not valid JSON: {exc}") from None
    return catalog_from_json(data, shown)


def find_entry(name: str, catalog: list[CatalogEntry] | None = None) -> CatalogEntry:
    """The catalog entry called `name`, else a CrossEarthError listing the downloadable ones."""
    catalog = load_catalog() if catalog is None else catalog
    for entry in catalog:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in catalog if e.downloadable) or "none"
    raise ModelError(
        f"'{name}' is not a downloadable model; available: {known}",
        code=MODEL_NOT_DOWNLOADABLE,
        name=name,
        available=known,
    )


def format_size(size: int | None, exact: bool = True) -> str:
    """A byte count for people (e.g. '1.23 GB'); `exact` False marks an estimate with '~'."""
    if size is None:
        return "size unknown"
    prefix = "" if exact else "~"
    if size >= GB:
        return f"{prefix}{size / GB:.2f} GB"
    if size >= 1_000_000:
        return f"{prefix}{size / 1_000_000:.1f} MB"
    if size >= 1000:
        return f"{prefix}{size / 1000:.0f} kB"
    return f"{prefix}{size} B"


# --- catalog files -------------------------------------------------------------------------


def _field(obj: Any, key: str, kind: type | tuple[type, ...], where: str, optional: bool = False):
    if not isinstance(obj, dict):
        raise CrossEarthError(f"{where}: must be a JSON object")
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CrossEarthError(f"{where}.{key}: must be a {names}, got {value!r}")
    return value


def _hub_file(obj: Any, where: str) -> HubFile:
    size = _field(obj, "size", int, where, optional=True)
    sha = _field(obj, "sha256", str, where, optional=True)
    if size is not None and size < 0:
        raise CrossEarthError(f"{where}.size: must not be negative")
    if sha is not None and not _SHA256.fullmatch(sha):
        raise CrossEarthError(f"{where}.sha256: must be 64 lower-case hex digits")
    exact = obj.get("size_exact", True)
    filename = _field(obj, "filename", str, where)
    parts = filename.split("/")
    if filename.startswith("/") or "\\" in filename or any(p in ("", ".", "..") for p in parts):
        raise CrossEarthError(
            f"{where}.filename: '{filename}' is not a file of the repository (a relative path "
            "without '..', '.' or empty parts, such as 'model.pth' or 'checkpoints/model.pth')"
        )
    return HubFile(
        repo=_field(obj, "repo", str, where),
        filename=filename,
        revision=_field(obj, "revision", str, where, optional=True) or "main",
        size=size,
        size_exact=bool(exact),
        sha256=sha,
    )


def catalog_from_json(data: Any, where: str = "catalog") -> list[CatalogEntry]:
    """Entries of a catalog file: {"models": [{"name", "architecture", "classes": [{"name",
    "color"}], "bands", "gsd_m", "description", "license", "checkpoint": {"repo", "filename",
    "revision", "size", "sha256"}, "backbone": {...} or null}]}."""
    models = _field(data, "models", list, where)
    entries = []
    for number, item in enumerate(models):
        at = f"{where}: models[{number}]"
        name = _field(item, "name", str, at)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise CrossEarthError(f"{at}.name: '{name}' is not a folder name (letters, 0-9, ._-)")
        architecture = _field(item, "architecture", str, at)
        if architecture not in ARCHITECTURES:
            raise CrossEarthError(
                f"{at}.architecture: '{architecture}' is unknown; known: {', '.join(ARCHITECTURES)}"
            )
        classes = _field(item, "classes", list, at)
        if not classes:
            raise CrossEarthError(f"{at}.classes: give at least one class")
        names = tuple(_field(c, "name", str, f"{at}.classes[{i}]") for i, c in enumerate(classes))
        colors = []
        for i, c in enumerate(classes):
            color = _field(c, "color", list, f"{at}.classes[{i}]")
            if len(color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
                raise CrossEarthError(f"{at}.classes[{i}].color: must be [r, g, b] in 0..255")
            colors.append(tuple(color))
        bands = _field(item, "bands", list, at)
        if not bands or not all(isinstance(b, str) and b for b in bands):
            raise CrossEarthError(f"{at}.bands: must be a list of band names")
        gsd = _field(item, "gsd_m", (int, float), at, optional=True)
        checkpoint = item.get("checkpoint")
        preset = CheckpointPreset(
            name=name,
            checkpoint=_field(checkpoint, "filename", str, f"{at}.checkpoint")
            if checkpoint is not None
            else "(not released)",
            architecture=architecture,
            classes=ClassList(names, tuple(colors), f"catalog {where}"),
            bands=tuple(bands),
            gsd_m=float(gsd) if gsd is not None else None,
            description=str(item.get("description", "")),
        )
        backbone = item.get("backbone")
        entries.append(
            CatalogEntry(
                preset=preset,
                checkpoint=_hub_file(checkpoint, f"{at}.checkpoint") if checkpoint else None,
                backbone=_hub_file(backbone, f"{at}.backbone") if backbone else None,
                license=str(item.get("license", "unknown")),
            )
        )
    return entries
