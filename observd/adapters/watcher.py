"""Watch the camera folder and say when each FITS file is completely written.

File-system events are only *hints*. Camera programs write a frame in chunks, reopen it to
patch the header, or write it under a temporary name and rename it; the kernel coalesces and
(on overflow) drops events; a polling observer sees no close events at all. So an event only
puts a path in a "pending" set, and a pending file becomes *ready* when both

- its FITS structure is whole (`check_fits_size`), and
- the writer is done: a close-after-write event, or a rename to this name (the atomic
  "write under a temporary name, then rename" idiom), was seen and the file has not changed
  since (same size and mtime as then); or its size and mtime have been stable for
  `settle_seconds` (the only evidence available with polling or after a rescan).

Each ready file is reported once per version, a version being (path, size, mtime_ns): a
duplicated event reports nothing new, a rewritten file is reported again. A file that stops
changing while still structurally incomplete (a truncated upload, an HTML error page saved as
``.fits``) is reported once through `on_stalled` after `[watch] stall_seconds`, so it can be recorded as
rejected with the reason instead of waiting forever.

Threads: callbacks run on watchdog's observer thread (close events, overflow) or on the
thread that calls `poll()` (settled files, dead-observer recovery). They must be quick and
thread-safe (put the path on a queue); an exception from one is logged, never propagated
into watchdog, whose dispatcher thread would die of it.

Watchdog 7.1 facts this relies on (read in its source, `watchdog/observers/inotify*.py`):
``FileClosedEvent`` is IN_CLOSE_WRITE; reading a file (as `check_fits_size` does) yields
``FileOpenedEvent`` / ``FileClosedNoWriteEvent``, which are therefore ignored; a kernel queue
overflow (IN_Q_OVERFLOW) is *not* delivered to handlers: watchdog rebuilds its watches and
logs a warning on the ``watchdog.observers.inotify_c`` logger, which is the hook used here;
``PollingObserver`` emits created/modified/moved/deleted from directory snapshots only.
A candidate file deleted or renamed away is reported through `on_gone`: a program that writes
under a temporary name and renames leaves nothing behind at the old name.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from observd.adapters.fully_written import SizeCheck, check_fits_size
from observd.core.config import WatchConfig

__all__ = ["FITS_EXTENSIONS", "is_candidate", "scan", "FolderWatcher"]

log = logging.getLogger(__name__)

_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"


FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fz")


def is_candidate(path: Path, settings: WatchConfig, root: Path | None = None) -> bool:
    """Could `path` be a frame to process? Judged on the name only (no I/O).

    The file name must end with one of `FITS_EXTENSIONS` (case-insensitive: cameras write
    ``.FIT``) and neither it nor any folder between `root` and it may match an ignore pattern
    (so hidden folders and ``night.tmp/`` folders are skipped). Without `root`, every folder
    of the path is checked, which is wrong for a watch folder that itself lives under a
    hidden folder: pass the root when there is one.
    """
    path = Path(path)
    name = path.name.lower()
    if not any(name.endswith(ext) for ext in FITS_EXTENSIONS):
        return False
    if root is not None:
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            return False
    else:
        parts = path.parts
    return not any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in settings.ignore)


def scan(root: Path, settings: WatchConfig) -> Iterator[Path]:
    """Every candidate file below `root`, recursively, in sorted order (ignored folders pruned).

    Unreadable folders are skipped with a warning rather than aborting the scan.
    """
    root = Path(root)

    def warn(err: OSError) -> None:
        log.warning("cannot scan %s: %s", err.filename, err.strerror)

    for folder, dirnames, filenames in os.walk(root, onerror=warn):
        dirnames[:] = sorted(d for d in dirnames if not any(fnmatch.fnmatchcase(d, p) for p in settings.ignore))
        for name in sorted(filenames):
            path = Path(folder, name)
            if is_candidate(path, settings, root):
                yield path


@dataclass
class _Pending:
    """What is known about one file that is not yet reported."""

    stat: tuple[int, int] | None = None  # (size, mtime_ns) at the last look
    stable_since: float = 0.0  # clock time `stat` was first seen
    done_stat: tuple[int, int] | None = None  # (size, mtime_ns) at the last close/rename-to
    checked: tuple[tuple[int, int], SizeCheck] | None = None  # last structure check, per version


class FolderWatcher:
    """Recursive watch of `root` that calls `on_ready(path)` once per completed file version.

    See the module docstring for the rules and threads. `poll()` must be called regularly
    (about once a second) by the owner: it promotes settled files, reports stalled ones and
    restarts a dead observer. After `on_rescan_needed`, events were lost; the owner should
    `scan()` the folder and `track()` every file it does not already know.
    """

    def __init__(
        self,
        root: Path,
        settings: WatchConfig,
        on_ready: Callable[[Path], None],
        on_rescan_needed: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        on_stalled: Callable[[Path, SizeCheck], None] | None = None,
        on_gone: Callable[[Path], None] | None = None,
    ):
        self.root = Path(root)
        self.settings = settings
        self._on_ready = on_ready
        self._on_rescan_needed = on_rescan_needed
        self._on_stalled = on_stalled
        self._on_gone = on_gone
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[Path, _Pending] = {}
        self._reported: dict[Path, tuple[int, int]] = {}  # version last given to a callback
        self._observer = None
        self._handler = _EventHandler(self)
        self._overflow_hook = _OverflowHook(self)
        self._broken: str | None = None  # why the observer could not be (re)started

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start observing. Raises OSError when the root cannot be watched."""
        overflow_logger = logging.getLogger(_OVERFLOW_LOGGER)
        if not overflow_logger.isEnabledFor(logging.WARNING):
            overflow_logger.setLevel(logging.WARNING)  # the overflow hook needs the record
        overflow_logger.addHandler(self._overflow_hook)
        self._start_observer()

    def stop(self, timeout: float = 5) -> None:
        logging.getLogger(_OVERFLOW_LOGGER).removeHandler(self._overflow_hook)
        self._stop_observer(timeout)
        self._observer = None

    def alive(self) -> bool:
        """True while the observer thread and its emitter threads run."""
        observer = self._observer
        return observer is not None and observer.is_alive() and all(emitter.is_alive() for emitter in observer.emitters)

    def _start_observer(self) -> None:
        if self.settings.polling:
            observer = PollingObserver(timeout=self.settings.poll_interval)
        else:
            observer = Observer()
        observer.schedule(self._handler, str(self.root), recursive=True)
        observer.start()
        self._observer = observer

    # -- input --------------------------------------------------------------------------
    def track(self, path: Path) -> None:
        """Consider `path` pending, as if an event had been seen (rescan, start-up, new folder)."""
        path = Path(path)
        if is_candidate(path, self.settings, self.root):
            with self._lock:
                self._pending.setdefault(path, _Pending())

    def _writer_done(self, path: Path) -> None:
        """A writer closed `path` or renamed a file to it: remember that version, judge now."""
        if not is_candidate(path, self.settings, self.root):
            return
        stat = _stat(path)
        with self._lock:
            self._pending.setdefault(path, _Pending()).done_stat = stat
        self._evaluate(path)

    def _gone(self, path: Path) -> None:
        """`path` was deleted or renamed away."""
        with self._lock:
            self._pending.pop(path, None)
            self._reported.pop(path, None)
        if self._on_gone is not None and is_candidate(path, self.settings, self.root):
            _call(self._on_gone, path)

    def _folder_appeared(self, folder: Path) -> None:
        """Files written before watchdog added the watch on a new folder emit no events."""
        for path in scan(folder, self.settings):
            self.track(path)

    def _rescan_needed(self, reason: str) -> None:
        log.warning("rescan needed for %s: %s", self.root, reason)
        _call(self._on_rescan_needed, reason)

    # -- periodic work ------------------------------------------------------------------
    def poll(self) -> None:
        """Restart a dead observer, then re-judge every pending file."""
        if self._observer is not None and not self.alive():
            self._restart()
        with self._lock:
            paths = list(self._pending)
        for path in paths:
            self._evaluate(path)

    def _restart(self) -> None:
        try:
            self._stop_observer(1)
            self._start_observer()
        except OSError as exc:
            reason = f"cannot watch {self.root}: {exc.strerror or exc}"
            if reason != self._broken:
                self._broken = reason
                self._rescan_needed(reason)
            return
        self._broken = None
        self._rescan_needed("observer thread died; restarted")

    def _stop_observer(self, timeout: float) -> None:
        observer = self._observer
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout)

    def _evaluate(self, path: Path) -> None:
        """Report `path` if it is ready (or stalled); the single place that decides."""
        stat = _stat(path)
        now = self._clock()
        with self._lock:
            state = self._pending.get(path)
            if state is None:
                return
            if stat is None:  # deleted or renamed away meanwhile
                del self._pending[path]
                return
            if stat != state.stat:
                state.stat, state.stable_since = stat, now
            if self._reported.get(path) == stat:  # this version was already reported
                del self._pending[path]
                return
            stable_for = now - state.stable_since
            writer_done = state.done_stat == stat or stable_for >= self.settings.settle_seconds
            if not writer_done:
                return
            cached = state.checked[1] if state.checked and state.checked[0] == stat else None
        check = cached or check_fits_size(path)
        with self._lock:
            state = self._pending.get(path)
            if state is None or state.stat != stat or self._reported.get(path) == stat:
                return  # changed or reported by another thread
            state.checked = (stat, check)
            if check.complete:
                callback, args = self._on_ready, (path,)
            elif self._on_stalled is not None and stable_for >= self.settings.stall_seconds:
                callback, args = self._on_stalled, (path, check)
            else:
                return
            self._reported[path] = stat
            del self._pending[path]
        _call(callback, *args)


