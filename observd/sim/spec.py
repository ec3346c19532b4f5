"""What a simulated night is made of: `SimSpec` and its targets (SPEC §6), and the seed.

A spec is validated when it is built, so a bad option fails at the command line rather
than half-way through writing a night. The same spec gives byte-identical files: no
wall-clock value enters a header, and every random draw comes from
``seeded(spec.seed, STREAM, index...)``, one stream per purpose (sensor, optics, flats,
star catalogues, seeing, plan, each frame's noise), so the camera and the star fields stay
the same when only the plan changes. The camera, the telescope and the star catalogues come
from ``spec.setup_key`` (``setup_seed`` when given): nights simulated with different seeds and one
``setup_seed`` are several nights of one setup on one sky (deep stacks). A new random quantity
takes a new stream number (appended, never inserted), or every existing night would change.

A colour (one-shot-colour, CFA) camera is a spec with ``bayer`` set: the sensor's physical
Bayer pattern at the top-left pixel of its readout (prescan included, sensor row 0 at the
top), i.e. what BAYERPAT says with zero XBAYROFF/YBAYROFF. ``bayer_offset`` only changes how
the headers describe that sensor (the written BAYERPAT is chosen to match the offsets);
``row_order`` says how the file stores the rows ('TOP-DOWN' or None: sensor top row first;
'BOTTOM-UP': bottom row first) and which ROWORDER is written (None: none). The colours of
the scene (`channel_qe`, `sky_colour`, `flat_colour`) apply to CFA specs only; a mono spec
gives the same bytes as before these fields existed. The ``seestar`` dialect is a ZWO Seestar
S50: its spec defaults to ``bayer='GRBG'``, no ROWORDER and the S50's INSTRUME/TELESCOP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

import numpy as np

from observd.sim.dialects import DIALECTS
from observd.sim.variables import VariableStar

FLAT_TIMES = ("dawn", "dusk")

# Flat exposure per filter (s): narrowband filters pass far less twilight.
FLAT_EXPTIME = {"L": 1.0, "R": 2.0, "G": 2.0, "B": 3.0, "Ha": 20.0, "OIII": 20.0, "SII": 20.0}
FLAT_EXPTIME_OTHER = 2.0

# Independent random streams: seeded(seed, STREAM, index...).
SENSOR, OPTICS, FLAT, CATALOG, SEEING, PLAN, FRAME = range(7)  # the first four from setup_key
COLOUR = 7  # star colours of a CFA night, per target: seeded(setup_key, COLOUR, k)

BAYER_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")
ROW_ORDERS = ("TOP-DOWN", "BOTTOM-UP", None)
# Dialects whose headers can describe a CFA sensor (BAYERPAT and friends).
BAYER_DIALECTS = ("nina", "asiair", "seestar")

# The ZWO Seestar S50 as its own files describe it (see observd.sim.dialects).
SEESTAR_BAYER = "GRBG"
SEESTAR_INSTRUMENT = "Seestar S50"
SEESTAR_TELESCOPE = "S50_12d98769"


def seeded(*key: int) -> np.random.Generator:
    """The generator of one stream, e.g. ``seeded(spec.seed, FRAME, frame.index)``."""
    return np.random.default_rng([*key])


@dataclass(frozen=True)
class TargetSpec:
    name: str = "M42"  # OBJECT
    filters: tuple[str, ...] = ("L",)
    n_lights: int = 6  # per filter
    exptime: float = 60.0
    n_stars: int = 150
    ra: float | None = None  # degrees (seestar RA card); None: derived from the name
    dec: float | None = None  # degrees (seestar DEC card); None: derived from the name
    variables: tuple[VariableStar, ...] = ()  # variable stars in the field (observd.sim.variables; mono only)


@dataclass(frozen=True)
class SimSpec:
    seed: int = 1
    shape: tuple[int, int] = (512, 512)  # (rows, cols) of the data section
    dialect: str = "nina"  # one of DIALECTS
    night: str = "2026-11-20"  # local date of the evening
    timezone: str = "Europe/Berlin"  # site timezone; DATE-OBS written in UTC
    instrument: str = "SimCam 4000"
    telescope: str = "SimScope 80/480"
    n_bias: int = 9
    n_dark: int = 7  # per (exposure, temperature)
    dark_exptimes: tuple[float, ...] | None = None  # None = the lights' exposure times
    dark_temps: tuple[float, ...] = (-10.0,)
    n_flat: int = 7  # per filter
    flats_at: str = "dawn"  # 'dawn' (after lights) or 'dusk' (before)
    targets: tuple[TargetSpec, ...] = (TargetSpec(),)
    ccd_temp: float = -10.0  # set point; frames jitter +-0.1 degC around it
    gain: float = 1.5  # e-/ADU
    gain_setting: int = 100  # CMOS GAIN setting written by nina/asiair
    offset_setting: int = 50  # CMOS OFFSET setting written by nina/asiair
    read_noise: float = 8.0  # e-
    bias_level: float = 1000.0  # ADU
    dark_current: float = 0.05  # e-/s/pixel at ccd_temp (doubles every 6 degC)
    hot_pixel_fraction: float = 2e-4
    sky: float = 200.0  # e-/s/pixel at flat = 1 (a suburban sky)
    drift: float = 0.7  # px per light (linear drift + random walk)
    field_rotation: float = 0.02  # degrees per light
    meridian_flip: bool = True  # second half of each target's lights rotated 180 deg
    n_clouded: int = 1  # per target: transparency 0.1-0.2, brighter sky
    n_trailed: int = 1  # per target: stars trailed over 10-15 px
    cosmic_rays: int = 20  # per 512x512 light (scaled with area)
    overscan: int = 0  # overscan columns on the right (adds BIASSEC/TRIMSEC)
    pace: float = 0.0  # seconds between files (wall clock)
    chunked: bool = False  # write each file in 4 chunks with pauses
    chunk_delay: float = 0.05
    temp_names: bool = False  # write 'name.tmp' then rename (like N.I.N.A./SGP)
    truth: bool = True  # write truth.json + truth.npz in OUTDIR
    # -- colour (CFA) cameras; appended so that mono specs keep their meaning and bytes --
    bayer: str | None = None  # physical pattern at readout (0, 0), sensor top; None = mono
    row_order: str | None = "TOP-DOWN"  # ROWORDER written; 'BOTTOM-UP' stores the rows flipped
    bayer_offset: tuple[int, int] = (0, 0)  # (XBAYROFF, YBAYROFF) written with BAYERPAT
    prescan: int = 0  # prescan columns on the left (adds BIASSEC/TRIMSEC)
    channel_qe: tuple[float, float, float] = (0.8, 1.0, 0.7)  # R, G, B response (relative)
    sky_colour: tuple[float, float, float] = (1.3, 1.0, 0.85)  # light-polluted sky, per channel
    flat_colour: tuple[float, float, float] = (0.85, 1.0, 1.15)  # twilight / flat lamp, per channel
    site: tuple[float, float] = (13.405, 52.52)  # (longitude, latitude) degrees, seestar cards
    seeing: float | None = None  # px: every target's FWHM (frames +-0.15 px); None = 2.7-3.2 per target
    setup_seed: int | None = None  # seed of what stays from night to night: the camera, the telescope (its
    # flat field) and the star fields; None = `seed`. Nights with one setup_seed and their own `seed`
    # are several nights of one setup on one sky, each with its own plan, seeing and noise

    # "/px: the targets are placed on the sky (a TAN WCS per target in the truth, centred on its RA/Dec), and
    # nina lights carry RA/DEC, OBJCTRA/OBJCTDEC and SITELAT/SITELONG; None: no sky coordinates (as before)
    pixel_scale: float | None = None

    @property
    def setup_key(self) -> int:
        """The seed of the sensor, optics, flat-field and star-catalogue streams (`setup_seed`, else `seed`)."""
        return self.seed if self.setup_seed is None else self.setup_seed

    def __post_init__(self) -> None:
        if self.dialect == "seestar":  # the S50's own defaults (a frozen dataclass: set once, here)
            if self.bayer is None:
                object.__setattr__(self, "bayer", SEESTAR_BAYER)
            if self.row_order == "TOP-DOWN":  # stored top-down, but the S50 writes no ROWORDER
                object.__setattr__(self, "row_order", None)
            if self.instrument == SimSpec.instrument:
                object.__setattr__(self, "instrument", SEESTAR_INSTRUMENT)
            if self.telescope == SimSpec.telescope:
                object.__setattr__(self, "telescope", SEESTAR_TELESCOPE)
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
        if min(self.n_bias, self.n_dark, self.n_flat) < 0:
            problems.append("n_bias, n_dark and n_flat must be >= 0")
        problems += self._colour_problems()
        if self.bayer is not None and any(t.variables for t in self.targets):
            problems.append("variable stars are simulated for mono cameras only")
        if self.pixel_scale is not None and not self.pixel_scale > 0:
            problems.append(f"pixel_scale {self.pixel_scale!r} must be > 0 (arcsec per pixel)")
        try:
            date.fromisoformat(self.night)
            ZoneInfo(self.timezone)
        except (ValueError, KeyError) as exc:
            problems.append(f"night/timezone: {exc}")
        if problems:
            raise ValueError("invalid SimSpec: " + "; ".join(problems))

    def _colour_problems(self) -> list[str]:
        problems = []
        if not isinstance(self.prescan, int) or self.prescan < 0:
            problems.append(f"prescan {self.prescan!r} must be an int >= 0")
        if self.row_order not in ROW_ORDERS:
            problems.append(f"row_order {self.row_order!r} is not one of {ROW_ORDERS}")
        if self.bayer is not None and self.bayer not in BAYER_PATTERNS:
            problems.append(f"bayer {self.bayer!r} is not one of {BAYER_PATTERNS} (or None for a mono camera)")
        offset = tuple(self.bayer_offset)
        if len(offset) != 2 or not all(isinstance(v, int) and v >= 0 for v in offset):
            problems.append(f"bayer_offset {self.bayer_offset!r} must be (x, y), ints >= 0")
        for name in ("channel_qe", "sky_colour", "flat_colour"):
            value = tuple(getattr(self, name))
            if len(value) != 3 or not all(math.isfinite(v) and v > 0 for v in value):
                problems.append(f"{name} {value!r} must be three numbers > 0 (R, G, B)")
        if self.bayer is not None and self.dialect not in BAYER_DIALECTS:
            problems.append(f"bayer: the {self.dialect!r} dialect writes no Bayer keywords ({BAYER_DIALECTS} do)")
        if self.dialect == "seestar":
            if self.bayer != SEESTAR_BAYER:
                problems.append(f"bayer {self.bayer!r}: the seestar dialect is a Seestar S50, whose sensor is GRBG")
            if self.row_order is not None:
                problems.append(f"row_order {self.row_order!r}: the seestar dialect writes no ROWORDER (top-down)")
            if offset != (0, 0):
                problems.append(f"bayer_offset {self.bayer_offset!r}: the seestar dialect writes no XBAYROFF/YBAYROFF")
        return problems

    @property
    def filters(self) -> tuple[str, ...]:
        """Every filter used by a target, in order of first use (one flat set each)."""
        return tuple(dict.fromkeys(f for t in self.targets for f in t.filters))

    @property
    def dark_exposures(self) -> tuple[float, ...]:
        if self.dark_exptimes is not None:
            return tuple(self.dark_exptimes)
        return tuple(dict.fromkeys(t.exptime for t in self.targets))
