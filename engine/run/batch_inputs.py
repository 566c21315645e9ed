"""The inputs of a batch: raster files, folders, globs, list files, URLs and GDAL /vsi paths
expanded into one list, and the output stem each input's files are named after."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import (
    CrossEarthError,
)
from engine.files import (
    describe_path,
    real_path,
)
from engine.raster.raster_input import first_line
from engine.run.output_paths import AUX_SUFFIX

# Extensions of the raster formats GDAL reads that folders and globs take (a fixed list, so a
# folder expands the same way with every GDAL build; name other files one by one).
RASTER_EXTENSIONS = frozenset(
    (
        *("tif", "tiff", "vrt", "img", "jp2", "j2k", "png", "jpg", "jpeg", "gif", "bmp", "webp"),
        *("nc", "hdf", "h5", "hdf5", "he5", "ntf", "ecw", "sid", "kea", "bil", "bip", "bsq"),
        *("asc", "dem", "dt0", "dt1", "dt2", "hgt", "ers", "rst", "sdat", "mrf", "pix"),
    )
)


CLASSES_SUFFIX = "_classes.tif"


CONFIDENCE_SUFFIX = "_confidence.tif"


POLYGONS_SUFFIX = "_classes.gpkg"


INDEX_GPKG = "index.gpkg"


MOSAIC = "mosaic.vrt"


_URL = re.compile(r"^(https?|ftp)://", re.I)


_CLOUD = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


@dataclass(frozen=True)
class BatchInput:
    given: str  # as named on the command line or in the list (shown and written to the index)
    source: str  # as GDAL opens it

    @property
    def is_local(self) -> bool:
        """Whether the source is a local file (not a /vsi path or URL), which has a folder."""
        return not self.source.startswith("/vsi") and "://" not in self.source


def gdal_name(item: str) -> str:
    """A URL as the GDAL path that reads it (http(s)/ftp through /vsicurl/, s3:// gs:// az://
    through /vsis3/ /vsigs/ /vsiaz/); anything else unchanged."""
    if _URL.match(item):
        return "/vsicurl/" + item
    scheme, sep, rest = item.partition("://")
    if sep and scheme.lower() in _CLOUD:
        return _CLOUD[scheme.lower()] + rest
    return item


def _is_glob(item: str) -> bool:
    return any(ch in item for ch in "*?[")


def _is_raster_name(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in RASTER_EXTENSIONS and not path.name.startswith(".")


def _is_own_output(path: Path, output_dir: Path | None) -> bool:
    """An earlier batch's output in the output folder: never taken as an input by a folder or
    a glob (the batch would segment its own results)."""
    if output_dir is None or real_path(path.parent) != real_path(output_dir):
        return False
    name = path.name.lower()
    return name == MOSAIC or name.endswith((CLASSES_SUFFIX, CONFIDENCE_SUFFIX))


def _list_file(item: str) -> Path | None:
    if item.startswith("@"):
        path = Path(item[1:]).expanduser()
        if not path.is_file():
            raise CrossEarthError(f"the list file {describe_path(path)} does not exist")
        return path
    if item.lower().endswith(".txt") and Path(item).is_file():
        return Path(item)
    return None


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CrossEarthError(
            f"cannot read the list file {describe_path(path)} ({first_line(exc)}); give a text "
            "file with one path or URL per line"
        ) from None
    base = path.absolute().parent
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("@") or (entry.lower().endswith(".txt") and "://" not in entry):
            raise CrossEarthError(
                f"line {number} of {describe_path(path)} names another list ({entry}); list "
                "rasters, folders or globs there, not lists"
            )
        remote = entry.startswith("/vsi") or "://" in entry
        if not remote and not os.path.isabs(os.path.expanduser(entry)):
            entry = str(base / entry)  # relative to the list, not to where the command runs
        items.append(entry)
    return items


def expand_inputs(items: Sequence[str], output_dir: Path | None = None) -> list[BatchInput]:
    """The inputs the items name, in order: list files read, folders and globs expanded
    (sorted by name, raster extensions only, the batch's own outputs left out), URLs as GDAL
    paths, the same file named twice taken once."""
    expanded: list[BatchInput] = []

    def add(item: str, *, from_list: bool = False) -> None:
        listed = None if from_list else _list_file(item)
        if listed is not None:
            entries = _read_list(listed)
            if not entries:
                raise CrossEarthError(f"the list file {describe_path(listed)} names no input")
            for entry in entries:
                add(entry, from_list=True)
            return
        source = gdal_name(item)
        if source.startswith("/vsi"):
            expanded.append(BatchInput(item, source))
            return
        path = Path(item).expanduser()
        if path.is_dir() and not (path / "hdr.adf").exists():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_raster_name(p))
            found = [p for p in found if not _is_own_output(p, output_dir)]
            if not found:
                raise CrossEarthError(
                    f"the folder {describe_path(path)} holds no raster files (looked for "
                    f"{', '.join('.' + e for e in sorted(RASTER_EXTENSIONS)[:6])}, ...); name "
                    "the files themselves"
                )
            expanded.extend(BatchInput(str(p), str(p)) for p in found)
            return
        if not path.exists() and _is_glob(item):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True))
            found = [p for p in matches if p.is_file() and _is_raster_name(p)]
            found = [p for p in found if not _is_own_output(p, output_dir)]
            if not found:
                raise CrossEarthError(f"no raster file matches '{item}'; check the pattern")
            expanded.extend(BatchInput(str(p), str(p)) for p in found)
            return
        expanded.append(BatchInput(item, str(path)))

    for item in items:
        add(os.fspath(item))
    if not expanded:
        raise CrossEarthError("no inputs given; name rasters, folders, globs or a list file")
    unique: list[BatchInput] = []
    seen: set[str] = set()
    for entry in expanded:
        key = str(real_path(entry.source)) if entry.is_local else entry.source
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def stem_of(entry: BatchInput) -> str:
    """The input's file name without its extension, safe as a file name everywhere."""
    name = entry.source
    if "://" in name:  # a URL (also inside /vsicurl/): its path, without query or fragment
        name = re.split(r"[?#]", name.split("://", 1)[1], maxsplit=1)[0]
    name = name.rstrip("/").rsplit("/", 1)[-1]
    name = os.fsencode(name).decode("utf-8", "replace").replace("\ufffd", "_")
    stem = Path(name).stem if "." in name.strip(".") else name
    stem = _UNSAFE.sub("_", stem).strip(" .")
    return stem or "raster"


def unique_stems(entries: Sequence[BatchInput]) -> list[str]:
    """One stem per input; a stem already taken (ignoring case, as some file systems do) gets
    `_2`, `_3`, ... in input order, so the names are the same every time."""
    taken: set[str] = set()
    stems = []
    for entry in entries:
        base = stem_of(entry)
        stem, number = base, 1
        while stem.casefold() in taken:
            number += 1
            stem = f"{base}_{number}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


# The status of an input in the batch and its index.
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class PlannedInput:
    input: BatchInput
    stem: str
    classes: Path
    confidence: Path | None
    polygons: Path | None
    pixels: int = 0
    crs: Any = None  # rasterio CRS or None
    footprint: list[tuple[float, float]] | None = None  # ring in the input's CRS
    files: list[Path] = field(default_factory=list)  # every local file GDAL reads for it
    status: str = ""  # set in the scan when the input does not run (skipped, failed)
    message: str = ""

    def outputs(self) -> list[Path]:
        """The output files of this input's run: classes, then confidence and polygons if asked."""
        return [p for p in (self.classes, self.confidence, self.polygons) if p is not None]

    def written(self) -> list[Path]:
        """Every file the run leaves for this input: the outputs plus their .aux.xml side files."""
        files = self.outputs() + [Path(f"{self.classes}{AUX_SUFFIX}")]
        if self.confidence is not None:
            files.append(Path(f"{self.confidence}{AUX_SUFFIX}"))
        return files


@dataclass
class BatchRow:
    input: str
    output: str  # file name in the output folder
    status: str
    message: str
    classes: dict[str, int] | None
    seconds: float | None
    crs: str
    footprint: list[tuple[float, float]] | None  # in the index's CRS


def crs_name(crs: Any) -> str:
    """The CRS as the index records it: its authority code, else its WKT ("" without one)."""
    if crs is None:
        return ""
    authority = crs.to_authority()
    return ":".join(authority) if authority else crs.to_wkt()
