"""Light-curve times and airmass: mid-exposure BJD_TDB and the target's airmass at the site.

Offline by design (an observatory computer may have no network): astropy's IERS tables are
never downloaded (`iers.conf.auto_download = False`, only inside these functions). UT1-UTC and
polar motion then come from the IERS-B table bundled with astropy, extrapolated past its end
(`auto_max_age = None`, `iers_degraded_accuracy = 'ignore'`). What that costs: UT1-UTC is
below 0.9 s by definition, so an extrapolated value moves the Earth-rotation angle by < 0.9 s of
time — an error of < 1.2 ms in the barycentric correction (the site's ~0.4 km/s rotation over
< 0.9 s) and < 0.004° in altitude. UTC -> TDB uses astropy's leap-second table (no network
either); the Solar System's positions come from ERFA's built-in ephemeris (`ephemeris='builtin'`,
~several km on the Earth's position: < 0.1 ms of light travel), far below a frame's exposure.

The site: a frame's own SITELAT/SITELONG (+SITEELEV), as N.I.N.A., MaxIm DL, ASIAIR and the
Seestar write them (degrees as numbers, or sexagesimal strings '+52 31 12'; longitude east
positive), else the configuration's `[site] latitude/longitude/elevation`. Other keywords
(LATITUDE/LONGITUD, OBSGEO-*) are not read: their sign conventions vary between programs
(MicroObservatory writes LONGITUD = 110.88 for 110.88° *west*), and a wrong site silently gives
wrong airmasses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from observd.core.wcs_hints import sexagesimal

__all__ = ["Site", "site_from_header", "bjd_tdb_and_airmass", "airmass_from_altitude"]


@dataclass(frozen=True)
class Site:
    latitude: float  # degrees, north positive
    longitude: float  # degrees, east positive
    elevation: float  # metres
    source: str  # where it came from: 'SITELAT/SITELONG' or '[site]'


def _degrees(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    return sexagesimal(value)


def site_from_header(
    header: Mapping, latitude: float | None = None, longitude: float | None = None, elevation: float = 0.0
) -> Site | None:
    """The observing site: the header's SITELAT/SITELONG(/SITEELEV), else the configured one; None
    when neither says where the telescope is."""
    lat, lon = _degrees(header.get("SITELAT")), _degrees(header.get("SITELONG"))
    if lat is not None and lon is not None and -90 <= lat <= 90 and -360 <= lon <= 360:
        height = _degrees(header.get("SITEELEV"))
        return Site(lat, _east(lon), height if height is not None else 0.0, "SITELAT/SITELONG")
    if latitude is not None and longitude is not None:
        return Site(latitude, _east(longitude), elevation, "[site]")
    return None


def _east(longitude: float) -> float:
    """-180..180 (a longitude written 0..360 east, as some programs do)."""
    return longitude if -180.0 <= longitude <= 180.0 else ((longitude + 180.0) % 360.0) - 180.0


def airmass_from_altitude(altitude_deg: np.ndarray) -> np.ndarray:
    """Pickering (2002)'s airmass, good to the horizon (sec z diverges below ~15°); NaN below it."""
    h = np.asarray(altitude_deg, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        x = 1.0 / np.sin(np.radians(h + 244.0 / (165.0 + 47.0 * np.abs(h) ** 1.1)))
    return np.where(h > 0, x, np.nan)


def bjd_tdb_and_airmass(
    mid_utc: Sequence[datetime], ra: float, dec: float, site: Site
) -> tuple[np.ndarray, np.ndarray]:
    """(BJD_TDB in days, airmass) of a target at (ra, dec) (ICRS degrees) seen from `site` at the
    mid-exposure times `mid_utc` (aware UTC datetimes)."""
    # astropy's coordinates take ~0.5 s to import: only the light-curve stage needs them
    import astropy.units as u
    from astropy.coordinates import AltAz, EarthLocation, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    location = EarthLocation.from_geodetic(site.longitude * u.deg, site.latitude * u.deg, site.elevation * u.m)
    target = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    with (
        iers.conf.set_temp("auto_download", False),
        iers.conf.set_temp("auto_max_age", None),
        iers.conf.set_temp("iers_degraded_accuracy", "ignore"),
    ):
        times = Time(list(mid_utc), scale="utc", location=location)
        light_travel = times.light_travel_time(target, "barycentric", ephemeris="builtin")
        bjd = (times.tdb + light_travel).jd
        altitude = target.transform_to(AltAz(obstime=times, location=location)).alt.deg
    return np.asarray(bjd, dtype=np.float64), airmass_from_altitude(altitude)
