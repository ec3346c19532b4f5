"""Liveness for the systemd watchdog: is the daemon still making progress?

Pings are sent only while the folder observer is alive and the main loop has made progress
within the allowed time: an iteration of the loop, or a job finished while it waits on the
worker pool. A worker that hangs therefore stops the pings once nothing else finishes, and
systemd restarts the service. A nightly stack may legitimately take longer, so its pass
gets a longer allowance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from observd.service.sdnotify import Notifier

log = logging.getLogger(__name__)

HANG_LIMIT = 300.0  # s without progress before watchdog pings stop
STACK_HANG_LIMIT = 3600.0  # s allowed for one nightly stack run on the main thread


class Health:
    """The progress deadline, and the thread that pings the watchdog while it is kept."""

    def __init__(
        self,
        notifier: Notifier,
        watcher_alive: Callable[[], bool],
        *,
        hang_limit: float = HANG_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.notifier = notifier
        self.watcher_alive = watcher_alive
        self.hang_limit = hang_limit
        self._clock = clock
        self._deadline = clock() + hang_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, allowance: float | None = None) -> None:
        """Progress now: the next `allowance` seconds (default: the hang limit) count as alive."""
        self._deadline = self._clock() + (self.hang_limit if allowance is None else allowance)

    def healthy(self) -> bool:
        """Observer thread alive and the main loop (or its pool) progressing within the deadline."""
        return self.watcher_alive() and self._clock() < self._deadline

    def start(self) -> None:
        """Ping the watchdog from a thread, at half its interval, when systemd expects pings."""
        interval = self.notifier.watchdog_interval()
        if interval:
            self._thread = threading.Thread(target=self._feed, args=(interval,), name="observd-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _feed(self, interval: float) -> None:
        warned = False
        while not self._stop.wait(interval):
            if self.healthy():
                self.notifier.watchdog()
                warned = False
            elif not warned:
                warned = True
                log.error(
                    "not feeding the systemd watchdog: %s",
                    "the folder observer is not running"
                    if not self.watcher_alive()
                    else f"no progress for more than {self.hang_limit:.0f} s (a hung worker?)",
                )
