"""`observd run`: watch the camera folder and reduce every frame, unattended, without losing one.

One main thread owns the catalog (the only writer) and runs the loop (`Daemon.step`); other
threads only *hint*: the watcher's observer thread queues completed paths (`arrivals`), the
APScheduler thread requests nightly stacks, a heartbeat thread pings the systemd watchdog
(`health`), signal handlers set flags, and the message senders (the morning report, alarms)
send on threads of their own and queue the outcome for the loop to record. Anything the hints
missed is found again by a scan of the folder: at start-up, every `[watch] rescan_minutes`, and
at once when the watcher says events were lost. Each step is idempotent (same content = same
row, same output path), so a duplicate, a rescan or a restart after SIGKILL never produces a
second row or output, and unfinished work, still 'classified' in the catalog, is simply done again.

Stopping (SIGTERM/SIGINT): no new work is submitted, jobs in flight finish and are recorded,
the watcher, scheduler and pool stop, the catalog is closed, exit 0. If in-flight work has not
finished after `STOP_TIMEOUT` seconds (a hung worker), the workers are killed and the process
exits 0 at once: the catalog is transactional and outputs are atomic, so that work is redone at
the next start, exactly as after a SIGKILL.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.adapters.config_file import load_config
from observd.adapters.watcher import FolderWatcher
from observd.core.config import Config, ConfigError, merge_reload
from observd.jobs.pool import memory_budget, worker_pool
from observd.pipeline.events import Events
from observd.pipeline.reducer import Reducer
from observd.service.alarms import Alarms, log_delivery
from observd.service.announcer import Announcer
from observd.service.apprise_sender import Message, Sender, deliver
from observd.service.arrivals import Arrivals, remove_stale_temporaries
from observd.service.health import HANG_LIMIT, Health
from observd.service.morning_report import MorningReports
from observd.service.nightly_stacks import NightlyStacks
from observd.service.sdnotify import Notifier
from observd.service.signals import STOP_TIMEOUT, StopSignals
from observd.service.status_log import StatusLog
from observd.service.timers import LoopTimers

__all__ = ["Daemon", "STOP_TIMEOUT"]

log = logging.getLogger(__name__)

TICK = 1.0  # s between loop iterations when nothing arrives (watcher.poll cadence)
MAX_ERROR_BACKOFF = 60.0  # s, cap of the pause after repeated unexpected loop errors


def _default_stack_night(config: Config, catalog: Catalog, night: str, pool: Executor | None = None) -> list:
    from observd.pipeline.stacking import stack_night  # imported when first needed: it brings matplotlib

    return stack_night(config, catalog, night, pool=pool)


def _default_refresh_deep(
    config: Config, catalog: Catalog, night: str, stopping: Callable[[], bool], pool: Executor | None = None
) -> list:
    from observd.pipeline.deep_stacks import refresh_after_night  # as stack_night: it brings matplotlib

    return refresh_after_night(config, catalog, night, pool=pool, should_stop=stopping)


class Daemon:
    """The `observd run` service. `run()` blocks until SIGTERM/SIGINT (or `request_stop()`).

    Tests drive it in a thread: `start()`, then `step()` or `serve()`, `request_stop()`, `shutdown()`;
    `run()` does the same plus signal handling and must be called on the main thread.
    `pool_factory(config)` returns the worker pool (None = run jobs inline). `stack_night(config,
    catalog, night)` builds a night's products and records the night in the catalog's ledger
    (`observd.pipeline.stacking.stack_night` by default); it raises when the night must be tried again.
    `send_message(url, message)` delivers a morning report or an alarm (Apprise by default).
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
        stop_timeout: float = STOP_TIMEOUT,
        tick: float = TICK,
        send_message: Callable[[str, Message], str | None] = deliver,
    ):
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.stop_timeout = stop_timeout
        self.tick = tick
        self._pool_factory = pool_factory
        self.health = Health(
            self.notifier, lambda: self.watcher is not None and self.watcher.alive(), hang_limit=hang_limit
        )
        self.nightly = NightlyStacks(
            stack_night or (lambda c, catalog, night: _default_stack_night(c, catalog, night, pool=self._pool)),
            self.health,
            lambda: self._wake.set(),
            finish=lambda night: self.reducer.finish_night(night),
            on_stacked=lambda night: self.reports.schedule(self.catalog, self.config, night),
            refresh_deep=lambda c, catalog, night, stopping: _default_refresh_deep(
                c, catalog, night, stopping, pool=self._pool
            ),
        )
        self.reports = MorningReports(clock=clock, send=send_message)
        self._alarm_sender = Sender(log_delivery, send=send_message, name="observd-alarms")
        self.alarms = Alarms(self._send_alarm)
        self.catalog: Catalog | None = None
        self.events: Events | None = None
        self.reducer: Reducer | None = None
        self.arrivals: Arrivals | None = None
        self.watcher: FolderWatcher | None = None
        self.status_log: StatusLog | None = None
        self._announcer: Announcer | None = None
        self._pool: Executor | None = None
        # hints from other threads, consumed by the main loop
        self._rescan_reason: str | None = None
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self.timers = LoopTimers()
        self._errors = 0
        self._carried = 0  # new content catalogued during a reduction pass
        self._resume = True  # one pass at start-up: redo work a crash interrupted

    # -- life cycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the configuration. Returns the exit code (0)."""
        signals = StopSignals(
            request_stop=self.request_stop,
            request_reload=self.request_reload,
            stopping=self._stop.is_set,
            stopped=self._stopped.is_set,
            processes=lambda: list(getattr(self._pool, "_processes", {}).values()),  # CPython internal
            timeout=self.stop_timeout,
        )
        with signals.installed():
            self.start()
            try:
                self.serve()
            finally:
                self.shutdown()
        return 0

    def request_stop(self) -> None:
        """Stop after the current step (thread-safe; what SIGTERM does, minus the forced-exit timer)."""
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    def start(self) -> None:
        """Open the catalog, start the pool and the watcher, scan what arrived while down, say READY."""
        config = self.config
        self.status_log = StatusLog(config.paths.status_log)
        self.catalog = Catalog.open(config.paths.database)
        self.events = Events(self.catalog, log, listeners=(self._on_event, self.alarms.on_event))
        self._pool = self._pool_factory(config)
        self.reducer = Reducer(
            config, self.catalog, pool=self._pool, clock=self.clock, events=self.events, should_stop=self._stop.is_set
        )
        self.arrivals = Arrivals(
            config,
            self.catalog,
            self.events,
            wake=self._wake.set,
            beat=self.health.beat,
        )
        remove_stale_temporaries(config.paths.output, config.paths.watch)
        self.watcher = self._make_watcher(config)
        self.watcher.start()  # before the scan: nothing written during the scan is missed
        self.events.emit(
            "info",
            "started",
            f"observd started: watching {config.paths.watch}, output {config.paths.output}, config {config.source}, "
            f"memory budget {memory_budget(config).limit_mb} MiB ([daemon] memory_limit_mb)",
        )
        self.notifier.ready()  # READY once watching and the start-up scan is under way
        self._announcer = Announcer(self.catalog, self.status_log, self.notifier, config.site.timezone)
        self._rescan("start-up scan")
        self.reports.catch_up(self.catalog, config)
        self.nightly.start(config)
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
        self.nightly.stop()
        self.reports.stop()
        self._alarm_sender.stop()
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
        timers = self.timers
        self.health.beat()
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        reason, self._rescan_reason = self._rescan_reason, None
        if reason or timers.rescan_due():
            self._rescan(reason or "periodic rescan")
        changed, self._carried = self.arrivals.drain() + self._carried, 0
        self.watcher.poll()
        changed += self.arrivals.drain()
        if timers.retry_due(self.config.daemon.retry_backoff):
            changed += self.reducer.retry_failed()
        if changed or self._resume:  # at start-up, groups may be settling from before the restart
            timers.settle(self.config.masters.settle_seconds)
        if changed or self._resume or timers.advance_due():
            self._resume = False
            self._advance()
        self.nightly.run_requests(self.config, self.catalog, self.events, self._stop.is_set)
        self.reports.step(self.catalog, self.config, self.events)
        self.alarms.check(
            self.config.paths.output, self.config.notify, self.catalog.last_arrival, self.config.site.timezone
        )
        if changed or timers.status_due():
            timers.status_sent()
            self._announcer.status()

    def _advance(self) -> None:
        self.timers.advanced()
        if self.reducer.advance(final=False, progress=self._during_pass):
            self._announcer.lights()
            self.timers.status_now()

    def _during_pass(self, *_) -> None:
        """Between two jobs of a reduction pass: feed the watchdog and catalogue new arrivals, so a
        file's row appears within a job's time even while a long pass runs (it is reduced next pass)."""
        self.health.beat()
        self._carried += self.arrivals.drain()

    def _rescan(self, reason: str) -> None:
        self.timers.rescanned(self.config.watch.rescan_minutes * 60)
        if reason != "periodic rescan":
            level = "info" if reason == "start-up scan" else "warning"
            self.events.emit(level, "rescan", f"{reason}: scanning {self.config.paths.watch}")
        if self.arrivals.rescan(self.watcher):
            self.timers.settle(self.config.masters.settle_seconds)
            self._advance()

    def _make_watcher(self, config: Config) -> FolderWatcher:
        return FolderWatcher(
            config.paths.watch,
            config.watch,
            on_ready=self.arrivals.on_ready,
            on_rescan_needed=self._on_rescan_needed,
            on_stalled=self.arrivals.on_stalled,
            on_gone=self.arrivals.on_gone,
        )

    def _on_rescan_needed(self, reason: str) -> None:
        """Watcher callback (its thread): events were lost."""
        self._rescan_reason = reason
        self._wake.set()

    def request_stack(self, night: str) -> None:
        """Ask the main loop to stack `night` (the scheduler and the demo call this; thread-safe)."""
        self.nightly.request(night)

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
        new, kept = merge_reload(old, new)
        self.config = self.reducer.config = self.arrivals.config = new
        if new.watch != old.watch:
            self.watcher.stop()
            self.watcher = self._make_watcher(new)
            self.watcher.start()
            self._rescan_reason = "watch settings reloaded"
        if (new.site, new.stack.at) != (old.site, old.stack.at):
            self.nightly.stop()
            self.nightly.start(new)
        self.events.emit(
            "info",
            "reload",
            f"configuration reloaded from {self.config_path}"
            + (f"; {', '.join(kept)} changed but need a restart" if kept else ""),
        )
        self.timers.advance_now()

    # -- reporting ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.health.healthy()

    def _send_alarm(self, message: Message) -> None:
        """To every `[notify] urls` target, when `[notify] alarms` (read now: a reload applies)."""
        if self.config.notify.alarms:
            for url in self.config.notify.urls:
                self._alarm_sender.send(url, message)

    def _on_event(self, level: str, message: str, path: str | None) -> None:
        """Every event also goes to the status log; an event is progress for the watchdog."""
        self.health.beat()
        if self.status_log is not None:
            self.status_log.record(level, message, path)
