"""The simulated camera: a seeded, realistic night of raw FITS files (SPEC §6).

`plan_night(spec)` is pure: it returns every frame of the night in acquisition order
(file name, header cards, UTC start time, and for lights the sky-to-frame transform and
observing conditions). `write_night(outdir, spec)` synthesises the pixels
(`observd.sim.scene`), writes the files in that order the way camera software does
(optionally paced, in chunks, or under a temporary name) and writes the ground truth.
The same spec gives byte-identical files: no wall-clock value enters a header, and
every random draw comes from `numpy.random.default_rng([seed, stream, ...])`, one stream
per purpose (sensor, optics, flats, star catalogues, seeing, plan, each frame's noise), so
the camera and the star fields stay the same when only the plan changes.
`build_night` + `synthesize` expose the pixel synthesis alone (benchmarks, custom writers).

The night (local time in `spec.timezone`; DATE-OBS always written in UTC)
-----------------------------------------------------------------------------
each block starts 0-5 min after its nominal time: dusk flats at 18:00 (when
``flats_at='dusk'``), biases from 18:30, darks after them
(10 min of cooler settling between temperatures), lights from 20:00 (or when the darks
end): per target, filters interleaved (L R G B L R G B ...) as sequencers loop them, 5 min
slew between targets; dawn flats at 06:30 next morning (or after the last light) and
written last when ``flats_at='dawn'``. Each exposure starts after the previous one ends
plus ~2-2.5 s download, lights also ~5-10 s of dither settling.

Dialects (what classification is tested against)
------------------------------------------------
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

All files: BITPIX 16, BZERO 32768 (uint16, as cameras write), primary HDU only. With
``overscan > 0`` every frame gets that many overscan columns on the right and
BIASSEC/TRIMSEC (1-based, inclusive) saying so; all truth coordinates refer to the data
section, which starts at column 1 either way.

Image model (see `observd.sim.scene`)
-------------------------------------
raw = bias_level + bias pattern + Poisson(electrons) / gain + read noise (+ cosmic rays),
rounded and clipped to 0..65535, where electrons = (sky + stars) x flat x t + dark(T) x t.
`sky` is in e-/s/pixel; star fluxes are chosen per target from the sky noise so the
faintest are at the detection limit and a few saturate; PSF Moffat (beta 3), FWHM 2.5-3.5 px.
Clouded lights: transparency 0.1-0.2 and 1.3-2x the sky; clear ones 0.92-1.0. Trailed
lights: stars smeared over a 10-15 px segment centred on their position. Cosmic rays:
``cosmic_rays`` hits of 1-3 pixels per 512x512 light (scaled by area); darks get the same
rate per second as a light of the targets' mean exposure; never multiplied by the flat.

Ground truth (``truth=True``): OUTDIR/truth.json and OUTDIR/truth.npz
---------------------------------------------------------------------
truth.json::

    {"seed", "dialect", "shape": [rows, cols], "overscan",
     "gain": e-/ADU, "read_noise": e-, "read_noise_adu", "bias_level": ADU, "saturation": 65535,
     "dark_ref_temp": degC, "dark_doubling_temp": 6.0,
     "hot_pixels": [[x, y], ...],                       # 0-based pixel coordinates
     "arrays": {"bias": "bias",                         # npz keys, see below
                "dark": {"-10.0": "dark_0", ...},       # per temperature (str(float) keys)
                "flat": {"L": "flat_0", ...}},
     "targets": {"M42": {"exptime", "filters": [...], "fwhm",
                         "stars": [[x_sky, y_sky, flux_adu], ...]}},  # brightest first
     "files": [{"name": relative posix path, "type", "target", "filter", "exptime",
                "ccd_temp", "set_temp", "date_obs": ISO-8601 UTC,
                "cosmic_rays": [[x, y], ...],            # lights and darks
                # lights only:
                "matrix": 3x3, "fwhm", "transparency", "sky_adu", "trail": [dx, dy],
                "clouded", "trailed", "flipped"}, ...]}

truth.npz (float32, data-section shape): ``bias`` = bias level + pattern (ADU, the mean of
infinitely many biases); ``dark_<i>`` = dark current in ADU/s at each temperature of
``arrays.dark`` (the dark temperatures and the light set point); ``flat_<i>`` = flat of
each filter normalised to mean 1.

Star fluxes are in ADU for one light exposure of that target at flat = 1 and
transparency = 1. The matrix maps sky-frame pixels to frame pixels:
[x_frame, y_frame, 1]^T = M @ [x_sky, y_sky, 1]^T, x = column, y = row, 0-based pixel
centres; the sky frame is an un-drifted, un-rotated frame. Flipped lights (meridian flip)
carry an extra 180 deg rotation about the frame centre plus a re-centring offset.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from astropy.io import fits

from observd.sim import scene

DIALECTS: tuple[str, ...] = ("maxim", "nina", "iraf", "theskyx", "asiair")
FLAT_TIMES = ("dawn", "dusk")

# Independent random streams: default_rng([seed, STREAM, index...]).
_S_SENSOR, _S_OPTICS, _S_FLAT, _S_CATALOG, _S_SEEING, _S_PLAN, _S_FRAME = range(7)

_FLAT_EXPTIME = {"L": 1.0, "R": 2.0, "G": 2.0, "B": 3.0, "Ha": 20.0, "OIII": 20.0, "SII": 20.0}
_FLAT_EXPTIME_OTHER = 2.0


@dataclass(frozen=True)
class TargetSpec:
    name: str = "M42"                 # OBJECT
    filters: tuple[str, ...] = ("L",)
    n_lights: int = 6                 # per filter
    exptime: float = 60.0
    n_stars: int = 150


@dataclass(frozen=True)
class SimSpec:
    seed: int = 1
    shape: tuple[int, int] = (512, 512)      # (rows, cols) of the data section
    dialect: str = "nina"                    # one of DIALECTS
    night: str = "2026-11-20"                # local date of the evening
    timezone: str = "Europe/Berlin"          # site timezone; DATE-OBS written in UTC
    instrument: str = "SimCam 4000"
    telescope: str = "SimScope 80/480"
    n_bias: int = 9
    n_dark: int = 7                          # per (exposure, temperature)
    dark_exptimes: tuple[float, ...] | None = None   # None = the lights' exposure times
    dark_temps: tuple[float, ...] = (-10.0,)
    n_flat: int = 7                          # per filter
    flats_at: str = "dawn"                   # 'dawn' (after lights) or 'dusk' (before)
    targets: tuple[TargetSpec, ...] = (TargetSpec(),)
    ccd_temp: float = -10.0                  # set point; frames jitter +-0.1 degC around it
    gain: float = 1.5                        # e-/ADU
    gain_setting: int = 100                  # CMOS GAIN setting written by nina/asiair
    offset_setting: int = 50                 # CMOS OFFSET setting written by nina/asiair
    read_noise: float = 8.0                  # e-
    bias_level: float = 1000.0               # ADU
    dark_current: float = 0.05               # e-/s/pixel at ccd_temp (doubles every 6 degC)
    hot_pixel_fraction: float = 2e-4
    sky: float = 200.0                       # e-/s/pixel at flat = 1 (a suburban sky)
    drift: float = 0.7                       # px per light (linear drift + random walk)
    field_rotation: float = 0.02             # degrees per light
    meridian_flip: bool = True               # second half of each target's lights rotated 180 deg
    n_clouded: int = 1                       # per target: transparency 0.1-0.2, brighter sky
    n_trailed: int = 1                       # per target: stars trailed over 10-15 px
    cosmic_rays: int = 20                    # per 512x512 light (scaled with area)
    overscan: int = 0                        # overscan columns on the right (adds BIASSEC/TRIMSEC)
    pace: float = 0.0                        # seconds between files (wall clock)
    chunked: bool = False                    # write each file in 4 chunks with pauses
    chunk_delay: float = 0.05
    temp_names: bool = False                 # write 'name.tmp' then rename (like N.I.N.A./SGP)
    truth: bool = True                       # write truth.json + truth.npz in OUTDIR

    def __post_init__(self) -> None:
        problems = []
        if self.dialect not in DIALECTS:
            problems.append(f"dialect {self.dialect!r} is not one of {DIALECTS}")
        if self.flats_at not in FLAT_TIMES:
            problems.append(f"flats_at {self.flats_at!r} is not one of {FLAT_TIMES}")
        if len(self.shape) != 2 or min(self.shape) < 16:
            problems.append(f"shape {self.shape!r} must be (rows, cols), each >= 16")
        if not self.targets:
            problems.append("targets is empty")
        if len({t.name for t in self.targets}) != len(self.targets):
            problems.append("target names must be unique")
        if self.gain <= 0 or self.read_noise < 0 or self.overscan < 0:
            problems.append("gain must be > 0, read_noise and overscan >= 0")
        try:
            date.fromisoformat(self.night)
            ZoneInfo(self.timezone)
        except (ValueError, KeyError) as exc:
            problems.append(f"night/timezone: {exc}")
        if problems:
            raise ValueError("invalid SimSpec: " + "; ".join(problems))

    @property
    def filters(self) -> tuple[str, ...]:
        """Every filter used by a target, in order of first use (one flat set each)."""
        return tuple(dict.fromkeys(f for t in self.targets for f in t.filters))

    @property
    def dark_exposures(self) -> tuple[float, ...]:
        if self.dark_exptimes is not None:
            return tuple(self.dark_exptimes)
        return tuple(dict.fromkeys(t.exptime for t in self.targets))


@dataclass(frozen=True)
class LightState:
    """How one light saw the sky: geometry and conditions (all in the ground truth)."""

    matrix: tuple[tuple[float, float, float], ...]   # sky -> frame, 3x3
    fwhm: float                # px, PSF before trailing
    transparency: float        # fraction of star light getting through
    sky_rate: float            # e-/s/pixel at flat = 1
    trail: tuple[float, float] = (0.0, 0.0)   # (dx, dy) px of star motion during the exposure
    clouded: bool = False
    trailed: bool = False
    flipped: bool = False


@dataclass(frozen=True)
class PlannedFrame:
    index: int                 # acquisition order, 0-based
    frame_type: str            # 'bias' | 'dark' | 'flat' | 'light'
    exptime: float
    ccd_temp: float            # actual sensor temperature, degC
    set_temp: float            # cooler set point, degC
    date_obs: datetime         # exposure start, aware UTC
    name: str = ""             # path relative to OUTDIR (posix)
    header: tuple[tuple[str, Any, str], ...] = ()   # dialect cards (key, value, comment)
    target: str | None = None
    filter: str | None = None
    flat_level: float = 0.0    # flats: mean illumination, e-/pixel at flat = 1
    light: LightState | None = None


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([*key])


# --------------------------------------------------------------------------- planning

def plan_night(spec: SimSpec) -> list[PlannedFrame]:
    """The whole night in acquisition order: names, headers, times and light geometry."""
    counters: Counter = Counter()
    return [replace(frame, name=_NAMERS[spec.dialect](frame, spec, counters),
                    header=tuple(_common_cards(spec) + _DIALECT_CARDS[spec.dialect](frame, spec)))
            for frame in _schedule(spec, _rng(spec.seed, _S_PLAN))]


def _schedule(spec: SimSpec, rng: np.random.Generator) -> list[PlannedFrame]:
    """Frames with their times and conditions, not yet named: see the module docstring."""
    tz = ZoneInfo(spec.timezone)
    evening = date.fromisoformat(spec.night)

    def local(hour: int, minute: int, days: int = 0) -> datetime:
        """A block's start: the wall-clock time plus a few minutes nobody is punctual by."""
        wall = datetime(evening.year, evening.month, evening.day, hour, minute, tzinfo=tz)
        late = timedelta(seconds=rng.uniform(0.0, 300.0))
        return (wall + timedelta(days=days)).astimezone(timezone.utc) + late

    def readout() -> timedelta:
        return timedelta(seconds=2.0 + rng.uniform(0.0, 0.5))

    frames: list[PlannedFrame] = []

    def shoot(kind: str, exptime: float, set_temp: float, start: datetime, **extra: Any) -> None:
        ccd_temp = round(set_temp + rng.uniform(-0.1, 0.1), 2)
        frames.append(PlannedFrame(len(frames), kind, float(exptime), ccd_temp, float(set_temp),
                                   start, **extra))

    t = local(18, 0)

    def flats(t: datetime) -> datetime:
        for f in spec.filters:
            exptime = _FLAT_EXPTIME.get(f, _FLAT_EXPTIME_OTHER)
            for _ in range(spec.n_flat):
                level_adu = rng.uniform(0.30, 0.50) * scene.ADU_MAX - spec.bias_level
                shoot("flat", exptime, spec.ccd_temp, t, filter=f, flat_level=level_adu * spec.gain)
                t += timedelta(seconds=exptime) + readout()
        return t

    if spec.flats_at == "dusk":
        t = flats(t) + timedelta(minutes=10)
    t = max(t, local(18, 30))
    for _ in range(spec.n_bias):
        shoot("bias", 0.0, spec.ccd_temp, t)
        t += readout()
    for k, temp in enumerate(spec.dark_temps):
        if k:
            t += timedelta(minutes=10)
        for exptime in spec.dark_exposures:
            for _ in range(spec.n_dark):
                shoot("dark", exptime, temp, t)
                t += timedelta(seconds=float(exptime)) + readout()

    t = max(t + timedelta(minutes=5), local(20, 0))
    for k, target in enumerate(spec.targets):
        if k:
            t += timedelta(minutes=5)
        for (f, state) in _light_states(spec, target, k, rng):
            shoot("light", target.exptime, spec.ccd_temp, t, target=target.name, filter=f, light=state)
            t += (timedelta(seconds=target.exptime) + readout()
                  + timedelta(seconds=rng.uniform(5.0, 10.0)))
    if spec.flats_at == "dawn":
        flats(max(t + timedelta(minutes=10), local(6, 30, days=1)))
    return frames


