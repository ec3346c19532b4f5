"""The plan of a night: which frame is taken when, and how each light saw the sky.

`plan_night(spec)` is pure: it returns every frame of the night in acquisition order (file
name and header cards from `observd.sim.dialects`, UTC start time, and for lights the
sky-to-frame transform and observing conditions). All its draws come from the plan stream
(seeing from the seeing stream), in the order the frames are taken.

The night (local time in `spec.timezone`; DATE-OBS always written in UTC)
-----------------------------------------------------------------------------
each block starts 0-5 min after its nominal time: dusk flats at 18:00 (when
``flats_at='dusk'``), biases from 18:30, darks after them
(10 min of cooler settling between temperatures), lights from 20:00 (or when the darks
end): per target, filters interleaved (L R G B L R G B ...) as sequencers loop them, 5 min
slew between targets; dawn flats at 06:30 next morning (or after the last light) and
written last when ``flats_at='dawn'``. Each exposure starts after the previous one ends
plus ~2-2.5 s download, lights also ~5-10 s of dither settling.

Lights
------
The pointing drifts linearly plus a random walk and the field rotates a little per light;
after the meridian flip (second half of a target's lights) the frame is rotated 180 deg
about its centre plus a plate-solve re-centring offset. Seeing: FWHM 2.7-3.2 px per target,
each light +-0.15 px around it, clipped to 2.5-3.5. Clouded lights: transparency 0.1-0.2
and 1.3-2x the sky; clear ones 0.92-1.0. Trailed lights: stars smeared over a 10-15 px
segment centred on their position.

The matrix maps sky-frame pixels to frame pixels:
[x_frame, y_frame, 1]^T = M @ [x_sky, y_sky, 1]^T, x = column, y = row, 0-based pixel
centres; the sky frame is an un-drifted, un-rotated frame.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from observd.sim import dialects, scene
from observd.sim.spec import FLAT_EXPTIME, FLAT_EXPTIME_OTHER, PLAN, SEEING, SimSpec, TargetSpec, seeded


@dataclass(frozen=True)
class LightState:
    """How one light saw the sky: geometry and conditions (all in the ground truth)."""

    matrix: tuple[tuple[float, float, float], ...]  # sky -> frame, 3x3
    fwhm: float  # px, PSF before trailing
    transparency: float  # fraction of star light getting through
    sky_rate: float  # e-/s/pixel at flat = 1
    trail: tuple[float, float] = (0.0, 0.0)  # (dx, dy) px of star motion during the exposure
    clouded: bool = False
    trailed: bool = False
    flipped: bool = False


@dataclass(frozen=True)
class PlannedFrame:
    """One exposure of the night as planned: what, when, and (once named) how it is written."""

    index: int  # acquisition order, 0-based
    frame_type: str  # 'bias' | 'dark' | 'flat' | 'light'
    exptime: float
    ccd_temp: float  # actual sensor temperature, degC
    set_temp: float  # cooler set point, degC
    date_obs: datetime  # exposure start, aware UTC
    name: str = ""  # path relative to OUTDIR (posix)
    header: tuple[dialects.Card, ...] = ()  # dialect cards (key, value, comment)
    target: str | None = None
    filter: str | None = None
    flat_level: float = 0.0  # flats: mean illumination, e-/pixel at flat = 1
    light: LightState | None = None


def plan_night(spec: SimSpec) -> list[PlannedFrame]:
    """The whole night in acquisition order: names, headers, times and light geometry."""
    counters: Counter = Counter()
    return [
        replace(frame, name=dialects.frame_name(frame, spec, counters), header=dialects.frame_header(frame, spec))
        for frame in _schedule(spec, seeded(spec.seed, PLAN))
    ]


def _schedule(spec: SimSpec, rng: np.random.Generator) -> list[PlannedFrame]:
    """Frames with their times and conditions, not yet named: see the module docstring."""
    seq = _Sequencer(spec, rng)
    t = seq.at(18, 0)
    if spec.flats_at == "dusk":
        t = _flats(seq, t) + timedelta(minutes=10)
    t = _calibrations(seq, max(t, seq.at(18, 30)))
    t = _lights(seq, max(t + timedelta(minutes=5), seq.at(20, 0)))
    if spec.flats_at == "dawn":
        _flats(seq, max(t + timedelta(minutes=10), seq.at(6, 30, days=1)))
    return seq.frames


class _Sequencer:
    """The acquisition log of the night being scheduled, and its clock's random delays.

    Every draw comes from the one plan generator in the order frames are taken, so the
    blocks must be scheduled in acquisition order.
    """

    def __init__(self, spec: SimSpec, rng: np.random.Generator) -> None:
        self.spec, self.rng = spec, rng
        self.frames: list[PlannedFrame] = []
        self._tz = ZoneInfo(spec.timezone)
        self._evening = date.fromisoformat(spec.night)

    def at(self, hour: int, minute: int, days: int = 0) -> datetime:
        """A block's start: the wall-clock time plus a few minutes nobody is punctual by."""
        e = self._evening
        wall = datetime(e.year, e.month, e.day, hour, minute, tzinfo=self._tz)
        late = timedelta(seconds=self.rng.uniform(0.0, 300.0))
        return (wall + timedelta(days=days)).astimezone(UTC) + late

    def readout(self) -> timedelta:
        """The download after an exposure, before the next can start."""
        return timedelta(seconds=2.0 + self.rng.uniform(0.0, 0.5))

    def shoot(self, kind: str, exptime: float, set_temp: float, start: datetime, **extra: Any) -> None:
        """Log one exposure starting at `start`, the sensor within 0.1 degC of `set_temp`."""
        ccd_temp = round(set_temp + self.rng.uniform(-0.1, 0.1), 2)
        self.frames.append(
            PlannedFrame(len(self.frames), kind, float(exptime), ccd_temp, float(set_temp), start, **extra)
        )


