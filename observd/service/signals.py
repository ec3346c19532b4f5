"""Signals for `observd run`: SIGTERM/SIGINT stop it, SIGHUP reloads the configuration.

A handler only sets flags and starts a timer, since it may interrupt a catalog transaction.
If the stop has not completed after `timeout` seconds (a hung worker), the process exits 0 at
once, its workers killed: what SIGKILL would do, but logged. Nothing is lost by that: the
catalog is transactional and outputs are atomic, so the work is redone at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

STOP_TIMEOUT = 25.0  # s after SIGTERM before a hung shutdown exits anyway (systemd's default is 90)


class StopSignals:
    """What the signal handlers call. `stopped()` says the shutdown finished in time;
    `processes()` gives the worker processes to kill when it did not."""

    def __init__(
        self,
        *,
        request_stop: Callable[[], None],
        request_reload: Callable[[], None],
        stopping: Callable[[], bool],
        stopped: Callable[[], bool],
        processes: Callable[[], list],
        timeout: float = STOP_TIMEOUT,
    ):
        self.request_stop = request_stop
        self.request_reload = request_reload
        self.stopping = stopping
        self.stopped = stopped
        self.processes = processes
        self.timeout = timeout

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers, for the duration of the block (the previous ones restored after it)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_stop(self, signum, frame) -> None:
        if not self.stopping():
            timer = threading.Timer(self.timeout, self._force_exit)
            timer.daemon = True
            timer.start()
        self.request_stop()

    def _force_exit(self) -> None:
        if self.stopped():
            return
        log.error(
            "in-flight work did not finish within %.0f s of the stop request; exiting now, "
            "it will be redone at the next start",
            self.timeout,
        )
        for process in self.processes():
            try:
                process.kill()
            except (OSError, AttributeError):
                pass
        logging.shutdown()
        os._exit(0)
