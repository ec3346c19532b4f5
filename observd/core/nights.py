"""When a night's stacks are due: a pure rule over night labels, the site's zone and a local time.

A night is labelled by the local date of its evening ('YYYY-MM-DD'). Its stacks are built once,
at local time `at` on the following date, when all its frames have arrived. Correctness does
not rest on a timer: whoever runs the stacks asks `nights_due` (fed by the catalog's ledger of
stacked nights) what is due *now*, so a run after downtime catches up every missed night, and
a run that finds nothing due does nothing.

Wall-clock times that do not exist or exist twice on DST days are resolved as zoneinfo does
(fold=0): the first occurrence of a repeated time, and the pre-transition offset for a skipped
one (02:30 on the spring-forward day is 03:30 summer time). `next_run` computes each date's
instant directly, so there is exactly one run per local date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable
from zoneinfo import ZoneInfo

__all__ = ["next_run", "nights_due", "stacking_time"]

_UTC = dt.UTC


def stacking_time(night: str, *, timezone: str, at: dt.time) -> dt.datetime:
    """The UTC instant at which `night` becomes due: local date night+1 at wall time `at`."""
    day = dt.date.fromisoformat(night) + dt.timedelta(days=1)
    return _local_instant(day, at, ZoneInfo(timezone))


def nights_due(
    now_utc: dt.datetime, *, timezone: str, at: dt.time, nights_with_lights: Iterable[str], stacked: Container[str]
) -> list[str]:
    """Nights whose stacking time has passed at `now_utc` and that are not stacked, oldest first.

    Raises ValueError for a naive `now_utc` or a label that is not 'YYYY-MM-DD'.
    """
    _require_aware(now_utc)
    return sorted(
        night
        for night in set(nights_with_lights)
        if night not in stacked and stacking_time(night, timezone=timezone, at=at) <= now_utc
    )


def next_run(now_utc: dt.datetime, *, timezone: str, at: dt.time) -> dt.datetime:
    """The first local `at` strictly after `now_utc`, as UTC; exactly one per local date."""
    _require_aware(now_utc)
    zone = ZoneInfo(timezone)
    today = now_utc.astimezone(zone).date()
    candidate = _local_instant(today, at, zone)
    if candidate > now_utc:  # compared in UTC, so a repeated hour cannot match twice
        return candidate
    return _local_instant(today + dt.timedelta(days=1), at, zone)  # always after now


def _local_instant(day: dt.date, at: dt.time, zone: ZoneInfo) -> dt.datetime:
    # fold=0: first occurrence of a repeated time, pre-transition offset for a skipped one.
    return dt.datetime.combine(day, at.replace(tzinfo=None, fold=0), tzinfo=zone).astimezone(_UTC)


def _require_aware(moment: dt.datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment.isoformat()}")
