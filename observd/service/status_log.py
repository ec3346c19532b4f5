"""What the daemon tells people: the observers' status log file and journald-friendly stderr.

The status log is for an observer reading it over coffee (or `tail -f` at 3 a.m.): one line per
event, local time, file name, what happened and the result or the reason, e.g.

    2026-11-21 03:12:09  M42_0012.fits  calibrated  (bias v1, dark v2 x1.0, flat v1; 183 stars, FWHM 2.9 px)
    2026-11-21 03:12:10  M42_0013.fits  waiting: no flat for filter L, binning 1x1 yet

It is rotated by size (`RotatingFileHandler`, 5 MB x 5 files by default) rather than by time: a
busy night and an idle week then both keep a bounded amount of disk, nothing depends on the wall
clock or DST, and about 40,000 lines (weeks of nights) stay readable.

On stderr, under systemd, each line carries an sd-daemon(3) priority prefix (``<3>`` error,
``<4>`` warning, ``<6>`` info, ``<7>`` debug) that journald turns into the entry's priority, so
``journalctl -u observd -p warning`` shows only problems. The prefix is used when journald reads
the stream (``JOURNAL_STREAM`` is set) or stderr is not a terminal; a person at a terminal sees
plain lines.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

__all__ = ["StatusLog", "status_line", "JournalFormatter", "journal_wanted", "journal_stderr"]

MAX_BYTES = 5 << 20  # per status log file before it is rotated
BACKUPS = 5  # rotated files kept: status.log.1 ... status.log.5


def status_line(when: datetime, path: str | None, message: str) -> str:
    """One status log line: local time to the second, the file's name (or 'observd'), the message."""
    name = Path(path).name if path else "observd"
    return f"{when:%Y-%m-%d %H:%M:%S}  {name}  {' '.join(message.splitlines())}"


class StatusLog:
    """The rotated, human-readable status log at `path` (the `[paths] status_log` setting).

    A failing write (disk full, permissions) is reported by `logging` on stderr and never
    raised: losing a log line must not stop data reduction.
    """

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A logger outside the logging tree: status lines must not reach the root's stderr
        # handler, which already shows the same events from the modules that raised them.
        self._logger = logging.Logger("observd.status")
        self._logger.propagate = False
        self._logger.addHandler(self._handler)

    def record(self, level: str, message: str, path: str | None = None, *, when: datetime | None = None) -> None:
        """Append one line; `level` is 'info', 'warning' or 'error' (kept for filtering, not printed)."""
        self._logger.log(_LEVELS.get(level, logging.INFO), status_line(when or datetime.now(), path, message))

    def close(self) -> None:
        """Close the file; a final flush that fails (a full disk) is reported like a failed write,
        never raised: the daemon's shutdown closes this log and must reach its end."""
        self._logger.removeHandler(self._handler)
        try:
            self._handler.close()
        except OSError as exc:
            logging.getLogger(__name__).warning("status log %s: last lines lost: %s", self.path, exc)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _priority(levelno: int) -> int:
    """syslog priority for a logging level: 3 err, 4 warning, 6 info, 7 debug (2 crit)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a record with ``<N>``: journald reads each line as its own entry,
    so a traceback keeps the error priority on all of its lines."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def journal_wanted(stream=None, environ: Mapping[str, str] | None = None) -> bool:
    """Should stderr lines carry priority prefixes? Yes under journald or when not on a terminal."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if environ.get("JOURNAL_STREAM"):
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # closed or fake stream: not a terminal
        return True


@contextlib.contextmanager
def journal_stderr(logger: logging.Logger | None = None) -> Iterator[None]:
    """While active, the stderr handlers of `logger` (default: root) use `JournalFormatter`
    when `journal_wanted()`; their own formats are restored afterwards.

    The CLI sets logging up; the daemon only switches the stderr format for its lifetime,
    since the prefixes mean something to journald and nothing to `observd ingest` users.
    """
    logger = logger or logging.getLogger()
    swapped = []
    if journal_wanted():
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stderr:
                swapped.append((handler, handler.formatter))
                handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    try:
        yield
    finally:
        for handler, formatter in swapped:
            handler.setFormatter(formatter)
