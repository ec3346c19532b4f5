"""One fan-out for what observd reports: the catalog's event log, stderr, and listeners.

Everything that happens (a master built, a light waiting, a frame judged bad, the daemon
started) is said once, here, and reaches every place a person may look: the catalog's
`events` table (`observd status`, later a web page), the process's log (stderr, journald),
and whatever the running program listens with (the daemon's status log file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
"""observd's event levels (catalog, status log) and the logging level of each."""

Listener = Callable[[str, str, str | None], None]  # (level, message, path)


def log_level(level: str) -> int:
    """The logging level of an event level; unknown levels are info."""
    return LEVELS.get(level, logging.INFO)


class Events:
    """Says an event to the catalog, the log and the listeners.

    `catalog` is anything with `event(level, event, message, path)` (None: no event table, as
    in a test of a stage alone).
    """

    def __init__(self, catalog, logger: logging.Logger, listeners: tuple[Listener, ...] = ()):
        self.catalog = catalog
        self.log = logger
        self.listeners = list(listeners)

    def emit(self, level: str, event: str, message: str, path: str | None = None) -> None:
        """An event of the event log, also said to the log and the listeners."""
        if self.catalog is not None:
            self.catalog.event(level, event, message, path)
        self.tell(level, message, path)

    def tell(self, level: str, message: str, path: str | None = None) -> None:
        """Log and listeners only: a per-file outcome whose record is the file's catalog row."""
        first = message.splitlines()[0] if message else ""
        self.log.log(log_level(level), "%s%s", f"{Path(path).name}: " if path else "", first)
        for listener in self.listeners:
            listener(level, message, path)

    def emit_safely(self, level: str, event: str, message: str, path: str | None = None) -> None:
        """`emit`, for error paths: a failure to record (a catalog that is gone) is logged, not raised."""
        try:
            self.emit(level, event, message, path)
        except Exception:
            self.log.exception("cannot record event %s: %s", event, message.splitlines()[0] if message else "")
