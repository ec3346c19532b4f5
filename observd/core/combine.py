"""Combine a stack of frames into one image, band by band, in bounded memory.

Masters (bias, dark, flat) and nightly stacks are per-pixel robust statistics over N
aligned frames.  ccdproc's ``combine`` does this with masked arrays over whole frames,
which is slow and needs several copies of the full stack in float64.  Here each band of
rows is loaded as an ``(N, pixels)`` float32 array and each pixel's N values are **sorted
once**; every rejection rule then keeps a contiguous index range of the sorted values
(`observd.core.rejection`).  Invalid values (NaN, ±inf; aligned frames are NaN outside
their footprint) are sorted last and ignored.  Up to 64 frames the sort is a sorting
network of whole-row ``np.minimum``/``np.maximum`` calls (no transposes); beyond, numpy's
sort.  Bands are sized from ``memory_limit`` (and a cache-friendly cap) and run on a
thread pool (numpy releases the GIL in its loops).

Frames come from any `FrameSource`: arrays (`ArraySource`), FITS files read band by band
(`observd.adapters.fits_rows`); `observd.jobs.shares` shares the rows out among worker
processes.

Rejection, per pixel (``v`` = its valid values):

``sigclip``, ``winsorized``
    astropy's iterated sigma clipping and Siril's winsorized clipping; their reference
    semantics are given in `observd.core.rejection`; ``noise_floor`` (winsorized only) is the
    frames' known background noise, below which the sigma estimated from a few values is not
    believed.
``minmax``
    Drop the ``nlow`` lowest and ``nhigh`` highest valid values; a pixel with at most
    ``nlow + nhigh`` valid values keeps none (NaN, count 0).
``none``
    Keep all valid values.

The combined value is the median (``np.ma.median``: mean of the two middle values when
their number is even) or the mean of the kept values, weighted by the per-frame
``weights`` for ``method='mean'`` (the median ignores weights).  ``uncertainty`` is the
population std of the kept values (unweighted) divided by sqrt(number kept), as
ccdproc's ``average_combine`` computes it (its ``median_combine`` uses 1.4826·MAD
instead); ``count`` is the number kept.  A pixel with no valid value has data and
uncertainty NaN and count 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import numpy as np

from observd.core.rejection import Stats, full_range_stats, gather, in_range, range_stats, sigclip, winsorized

__all__ = [
    "FrameSource",
    "ArraySource",
    "Combined",
    "Params",
    "params",
    "combine",
    "band_rows",
    "band_bytes_per_pixel",
    "METHODS",
    "REJECTIONS",
]

METHODS = ("median", "mean")
REJECTIONS = ("sigclip", "winsorized", "minmax", "none")

# Working memory per band.  Bigger bands mean fewer, longer numpy calls, so threads sharing
# a process contend less for the GIL; smaller ones stay in the CPU caches.  With several
# threads the GIL matters more, hence the larger cap; a single thread (a worker process's
# share) has no GIL to share, and its bands stay in cache, so they are capped smaller.
# Capping bytes rather than pixels keeps peak memory flat as N grows.
_BAND_BYTES_CAP = 64 << 20
_BAND_BYTES_CAP_ONE_THREAD = 16 << 20

# Up to this many frames a sorting network over whole rows beats numpy's per-pixel sort
# (which needs the stack transposed there and back); its comparator count grows as
# N·log²N, so larger stacks use numpy's sort.  The network runs on chunks of pixels, for
# the same reason as the band caps: fewer, longer numpy calls.
_NETWORK_MAX_FRAMES = 64
_NETWORK_CHUNK = 1 << 16


class FrameSource(Protocol):
    """Rows of one frame on demand: float32, NaN where a value is not valid."""

    shape: tuple[int, int]

    def read_rows(self, y0: int, y1: int) -> np.ndarray: ...


@dataclass(frozen=True)
class ArraySource:
    """An in-memory frame (tests, small cases)."""

    data: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        return np.asarray(self.data[y0:y1], dtype=np.float32)


@dataclass(frozen=True)
class Combined:
    data: np.ndarray  # float32
    uncertainty: np.ndarray  # float32: std of kept values / sqrt(n kept)
    count: np.ndarray  # uint16: values kept per pixel


@dataclass(frozen=True)
class Params:
    """A combination's checked options (`params`)."""

    method: str
    rejection: str
    sigma_low: float
    sigma_high: float
    maxiters: int
    nlow: int
    nhigh: int
    weights: np.ndarray | None  # float64, one per frame; only for method='mean'
    noise_floor: float = 0.0  # winsorized only: the clipping sigma is never below this


