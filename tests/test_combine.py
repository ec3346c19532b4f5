"""observd.core.combine against astropy/ccdproc/numpy references on small frames."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.stats import sigma_clip
from astropy.utils.exceptions import AstropyUserWarning

from observd.core.combine import ArraySource, band_bytes_per_pixel, band_rows, combine


def bias_stack(n, shape=(48, 64), seed=0, nan_fraction=0.0):
    """float32 bias-like frames with cosmic rays, hot pixels, low outliers (and NaNs)."""
    rng = np.random.default_rng(seed)
    stack = rng.normal(1000.0, 5.0, (n, *shape)).astype(np.float32)
    cosmic = rng.random(stack.shape) < 0.02
    stack[cosmic] += rng.uniform(30, 20000, cosmic.sum()).astype(np.float32)
    low = rng.random(stack.shape) < 0.01
    stack[low] -= rng.uniform(20, 400, low.sum()).astype(np.float32)
    stack[:, 5, 7] += 3000.0  # hot pixel in every frame
    if nan_fraction:
        stack[rng.random(stack.shape) < nan_fraction] = np.nan
        for i in range(n):  # aligned frames: NaN outside footprint
            stack[i, :, : i % 5] = np.nan
        stack[:, 0, 0] = np.nan  # no valid value at all
        stack[1:, 0, 1] = np.nan  # a single valid value
    return stack


def astropy_clip(stack, maxiters=5, sigma_low=3.0, sigma_high=3.0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        return sigma_clip(
            stack,
            axis=0,
            sigma_lower=sigma_low,
            sigma_upper=sigma_high,
            maxiters=maxiters,
            cenfunc="median",
            stdfunc="std",
        )


def sources(stack):
    return [ArraySource(frame) for frame in stack]


def reference_uncertainty(clipped):
    kept = np.ma.masked_array(clipped.data.astype(np.float64), clipped.mask)
    return (kept.std(axis=0) / np.sqrt(kept.count(axis=0))).filled(np.nan)


@pytest.mark.parametrize("n", [3, 4, 7, 20, 70])
@pytest.mark.parametrize("maxiters", [1, 5])
def test_sigclip_median_equals_astropy(n, maxiters):
    stack = bias_stack(n, seed=n)
    ref = astropy_clip(stack, maxiters)
    res = combine(sources(stack), maxiters=maxiters)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    np.testing.assert_allclose(res.data, np.ma.median(ref, axis=0).filled(np.nan), rtol=1e-5)
    np.testing.assert_allclose(res.uncertainty, reference_uncertainty(ref), rtol=1e-5)
    assert res.data.dtype == np.float32 and res.uncertainty.dtype == np.float32
    assert res.count.dtype == np.uint16


def test_sigclip_final_mask_is_last_bounds_on_all_values():
    """astropy masks with the last bounds, not the survivors of the previous pass."""
    values = np.array([1, 5, 40, 1, 5, 2, 5, 30, 30, 0, 2, 0], np.float32)
    stack = np.tile(values[:, None, None], (1, 2, 3))
    ref = astropy_clip(stack, maxiters=10, sigma_low=1.0, sigma_high=1.0)
    res = combine(sources(stack), maxiters=10, sigma_low=1.0, sigma_high=1.0)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    np.testing.assert_allclose(res.data, np.ma.median(ref, axis=0).filled(np.nan))


def test_iterations_matter_in_the_test_data():
    """Guard for the test above: maxiters=5 must reject more than one pass here."""
    stack = bias_stack(20, seed=20)
    assert astropy_clip(stack, 5).mask.sum() > astropy_clip(stack, 1).mask.sum()


@pytest.mark.parametrize("method", ["median", "mean"])
def test_sigclip_with_nans_equals_astropy(method):
    stack = bias_stack(9, seed=3, nan_fraction=0.15)
    ref = astropy_clip(stack)
    res = combine(sources(stack), method=method)
    expected = np.ma.median(ref, axis=0) if method == "median" else ref.mean(axis=0)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    np.testing.assert_allclose(res.data, expected.filled(np.nan), rtol=1e-5)
    np.testing.assert_allclose(res.uncertainty, reference_uncertainty(ref), rtol=1e-5)
    assert np.isnan(res.data[0, 0]) and res.count[0, 0] == 0
    assert res.data[0, 1] == stack[0, 0, 1] and res.count[0, 1] == 1


def test_sigclip_asymmetric_thresholds_equal_astropy():
    stack = bias_stack(15, seed=8)
    ref = astropy_clip(stack, 5, sigma_low=2.0, sigma_high=4.0)
    res = combine(sources(stack), sigma_low=2.0, sigma_high=4.0)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    np.testing.assert_allclose(res.data, np.ma.median(ref, axis=0).filled(np.nan), rtol=1e-5)


def ccdproc_combine(stack, method):
    import ccdproc

    return ccdproc.combine(
        [CCDData(frame, unit="adu") for frame in stack],
        method=method,
        sigma_clip=True,
        sigma_clip_low_thresh=3,
        sigma_clip_high_thresh=3,
        sigma_clip_func=np.ma.median,
        sigma_clip_dev_func=np.ma.std,
    )


def test_ccdproc_reference_is_a_single_clipping_pass():
    stack = bias_stack(20, seed=20)
    ref = ccdproc_combine(stack, "median")
    one = combine(sources(stack), maxiters=1)
    np.testing.assert_allclose(one.data, ref.data, rtol=1e-5)
    # ...and not astropy's iterated clipping, which observd does by default.
    five = combine(sources(stack), maxiters=5)
    assert np.any(np.abs(five.data - ref.data) > 1e-5 * np.abs(ref.data))


def test_ccdproc_average_and_its_uncertainty():
    """ccdproc's mean uncertainty is std/sqrt(n) like ours (its median one uses the MAD)."""
    stack = bias_stack(12, seed=21)
    ref = ccdproc_combine(stack, "average")
    res = combine(sources(stack), method="mean", maxiters=1)
    np.testing.assert_allclose(res.data, ref.data, rtol=1e-5)
    np.testing.assert_allclose(res.uncertainty, ref.uncertainty.array, rtol=1e-5)