def _flats(seq: _Sequencer, t: datetime) -> datetime:
    """One flat set per filter from `t`, each at 30-50 % of full scale; returns the end."""
    spec = seq.spec
    for f in spec.filters:
        exptime = FLAT_EXPTIME.get(f, FLAT_EXPTIME_OTHER)
        for _ in range(spec.n_flat):
            level_adu = seq.rng.uniform(0.30, 0.50) * scene.ADU_MAX - spec.bias_level
            seq.shoot("flat", exptime, spec.ccd_temp, t, filter=f, flat_level=level_adu * spec.gain)
            t += timedelta(seconds=exptime) + seq.readout()
    return t


def _calibrations(seq: _Sequencer, t: datetime) -> datetime:
    """Biases, then darks per temperature and exposure, from `t`; returns the end."""
    spec = seq.spec
    for _ in range(spec.n_bias):
        seq.shoot("bias", 0.0, spec.ccd_temp, t)
        t += seq.readout()
    for k, temp in enumerate(spec.dark_temps):
        if k:
            t += timedelta(minutes=10)
        for exptime in spec.dark_exposures:
            for _ in range(spec.n_dark):
                seq.shoot("dark", exptime, temp, t)
                t += timedelta(seconds=float(exptime)) + seq.readout()
    return t


def _lights(seq: _Sequencer, t: datetime) -> datetime:
    """Every target's lights from `t`, target after target; returns the end."""
    spec = seq.spec
    for k, target in enumerate(spec.targets):
        if k:
            t += timedelta(minutes=5)
        for f, state in _light_states(spec, target, k, seq.rng):
            seq.shoot("light", target.exptime, spec.ccd_temp, t, target=target.name, filter=f, light=state)
            t += timedelta(seconds=target.exptime) + seq.readout() + timedelta(seconds=seq.rng.uniform(5.0, 10.0))
    return t


