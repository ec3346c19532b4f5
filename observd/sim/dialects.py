"""Header cards and file names per camera program: what classification is tested against.

`frame_header(frame, spec)` and `frame_name(frame, spec, counters)` dress a scheduled frame
the way its `spec.dialect` would have written it; `observd.sim.schedule.plan_night` calls
them in acquisition order, which is what the per-type counters in the names count.
A new dialect is one `_cards_*` and one `_name_*` function and an entry in `_DIALECTS`.

maxim    MaxIm DL 6 / SBIG: IMAGETYP 'Light Frame' | 'Bias Frame' | 'Dark Frame' | 'Flat Field',
         EXPTIME+EXPOSURE, CCD-TEMP, SET-TEMP, X/YBINNING, FILTER (lights, flats), DATE-OBS
         'YYYY-MM-DDThh:mm:ss' (UTC, no zone), JD, EGAIN, SWCREATE. Names 'M42-001L.fit',
         'Bias-001.fit', 'Dark-001-60s.fit', 'Flat-001-L.fit' (counters per target+filter,
         per type for bias/dark, per filter for flats).
nina     N.I.N.A. 3: IMAGETYP 'LIGHT' | 'BIAS' | 'DARK' | 'FLAT', EXPOSURE+EXPTIME, DATE-LOC
         (local) and DATE-OBS (UTC), both with the 7-digit fraction .NET writes, GAIN/OFFSET
         settings, EGAIN, READOUTM, FILTER on every frame (the wheel reports its position for
         darks and biases too), OBJECT on lights. Files in per-type subfolders, local time in
         the name: 'LIGHT/2026-11-20_21-03-04_M42_L_60.00s_0001.fits',
         'BIAS/2026-11-20_18-30-00_BIAS_L_0.00s_0001.fits'.
iraf     observatory/IRAF: OBSTYPE and IMAGETYP 'object' | 'zero' | 'dark' | 'flat', EXPTIME,
         CCDTEMP in kelvin, CCDSUM '1 1', FILTER1, DATE-OBS 'YYYY-MM-DD' + TIME-OBS
         'hh:mm:ss.s', GAIN (e-/ADU), RDNOISE (e-), OBJECT also on calibrations ('bias',
         'dark 60s', 'flat L') as observatory logs have it. Names 'a0001.fits'.
theskyx  TheSkyX: IMAGETYP 'Light Frame' | ... plus PICTTYPE 1 light, 2 bias, 3 dark, 4 flat,
         EXPTIME, CCD-TEMP, SET-TEMP, X/YBINNING, FILTER, DATE-OBS with milliseconds, LOCALTIM.
         Names 'M42.00000012.LIGHT.FIT', 'Bias.00000001.BIAS.FIT' (one global counter,
         upper-case extension).
asiair   ZWO ASIAIR-like, deliberately *without* any frame-type keyword (real ASIAIR files do
         carry IMAGETYP; this dialect exercises the file-name fallback): EXPOSURE as a string
         '60.000', CCD-TEMP, GAIN setting, OFFSET, DATE-OBS with 6-digit fraction. Names
         'Light_M42_60.0s_Bin1_L_gain100_20261120-210304_-10.0C_0001.fit', 'Bias_0.0ms_Bin1_...',
         'Dark_60.0s_Bin1_...', 'Flat_1.0s_Bin1_L_...' (local time, counter per type).
seestar  ZWO Seestar S50 (a one-shot-colour smart telescope), cards copied from real S50 files
         in their order: CREATOR 'ZWO Seestar S50', PRODUCER, XORGSUBF/YORGSUBF 0, FOCALLEN 250,
         APERTURE, PROGRAM, X/YBINNING, CCDX/YBIN, X/YPIXSZ, IMAGETYP 'Light' | 'Bias' | 'Dark' |
         'Flat', EXPOSURE+EXPTIME, CCD-TEMP (1/16 degC steps), RA/DEC (degrees, lights),
         SITELONG/SITELAT, DATE-OBS (UTC, 6-digit fraction), FILTER, INSTRUME 'Seestar S50',
         BAYERPAT 'GRBG', GAIN 80, FOCUSPOS, TELESCOP, OBJECT (lights), TOTALEXP; no ROWORDER
         (the data are stored top-down). Names 'Light_M 94_10.0s_IRCUT_20250409-225435.fit'
         (no folder): the stamp is the site's *local* wall-clock time when the file is saved,
         2.5 s after the exposure ends, as in real S50 files (e.g. DATE-OBS
         2025-04-09T20:54:22.79 UTC, 10 s, in France: '..._20250409-225435.fit').

Every dialect also writes INSTRUME and, with ``overscan > 0`` or ``prescan > 0``,
BIASSEC/TRIMSEC (1-based, inclusive): BIASSEC the overscan columns on the right (or, without
overscan, the prescan columns on the left), TRIMSEC the data section.

Colour (CFA) cameras (``spec.bayer`` set; see `bayer_cards`): nina writes BAYERPAT,
XBAYROFF, YBAYROFF and ROWORDER (per ``spec.row_order``; none when it is None); asiair
BAYERPAT (XBAYROFF/YBAYROFF only when the offset is not (0, 0)) and ROWORDER only when
``spec.row_order`` is not None; seestar BAYERPAT only. The BAYERPAT written is chosen so that
the colour of readout pixel (x, y) (y from the sensor's top) is
P[(y + YBAYROFF) % 2][(x + XBAYROFF) % 2], read off the simulated sensor's colour map
(`observd.sim.mosaic`). nina writes ROWORDER for mono cameras too, as N.I.N.A. does.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from observd.sim import mosaic

if TYPE_CHECKING:  # only for annotations: spec and schedule import this module
    from observd.sim.schedule import PlannedFrame
    from observd.sim.spec import SimSpec

Card = tuple[str, Any, str]  # (key, value, comment)

_TYPE_WORDS = {  # frame type -> value per dialect keyword convention
    "maxim": {"light": "Light Frame", "bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field"},
    "nina": {"light": "LIGHT", "bias": "BIAS", "dark": "DARK", "flat": "FLAT"},
    "iraf": {"light": "object", "bias": "zero", "dark": "dark", "flat": "flat"},
    "theskyx": {"light": "Light Frame", "bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field"},
    "seestar": {"light": "Light", "bias": "Bias", "dark": "Dark", "flat": "Flat"},
}
_PICTTYPE = {"light": 1, "bias": 2, "dark": 3, "flat": 4}
_ASIAIR_PREFIX = {"light": "Light", "bias": "Bias", "dark": "Dark", "flat": "Flat"}


def _local(frame: PlannedFrame, spec: SimSpec) -> datetime:
    """The exposure start on the site's wall clock, which several programs write or name by."""
    return frame.date_obs.astimezone(ZoneInfo(spec.timezone))


