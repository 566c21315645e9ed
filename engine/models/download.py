"""`crossearth download NAME`: fetch a released CrossEarth checkpoint and install it as a package.

huggingface_hub does the transfer: its cache ($HF_HOME/hub, or $HF_HUB_CACHE), its endpoint
($HF_ENDPOINT), offline mode ($HF_HUB_OFFLINE), proxies (HTTPS_PROXY, ...) and tokens
($HF_TOKEN or `hf auth login`) apply unchanged, and an interrupted transfer is resumed with
HTTP range requests within the run. What this module adds:

- the free disk space is checked before any byte is downloaded (the files still missing from
  the cache, plus the package to write, with a margin);
- every file is checked against its SHA-256 (the catalog's, else the digest the Hub sends for
  LFS files), because huggingface_hub checks only the size of a plain HTTP download; a file
  that does not match is deleted when this run fetched it;
- the checkpoint is converted into a package in the user models folder (named like the model);
- the files this run fetched into the cache are deleted afterwards (also after an error or a
  cancel) unless `--keep-checkpoint`; files that were in the cache before are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.error_codes import MODEL_INSTALLED
from engine.errors import CrossEarthError, OutputError
from engine.files import child_path, describe_path, file_sha256, write_error
from engine.models.catalog import CatalogEntry, HubFile, find_entry, format_size, load_catalog
from engine.models.packages import (
    ModelPackage,
    check_package_output,
    replace_problem,
    user_models_dir,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Room kept free beyond the files themselves: the cache's bookkeeping, the card, the file
# system's own reserve, and sizes the catalog knows only to the Hub's rounding.
MARGIN_FRACTION = 0.05
MARGIN_BYTES = 64 * 1024 * 1024
# Fractions of the progress bar: download, SHA-256 check, conversion.
DOWNLOAD_END, CHECK_END = 0.75, 0.85


@dataclass
class DownloadReport:
    entry: CatalogEntry
    package: ModelPackage
    downloaded: list[Path] = field(default_factory=list)  # fetched by this run
    downloaded_bytes: int = 0
    removed: list[Path] = field(default_factory=list)  # of those, deleted again
    kept: list[Path] = field(default_factory=list)  # in the cache after the run
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Fetched:
    """What one hf_hub_download added to the cache: its snapshot entry and its blob (None
    when the blob was there before, for another revision)."""

    pointer: Path
    blob: Path | None
    size: int


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.file_download
    except ImportError as exc:
        from importlib.util import find_spec

        if find_spec("torch") is None:
            raise  # a Light environment: the CLI says that downloads need the Full engine
        raise CrossEarthError(
            "downloading needs the Python package huggingface_hub, which the engine environment "
            "lacks; install it (pip install 'huggingface_hub>=2.4') or set up the engine "
            "environment again"
        ) from exc
    return huggingface_hub


def hub_cache_dir() -> Path:
    """The Hugging Face cache huggingface_hub uses ($HF_HUB_CACHE, else $HF_HOME/hub)."""
    return Path(_hub().constants.HF_HUB_CACHE).expanduser()


# --- disk space --------------------------------------------------------------------------


def _existing_parent(folder: Path) -> Path:
    folder = Path(folder).expanduser().absolute()
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return Path(folder.anchor or os.sep)


def check_free_space(needs: list[tuple[Path, int, str]]) -> None:
    """Refuses, in one line, when a disk lacks room for what will be written on it. `needs`
    holds (folder, bytes, what) triples; folders on one file system are added up."""
    groups: dict[int, list[tuple[Path, int, str]]] = {}
    roots: dict[int, Path] = {}
    for folder, size, what in needs:
        if size <= 0:
            continue
        root = _existing_parent(folder)
        try:
            device = os.stat(root).st_dev
        except OSError:
            continue
        groups.setdefault(device, []).append((folder, size, what))
        roots.setdefault(device, root)
    for device, items in groups.items():
        try:
            free = shutil.disk_usage(roots[device]).free
        except OSError:
            continue  # cannot be measured: the write itself reports a full disk
        total = sum(size for _, size, _ in items)
        required = int(total * (1 + MARGIN_FRACTION)) + MARGIN_BYTES
        if free >= required:
            continue
        parts = " + ".join(f"{format_size(size)} {what}" for _, size, what in items)
        raise CrossEarthError(
            f"not enough free disk space: {parts} need about {format_size(required)} on the "
            f"disk of {describe_path(items[0][0])}, which has {format_size(free)} free; free some "
            "space, or point HF_HOME (the download cache) or CROSSEARTH_MODELS_DIR (the models "
            "folder) at another disk"
        )


# --- progress ----------------------------------------------------------------------------


class _Reporter:
    """Turns byte counts into progress events, at most a few per second."""

    def __init__(self, progress: ProgressCallback, total_bytes: int) -> None:
        self.progress = progress
        self.total = max(1, total_bytes)
        self.before = 0  # bytes of the files finished earlier in this run
        self.last = (-1.0, 0.0)

    def bytes_done(self, filename: str, done: int, size: int | None) -> None:
        fraction = DOWNLOAD_END * min(1.0, (self.before + max(0, done)) / self.total)
        now = time.monotonic()
        last_fraction, last_time = self.last
        if fraction - last_fraction < 0.005 and now - last_time < 0.5 and done != size:
            return
        self.last = (fraction, now)
        of = f" of {format_size(size)}" if size else ""
        self.progress(fraction, f"downloading {filename}: {format_size(max(0, done))}{of}")


def _tqdm_class(report: Callable[[int, int | None], None]) -> type:
    """A tqdm class for huggingface_hub's `tqdm_class` hook: it shows nothing and reports the
    bytes received (also when the library resumes and rolls its counter back)."""
    from tqdm import tqdm

    class _Bytes(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._bytes = int(kwargs.get("initial") or 0)
            self._size = kwargs.get("total")
            report(self._bytes, self._size)

        def update(self, n: float | None = 1) -> bool | None:
            self._bytes += int(n or 0)
            report(self._bytes, self._size)
            return True

        # With these, huggingface_hub's Xet transfers use this one bar for the file's bytes
        # (its "aggregated" mode) instead of a second bar counting compressed transfer bytes.
        def update_transfer(self, n: float | None = 1) -> None:
            pass

        def set_transfer_postfix_str(self, text: str = "", refresh: bool = True) -> None:
            pass

    return _Bytes


# --- errors ------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def hub_error(exc: BaseException, file: HubFile) -> CrossEarthError:
    """A huggingface_hub or network failure as one line naming the file and the fix."""
    hub = _hub()
    errors = hub.errors
    import httpx2

    what = f"{file.filename} from {file.repo}"
    endpoint = hub.constants.ENDPOINT
    chain = list(_chain(exc))
    if any(isinstance(e, errors.OfflineModeIsEnabled) for e in chain) or (
        isinstance(exc, errors.LocalEntryNotFoundError) and hub.constants.is_offline_mode()
    ):
        return CrossEarthError(
            f"cannot download {what}: offline and not in the cache; connect or set HF_HUB_OFFLINE=0"
        )
    for error in chain:
        status = _status(error)
        if isinstance(error, errors.RevisionNotFoundError):
            return CrossEarthError(
                f"revision {file.revision} of {file.repo} was not found on {endpoint} "
                f"(HTTP {status}); the catalog is out of date: update CrossEarth for QGIS"
            )
        if isinstance(error, errors.RemoteEntryNotFoundError) or (
            status == 404 and not isinstance(error, errors.RepositoryNotFoundError)
        ):
            return CrossEarthError(
                f"{file.filename} was not found in the Hugging Face repository {file.repo} "
                f"(revision {file.revision}, HTTP 404 from {endpoint}); the catalog is out of "
                "date or HF_ENDPOINT points at a mirror without it"
            )
        if isinstance(error, errors.RepositoryNotFoundError) or status in (401, 403):
            return CrossEarthError(
                f"{endpoint} refused access to {what} (HTTP {status}): the repository is "
                "missing, private or gated; if it needs a token, set HF_TOKEN or run "
                "'hf auth login'"
            )
        if isinstance(error, errors.HfHubHTTPError) and status is not None:
            return CrossEarthError(f"{endpoint} answered HTTP {status} for {what}; try again later")
        if isinstance(error, errors.FileMetadataError):
            return CrossEarthError(
                f"{endpoint} does not answer like the Hugging Face Hub for {what} (no commit or "
                "ETag header); check HF_ENDPOINT and the proxy settings"
            )
        if isinstance(error, httpx2.ProxyError):
            return CrossEarthError(
                f"the proxy refused the connection to {endpoint} for {what} ({error}); check "
                "HTTPS_PROXY / HTTP_PROXY"
            )
        if isinstance(error, OSError) and "Consistency check failed" in str(error):
            return CrossEarthError(
                f"the download of {what} ended early (fewer bytes than the Hub announced); "
                "try again"
            )
        if isinstance(error, OSError) and error.errno in (
            errno.ENOSPC,
            errno.EDQUOT,
            errno.EACCES,
            errno.EPERM,
            errno.EROFS,
        ):
            return write_error(hub_cache_dir(), error)
    # No answer from the server at all (checked last: the library wraps HTTP errors too).
    transport = next((e for e in chain if isinstance(e, httpx2.TransportError)), None)
    if transport is not None or isinstance(exc, errors.LocalEntryNotFoundError):
        detail = str(transport).strip().splitlines()[0] if transport and str(transport) else ""
        return CrossEarthError(
            f"cannot reach {endpoint} to download {what}"
            + (f" ({detail[:160]})" if detail else "")
            + "; check the connection and proxy settings (HTTPS_PROXY), or set HF_ENDPOINT "
            "to a mirror"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CrossEarthError(f"downloading {what} failed: {first[:200]}")


# --- the cache ---------------------------------------------------------------------------


def _cached(hub: Any, file: HubFile) -> Path | None:
    """The file's path in the cache when it is there (no network)."""
    found = hub.try_to_load_from_cache(file.repo, file.filename, revision=file.revision)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _blobs_dir(hub: Any, file: HubFile) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    folder = repo_folder_name(repo_id=file.repo, repo_type="model")
    return hub_cache_dir() / folder / "blobs"


def _listing(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _remove_fetched(fetched: _Fetched) -> list[Path]:
    """Deletes what one download added to the cache; never raises."""
    removed = []
    for path in (fetched.pointer, fetched.blob):
        if path is None:
            continue
        with contextlib.suppress(OSError):
            if os.path.lexists(path):
                os.unlink(path)
                removed.append(path)
    return removed


def _expected_sha256(file: HubFile, path: Path) -> str | None:
    """The catalog's digest, else the Hub's: an LFS blob is stored under its SHA-256 ETag."""
    if file.sha256:
        return file.sha256
    blob = Path(os.path.realpath(path)).name
    return blob if _SHA256.fullmatch(blob) else None


# --- download ----------------------------------------------------------------------------


def download(
    name: str,
    *,
    keep_checkpoint: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    catalog: list[CatalogEntry] | None = None,
) -> DownloadReport:
    """Downloads the named catalog model and installs it in the user models folder."""
    report = progress or (lambda fraction, message: None)
    entry = find_entry(name, load_catalog() if catalog is None else catalog)
    models_dir = user_models_dir()
    destination = _destination(entry, models_dir, overwrite)
    hub = _hub()
    files = entry.files
    cached = {f.filename: _cached(hub, f) for f in files}
    missing = [f for f in files if cached[f.filename] is None]
    if missing and hub.constants.is_offline_mode():
        raise hub_error(hub.errors.OfflineModeIsEnabled("offline"), missing[0])
    sizes = {f.filename: f.size if f.size is not None else _remote_size(hub, f) for f in files}
    package_size = sum(sizes.values())
    check_free_space(
        [
            (hub_cache_dir(), sum(sizes[f.filename] for f in missing), "of downloads"),
            (models_dir, package_size, "for the package"),
        ]
    )
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(models_dir, exc) from None

    reporter = _Reporter(report, sum(sizes[f.filename] for f in missing))
    fetched: list[_Fetched] = []
    result = DownloadReport(entry, package=None)  # type: ignore[arg-type]
    paths: dict[str, Path] = {}
    try:
        for file in files:
            paths[file.filename] = _fetch(hub, file, cached[file.filename], reporter, fetched)
            reporter.before += sizes[file.filename] if cached[file.filename] is None else 0
        _verify_all(files, paths, fetched, report, result.warnings)
        conversion = _install(entry, paths, destination, overwrite, report)
        result.package = conversion.package
        result.warnings += conversion.warnings
    finally:
        # Also after an error or a cancel: what this run fetched goes unless it is to be kept.
        result.downloaded = [f.pointer for f in fetched]
        result.downloaded_bytes = sum(f.size for f in fetched)
        if not keep_checkpoint:
            for item in fetched:
                result.removed += _remove_fetched(item)
        present = [*cached.values(), *result.downloaded]
        result.kept = [p for p in present if p is not None and os.path.lexists(p)]
    return result


def _destination(entry: CatalogEntry, models_dir: Path, overwrite: bool) -> Path:
    """The package folder the download installs into, checked before anything is fetched."""
    if not entry.downloadable:
        raise CrossEarthError(
            f"'{entry.name}' has no released checkpoint yet ({entry.preset.description}); it "
            "cannot be downloaded"
        )
    destination = child_path(models_dir, entry.name, "model package")
    if os.path.lexists(destination) and not overwrite and replace_problem(destination) is None:
        raise OutputError(
            f"'{entry.name}' is already installed in {describe_path(models_dir)}; allow "
            "overwrite to replace it with a new download",
            code=MODEL_INSTALLED,
            name=entry.name,
            folder=describe_path(models_dir),
            option="overwrite",
        )
    return check_package_output(destination, overwrite=overwrite, choose="rename it")


def _verify_all(
    files: Any,
    paths: dict[str, Path],
    fetched: list[_Fetched],
    report: ProgressCallback,
    warnings: list[str],
) -> None:
    """Checks every file's SHA-256, with progress over their bytes."""
    checked = 0
    total = max(1, sum(os.path.getsize(p) for p in paths.values()))
    for file in files:
        path = paths[file.filename]
        ours = next((f for f in fetched if f.pointer == path), None)
        base = checked

        def hashing(done: int, file: HubFile = file, base: int = base) -> None:
            fraction = DOWNLOAD_END + (CHECK_END - DOWNLOAD_END) * (base + done) / total
            report(fraction, f"checking {file.filename} (SHA-256)")

        _verify(file, path, ours, hashing, warnings)
        checked += os.path.getsize(path)


def _install(
    entry: CatalogEntry,
    paths: dict[str, Path],
    destination: Path,
    overwrite: bool,
    report: ProgressCallback,
) -> Any:
    """Converts the verified checkpoint into the package (engine/crossearth/convert.py)."""
    from engine.crossearth.convert import convert

    checkpoint = entry.checkpoint
    assert checkpoint is not None
    return convert(
        paths[checkpoint.filename],
        destination,
        preset=entry.preset,
        backbone=paths[entry.backbone.filename] if entry.backbone else None,
        name=entry.name,
        overwrite=overwrite,
        progress=lambda f, m: report(CHECK_END + (1 - CHECK_END) * f, m),
        provenance={
            "source": checkpoint.source,
            "backbone_source": entry.backbone.source if entry.backbone else None,
            "downloaded_by": "crossearth download",
        },
    )


def _remote_size(hub: Any, file: HubFile) -> int:
    """The file's size from the Hub (a HEAD request, no download) when the catalog lacks it."""
    try:
        info = hub.hf_hub_download(file.repo, file.filename, revision=file.revision, dry_run=True)
    except Exception as exc:
        raise hub_error(exc, file) from None
    return int(info.file_size or 0)


def _fetch(
    hub: Any,
    file: HubFile,
    cached: Path | None,
    reporter: _Reporter,
    fetched: list[_Fetched],
) -> Path:
    """The file from the cache, or downloaded into it (recorded in `fetched`)."""
    if cached is not None:
        log.info("%s is in the cache: %s", file.filename, cached)
        return cached
    blobs = _blobs_dir(hub, file)
    blobs_before = _listing(blobs)
    tqdm_class = _tqdm_class(lambda done, size: reporter.bytes_done(file.filename, done, size))
    reporter.bytes_done(file.filename, 0, file.size)
    try:
        found = hub.hf_hub_download(
            file.repo, file.filename, revision=file.revision, tqdm_class=tqdm_class
        )
    except Exception as exc:
        # The library removes its partial file itself; a blob it completed before failing
        # (moved into place, no snapshot entry yet) is this run's and goes too.
        if file.sha256 and file.sha256 in _listing(blobs) - blobs_before:
            with contextlib.suppress(OSError):
                (blobs / file.sha256).unlink()
        raise hub_error(exc, file) from None
    pointer = Path(found)
    blob = Path(os.path.realpath(pointer))
    new_blob = blob if blob != pointer and blob.name not in blobs_before else None
    fetched.append(_Fetched(pointer, new_blob, os.path.getsize(pointer)))
    return pointer


def _verify(
    file: HubFile,
    path: Path,
    ours: _Fetched | None,
    on_bytes: Callable[[int], None],
    warnings: list[str],
) -> None:
    expected = _expected_sha256(file, path)
    if expected is None:
        warnings.append(
            f"{file.filename}: no SHA-256 is published for it, so only its size was checked"
        )
        return
    actual = file_sha256(path, on_bytes)
    if actual == expected:
        return
    if ours is not None:
        _remove_fetched(ours)
        raise CrossEarthError(
            f"the download of {file.filename} from {file.repo} is damaged: its SHA-256 is "
            f"{actual[:12]}..., the published one {expected[:12]}...; it was deleted and nothing "
            "was installed; try again (if it fails again, the server or a proxy alters it)"
        )
    raise CrossEarthError(
        f"the copy of {file.filename} in the Hugging Face cache ({describe_path(path)}) does not "
        f"match its published SHA-256 ({expected[:12]}...); delete it (hf cache delete) and "
        "download again"
    )


def download_summary(result: DownloadReport) -> dict[str, Any]:
    """The `done` event of `download --progress json`."""
    card = result.package.card
    return {
        "name": result.entry.name,
        "package": str(result.package.path),
        "classes": card.class_names,
        "bands": list(card.input.bands),
        "downloaded": [str(p) for p in result.downloaded],
        "removed": [str(p) for p in result.removed],
        "kept": [str(p) for p in result.kept],
        "warnings": result.warnings,
    }
