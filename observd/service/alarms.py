"""Alarms: a message at once when the daemon needs a person, not the next morning.

The daemon already says every problem as an event (`observd.pipeline.events`); this listener
picks out the error events that no retry will cure (`ALARMS`: the worker pool broke, the disk is
full) and sends each to the `[notify] urls` targets. A failure repeats — every frame fails on a
full disk — so each kind of alarm goes out at most once per `INTERVAL`; the next one says how
many were held back meanwhile. Alarms are not recorded: after a restart the first one goes out.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from observd.service.apprise_sender import Delivery, Message, redacted

__all__ = ["ALARMS", "Alarms", "INTERVAL"]

log = logging.getLogger(__name__)

ALARMS = {  # kind -> what its error events say
    "the worker pool broke": "a worker process died",
    "the disk is full": os.strerror(errno.ENOSPC),
}
INTERVAL = 3600.0  # s, at most one alarm of a kind this often


class Alarms:
    """An events listener (`Events(listeners=...)`): thread-safe, never blocks, never raises."""

    def __init__(
        self,
        send: Callable[[Message], None],
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        host: str | None = None,
    ):
        self._send = send
        self.interval = interval
        self.clock = clock
        self.host = host or socket.gethostname()
        self._last: dict[str, float] = {}
        self._held = Counter()
        self._lock = threading.Lock()

    def on_event(self, level: str, message: str, path: str | None) -> None:
        if level != "error":
            return
        kind = next((kind for kind, says in ALARMS.items() if says in message), None)
        if kind is None:
            return
        with self._lock:
            now = self.clock()
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] += 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        body = message.splitlines()[0] + (f"\nfile: {Path(path).name}" if path else "")
        if held:
            body += f"\n({held} more such event(s) in the last {self.interval / 60:.0f} min)"
        try:
            self._send(Message(f"observd on {self.host}: {kind}", body))
        except Exception:
            log.exception("cannot send the alarm %r", kind)


def log_delivery(delivery: Delivery) -> None:
    """What became of an alarm, for the log (alarms are not recorded in the catalog)."""
    if delivery.error is None:
        log.info("alarm sent to %s", redacted(delivery.url))
    else:
        log.warning("alarm not sent to %s: %s", redacted(delivery.url), delivery.error)
