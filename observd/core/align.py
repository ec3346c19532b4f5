"""Alignment of a light to its target's reference frame: find the transform, resample.

Matching uses astroalign's asterisms (similar triangles of neighbouring stars) on the star
lists `measure()` already produced — no second detection — so translation, any rotation
(a meridian flip is 180 deg) and small scale changes are found without a first guess.
astroalign fits its similarity on at most `max_control_points` stars and triangle
vertices only; the transform is then refined by least squares on every star of the two
lists that pairs up within `MATCH_RADIUS` px, with one outlier-rejection pass.

The refined model is a full affine (6 parameters) when at least `AFFINE_MIN_MATCHES` stars
match: differential refraction compresses the field along the vertical by a different
amount at each airmass (about 1 px across a 1 deg field at 45 deg altitude), which a
similarity cannot follow. With fewer stars the 4-parameter similarity is better
determined.

Resampling (`apply_transform`) uses OpenCV's warpAffine, ~15x faster than scipy.ndimage, which
stays as the reference the tests compare it with. Data: cubic interpolation by default (order
3) — it keeps the PSF sharp, and its noise smoothing depends little on the sub-pixel phase,
whereas bilinear (order 1) blurs a 3 px star by up to ~7 % and halves the noise at half-pixel
shifts, leaving a phase pattern in the stack. Uncertainty and mask are resampled bilinearly.
Images are multiplied by the Jacobian of the mapping so that a star's summed flux is preserved
when the scale differs from 1.

Each process prepares astroalign when it starts (`prepare_astroalign`: the CLI and the worker
pool's initialiser): its asterism invariants, built in Python, are replaced by
`observd.core.invariants`' (the same arrays, much faster), and its random search for a first
transform is seeded, so that the same two star lists always give the same transform — otherwise
a daemon and a batch run align the same frame a few hundredths of a pixel apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import astroalign
import cv2
import numpy as np

from observd.core.invariants import install_fast_invariants
from observd.core.measure import Stars

MATCH_RADIUS = 2.0
"""A frame star and a reference star pair up when astroalign's transform puts them closer
than this (px); astroalign's own tolerance for its control points is the same."""

AFFINE_MIN_MATCHES = 10
"""Below this many matched stars the refinement fits a similarity instead of an affine."""

REJECT_SIGMA = 3.0
"""The outlier-rejection pass drops pairs whose residual exceeds this many (robust) RMS."""

KINDS = ("data", "uncertainty", "mask")
ORDERS = (1, 3, 5)  # odd B-spline orders: their support is symmetric, which the mask needs


RANSAC_SEED = 20261206
"""The seed of astroalign's random search for a first transform (any fixed value will do)."""


class _SeededRandom:
    """numpy.random as astroalign sees it: `default_rng()` always starts from `RANSAC_SEED`."""

    def __getattr__(self, name):
        return getattr(np.random, name)

    @staticmethod
    def default_rng(seed=None):
        return np.random.default_rng(RANSAC_SEED if seed is None else seed)


class _NumpyForAstroalign:
    """numpy, as astroalign's module sees it, with `_SeededRandom` for its `random`."""

    random = _SeededRandom()

    def __getattr__(self, name):
        return getattr(np, name)


def prepare_astroalign() -> None:
    """This process's astroalign, made fast and deterministic (module docstring); idempotent."""
    install_fast_invariants()
    if getattr(astroalign, "_np", None) is np:
        astroalign._np = _NumpyForAstroalign()


class AlignError(Exception):
    """The frame cannot be aligned; the message says why in terms an observer can act on."""


@dataclass(frozen=True)
class Transform:
    matrix: np.ndarray  # 3x3, frame (x, y, 1) -> reference (x, y, 1)
    rms: float  # residual RMS of matched stars after the fit (px)
    n_matches: int
    rotation_deg: float  # of the nearest similarity (counter-clockwise in x, y)
    scale: float  # sqrt(|det|): reference px per frame px
    shift: tuple[float, float]  # where the frame's pixel (0, 0) lands in the reference

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, rms: float, n_matches: int) -> Transform:
        a = matrix[:2, :2]
        rotation = np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
        return cls(
            matrix=matrix,
            rms=float(rms),
            n_matches=int(n_matches),
            rotation_deg=float(rotation),
            scale=float(np.sqrt(abs(np.linalg.det(a)))),
            shift=(float(matrix[0, 2]), float(matrix[1, 2])),
        )


