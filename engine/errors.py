"""User-facing errors: each names the problem and the fix in one line."""

from __future__ import annotations


class CrossEarthError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""


class SegmentationCancelled(CrossEarthError):
    """Raised when the caller's cancel flag was set; no output is left behind."""

    def __init__(self, message: str = "segmentation cancelled; no output was written") -> None:
        super().__init__(message)
