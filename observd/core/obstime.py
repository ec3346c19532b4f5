"""Observation times as written by camera programs, and the night they belong to.

Pure string/number -> datetime functions; which header keyword feeds them is decided in
`observd.core.classify`. Every returned datetime is timezone-aware UTC. Nothing here raises on
a malformed value: it returns None.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["parse_date_obs", "parse_time_of_day", "combine", "from_mjd", "from_jd", "night_of"]

_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_JD_MINUS_MJD = 2400000.5
# MJD 15020 is 1900-01-01, 88069 is 2100-01-01: anything outside is a placeholder or garbage.
_MJD_RANGE = (15020.0, 88069.0)

_TIME = r"(?P<h>\d{1,2}):(?P<mi>\d{1,2})(?::(?P<s>\d{1,2})(?:[.,](?P<f>\d+))?)?"
_ZONE = r"(?P<z>Z|UTC|UT|GMT|[+-]\d{2}(?::?\d{2})?)"
_ISO = re.compile(
    rf"^(?P<y>\d{{4}})[-/](?P<mo>\d{{1,2}})[-/](?P<d>\d{{1,2}})(?:[T ]{_TIME})?\s*{_ZONE}?$", re.IGNORECASE
)
# The FITS standard's pre-2000 form 'DD/MM/YY' (MaxIm DL still wrote it in 2018 as DATE).
_OLD_DATE = re.compile(r"^(?P<d>\d{1,2})/(?P<mo>\d{1,2})/(?P<y>\d{2}|\d{4})$")
_TIME_OF_DAY = re.compile(
    r"^(?P<h>\d{1,2})[: ](?P<mi>\d{1,2})(?:[: ](?P<s>\d{1,2})(?:[.,](?P<f>\d+))?)?\s*(?:Z|UTC?)?$", re.IGNORECASE
)


def parse_date_obs(text: object) -> datetime | date | None:
    """A DATE-OBS-like value: aware UTC `datetime` when it has a time, `date` when only a date.

    ISO-8601 with 'T' or a space, fractions of any length (rounded to the microsecond,
    so 7-digit N.I.N.A. fractions work), optional zone 'Z'/'UTC'/'+02:00'/'-0700' (local
    offsets are converted; no zone means UTC, as the FITS standard says), and the old
    'DD/MM/YY' form. Two-digit years below 50 are 20YY: the standard says 19YY, but
    programs kept writing the old form after 2000.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if m := _ISO.match(text):
        day = _date(int(m["y"]), int(m["mo"]), int(m["d"]))
        if day is None or m["h"] is None:
            return day
        tod = _clock(m["h"], m["mi"], m["s"], m["f"])
        offset = _zone_offset(m["z"])
        if tod is None or offset is None:
            return None
        return combine(day, tod) - offset
    if m := _OLD_DATE.match(text):
        year = int(m["y"])
        if len(m["y"]) == 2:
            year += 2000 if year < 50 else 1900
        return _date(year, int(m["mo"]), int(m["d"]))
    return None


def parse_time_of_day(text: object) -> timedelta | None:
    """'HH:MM:SS[.fff]' (or space-separated, or without seconds) as time since midnight UTC."""
    if not isinstance(text, str):
        return None
    m = _TIME_OF_DAY.match(text.strip())
    return _clock(m["h"], m["mi"], m["s"], m["f"]) if m else None


def combine(day: date, time_of_day: timedelta) -> datetime:
    """A UTC date plus a time of day (TIME-OBS/UT after a date-only DATE-OBS)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + time_of_day


def from_mjd(mjd: float | None) -> datetime | None:
    if mjd is None or not _MJD_RANGE[0] < mjd < _MJD_RANGE[1]:
        return None
    return _MJD_EPOCH + timedelta(days=mjd)


def from_jd(jd: float | None) -> datetime | None:
    return None if jd is None else from_mjd(jd - _JD_MINUS_MJD)


def night_of(utc: datetime, timezone: str) -> str:
    """The night label 'YYYY-MM-DD': the local date of the evening in `timezone`.

    The boundary is local noon: 11:59 local belongs to the previous date's night, 12:00 to
    today's. It is decided on the local wall clock, so DST change days need no special case.
    A naive `utc` is taken as UTC.

    Raises:
        zoneinfo.ZoneInfoNotFoundError: `timezone` is not an IANA zone name. That is a
            configuration error, which the config loader is expected to have reported.
    """
    if utc.tzinfo is None:
        utc = utc.replace(tzinfo=UTC)
    local = utc.astimezone(ZoneInfo(timezone))
    evening = local.date() if local.hour >= 12 else local.date() - timedelta(days=1)
    return evening.isoformat()


def _date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _clock(hours: str, minutes: str, seconds: str | None, fraction: str | None) -> timedelta | None:
    """Time since midnight; the fraction rounded half-up to the microsecond (carry included)."""
    h, mi, s = int(hours), int(minutes), int(seconds or 0)
    if h > 23 or mi > 59 or s > 60:  # 60: a leap second, kept as the next second
        return None
    tenths_of_us = int((fraction or "")[:7].ljust(7, "0"))
    return timedelta(hours=h, minutes=mi, seconds=s, microseconds=(tenths_of_us + 5) // 10)


def _zone_offset(zone: str | None) -> timedelta | None:
    """Offset of local time from UTC; zero when absent or UTC; None when out of range."""
    if zone is None or zone.upper() in ("Z", "UTC", "UT", "GMT"):
        return timedelta(0)
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 14 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if zone[0] == "-" else offset