def _light_states(spec: SimSpec, target: TargetSpec, k: int, rng: np.random.Generator) -> list[tuple[str, LightState]]:
    """Per light of one target (time order): filter and how it saw the sky."""
    order = [f for _ in range(target.n_lights) for f in target.filters]
    n = len(order)
    clouded, trailed = _bad_lights(spec, n, rng)
    flip_from = n - n // 2 if spec.meridian_flip else n
    rows, cols = spec.shape
    centre = np.array([(cols - 1) / 2.0, (rows - 1) / 2.0])
    heading = rng.uniform(0, 2 * np.pi)
    step = spec.drift * np.array([np.cos(heading), np.sin(heading)])
    offset = rng.normal(0.0, 1.5, 2)
    recentre = rng.uniform(-10.0, 10.0, 2)  # plate-solve re-centring error after the flip
    base_fwhm = target_fwhm(spec, k)
    limits = (2.5, 3.5) if spec.seeing is None else (base_fwhm - 0.5, base_fwhm + 0.5)
    states = []
    for i, f in enumerate(order):
        if i:
            offset = offset + step + rng.normal(0.0, 0.3 * spec.drift, 2)
        flipped = i >= flip_from
        angle = i * spec.field_rotation + (180.0 if flipped else 0.0)
        shift = offset + (recentre if flipped else 0.0)
        fwhm = float(np.clip(base_fwhm + rng.normal(0.0, 0.15), *limits))
        is_cloud, is_trail = i in clouded, i in trailed
        transparency, sky, trail = _weather(spec, is_cloud, is_trail, rng)
        states.append(
            (
                f,
                LightState(
                    matrix=_matrix(angle, shift, centre),
                    fwhm=round(fwhm, 4),
                    transparency=transparency,
                    sky_rate=sky,
                    trail=trail,
                    clouded=is_cloud,
                    trailed=is_trail,
                    flipped=flipped,
                ),
            )
        )
    return states


def _bad_lights(spec: SimSpec, n: int, rng: np.random.Generator) -> tuple[set[int], set[int]]:
    """Which of a target's `n` lights are clouded and which trailed (never both)."""
    n_bad = min(n, spec.n_clouded + spec.n_trailed)
    bad = [int(i) for i in rng.choice(n, size=n_bad, replace=False)] if n else []
    clouded = set(bad[: min(spec.n_clouded, n_bad)])
    return clouded, set(bad[len(clouded) :])


def _weather(
    spec: SimSpec, clouded: bool, trailed: bool, rng: np.random.Generator
) -> tuple[float, float, tuple[float, float]]:
    """One light's transparency, sky rate (e-/s/pixel) and trail (dx, dy) px."""
    transparency = rng.uniform(0.1, 0.2) if clouded else rng.uniform(0.92, 1.0)
    sky = spec.sky * (rng.uniform(1.3, 2.0) if clouded else rng.uniform(0.95, 1.05))
    trail = (0.0, 0.0)
    if trailed:
        length, psi = rng.uniform(10.0, 15.0), rng.uniform(0, 2 * np.pi)
        trail = (float(length * np.cos(psi)), float(length * np.sin(psi)))
    return float(transparency), float(sky), trail


def target_fwhm(spec: SimSpec, k: int) -> float:
    """The seeing of target k (its frames vary +-0.15 px around it): `spec.seeing`, or drawn."""
    drawn = float(seeded(spec.seed, SEEING, k).uniform(2.7, 3.2))
    return drawn if spec.seeing is None else float(spec.seeing)


def _matrix(angle_deg: float, shift: np.ndarray, centre: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """Rotation by `angle_deg` about the frame centre, then translation by `shift`."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    t = centre - rot @ centre + shift
    m = np.array([[rot[0, 0], rot[0, 1], t[0]], [rot[1, 0], rot[1, 1], t[1]], [0.0, 0.0, 1.0]])
    return tuple(tuple(float(v) for v in row) for row in m)
