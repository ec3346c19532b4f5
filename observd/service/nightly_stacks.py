"""The daemon's nightly stacks: the timer that asks for them and the requests the main loop runs.

The APScheduler thread (and the demo, and a catch-up at start) only *request* a night; the
daemon's main thread, which owns the catalog, builds it (`run_requests`). A night already in
the catalog's ledger of stacked nights is not built again, so a repeated request is harmless.
Once a night's stacks are built, `on_stacked(night)` follows (the morning report is due), then,
with ``[stack] deep = true``, `refresh_deep(config, catalog, night, stopping)`: the deep stacks (all
nights) of the night's targets; it stops resampling when the daemon stops. A deep stack that fails (or
is interrupted) is reported; the night stays stacked (its own products are done), and the target's
deep stacks are refreshed after its next night (or by `observd stack --all-nights`).
"""

from __future__ import annotations

import queue
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from observd.adapters.catalog import Catalog
from observd.core.config import Config, stack_time
from observd.core.nights import nights_due
from observd.pipeline.events import Events
from observd.service.health import STACK_HANG_LIMIT, Health
from observd.service.scheduler import NightlyScheduler

StackNight = Callable[[Config, Catalog, str], list]
RefreshDeep = Callable[[Config, Catalog, str, Callable[[], bool]], list]  # ..., night, should_stop


class NightlyStacks:
    """Requests of nights to stack, from any thread; built on the main thread by `run_requests`,
    each after `finish(night)` has made the night's verdicts final (`Reducer.finish_night`)."""

    def __init__(
        self,
        stack_night: StackNight,
        health: Health,
        wake: Callable[[], None],
        finish: Callable[[str], object],
        on_stacked: Callable[[str], object] = lambda night: None,
        refresh_deep: RefreshDeep | None = None,
    ):
        self._stack_night = stack_night
        self._refresh_deep = refresh_deep
        self._finish = finish
        self._on_stacked = on_stacked
        self._health = health
        self._wake = wake
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._scheduler: NightlyScheduler | None = None

    def start(self, config: Config) -> None:
        """Start the timer (a catch-up at once, then daily at `[stack] at`, local time)."""
        self._scheduler = NightlyScheduler(
            timezone=config.site.timezone,
            at=stack_time(config.stack),
            due=lambda: _nights_due(config),
            stack_night=self.request,
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)

    def request(self, night: str) -> None:
        """Ask the main loop to stack `night` (thread-safe)."""
        self._requests.put(night)
        self._wake()

    def run_requests(self, config: Config, catalog: Catalog, events: Events, stopping: Callable[[], bool]) -> None:
        """Build every requested night not stacked yet; a failure is reported and the night stays due."""
        while True:
            try:
                night = self._requests.get_nowait()
            except queue.Empty:
                return
            if night in catalog.stacked_nights() or stopping():
                continue
            self._health.beat(STACK_HANG_LIMIT)
            try:
                self._finish(night)
                products = self._stack_night(config, catalog, night)
            except Exception as exc:
                events.emit_safely(
                    "error",
                    "stack",
                    f"stacking night {night} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                )
                continue
            finally:
                self._health.beat()
            events.emit("info", "stack", f"night {night} stacked: {len(products)} product(s)")
            self._on_stacked(night)
            if config.stack.deep and self._refresh_deep is not None and not stopping():
                self._deep(config, catalog, events, night, stopping)

    def _deep(self, config: Config, catalog: Catalog, events: Events, night: str, stopping) -> None:
        self._health.beat(STACK_HANG_LIMIT)
        try:
            self._refresh_deep(config, catalog, night, stopping)
        except Exception as exc:
            events.emit_safely(
                "error",
                "deep-stack",
                f"deep stacks after night {night} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
            )
        finally:
            self._health.beat()


def _nights_due(config: Config) -> list[str]:
    """On the scheduler thread: its own read-only connection (the main thread's is busy writing)."""
    reader = Catalog.open(config.paths.database, readonly=True)
    try:
        return nights_due(
            datetime.now(UTC),
            timezone=config.site.timezone,
            at=stack_time(config.stack),
            nights_with_lights=reader.nights_with_lights(),
            stacked=reader.stacked_nights(),
        )
    finally:
        reader.close()
