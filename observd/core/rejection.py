"""Outlier rejection on each pixel's sorted values, and the statistics of what is kept.

`observd.core.combine` sorts each pixel's N values once, invalid ones last (as +inf).  Every
rule here removes a low tail and a high tail, so what a pixel keeps is always a contiguous
index range ``[lo, hi)`` of its sorted values: iterative clipping only moves two integer
indices inward, medians are a gather at the middle index(es), and only pixels whose range
changed are revisited.

Sigma clipping is exact yet cheap: a float32 screening pass finds the pixels that clearly
have nothing to clip (most of them); every other pixel is clipped with astropy's own float64
arithmetic, summed in frame order, so even values lying exactly on a bound (common with
integer ADU data) are decided as astropy decides them.

Reference semantics, per pixel (``v`` = its valid values):

``sigclip``
    ``astropy.stats.sigma_clip(stack, axis=0, sigma_lower, sigma_upper, maxiters,
    cenfunc='median', stdfunc='std')`` reproduced exactly: bounds ``median ∓ sigma·std``
    (population std, float64) of the values still kept; an iteration keeps the kept values
    inside the bounds; stop when nothing changes, when nothing is left, or after
    ``maxiters`` bound computations; the final mask is *the last bounds applied to all
    valid values* (so a value rejected early can come back, as in astropy).
    **ccdproc differs**: ``ccdproc.combine(..., sigma_clip=True)`` calls astropy with
    ``maxiters=1`` (its default), and with ``sigma_clip_func=np.ma.median`` (a callable,
    not ``'median'``) astropy's slow path cannot iterate either (the median of a pixel
    with a clipped NaN is NaN, so its bounds become NaN).  ccdproc's result is therefore
    ``combine(..., rejection='sigclip', maxiters=1)``; the tests check both references.
``winsorized``
    Winsorized sigma clipping as in Siril's ``WINSORIZED`` rejection, meant for small N
    (3–6 frames), where one outlier inflates the plain std so much that it can never lie
    beyond 3σ (with 4 values its median-centred z-score is below 2.4).  Each outer
    iteration: ``m`` = median of the kept values, ``s`` = their sample std (ddof=1); then
    repeatedly winsorize the kept values to ``m ± 1.5·s`` and set ``s = 1.134·std(ddof=1)``
    of the winsorized values until ``s`` changes by less than 0.05 % (Siril clamps its
    already-clamped copy, which amounts to clamping to the narrowest ``s`` seen so far; we
    do the same).  Reject kept values below ``m − sigma_low·s`` or above
    ``m + sigma_high·s``.  Repeat while something was rejected, more than 3 values remain
    and fewer than ``maxiters`` iterations ran.  Unlike Siril (which never rejects when 4 or
    fewer values remain), a rejection is only refused if it would leave fewer than 2 values.
    The price of a σ estimated from so few values: on pure Gaussian noise about 9 % of
    pixels lose one good value (N=4..10), against ~0 % for plain clipping, and losing it
    from one tail shifts their mean by about as much as their noise: the mean of 9 frames is
    ~5 % noisier than the mean of all.  When the caller knows the frames' noise
    (``noise_floor``, their typical background RMS), σ is never taken below it: an
    underestimate from few values no longer rejects good ones (1.5 % of pixels, noise
    +0.9 % at N=9), while an outlier, many σ away, is still rejected.  Siril has no floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Stats", "gather", "in_range", "range_stats", "full_range_stats", "sigclip", "winsorized"]

# Winsorized clipping constants (Siril): winsorize at ±1.5 s, correct the std of a
# normal sample winsorized there by 1.134, stop when s moves by less than 0.05 %.
_WINSOR_CLAMP = 1.5
_WINSOR_CORRECTION = 1.134
_WINSOR_TOLERANCE = 5e-4
_WINSOR_MAX_INNER = 50

# A pixel is screened as "nothing to clip" only if its extremes lie inside the bounds by
# more than this fraction of sigma·std: far above the float32 error of the screening sums.
_SCREEN_MARGIN = 1e-4


@dataclass
class Stats:
    """Per-pixel statistics of the kept range: median, sums of (x - shift) and squares.

    ``shift`` is NaN for pixels whose statistics are not known yet.
    """

    med: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    shift: np.ndarray

    def fill(self, idx: np.ndarray, other: Stats) -> None:
        for name in ("med", "s1", "s2", "shift"):
            getattr(self, name)[idx] = getattr(other, name)


def gather(x: np.ndarray, k: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """``x[k[j], j]`` for every pixel j, or ``x[k[i], columns[i]]`` for the pixels `columns`
    (indices clipped into range)."""
    k = np.clip(k, 0, x.shape[0] - 1)
    if columns is not None:
        return x[k, columns]
    return np.take_along_axis(x, k[np.newaxis, :], axis=0)[0]


def _median(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """Median of each pixel's sorted range [lo, hi) (of the pixels `columns`, default all)."""
    n = hi - lo
    a = gather(x, lo + (n - 1) // 2, columns).astype(np.float64)
    b = gather(x, lo + n // 2, columns)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, 0.5 * (a + b), np.nan)


def in_range(nvalues: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    k = np.arange(nvalues)[:, np.newaxis]
    return (k >= lo) & (k < hi)


def range_stats(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Stats:
    """Median and float64 sums about it over each pixel's sorted range [lo, hi).

    Sums are taken about the median so that the variance ``s2/n - (s1/n)²`` does not
    cancel (values ~1e4 with a spread of a few units).
    """
    med = _median(x, lo, hi)
    shift = np.where(np.isnan(med), 0.0, med)
    d = np.subtract(x, shift, dtype=np.float64)
    d[~in_range(x.shape[0], lo, hi)] = 0.0
    s1 = d.sum(axis=0)
    d *= d
    return Stats(med, s1, d.sum(axis=0), shift)


def full_range_stats(x: np.ndarray, nvalid: np.ndarray, any_invalid: bool) -> Stats:
    """Statistics of all valid values, accumulated in float32 (the fast common case).

    Cheaper than ``range_stats`` (no range mask, float32) and accurate to ~N·1e-7 relative:
    deviations from a float32 shift close to the median are small, and their squares and
    sums lose no more than float32 rounding per term.  Callers that decide rejections on
    these numbers must allow for that (see ``sigclip``).
    """
    nframes, npix = x.shape
    if any_invalid:
        med = _median(x, np.zeros(npix, np.intp), nvalid)
    else:
        med = 0.5 * (x[(nframes - 1) // 2].astype(np.float64) + x[nframes // 2])
    shift32 = np.nan_to_num(med).astype(np.float32)
    d = x - shift32
    if any_invalid:
        d[np.isinf(d)] = 0.0  # invalid values were sorted last as +inf
    s1 = d.sum(axis=0, dtype=np.float32)
    np.square(d, out=d)
    s2 = d.sum(axis=0, dtype=np.float32)
    return Stats(med, s1.astype(np.float64), s2.astype(np.float64), shift32.astype(np.float64))


def _bounds(stats: Stats, n: np.ndarray, sigma_low: float, sigma_high: float):
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dev = stats.s1 / n
        std = np.sqrt(np.maximum(stats.s2 / n - mean_dev * mean_dev, 0.0))
    return stats.med - sigma_low * std, stats.med + sigma_high * std, std


def _count_below(x: np.ndarray, bound: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """How many of each pixel's (sorted, valid-first) values are < bound (or <= bound)."""
    cmp = np.less_equal if inclusive else np.less
    return np.count_nonzero(cmp(x, bound), axis=0)


def sigclip(x, stack, nvalid, any_invalid, sigma_low, sigma_high, maxiters):
    """astropy's sigma_clip (median centre, population std): kept ranges and statistics.

    Most pixels have nothing to clip.  A float32 screening pass finds them; every pixel
    whose extremes come anywhere near the bounds goes through ``_sigclip_exact``, which
    repeats astropy's float64 arithmetic, so the decisions are astropy's.  ``x`` is the
    sorted stack and ``stack`` the same values in frame order.  Returns the kept ranges
    and the statistics of the screened pixels (``shift`` NaN for the others).
    """
    npix = x.shape[1]
    stats = full_range_stats(x, nvalid, any_invalid)
    lb, ub, std = _bounds(stats, nvalid, sigma_low, sigma_high)
    margin = _SCREEN_MARGIN * max(sigma_low, sigma_high) * std
    last = gather(x, nvalid - 1) if any_invalid else x[-1]
    with np.errstate(invalid="ignore"):
        doubt = np.flatnonzero((nvalid > 0) & ((x[0] < lb + margin) | (last > ub - margin)))
    hi = nvalid.copy()
    lo = np.zeros(npix, np.intp)
    if doubt.size:
        lo[doubt], hi[doubt] = _sigclip_exact(
            x[:, doubt], stack[:, doubt], nvalid[doubt], sigma_low, sigma_high, maxiters
        )
        stats.shift[doubt] = np.nan
    return lo, hi, stats


def _sigclip_exact(x, stack, nvalid, sigma_low, sigma_high, maxiters):
    """astropy's iteration, bit for bit; returns the kept ranges of the sorted values.

    Like astropy's C code (``compute_sigma_clipped_bounds``): the median of the kept
    values, their mean and then population std summed in float64 *in frame order* (a sum
    over axis 0 adds frames one after the other), bounds ``median ∓ sigma·std``; values
    exactly on a bound are therefore kept or rejected exactly as astropy does, which
    matters for integer ADU data.
    """
    npix = x.shape[1]
    lo = np.zeros(npix, np.intp)
    hi = nvalid.astype(np.intp)
    low_b = np.full(npix, np.nan)
    high_b = np.full(npix, np.nan)
    changed_ever = np.zeros(npix, bool)
    active = np.flatnonzero(hi > 0)
    for _ in range(maxiters):
        if active.size == 0:
            break
        xa = x[:, active]
        la, ha = lo[active], hi[active]
        lb, ub = _astropy_bounds(xa, stack[:, active], la, ha, sigma_low, sigma_high)
        low_b[active], high_b[active] = lb, ub
        # Only the extremes of the kept range can fall outside the bounds.
        out = np.flatnonzero((gather(xa, la) < lb) | (gather(xa, ha - 1) > ub))
        if out.size == 0:
            break
        xo = xa[:, out]
        new_lo = np.maximum(la[out], _count_below(xo, lb[out], inclusive=False))
        new_hi = np.minimum(ha[out], _count_below(xo, ub[out], inclusive=True))
        idx = active[out]
        lo[idx], hi[idx] = new_lo, new_hi
        changed_ever[idx] = True
        # astropy stops a pixel once nothing is left; its last bounds still apply.
        active = idx[new_hi > new_lo]

    # The final mask is the last bounds applied to *all* valid values (astropy).
    redo = np.flatnonzero(changed_ever)
    if redo.size:
        xr = x[:, redo]
        lo[redo] = _count_below(xr, low_b[redo], inclusive=False)
        hi[redo] = np.maximum(lo[redo], _count_below(xr, high_b[redo], inclusive=True))
    return lo, hi


def _astropy_bounds(x, stack, lo, hi, sigma_low, sigma_high):
    """Clipping bounds of the sorted range [lo, hi), computed as astropy computes them."""
    n = hi - lo
    med = _median(x, lo, hi)
    kept = (stack >= gather(x, lo)) & (stack <= gather(x, hi - 1))
    values = np.where(kept, stack.astype(np.float64), 0.0)
    mean = values.sum(axis=0) / n
    dev = np.where(kept, values - mean, 0.0)
    dev *= dev
    std = np.sqrt(dev.sum(axis=0) / n)
    return med - sigma_low * std, med + sigma_high * std


def winsorized(x, nvalid, sigma_low, sigma_high, maxiters, *, noise_floor: float = 0.0):
    """Winsorized sigma clipping (Siril's WINSORIZED; module docstring) as kept ranges; the
    sigma is never below `noise_floor`."""
    npix = x.shape[1]
    lo = np.zeros(npix, np.intp)
    hi = nvalid.astype(np.intp)
    active = np.flatnonzero(hi >= 3)
    for _ in range(maxiters):
        if active.size == 0:
            break
        la, ha = lo[active], hi[active]
        m = _median(x, la, ha, active)
        if noise_floor > 0:
            # sigma is never below the floor, so a pixel whose extremes lie within m ± sigma·floor
            # has nothing to reject, whatever its winsorized sigma: most sky pixels. Exact (float
            # arithmetic is monotonic), and it spares the iteration below ~97 % of a stack's pixels.
            doubt = gather(x, la, active) < m - sigma_low * noise_floor
            doubt |= gather(x, ha - 1, active) > m + sigma_high * noise_floor
            active, la, ha, m = active[doubt], la[doubt], ha[doubt], m[doubt]
            if active.size == 0:
                break
        xa = x[:, active]
        inside = in_range(x.shape[0], la, ha)
        s = np.maximum(_winsorized_sigma(xa, inside, m, _std_inside(xa, inside)), noise_floor)
        new_lo = np.maximum(la, _count_below(xa, m - sigma_low * s, inclusive=False))
        new_hi = np.minimum(ha, _count_below(xa, m + sigma_high * s, inclusive=True))
        changed = ((new_hi - new_lo) >= 2) & ((new_lo != la) | (new_hi != ha))
        lo[active[changed]] = new_lo[changed]
        hi[active[changed]] = new_hi[changed]
        active = active[changed & (new_hi - new_lo > 3)]
    return lo, hi


def _winsorized_sigma(x: np.ndarray, inside: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Siril's iterated winsorized sigma per pixel (column): clamp the kept values to
    m ± 1.5·clamp, take the corrected std, repeat until it settles. Each pass only touches the
    pixels still moving, which is what makes this affordable on a whole band."""
    s = s.copy()
    clamp = s.copy()  # Siril re-clamps its clamped copy: narrowest s wins
    moving = np.arange(x.shape[1])
    for _ in range(_WINSOR_MAX_INNER):
        sub, ins, mm, cc = x[:, moving], inside[:, moving], m[moving], clamp[moving]
        wins = np.clip(sub, mm - _WINSOR_CLAMP * cc, mm + _WINSOR_CLAMP * cc)
        s_new = _WINSOR_CORRECTION * _std_inside(wins, ins)
        s_old = s[moving]
        s[moving] = s_new
        clamp[moving] = np.minimum(cc, s_new)
        moving = moving[np.abs(s_new - s_old) > _WINSOR_TOLERANCE * s_old]
        if moving.size == 0:
            break
    return s


def _std_inside(v: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """ddof=1 std over axis 0, in float64, of the values where `inside` is true."""
    n = np.count_nonzero(inside, axis=0)
    d = np.where(inside, v, 0.0).astype(np.float64)
    d -= d.sum(axis=0) / n
    d *= inside
    d *= d
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(d.sum(axis=0) / (n - 1))
