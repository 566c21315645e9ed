"""Where a segmentation run writes, checked before any work starts.

The run never writes onto anything it reads: every file it writes (class raster, confidence
raster, polygons and their sidecars) is compared by real path and inode (symlinks, '..', hard
links) with every file the input dataset reads (GDAL's file list: a VRT's sources, world files,
.aux.xml) and with each other. An existing output is replaced only when the caller says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.error_codes import OUTPUT_EXISTS
from engine.errors import CrossEarthError, OutputError
from engine.files import describe_path, remove_stale_temporaries, same_file

AUX_SUFFIX = ".aux.xml"
STYLE_SUFFIX = ".qml"  # the plugin styles the class raster with a .qml beside it


@dataclass(frozen=True)
class RunOutputs:
    classes: Path
    confidence: Path | None = None
    polygons: Path | None = None

    def destinations(self) -> list[Path]:
        """The files the run will write, classes first."""
        return [p for p in (self.classes, self.confidence, self.polygons) if p is not None]

    def written(self) -> list[tuple[str, Path]]:
        """Every file the run (and the plugin's styling) writes, with what it is."""
        files = [
            ("output", self.classes),
            ("output's metadata", Path(f"{self.classes}{AUX_SUFFIX}")),
            ("output's style", self.classes.with_suffix(STYLE_SUFFIX)),
        ]
        if self.confidence is not None:
            files += [
                ("confidence raster", self.confidence),
                ("confidence raster's metadata", Path(f"{self.confidence}{AUX_SUFFIX}")),
            ]
        if self.polygons is not None:
            files.append(("polygon file", self.polygons))
        return files


def dataset_files(dataset: object, input_path: Path | str) -> list[Path]:
    """The files GDAL reads for a dataset (the raster itself, a VRT's sources, sidecars)."""
    text = str(input_path)
    if text.startswith("/vsi") or "://" in text:  # nothing on this disk to protect
        files: list[Path] = []
        input_path = Path(".")
    else:
        files = [Path(input_path)]
    for name in getattr(dataset, "files", None) or []:
        if "://" in name or name.startswith("/vsi"):
            continue
        path = Path(name)
        if not path.is_absolute():
            path = Path(input_path).absolute().parent / path
        files.append(path)
    return files


def _destination(path: Path, what: str) -> Path:
    path = Path(path).expanduser().absolute()
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise CrossEarthError(
            f"the {what} name {describe_path(path)} is not valid UTF-8, which GDAL cannot "
            "write; choose a name in UTF-8 characters"
        ) from None
    folder = path.parent
    if not folder.is_dir():
        raise CrossEarthError(f"{what} folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CrossEarthError(f"{what} folder {folder} is not writable; choose another location")
    if path.is_dir():
        raise CrossEarthError(f"{what} {path} is a folder; give a file name such as out.tif")
    return path


def first_existing(paths: Iterable[Path]) -> Path | None:
    """The first of `paths` that exists (a dangling link counts: writing would follow it)."""
    return next((path for path in paths if path.exists() or path.is_symlink()), None)


def _check_not_existing(outputs: RunOutputs) -> None:
    # The plugin's own style file is left out: it is replaced with the raster it styles.
    kinds = {path: what for what, path in outputs.written() if not what.endswith("style")}
    path = first_existing(kinds)
    if path is not None:
        raise OutputError(
            f"{kinds[path]} {path} already exists; allow overwrite to replace it, or choose "
            "another name",
            code=OUTPUT_EXISTS,
            what=kinds[path],
            path=str(path),
            option="overwrite",
        )


def plan_outputs(
    output: Path,
    input_files: list[Path],
    *,
    confidence: Path | None = None,
    polygons: Path | None = None,
    overwrite: bool = False,
) -> RunOutputs:
    """Validates the run's destinations; raises CrossEarthError naming the first problem."""
    outputs = RunOutputs(
        classes=_destination(output, "output"),
        confidence=None if confidence is None else _destination(confidence, "confidence"),
        polygons=None if polygons is None else _destination(polygons, "polygon output"),
    )
    if outputs.polygons is not None and outputs.polygons.suffix.lower() != ".gpkg":
        raise CrossEarthError(
            f"polygon output {outputs.polygons.name} must be a GeoPackage (.gpkg)"
        )
    written = outputs.written()
    for what, target in written:
        for position, source in enumerate(input_files):
            if not same_file(target, source):
                continue
            if position == 0:
                raise CrossEarthError(
                    f"the {what} {target} is the input raster; choose another name so that the "
                    "input is not replaced"
                )
            raise CrossEarthError(
                f"the {what} {target} is {source}, a file the input {input_files[0].name} reads; "
                "choose another name so that the input is not replaced"
            )
    for index, (what, target) in enumerate(written):
        for other_what, other in written[index + 1 :]:
            if same_file(target, other):
                raise CrossEarthError(
                    f"the {other_what} {other} and the {what} {target} are the same file; "
                    "give them different names"
                )
    if not overwrite:
        _check_not_existing(outputs)
    return outputs


def clear_stale_temporaries(outputs: RunOutputs) -> list[str]:
    """Removes our own leftovers older than a day beside the outputs (a killed earlier run);
    returns one message per folder that had some."""
    messages = []
    for folder in sorted({p.parent for p in outputs.destinations()}):
        removed = remove_stale_temporaries(folder)
        if removed:
            names = ", ".join(p.name for p in removed[:3]) + (" ..." if len(removed) > 3 else "")
            messages.append(
                f"removed {len(removed)} temporary file(s) older than a day left in {folder} by "
                f"an interrupted earlier run ({names})"
            )
    return messages