def _isot(t: datetime, digits: int) -> str:
    """'YYYY-MM-DDThh:mm:ss' plus `digits` of fraction, in `t`'s own zone (none written)."""
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{t.microsecond:06d}0"[:digits]
    return text


def _common_cards(spec: SimSpec) -> list[Card]:
    """Cards every dialect writes; sections only when there is an overscan or a prescan."""
    return [("INSTRUME", spec.instrument, "Imaging instrument name"), *_section_cards(spec)]


def _section_cards(spec: SimSpec) -> list[Card]:
    """BIASSEC (the overscan, else the prescan) and TRIMSEC (the data section), 1-based."""
    if not (spec.overscan or spec.prescan):
        return []
    rows, cols = spec.shape
    pre, end = spec.prescan, spec.prescan + cols
    if spec.overscan:
        bias = ("BIASSEC", f"[{end + 1}:{end + spec.overscan},1:{rows}]", "Overscan region")
    else:
        bias = ("BIASSEC", f"[1:{pre},1:{rows}]", "Prescan region")
    return [bias, ("TRIMSEC", f"[{pre + 1}:{end},1:{rows}]", "Useful part of data")]


def bayer_cards(spec: SimSpec) -> dict[str, Any]:
    """The colour-camera cards `spec.dialect` writes (BAYERPAT, XBAYROFF, YBAYROFF, ROWORDER),
    in writing order; empty for a mono camera (nina's ROWORDER is written in `_cards_nina`)."""
    if spec.bayer is None:
        return {}
    xoff, yoff = spec.bayer_offset
    cards: dict[str, Any] = {"BAYERPAT": mosaic.header_pattern(spec.bayer, xoff, yoff)}
    if spec.dialect == "nina" or (spec.dialect == "asiair" and (xoff, yoff) != (0, 0)):
        cards.update(XBAYROFF=xoff, YBAYROFF=yoff)
    if spec.dialect in ("nina", "asiair") and spec.row_order is not None:
        cards["ROWORDER"] = spec.row_order
    return cards