def test_weighted_mean_equals_numpy():
    stack = bias_stack(6, seed=4, nan_fraction=0.1)
    weights = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.25])
    res = combine(sources(stack), method="mean", rejection="none", weights=weights)
    valid = np.ma.masked_invalid(stack.astype(np.float64))
    expected = np.ma.average(valid, axis=0, weights=np.broadcast_to(weights[:, None, None], stack.shape)).filled(np.nan)
    np.testing.assert_allclose(res.data, expected, rtol=1e-6)
    np.testing.assert_array_equal(res.count, valid.count(axis=0))

    clipped = astropy_clip(stack)
    res = combine(sources(stack), method="mean", rejection="sigclip", weights=weights)
    expected = np.ma.average(
        clipped.astype(np.float64), axis=0, weights=np.broadcast_to(weights[:, None, None], stack.shape)
    ).filled(np.nan)
    np.testing.assert_allclose(res.data, expected, rtol=1e-6)


def test_minmax_drops_extremes_of_valid_values():
    stack = bias_stack(6, seed=5, nan_fraction=0.2)
    res = combine(sources(stack), method="mean", rejection="minmax", nlow=1, nhigh=2)
    ordered = np.sort(stack, axis=0)  # NaN last
    nvalid = np.isfinite(stack).sum(axis=0)
    expected = np.full(stack.shape[1:], np.nan)
    for y, x in np.ndindex(*stack.shape[1:]):
        kept = ordered[1 : nvalid[y, x] - 2, y, x].astype(np.float64)
        if kept.size:
            expected[y, x] = kept.mean()
    np.testing.assert_allclose(res.data, expected, rtol=1e-6)
    np.testing.assert_array_equal(res.count, np.maximum(nvalid - 3, 0))
    assert np.all(np.isnan(res.data[nvalid <= 3]))


