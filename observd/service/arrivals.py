"""Files arriving in the camera folder, found by the watcher's events or by a scan, into the catalog.

Events are hints and the catalog is the truth: the watcher's callbacks (on its observer thread)
only queue a path, and the daemon's main thread catalogues the queue (`drain`). Anything the
events missed — the daemon was down, the kernel's event queue overflowed, the observer died —
is found again by `rescan`, which compares the folder with the catalog's stat fields.
"""

from __future__ import annotations

import logging
import os
import queue
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from observd.adapters.catalog import RETIRABLE, Catalog
from observd.adapters.watcher import FolderWatcher, scan
from observd.core.config import Config
from observd.pipeline.events import Events
from observd.pipeline.intake import GONE_REASON, Seen, catalogue, classify_rules

log = logging.getLogger(__name__)


class Arrivals:
    """The queue of paths the watcher reported, and the cataloguing of each.

    `wake()` is called after a path is queued (the daemon's loop then runs at once); `beat()`
    while a long scan runs (the watchdog must not think the loop hung).
    """

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        events: Events,
        *,
        wake: Callable[[], None],
        beat: Callable[[], None],
    ):
        self.config = config
        self.catalog = catalog
        self.events = events
        self._wake = wake
        self._beat = beat
        self._queue: queue.SimpleQueue[tuple[str, Path]] = queue.SimpleQueue()

    # watcher callbacks: observer thread or poll(); queue and wake, nothing else
    def on_ready(self, path: Path) -> None:
        self._queue.put(("ready", path))
        self._wake()

    def on_stalled(self, path: Path, check) -> None:
        self._queue.put(("stalled", path))
        self._wake()

    def on_gone(self, path: Path) -> None:
        self._queue.put(("gone", path))
        self._wake()

    def drain(self) -> int:
        """Catalogue every queued path; returns how many brought new content."""
        changed = 0
        rules = classify_rules(self.config)
        while True:
            try:
                kind, path = self._queue.get_nowait()
            except queue.Empty:
                return changed
            if kind == "gone":
                self._retire(str(Path(path).absolute()))
            else:
                changed += new_content(self._catalogue(path, final=(kind == "stalled"), rules=rules))

    def rescan(self, watcher: FolderWatcher) -> int:
        """Find what events missed; returns how many files brought new content. Unknown or changed
        files are catalogued now when untouched for `[watch] settle_seconds` (rejected if still
        incomplete after the stall time), otherwise handed to the watcher, which judges when the
        writer is done."""
        known = self.catalog.known_stats()
        settle = self.config.watch.settle_seconds
        rules = classify_rules(self.config)
        changed = 0
        present = set()
        for path in scan(self.config.paths.watch, self.config.watch):
            self._beat()
            key = str(path.absolute())
            present.add(key)
            try:
                st = os.stat(key)
            except OSError:
                continue
            entry = known.get(key)
            if entry is not None and entry[:2] == (st.st_size, st.st_mtime_ns) and not self._revisit(entry):
                continue
            age = time.time() - st.st_mtime
            if age < settle:
                watcher.track(path)
                continue
            seen = self._catalogue(path, final=age >= self.config.watch.stall_seconds, rules=rules)
            if seen is not None and seen.state == "pending":
                watcher.track(path)
            changed += new_content(seen)
        self._retire_missing(known, present)
        return changed

    def _retire_missing(self, known: dict[str, tuple], present: set[str]) -> None:
        """Rows of unprocessed files of the watch folder that are no longer there: retired."""
        root = str(self.config.paths.watch.absolute()) + os.sep
        for key, (_, _, state, _) in known.items():
            if state in RETIRABLE and key.startswith(root) and key not in present and not os.path.exists(key):
                self._retire(key)

    def _retire(self, key: str) -> None:
        if self.catalog.retire(key, GONE_REASON) is not None:
            self.events.tell("info", GONE_REASON, key)

    def _revisit(self, entry: tuple[int, int, str, int]) -> bool:
        """Must a known, unchanged file be looked at again? A 'pending' one (incomplete when last
        seen: now complete, or stalled), and one whose cataloguing failed (no content hash; a
        reduction failure has one and is retried by the reducer)."""
        if entry[2] == "pending":
            return True
        return entry[2] == "failed" and not (self.catalog.file(entry[3]) or {}).get("sha256")

    def _catalogue(self, path: Path, *, final: bool, rules=None) -> Seen | None:
        """`intake.catalogue` one path; a failure is recorded on the file's row and the loop goes on."""
        try:
            seen = catalogue(path, self.catalog, self.config, rules=rules, final=final)
        except Exception as exc:
            self._record_failure(path, exc, traceback.format_exc())
            return None
        if seen.new and seen.state != "pending":
            what = {"classified": f"catalogued: {seen.frame_type}"}.get(seen.state, seen.state)
            level = "warning" if seen.state in ("rejected", "unknown") else "info"
            self.events.tell(level, f"{what}{f'  {seen.reason}' if seen.reason else ''}", seen.path)
        return seen

    def _record_failure(self, path: Path, exc: Exception, tb: str) -> None:
        """The row says 'failed' with the traceback. attempts = max_retries keeps the reducer's retry
        away (there is nothing to reduce); the next rescan or restart catalogues it again."""
        key = str(Path(path).absolute())
        reason = f"cannot catalogue: {type(exc).__name__}: {exc}"
        try:
            st = os.stat(key)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = 0
        try:
            file_id, _ = self.catalog.record_file(
                path=key, size=size, mtime_ns=mtime, sha256=None, state="failed", reason=reason
            )
            self.catalog.update_file(file_id, traceback=tb, attempts=self.config.daemon.max_retries)
        except Exception:
            log.exception("cannot record the failure of %s", key)
        self.events.emit_safely("error", "failed", reason, key)


def new_content(seen: Seen | None) -> int:
    """1 when cataloguing brought something the reducer can act on."""
    return int(seen is not None and seen.new and seen.state != "pending")


def remove_stale_temporaries(output: Path, watch: Path) -> None:
    """Atomic-write temporaries ('.NAME.XXXX.tmp') left by a SIGKILL mid-write. Only below the
    output folder, never in the camera's folder."""
    output, watch = output.absolute(), watch.absolute()
    if not output.is_dir() or output == watch or output in watch.parents:
        return
    for path in output.rglob(".*.tmp"):
        if watch in path.parents or not path.is_file():
            continue
        try:
            path.unlink()
            log.info("removed %s, an unfinished output of an interrupted run", path)
        except OSError as exc:
            log.warning("cannot remove stale temporary %s: %s", path, exc)
