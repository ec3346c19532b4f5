"""Differential aperture photometry: pure maths on arrays (photutils for the apertures).

One night, one target, N frames. Every star (the target and the comparison candidates) is
measured in every frame through a circular aperture of radius ``aperture_fwhm`` x the frame's
FWHM, so the same fraction of each star's light is caught whatever the seeing, with the sky
per pixel taken as the sigma-clipped median of an annulus (``annulus_fwhm`` x FWHM, inner and
outer radii) and subtracted.

Errors (ADU): with an uncertainty plane (a calibrated light's UNCERT: Poisson of sky and star,
read noise, the masters' noise), the aperture sum's error is the plane's in quadrature over the
aperture; without one, the annulus's pixel scatter stands for sky and read noise and the star's
own photon noise is flux / gain when the gain is known. Both add the error of the sky level
subtracted, area² x sky_std² / n_sky (IRAF phot's formula).

Ensemble: the comparison stars' fluxes are summed (a weight proportional to each star's flux,
which is the inverse-variance weight when photon noise dominates); the relative flux is the
target's over the ensemble's, normalised to its median over the good frames, with relative
errors added in quadrature. Comparison stars are chosen automatically (`choose_comparisons`):
in the frame everywhere, never saturated or on a bad pixel, of similar brightness, and steady —
each one's own light curve against the ensemble of the others must not scatter more than
``max_comparison_scatter`` times its expected noise (times the candidates' typical ratio when
the errors leave the photon noise out, the gain being unknown); the worst is dropped, one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry

from observd.core.calibrate import MASK_BAD, MASK_SATURATED

__all__ = [
    "FLAGS",
    "StarFluxes",
    "measure_stars",
    "ensemble",
    "choose_comparisons",
    "comparison_outliers",
    "deviations",
    "outliers",
    "bin_series",
    "point_to_point",
]

FLAGS = {
    "saturated": "a saturated pixel in the target's aperture",
    "bad_pixel": "a bad pixel in the target's aperture",
    "edge": "the target's annulus leaves the frame",
    "no_fwhm": "no FWHM measured on the frame",
    "clouds": "the ensemble's flux below half its median (clouds, dew)",
    "outlier": "the relative flux off its neighbours' running median by more than 4 sigma (a cosmic ray, a satellite)",
    "no_comparison": "no comparison star measurable",
}
"""Why a frame is judged bad for photometry: kept in the light curve, flagged, left out of the
comparison choice, the normalisation and the scatter."""

CLOUD_FRACTION = 0.5  # an ensemble flux below this fraction of its median: light lost on the way
OUTLIER_SIGMA = 4.0  # off the running median by this many sigma: one frame's accident (1 in 16,000 by chance)


@dataclass(frozen=True)
class StarFluxes:
    """One frame's measurements of n stars (arrays of n)."""

    flux: np.ndarray  # ADU, sky subtracted
    error: np.ndarray  # ADU
    sky: np.ndarray  # ADU per pixel (annulus median)
    sky_std: np.ndarray  # ADU per pixel (annulus scatter, clipped)
    saturated: np.ndarray  # bool: a saturated pixel in the aperture
    bad_pixel: np.ndarray  # bool: a bad (or non-finite) pixel in the aperture
    edge: np.ndarray  # bool: the annulus is not wholly inside the frame


def measure_stars(
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    radius: float,
    annulus: tuple[float, float],
    uncertainty: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    gain: float | None = None,
) -> StarFluxes:
    """Aperture photometry of the stars at (x, y) (0-based pixel centres) on one frame.

    `mask`: the MASK bits of a calibrated light (MASK_BAD, MASK_SATURATED); bad and non-finite
    pixels are left out of the sky, and flag the stars whose aperture they touch.
    """
    x, y = np.atleast_1d(np.asarray(x, np.float64)), np.atleast_1d(np.asarray(y, np.float64))
    rows, cols = data.shape
    bits = np.zeros(data.shape, np.uint8) if mask is None else mask
    bad = ((bits & MASK_BAD) != 0) | ~np.isfinite(data)
    saturated_px = (bits & MASK_SATURATED) != 0
    clean = np.where(bad, 0.0, data)  # a NaN must not spread through the exact-overlap sums
    positions = np.column_stack([x, y])
    aperture = CircularAperture(positions, r=radius)
    ring = CircularAnnulus(positions, r_in=annulus[0], r_out=annulus[1])
    sky, sky_std, n_sky = np.array(
        [_clipped_sky(m.get_values(data, mask=bad)) for m in ring.to_mask(method="center")]
    ).T
    error_plane = None if uncertainty is None else np.where(bad, 0.0, uncertainty)
    table = aperture_photometry(clean, aperture, error=error_plane, method="exact")
    area = aperture.area
    flux = np.asarray(table["aperture_sum"], np.float64) - sky * area
    sky_term = area**2 * sky_std**2 / np.maximum(n_sky, 1.0)
    if error_plane is not None:
        variance = np.asarray(table["aperture_sum_err"], np.float64) ** 2 + sky_term
    else:
        photons = np.maximum(flux, 0.0) / gain if gain else 0.0
        variance = area * sky_std**2 + photons + sky_term
    touched = [_touches(m, bad, saturated_px) for m in aperture.to_mask(method="center")]
    edge = (x - annulus[1] < 0) | (y - annulus[1] < 0) | (x + annulus[1] > cols - 1) | (y + annulus[1] > rows - 1)
    return StarFluxes(
        flux=flux,
        error=np.sqrt(variance),
        sky=sky,
        sky_std=sky_std,
        saturated=np.array([s for _, s in touched], bool),
        bad_pixel=np.array([b for b, _ in touched], bool),
        edge=edge,
    )


