"""`observd run`: watch the camera folder and reduce every frame, unattended, without losing one.

One main thread owns the catalog (the only writer) and runs the loop (`Daemon.step`); other
threads only *hint*: the watcher's observer thread queues completed paths (`arrivals`), the
APScheduler thread requests nightly stacks, a heartbeat thread pings the systemd watchdog
(`health`), signal handlers set flags. Anything the hints missed is found again by a scan of
the folder: at start-up, every `[watch] rescan_minutes`, and at once when the watcher says
events were lost. Each step is idempotent (same content = same row, same output path), so a
duplicate, a rescan or a restart after SIGKILL never produces a second row or output, and
unfinished work, still 'classified' in the catalog, is simply done again.

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
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor
from datetime import UTC, datetime
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.adapters.config_file import load_config
from observd.adapters.watcher import STALL_SECONDS, FolderWatcher
from observd.core.config import Config, ConfigError, stack_time
from observd.core.nights import nights_due
from observd.jobs.pool import worker_pool
from observd.pipeline.events import Events
from observd.pipeline.reducer import Reducer
from observd.service.announcer import Announcer
from observd.service.arrivals import Arrivals, remove_stale_temporaries
from observd.service.health import HANG_LIMIT, STACK_HANG_LIMIT, Health
from observd.service.scheduler import NightlyScheduler
from observd.service.sdnotify import Notifier
from observd.service.status_log import StatusLog

__all__ = ["Daemon", "STOP_TIMEOUT"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 25.0  # s after SIGTERM before a hung shutdown exits anyway (systemd's default is 90)
TICK = 1.0  # s between loop iterations when nothing arrives (watcher.poll cadence)
ADVANCE_INTERVAL = 5.0  # s between reduction passes while calibration groups may be settling
RETRY_INTERVAL = 10.0  # s between looks for failed frames whose back-off expired
STATUS_INTERVAL = 5.0  # s, at most one systemd STATUS= update this often
MAX_ERROR_BACKOFF = 60.0  # s, cap of the pause after repeated unexpected loop errors


def _default_stack_night(config: Config, catalog: Catalog, night: str, pool: Executor | None = None) -> list:
    from observd.pipeline.stacking import stack_night  # imported when first needed: it brings matplotlib

    return stack_night(config, catalog, night, pool=pool)


class Daemon:
    """The `observd run` service. `run()` blocks until SIGTERM/SIGINT (or `request_stop()`).

    Tests drive it in a thread: `start()`, then `step()` or `serve()`, `request_stop()`, `shutdown()`;
    `run()` does the same plus signal handling and must be called on the main thread.
    `pool_factory(config)` returns the worker pool (None = run jobs inline). `stack_night(config,
    catalog, night)` builds a night's products and records the night in the catalog's ledger
    (`observd.pipeline.stacking.stack_night` by default); it raises when the night must be tried again.
    """

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        *,
        stack_night: Callable[[Config, Catalog, str], list] | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        pool_factory: Callable[[Config], Executor | None] = worker_pool,
        hang_limit: float = HANG_LIMIT,
        stall_seconds: float = STALL_SECONDS,
        stop_timeout: float = STOP_TIMEOUT,
        tick: float = TICK,
    ):
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.stall_seconds = stall_seconds
        self.stop_timeout = stop_timeout
        self.tick = tick
        self._stack_night = stack_night or (
            lambda config, catalog, night: (  # the workers share the stacking
                _default_stack_night(config, catalog, night, pool=self._pool)
            )
        )
        self._pool_factory = pool_factory
        self.health = Health(
            self.notifier, lambda: self.watcher is not None and self.watcher.alive(), hang_limit=hang_limit
        )
        self.catalog: Catalog | None = None
        self.events: Events | None = None
        self.reducer: Reducer | None = None
        self.arrivals: Arrivals | None = None
        self.watcher: FolderWatcher | None = None
        self.status_log: StatusLog | None = None
        self._announcer: Announcer | None = None
        self._pool: Executor | None = None
        self._scheduler: NightlyScheduler | None = None
        # hints from other threads, consumed by the main loop
        self._stack_requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._rescan_reason: str | None = None
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        # main-loop timers (monotonic)
        self._next_rescan = self._next_retry = self._next_advance = self._next_status = 0.0
        self._settling_until = 0.0
        self._errors = 0
        self._carried = 0  # new content catalogued during a reduction pass
        self._resume = True  # one pass at start-up: redo work a crash interrupted

    # -- life cycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the configuration. Returns the exit code (0)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())
        try:
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
        log.error(
            "in-flight work did not finish within %.0f s of the stop request; exiting now, "
            "it will be redone at the next start",
            self.stop_timeout,
        )
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
        self.events = Events(self.catalog, log, listeners=(self._on_event,))
        self._pool = self._pool_factory(config)
        self.reducer = Reducer(
            config, self.catalog, pool=self._pool, clock=self.clock, events=self.events, should_stop=self._stop.is_set
        )
        self.arrivals = Arrivals(
            config,
            self.catalog,
            self.events,
            stall_seconds=self.stall_seconds,
            wake=self._wake.set,
            beat=self.health.beat,
        )
        remove_stale_temporaries(config.paths.output, config.paths.watch)
        self.watcher = self._make_watcher(config)
        self.watcher.start()  # before the scan: nothing written during the scan is missed
        self.events.emit(
            "info",
            "started",
            f"observd started: watching {config.paths.watch}, output {config.paths.output}, config {config.source}",
        )
        self.notifier.ready()  # READY once watching and the start-up scan is under way
        self._announcer = Announcer(self.catalog, self.status_log, self.notifier, config.site.timezone)
        self._rescan("start-up scan")
        self._start_scheduler()
        self.health.start()

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
                pause = min(MAX_ERROR_BACKOFF, 2.0**self._errors)
                log.exception("unexpected error in the main loop; continuing in %.0f s", pause)
                self.events.emit_safely(
                    "error", "internal-error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                )
                self._stop.wait(pause)
                continue
            self._wake.wait(self.tick)
            self._wake.clear()

    def _replace_pool(self, exc: BaseException) -> None:
        """A worker died and took the pool with it (every later submit would fail): start new
        workers. The jobs that were in flight were recorded as failed attempts and are retried."""
        self.events.emit_safely("error", "workers", f"a worker process died ({exc}); starting new workers")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._pool_factory(self.config)
        self.reducer.pool = self._pool

    def shutdown(self) -> None:
        """STOPPING, stop watching and scheduling, let the pool finish, close the catalog."""
        self.notifier.stopping()
        self._stop.set()
        self.health.stop()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self.watcher is not None:
            self.watcher.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self.catalog is not None:
            self.events.emit_safely("info", "stopped", "observd stopped")
            self.catalog.close()
            self.catalog = None
        if self.status_log is not None:
            self.status_log.close()
        self._stopped.set()

    # -- one iteration --------------------------------------------------------------------------

    def step(self) -> None:
        """One pass of the loop: every timer and queue checked once; returns at once when idle."""
        now = time.monotonic()
        self.health.beat()
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        reason, self._rescan_reason = self._rescan_reason, None
        if reason or now >= self._next_rescan:
            self._rescan(reason or "periodic rescan")
        changed, self._carried = self.arrivals.drain() + self._carried, 0
        self.watcher.poll()
        changed += self.arrivals.drain()
        if now >= self._next_retry:
            self._next_retry = now + min(RETRY_INTERVAL, self.config.daemon.retry_backoff)
            changed += self.reducer.retry_failed()
        if changed:
            self._settle()
        if changed or self._resume or (now < self._settling_until and now >= self._next_advance):
            self._resume = False
            self._advance()
        self._run_stack_requests()
        if changed or now >= self._next_status:
            self._next_status = time.monotonic() + STATUS_INTERVAL
            self._announcer.status()

    def _settle(self) -> None:
        """New frames arrived: keep passing while their calibration groups may be settling."""
        self._settling_until = time.monotonic() + self.config.masters.settle_seconds + 2 * ADVANCE_INTERVAL

    def _advance(self) -> None:
        self._next_advance = time.monotonic() + ADVANCE_INTERVAL
        done = self.reducer.advance(final=False, progress=self._during_pass)
        if done:
            self._announcer.lights()
            self._next_status = 0.0

    def _during_pass(self, *_) -> None:
        """Between two jobs of a reduction pass: feed the watchdog and catalogue new arrivals, so a
        file's row appears within a job's time even while a long pass runs (it is reduced next pass)."""
        self.health.beat()
        self._carried += self.arrivals.drain()

    def _rescan(self, reason: str) -> None:
        self._next_rescan = time.monotonic() + self.config.watch.rescan_minutes * 60
        if reason != "periodic rescan":
            self.events.emit(
                "info" if reason == "start-up scan" else "warning",
                "rescan",
                f"{reason}: scanning {self.config.paths.watch}",
            )
        if self.arrivals.rescan(self.watcher):
            self._settle()
            self._advance()

    def _make_watcher(self, config: Config) -> FolderWatcher:
        return FolderWatcher(
            config.paths.watch,
            config.watch,
            on_ready=self.arrivals.on_ready,
            on_rescan_needed=self._on_rescan_needed,
            on_stalled=self.arrivals.on_stalled,
            stall_seconds=self.stall_seconds,
        )

    def _on_rescan_needed(self, reason: str) -> None:
        """Watcher callback (its thread): events were lost."""
        self._rescan_reason = reason
        self._wake.set()

    # -- nightly stacks -------------------------------------------------------------------------

    def _start_scheduler(self) -> None:
        c = self.config
        self._scheduler = NightlyScheduler(
            timezone=c.site.timezone, at=stack_time(c.stack), due=self._nights_due, stack_night=self.request_stack
        )
        self._scheduler.start()

    def _nights_due(self) -> list[str]:
        """On the scheduler thread: its own read-only connection (the main thread's is busy writing)."""
        reader = Catalog.open(self.config.paths.database, readonly=True)
        try:
            return nights_due(
                datetime.now(UTC),
                timezone=self.config.site.timezone,
                at=stack_time(self.config.stack),
                nights_with_lights=reader.nights_with_lights(),
                stacked=reader.stacked_nights(),
            )
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
            self.health.beat(STACK_HANG_LIMIT)
            try:
                products = self._stack_night(self.config, self.catalog, night)
            except Exception as exc:
                self.events.emit_safely(
                    "error",
                    "stack",
                    f"stacking night {night} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                )
                continue
            finally:
                self.health.beat()
            self.events.emit("info", "stack", f"night {night} stacked: {len(products)} product(s)")

    # -- configuration --------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: read the file again. [paths] and [daemon] workers need a restart; a bad file is
        reported and the running configuration kept."""
        if self.config_path is None:
            self.events.emit("warning", "reload", "SIGHUP: no configuration file to reload (running on defaults)")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.events.emit("error", "reload", f"configuration not reloaded, keeping the running one: {exc}")
            return
        old = self.config
        kept = [
            name
            for name, changed in (
                ("[paths]", new.paths != old.paths),
                ("[daemon] workers", new.daemon.workers != old.daemon.workers),
            )
            if changed
        ]
        new = dataclasses.replace(
            new, paths=old.paths, daemon=dataclasses.replace(new.daemon, workers=old.daemon.workers)
        )
        self.config = self.reducer.config = self.arrivals.config = new
        if new.watch != old.watch:
            self.watcher.stop()
            self.watcher = self._make_watcher(new)
            self.watcher.start()
            self._rescan_reason = "watch settings reloaded"
        if (new.site, new.stack.at) != (old.site, old.stack.at):
            self._scheduler.shutdown(wait=False)
            self._start_scheduler()
        self.events.emit(
            "info",
            "reload",
            f"configuration reloaded from {self.config_path}"
            + (f"; {', '.join(kept)} changed but need a restart" if kept else ""),
        )
        self._next_advance = 0.0
        self._settling_until = time.monotonic() + ADVANCE_INTERVAL

    # -- reporting ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.health.healthy()

    def _on_event(self, level: str, message: str, path: str | None) -> None:
        """Every event also goes to the status log; an event is progress for the watchdog."""
        self.health.beat()
        if self.status_log is not None:
            self.status_log.record(level, message, path)