def find_transform(stars: Stars, ref: Stars, *, max_control_points: int = 50, min_matches: int = 4) -> Transform:
    """Transform mapping the frame's pixel coordinates onto the reference's.

    Raises
    ------
    AlignError
        Too few stars in either list, no common asterism (different field, clouds), or
        fewer than `min_matches` stars agreeing with the transform.
    """
    for name, s in (("frame", stars), ("reference", ref)):
        if len(s) < min_matches:
            raise AlignError(f"only {len(s)} stars detected in the {name} (need {min_matches})")
    src = np.column_stack([stars.x, stars.y])
    dst = np.column_stack([ref.x, ref.y])
    try:
        initial, _ = astroalign.find_transform(src, dst, max_control_points=max_control_points)
    except astroalign.MaxIterError as exc:
        raise AlignError(
            f"no star pattern in common between the frame ({len(src)} stars) and the "
            f"reference ({len(dst)} stars): another field, or too few stars in common"
        ) from exc
    except ValueError as exc:  # astroalign: fewer than 3 usable control points
        raise AlignError(f"too few stars to match asterisms: {exc}") from exc
    return _refine(initial.params, src, dst, min_matches)


def _refine(initial: np.ndarray, src: np.ndarray, dst: np.ndarray, min_matches: int) -> Transform:
    """Least-squares fit on all star pairs within MATCH_RADIUS, one rejection pass."""
    from scipy.spatial import cKDTree  # here, not at the top: see observd.jobs.pool._PRELOAD

    dist, idx = cKDTree(dst).query(_apply(initial, src), distance_upper_bound=MATCH_RADIUS)
    pairs = np.flatnonzero(np.isfinite(dist))
    # A reference star claimed by two frame stars keeps the closer one.
    pairs = pairs[np.argsort(dist[pairs])]
    _, first = np.unique(idx[pairs], return_index=True)
    pairs = pairs[first]
    s, d = src[pairs], dst[idx[pairs]]
    if len(s) < min_matches:
        raise AlignError(f"only {len(s)} stars matched (need {min_matches})")
    matrix = _fit(s, d)
    resid = np.hypot(*(_apply(matrix, s) - d).T)
    # Robust RMS of 2-D residuals: for Gaussian errors RMS = median / sqrt(ln 2).
    keep = resid <= max(REJECT_SIGMA * np.median(resid) / np.sqrt(np.log(2.0)), 1e-3)
    if keep.sum() < min_matches:
        raise AlignError(f"only {keep.sum()} stars matched consistently (need {min_matches})")
    matrix = _fit(s[keep], d[keep])
    resid = np.hypot(*(_apply(matrix, s[keep]) - d[keep]).T)
    return Transform.from_matrix(matrix, np.sqrt(np.mean(resid**2)), keep.sum())


def _fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine (or similarity for few pairs) mapping src onto dst."""
    n = len(src)
    ones, zeros = np.ones(n), np.zeros(n)
    x, y = src.T
    m = np.eye(3)
    if n >= AFFINE_MIN_MATCHES:
        design = np.column_stack([x, y, ones])
        m[:2, :] = np.linalg.lstsq(design, dst, rcond=None)[0].T
        return m
    # x' = a x - b y + tx ; y' = b x + a y + ty
    design = np.vstack([np.column_stack([x, -y, ones, zeros]), np.column_stack([y, x, zeros, ones])])
    a, b, tx, ty = np.linalg.lstsq(design, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
    m[:2, :] = [[a, -b, tx], [b, a, ty]]
    return m


def _apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def apply_transform(
    data: np.ndarray,
    transform: Transform,
    out_shape: tuple[int, int],
    *,
    kind: str = "data",
    order: int = 3,
    engine: str = "opencv",
    overwrite: bool = False,
) -> np.ndarray:
    """Resample a frame's plane onto the reference grid (`out_shape`, rows x columns).

    kind='data': float32, B-spline of `order`, NaN outside the frame's footprint. NaN (or
        inf) input pixels are filled with the median before interpolating, so they cannot
        spread; they must also be flagged in the mask passed with kind='mask'. Set bad
        pixels to NaN before calling (`np.where(mask, np.nan, data)`): a spline lets an
        unmasked extreme value ring a few pixels beyond its support (~4 % of it at 2 px).
    kind='uncertainty': float32 sigma, bilinear interpolation of sigma. Approximation: an
        interpolated pixel is a weighted sum with sum(w^2) < 1, so the true sigma of
        uncorrelated input noise is lower, by up to 24 % for cubic data at a half-pixel
        shift (50 % for bilinear); keeping the input level is conservative and roughly
        offsets the noise correlation between neighbouring output pixels, which a stack's
        per-pixel error ignores.
    kind='mask': bool, True = bad (2-D, or a (planes, rows, cols) stack warped together). A reference
        pixel is bad when any input pixel within the support of the data's interpolation of `order`
        (4x4 for cubic, 2x2 for bilinear) is bad, and outside the footprint. Pass the order used for the data.
    Data and uncertainty are scaled by the Jacobian (1 / scale^2) to preserve flux.

    overwrite: a float32 `data` the caller needs no more has its NaN holes filled in place
        rather than in a frame-sized copy.
    engine='opencv' (default, orders 1 and 3): `cv2.warpAffine`, ~15x faster than scipy on a
        2048² frame; its cubic is Keys' convolution kernel (a=-0.75) rather than a B-spline,
        and it loses the outermost ~2 px to NaN. engine='scipy': `ndimage.affine_transform`,
        the reference the tests compare the fast path against.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    inverse = np.linalg.inv(transform.matrix)  # reference (x, y) -> frame (x, y)
    if engine == "opencv" and order in (1, 3):
        return _warp_opencv(data, inverse, out_shape, kind, order, overwrite)
    # imported here: only this path needs scipy.ndimage, ~0.2 s of every process's start-up
    from scipy import ndimage

    # ndimage works in (row, column) = (y, x): swap both axes of the linear part.
    matrix, offset = inverse[:2, :2][::-1, ::-1], inverse[:2, 2][::-1]
    jacobian = abs(np.linalg.det(inverse[:2, :2]))
    resample = dict(matrix=matrix, offset=offset, output_shape=tuple(out_shape), output=np.float32, mode="constant")
    if kind == "mask" and np.ndim(data) == 3:
        return np.stack(
            [apply_transform(plane, transform, out_shape, kind="mask", order=order, engine=engine) for plane in data]
        )
    if kind == "mask":
        # The support of an order-k B-spline at p is floor(p)-(k-1)/2 .. floor(p)+(k+1)/2;
        # bilinear resampling of the bad pixels grown by (k-1)/2 reaches exactly that.
        bad = np.asarray(data, dtype=bool)
        grow = (order - 1) // 2
        if grow and bad.any():
            bad = ndimage.binary_dilation(bad, np.ones((2 * grow + 1,) * 2, dtype=bool))
        return ndimage.affine_transform(bad.view(np.uint8), order=1, cval=1.0, **resample) > 0
    image = _holes_filled(data, overwrite)
    out = ndimage.affine_transform(image, order=order if kind == "data" else 1, cval=np.nan, **resample)
    out *= np.float32(jacobian)
    return out


