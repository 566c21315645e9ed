"""Part files of a sharded run, in a hidden work folder beside the output.

The folder `.crossearth-work-<output name>` holds `manifest.json` (a fingerprint of the job's
parameters and the shard plan) and, per finished shard, `part-NNNNN.classes.npy`, optionally
`part-NNNNN.confidence.npy`, and `part-NNNNN.json` (counts and SHA-256 checksums), written last:
a part counts as finished only when its JSON exists and its arrays match their checksums. Every
file is written as a temporary beside its name and renamed into place (engine.files), so a
killed run leaves finished parts and hidden temporaries, never a short part. The name depends
only on the output's, so `--resume` finds the folder again; the folder is removed by deleting
exactly the files this module names, then the (then empty) folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.error_codes import PARTS_DAMAGED
from engine.errors import CrossEarthError
from engine.files import (
    TEMP_PREFIX,
    atomic_write,
    create_temporary_file,
    describe_path,
    file_sha256,
    publish,
    remove_temporary,
    temporary_target,
    write_error,
)
from engine.run.row_stream import ClassTally, DecidedRows

WORK_PREFIX = ".crossearth-work-"
MANIFEST = "manifest.json"
FORMAT = "crossearth-parts/1"
_PART_NAME = re.compile(r"part-\d{5}\.(json|classes\.npy|confidence\.npy)")


def work_folder_for(output: Path) -> Path:
    """The hidden work folder of a sharded run writing `output`."""
    output = Path(output)
    return output.with_name(f"{WORK_PREFIX}{output.name}")


def fingerprint(parameters: dict[str, Any]) -> str:
    """SHA-256 of the job's parameters in a canonical JSON form."""
    text = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_known_name(name: str) -> bool:
    """The files this module writes into a work folder, and their temporaries."""
    if name.startswith(TEMP_PREFIX):
        target = temporary_target(name)  # .crossearth-tmp-<run>-<hex>-<known name>
        if target is None:
            return False
        name = target
    return name == MANIFEST or bool(_PART_NAME.fullmatch(name))


def _write_json_atomically(destination: Path, data: dict[str, Any]) -> None:
    with atomic_write(destination) as temp, open(temp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)


@dataclass
class PartInfo:
    """A finished shard: where its rows are, what they hold, and how they were made."""

    index: int
    first: int
    end: int
    width: int
    classes_dtype: str
    classes_sha256: str
    confidence_dtype: str | None
    confidence_sha256: str | None
    class_counts: list[int]
    nodata_pixels: int
    tiles: int  # tiles run, halo included
    tiles_skipped: int  # own tiles skipped as all nodata
    seconds: float
    worker: str

    def to_json(self) -> dict[str, Any]:
        """The part's record as JSON data, tagged with the part format."""
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> PartInfo | None:
        """The record back from JSON data; None when it is not a part record of this format."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        fields = {k: v for k, v in data.items() if k != "format"}
        try:
            return cls(**fields)
        except TypeError:
            return None


class _ArrayStream:
    """A 2-D .npy file written row block by row block into a temporary, hashed on the way;
    `close` renames it into place and returns its SHA-256. Plain checked writes (not a memory
    map), so a full disk is a one-line error and not a crash of the worker."""

    def __init__(self, destination: Path, dtype: np.dtype, shape: tuple[int, int]) -> None:
        self.destination = destination
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.rows = 0
        self._digest = hashlib.sha256()
        self.temp = create_temporary_file(destination)
        try:
            self._file = open(self.temp, "wb")  # noqa: SIM115 (closed in close/discard)
        except OSError as exc:
            remove_temporary(self.temp)
            raise write_error(destination, exc) from None
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": shape,
            },
        )
        self._write(header.getvalue())

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise write_error(self.destination, exc) from None
        self._digest.update(data)

    def write(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.shape[1]:
            raise ValueError(f"rows of shape {rows.shape} for a part of width {self.shape[1]}")
        self._write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += rows.shape[0]

    def close(self) -> str:
        if self.rows != self.shape[0]:
            raise RuntimeError(f"only {self.rows} of {self.shape[0]} rows were written")
        try:
            self._file.close()
        except OSError as exc:
            raise write_error(self.destination, exc) from None
        publish(self.temp, self.destination)
        return self._digest.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        remove_temporary(self.temp)


class PartWriter(ClassTally):
    """Writes one shard's decided rows into its part files (used inside a worker)."""

    def __init__(
        self,
        folder: Path,
        index: int,
        first: int,
        end: int,
        width: int,
        num_classes: int,
        classes_dtype: str,
        confidence_dtype: str | None,
    ) -> None:
        self.folder = Path(folder)
        self.index, self.first, self.end, self.width = index, first, end, width
        super().__init__(num_classes)
        self.confidence_dtype = confidence_dtype
        names = part_names(self.folder, index)
        self._streams: list[_ArrayStream] = []
        try:
            self.classes = _ArrayStream(
                names["classes"], np.dtype(classes_dtype), (end - first, width)
            )
            self._streams.append(self.classes)
            self.confidence = None
            if confidence_dtype is not None:
                self.confidence = _ArrayStream(
                    names["confidence"], np.dtype(confidence_dtype), (end - first, width)
                )
                self._streams.append(self.confidence)
        except BaseException:
            self.discard()
            raise

    def write(self, rows: DecidedRows) -> None:
        """Appends the next decided rows and counts their classes; rows out of order are a bug."""
        expected = self.first + self.classes.rows
        if rows.top != expected:
            raise RuntimeError(f"rows from {rows.top} arrived where row {expected} was due")
        self.tally(rows)
        self.classes.write(rows.classes)
        if self.confidence is not None:
            assert rows.confidence is not None
            self.confidence.write(rows.confidence)

    def finish(self, *, tiles: int, tiles_skipped: int, seconds: float, worker: str) -> PartInfo:
        """Closes the arrays, then writes the part's JSON: the mark that it is finished."""
        classes_sha = self.classes.close()
        confidence_sha = self.confidence.close() if self.confidence is not None else None
        info = PartInfo(
            index=self.index,
            first=self.first,
            end=self.end,
            width=self.width,
            classes_dtype=self.classes.dtype.name,
            classes_sha256=classes_sha,
            confidence_dtype=self.confidence_dtype,
            confidence_sha256=confidence_sha,
            class_counts=[int(c) for c in self.counts],
            nodata_pixels=int(self.nodata_pixels),
            tiles=tiles,
            tiles_skipped=tiles_skipped,
            seconds=round(seconds, 3),
            worker=worker,
        )
        _write_json_atomically(part_names(self.folder, self.index)["json"], info.to_json())
        return info

    def discard(self) -> None:
        """Removes the part's unfinished files."""
        for stream in self._streams:
            stream.discard()


