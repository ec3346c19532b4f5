"""Colour products: white balance from the stars, and composites of mono stacks.

A colour stack stays linear and as the camera saw it (R, G, B planes of a FITS cube); what a
person looks at is balanced. The balance comes from the stars (`star_gains`): the median star
of a field is close to white (a G-type spectrum), so the gains that make the median star's R/G
and B/G equal to 1 remove the camera's and the sky's colour cast without a catalogue — the
"average spiral galaxy / G2V" white reference that photometric colour calibration refines.

Composites (`composite_plan`): stacks of one target and night in R, G and B filters (and L),
or in narrowband filters mapped to R, G, B by a palette (SHO: SII red, Ha green, OIII blue, the
Hubble palette), are aligned to the same reference already and combine plane by plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from observd.core.measure import measure, sky

# Filter names as observers write them -> the channel they give.
BROADBAND = {
    "R": "R", "RED": "R", "RC": "R", "SR": "R", "RP": "R",
    "G": "G", "GREEN": "G", "V": "G", "SG": "G", "GP": "G",
    "B": "B", "BLUE": "B", "BP": "B",
    "L": "L", "LUM": "L", "LUMINANCE": "L", "CLEAR": "L", "C": "L",
}  # fmt: skip
NARROWBAND = {"HA": "H", "H-ALPHA": "H", "HALPHA": "H", "OIII": "O", "O3": "O", "SII": "S", "S2": "S"}

MIN_STARS = 5  # fewer unsaturated bright stars: no star balance (gains 1)
SATURATION_MARGIN = 0.8  # a star whose peak reaches this fraction of the cube's maximum may clip


@dataclass(frozen=True)
class WhiteBalance:
    gains: tuple[float, float, float]  # multipliers of R, G, B (G = 1)
    n_stars: int  # stars the gains were measured on (0: none, gains are 1)


def star_gains(rgb: np.ndarray, *, threshold: float = 10.0) -> WhiteBalance:
    """Gains that make the field's median star white (R/G = B/G = 1).

    Stars are found on the luminance; each star's flux in each channel is its peak-centred 3x3
    sum above the channel's sky (cheap, and a ratio needs no aperture correction as long as the
    three channels share one PSF). Stars near saturation in any channel are left out."""
    rgb = np.asarray(rgb, dtype=np.float32)
    finite = np.isfinite(rgb).all(axis=0)
    levels = [sky(plane, ~finite)[0] for plane in rgb]
    if not np.isfinite(levels).all():
        return WhiteBalance((1.0, 1.0, 1.0), 0)
    above = np.where(finite, rgb - np.asarray(levels, np.float32)[:, None, None], 0)
    _, stars = measure(above.mean(axis=0), mask=~finite, threshold=threshold, max_stars=300)
    if len(stars) < MIN_STARS:
        return WhiteBalance((1.0, 1.0, 1.0), 0)
    rows, cols = above.shape[1:]
    ix = np.clip(np.round(stars.x).astype(int), 1, cols - 2)
    iy = np.clip(np.round(stars.y).astype(int), 1, rows - 2)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    flux = np.array([[above[k, iy + dy, ix + dx] for dy, dx in offsets] for k in range(3)]).sum(axis=1)
    peak = np.array([rgb[k, iy, ix] for k in range(3)])
    unsaturated = (peak < SATURATION_MARGIN * np.nanmax(rgb, axis=(1, 2))[:, None]).all(axis=0)
    good = unsaturated & (flux > 0).all(axis=0)
    if good.sum() < MIN_STARS:
        return WhiteBalance((1.0, 1.0, 1.0), 0)
    f = flux[:, good]
    gains = (float(np.median(f[1] / f[0])), 1.0, float(np.median(f[1] / f[2])))
    return WhiteBalance(gains, int(good.sum()))


def signal_gains(rgb: np.ndarray, percentile: float = 99.5) -> tuple[float, float, float]:
    """Gains that give each plane the same bright-signal level above its sky (its `percentile`
    above the sky, relative to the green plane's): a narrowband palette's balance, where Ha
    would otherwise swamp OIII and SII."""
    levels = []
    for plane in rgb:
        values = plane[np.isfinite(plane)]
        level = float(np.percentile(values, percentile)) - sky(plane)[0] if values.size else np.nan
        levels.append(level if np.isfinite(level) and level > 0 else np.nan)
    if not np.isfinite(levels).all():
        return (1.0, 1.0, 1.0)
    return (levels[1] / levels[0], 1.0, levels[1] / levels[2])


@dataclass(frozen=True)
class Composite:
    """Which mono stacks make which plane of a colour composite."""

    kind: str  # 'RGB', 'LRGB' or the narrowband palette ('SHO', 'HOO'...)
    planes: tuple[str, str, str]  # the filter of the red, green and blue plane
    luminance: str | None = None  # the filter of an L stack (LRGB)

    def describe(self) -> str:
        """'R=R G=V B=B L=L': the mapping, as the product's header records it."""
        mapping = " ".join(f"{c}={f}" for c, f in zip("RGB", self.planes))
        return mapping + (f" L={self.luminance}" if self.luminance else "")


def composite_plan(filters: list[str], palette: str = "SHO") -> Composite | None:
    """The composite a night's stacks of one target allow, or None.

    Broadband R, G and B (any spelling of `BROADBAND`) give RGB, or LRGB with an L stack;
    otherwise Ha, OIII and SII give the `palette` (letters S, H, O for red, green, blue; a
    palette may repeat one, e.g. HOO needs only Ha and OIII)."""
    broad = {BROADBAND[f.upper()]: f for f in filters if f and f.upper() in BROADBAND}
    if all(c in broad for c in "RGB"):
        planes = (broad["R"], broad["G"], broad["B"])
        return Composite("LRGB", planes, broad["L"]) if "L" in broad else Composite("RGB", planes)
    narrow = {NARROWBAND[f.upper()]: f for f in filters if f and f.upper() in NARROWBAND}
    if all(c in narrow for c in palette.upper()):
        return Composite(palette.upper(), tuple(narrow[c] for c in palette.upper()))
    return None


def lrgb(rgb: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """The L stack's detail with the RGB stacks' colour: each pixel keeps its colour differences
    (R, G, B minus their mean) and takes L as its mean, L matched first to the RGB luminance's
    sky and scale (a least-squares fit). Additive rather than a ratio of luminances, so the
    faint sky, where the RGB luminance is near zero, does not blow up into colour noise."""
    colour_lum = rgb.mean(axis=0)
    finite = np.isfinite(lum) & np.isfinite(colour_lum)
    sky_l, sky_c = (sky(image, ~finite)[0] for image in (lum, colour_lum))
    a, b = lum[finite] - sky_l, colour_lum[finite] - sky_c
    scale = float(np.dot(a, b) / max(float(np.dot(a, a)), 1e-12))
    matched = (lum - np.float32(sky_l)) * np.float32(scale) + np.float32(sky_c)
    return (rgb - colour_lum + matched).astype(np.float32)
