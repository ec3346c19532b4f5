"""Frame quality: sky background, noise, stars, FWHM and elongation — and the verdict.

Every calibrated light is measured once; the star list it returns is also what alignment
matches (stars are detected once per frame, never twice). Detection is SEP (Source
Extractor as a library): a meshed background, a matched-filter threshold at `threshold`
times the background RMS, deblending. Positions are then refined with windowed centroids
(SExtractor's XWIN/YWIN), which are several times more precise than isophotal barycentres
and are what makes sub-pixel alignment possible.

FWHM is a Gaussian fitted (log-linear least squares, centre fixed at the windowed
centroid) to each star's pixels above half its brightest pixel, i.e. to the core only:
real stars have Moffat-like wings that make half-light radii or second moments read
15-35 % wide, while the core fit stays within ~3 % for Gaussian and Moffat (beta 3)
stars alike. It is the FWHM as sampled by the pixels, as other software's PSF fits
report it (a 3.00 px optical Gaussian reads 3.08 px). Elongation is SEP's a/b (second
moments of the detection isophote).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import sep

ROUND_LIMIT = 1.5
"""Stars more elongated than this (a/b) are left out of the FWHM median, and a frame whose
median elongation exceeds it has no FWHM: a trail's width is not the seeing, and the few
round things left in a trailed frame are cosmic rays and blends."""

SHARP_LIMIT = 2.4
"""Detections whose peak drops by more than this factor under SEP's 3x3 detection filter
(peak / cpeak) are cosmic rays or hot pixels, not stars: one lit pixel gives 4, two or
three 2.1-3.5, a 3 px FWHM star 1.3, a 1.5 px one 2.0. Stars sharper than ~1.3 px FWHM
(badly undersampled optics) would be lost too."""

SHAPE_MIN_SNR = 20.0
"""FWHM and elongation use stars whose peak is at least this many background RMS: the
core fit needs a clean half-maximum, and SEP's
a/b comes from the pixels above the detection threshold, and a faint trailed star keeps
its full length but loses its width to the threshold (a 3.0 trail reads 4.3 at 7 sigma,
2.9 at 50 sigma)."""

SHAPE_FALLBACK_SNR = 8.0
"""When no star reaches SHAPE_MIN_SNR (a trailed frame), elongation comes from stars at
least this bright; faint stars read *more* elongated, never less, so the verdict stays safe."""

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

BACKGROUND_STEP = 2
"""The sky map and RMS are estimated on every 2nd row and column, in meshes of 32 of those
(64 px, SEP's default, on the frame): a quarter of the pixels gives the same statistics for
a calibrated frame's uncorrelated pixel noise, 4x faster (SEP's mesh pass was the costliest
step of a light's measurement, ~50 ms on 2048²). The map is interpolated back to full
resolution, where stars are detected."""

FLUX_RADIUS_RMAX = 6.0
"""Half-light radii are computed within `FLUX_RADIUS_RMAX * a` (a = SEP's semi-major RMS
size, about sigma): the enclosed flux then misses < 0.1 % of a Gaussian star."""


@dataclass(frozen=True)
class Stars:
    """Detected sources, brightest first; x = column, y = row, 0-based pixel centres."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Measurement:
    background: float  # median sky level (ADU)
    noise: float  # background RMS (ADU)
    n_stars: int  # all detections above threshold (not capped by max_stars)
    fwhm: float | None  # median FWHM of bright unsaturated isolated roundish stars (px)
    elongation: float | None  # median a/b of bright unsaturated isolated stars
    n_saturated: int  # stars with saturated pixels


_NO_STARS = Stars(np.empty(0), np.empty(0), np.empty(0))


def measure(
    data: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    saturation: float | None = None,
    threshold: float = 5.0,
    max_stars: int = 200,
    overwrite_mask: bool = False,
) -> tuple[Measurement, Stars]:
    """Measure a frame and return its brightest `max_stars` stars for alignment.

    NaN/inf pixels and `mask` (True = bad) are ignored; `overwrite_mask`: `mask` is a boolean array
    the caller gives up, completed in place rather than copied. `saturation` is the ADU level at
    which a pixel is saturated in `data`'s units; saturated stars are counted and kept in
    the star list but excluded from FWHM and elongation. A frame without usable sky
    (all bad, or constant) gives n_stars=0 and fwhm/elongation None.
    """
    image = np.ascontiguousarray(data, dtype=np.float32)  # native byte order, as SEP needs
    if overwrite_mask and mask is not None and mask.dtype == bool and mask.shape == image.shape:
        bad = mask
        bad |= ~np.isfinite(image)
    else:
        bad = ~np.isfinite(image)
        if mask is not None:
            bad |= np.asarray(mask, dtype=bool)
    if bad.all():
        return Measurement(float("nan"), float("nan"), 0, None, None, 0), _NO_STARS
    bad = bad if bad.any() else None

    if _blank(image, bad):  # SEP would report an RMS of 1
        valid = image if bad is None else image[~bad]
        return Measurement(float(valid.flat[0]), 0.0, 0, None, None, 0), _NO_STARS
    residual, background, noise = _subtract_background(image, bad)
    if bad is not None:
        residual[bad] = 0.0
    objects = sep.extract(residual, threshold, err=noise, mask=bad)
    objects = objects[objects["peak"] <= SHARP_LIMIT * objects["cpeak"]]
    objects = objects[np.argsort(objects["flux"])[::-1]]
    n_saturated = 0
    saturated = np.zeros(len(objects), dtype=bool)
    if saturation is not None and len(objects):
        iy = np.clip(np.round(objects["y"]).astype(int), 0, image.shape[0] - 1)
        ix = np.clip(np.round(objects["x"]).astype(int), 0, image.shape[1] - 1)
        sky = image[iy, ix] - residual[iy, ix]  # the background there (NaN on a bad pixel)
        with np.errstate(invalid="ignore"):
            saturated = objects["peak"] + sky >= saturation
        n_saturated = int(saturated.sum())

    top = objects[:max_stars]
    if len(top) == 0:
        return Measurement(background, noise, 0, None, None, 0), _NO_STARS
    rmax = np.maximum(FLUX_RADIUS_RMAX * top["a"], 3.0)
    r_half, r_flags = sep.flux_radius(residual, top["x"], top["y"], rmax, 0.5, mask=bad)
    sig = np.clip(np.nan_to_num(2.0 * r_half / FWHM_PER_SIGMA, nan=1.0), 0.5, 10.0)
    xwin, ywin, w_flags = sep.winpos(residual, top["x"], top["y"], sig, mask=bad)
    # Windowed centroids can run away towards a bright neighbour; keep the isophotal
    # barycentre for those.
    wild = (w_flags != 0) | (np.hypot(xwin - top["x"], ywin - top["y"]) > 1.0)
    x = np.where(wild, top["x"], xwin).astype(np.float64)
    y = np.where(wild, top["y"], ywin).astype(np.float64)

    # Shape stars: bright, not saturated, not deblended/truncated, aperture clean, no
    # detection within two measuring radii (a neighbour would inflate the half-light radius).
    if len(objects) > 1:
        from scipy.spatial import cKDTree  # here, not at the top: see observd.jobs.pool._PRELOAD

        dist, _ = cKDTree(np.column_stack([objects["x"], objects["y"]])).query(
            np.column_stack([top["x"], top["y"]]), k=2
        )
        isolated = dist[:, 1] > 2.0 * rmax
    else:
        isolated = np.ones(1, dtype=bool)
    clean = (
        ~saturated[:max_stars] & isolated & (top["flag"] == 0) & (r_flags == 0) & (top["b"] > 0) & np.isfinite(r_half)
    )
    good = clean & (top["peak"] >= SHAPE_MIN_SNR * noise)
    if not good.any():
        # a trail spreads every star's light along its length, so in a trailed frame even the
        # brightest stars may fall short of SHAPE_MIN_SNR: judge the shape from fainter ones
        good = clean & (top["peak"] >= SHAPE_FALLBACK_SNR * noise)
    elong = top["a"][good] / top["b"][good]
    elongation = float(np.median(elong)) if len(elong) else None
    fwhm = None
    if elongation is not None and elongation <= ROUND_LIMIT:  # not a trailed frame
        round_ = np.flatnonzero(good)[elong <= ROUND_LIMIT]
        fwhms = [_core_fwhm(residual, x[i], y[i], r_half[i]) for i in round_]
        fwhm = float(np.nanmedian(fwhms)) if np.isfinite(fwhms).any() else None
    measurement = Measurement(background, noise, len(objects), fwhm, elongation, n_saturated)
    return measurement, Stars(x, y, top["flux"].astype(np.float64))


def sky(data: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """The global sky level and RMS of an image (as `measure` gives them), without detecting
    stars: the levels of each channel of a colour frame."""
    image = np.ascontiguousarray(data, dtype=np.float32)
    bad = ~np.isfinite(image)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if bad.all() or _blank(image, bad if bad.any() else None):
        return float("nan"), float("nan")
    bkg = _sep_background(image, bad if bad.any() else None)
    return float(bkg.globalback), float(bkg.globalrms)


def _sep_background(image: np.ndarray, bad: np.ndarray | None) -> sep.Background:
    step = BACKGROUND_STEP
    mesh = 64 // step
    sample = np.ascontiguousarray(image[::step, ::step])
    return sep.Background(
        sample, mask=None if bad is None else np.ascontiguousarray(bad[::step, ::step]), bw=mesh, bh=mesh
    )


def _subtract_background(image: np.ndarray, bad: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    """The frame minus SEP's sky map, and the global sky level and RMS (see BACKGROUND_STEP)."""
    step = BACKGROUND_STEP
    bkg = _sep_background(image, bad)
    # full-resolution pixel (x, y) is at (x/step, y/step) of the sample's map
    to_sample = np.array([[1.0 / step, 0.0, 0.0], [0.0, 1.0 / step, 0.0]])
    back = cv2.warpAffine(
        bkg.back(),
        to_sample,
        (image.shape[1], image.shape[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.subtract(image, back, out=back), float(bkg.globalback), float(bkg.globalrms)


def _blank(image: np.ndarray, bad: np.ndarray | None) -> bool:
    """Whether every good pixel has the same value. A sparse sample settles it for any real
    frame; only a constant-looking sample needs the full (copying) check."""
    sample = image[::16, ::16] if bad is None else image[::16, ::16][~bad[::16, ::16]]
    if sample.size and sample.min() != sample.max():
        return False
    valid = image if bad is None else image[~bad]
    return bool(valid.min() == valid.max())


def _core_fwhm(residual: np.ndarray, x: float, y: float, r_half: float) -> float:
    """FWHM of a Gaussian fitted to the star's pixels above half its brightest pixel."""
    h = int(np.ceil(2.0 * r_half)) + 1
    ix, iy = int(round(x)), int(round(y))
    if ix < h or iy < h or ix + h >= residual.shape[1] or iy + h >= residual.shape[0]:
        return float("nan")
    stamp = residual[iy - h : iy + h + 1, ix - h : ix + h + 1]
    rows, cols = np.mgrid[iy - h : iy + h + 1, ix - h : ix + h + 1]
    core = stamp > 0.5 * stamp.max()
    v = stamp[core].astype(np.float64)
    r2 = (cols[core] - x) ** 2 + (rows[core] - y) ** 2
    if v.size < 3:
        return float("nan")
    # ln v = c - r^2 / (2 sigma^2); weight by v because sigma(ln v) ~ noise / v
    design = np.column_stack([np.ones(v.size), r2]) * v[:, None]
    _, slope = np.linalg.lstsq(design, np.log(v) * v, rcond=None)[0]
    return float(FWHM_PER_SIGMA * np.sqrt(-0.5 / slope)) if slope < 0 else float("nan")


def judge(
    m: Measurement, best_n_stars: int, *, min_star_fraction: float = 0.5, max_elongation: float = 1.6
) -> str | None:
    """Why a measured light should not be stacked, or None when it is good.

    Star count is judged against the night's best frame of the same target (clouds and
    dew take stars away; seeing alone rarely halves them); elongation catches trailing
    (wind, guiding loss). The frame is kept either way — this only decides stacking.
    """
    if m.n_stars == 0:
        return "no stars detected: clouds, dome closed or lost focus?"
    if best_n_stars > 0 and m.n_stars < min_star_fraction * best_n_stars:
        percent = 100.0 * m.n_stars / best_n_stars
        return f"{m.n_stars} stars, {percent:.0f}% of the night's best frame ({best_n_stars}): clouds?"
    if m.elongation is not None and m.elongation > max_elongation:
        return f"stars elongated {m.elongation:.1f} (limit {max_elongation:g}): trailing?"
    return None