def _light_states(spec: SimSpec, target: TargetSpec, k: int,
                  rng: np.random.Generator) -> list[tuple[str, LightState]]:
    """Per light of one target (time order): filter and how it saw the sky."""
    order = [f for _ in range(target.n_lights) for f in target.filters]
    n = len(order)
    n_bad = min(n, spec.n_clouded + spec.n_trailed)
    bad = [int(i) for i in rng.choice(n, size=n_bad, replace=False)] if n else []
    clouded = set(bad[:min(spec.n_clouded, n_bad)])
    trailed = set(bad[len(clouded):])
    flip_from = n - n // 2 if spec.meridian_flip else n
    rows, cols = spec.shape
    centre = np.array([(cols - 1) / 2.0, (rows - 1) / 2.0])
    heading = rng.uniform(0, 2 * np.pi)
    step = spec.drift * np.array([np.cos(heading), np.sin(heading)])
    offset = rng.normal(0.0, 1.5, 2)
    recentre = rng.uniform(-10.0, 10.0, 2)      # plate-solve re-centring error after the flip
    base_fwhm = _target_fwhm(spec, k)
    states = []
    for i, f in enumerate(order):
        if i:
            offset = offset + step + rng.normal(0.0, 0.3 * spec.drift, 2)
        flipped = i >= flip_from
        angle = i * spec.field_rotation + (180.0 if flipped else 0.0)
        shift = offset + (recentre if flipped else 0.0)
        fwhm = float(np.clip(base_fwhm + rng.normal(0.0, 0.15), 2.5, 3.5))
        is_cloud, is_trail = i in clouded, i in trailed
        transparency = rng.uniform(0.1, 0.2) if is_cloud else rng.uniform(0.92, 1.0)
        sky = spec.sky * (rng.uniform(1.3, 2.0) if is_cloud else rng.uniform(0.95, 1.05))
        trail = (0.0, 0.0)
        if is_trail:
            length, psi = rng.uniform(10.0, 15.0), rng.uniform(0, 2 * np.pi)
            trail = (float(length * np.cos(psi)), float(length * np.sin(psi)))
        states.append((f, LightState(
            matrix=_matrix(angle, shift, centre), fwhm=round(fwhm, 4),
            transparency=float(transparency), sky_rate=float(sky), trail=trail,
            clouded=is_cloud, trailed=is_trail, flipped=flipped)))
    return states