def part_names(folder: Path, index: int) -> dict[str, Path]:
    """The files of part `index` in `folder`: its record and its class and confidence arrays."""
    stem = f"part-{index:05d}"
    return {
        "json": folder / f"{stem}.json",
        "classes": folder / f"{stem}.classes.npy",
        "confidence": folder / f"{stem}.confidence.npy",
    }


class WorkFolder:
    """The driver's view of a run's work folder: manifest, finished parts, removal."""

    def __init__(self, output: Path) -> None:
        self.path = work_folder_for(output)

    def exists(self) -> bool:
        """Whether anything is at the work folder's path (a dangling link included)."""
        return self.path.exists() or self.path.is_symlink()

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when the folder has none (a run killed before writing it)."""
        path = self.path / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CrossEarthError(
                f"cannot read {describe_path(path)} ({exc.strerror or exc}); remove the folder "
                f"{describe_path(self.path)} to start again"
            ) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CrossEarthError(
                f"{describe_path(path)} is not a manifest this version of the tool wrote; remove "
                f"the folder {describe_path(self.path)} to start again"
            )
        return data

    def unknown_entries(self) -> list[Path]:
        """Entries of the folder this module did not write (never removed)."""
        try:
            entries = list(self.path.iterdir())
        except OSError:
            return []
        return [
            e
            for e in entries
            if not (_is_known_name(e.name) and e.is_file() and not e.is_symlink())
        ]

    def create(self, manifest: dict[str, Any]) -> None:
        """Creates the folder (if needed) and writes the manifest."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise CrossEarthError(
                f"{describe_path(self.path)} exists and is not a folder; remove it or choose "
                "another output name"
            )
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        _write_json_atomically(self.path / MANIFEST, {"format": FORMAT, **manifest})

    def finished_part(
        self, index: int, first: int, end: int, width: int, confidence_dtype: str | None
    ) -> PartInfo | None:
        """The part of shard `index` when it is complete and its files match their checksums;
        otherwise None (its files are then removed, so the shard runs again)."""
        names = part_names(self.path, index)
        try:
            info = PartInfo.from_json(json.loads(names["json"].read_text(encoding="utf-8")))
        except (OSError, ValueError):
            info = None
        usable = (
            info is not None
            and (info.index, info.first, info.end, info.width) == (index, first, end, width)
            and info.confidence_dtype == confidence_dtype
            and self._verified(names["classes"], info.classes_sha256)
            and (
                confidence_dtype is None
                or self._verified(names["confidence"], info.confidence_sha256)
            )
        )
        if not usable:
            self.remove_part(index)
            return None
        return info

    @staticmethod
    def _verified(path: Path, sha256: str | None) -> bool:
        try:
            return sha256 is not None and file_sha256(path) == sha256
        except OSError:
            return False

    def open_rows(self, info: PartInfo, what: str) -> np.ndarray:
        """A part's classes or confidence as a read-only memory map (rows are read as they are
        written out, so the driver holds one strip, not the part)."""
        path = part_names(self.path, info.index)[what]
        dtype = info.classes_dtype if what == "classes" else info.confidence_dtype
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            problem = f"cannot read the part file {describe_path(path)} ({exc})"
            raise CrossEarthError(
                f"{problem}; run again without resume", code=PARTS_DAMAGED, problem=problem
            ) from None
        if array.shape != (info.end - info.first, info.width) or array.dtype.name != dtype:
            problem = (
                f"the part file {describe_path(path)} holds {array.shape} {array.dtype} instead "
                f"of {(info.end - info.first, info.width)} {dtype}"
            )
            raise CrossEarthError(
                f"{problem}; run again without resume", code=PARTS_DAMAGED, problem=problem
            )
        return array

    def remove_part(self, index: int) -> None:
        """Removes part `index`'s files, so the shard runs again."""
        for path in part_names(self.path, index).values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def remove_temporaries(self) -> None:
        """Temporaries of known names that killed workers left behind."""
        try:
            entries = list(self.path.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) and _is_known_name(entry.name):
                with contextlib.suppress(OSError):
                    entry.unlink()

    def remove(self) -> list[Path]:
        """Deletes the files this module writes, then the folder if it is then empty. Returns
        what was left (files it did not write, which are never touched)."""
        if not self.path.is_dir() or self.path.is_symlink():
            return []
        for entry in list(self.path.iterdir()):
            if _is_known_name(entry.name) and entry.is_file() and not entry.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
        left = self.unknown_entries()
        if not left:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)
        return left
