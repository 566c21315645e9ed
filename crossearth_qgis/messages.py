"""Messages for the analyst: short plain sentences in the message bar, details in the log panel.

Everything the plugin logs goes to the "CrossEarth" tab of QGIS's Log Messages panel, also
records of the `crossearth_qgis` Python logger (the design's "logging via logging").
"""

from __future__ import annotations

import logging
from typing import Any

from qgis.core import Qgis, QgsMessageLog

LOG_TAG = "CrossEarth"
TITLE = "CrossEarth"

_LEVELS = {
    logging.DEBUG: Qgis.MessageLevel.Info,
    logging.INFO: Qgis.MessageLevel.Info,
    logging.WARNING: Qgis.MessageLevel.Warning,
    logging.ERROR: Qgis.MessageLevel.Critical,
    logging.CRITICAL: Qgis.MessageLevel.Critical,
}


def log(text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
    """Writes to the CrossEarth tab of the log panel (never shown as a pop-up)."""
    QgsMessageLog.logMessage(text, LOG_TAG, level, notifyUser=False)


def notify(
    iface: Any,
    text: str,
    level: Qgis.MessageLevel = Qgis.MessageLevel.Info,
    details: str | None = None,
    duration: int | None = None,
) -> None:
    """Shows `text` in the message bar and logs it, with `details` (stderr, paths) in the log.

    Without an interface (qgis_process, tests of Processing) the log is the only destination.
    """
    log(text if not details else f"{text}\n{details}", level)
    if iface is None:
        return
    if duration is None:
        # Errors stay until dismissed; success and information fade.
        duration = 0 if level in (Qgis.MessageLevel.Critical, Qgis.MessageLevel.Warning) else 8
    bar = iface.messageBar()
    if details:
        bar.pushMessage(TITLE, text, details, level, duration)
    else:
        bar.pushMessage(TITLE, text, level, duration)


def error(iface: Any, text: str, details: str | None = None) -> None:
    notify(iface, text, Qgis.MessageLevel.Critical, details)


class QgisLogHandler(logging.Handler):
    """Forwards Python logging records to the CrossEarth log tab."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = _LEVELS.get(record.levelno, Qgis.MessageLevel.Info)
            log(self.format(record), level)
        except Exception:  # a logging handler must never raise into the caller
            self.handleError(record)


def install_log_handler() -> QgisLogHandler:
    """Attaches the forwarding handler to the plugin's logger; returns it for removal."""
    handler = QgisLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("crossearth_qgis")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def remove_log_handler(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger("crossearth_qgis").removeHandler(handler)
