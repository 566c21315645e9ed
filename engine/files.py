"""File-system rules every writer follows: the tool replaces only what it made in this run.

- Every temporary file or folder is created beside its destination with one recognisable
  name that says which run made it (`.crossearth-tmp-<host>p<pid>-<random>-<name>`),
  registered for the run and announced to listeners (the CLI prints a JSON event, so the
  plugin can remove exactly these names after it had to kill a worker).
- A finished temporary is renamed into place with `publish` (`atomic_write` does both for a
  block that writes one file); every OS error on the way is a one-line CrossEarthError naming
  the file.
- `remove_run_temporaries` deletes whatever the run still has registered (errors, cancel).
- `remove_stale_temporaries` deletes leftovers older than a day of runs that are over (made
  on this machine by a process that no longer exists: a run killed with SIGKILL cannot clean
  up after itself). A run still going, another machine's run on a shared disk and anything
  not named exactly so (the user's files) are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from engine.error_codes import (
    OUTPUT_EXISTS,
    OUTPUT_IS_FOLDER,
    OUTPUT_OUTSIDE,
    OUTPUT_REPLACES_INPUT,
)
from engine.errors import CrossEarthError, OutputError

TEMP_PREFIX = ".crossearth-tmp-"
SCRATCH_PREFIX = "crossearth-scratch-"
STALE_AFTER_S = 24 * 3600

_listeners: list[Callable[[Path], None]] = []
_registered: dict[Path, bool] = {}  # temporary path -> is a folder
_lock = threading.Lock()


def give_ordinary_permissions(path: Path) -> None:
    """Temporary files and folders are created private (0600/0700); a finished output should
    get the permissions any new file gets under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def add_temporary_listener(listener: Callable[[Path], None]) -> None:
    """`listener(path)` is called for every temporary file or folder before it is written."""
    _listeners.append(listener)


def remove_temporary_listener(listener: Callable[[Path], None]) -> None:
    """Stops telling `listener` about new temporaries (a no-op if it was not added)."""
    with contextlib.suppress(ValueError):
        _listeners.remove(listener)


def _register(path: Path, is_dir: bool) -> Path:
    with _lock:
        _registered[path] = is_dir
    for listener in list(_listeners):
        listener(path)
    return path


def forget_temporary(path: Path) -> None:
    """The path is no longer the run's temporary (it was renamed into place or removed)."""
    with _lock:
        _registered.pop(Path(path), None)


def registered_temporaries() -> list[Path]:
    """The temporaries this run made and has not yet published or removed."""
    with _lock:
        return list(_registered)


# This machine, in the run mark of temporary names (a shared disk sees several machines' runs).
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_RUN_MARKED = re.compile(r"(?P<host>[0-9a-f]{6})p(?P<pid>[0-9]{1,10})-[0-9a-f]{8}-(?P<name>.+)")


def run_mark() -> str:
    """This run's mark in its temporaries' names: the machine and the process (asked each time:
    a forked worker is a run of its own)."""
    return f"{_HOST}p{os.getpid()}"


def temporary_name(destination: Path, suffix: str = "") -> Path:
    """A fresh hidden name beside `destination` (not created), marked with this run."""
    destination = Path(destination)
    token = secrets.token_hex(4)
    return destination.with_name(f"{TEMP_PREFIX}{run_mark()}-{token}-{destination.name}{suffix}")


def _marked(name: str, prefix: str) -> re.Match[str] | None:
    """The run mark of a temporary called `name` (host, pid, the destination's name)."""
    return _RUN_MARKED.fullmatch(name[len(prefix) :]) if name.startswith(prefix) else None


def temporary_target(name: str, prefix: str = TEMP_PREFIX) -> str | None:
    """The destination name a run-marked temporary's `name` stands for; None for any other name."""
    marked = _marked(name, prefix)
    return marked["name"] if marked else None


def _run_is_over(name: str, prefix: str) -> bool:
    """Whether `name` is a temporary of a run on this machine whose process is gone."""
    marked = _marked(name, prefix)
    if marked is None or marked["host"] != _HOST:
        return False
    pid = int(marked["pid"])
    if pid == os.getpid():
        return False  # this run's own: removed by remove_run_temporaries, not as stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False  # alive (another user's process) or not a pid this system has
    return False


def announce_temporary(path: Path, is_dir: bool = False) -> Path:
    """Registers a temporary a library (GDAL) will create itself, e.g. `<temp>.aux.xml`."""
    return _register(Path(path), is_dir)


def create_temporary_file(destination: Path, suffix: str = "") -> Path:
    """Creates an empty private temporary file beside `destination` and registers it."""

    def make(candidate: Path) -> None:
        os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    return _create_temporary(Path(destination), suffix, False, make)


def create_temporary_folder(destination: Path) -> Path:
    """Creates a private temporary folder beside `destination` and registers it."""
    return _create_temporary(Path(destination), "", True, lambda c: c.mkdir(mode=0o700))


def _create_temporary(
    destination: Path, suffix: str, is_dir: bool, make: Callable[[Path], None]
) -> Path:
    """A new temporary name beside `destination`, registered before `make` creates it (so a
    kill in between still finds it), retried while the name is taken."""
    for _ in range(100):
        candidate = temporary_name(destination, suffix)
        _register(candidate, is_dir)
        try:
            make(candidate)
        except FileExistsError:
            forget_temporary(candidate)
            continue
        except OSError as exc:
            forget_temporary(candidate)
            raise write_error(destination, exc) from None
        return candidate
    kind = "folder" if is_dir else "file"
    raise CrossEarthError(f"cannot create a temporary {kind} beside {destination}")


def create_scratch_folder() -> Path:
    """A private folder in the system temp dir for the run's intermediate files (VRTs)."""
    base = Path(tempfile.gettempdir())
    remove_stale_temporaries(base, prefix=SCRATCH_PREFIX)
    token = secrets.token_hex(4)
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{run_mark()}-{token}-"))
    return _register(path, True)


def remove_temporary(path: Path) -> None:
    """Removes one of the run's temporaries (file or folder); never raises."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    forget_temporary(path)


def remove_run_temporaries() -> list[Path]:
    """Removes every temporary the run still has (after an error or a cancel)."""
    leftovers = registered_temporaries()
    for path in leftovers:
        remove_temporary(path)
    return leftovers


def remove_stale_temporaries(
    folder: Path, prefix: str = TEMP_PREFIX, older_than_s: float = STALE_AFTER_S
) -> list[Path]:
    """Removes entries of `folder` that a run on this machine which is over left behind (its
    process gone: SIGKILL, power loss) and that were not modified for a day. Returns what was
    removed. Nothing else is touched: not a running job's, not another machine's, not a name
    that merely starts with `prefix`."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not _run_is_over(entry.name, prefix):
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if age < older_than_s:
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def publish(temp: Path, destination: Path) -> Path:
    """Renames a finished temporary into place (atomic on one file system)."""
    try:
        give_ordinary_permissions(temp)
        os.replace(temp, destination)
    except OSError as exc:
        raise write_error(destination, exc) from None
    forget_temporary(temp)
    return destination


@contextlib.contextmanager
def atomic_write(destination: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary file beside `destination` for the block to write: renamed into place when
    the block ends, removed when it fails (an OSError becomes the error naming `destination`),
    so a reader sees the old file or the whole new one, never a part."""
    temp = create_temporary_file(destination, suffix)
    try:
        try:
            yield temp
        except OSError as exc:
            raise write_error(destination, exc) from None
        publish(temp, destination)
    except BaseException:
        remove_temporary(temp)
        raise


def write_error(path: Path, exc: BaseException) -> CrossEarthError:
    """An OS or library write failure as one line naming the file and the fix."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "No space left" in str(exc):
        return CrossEarthError(
            f"the disk is full while writing {path}; free some space or choose another folder"
        )
    if code == errno.EDQUOT:
        return CrossEarthError(
            f"the disk quota is exceeded while writing {path}; free some space or choose "
            "another folder"
        )
    if code in (errno.EACCES, errno.EPERM) or "ermission denied" in str(exc):
        return CrossEarthError(
            f"permission denied writing {path}; choose a folder and file name you may write"
        )
    if code == errno.EROFS:
        return CrossEarthError(f"{path} is on a read-only file system; choose another folder")
    text = str(exc).strip()
    detail = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else "")
    detail = detail or type(exc).__name__
    if len(detail) > 120:  # a library's whole SQL statement says nothing more to the user
        detail = detail[:117] + "..."
    return CrossEarthError(f"cannot write {path} ({detail}); check the folder and free space")


def check_destination(
    path: Path | str, *, what: str, reads: Iterable[Path | str] = (), overwrite: bool = False
) -> Path:
    """`path` (absolute) once it is a place a run may write its `what` to: never a file the
    run reads (by real path and inode: links and '..' included), never a folder, and never an
    existing file unless `overwrite`. Raises a one-line OutputError otherwise."""
    target = Path(path).expanduser().absolute()
    for source in reads:
        if same_file(target, Path(source)):
            raise OutputError(
                f"the {what} {describe_path(target)} is {describe_path(source)}, which the run "
                "reads; choose another name so that it is not replaced",
                code=OUTPUT_REPLACES_INPUT,
                what=what,
                path=describe_path(target),
                source=describe_path(source),
            )
    if target.is_dir():
        raise OutputError(
            f"the {what} {describe_path(target)} is a folder; give a file name",
            code=OUTPUT_IS_FOLDER,
            what=what,
            path=describe_path(target),
        )
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputError(
            f"{what} {describe_path(target)} already exists; allow overwrite to replace it, or "
            "choose another name",
            code=OUTPUT_EXISTS,
            what=what,
            path=describe_path(target),
            option="overwrite",
        )
    return target


def child_path(folder: Path | str, name: str, what: str) -> Path:
    """`folder / name` for a `name` that must stay in `folder`: one plain folder or file name
    (not '', '.' or '..', no '/', '\\' or NUL). Raises a one-line OutputError otherwise."""
    plain = bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")
    if not plain:
        raise OutputError(
            f"the {what} name {name!r} would not be a plain name in {describe_path(folder)}; "
            "give a name without '/', '\\' or '..'",
            code=OUTPUT_OUTSIDE,
            what=what,
            name=name,
            folder=describe_path(folder),
        )
    return Path(folder) / name


def real_path(path: Path | str) -> Path:
    """The path with symlinks and '..' resolved (as far as it exists)."""
    return Path(os.path.realpath(os.fspath(Path(path).expanduser().absolute())))


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file: equal real paths, or one inode (hard links)."""
    if real_path(a) == real_path(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies anywhere below it (real paths)."""
    path, folder = real_path(path), real_path(folder)
    return path == folder or folder in path.parents


def describe_path(path: Path | str) -> str:
    """A path for a message, also when it is not valid UTF-8."""
    return os.fsdecode(os.fsencode(path)).encode("utf-8", "backslashreplace").decode("utf-8")


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """The SHA-256 of a file in hex, read in 4 MiB chunks; `on_bytes(done)` after each chunk
    (progress of large downloads)."""
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(done)
    return digest.hexdigest()
