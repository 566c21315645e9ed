"""The cancel flag a caller hands to a long run (segmentation, training): a threading.Event,
a function answering "cancelled?", or None. One adapter turns any of them into a check."""

from __future__ import annotations

import threading
from collections.abc import Callable

CancelFlag = threading.Event | Callable[[], bool] | None


def cancel_check(cancel: CancelFlag) -> Callable[[], bool]:
    """A function that says whether `cancel` is set (always False for None)."""
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel
