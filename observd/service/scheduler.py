"""The timer of the nightly stacks: an APScheduler job that asks `core.nights` what is due.

Why the timer is `NightlyTrigger` (an APScheduler trigger built on `next_run`) and not
APScheduler 3.11.3's CronTrigger, whose daily schedules are wrong on DST days (Europe/Berlin;
the issue family #529/#606/#1021/#1036):
- hour=0 fires on 2026-03-29 00:00 and next on 03-31 00:00, skipping the first midnight after
  spring-forward: the day is stepped by 24 absolute hours across a 23-hour day;
- a time inside the repeated autumn hour (02:30 on 2026-10-25) fires twice;
- given that fire as a *UTC* previous_fire_time, `get_next_fire_time` returns the same
  instant again, so `Job._get_run_times` would loop forever.
`run_now` is serialised by a lock, so a catch-up, the timer and a manual `observd stack` never
stack the same night concurrently; the catalog's ledger makes an extra run harmless anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from observd.core.nights import next_run

__all__ = ["NightlyScheduler", "NightlyTrigger"]

log = logging.getLogger(__name__)

_UTC = dt.UTC
_JOB_ID = "nightly-stacks"


class NightlyTrigger(BaseTrigger):
    """APScheduler trigger: once per local date at wall time `at` in the site's zone."""

    def __init__(self, *, timezone: str, at: dt.time):
        self.timezone = ZoneInfo(timezone)
        self.at = at

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime:
        # APScheduler's contract: the first fire after the previous one (even if already past,
        # so missed fires can be counted and coalesced), else the first one after now.
        after = previous_fire_time or now
        fire = next_run(after, timezone=self.timezone.key, at=self.at)
        return fire.astimezone(self.timezone)

    def __str__(self) -> str:
        return f"nightly[{self.at.isoformat()} {self.timezone.key}]"


class NightlyScheduler:
    """Wraps an APScheduler 3.x BackgroundScheduler: one daily job, plus a catch-up at start.

    Each run calls `due()` and then `stack_night(night)` for each night; the failure of one night
    is logged and the others still run (a failed night stays unstacked and is retried at the next
    run). The job has coalesce=True (several missed fires run once), max_instances=1, and
    misfire_grace_time=None: a fire delayed by a busy or suspended host still runs, whatever
    the delay, because running late is harmless and skipping would postpone a night by a day.
    """

    def __init__(
        self,
        *,
        timezone: str,
        at: dt.time,
        due: Callable[[], list[str]],
        stack_night: Callable[[str], None],
        clock: Callable[[], dt.datetime] | None = None,
    ):
        self.timezone = timezone
        self.at = at
        self.trigger = NightlyTrigger(timezone=timezone, at=at)
        self._due = due
        self._stack_night = stack_night
        self._clock = clock or (lambda: dt.datetime.now(_UTC))
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone=timezone)

    def start(self) -> None:
        """Start the timer; the first run (the catch-up) happens at once, in the background."""
        self._scheduler.add_job(
            self.run_now,
            self.trigger,
            id=_JOB_ID,
            name="nightly stacks",
            next_run_time=self._clock().astimezone(self.trigger.timezone),  # the catch-up
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        self._scheduler.start()
        log.info(
            "nightly stacks: catch-up now, then daily at %s %s (next %s UTC)",
            self.at.isoformat(),
            self.timezone,
            next_run(self._clock(), timezone=self.timezone, at=self.at).isoformat(),
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop the timer (if started); with `wait`, let a running stack finish first."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def run_now(self) -> list[str]:
        """Stack every due night once; returns the nights stacked successfully, oldest first.

        `due()` is asked again after each pass, so a night that becomes due while a long
        catch-up runs is stacked in the same run instead of waiting a day (its own timer fire
        would be dropped by max_instances=1). A night that failed is not retried in this run.
        """
        with self._lock:
            stacked: list[str] = []
            attempted: set[str] = set()
            while pending := [n for n in self._due() if n not in attempted]:
                for night in pending:
                    attempted.add(night)
                    try:
                        self._stack_night(night)
                    except Exception:
                        log.exception("nightly stack of night %s failed; other nights go on", night)
                    else:
                        stacked.append(night)
            return stacked
