"""When a night is due for stacking (core.nights): the local-date rule, DST days, next run."""

from __future__ import annotations

import datetime as dt

import pytest

from observd.core.nights import next_run, nights_due

TZ = "Europe/Berlin"
TEN = dt.time(10, 0)


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


# --- nights_due -------------------------------------------------------------------------


def test_a_night_is_due_at_at_on_the_next_local_date():
    # 2026-05-11 10:00 CEST (UTC+2) = 08:00 UTC
    kw = dict(timezone=TZ, at=TEN, nights_with_lights=["2026-05-10"], stacked=set())
    assert nights_due(utc(2026, 5, 11, 7, 59, 59), **kw) == []
    assert nights_due(utc(2026, 5, 11, 8, 0), **kw) == ["2026-05-10"]


def test_due_nights_are_unstacked_deduplicated_and_oldest_first():
    lights = ["2026-05-09", "2026-05-07", "2026-05-10", "2026-05-08", "2026-05-09", "2026-05-11"]
    due = nights_due(
        utc(2026, 5, 11, 12, 0), timezone=TZ, at=TEN, nights_with_lights=iter(lights), stacked={"2026-05-08"}
    )
    assert due == ["2026-05-07", "2026-05-09", "2026-05-10"]


def test_the_site_timezone_not_utc_decides():
    # Chile (UTC-4 in May): night 2026-05-10 is due at 2026-05-11 10:00 local = 14:00 UTC
    kw = dict(timezone="America/Santiago", at=TEN, nights_with_lights=["2026-05-10"], stacked=())
    assert nights_due(utc(2026, 5, 11, 13, 59), **kw) == []
    assert nights_due(utc(2026, 5, 11, 14, 0), **kw) == ["2026-05-10"]


def test_naive_now_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        nights_due(dt.datetime(2026, 5, 11, 12), timezone=TZ, at=TEN, nights_with_lights=[], stacked=())


# --- next_run -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now, at, expected",
    [
        (utc(2026, 5, 11, 7, 0), TEN, utc(2026, 5, 11, 8, 0)),  # CEST
        (utc(2026, 5, 11, 8, 0), TEN, utc(2026, 5, 12, 8, 0)),  # strictly after
        (utc(2026, 1, 15, 12, 0), TEN, utc(2026, 1, 16, 9, 0)),  # CET
        (utc(2026, 3, 28, 12, 0), TEN, utc(2026, 3, 29, 8, 0)),  # spring-forward day
        (utc(2026, 10, 24, 12, 0), TEN, utc(2026, 10, 25, 9, 0)),  # fall-back day
        # 02:30 does not exist on 2026-03-29: pre-transition offset, i.e. 03:30 CEST = 01:30 UTC
        (utc(2026, 3, 28, 12, 0), dt.time(2, 30), utc(2026, 3, 29, 1, 30)),
        # 02:30 happens twice on 2026-10-25: the first (CEST, 00:30 UTC), then the next day
        (utc(2026, 10, 24, 12, 0), dt.time(2, 30), utc(2026, 10, 25, 0, 30)),
        (utc(2026, 10, 25, 0, 30), dt.time(2, 30), utc(2026, 10, 26, 1, 30)),
        (utc(2026, 10, 25, 1, 15), dt.time(2, 30), utc(2026, 10, 26, 1, 30)),  # 02:15 CET, 2nd pass
    ],
)
def test_next_run(now, at, expected):
    assert next_run(now, timezone=TZ, at=at) == expected
