"""User-facing errors: each names the problem and the fix in one line.

Like rasterio's error hierarchy, every error has a domain class and carries structure:
`code`, a short stable string ("input.not_found", "output.exists", "model.not_found"...),
and `fields`, the values it is about (path, field, window, value, option, suggestion...).
The message itself is flag-free: it speaks of options by their names (`bands`, `overwrite`),
never as command-line flags. Front ends word an error from its code and fields: the CLI
adds its flags (engine/commands/cli_messages.py), the QGIS plugin says it for the analyst.

A plain `raise CrossEarthError("...")` stays valid and gets the generic code "error".
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.error_codes import (
    CANCELLED,
    CONFIG,
    CONFIG_FIELD,
    DEVICE_UNAVAILABLE,
    ERROR,
    INPUT,
    MEMORY,
    MODEL,
    OUTPUT,
)


class CrossEarthError(Exception):
    """An error caused by the user's input or environment, shown without a traceback.

    `code` defaults to the class's; `fields` holds the keyword arguments given beyond it.
    An `option` field names the option whose value is at fault or that fixes it (as the
    Python API calls it: "bands", "overwrite", "tile"...), `suggestion` a value to give it.
    """

    default_code: ClassVar[str] = ERROR

    def __init__(self, message: str, *, code: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.fields: dict[str, Any] = fields

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses have their own constructor arguments; rebuilding from the state keeps
        # code and fields when an error crosses a process boundary (Ray workers).
        return (_rebuild, (type(self), self.message), self.__dict__)


def _rebuild(cls: type[CrossEarthError], message: str) -> CrossEarthError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


class InputError(CrossEarthError):
    """An input (raster, labels, checkpoint, recipe) is missing, unreadable or unusable."""

    default_code = INPUT


class OutputError(CrossEarthError):
    """An output cannot be written: it exists, its folder is missing, the disk is full."""

    default_code = OUTPUT


class ModelError(CrossEarthError):
    """A model package, its card or its weights are missing or do not fit together."""

    default_code = MODEL


class ConfigError(CrossEarthError):
    """A configuration (mmseg config, preset, CrossEarth config, options) is not usable."""

    default_code = CONFIG


class ConfigFieldError(ConfigError):
    """One field of an architecture's config is not usable; `field` is its path
    (backbone.depth), `problem` what is wrong with it."""

    def __init__(self, field: str, problem: str, *, architecture: str = "CrossEarth") -> None:
        super().__init__(
            f"invalid {architecture} config: {field}: {problem}",
            code=CONFIG_FIELD,
            field=field,
            problem=problem,
        )
        self.field = field
        self.problem = problem


class DeviceError(CrossEarthError):
    """The requested device (a GPU) is not available."""

    default_code = DEVICE_UNAVAILABLE


class ResourceError(CrossEarthError):
    """The machine lacks memory (or another resource) for the request."""

    default_code = MEMORY


class Cancelled(CrossEarthError):
    """The caller stopped the run (its cancel flag, Ctrl-C, a termination signal)."""

    default_code = CANCELLED


class SegmentationCancelled(Cancelled):
    """Raised when the caller's cancel flag was set; no output is left behind."""

    default_code = CANCELLED

    def __init__(
        self,
        message: str = "segmentation cancelled; no output was written",
        *,
        code: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, code=code, **fields)
