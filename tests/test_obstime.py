"""observd.core.obstime: the night an observation time belongs to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from observd.core.obstime import night_of


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- night label -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when, zone, expected",
    [
        (utc(2026, 1, 15, 10, 59), "Europe/Berlin", "2026-01-14"),  # 11:59 CET
        (utc(2026, 1, 15, 11, 0), "Europe/Berlin", "2026-01-15"),  # 12:00 CET
        (utc(2026, 1, 15, 23, 30), "Europe/Berlin", "2026-01-15"),  # 00:30 next day: same night
        # spring forward 2026-03-29 02:00 CET -> 03:00 CEST: local noon is 10:00 UTC
        (utc(2026, 3, 29, 1, 30), "Europe/Berlin", "2026-03-28"),  # 03:30 CEST, the short night
        (utc(2026, 3, 29, 9, 59), "Europe/Berlin", "2026-03-28"),
        (utc(2026, 3, 29, 10, 0), "Europe/Berlin", "2026-03-29"),
        # fall back 2026-10-25 03:00 CEST -> 02:00 CET: local noon is 11:00 UTC
        (utc(2026, 10, 25, 0, 30), "Europe/Berlin", "2026-10-24"),  # 02:30 CEST (first 02:30)
        (utc(2026, 10, 25, 1, 30), "Europe/Berlin", "2026-10-24"),  # 02:30 CET (second 02:30)
        (utc(2026, 10, 25, 10, 59), "Europe/Berlin", "2026-10-24"),
        (utc(2026, 10, 25, 11, 0), "Europe/Berlin", "2026-10-25"),
        (utc(2017, 12, 20, 1, 33), "America/Phoenix", "2017-12-19"),  # 18:33 MST
        (utc(2021, 1, 18, 0, 59), "Australia/Sydney", "2021-01-17"),  # 11:59 AEDT
        (utc(2021, 1, 18, 1, 0), "Australia/Sydney", "2021-01-18"),  # 12:00 AEDT
        (utc(2024, 6, 1, 11, 59), "UTC", "2024-05-31"),
        (utc(2024, 6, 1, 12, 0), "UTC", "2024-06-01"),
    ],
)
def test_night_boundary_is_local_noon(when, zone, expected):
    assert night_of(when, zone) == expected


def test_naive_datetime_is_taken_as_utc():
    assert night_of(datetime(2026, 1, 15, 11, 0), "Europe/Berlin") == "2026-01-15"