def params(
    sources: Sequence[FrameSource],
    *,
    method: str = "median",
    rejection: str = "sigclip",
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    maxiters: int = 5,
    nlow: int = 1,
    nhigh: int = 1,
    weights: Sequence[float] | None = None,
    noise_floor: float = 0.0,
) -> Params:
    """The options of a combination of `sources`, checked (module docstring for their meaning).

    Raises:
        ValueError: no sources, shapes differ, unknown method/rejection, bad weights.
    """
    if not sources:
        raise ValueError("no frames to combine")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if rejection not in REJECTIONS:
        raise ValueError(f"rejection must be one of {REJECTIONS}, not {rejection!r}")
    shape = tuple(sources[0].shape)
    for src in sources:
        if tuple(src.shape) != shape:
            raise ValueError(f"frame shapes differ: {shape} and {tuple(src.shape)}")
    w = None
    if weights is not None and method == "mean":
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(sources),) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("weights must be one positive finite number per frame")
    if not (np.isfinite(noise_floor) and noise_floor >= 0):
        raise ValueError(f"noise_floor must be a finite number >= 0, not {noise_floor!r}")
    sigmas = float(sigma_low), float(sigma_high)
    return Params(method, rejection, *sigmas, int(maxiters), int(nlow), int(nhigh), w, float(noise_floor))


