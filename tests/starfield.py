"""Synthetic star fields with a known geometry, for the measure and align tests.

Stars are drawn once in a "sky" coordinate system and rendered into each frame through a
3x3 matrix mapping sky (x, y) to frame (x, y), so a test knows the exact transform between
any two frames. The PSF is a Gaussian integrated over each pixel (not sampled at the pixel
centre), which is what a real detector records, so centroids and FWHM have a true value to
compare against at the 0.01 px level.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def similarity(rotation_deg: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0), center=(0.0, 0.0)) -> np.ndarray:
    """3x3 matrix rotating/scaling about `center` (x, y), then shifting by `shift` (x, y)."""
    t = np.deg2rad(rotation_deg)
    a = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.asarray(center, float)
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = c - a @ c + np.asarray(shift, float)
    return m


def apply_matrix(matrix: np.ndarray, x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return (matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2], matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2])


def sky_catalog(
    n: int, size: float, rng: np.random.Generator, *, flux_range=(3e3, 3e5), margin: float = -60.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` stars uniform over a square sky of side `size` (+/- margin), log-uniform fluxes."""
    x = rng.uniform(margin, size - margin, n)
    y = rng.uniform(margin, size - margin, n)
    flux = 10 ** rng.uniform(np.log10(flux_range[0]), np.log10(flux_range[1]), n)
    return x, y, flux


def _integrated_profile(edges: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """Fraction of a 1-D Gaussian's flux falling in each pixel bounded by `edges`."""
    cdf = 0.5 * (1.0 + erf((edges - centre) / (np.sqrt(2.0) * sigma)))
    return np.diff(cdf)


def _moffat_stamp(
    xe: np.ndarray, ye: np.ndarray, xc: float, yc: float, fwhm: float, beta: float, sub: int = 7
) -> np.ndarray:
    """Moffat profile (unit total flux) integrated over pixels by sub x sub sampling."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    xs = (xe[:-1, None] + (np.arange(sub) + 0.5) / sub).ravel() - xc
    ys = (ye[:-1, None] + (np.arange(sub) + 0.5) / sub).ravel() - yc
    prof = (1.0 + (ys[:, None] ** 2 + xs[None, :] ** 2) / alpha**2) ** (-beta)
    prof *= (beta - 1.0) / (np.pi * alpha**2) / sub**2
    return prof.reshape(len(ye) - 1, sub, len(xe) - 1, sub).sum(axis=(1, 3))


def render(
    shape: tuple[int, int],
    x,
    y,
    flux,
    *,
    fwhm: float = 3.0,
    trail=(0.0, 0.0),
    beta: float | None = None,
    sky: float = 800.0,
    read_noise: float = 6.0,
    gain: float = 1.0,
    rng: np.random.Generator | None = None,
    noise: bool = True,
) -> np.ndarray:
    """Frame of stars at frame positions (x, y) with an integrated Gaussian PSF.

    beta: render a Moffat of that beta instead (real stars' wings), untrailed only.

    trail: (dx, dy) in px; each star is smeared uniformly along that segment (a tracking
    error), rendered as 25 sub-exposures. Noise: Poisson on (sky + stars) in electrons
    plus Gaussian read noise, returned in ADU (float64).
    """
    sigma = fwhm / FWHM_PER_SIGMA
    ny, nx = shape
    image = np.zeros(shape)
    steps = np.linspace(-0.5, 0.5, 25) if any(trail) else np.zeros(1)
    half = int(np.ceil((15 if beta else 5) * sigma + 0.5 * max(abs(trail[0]), abs(trail[1])))) + 2
    for xc, yc, f in zip(np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(flux)):
        x0, x1 = max(int(xc) - half, 0), min(int(xc) + half + 1, nx)
        y0, y1 = max(int(yc) - half, 0), min(int(yc) + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        xe = np.arange(x0, x1 + 1) - 0.5
        ye = np.arange(y0, y1 + 1) - 0.5
        if beta:
            image[y0:y1, x0:x1] += f * _moffat_stamp(xe, ye, xc, yc, fwhm, beta)
            continue
        for s in steps:
            px = _integrated_profile(xe, xc + s * trail[0], sigma)
            py = _integrated_profile(ye, yc + s * trail[1], sigma)
            image[y0:y1, x0:x1] += (f / len(steps)) * np.outer(py, px)
    image += sky
    if not noise:
        return image
    rng = rng or np.random.default_rng(0)
    electrons = rng.poisson(image * gain).astype(float)
    return electrons / gain + rng.normal(0.0, read_noise / gain, shape)
