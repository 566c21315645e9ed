"""Running engine commands as worker processes: JSON progress, ETA, cancel, plain errors.

`run_engine` is the one place that starts `<engine python> -m engine.cli ...` and interprets
what comes back; `EngineTask` runs it as a QgsTask (the dock), and
processing/engine_run.py drives it from a QgsProcessingFeedback (the algorithms).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .engine_env import (
    SETUP_HINT,
    EngineEnvironmentError,
    Interpreter,
    engine_command,
    missing_modules,
    resolve_interpreter,
    worker_directory,
    worker_environment,
)
from .process import TERMINATE_GRACE_S, ProcessCancelled, run_streaming

log = logging.getLogger("crossearth_qgis.worker")

# The names the engine gives its temporaries (engine/files.py TEMP_PREFIX beside a destination,
# SCRATCH_PREFIX in the system temp folder); repeated here because the plugin never imports
# the engine. Only announced paths with these names are ever removed by the plugin.
TEMP_PREFIX = ".crossearth-tmp-"
SCRATCH_PREFIX = "crossearth-scratch-"

ProgressCallback = Callable[[float, str], None]


class EngineError(Exception):
    """The worker reported a problem. `str()` is one plain sentence; `details` has stderr."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class EngineCancelled(EngineError):
    def __init__(self, message: str = "Cancelled; no output was written.") -> None:
        super().__init__(message)


@dataclass
class EngineOutcome:
    done: dict[str, Any] | None  # the final JSON event of `segment --progress json`
    stdout: list[str] = field(default_factory=list)  # the other stdout lines
    stderr: list[str] = field(default_factory=list)

    def json(self) -> Any:
        """stdout parsed as one JSON document (`models --json`, `check --json`, `info`)."""
        try:
            return json.loads("\n".join(self.stdout))
        except ValueError:
            raise EngineError(
                "The CrossEarth worker answered with something other than JSON; the engine "
                "code and the plugin may be from different versions.",
                "\n".join(self.stdout + self.stderr),
            ) from None

    @property
    def warnings(self) -> list[str]:
        listed = list(self.done.get("warnings", [])) if self.done else []
        printed = [line[len("warning: ") :] for line in self.stdout if line.startswith("warning: ")]
        return listed + printed


# Command-line words in engine messages, said the way the dock and the algorithms name them.
_CLI_WORDS = [
    (re.compile(r"pass --bands(, e\.g\.)? --bands ([\d,]+)"), r"set Bands to \2"),
    (re.compile(r"--bands"), "Bands"),
    (re.compile(r"use --device (\w+) or (\w+)"), r"choose the device \1 or \2"),
    (re.compile(r"--device"), "the device"),
    (re.compile(r"pass --model with"), "choose"),
    (re.compile(r"--model"), "the model"),
    (re.compile(r"--tile"), "the tile size"),
    (re.compile(r"--overlap"), "the overlap"),
    (re.compile(r"--batch"), "the batch size"),
    (re.compile(r"--workers"), "Workers"),
    (re.compile(r"--cluster"), "the cluster address"),
    (re.compile(r"--backbone"), "the backbone file"),
    (re.compile(r"--mmseg-config"), "an mmseg config"),
    (re.compile(r"--preset"), "a preset"),
    (re.compile(r"--classes"), "class names"),
    (re.compile(r"\(see 'crossearth models'\)"), "(see the model list)"),
    (re.compile(r"\(see 'crossearth models --available'\)"), "(see the model list)"),
    (re.compile(r"choose another --output"), "choose another output folder"),
    (re.compile(r"pass --overwrite( to replace it)?"), "confirm replacing it"),
]


def plain(message: str) -> str:
    """An engine message as a sentence for the analyst: no command-line flags."""
    text = message.strip()
    if text.startswith("crossearth: "):
        text = text[len("crossearth: ") :]
    for pattern, replacement in _CLI_WORDS:
        text = pattern.sub(replacement, text)
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    if text and text[-1] not in ".!?":
        text += "."
    return text