def _holes_filled(data: np.ndarray, overwrite: bool) -> np.ndarray:
    """`data` as float32 with its NaN (and inf) pixels set to a typical value, so that they
    cannot spread through the interpolation (they stay masked); in place when `overwrite`."""
    image = np.asarray(data, dtype=np.float32)
    holes = ~np.isfinite(image)
    if holes.any():
        if overwrite:
            image[holes] = _fill_value(image, holes)
        else:
            image = np.where(holes, _fill_value(image, holes), image)
    return image


def _fill_value(image: np.ndarray, holes: np.ndarray) -> float:
    """A typical value to put in NaN holes before interpolating (they stay masked): the median
    of every 4th pixel of each axis is as good as the full median here, at 1/16 of the cost."""
    sample = image[::4, ::4][~holes[::4, ::4]]
    if sample.size == 0:
        sample = image[~holes]
    return float(np.median(sample)) if sample.size else 0.0


def _warp_opencv(
    data: np.ndarray, inverse: np.ndarray, out_shape: tuple[int, int], kind: str, order: int, overwrite: bool
) -> np.ndarray:
    """The fast path of `apply_transform`, with the same footprint: OpenCV's border handling
    is replaced by an exact test of where each output pixel falls in the frame."""
    size = (int(out_shape[1]), int(out_shape[0]))  # OpenCV wants (width, height)
    flags = cv2.WARP_INVERSE_MAP
    footprint = _footprint(inverse.tobytes(), tuple(out_shape), tuple(np.shape(data))[-2:])
    if kind == "mask":
        bad = np.asarray(data, dtype=bool)
        planes = bad if bad.ndim == 3 else bad[None]
        if np.count_nonzero(planes) <= SPARSE_MASK_FRACTION * bad.size:
            out = np.zeros((len(planes), *out_shape), dtype=bool)  # each plane marked in place
            for plane, marked in zip(planes, out):
                _fill_outside(marked, footprint, True)
                _mark_sparse_mask(plane, inverse, order, marked)
            return out if bad.ndim == 3 else out[0]
        # uint16 planes (0 or 65535): a bilinear weight as small as 1/1024 still leaves a non-zero
        # result, at half the memory traffic of float32
        planes = np.ascontiguousarray(np.moveaxis(bad if bad.ndim == 3 else bad[None], 0, -1)).view(np.uint8)
        planes = planes.astype(np.uint16) * np.uint16(65535)
        grow = (order - 1) // 2
        if grow and planes.any():
            planes = cv2.dilate(planes, np.ones((2 * grow + 1,) * 2, np.uint8))
        out = cv2.warpAffine(
            planes, inverse[:2], size, flags=flags | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        ).reshape(tuple(out_shape) + (-1,))
        out = np.moveaxis(out > 0, -1, 0)
        for marked in out:
            _fill_outside(marked, footprint, True)
        return out if bad.ndim == 3 else out[0]
    image = _holes_filled(data, overwrite)
    interpolation = cv2.INTER_CUBIC if kind == "data" and order == 3 else cv2.INTER_LINEAR
    out = cv2.warpAffine(
        np.ascontiguousarray(image), inverse[:2], size, flags=flags | interpolation, borderMode=cv2.BORDER_REPLICATE
    )
    out *= np.float32(abs(np.linalg.det(inverse[:2, :2])))
    _fill_outside(out, footprint, np.nan)
    return out