def combine(
    sources: Sequence[FrameSource],
    *,
    memory_limit: int = 1 << 30,
    workers: int = 1,
    out: Combined | None = None,
    **options,
) -> Combined:
    """Combine same-shaped frames pixel by pixel.

    ``options``: what `params` takes (method, rejection, sigma_low, sigma_high, maxiters,
    nlow, nhigh, weights, noise_floor; module docstring).  ``memory_limit`` bounds the working memory of
    all bands in flight together (the output planes, 10 bytes per pixel, and whatever the
    sources cache come on top); ``workers`` threads process bands concurrently (the caller
    says how many: this module does not ask the OS for its cores).  ``out``: planes of the
    sources' shape to fill, instead of new ones.

    Raises:
        ValueError: no sources, shapes differ, unknown method/rejection, bad weights.
    """
    p = params(sources, **options)
    shape = tuple(sources[0].shape)
    nrows, ncols = shape
    workers = max(1, workers)
    rows = band_rows(
        len(sources),
        ncols,
        memory_limit=memory_limit,
        workers=workers,
        weighted=p.weights is not None,
        rejection=p.rejection,
    )
    if out is None:
        out = Combined(np.empty(shape, np.float32), np.empty(shape, np.float32), np.empty(shape, np.uint16))

    def run(y0: int) -> None:
        y1 = min(y0 + rows, nrows)
        d, u, c = _combine_pixels(_load(sources, y0, y1), p)
        out.data[y0:y1] = d.reshape(y1 - y0, ncols)
        out.uncertainty[y0:y1] = u.reshape(y1 - y0, ncols)
        out.count[y0:y1] = c.reshape(y1 - y0, ncols)

    starts = range(0, nrows, rows)
    if workers == 1 or len(starts) == 1:
        for y0 in starts:
            run(y0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(run, starts):
                pass
    return out


def _load(sources: Sequence[FrameSource], y0: int, y1: int) -> np.ndarray:
    """Rows y0..y1 of every frame as an ``(N, pixels)`` float32 stack."""
    stack = np.empty((len(sources), (y1 - y0) * sources[0].shape[1]), np.float32)
    for i, src in enumerate(sources):
        stack[i] = src.read_rows(y0, y1).reshape(-1)
    return stack


def band_bytes_per_pixel(n_frames: int, *, weighted: bool = False, rejection: str = "sigclip") -> int:
    """Peak working memory per pixel of a band, counting every temporary.

    Per value (``n_frames`` per pixel): the loaded stack (4 B) and its sorted copy (4 B),
    live together with the invalid mask (1 B); the transposed copy used by numpy's sort
    (4 B); a masked float64 sum over the kept range: a boolean mask (1 B), float64
    deviations squared in place (8 B) and the float32 screening deviations (4 B);
    comparison masks (1 B).  Weighted means add the sort permutation (8 B) and the
    weights gathered in sorted order (8 B) plus their masked product (8 B); winsorized
    clipping its float64 winsorized copy and masks (~32 B).  Per pixel: about 30
    float64/int64 vectors (indices, bounds, sums...).  An upper bound: tracemalloc sees
    less (tests/test_combine.py checks the bound).
    """
    per_value = 4 + 4 + 1 + 4 + 1 + 8 + 4 + 1
    if weighted:
        per_value += 24
    if rejection == "winsorized":
        per_value += 32
    return n_frames * per_value + 30 * 8


def band_rows(
    n_frames: int, ncols: int, *, memory_limit: int, workers: int, weighted: bool = False, rejection: str = "sigclip"
) -> int:
    """Rows per band so that ``workers`` bands in flight fit in ``memory_limit``."""
    per_row = band_bytes_per_pixel(n_frames, weighted=weighted, rejection=rejection) * ncols
    rows = memory_limit // (workers * per_row)
    rows = min(rows, (_BAND_BYTES_CAP if workers > 1 else _BAND_BYTES_CAP_ONE_THREAD) // per_row)
    return max(1, int(rows))


def _combine_pixels(stack: np.ndarray, p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine an ``(N, pixels)`` float32 stack (invalid values become +inf in place)."""
    # sigma clipping (plain or winsorized) and 'none' keep or drop values by value, so equal
    # values are never split between kept and rejected: a weighted mean can then select its
    # values by the kept range's bounds, in frame order, and the weights need not follow the
    # sort (a much slower path); only minmax rejects by rank
    by_value = p.weights is not None and p.rejection != "minmax"
    x, w, nvalid, any_invalid = _sort_values(stack, None if by_value else p.weights)
    lo, hi, stats = _kept_ranges(x, stack, nvalid, any_invalid, p)

    n = hi - lo
    if stats is None:
        stats = range_stats(x, lo, hi)
    else:
        redo = np.flatnonzero(np.isnan(stats.shift) & (n > 0))
        if redo.size:
            stats.fill(redo, range_stats(x[:, redo], lo[redo], hi[redo]))

    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dev = stats.s1 / n
        unc = np.sqrt(np.maximum(stats.s2 / n - mean_dev * mean_dev, 0.0) / n)
        if p.method == "median":
            data = stats.med
        elif by_value:
            data = _weighted_mean_by_value(stack, p.weights, x, lo, hi, stats.shift)
        elif w is None:
            data = stats.shift + mean_dev
        else:
            data = _weighted_mean(x, w, lo, hi, stats.shift)
    del stack
    empty = n <= 0
    data = np.where(empty, np.nan, data).astype(np.float32)
    unc = np.where(empty, np.nan, unc).astype(np.float32)
    return data, unc, n.astype(np.uint16)


def _kept_ranges(
    x: np.ndarray, stack: np.ndarray, nvalid: np.ndarray, any_invalid: bool, p: Params
) -> tuple[np.ndarray, np.ndarray, Stats | None]:
    """Each pixel's kept range [lo, hi) of its sorted values ``x`` under ``p.rejection``, and
    the statistics the rule computed on the way (None when it computed none)."""
    if p.rejection == "sigclip":
        return sigclip(x, stack, nvalid, any_invalid, p.sigma_low, p.sigma_high, p.maxiters)
    lo = np.zeros(x.shape[1], np.intp)
    if p.rejection == "none":
        return lo, nvalid, full_range_stats(x, nvalid, any_invalid)
    if p.rejection == "winsorized":
        lo, hi = winsorized(x, nvalid, p.sigma_low, p.sigma_high, p.maxiters, noise_floor=p.noise_floor)
        # most pixels keep all their values: their statistics in the fast float32 pass, the
        # others' redone over their kept range
        stats = full_range_stats(x, nvalid, any_invalid)
        stats.shift[(lo != 0) | (hi != nvalid)] = np.nan
        return lo, hi, stats
    lo[:] = p.nlow
    hi = nvalid - p.nhigh
    none_left = hi <= lo
    lo[none_left] = 0
    hi[none_left] = 0
    return lo, hi, None


def _sort_values(stack: np.ndarray, weights: np.ndarray | None):
    """Sort each pixel's values, invalid ones last (as +inf); keep weights alongside.

    Returns the sorted ``(N, pixels)`` values, the weights in the same order (or None),
    the number of valid values per pixel and whether any value was invalid.  ``stack``
    keeps its order (exact sigma clipping sums values in frame order, as astropy does).
    """
    bad = ~np.isfinite(stack)
    any_invalid = bool(bad.any())
    if any_invalid:
        nvalid = stack.shape[0] - np.count_nonzero(bad, axis=0)
        stack[bad] = np.inf
    else:
        nvalid = np.full(stack.shape[1], stack.shape[0], np.intp)
    del bad
    if weights is None and stack.shape[0] <= _NETWORK_MAX_FRAMES:
        x = np.empty_like(stack)
        for c0 in range(0, stack.shape[1], _NETWORK_CHUNK):
            _network_sort(stack[:, c0 : c0 + _NETWORK_CHUNK], out=x[:, c0 : c0 + _NETWORK_CHUNK])
        return x, None, nvalid, any_invalid
    t = stack.T.copy()  # (pixels, N): each pixel's values contiguous
    if weights is None:
        t.sort(axis=1)
        return t.T.copy(), None, nvalid, any_invalid
    order = np.argsort(t, axis=1)
    t = np.take_along_axis(t, order, axis=1)
    return t.T.copy(), weights[order].T.copy(), nvalid, any_invalid


@cache
def _network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort comparators (i < j) for ``n`` inputs.

    Built for the next power of two; comparators reaching past ``n`` are dropped, which
    is exact because the missing inputs would be +inf and such a comparator never moves
    a real value.
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


def _network_sort(stack: np.ndarray, out: np.ndarray) -> None:
    """Sort each column of ``(N, pixels)`` into ``out`` with row-wise minimum/maximum."""
    rows = [row.copy() for row in stack]
    spare = np.empty_like(rows[0])
    for i, j in _network(len(rows)):
        a, b = rows[i], rows[j]
        np.minimum(a, b, out=spare)
        np.maximum(a, b, out=b)
        rows[i], spare = spare, a
    np.stack(rows, out=out)


def _weighted_mean_by_value(stack, weights, x, lo, hi, shift):
    """Weighted mean of each pixel's values between its kept range's extremes ``x[lo]`` and
    ``x[hi-1]``, taken from ``stack`` in frame order (invalid values are +inf there, beyond
    any finite bound).  Deviations from ``shift`` in float32.

    Most pixels keep all their values (nothing clipped, none invalid): their mean needs no
    selection, only the weighted sum; the others are redone with their kept values."""
    w = weights.astype(np.float32)
    everything = (lo == 0) & (hi == stack.shape[0])
    # einsum's own loops, not BLAS: OpenBLAS would start (and spin) threads in every worker
    d = stack - shift.astype(np.float32)
    mean = shift + np.einsum("i,ij->j", w, d).astype(np.float64) / float(w.sum())
    some = np.flatnonzero(~everything)
    if some.size:
        sub, xs = stack[:, some], x[:, some]
        inside = (sub >= gather(xs, lo[some])) & (sub <= gather(xs, hi[some] - 1))
        ds = d[:, some]
        ds[~inside] = 0.0
        num = np.einsum("i,ij->j", w, ds)
        den = np.einsum("i,ij->j", w, inside.astype(np.float32))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[some] = shift[some] + num.astype(np.float64) / den
    return mean


def _weighted_mean(x, w, lo, hi, shift):
    inside = in_range(x.shape[0], lo, hi)
    d = np.subtract(x, shift, dtype=np.float64)
    d[~inside] = 0.0
    wk = np.where(inside, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return shift + (wk * d).sum(axis=0) / wk.sum(axis=0)
