"""`observd run`: watch the camera folder and reduce every frame, unattended, without losing one.

One main thread owns the catalog (the only writer) and runs the loop; other threads only
*hint*: the watcher's observer thread queues completed paths, the APScheduler thread requests
nightly stacks, a heartbeat thread pings the systemd watchdog, signal handlers set flags.
Events are hints and the catalog is the truth, so anything missed (the daemon was down, the
event queue overflowed, the observer died) is found again by a scan of the folder: at
start-up, every `[watch] rescan_minutes`, and at once when the watcher says events were lost.
Each step is idempotent (same content = same row, same output path), so a duplicate, a rescan
or a restart after SIGKILL never produces a second row or output, and unfinished work, still
'classified' in the catalog, is simply done again.

Liveness (the systemd watchdog): pings are sent only while the observer thread is alive and the
main loop has made progress within `hang_limit` seconds (default `HANG_LIMIT`, 300 s): an
iteration of the loop, or a job finished while it waits on the worker pool. A worker that hangs
therefore stops the pings once nothing else finishes, and systemd restarts the service. A
nightly stack may legitimately take longer: it gets `STACK_HANG_LIMIT`.

Stopping (SIGTERM/SIGINT): no new work is submitted, jobs in flight finish and are recorded,
the watcher, scheduler and pool stop, the catalog is closed, exit 0. If in-flight work has not
finished after `STOP_TIMEOUT` seconds (a hung worker), the workers are killed and the process
exits 0 at once: the catalog is transactional and outputs are atomic, so that work is redone at
the next start, exactly as after a SIGKILL.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor
from datetime import datetime, timezone
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.core.config import Config, ConfigError, load_config, stack_time
from observd.pipeline.batch import watch_settings
from observd.pipeline.intake import Seen, catalogue, classify_rules
from observd.service.scheduler import NightlyScheduler, nights_due
from observd.core.obstime import night_of
from observd.jobs.pool import worker_pool
from observd.pipeline.reducer import Reducer
from observd.service.sdnotify import Notifier
from observd.service.status_log import StatusLog, journal_stderr
from observd.adapters.watcher import FolderWatcher, scan

__all__ = ["Daemon", "HANG_LIMIT", "STOP_TIMEOUT"]

log = logging.getLogger("observd.service.daemon")

HANG_LIMIT = 300.0        # s without progress (loop iteration or finished job) before watchdog pings stop
STACK_HANG_LIMIT = 3600.0  # s allowed for one nightly stack run on the main thread
STOP_TIMEOUT = 25.0       # s after SIGTERM before a hung shutdown exits anyway (systemd's default is 90)
STALL_SECONDS = 60.0      # an incomplete file unchanged this long is rejected (truncated upload)
TICK = 1.0                # s between loop iterations when nothing arrives (watcher.poll cadence)
ADVANCE_INTERVAL = 5.0    # s between reduction passes while calibration groups may be settling
RETRY_INTERVAL = 10.0     # s between looks for failed frames whose back-off expired
STATUS_INTERVAL = 5.0     # s, at most one systemd STATUS= update this often
MAX_ERROR_BACKOFF = 60.0  # s, cap of the pause after repeated unexpected loop errors


def _default_stack_night(config: Config, catalog: Catalog, night: str, pool: Executor | None = None) -> list:
    from observd.pipeline.stacking import stack_night      # imported when first needed: it brings matplotlib
    return stack_night(config, catalog, night, pool=pool)


class Daemon:
    """The `observd run` service. `run()` blocks until SIGTERM/SIGINT (or `request_stop()`).

    Tests drive it in a thread: `start()`, then `step()` or `serve()`, `request_stop()`, `shutdown()`;
    `run()` does the same plus signal handling and must be called on the main thread.
    `pool_factory(config)` returns the worker pool (None = run jobs inline). `stack_night(config,
    catalog, night)` builds a night's products and records the night in the catalog's ledger
    (`observd.pipeline.stacking.stack_night` by default); it raises when the night must be tried again.
    """

    def __init__(self, config: Config, config_path: Path | None = None, *,
                 stack_night: Callable[[Config, Catalog, str], list] | None = None,
                 notifier: Notifier | None = None, clock: Callable[[], float] = time.time,
                 pool_factory: Callable[[Config], Executor | None] = worker_pool,
                 hang_limit: float = HANG_LIMIT, stall_seconds: float = STALL_SECONDS,
                 stop_timeout: float = STOP_TIMEOUT, tick: float = TICK):
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.hang_limit = hang_limit
        self.stall_seconds = stall_seconds
        self.stop_timeout = stop_timeout
        self.tick = tick
        self._stack_night = stack_night or (lambda config, catalog, night:     # the workers share the stacking
                                            _default_stack_night(config, catalog, night, pool=self._pool))
        self._pool_factory = pool_factory
        self.catalog: Catalog | None = None
        self.reducer: Reducer | None = None
        self.watcher: FolderWatcher | None = None
        self.status_log: StatusLog | None = None
        self._pool: Executor | None = None
        self._scheduler: NightlyScheduler | None = None
        self._heartbeat: threading.Thread | None = None
        # hints from other threads, consumed by the main loop
        self._arrivals: queue.SimpleQueue[tuple[str, Path]] = queue.SimpleQueue()
        self._stack_requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._rescan_reason: str | None = None
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._deadline = time.monotonic() + hang_limit    # the watchdog is fed while monotonic() < this
        # main-loop timers (monotonic)
        self._next_rescan = self._next_retry = self._next_advance = self._next_status = 0.0
        self._settling_until = 0.0
        self._errors = 0
        self._carried = 0                         # new content catalogued during a reduction pass
        self._resume = True                       # one pass at start-up: redo work a crash interrupted
        self._announced: dict[int, str] = {}      # light id -> last state written to the status log
        self._master_versions: dict[int, int] = {}
        self._status_text = ""

    # -- life cycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the configuration. Returns the exit code (0)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())
        try:
            with journal_stderr():
                self.start()
                try:
                    self.serve()
                finally:
                    self.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def request_stop(self) -> None:
        """Stop after the current step (thread-safe; what SIGTERM does, minus the forced-exit timer)."""
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    def _on_stop_signal(self, signum, frame) -> None:
        # Only flags and a timer here: the handler may interrupt a catalog transaction.
        if not self._stop.is_set():
            timer = threading.Timer(self.stop_timeout, self._force_exit)
            timer.daemon = True
            timer.start()
        self.request_stop()

    def _force_exit(self) -> None:
        """Shutdown is stuck (a hung worker): what SIGKILL would do, but logged and with exit 0."""
        if self._stopped.is_set():
            return
        log.error("in-flight work did not finish within %.0f s of the stop request; exiting now, "
                  "it will be redone at the next start", self.stop_timeout)
        for process in list(getattr(self._pool, "_processes", {}).values()):  # CPython internal, best effort
            try:
                process.kill()
            except (OSError, AttributeError):
                pass
        logging.shutdown()
        os._exit(0)

    def start(self) -> None:
        """Open the catalog, start the pool and the watcher, scan what arrived while down, say READY."""
        config = self.config
        self.status_log = StatusLog(config.paths.status_log)
        self.catalog = Catalog.open(config.paths.database)
        self._pool = self._pool_factory(config)
        self.reducer = Reducer(config, self.catalog, pool=self._pool, clock=self.clock,
                               on_event=self._on_reducer_event, should_stop=self._stop.is_set)
        self._remove_stale_temporaries()
        self.watcher = self._make_watcher(config)
        self.watcher.start()        # before the scan: nothing written during the scan is missed
        self._event("info", "started", f"observd started: watching {config.paths.watch}, "
                    f"output {config.paths.output}, config {config.source}")
        self.notifier.ready()       # READY once watching and the start-up scan is under way
        self._announced = {r["id"]: r["state"] for r in self.catalog.files(types=("light",))}
        self._rescan("start-up scan")
        self._start_scheduler()
        interval = self.notifier.watchdog_interval()
        if interval:
            self._heartbeat = threading.Thread(target=self._feed_watchdog, args=(interval,),
                                               name="observd-watchdog", daemon=True)
            self._heartbeat.start()

    def serve(self) -> None:
        """The main loop, until `request_stop()`. An unexpected error is logged and retried after a pause."""
        while not self._stop.is_set():
            try:
                self.step()
                self._errors = 0
            except BrokenExecutor as exc:
                self._replace_pool(exc)
            except Exception as exc:
                self._errors += 1
                pause = min(MAX_ERROR_BACKOFF, 2.0 ** self._errors)
                log.exception("unexpected error in the main loop; continuing in %.0f s", pause)
                self._safe_event("error", "internal-error",
                                 f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                self._stop.wait(pause)
                continue
            self._wake.wait(self.tick)
            self._wake.clear()

    def _replace_pool(self, exc: BaseException) -> None:
        """A worker died and took the pool with it (every later submit would fail): start new
        workers. The jobs that were in flight were recorded as failed attempts and are retried."""
        self._safe_event("error", "workers", f"a worker process died ({exc}); starting new workers")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._pool_factory(self.config)
        self.reducer.pool = self._pool

    def shutdown(self) -> None:
        """STOPPING, stop watching and scheduling, let the pool finish, close the catalog."""
        self.notifier.stopping()
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self.watcher is not None:
            self.watcher.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self.catalog is not None:
            self._safe_event("info", "stopped", "observd stopped")
            self.catalog.close()
            self.catalog = None
        if self.status_log is not None:
            self.status_log.close()
        self._stopped.set()

    # -- one iteration --------------------------------------------------------------------------

    def step(self) -> None:
        """One pass of the loop: every timer and queue checked once; returns at once when idle."""
        now = time.monotonic()
        self._beat(self.hang_limit)
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        reason, self._rescan_reason = self._rescan_reason, None
        if reason or now >= self._next_rescan:
            self._rescan(reason or "periodic rescan")
        changed, self._carried = self._drain() + self._carried, 0
        self.watcher.poll()
        changed += self._drain()
        if now >= self._next_retry:
            self._next_retry = now + min(RETRY_INTERVAL, self.config.daemon.retry_backoff)
            changed += self.reducer.retry_failed()
        if changed:
            self._settling_until = now + self.config.masters.settle_seconds + 2 * ADVANCE_INTERVAL
        if changed or self._resume or (now < self._settling_until and now >= self._next_advance):
            self._resume = False
            self._advance()
        self._run_stack_requests()
        if changed or now >= self._next_status:
            self._update_status()

    def _beat(self, allowance: float) -> None:
        self._deadline = time.monotonic() + allowance

    def _advance(self) -> None:
        self._next_advance = time.monotonic() + ADVANCE_INTERVAL
        done = self.reducer.advance(final=False, progress=self._during_pass)
        if done:
            self._announce_lights()
            self._next_status = 0.0

    def _during_pass(self, *_) -> None:
        """Between two jobs of a reduction pass: feed the watchdog and catalogue new arrivals, so a
        file's row appears within a job's time even while a long pass runs (it is reduced next pass)."""
        self._beat(self.hang_limit)
        self._carried += self._drain()

    # -- arrivals -------------------------------------------------------------------------------

    def _make_watcher(self, config: Config) -> FolderWatcher:
        settings = dataclasses.replace(watch_settings(config), stall_seconds=self.stall_seconds)
        return FolderWatcher(config.paths.watch, settings, on_ready=self._on_ready,
                             on_rescan_needed=self._on_rescan_needed, on_stalled=self._on_stalled)

    # watcher callbacks: observer thread or poll(); queue and wake, nothing else
    def _on_ready(self, path: Path) -> None:
        self._arrivals.put(("ready", path))
        self._wake.set()

    def _on_stalled(self, path: Path, check) -> None:
        self._arrivals.put(("stalled", path))
        self._wake.set()

    def _on_rescan_needed(self, reason: str) -> None:
        self._rescan_reason = reason
        self._wake.set()

    def _drain(self) -> int:
        """Catalogue every queued path; returns how many brought new content."""
        changed = 0
        rules = classify_rules(self.config)
        while True:
            try:
                kind, path = self._arrivals.get_nowait()
            except queue.Empty:
                return changed
            changed += _new_content(self._catalogue(path, final=(kind == "stalled"), rules=rules))

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
            self._file_event(level, f"{what}{f'  {seen.reason}' if seen.reason else ''}", seen.path)
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
            file_id, _ = self.catalog.record_file(path=key, size=size, mtime_ns=mtime, sha256=None,
                                                  state="failed", reason=reason)
            self.catalog.update_file(file_id, traceback=tb, attempts=self.config.daemon.max_retries)
        except Exception:
            log.exception("cannot record the failure of %s", key)
        self._safe_event("error", "failed", reason, key)

    def _rescan(self, reason: str) -> None:
        """Find what events missed. Unknown or changed files: catalogued now when untouched for
        `[watch] settle_seconds` (rejected if still incomplete after the stall time), otherwise
        handed to the watcher, which judges when the writer is done."""
        self._next_rescan = time.monotonic() + self.config.watch.rescan_minutes * 60
        if reason != "periodic rescan":
            self._event("info" if reason == "start-up scan" else "warning", "rescan", f"{reason}: scanning "
                        f"{self.config.paths.watch}")
        known = self.catalog.known_stats()
        settle = self.config.watch.settle_seconds
        rules = classify_rules(self.config)
        changed = 0
        for path in scan(self.config.paths.watch, self.watcher.settings):
            self._beat(self.hang_limit)
            key = str(path.absolute())
            try:
                st = os.stat(key)
            except OSError:
                continue
            entry = known.get(key)
            if entry is not None and entry[:2] == (st.st_size, st.st_mtime_ns) and not self._revisit(entry):
                continue
            age = time.time() - st.st_mtime
            if age < settle:
                self.watcher.track(path)
                continue
            seen = self._catalogue(path, final=age >= self.stall_seconds, rules=rules)
            if seen is not None and seen.state == "pending":
                self.watcher.track(path)
            changed += _new_content(seen)
        if changed:
            self._settling_until = time.monotonic() + self.config.masters.settle_seconds + 2 * ADVANCE_INTERVAL
            self._advance()

    def _revisit(self, entry: tuple[int, int, str, int]) -> bool:
        """Must a known, unchanged file be looked at again? A 'pending' one (incomplete when last
        seen: now complete, or stalled), and one whose cataloguing failed (no content hash; a
        reduction failure has one and is retried by the reducer)."""
        if entry[2] == "pending":
            return True
        return entry[2] == "failed" and not (self.catalog.file(entry[3]) or {}).get("sha256")

    def _remove_stale_temporaries(self) -> None:
        """`fitsio.write_atomic` temporaries ('.NAME.XXXX.tmp') left by a SIGKILL mid-write. Only
        below the output folder, never in the camera's folder."""
        output, watch = self.config.paths.output.absolute(), self.config.paths.watch.absolute()
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

    # -- nightly stacks -------------------------------------------------------------------------

    def _start_scheduler(self) -> None:
        c = self.config
        self._scheduler = NightlyScheduler(timezone=c.site.timezone, at=stack_time(c.stack), due=self._nights_due,
                                           stack_night=self.request_stack)
        self._scheduler.start()

    def _nights_due(self) -> list[str]:
        """On the scheduler thread: its own read-only connection (the main thread's is busy writing)."""
        reader = Catalog.open(self.config.paths.database, readonly=True)
        try:
            return nights_due(datetime.now(timezone.utc), timezone=self.config.site.timezone,
                              at=stack_time(self.config.stack), nights_with_lights=reader.nights_with_lights(),
                              stacked=reader.stacked_nights())
        finally:
            reader.close()

    def request_stack(self, night: str) -> None:
        """Ask the main loop to stack `night` (the scheduler and the demo call this; thread-safe)."""
        self._stack_requests.put(night)
        self._wake.set()

    def _run_stack_requests(self) -> None:
        while True:
            try:
                night = self._stack_requests.get_nowait()
            except queue.Empty:
                return
            if night in self.catalog.stacked_nights() or self._stop.is_set():
                continue
            self._beat(STACK_HANG_LIMIT)
            try:
                products = self._stack_night(self.config, self.catalog, night)
            except Exception as exc:
                self._safe_event("error", "stack", f"stacking night {night} failed: {type(exc).__name__}: "
                                 f"{exc}\n{traceback.format_exc()}")
                continue
            finally:
                self._beat(self.hang_limit)
            self._event("info", "stack", f"night {night} stacked: {len(products)} product(s)")

    # -- configuration --------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: read the file again. [paths] and [daemon] workers need a restart; a bad file is
        reported and the running configuration kept."""
        if self.config_path is None:
            self._event("warning", "reload", "SIGHUP: no configuration file to reload (running on defaults)")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self._event("error", "reload", f"configuration not reloaded, keeping the running one: {exc}")
            return
        old = self.config
        kept = [name for name, changed in (("[paths]", new.paths != old.paths),
                                           ("[daemon] workers", new.daemon.workers != old.daemon.workers)) if changed]
        new = dataclasses.replace(new, paths=old.paths, daemon=dataclasses.replace(new.daemon,
                                                                                    workers=old.daemon.workers))
        self.config = new
        self.reducer.config = new
        if new.watch != old.watch:
            self.watcher.stop()
            self.watcher = self._make_watcher(new)
            self.watcher.start()
            self._rescan_reason = "watch settings reloaded"
        if (new.site, new.stack.at) != (old.site, old.stack.at):
            self._scheduler.shutdown(wait=False)
            self._start_scheduler()
        self._event("info", "reload", f"configuration reloaded from {self.config_path}"
                    + (f"; {', '.join(kept)} changed but need a restart" if kept else ""))
        self._next_advance = 0.0
        self._settling_until = time.monotonic() + ADVANCE_INTERVAL

    # -- watchdog -------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Observer thread alive and the main loop (or its pool) progressing within the hang limit."""
        watcher = self.watcher
        return watcher is not None and watcher.alive() and time.monotonic() < self._deadline

    def _feed_watchdog(self, interval: float) -> None:
        warned = False
        while not self._stop.wait(interval):
            if self.healthy():
                self.notifier.watchdog()
                warned = False
            elif not warned:
                warned = True
                log.error("not feeding the systemd watchdog: %s", "the folder observer is not running"
                          if not (self.watcher and self.watcher.alive()) else
                          f"no progress for more than {self.hang_limit:.0f} s (a hung worker?)")

    # -- reporting ------------------------------------------------------------------------------

    def _event(self, level: str, event: str, message: str, path: str | None = None) -> None:
        """A daemon event: catalog event log, status log, stderr."""
        self.catalog.event(level, event, message, path)
        self._file_event(level, message, path)

    def _safe_event(self, level: str, event: str, message: str, path: str | None = None) -> None:
        try:
            self._event(level, event, message, path)
        except Exception:
            log.exception("cannot record event %s: %s", event, message.splitlines()[0])

    def _file_event(self, level: str, message: str, path: str | None) -> None:
        """Status log and stderr only: per-file outcomes live on the file's catalog row."""
        if self.status_log is not None:
            self.status_log.record(level, message, path)
        first = message.splitlines()[0] if message else ""
        log.log(logging.ERROR if level == "error" else logging.WARNING if level == "warning" else logging.INFO,
                "%s%s", f"{Path(path).name}: " if path else "", first)

    def _on_reducer_event(self, level: str, message: str, path: str | None) -> None:
        """The reducer already wrote the catalog event and the stderr line; add the status log line."""
        self._beat(self.hang_limit)
        if self.status_log is not None:
            self.status_log.record(level, message, path)

    def _announce_lights(self) -> None:
        """Status log lines for lights newly calibrated or aligned (the reducer reports only problems)."""
        for row in self.catalog.files(types=("light",)):
            state = row["state"]
            if self._announced.get(row["id"]) == state:
                continue
            previous = self._announced.get(row["id"])
            self._announced[row["id"]] = state
            if state in ("calibrated", "aligned") and previous not in ("calibrated", "aligned"):
                self.status_log.record("info", f"calibrated  ({self._calibration_summary(row)})", row["path"])
            if state == "aligned":
                self.status_log.record("info", f"aligned  (rms {row['align_rms'] or 0:.2f} px, "
                                       f"{row['n_matches'] or 0} stars matched)", row["path"])

    def _calibration_summary(self, row: dict) -> str:
        parts = []
        for kind in ("bias", "dark", "flat"):
            master_id = row[f"{kind}_id"]
            if master_id is None:
                continue
            if master_id not in self._master_versions:
                master = self.catalog.master(master_id) or {}
                self._master_versions[master_id] = master.get("version") or 0
            scale = f" x{row['dark_scale']:.2f}" if kind == "dark" and row["dark_scale"] is not None else ""
            parts.append(f"{kind} v{self._master_versions[master_id]}{scale}")
        masters = ", ".join(parts) or "no masters"
        fwhm = f", FWHM {row['fwhm']:.1f} px" if row["fwhm"] is not None else ""
        return f"{masters}; {row['n_stars'] or 0} stars{fwhm}"

    def _update_status(self) -> None:
        """systemd STATUS=: the latest night's lights, what they wait for, failures."""
        self._next_status = time.monotonic() + STATUS_INTERVAL
        tonight = night_of(datetime.now(timezone.utc), self.config.site.timezone)
        nights = self.catalog.nights()
        night = tonight if tonight in nights or not nights else nights[-1]
        lights = Counter()
        failed = 0
        for row in self.catalog.counts(night):
            if row["frame_type"] == "light":
                lights[row["state"]] += row["n"]
            if row["state"] == "failed":
                failed += row["n"]
        done = lights["calibrated"] + lights["aligned"] + lights["unaligned"] + lights["bad"]
        text = f"{'tonight' if night == tonight else night}: {done} lights calibrated"
        if lights["waiting"]:
            reasons = Counter(r["reason"] for r in self.catalog.files(night=night, state="waiting"))
            text += f", {lights['waiting']} waiting ({reasons.most_common(1)[0][0].removeprefix('waiting: ')})"
        if failed:
            text += f", {failed} failed"
        if text != self._status_text:
            self._status_text = text
            self.notifier.status(text)


def _new_content(seen: Seen | None) -> int:
    """1 when cataloguing brought something the reducer can act on."""
    return int(seen is not None and seen.new and seen.state != "pending")


def main(config_path: str | None = None) -> int:
    """`python -m observd.service.daemon [CONFIG]`: the daemon without the CLI (tests, debugging)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = Path(config_path) if config_path else None
    return Daemon(load_config(path), path).run()


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
