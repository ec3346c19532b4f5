"""Alarms: a message at once when the daemon needs a person, not the next morning.

The daemon already says most problems as events (`observd.pipeline.events`); this listener
picks out those that no retry will cure (`ALARMS`: the worker pool broke, the disk is full, the
folder watcher died and was restarted) and sends each to the `[notify] urls` targets. Two more
are conditions, not events, looked at once a minute (`check`): the output disk nearly full
(`[notify] disk_free_percent`), and a night that went quiet — frames of tonight arrived, then
none for `[notify] quiet_hours` before `[notify] night_end` (a camera or mount that stopped,
clouds). A failure repeats — every frame fails on a full disk — so each kind of alarm goes out
at most once per `INTERVAL`; the next one says how many were held back meanwhile. Alarms are
not recorded: after a restart the first one goes out.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as time_of
from pathlib import Path
from zoneinfo import ZoneInfo

from observd.core.config import NotifyConfig
from observd.core.obstime import night_of
from observd.service.apprise_sender import Delivery, Message, redacted

__all__ = ["ALARMS", "Alarms", "INTERVAL"]

log = logging.getLogger(__name__)

ALARMS = {  # kind -> (level, what its events say)
    "the worker pool broke": ("error", "a worker process died"),
    "the disk is full": ("error", os.strerror(errno.ENOSPC)),
    "the folder watcher died and was restarted": ("warning", "observer thread died; restarted"),
}
INTERVAL = 3600.0  # s, at most one alarm of a kind this often
CHECK_EVERY = 60.0  # s between looks at the conditions (disk space, a quiet night)


class Alarms:
    """An events listener (`Events(listeners=...)`): thread-safe, never blocks, never raises."""

    def __init__(
        self,
        send: Callable[[Message], None],
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        host: str | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._send = send
        self.interval = interval
        self.clock = clock
        self.host = host or socket.gethostname()
        self.wall = wall  # the time of day, for a quiet night
        self._last: dict[str, float] = {}
        self._held = Counter()
        self._lock = threading.Lock()
        self._checked: float | None = None
        self._quiet_nights: set[str] = set()

    def on_event(self, level: str, message: str, path: str | None) -> None:
        kind = next((kind for kind, (lv, says) in ALARMS.items() if lv == level and says in message), None)
        if kind is not None:
            self._raise(kind, message, path)

    def check(
        self, output: Path, notify: NotifyConfig, last_arrival: Callable[[str], str | None], timezone: str
    ) -> None:
        """The conditions, at most once per CHECK_EVERY: the output disk's free space, and
        whether tonight went quiet (`last_arrival(night)`: ISO time of its newest light)."""
        now = self.clock()
        if self._checked is not None and now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        try:
            usage = shutil.disk_usage(output)
        except OSError:
            usage = None
        if usage is not None and usage.free < usage.total * notify.disk_free_percent / 100:
            self._raise(
                "the disk is nearly full",
                f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.0f} GiB on {output} "
                f"(alarm below {notify.disk_free_percent:g} %)",
                None,
            )
        local = self.wall().astimezone(ZoneInfo(timezone))
        night = night_of(local, timezone)
        morning = time_of.fromisoformat(notify.night_end) <= local.time() < time_of(12)  # the session is over
        last = last_arrival(night)
        if last is None or morning or night in self._quiet_nights:
            return
        quiet = (local - datetime.fromisoformat(last)).total_seconds() / 3600
        if quiet >= notify.quiet_hours:
            self._quiet_nights.add(night)  # once per night
            when = datetime.fromisoformat(last).astimezone(local.tzinfo)
            self._raise(
                "a night went quiet",
                f"night {night}: no new light for {quiet:.1f} h (the last arrived at {when:%H:%M} local time): "
                "camera, mount or weather?",
                None,
            )

    def _raise(self, kind: str, message: str, path: str | None) -> None:
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