SPARSE_MASK_FRACTION = 0.005
"""Masks with at most this fraction of pixels set (hot pixels, saturated cores: the usual
case) are warped pixel by pixel, ~20x faster than warping the whole plane."""


def _mark_sparse_mask(bad: np.ndarray, inverse: np.ndarray, order: int, out: np.ndarray) -> None:
    """Set in `out` the output pixels within the interpolation support of a set input pixel, from
    the set pixels' coordinates: source position s of an output pixel lies less than the kernel's
    half-width from a bad pixel b on both axes (|s - b| < 2 for cubic, 1 for bilinear)."""
    out_shape = out.shape
    ys, xs = np.nonzero(bad)
    if not len(xs):
        return
    radius = 1 + (order - 1) // 2
    forward = np.linalg.inv(inverse)
    # every output pixel that can qualify lies in a box around the bad pixel's image
    half = radius * np.abs(forward[:2, :2]).sum(axis=1)
    dx, dy = np.meshgrid(np.arange(-int(half[0]) - 1, int(half[0]) + 2), np.arange(-int(half[1]) - 1, int(half[1]) + 2))
    cx = np.floor(forward[0, 0] * xs + forward[0, 1] * ys + forward[0, 2]).astype(np.intp)[:, None] + dx.ravel()
    cy = np.floor(forward[1, 0] * xs + forward[1, 1] * ys + forward[1, 2]).astype(np.intp)[:, None] + dy.ravel()
    sx = inverse[0, 0] * cx + inverse[0, 1] * cy + inverse[0, 2]
    sy = inverse[1, 0] * cx + inverse[1, 1] * cy + inverse[1, 2]
    hit = (
        (np.abs(sx - xs[:, None]) < radius)
        & (np.abs(sy - ys[:, None]) < radius)
        & (cx >= 0)
        & (cx < out_shape[1])
        & (cy >= 0)
        & (cy < out_shape[0])
    )
    out[cy[hit], cx[hit]] = True


@lru_cache(maxsize=4)
def _footprint(inverse_bytes: bytes, out_shape: tuple[int, int], in_shape: tuple[int, int]) -> np.ndarray:
    """Each output row's columns whose source position lies inside the frame (0..N-1 on both
    axes): (2, rows) starts and stops, [start, stop) valid, the rest outside.

    The footprint of an affine map is convex, so on each output row the valid columns form
    one interval: it is found from the four bounds analytically, row by row. Kept as intervals,
    not as a frame of booleans (22 MiB at 4800², held at a light's peak). Cached: the data, its
    uncertainty and its masks share one transform."""
    inverse = np.frombuffer(inverse_bytes, dtype=np.float64).reshape(3, 3)
    rows, cols = out_shape
    y = np.arange(rows, dtype=np.float64)
    eps = 1e-6
    lo = np.full(rows, -np.inf)
    hi = np.full(rows, np.inf)
    for (a, b, c), size in ((inverse[0], in_shape[1]), (inverse[1], in_shape[0])):
        base = b * y + c  # source coordinate at output column 0
        if abs(a) < 1e-12:  # independent of the column: all or nothing
            dead = (base < -eps) | (base > size - 1 + eps)
            lo[dead], hi[dead] = np.inf, -np.inf
            continue
        first, last = (-eps - base) / a, (size - 1 + eps - base) / a
        lo = np.maximum(lo, np.minimum(first, last))
        hi = np.minimum(hi, np.maximum(first, last))
    # integer column x is inside when lo <= x <= hi, i.e. ceil(lo) <= x < floor(hi) + 1
    start = np.clip(np.ceil(lo), 0, cols).astype(np.intp)
    stop = np.maximum(np.clip(np.floor(hi) + 1, 0, cols).astype(np.intp), start)
    return np.stack([start, stop])


def _fill_outside(plane: np.ndarray, footprint: np.ndarray, value) -> None:
    """Set `value` in `plane` outside `footprint` (`_footprint`), row by row."""
    start, stop = footprint
    cols = plane.shape[1]
    for y in np.flatnonzero((start > 0) | (stop < cols)):
        plane[y, : start[y]] = value
        plane[y, stop[y] :] = value