def _target_fwhm(spec: SimSpec, k: int) -> float:
    """The seeing of target k (its frames vary +-0.15 px around it)."""
    return float(_rng(spec.seed, _S_SEEING, k).uniform(2.7, 3.2))


def _matrix(angle_deg: float, shift: np.ndarray, centre: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """Rotation by `angle_deg` about the frame centre, then translation by `shift`."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    t = centre - rot @ centre + shift
    m = np.array([[rot[0, 0], rot[0, 1], t[0]], [rot[1, 0], rot[1, 1], t[1]], [0.0, 0.0, 1.0]])
    return tuple(tuple(float(v) for v in row) for row in m)


# --------------------------------------------------------------------------- dialects

_TYPE_WORDS = {   # frame type -> value per dialect keyword convention
    "maxim": {"light": "Light Frame", "bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field"},
    "nina": {"light": "LIGHT", "bias": "BIAS", "dark": "DARK", "flat": "FLAT"},
    "iraf": {"light": "object", "bias": "zero", "dark": "dark", "flat": "flat"},
    "theskyx": {"light": "Light Frame", "bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field"},
}
_PICTTYPE = {"light": 1, "bias": 2, "dark": 3, "flat": 4}
_ASIAIR_PREFIX = {"light": "Light", "bias": "Bias", "dark": "Dark", "flat": "Flat"}


def _local(frame: PlannedFrame, spec: SimSpec) -> datetime:
    return frame.date_obs.astimezone(ZoneInfo(spec.timezone))


def _utc_str(t: datetime, digits: int) -> str:
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{t.microsecond:06d}0"[:digits]
    return text


def _common_cards(spec: SimSpec) -> list[tuple[str, Any, str]]:
    """Cards every dialect writes; overscan sections only when there is an overscan."""
    cards: list[tuple[str, Any, str]] = [("INSTRUME", spec.instrument, "Imaging instrument name")]
    if spec.overscan:
        rows, cols = spec.shape
        cards += [("BIASSEC", f"[{cols + 1}:{cols + spec.overscan},1:{rows}]", "Overscan region"),
                  ("TRIMSEC", f"[1:{cols},1:{rows}]", "Useful part of data")]
    return cards


def _cards_maxim(frame: PlannedFrame, spec: SimSpec) -> list[tuple[str, Any, str]]:
    jd = frame.date_obs.timestamp() / 86400.0 + 2440587.5
    cards = [
        ("DATE-OBS", _utc_str(frame.date_obs, 0), "YYYY-MM-DDThh:mm:ss observation start, UT"),
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


def _cards_nina(frame: PlannedFrame, spec: SimSpec) -> list[tuple[str, Any, str]]:
    cards = [
        ("IMAGETYP", _TYPE_WORDS["nina"][frame.frame_type], "Type of exposure"),
        ("EXPOSURE", frame.exptime, "[s] Exposure duration"),
        ("EXPTIME", frame.exptime, "[s] Exposure duration"),
        ("DATE-LOC", _utc_str(_local(frame, spec), 7), "Time of observation (local)"),
        ("DATE-OBS", _utc_str(frame.date_obs, 7), "Time of observation (UTC)"),
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
    cards += [("ROWORDER", "TOP-DOWN", "FITS Image Orientation"),
              ("SWCREATE", "N.I.N.A. 3.1.2.9001 (x64)", "Software that created this file")]
    return cards


def _cards_iraf(frame: PlannedFrame, spec: SimSpec) -> list[tuple[str, Any, str]]:
    word = _TYPE_WORDS["iraf"][frame.frame_type]
    obj = {"light": frame.target, "bias": "bias", "dark": f"dark {frame.exptime:g}s",
           "flat": f"flat {frame.filter}"}[frame.frame_type]
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


def _cards_theskyx(frame: PlannedFrame, spec: SimSpec) -> list[tuple[str, Any, str]]:
    cards = [
        ("OBJECT", frame.target or "", "Object name"),
        ("TELESCOP", spec.telescope, "Telescope"),
        ("EXPTIME", frame.exptime, "Exposure time in seconds"),
        ("DATE-OBS", _utc_str(frame.date_obs, 3), "UTC start date of observation"),
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


def _cards_asiair(frame: PlannedFrame, spec: SimSpec) -> list[tuple[str, Any, str]]:
    cards = [
        ("EXPOSURE", f"{frame.exptime:.3f}", "Exposure time in seconds"),
        ("DATE-OBS", _utc_str(frame.date_obs, 6), "Start of exposure, UTC"),
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
    return cards


_DIALECT_CARDS: dict[str, Callable[[PlannedFrame, SimSpec], list[tuple[str, Any, str]]]] = {
    "maxim": _cards_maxim, "nina": _cards_nina, "iraf": _cards_iraf,
    "theskyx": _cards_theskyx, "asiair": _cards_asiair,
}


def _name_maxim(frame: PlannedFrame, spec: SimSpec, n: Counter) -> str:
    kind = frame.frame_type
    key = {"light": (kind, frame.target, frame.filter), "flat": (kind, frame.filter)}.get(kind, kind)
    n[key] += 1
    return {"light": f"{frame.target}-{n[key]:03d}{frame.filter}.fit",
            "bias": f"Bias-{n[key]:03d}.fit",
            "dark": f"Dark-{n[key]:03d}-{frame.exptime:g}s.fit",
            "flat": f"Flat-{n[key]:03d}-{frame.filter}.fit"}[kind]


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
    parts = [prefix, frame.target, exposure, "Bin1", frame.filter, f"gain{spec.gain_setting}",
             stamp, f"{frame.ccd_temp:.1f}C", f"{n[prefix]:04d}"]
    return "_".join(p for p in parts if p) + ".fit"


_NAMERS: dict[str, Callable[[PlannedFrame, SimSpec, Counter], str]] = {
    "maxim": _name_maxim, "nina": _name_nina, "iraf": _name_iraf,
    "theskyx": _name_theskyx, "asiair": _name_asiair,
}


# --------------------------------------------------------------------------- synthesis

@dataclass(frozen=True)
class Night:
    """Everything fixed for the night: sensor, flats per filter, catalogue per target."""

    sensor: scene.Sensor
    flats: dict[str, np.ndarray]        # filter -> flat normalised to mean 1
    catalogs: dict[str, np.ndarray]     # target -> (n, 3) x_sky, y_sky, flux ADU


def build_night(spec: SimSpec) -> Night:
    """The camera, optics and sky of `spec`'s night (independent of the plan).

    Star fluxes are scaled to this camera and sky: the faintest at ~40x the per-pixel sky
    noise (about the detection limit), the saturation flux from the headroom above the sky.
    """
    shape = spec.shape
    sensor = scene.make_sensor(shape, bias_level=spec.bias_level, dark_current=spec.dark_current,
                               hot_pixel_fraction=spec.hot_pixel_fraction, ref_temp=spec.ccd_temp,
                               rng=_rng(spec.seed, _S_SENSOR))
    optics = scene.make_optics(shape, _rng(spec.seed, _S_OPTICS))
    flats = {f: scene.make_flat(shape, optics, _rng(spec.seed, _S_FLAT, i))
             for i, f in enumerate(spec.filters)}
    catalogs = {}
    for k, target in enumerate(spec.targets):
        fwhm = _target_fwhm(spec, k)
        sky_e = spec.sky * target.exptime
        noise_adu = math.sqrt(sky_e + spec.read_noise**2) / spec.gain
        headroom = scene.ADU_MAX - spec.bias_level - sky_e / spec.gain
        f_sat = max(headroom, 1000.0) / scene.psf_peak_fraction(fwhm)
        f_min = min(40.0 * noise_adu, f_sat / 10.0)
        catalogs[target.name] = scene.make_catalog(
            shape, target.n_stars, f_min=f_min, f_sat=f_sat, margin=20.0,
            rng=_rng(spec.seed, _S_CATALOG, k))
    return Night(sensor, flats, catalogs)


def _cosmic_count(spec: SimSpec, frame: PlannedFrame) -> int:
    """Lights: ``cosmic_rays`` per 512^2; darks: the same rate per second as a mean light."""
    area = spec.shape[0] * spec.shape[1] / 512.0**2
    if frame.frame_type == "light":
        return int(round(spec.cosmic_rays * area))
    if frame.frame_type == "dark":
        mean_light = float(np.mean([t.exptime for t in spec.targets]))
        return int(round(spec.cosmic_rays * area * frame.exptime / mean_light))
    return 0


def synthesize(frame: PlannedFrame, spec: SimSpec, night: Night) -> tuple[np.ndarray, np.ndarray]:
    """The raw uint16 image of one planned frame and its cosmic-ray pixels ([x, y])."""
    rng = _rng(spec.seed, _S_FRAME, frame.index)
    sensor, t = night.sensor, frame.exptime
    electrons = sensor.dark_rate(frame.ccd_temp) * np.float32(t)
    if frame.frame_type == "flat":
        electrons += night.flats[frame.filter] * np.float32(frame.flat_level)
    elif frame.frame_type == "light":
        state = frame.light
        cat = night.catalogs[frame.target]
        m = np.array(state.matrix)
        xy = m[:2, :2] @ cat[:, :2].T + m[:2, 2:3]
        stars = scene.render_stars(spec.shape, xy[0], xy[1],
                                   cat[:, 2] * spec.gain * state.transparency, state.fwhm, state.trail)
        light = stars + np.float32(state.sky_rate * t)
        electrons += light * night.flats[frame.filter]
    pix, values = scene.cosmic_rays(spec.shape, _cosmic_count(spec, frame), spec.gain, rng)
    raw = scene.read_out(electrons, sensor, spec.read_noise, spec.gain, rng,
                         extra_adu=(pix, values), overscan=spec.overscan)
    return raw, pix


def _fits_bytes(frame: PlannedFrame, data: np.ndarray) -> bytes:
    header = fits.Header([fits.Card(k, v, c) for k, v, c in frame.header])
    buf = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- writing

def write_night(outdir: Path, spec: SimSpec, *, sleep: Callable[[float], None] = time.sleep,
                on_file: Callable[[Path], None] | None = None) -> dict:
    """Write the night's files into `outdir` in acquisition order; return the truth dict.

    `sleep` is injected so tests can observe the half-written states instead of waiting;
    `on_file(path)` is called once each file is complete under its final name.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    frames = plan_night(spec)
    night = build_night(spec)
    files = []
    for frame in frames:
        if frame.index and spec.pace > 0:
            sleep(spec.pace)
        raw, cosmic = synthesize(frame, spec, night)
        path = outdir / frame.name
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, _fits_bytes(frame, raw), spec, sleep)
        files.append(_file_truth(frame, spec, cosmic))
        if on_file is not None:
            on_file(path)
    truth = _truth(spec, night, files)
    if spec.truth:
        _write_truth(outdir, spec, night, truth)
    return truth