def _clipped_sky(values: np.ndarray, sigma: float = 3.0, iterations: int = 5) -> tuple[float, float, float]:
    """(median, std, n) of an annulus's pixels after iterative sigma clipping (stars in the
    annulus, cosmic rays). Plain numpy: astropy's SigmaClip costs ~1 ms a call, for thousands
    of annuli a night."""
    values = values[np.isfinite(values)]
    for _ in range(iterations):
        if len(values) < 3:
            break
        median, std = np.median(values), values.std()
        keep = np.abs(values - median) <= sigma * std
        if keep.all():
            break
        values = values[keep]
    if not len(values):
        return np.nan, np.nan, 0.0
    return float(np.median(values)), float(values.std()), float(len(values))


def _touches(aperture_mask, bad: np.ndarray, saturated: np.ndarray) -> tuple[bool, bool]:
    """(a bad pixel, a saturated pixel) inside one star's aperture (pixels off the frame: bad)."""
    inside = aperture_mask.data > 0
    bad_values = aperture_mask.cutout(bad, fill_value=True)
    sat_values = aperture_mask.cutout(saturated, fill_value=False)
    if bad_values is None:  # wholly off the frame
        return True, False
    return bool(bad_values[inside].any()), bool(sat_values[inside].any())


def ensemble(
    flux: np.ndarray, error: np.ndarray, use=None, rejected: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's flux and error per frame: sums over the comparison stars `use` (columns of
    the (frames, stars) arrays; all when None). `rejected` (frames, stars in `use`): points left
    out (a cosmic ray on one comparison star); a frame's sum of the others is then scaled by the
    stars' typical fluxes, so that the ensemble keeps its level."""
    if use is not None:
        flux, error = flux[:, use], error[:, use]
    if rejected is None or not rejected.any():
        return flux.sum(axis=1), np.sqrt((error**2).sum(axis=1))
    kept = ~rejected
    levels = np.nanmedian(np.where(kept, flux, np.nan), axis=0)
    scale = levels.sum() / (kept * levels).sum(axis=1)
    return (kept * flux).sum(axis=1) * scale, np.sqrt((kept * error**2).sum(axis=1)) * scale


def comparison_outliers(flux: np.ndarray, error: np.ndarray, good: np.ndarray, *, limit: float) -> np.ndarray:
    """(frames, stars): the comparison points that jump off their star's light curve against the
    ensemble of the others (`deviations`): a cosmic ray or a satellite in that star's aperture.
    One star at most per frame, the one that deviates most: a jump in one star also moves the
    others' curves (it is in their ensembles), by less."""
    rejected = np.zeros(flux.shape, bool)
    n = flux.shape[1]
    if n < 3:  # with two stars, which one jumped cannot be told
        return rejected
    z = np.empty(flux.shape)
    for i in range(n):
        ens, ens_err = ensemble(flux, error, [j for j in range(n) if j != i])
        rel, rel_err = relative_flux(flux[:, i], error[:, i], ens, ens_err, good)
        z[:, i] = deviations(rel, rel_err, good)
    worst = np.argmax(z, axis=1)
    frames = np.nonzero(z[np.arange(len(z)), worst] > limit)[0]
    rejected[frames, worst[frames]] = True
    return rejected


