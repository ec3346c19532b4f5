"""The simulated camera's headers and file names speak each camera program's dialect."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from astropy.io import fits

from observd.sim.dialects import DIALECTS
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

SMALL = dict(
    shape=(64, 64), n_bias=2, n_dark=2, n_flat=2, targets=(TargetSpec(filters=("L", "R"), n_lights=2, n_stars=30),)
)


_TYPE_KEYS = ("IMAGETYP", "OBSTYPE", "FRAME", "FRAMETYP", "PICTTYPE")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_headers_speak_the_dialect(tmp_path, dialect):
    spec = SimSpec(seed=2, dialect=dialect, **SMALL)
    truth = write_night(tmp_path, spec)
    tz = ZoneInfo(spec.timezone)
    seen = set()
    for rec in truth["files"]:
        path = tmp_path / rec["name"]
        with fits.open(path, do_not_scale_image_data=True) as hdul:
            hdul.verify("exception")
            h, raw = hdul[0].header, hdul[0].data
        assert h["BITPIX"] == 16 and h["BZERO"] == 32768 and raw.dtype == np.dtype(">i2")
        assert fits.getdata(path).dtype == np.uint16
        assert (h["NAXIS2"], h["NAXIS1"]) == spec.shape
        assert h["INSTRUME"] == spec.instrument
        kind, start = rec["type"], datetime.fromisoformat(rec["date_obs"])
        seen.add(kind)
        if dialect == "maxim":
            assert (
                h["IMAGETYP"]
                == {"light": "Light Frame", "bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field"}[kind]
            )
            assert h["EXPTIME"] == h["EXPOSURE"] == rec["exptime"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", h["DATE-OBS"])
            assert h["EGAIN"] == spec.gain and h["SWCREATE"].startswith("MaxIm DL")
            assert h["CCD-TEMP"] == rec["ccd_temp"] and h["SET-TEMP"] == rec["set_temp"]
            assert re.fullmatch(
                {
                    "light": r"M42-\d{3}[LR]\.fit",
                    "bias": r"Bias-\d{3}\.fit",
                    "dark": r"Dark-\d{3}-60s\.fit",
                    "flat": r"Flat-\d{3}-[LR]\.fit",
                }[kind],
                rec["name"],
            )
        elif dialect == "nina":
            assert h["IMAGETYP"] == kind.upper()
            assert rec["name"].startswith(kind.upper() + "/")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}", h["DATE-OBS"])
            loc = datetime.fromisoformat(h["DATE-LOC"][:26])
            utc = datetime.fromisoformat(h["DATE-OBS"][:26])
            assert loc - utc == start.astimezone(tz).utcoffset() == timedelta(hours=1)
            assert h["GAIN"] == spec.gain_setting and h["OFFSET"] == spec.offset_setting
            assert h["SWCREATE"].startswith("N.I.N.A.") and h["CCD-TEMP"] == rec["ccd_temp"]
        elif dialect == "iraf":
            assert (
                h["OBSTYPE"]
                == h["IMAGETYP"]
                == {"light": "object", "bias": "zero", "dark": "dark", "flat": "flat"}[kind]
            )
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", h["DATE-OBS"])
            utc = datetime.fromisoformat(f"{h['DATE-OBS']}T{h['TIME-OBS']}")
            assert abs(utc.replace(tzinfo=UTC) - start) < timedelta(seconds=0.1)
            assert h["CCDTEMP"] == pytest.approx(rec["ccd_temp"] + 273.15, abs=0.006)
            assert h["CCDSUM"] == "1 1" and h["GAIN"] == spec.gain and h["RDNOISE"] == spec.read_noise
            assert ("FILTER1" in h) == (kind in ("light", "flat"))
            assert re.fullmatch(r"a\d{4}\.fits", rec["name"])
        elif dialect == "theskyx":
            assert h["PICTTYPE"] == {"light": 1, "bias": 2, "dark": 3, "flat": 4}[kind]
            assert h["IMAGETYP"].split()[0].lower() == kind
            assert rec["name"].endswith(".FIT")
        elif dialect == "asiair":
            assert not any(k in h for k in _TYPE_KEYS)
            assert isinstance(h["EXPOSURE"], str) and float(h["EXPOSURE"]) == rec["exptime"]
            assert rec["name"].startswith(kind.capitalize() + "_")
            stamp = start.astimezone(tz).strftime("%Y%m%d-%H%M%S")
            assert f"_{stamp}_" in rec["name"]
        if dialect != "iraf":
            utc = datetime.fromisoformat(h["DATE-OBS"][:26]).replace(tzinfo=UTC)
            assert abs(utc - start) < timedelta(seconds=1)
        if kind == "light":
            assert h["FILTER1" if dialect == "iraf" else "FILTER"] == rec["filter"]
            assert h["OBJECT"] == "M42"
    assert seen == {"bias", "dark", "flat", "light"}