def _write_file(path: Path, data: bytes, spec: SimSpec, sleep: Callable[[float], None]) -> None:
    """Write like camera software: optionally in chunks with pauses, optionally as '.tmp'."""
    target = path.with_name(path.name + ".tmp") if spec.temp_names else path
    n_chunks = 4 if spec.chunked else 1
    bounds = np.linspace(0, len(data), n_chunks + 1).astype(int)
    with open(target, "wb") as fh:
        for i in range(n_chunks):
            fh.write(data[bounds[i]:bounds[i + 1]])
            fh.flush()
            if i < n_chunks - 1:
                sleep(spec.chunk_delay)
    if spec.temp_names:
        os.replace(target, path)


def _file_truth(frame: PlannedFrame, spec: SimSpec, cosmic: np.ndarray) -> dict:
    rec: dict[str, Any] = {
        "name": frame.name, "type": frame.frame_type, "target": frame.target,
        "filter": frame.filter, "exptime": frame.exptime, "ccd_temp": frame.ccd_temp,
        "set_temp": frame.set_temp, "date_obs": frame.date_obs.isoformat(),
        "cosmic_rays": cosmic.tolist(),
    }
    if frame.light is not None:
        s = frame.light
        rec.update(matrix=[list(r) for r in s.matrix], fwhm=s.fwhm, transparency=s.transparency,
                   sky_adu=s.sky_rate * frame.exptime / spec.gain, trail=list(s.trail),
                   clouded=s.clouded, trailed=s.trailed, flipped=s.flipped)
    return rec