_BAYER_COMMENTS = {
    "BAYERPAT": "Sensor Bayer pattern",
    "XBAYROFF": "Bayer pattern X axis offset",
    "YBAYROFF": "Bayer pattern Y axis offset",
    "ROWORDER": "FITS Image Orientation",
}


def _bayer_card_list(spec: SimSpec, *, skip: tuple[str, ...] = ()) -> list[Card]:
    return [(k, v, _BAYER_COMMENTS[k]) for k, v in bayer_cards(spec).items() if k not in skip]


def _cards_maxim(frame: PlannedFrame, spec: SimSpec) -> list[Card]:
    jd = frame.date_obs.timestamp() / 86400.0 + 2440587.5
    cards = [
        ("DATE-OBS", _isot(frame.date_obs, 0), "YYYY-MM-DDThh:mm:ss observation start, UT"),
        ("EXPTIME", frame.exptime, "Exposure time in seconds"),
        ("EXPOSURE", frame.exptime, "Exposure time in seconds"),
        ("SET-TEMP", frame.set_temp, "CCD temperature setpoint in C"),
        ("CCD-TEMP", frame.ccd_temp, "CCD temperature at start of exposure in C"),
        ("XBINNING", 1, "Binning factor in width"),
        ("YBINNING", 1, "Binning factor in height"),
        ("READOUTM", "Normal", "Readout mode of image"),
    ]
    if frame.filter:
        cards.append(("FILTER", frame.filter, "Filter used when taking image"))
    cards += [
        ("IMAGETYP", _TYPE_WORDS["maxim"][frame.frame_type], "Type of image"),
        ("JD", round(jd, 8), "Julian Date at start of exposure"),
        ("EGAIN", spec.gain, "Electronic gain in e-/ADU"),
        ("SWCREATE", "MaxIm DL Version 6.50", "Name of software that created the image"),
        ("OBJECT", frame.target or "", ""),
        ("TELESCOP", spec.telescope, "telescope used to acquire this image"),
    ]
    return cards


def _cards_nina(frame: PlannedFrame, spec: SimSpec) -> list[Card]:
    cards = [
        ("IMAGETYP", _TYPE_WORDS["nina"][frame.frame_type], "Type of exposure"),
        ("EXPOSURE", frame.exptime, "[s] Exposure duration"),
        ("EXPTIME", frame.exptime, "[s] Exposure duration"),
        ("DATE-LOC", _isot(_local(frame, spec), 7), "Time of observation (local)"),
        ("DATE-OBS", _isot(frame.date_obs, 7), "Time of observation (UTC)"),
        ("XBINNING", 1, "X axis binning factor"),
        ("YBINNING", 1, "Y axis binning factor"),
        ("GAIN", spec.gain_setting, "Sensor gain"),
        ("OFFSET", spec.offset_setting, "Sensor gain offset"),
        ("EGAIN", spec.gain, "[e-/ADU] Electrons per A/D unit"),
        ("SET-TEMP", frame.set_temp, "[degC] CCD temperature setpoint"),
        ("CCD-TEMP", frame.ccd_temp, "[degC] CCD temperature"),
        ("READOUTM", "Normal", "Sensor readout mode"),
        ("TELESCOP", spec.telescope, "Name of telescope"),
        ("FILTER", frame.filter or spec.filters[0], "Active filter name"),
    ]
    if frame.target:
        cards.append(("OBJECT", frame.target, "Name of the object of interest"))
        cards += _pointing_cards(frame, spec)
    cards += _bayer_card_list(spec, skip=("ROWORDER",))
    if spec.row_order is not None:  # N.I.N.A. writes it for mono cameras too
        cards.append(("ROWORDER", spec.row_order, "FITS Image Orientation"))
    cards.append(("SWCREATE", "N.I.N.A. 3.1.2.9001 (x64)", "Software that created this file"))
    return cards


