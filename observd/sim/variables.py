"""Variable stars of the simulated sky: a pulsating star and a star with a transiting planet.

Pure numpy models of the flux relative to the star's mean (pulsator) or out-of-transit (transit)
flux, evaluated at each light's mid-exposure time by `observd.sim.writer`; the truth (period,
amplitude, depth, mid-time, duration) goes into truth.json. Times are seconds from the
target's first light (its start, UTC); truth.json also gives them as UTC instants.

Transit: a dark planet of radius ratio k = Rp/R* crosses the stellar disc along a chord of
impact parameter b (stellar radii) at constant speed, first to last contact in `duration`.
The star is limb darkened with the quadratic law I(mu)/I(1) = 1 - u1 (1 - mu) - u2 (1 - mu)^2.
The flux lost is the overlapped area times the intensity under the planet, normalised by the
disc's total flux pi (1 - u1/3 - u2/6) — Mandel & Agol's (2002) small-planet approximation,
with the intensity taken at the planet's centre inside the disc and at the middle of the
overlapped chord during ingress and egress (exact overlap area from the two-circle lens
formula). For k <= 0.15 it differs from the exact Mandel-Agol curve by a few % of the depth
at most, during ingress and egress only; the simulation and the tests use this same model, so
the truth is exact for the simulated data. The depth in the truth is the flux lost at
mid-transit (what an observer measures), not k^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pulsator:
    """A star whose flux is mean x (1 + amplitude sin(2 pi (t - phase_s) / period))."""

    offset: tuple[float, float] = (0.0, 0.0)  # (x, y) px from the field centre (sky frame)
    brightness: float = 0.3  # mean flux, as a fraction of the flux whose peak pixel saturates
    period_s: float = 600.0
    amplitude: float = 0.02  # semi-amplitude, fraction of the mean flux
    phase_s: float = 0.0  # an upward zero crossing, seconds after the target's first light

    def relative_flux(self, t: np.ndarray) -> np.ndarray:
        return 1.0 + self.amplitude * np.sin(2.0 * np.pi * (np.asarray(t, np.float64) - self.phase_s) / self.period_s)

    def truth(self) -> dict:
        return {
            "kind": "pulsating",
            "period_s": self.period_s,
            "amplitude": self.amplitude,
            "phase_s": self.phase_s,
        }


@dataclass(frozen=True)
class Transit:
    """A star with a transiting planet (module docstring)."""

    offset: tuple[float, float] = (0.0, 0.0)
    brightness: float = 0.3
    mid_s: float = 900.0  # mid-transit, seconds after the target's first light
    duration_s: float = 720.0  # first to last contact (T14)
    radius_ratio: float = 0.12  # Rp / R*
    impact: float = 0.3  # impact parameter b, stellar radii
    limb_darkening: tuple[float, float] = (0.4, 0.25)  # quadratic u1, u2

    def relative_flux(self, t: np.ndarray) -> np.ndarray:
        return transit_flux(
            np.asarray(t, np.float64), self.mid_s, self.duration_s, self.radius_ratio, self.impact, *self.limb_darkening
        )

    @property
    def depth(self) -> float:
        return float(1.0 - self.relative_flux(np.array([self.mid_s]))[0])

    def truth(self) -> dict:
        return {
            "kind": "transit",
            "mid_s": self.mid_s,
            "duration_s": self.duration_s,
            "radius_ratio": self.radius_ratio,
            "impact": self.impact,
            "limb_darkening": list(self.limb_darkening),
            "depth": self.depth,
        }


VariableStar = Pulsator | Transit


def transit_flux(t: np.ndarray, mid: float, duration: float, k: float, b: float, u1: float, u2: float) -> np.ndarray:
    """Relative flux of a star with a transiting planet (module docstring) at times `t`."""
    half_chord = np.sqrt(max((1.0 + k) ** 2 - b**2, 1e-12))
    along = (np.asarray(t, np.float64) - mid) / (duration / 2.0) * half_chord
    z = np.hypot(along, b)  # centre-to-centre distance, stellar radii
    area = _overlap(z, k)
    # intensity under the planet: at its centre inside the disc, mid-chord of the overlap at the limb
    r = np.where(z <= 1.0 - k, z, np.clip((z - k + 1.0) / 2.0, 0.0, 1.0))
    mu = np.sqrt(np.clip(1.0 - r**2, 0.0, 1.0))
    intensity = 1.0 - u1 * (1.0 - mu) - u2 * (1.0 - mu) ** 2
    total = np.pi * (1.0 - u1 / 3.0 - u2 / 6.0)
    return 1.0 - area * intensity / total


def _overlap(z: np.ndarray, k: float) -> np.ndarray:
    """Area of a circle of radius k at distance z from a unit circle's centre, inside it."""
    z = np.asarray(z, np.float64)
    area = np.zeros_like(z)
    inside = z <= 1.0 - k
    area[inside] = np.pi * k**2
    lens = (z > 1.0 - k) & (z < 1.0 + k)
    zl = z[lens]
    a = np.arccos(np.clip((zl**2 + k**2 - 1.0) / (2.0 * zl * k), -1.0, 1.0))
    c = np.arccos(np.clip((zl**2 + 1.0 - k**2) / (2.0 * zl), -1.0, 1.0))
    s = 0.5 * np.sqrt(np.clip((-zl + k + 1.0) * (zl + k - 1.0) * (zl - k + 1.0) * (zl + k + 1.0), 0.0, None))
    area[lens] = k**2 * a + c - s
    return area