class _EventHandler(FileSystemEventHandler):
    """Turns watchdog events into hints for the watcher; runs on the observer thread."""

    def __init__(self, watcher: FolderWatcher):
        self._watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._route(event)
        except Exception:  # an exception here would kill watchdog's dispatcher thread
            log.exception("error handling %r", event)

    def _route(self, event: FileSystemEvent) -> None:
        w = self._watcher
        if isinstance(event, FileMovedEvent):
            w._gone(Path(os.fsdecode(event.src_path)))
            w._writer_done(Path(os.fsdecode(event.dest_path)))
        elif isinstance(event, DirMovedEvent):
            w._folder_appeared(Path(os.fsdecode(event.dest_path)))
        elif isinstance(event, DirCreatedEvent):
            w._folder_appeared(Path(os.fsdecode(event.src_path)))
        elif isinstance(event, FileClosedEvent):
            w._writer_done(Path(os.fsdecode(event.src_path)))
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent, FileAttribEvent)):
            w.track(Path(os.fsdecode(event.src_path)))
        elif isinstance(event, FileDeletedEvent):
            w._gone(Path(os.fsdecode(event.src_path)))
        # FileOpenedEvent / FileClosedNoWriteEvent (our own reads) and Dir* noise: ignored


class _OverflowHook(logging.Handler):
    """Watchdog's only signal of an inotify queue overflow is its warning log record."""

    def __init__(self, watcher: FolderWatcher):
        super().__init__(logging.WARNING)
        self._watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._watcher._rescan_needed("inotify event queue overflowed; events were lost")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _call(callback: Callable[..., None], *args) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("watcher callback %r failed", callback)