def _dark_temps(spec: SimSpec) -> tuple[float, ...]:
    return tuple(dict.fromkeys(float(t) for t in (*spec.dark_temps, spec.ccd_temp)))


def _truth(spec: SimSpec, night: Night, files: list[dict]) -> dict:
    fwhm = {t.name: _target_fwhm(spec, k) for k, t in enumerate(spec.targets)}
    return {
        "seed": spec.seed, "dialect": spec.dialect, "shape": list(spec.shape),
        "overscan": spec.overscan, "gain": spec.gain, "read_noise": spec.read_noise,
        "read_noise_adu": spec.read_noise / spec.gain, "bias_level": spec.bias_level,
        "saturation": scene.ADU_MAX, "dark_ref_temp": spec.ccd_temp,
        "dark_doubling_temp": scene.DARK_DOUBLING_C,
        "hot_pixels": night.sensor.hot_pixels.tolist(),
        "arrays": {"bias": "bias",
                   "dark": {str(t): f"dark_{i}" for i, t in enumerate(_dark_temps(spec))},
                   "flat": {f: f"flat_{i}" for i, f in enumerate(spec.filters)}},
        "targets": {t.name: {"exptime": t.exptime, "filters": list(t.filters), "fwhm": fwhm[t.name],
                             "stars": night.catalogs[t.name].tolist()} for t in spec.targets},
        "files": files,
    }


def _write_truth(outdir: Path, spec: SimSpec, night: Night, truth: dict) -> None:
    """truth.json and truth.npz, each written under a temporary name then renamed."""
    arrays = {"bias": night.sensor.bias}
    for i, temp in enumerate(_dark_temps(spec)):
        arrays[f"dark_{i}"] = night.sensor.dark_rate(temp) / np.float32(spec.gain)
    for i, f in enumerate(spec.filters):
        arrays[f"flat_{i}"] = night.flats[f]
    tmp = outdir / "truth.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, outdir / "truth.npz")
    tmp = outdir / "truth.json.tmp"
    tmp.write_text(json.dumps(truth, indent=1))
    os.replace(tmp, outdir / "truth.json")