def test_winsorized_rejects_cosmic_ray_in_four_frames():
    rng = np.random.default_rng(6)
    truth = 1000.0
    stack = rng.normal(truth, 5.0, (4, 64, 64)).astype(np.float32)
    hit = np.zeros((64, 64), bool)
    hit[::4, ::4] = True
    stack[2][hit] += 800.0  # a cosmic ray in one frame
    plain = combine(sources(stack), method="mean", rejection="sigclip", maxiters=10)
    wins = combine(sources(stack), method="mean", rejection="winsorized", maxiters=10)
    # Plain sigma clipping cannot isolate one outlier out of 4 values...
    assert np.all(plain.count[hit] == 4)
    assert np.all(plain.data[hit] > truth + 150)
    # ...winsorized clipping rejects it and recovers the level.
    assert np.all(wins.count[hit] == 3)
    assert np.all(np.abs(wins.data[hit] - truth) < 20)
    # On clean pixels the robust sigma from 4 values is noisy: about 7 % of pixels lose
    # one good value (a direct numpy transcription of the algorithm gives the same rate),
    # never two, since iteration stops at 3 values.
    assert np.mean(wins.count[~hit] < 4) < 0.10
    assert wins.count[~hit].min() == 3


def test_a_noise_floor_stops_winsorized_clipping_from_rejecting_good_values():
    """Nine frames of pure noise plus one cosmic ray: without a floor, the sigma estimated from
    9 values is often too small and ~9 % of clean pixels lose a good value from one tail, which
    costs ~5 % of the stack's noise; with the frames' known noise as the floor, few lose one,
    the noise is within 2 % of the mean of all, and the cosmic ray is still rejected."""
    rng = np.random.default_rng(8)
    stack = rng.normal(1000.0, 5.0, (9, 160, 160)).astype(np.float32)
    hit = np.zeros((160, 160), bool)
    hit[::8, ::8] = True
    stack[4][hit] += 60.0  # 12 sigma
    everything = stack.astype(np.float64).mean(axis=0)
    ideal = np.std(np.where(hit, np.nan, everything)[~hit])
    bare = combine(sources(stack), method="mean", rejection="winsorized", maxiters=10)
    floored = combine(sources(stack), method="mean", rejection="winsorized", maxiters=10, noise_floor=5.0)
    assert np.mean(bare.count[~hit] < 9) > 0.06
    assert np.mean(floored.count[~hit] < 9) < 0.03
    assert np.std(bare.data[~hit]) > 1.03 * ideal
    assert np.std(floored.data[~hit]) < 1.02 * ideal
    assert np.all(floored.count[hit] <= 8) and np.all(np.abs(floored.data[hit] - 1000.0) < 8.0)


def siril_winsorized(values, sigma, maxiters, floor):
    """The winsorized rule of `observd.core.rejection`, one pixel at a time in plain numpy: the
    values it keeps."""
    kept = np.sort(values.astype(np.float64))
    for _ in range(maxiters):
        if kept.size < 3:
            break
        m = np.median(kept)
        s = clamp = np.std(kept, ddof=1)
        for _ in range(50):
            s_new = 1.134 * np.std(np.clip(kept, m - 1.5 * clamp, m + 1.5 * clamp), ddof=1)
            settled = abs(s_new - s) <= 5e-4 * s
            s, clamp = s_new, min(clamp, s_new)
            if settled:
                break
        s = max(s, floor)
        new = kept[(kept >= m - sigma * s) & (kept <= m + sigma * s)]
        if new.size < 2 or new.size == kept.size:
            break
        kept = new
        if kept.size <= 3:
            break
    return kept