def _failure(code: int, stderr: list[str], interpreter: Interpreter) -> EngineError:
    details = "\n".join(stderr)
    first_missing = re.search(r"No module named '([\w.]+)'", details)
    if first_missing and first_missing.group(1).split(".")[0] == "engine":
        return EngineError(
            f"The plugin's engine code could not be imported from {worker_directory()}; "
            "reinstall the plugin from its zip file.",
            details,
        )
    if first_missing:
        # Name everything that is missing, not only the first import that failed.
        try:
            missing = missing_modules(interpreter.python) or [first_missing.group(1)]
        except EngineEnvironmentError:
            missing = [first_missing.group(1)]
        names = ", ".join(f"'{name.split('.')[0]}'" for name in missing)
        return EngineError(
            f"The CrossEarth engine environment is missing: {interpreter.describe()} has no "
            f"Python module {names}. To fix it, {SETUP_HINT}.",
            details,
        )
    if code < 0:  # killed by a signal, e.g. the kernel's out-of-memory killer
        return EngineError(
            f"The CrossEarth worker was stopped by the system (signal {abs(code)}), most often "
            "because memory ran out; try a smaller tile size or batch size.",
            details,
        )
    last = next((line for line in reversed(stderr) if line.strip()), "no message")
    return EngineError(
        f"The CrossEarth worker stopped unexpectedly (exit code {code}): {last.strip()}", details
    )


def _is_engine_temporary(path: Path) -> bool:
    """An absolute path named the way engine/files.py names its temporaries."""
    if not path.is_absolute():
        return False
    if path.name.startswith(TEMP_PREFIX) and len(path.name) > len(TEMP_PREFIX):
        return True
    scratch_root = Path(os.path.realpath(tempfile.gettempdir()))
    return path.name.startswith(SCRATCH_PREFIX) and (
        Path(os.path.realpath(path.parent)) == scratch_root
    )