def relative_flux(
    target: np.ndarray, target_error: np.ndarray, ens: np.ndarray, ens_error: np.ndarray, good: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Target / ensemble, normalised to 1 over the `good` frames (median), and its error."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = target / ens
        error = np.abs(ratio) * np.sqrt((target_error / target) ** 2 + (ens_error / ens) ** 2)
    scale = np.nanmedian(ratio[good]) if good.any() else np.nan
    return ratio / scale, error / abs(scale)


@dataclass(frozen=True)
class Comparisons:
    chosen: tuple[int, ...]  # candidate indices (columns) in the ensemble
    dropped: dict[int, str]  # candidate index -> why it is not


def choose_comparisons(
    flux: np.ndarray,
    error: np.ndarray,
    unusable: np.ndarray,
    good: np.ndarray,
    target_flux: float,
    *,
    max_n: int,
    brightness_ratio: float,
    max_scatter: float,
    errors_complete: bool = True,
) -> Comparisons:
    """The comparison ensemble among candidate stars (columns of the (frames, candidates) arrays).

    `unusable`: per frame and candidate, saturated / bad pixel / off the frame; `good`: the frames
    that count. Kept: candidates usable in every good frame, with a median flux within
    `brightness_ratio` of `target_flux` — the `max_n` nearest in brightness (log flux); then the
    steadiness test of the module docstring, while at least 3 remain (with two, neither can be
    told variable).
    """
    dropped: dict[int, str] = {}
    n_candidates = flux.shape[1]
    median = (
        np.nanmedian(np.where(good[:, None], flux, np.nan), axis=0) if good.any() else np.full(n_candidates, np.nan)
    )
    near = []
    for i in range(n_candidates):
        if unusable[good, i].any():
            dropped[i] = "saturated, on a bad pixel or off the frame in some frames"
        elif not (median[i] > 0 and 1.0 / brightness_ratio <= median[i] / target_flux <= brightness_ratio):
            dropped[i] = f"brightness {median[i] / target_flux:.2g} x the target's"
        else:
            near.append(i)
    near.sort(key=lambda i: abs(math.log(median[i] / target_flux)))
    for i in near[max_n:]:
        dropped[i] = "enough comparison stars nearer the target's brightness"
    chosen = near[:max_n]
    while len(chosen) >= 3:
        ratios = [_scatter_ratio(flux, error, good, chosen, i) for i in chosen]
        worst = int(np.argmax(ratios))
        # errors that leave out a noise (the stars' photon noise when the gain is unknown): against
        # the candidates' typical ratio instead, or every star would look variable
        scale = 1.0 if errors_complete else max(1.0, float(np.median(ratios)))
        if not ratios[worst] > max_scatter * scale:
            break
        dropped[chosen[worst]] = f"variable: scatter {ratios[worst]:.1f} x its expected noise"
        del chosen[worst]
    return Comparisons(tuple(chosen), dropped)


def _scatter_ratio(flux: np.ndarray, error: np.ndarray, good: np.ndarray, chosen: list[int], i: int) -> float:
    """Scatter of comparison i's light curve against the ensemble of the others, in units of its
    expected noise (median error)."""
    others = [j for j in chosen if j != i]
    ens, ens_err = ensemble(flux, error, others)
    rel, rel_err = relative_flux(flux[:, i], error[:, i], ens, ens_err, good)
    # not a robust spread: a star off in one frame only (a neighbour blending into its aperture in
    # poor seeing, a cosmic ray) harms the ensemble in that frame as much as a variable would
    spread = np.nanstd(rel[good])
    return float(spread / np.nanmedian(rel_err[good]))


def outliers(
    y: np.ndarray, error: np.ndarray, good: np.ndarray, *, window: int = 7, limit: float = OUTLIER_SIGMA
) -> np.ndarray:
    """Good points more than `limit` sigma off the running median of the `window` good points
    around them (a cosmic ray or a satellite in one aperture). A transit's ingress or a pulsation
    is smooth over a few frames, and a running median follows it."""
    return deviations(y, error, good, window=window) > limit


def deviations(y: np.ndarray, error: np.ndarray, good: np.ndarray, *, window: int = 7) -> np.ndarray:
    """|y - its running median| in sigma, for the good points (0 elsewhere): sigma is the error, or
    the deviations' own robust spread when that is larger (errors that leave out a noise must not
    make every other frame an outlier)."""
    index = np.nonzero(good)[0]
    z = np.zeros(len(y))
    if len(index) < window:
        return z
    values = y[index]
    half = window // 2
    # ends reflected through the end points, so that a slope (an egress at the last frame) goes on
    padded = np.concatenate([2 * values[0] - values[half:0:-1], values, 2 * values[-1] - values[-2 : -half - 2 : -1]])
    running = np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)
    deviation = values - running
    spread = 1.4826 * np.median(np.abs(deviation))
    z[index] = np.abs(deviation) / np.maximum(error[index], spread)
    return z


def bin_series(t: np.ndarray, y: np.ndarray, error: np.ndarray, width: float) -> tuple[np.ndarray, ...]:
    """Inverse-variance weighted means of `y` in bins of `width` (units of `t`) from the first
    point: (bin times, means, errors, points per bin); empty bins are left out."""
    ok = np.isfinite(y) & np.isfinite(error) & (error > 0)
    t, y, error = t[ok], y[ok], error[ok]
    if not len(t):
        return (np.array([]),) * 4
    index = np.floor((t - t.min()) / width).astype(int)
    w = 1.0 / error**2
    n = np.bincount(index)
    keep = n > 0
    sum_w = np.bincount(index, weights=w)[keep]
    mean = np.bincount(index, weights=w * y)[keep] / sum_w
    times = np.bincount(index, weights=w * t)[keep] / sum_w
    return times, mean, 1.0 / np.sqrt(sum_w), n[keep]


def point_to_point(y: np.ndarray) -> float:
    """The point-to-point scatter: RMS of successive differences / sqrt(2) — the white noise of a
    series whose signal changes slowly compared with its cadence (a transit, a pulsation)."""
    y = np.asarray(y, np.float64)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return float("nan")
    return float(np.sqrt(np.mean(np.diff(y) ** 2) / 2.0))