@pytest.mark.parametrize("n", [4, 10, 11])
@pytest.mark.parametrize("floor", [0.0, 5.0])
def test_weighted_winsorized_mean_equals_the_rule_pixel_by_pixel(n, floor):
    """Star-like pixels (much wider spread than the sky), cosmic rays, invalid values: every
    pixel keeps what the rule keeps, and the weighted mean is that of its kept values — so the
    fast paths (sky pixels screened against the floor, weights not carried through the sort)
    decide exactly what the rule decides."""
    rng = np.random.default_rng(n)
    stack = np.round(rng.normal(1000.0, 5.0, (n, 24, 32))).astype(np.float32)
    stack[:, :6] += np.round(rng.normal(0.0, 60.0, (n, 6, 32))).astype(np.float32)  # a star's pixels
    cosmic = rng.random(stack.shape) < 0.03
    stack[cosmic] += 900.0
    stack[rng.random(stack.shape) < 0.04] = np.nan
    weights = rng.uniform(0.5, 2.0, n)
    res = combine(
        sources(stack), method="mean", rejection="winsorized", maxiters=10, weights=weights, noise_floor=floor
    )
    rejected = 0
    for j, i in np.ndindex(stack.shape[1:]):
        values = stack[:, j, i]
        valid = np.isfinite(values)
        kept = siril_winsorized(values[valid], 3.0, 10, floor)
        assert res.count[j, i] == kept.size
        if kept.size:
            chosen = valid & (values >= kept[0]) & (values <= kept[-1])
            expected = np.average(values[chosen].astype(np.float64), weights=weights[chosen])
            assert res.data[j, i] == pytest.approx(expected, rel=1e-6)
        rejected += valid.sum() - kept.size
    assert rejected > 0.02 * stack.size  # the cosmic rays at least


def test_winsorized_never_keeps_fewer_than_two():
    stack = np.array([[1.0], [2.0], [100.0], [10000.0]], np.float32)[:, None, :]
    res = combine(sources(stack), rejection="winsorized", sigma_low=0.1, sigma_high=0.1)
    assert res.count[0, 0] >= 2


def test_bands_and_threads_give_identical_results():
    stack = bias_stack(11, shape=(128, 128), seed=7, nan_fraction=0.05)
    for kwargs in ({}, {"rejection": "winsorized"}, {"method": "mean", "weights": np.arange(1.0, 12.0)}):
        one_band = combine(sources(stack), workers=1, **kwargs)
        assert band_rows(11, 128, memory_limit=1 << 30, workers=1) >= 128  # one band
        tiny = combine(sources(stack), memory_limit=1, workers=2, **kwargs)  # 1-row bands
        for a, b in (
            (one_band.data, tiny.data),
            (one_band.uncertainty, tiny.uncertainty),
            (one_band.count, tiny.count),
        ):
            np.testing.assert_array_equal(a, b)


def test_working_memory_stays_within_limit():
    stack = bias_stack(20, shape=(256, 256), seed=9, nan_fraction=0.05)
    frames = sources(stack)
    limit = 2_000_000
    output = stack[0].size * (4 + 4 + 2)
    for rejection in ("sigclip", "winsorized", "minmax"):
        tracemalloc.start()
        combine(frames, rejection=rejection, memory_limit=limit, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < limit + output, rejection
    assert band_rows(20, 256, memory_limit=limit, workers=1) * 256 * band_bytes_per_pixel(20) <= limit


def test_invalid_arguments():
    stack = bias_stack(3)
    with pytest.raises(ValueError, match="shapes differ"):
        combine([ArraySource(stack[0]), ArraySource(stack[1, :10])])
    with pytest.raises(ValueError, match="method"):
        combine(sources(stack), method="mode")
    with pytest.raises(ValueError, match="rejection"):
        combine(sources(stack), rejection="grubbs")
    with pytest.raises(ValueError, match="weights"):
        combine(sources(stack), method="mean", weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="no frames"):
        combine([])