def remove_announced_temporaries(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Deletes the temporaries a worker announced and left behind; returns what it removed.

    A worker that is terminated removes its temporaries itself; one that was killed (after the
    grace period, by the system, or any cancel on Windows, where terminate is a kill) cannot.
    Exactly the announced paths go, and only those named like engine temporaries: nothing is
    matched by pattern, so a file beside the output that merely looks similar is never touched.
    A link is removed itself, never what it points to.
    """
    removed: list[Path] = []
    for announced in dict.fromkeys(os.fspath(p) for p in paths):  # once each, in order
        path = Path(announced)
        if not _is_engine_temporary(path):
            log.warning("not removing %s: not named like an engine temporary", announced)
            continue
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue  # already gone: renamed into place or removed by the worker
        try:
            if stat.S_ISDIR(mode):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("could not remove the worker's temporary %s: %s", announced, exc)
            continue
        removed.append(path)
    return removed


def run_engine(
    args: Sequence[str],
    *,
    interpreter: Interpreter | None = None,
    on_progress: ProgressCallback | None = None,
    on_log: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    timeout_s: float | None = None,
    terminate_grace_s: float = TERMINATE_GRACE_S,
) -> EngineOutcome:
    """Runs one engine command in a worker process and waits for it.

    Progress events go to `on_progress(fraction, message)`, stderr lines to `on_log`. Raises
    EngineEnvironmentError (no usable interpreter), EngineCancelled (is_cancelled() became
    true; the worker was stopped), or EngineError. Whenever the worker did not finish, the
    temporaries it announced (`{"event": "temporary"}`, `--progress json`) and left behind
    are removed, so no partial file remains even after a kill.
    """
    interpreter = interpreter or resolve_interpreter()
    command = engine_command(interpreter.python, list(args))
    env = worker_environment()
    outcome = EngineOutcome(done=None)
    reported: dict[str, str] = {}
    temporaries: list[str] = []

    def stdout_line(line: str) -> None:
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "event" in event:
                kind = event["event"]
                if kind == "progress" and on_progress is not None:
                    on_progress(float(event.get("fraction", 0.0)), str(event.get("message", "")))
                elif kind == "done":
                    outcome.done = event
                elif kind == "temporary" and isinstance(event.get("path"), str):
                    temporaries.append(event["path"])
                elif kind in ("error", "cancelled"):
                    reported[kind] = str(event.get("message", ""))
                return
        outcome.stdout.append(line)

    def stderr_line(line: str) -> None:
        outcome.stderr.append(line)
        if on_log is not None and line.strip():
            on_log(line)

    log.info("running %s", " ".join(command))
    code: int | None = None
    try:
        code = run_streaming(
            command,
            env=env,
            cwd=worker_directory(),
            on_stdout=stdout_line,
            on_stderr=stderr_line,
            is_cancelled=is_cancelled,
            timeout_s=timeout_s,
            terminate_grace_s=terminate_grace_s,
        )
    except ProcessCancelled:
        raise EngineCancelled() from None
    except TimeoutError as exc:
        raise EngineError(f"The CrossEarth worker did not answer in time ({exc}).") from None
    except OSError as exc:
        raise EngineEnvironmentError(
            f"The CrossEarth engine environment is missing: {interpreter.describe()} cannot be "
            f"started ({exc.strerror or exc}). To fix it, {SETUP_HINT}."
        ) from None
    finally:
        # The worker has exited here (run_streaming never leaves one running). A worker that
        # stopped on an error removed its temporaries itself; one that was killed did not.
        if code != 0 and temporaries:
            remove_announced_temporaries(temporaries)
    details = "\n".join(outcome.stderr)
    if code == 0:
        return outcome
    if code == 130 or "cancelled" in reported:
        raise EngineCancelled()
    if code == 2:
        raise EngineError(plain(_error_line(reported, outcome.stderr)), details)
    raise _failure(code, outcome.stderr, interpreter)


def _error_line(reported: dict[str, str], stderr: list[str]) -> str:
    """The engine's one-line error: its JSON event, its "crossearth: ..." line on stderr, or
    argparse's "crossearth segment: error: ..." (usage errors also exit with 2)."""
    if reported.get("error"):
        return reported["error"]
    for line in reversed(stderr):
        if line.startswith("crossearth: "):
            return line
    for line in reversed(stderr):
        if "error:" in line:
            return line.split("error:", 1)[1]
    return "\n".join(stderr) or "the worker gave no reason"


def run_engine_json(
    args: Sequence[str], interpreter: Interpreter | None = None, timeout_s: float = 300.0
) -> Any:
    """A quick engine command whose answer is JSON on stdout (models, check, info)."""
    return run_engine(args, interpreter=interpreter, timeout_s=timeout_s).json()


def _absolute(path: str) -> str:
    # The worker runs in the engine's folder (see engine_env.worker_directory), not in ours.
    return str(Path(path).expanduser().absolute())


def _if_local(source: str) -> str:
    """A file or folder that exists here, made absolute; GDAL connection strings, /vsi paths
    and model names pass unchanged."""
    path = Path(source).expanduser()
    return str(path.absolute()) if path.exists() else source


def _positional(source: str) -> str:
    """A positional argument as `_if_local`, but never starting with '-' (argparse would read
    it as an option): such a name can only be a file name, so it is made absolute."""
    value = _if_local(source)
    return _absolute(value) if value.startswith("-") else value


def _option(name: str, value: object) -> str:
    """One "--name=value" token. Given as two words, a value that starts with '-' (a negative
    coordinate west of Greenwich, "-9999=ignore", a class named "-x") is read as an option."""
    return f"--{name}={value}"


@dataclass
class SegmentRequest:
    """One segmentation job; `args()` is its command line for the worker."""

    input: str
    output: str
    model: str = ""  # package path or installed name; "" = the bundled default
    device: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch: int = 4
    bands: list[int] | None = None
    confidence: str | None = None
    polygons: str | None = None
    extent: tuple[float, float, float, float] | None = None  # in the raster's CRS
    # Processing resolution: "auto", "native" or metres ("0.5"); None = the engine's default.
    gsd: str | None = None
    output_grid: str | None = None  # "source" or "model"; None = the engine's default
    min_region: str | None = None  # sieve size: "12" pixels, "2000m2" or "1.5ha"
    keep_classes: list[str] | None = None  # classes whose small regions stay
    simplify: float | None = None  # polygon simplification tolerance in metres
    # Sharded on Ray: a number of model workers or "auto"; None = one process (no Ray).
    workers: str | None = None
    cluster: str | None = None  # a Ray cluster's address ("auto", "ray://host:port"); None = local
    # Replace existing outputs: only when the analyst confirmed it (the engine refuses else).
    overwrite: bool = False

    def args(self) -> list[str]:
        args = ["segment", _positional(self.input), _absolute(self.output)]
        args.append(_option("progress", "json"))
        if self.model:
            args.append(_option("model", _if_local(self.model)))
        args += [_option("device", self.device or "auto"), _option("batch", self.batch)]
        if self.tile:
            args.append(_option("tile", self.tile))
        if self.overlap is not None:
            args.append(_option("overlap", self.overlap))
        if self.bands:
            args.append(_option("bands", ",".join(str(b) for b in self.bands)))
        if self.confidence:
            args.append(_option("confidence", _absolute(self.confidence)))
        if self.polygons:
            args.append(_option("polygons", _absolute(self.polygons)))
        if self.extent is not None:
            args.append(_option("extent", ",".join(repr(float(v)) for v in self.extent)))
        if self.gsd:
            args.append(_option("gsd", self.gsd))
        if self.output_grid:
            args.append(_option("output-grid", self.output_grid))
        if self.min_region:
            args.append(_option("min-region", self.min_region))
        if self.keep_classes:
            args.append(_option("keep-classes", ",".join(self.keep_classes)))
        if self.simplify:
            args.append(_option("simplify", f"{float(self.simplify):g}"))
        if self.workers:
            args.append(_option("workers", self.workers))
        if self.cluster:
            args.append(_option("cluster", self.cluster))
        if self.overwrite:
            args.append("--overwrite")
        return args

    def outputs(self) -> list[Path]:
        return [Path(p) for p in (self.output, self.confidence, self.polygons) if p]


@dataclass
class ConvertRequest:
    """Converting an official checkpoint (.pth) into a model package folder."""

    checkpoint: str
    output: str  # the package folder to create
    preset: str | None = None
    mmseg_config: str | None = None
    backbone: str | None = None
    name: str | None = None
    classes: list[str] | None = None
    dtype: str = "float32"
    overwrite: bool = False  # replace a package at `output` (confirmed by the analyst)

    def args(self) -> list[str]:
        args = ["convert", _positional(self.checkpoint), _absolute(self.output)]
        # JSON progress also announces the temporary package folder (removed after a kill).
        args.append(_option("progress", "json"))
        args.append(_option("dtype", self.dtype))
        if self.preset:
            args.append(_option("preset", self.preset))
        if self.mmseg_config:
            args.append(_option("mmseg-config", _if_local(self.mmseg_config)))
        if self.backbone:
            args.append(_option("backbone", _if_local(self.backbone)))
        if self.name:
            args.append(_option("name", self.name))
        if self.classes:
            args.append(_option("classes", ",".join(self.classes)))
        if self.overwrite:
            args.append("--overwrite")
        return args


@dataclass
class DownloadRequest:
    """Downloading an official model (`crossearth download`) into the user models folder."""

    name: str  # a catalog name, e.g. potsdam-r-source
    keep_checkpoint: bool = False  # keep the .pth in the Hugging Face cache
    overwrite: bool = False  # replace the installed package of that name (confirmed)

    def args(self) -> list[str]:
        # JSON progress also announces the temporary package folder (removed after a kill).
        args = ["download", _option("progress", "json")]
        if self.keep_checkpoint:
            args.append("--keep-checkpoint")
        if self.overwrite:
            args.append("--overwrite")
        return [*args, "--", self.name]


@dataclass
class FineTuneRequest:
    """Fine-tuning a model package on local labels (`crossearth train`)."""

    image: str
    output: str  # the package folder to write
    base: str = ""  # model package path or installed name; "" = the bundled default
    labels: str | None = None  # a label raster ...
    polygons: str | None = None  # ... or polygons with class_field
    class_field: str | None = None
    mask: str | None = None  # labelled area
    classes: list[str] | None = None
    label_map: str | None = None  # "1=forest,2=water,9=ignore"
    bands: list[int] | None = None
    mode: str = "reins"
    steps: int = 1000
    batch: int = 4
    lr: float = 1e-4
    window: int | None = None
    val_fraction: float = 0.2
    device: str = "auto"
    name: str | None = None
    overwrite: bool = False  # replace a package at `output` (confirmed by the analyst)

    def args(self) -> list[str]:
        args = ["train", _option("image", _if_local(self.image))]
        args.append(_option("output", _absolute(self.output)))
        if self.base:
            args.append(_option("base", _if_local(self.base)))
        if self.labels:
            args.append(_option("labels", _if_local(self.labels)))
        if self.polygons:
            args.append(_option("polygons", _if_local(self.polygons)))
            args.append(_option("class-field", self.class_field or ""))
        if self.mask:
            args.append(_option("mask", _if_local(self.mask)))
        if self.classes:
            args.append(_option("classes", ",".join(self.classes)))
        if self.label_map:
            args.append(_option("label-map", self.label_map))
        if self.bands:
            args.append(_option("bands", ",".join(str(b) for b in self.bands)))
        if self.window:
            args.append(_option("window", self.window))
        if self.name:
            args.append(_option("name", self.name))
        args += [_option("mode", self.mode), _option("steps", self.steps)]
        args += [_option("batch", self.batch), _option("lr", repr(float(self.lr)))]
        args.append(_option("val-fraction", repr(float(self.val_fraction))))
        args += [_option("device", self.device or "auto"), _option("progress", "json")]
        if self.overwrite:
            args.append("--overwrite")
        return args


class EtaEstimator:
    """Time left from the progress fractions, measured from the first tile on.

    Loading the model happens at fraction 0 and says nothing about the speed, so the clock
    starts at the first event with a fraction above zero.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start: tuple[float, float] | None = None

    def update(self, fraction: float) -> float | None:
        now = self._clock()
        if fraction <= 0:
            return None
        if self._start is None:
            self._start = (now, fraction)
            return None
        started, first = self._start
        elapsed = now - started
        if fraction >= 1.0 or fraction <= first or elapsed < 0.5:
            return None
        rate = (fraction - first) / elapsed
        return (1.0 - fraction) / rate


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60} min left"


def status_text(fraction: float, message: str, eta: float | None) -> str:
    parts = [f"{fraction * 100:.0f}%", message, format_eta(eta)]
    return " · ".join(part for part in parts if part)


class EngineTask(QgsTask):
    """An engine command as a background task: progress, ETA, cancel, result or error.

    Connect to `statusChanged(str)` for "42% · tile 12/40 · about 20 s left" and to
    `completed()`; afterwards `outcome` holds the worker's answer, or `error` the problem
    (None for both after a cancel).
    """

    statusChanged = pyqtSignal(str)  # noqa: N815 (Qt naming)
    completed = pyqtSignal()

    def __init__(
        self,
        description: str,
        args: Sequence[str],
        interpreter: Interpreter,
        cancelable: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        flags = QgsTask.CanCancel if cancelable else QgsTask.Flags()
        super().__init__(description, flags)
        self.args = list(args)
        self.interpreter = interpreter
        self.timeout_s = timeout_s
        self.outcome: EngineOutcome | None = None
        self.error: Exception | None = None
        self.cancelled = False
        self.stderr_lines: list[str] = []
        self._eta = EtaEstimator()

    def _progress(self, fraction: float, message: str) -> None:
        self.setProgress(max(0.0, min(100.0, fraction * 100)))
        self.statusChanged.emit(status_text(fraction, message, self._eta.update(fraction)))

    def run(self) -> bool:
        try:
            self.outcome = run_engine(
                self.args,
                interpreter=self.interpreter,
                on_progress=self._progress,
                on_log=self.stderr_lines.append,
                is_cancelled=self.isCanceled,
                timeout_s=self.timeout_s,
            )
            return True
        except EngineCancelled:
            self.cancelled = True
        except (EngineError, EngineEnvironmentError) as exc:
            self.error = exc
        except Exception as exc:  # a bug must reach the log, not vanish in the task thread
            self.error = EngineError(
                f"Unexpected problem in the CrossEarth task: {exc}", traceback.format_exc()
            )
        return False

    def finished(self, result: bool) -> None:  # runs on the main thread
        if self.isCanceled() and self.error is None and self.outcome is None:
            self.cancelled = True
        self.completed.emit()