def _cards_iraf(frame: PlannedFrame, spec: SimSpec) -> list[Card]:
    word = _TYPE_WORDS["iraf"][frame.frame_type]
    obj = {"light": frame.target, "bias": "bias", "dark": f"dark {frame.exptime:g}s", "flat": f"flat {frame.filter}"}[
        frame.frame_type
    ]
    t = frame.date_obs
    cards = [
        ("OBSERVAT", "SIMOBS", "observatory"),
        ("TELESCOP", spec.telescope, ""),
        ("OBJECT", obj, ""),
        ("OBSTYPE", word, "observation type"),
        ("IMAGETYP", word, "IRAF image type"),
        ("DATE-OBS", t.strftime("%Y-%m-%d"), "UT date of exposure start"),
        ("TIME-OBS", t.strftime("%H:%M:%S.") + str(t.microsecond // 100000), "UT at exposure start"),
        ("EXPTIME", frame.exptime, "integration time in secs"),
        ("CCDTEMP", round(frame.ccd_temp + 273.15, 2), "[K] detector temperature"),
        ("CCDSUM", "1 1", "on-chip binning"),
    ]
    if frame.filter:
        cards.append(("FILTER1", frame.filter, "filter wheel 1"))
    cards += [("GAIN", spec.gain, "e-/ADU"), ("RDNOISE", spec.read_noise, "e-(rms) read noise")]
    return cards


def _cards_theskyx(frame: PlannedFrame, spec: SimSpec) -> list[Card]:
    cards = [
        ("OBJECT", frame.target or "", "Object name"),
        ("TELESCOP", spec.telescope, "Telescope"),
        ("EXPTIME", frame.exptime, "Exposure time in seconds"),
        ("DATE-OBS", _isot(frame.date_obs, 3), "UTC start date of observation"),
        ("LOCALTIM", _localtim(_local(frame, spec)), "Local time at start of exposure"),
        ("CCD-TEMP", frame.ccd_temp, "Temperature of CCD"),
        ("SET-TEMP", frame.set_temp, "Temperature setpoint"),
        ("XBINNING", 1, "Binning factor in width"),
        ("YBINNING", 1, "Binning factor in height"),
        ("IMAGETYP", _TYPE_WORDS["theskyx"][frame.frame_type], "Type of image"),
        ("PICTTYPE", _PICTTYPE[frame.frame_type], "Image type as an index"),
        ("EGAIN", spec.gain, "Electrons per ADU"),
    ]
    if frame.filter:
        cards.append(("FILTER", frame.filter, "Filter name"))
    cards.append(("SWCREATE", "TheSkyX Professional Edition 10.5.0", "Software that created image"))
    return cards


def _localtim(t: datetime) -> str:
    """TheSkyX's LOCALTIM: US-style local time, e.g. '11/20/2026 09:03:04.123 PM'."""
    return t.strftime("%m/%d/%Y %I:%M:%S.") + f"{t.microsecond // 1000:03d}" + t.strftime(" %p")


def _cards_asiair(frame: PlannedFrame, spec: SimSpec) -> list[Card]:
    cards = [
        ("EXPOSURE", f"{frame.exptime:.3f}", "Exposure time in seconds"),
        ("DATE-OBS", _isot(frame.date_obs, 6), "Start of exposure, UTC"),
        ("CCD-TEMP", round(frame.ccd_temp, 1), "Sensor temperature (C)"),
        ("SET-TEMP", frame.set_temp, "Cooler target (C)"),
        ("GAIN", spec.gain_setting, "Gain setting"),
        ("OFFSET", spec.offset_setting, "Offset setting"),
        ("XBINNING", 1, ""),
        ("YBINNING", 1, ""),
        ("TELESCOP", spec.telescope, ""),
        ("CREATOR", "ZWO ASIAIR Plus", ""),
    ]
    if frame.filter:
        cards.append(("FILTER", frame.filter, ""))
    if frame.target:
        cards.append(("OBJECT", frame.target, ""))
    return cards + _bayer_card_list(spec)


def target_radec(spec: SimSpec, name: str) -> tuple[float, float]:
    """A target's (RA, Dec) in degrees: its spec's, or a fixed one derived from its name."""
    target = next(t for t in spec.targets if t.name == name)
    crc = zlib.crc32(name.encode())
    ra = target.ra if target.ra is not None else (crc % 360000) / 1000.0
    dec = target.dec if target.dec is not None else (crc // 360000 % 120000) / 1000.0 - 30.0
    return ra, dec


def _sexagesimal(value: float, decimals: int, signed: bool) -> str:
    """'hh mm ss.ss' or '+dd mm ss.s', as N.I.N.A. writes OBJCTRA/OBJCTDEC."""
    total = round(abs(value) * 3600.0, decimals)
    units, rest = divmod(total, 3600.0)
    minutes, seconds = divmod(rest, 60.0)
    text = f"{int(units):02d} {int(minutes):02d} {seconds:0{3 + decimals}.{decimals}f}"
    return ("-" if value < 0 else "+") + text if signed else text


def _pointing_cards(frame: PlannedFrame, spec: SimSpec) -> list[Card]:
    """A light's pointing and site, as N.I.N.A. writes them, when the targets are on the sky
    (``spec.pixel_scale`` set); nothing otherwise, so older simulated nights keep their bytes."""
    if spec.pixel_scale is None:
        return []
    ra, dec = target_radec(spec, frame.target)
    lon, lat = spec.site
    return [
        ("RA", round(ra, 6), "[deg] RA of telescope"),
        ("DEC", round(dec, 6), "[deg] Declination of telescope"),
        ("OBJCTRA", _sexagesimal(ra / 15.0, 2, False), "[H M S] RA of imaged object"),
        ("OBJCTDEC", _sexagesimal(dec, 1, True), "[D M S] Declination of imaged object"),
        ("SITELAT", lat, "[deg] Observation site latitude"),
        ("SITELONG", lon, "[deg] Observation site longitude"),
    ]


def _cards_seestar(frame: PlannedFrame, spec: SimSpec) -> list[Card]:
    """A ZWO Seestar S50's header, card for card in a real file's order (module docstring)."""
    cards: list[Card] = [
        ("CREATOR", "ZWO Seestar S50", "Capture software"),
        ("PRODUCER", "ZWO", "Powered by ZWO"),
        ("XORGSUBF", 0, "Subframe X position in binned pixels"),
        ("YORGSUBF", 0, "Subframe Y position in binned pixels"),
        ("FOCALLEN", 250, "Focal length of telescope in mm"),
        ("APERTURE", 5.0, "Name of field of view aperture"),
        ("PROGRAM", "4.43", "The name of the software task that created the"),
        ("XBINNING", 1, "Camera X Bin"),
        ("YBINNING", 1, "Camera Y Bin"),
        ("CCDXBIN", 1, "Camera X Bin"),
        ("CCDYBIN", 1, "Camera Y Bin"),
        ("XPIXSZ", 2.90000009536743, "pixel size in microns (with binning)"),
        ("YPIXSZ", 2.90000009536743, "pixel size in microns (with binning)"),
        ("IMAGETYP", _TYPE_WORDS["seestar"][frame.frame_type], "Type of image"),
        ("EXPOSURE", frame.exptime, "Exposure time in seconds"),
        ("EXPTIME", frame.exptime, "Exposure time in seconds"),
        ("CCD-TEMP", round(frame.ccd_temp * 16) / 16, "sensor temperature in C"),
    ]
    if frame.target:
        ra, dec = target_radec(spec, frame.target)
        cards += [
            ("RA", ra, "Object Right Ascension in degrees"),
            ("DEC", dec, "Object Declination in degrees"),
        ]
    lon, lat = spec.site
    cards += [
        ("SITELONG", lon, "longitude of the imaging site in degrees"),
        ("SITELAT", lat, "latitude of the imaging site in degrees"),
        ("DATE-OBS", _isot(frame.date_obs, 6), "Image created time"),
        ("FILTER", frame.filter or "IRCUT", "Filter used when taking image"),
        ("INSTRUME", spec.instrument, "Camera model"),
        ("BAYERPAT", bayer_cards(spec)["BAYERPAT"], "Bayer pattern"),
        ("GAIN", 80, "Gain Value"),
        ("FOCUSPOS", 1655, "Focuser position in steps"),
        ("TELESCOP", spec.telescope, "Telescope name"),
    ]
    if frame.target:
        cards.append(("OBJECT", frame.target, "name or catalog number of object being imaged"))
    cards.append(("TOTALEXP", frame.exptime, "Total Exposure Time in seconds"))
    return cards + _section_cards(spec)


def _name_maxim(frame: PlannedFrame, spec: SimSpec, n: Counter) -> str:
    kind = frame.frame_type
    key = {"light": (kind, frame.target, frame.filter), "flat": (kind, frame.filter)}.get(kind, kind)
    n[key] += 1
    return {
        "light": f"{frame.target}-{n[key]:03d}{frame.filter}.fit",
        "bias": f"Bias-{n[key]:03d}.fit",
        "dark": f"Dark-{n[key]:03d}-{frame.exptime:g}s.fit",
        "flat": f"Flat-{n[key]:03d}-{frame.filter}.fit",
    }[kind]


def _name_nina(frame: PlannedFrame, spec: SimSpec, n: Counter) -> str:
    word = _TYPE_WORDS["nina"][frame.frame_type]
    n[word] += 1
    stamp = _local(frame, spec).strftime("%Y-%m-%d_%H-%M-%S")
    subject, wheel = frame.target or word, frame.filter or spec.filters[0]
    return f"{word}/{stamp}_{subject}_{wheel}_{frame.exptime:.2f}s_{n[word]:04d}.fits"


def _name_iraf(frame: PlannedFrame, spec: SimSpec, n: Counter) -> str:
    n["all"] += 1
    return f"a{n['all']:04d}.fits"


def _name_theskyx(frame: PlannedFrame, spec: SimSpec, n: Counter) -> str:
    n["all"] += 1
    subject = frame.target or frame.frame_type.capitalize()
    return f"{subject}.{n['all']:08d}.{frame.frame_type.upper()}.FIT"


def _name_asiair(frame: PlannedFrame, spec: SimSpec, n: Counter) -> str:
    prefix = _ASIAIR_PREFIX[frame.frame_type]
    n[prefix] += 1
    stamp = _local(frame, spec).strftime("%Y%m%d-%H%M%S")
    exposure = f"{frame.exptime:.1f}s" if frame.exptime >= 1.0 else f"{frame.exptime * 1000:.1f}ms"
    parts = [
        prefix,
        frame.target,
        exposure,
        "Bin1",
        frame.filter,
        f"gain{spec.gain_setting}",
        stamp,
        f"{frame.ccd_temp:.1f}C",
        f"{n[prefix]:04d}",
    ]
    return "_".join(p for p in parts if p) + ".fit"


SEESTAR_SAVE_DELAY = 2.5  # s after the exposure ends: when the S50 saves (names) the file


def _name_seestar(frame: PlannedFrame, spec: SimSpec, n: Counter) -> str:
    saved = frame.date_obs + timedelta(seconds=frame.exptime + SEESTAR_SAVE_DELAY)
    stamp = saved.astimezone(ZoneInfo(spec.timezone)).strftime("%Y%m%d-%H%M%S")
    parts = [
        _TYPE_WORDS["seestar"][frame.frame_type],
        frame.target,
        f"{frame.exptime:.1f}s",
        frame.filter or "IRCUT",
        stamp,
    ]
    name = "_".join(p for p in parts if p)
    n[name] += 1  # never two files in one second of one kind, but never overwrite either
    return f"{name}.fit" if n[name] == 1 else f"{name}_{n[name]}.fit"


_DIALECTS: dict[
    str, tuple[Callable[[PlannedFrame, SimSpec], list[Card]], Callable[[PlannedFrame, SimSpec, Counter], str]]
] = {
    "maxim": (_cards_maxim, _name_maxim),
    "nina": (_cards_nina, _name_nina),
    "iraf": (_cards_iraf, _name_iraf),
    "theskyx": (_cards_theskyx, _name_theskyx),
    "asiair": (_cards_asiair, _name_asiair),
    "seestar": (_cards_seestar, _name_seestar),
}
_OWN_LAYOUT = ("seestar",)  # dialects that place INSTRUME and the sections themselves

DIALECTS: tuple[str, ...] = tuple(_DIALECTS)


def frame_header(frame: PlannedFrame, spec: SimSpec) -> tuple[Card, ...]:
    """The frame's header as `spec.dialect` writes it, after the cards all dialects share."""
    cards, _ = _DIALECTS[spec.dialect]
    if spec.dialect in _OWN_LAYOUT:
        return tuple(cards(frame, spec))
    return tuple(_common_cards(spec) + cards(frame, spec))


def frame_name(frame: PlannedFrame, spec: SimSpec, counters: Counter) -> str:
    """The frame's path relative to OUTDIR; `counters` carries the numbering across frames."""
    _, name = _DIALECTS[spec.dialect]
    return name(frame, spec, counters)
