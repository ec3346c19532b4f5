import numpy as np
import pytest
from scipy.spatial import cKDTree
from starfield import render, sky_catalog

from observd.core.measure import Measurement, judge, measure

SHAPE = (512, 512)


def grid_field(rng, spacing=40.0, flux=(3e3, 1e5)):
    """Stars on a jittered grid: all isolated, so every one must be found."""
    g = np.arange(24.0, 500.0, spacing)
    gx, gy = np.meshgrid(g, g)
    x = gx.ravel() + rng.uniform(-5, 5, gx.size)
    y = gy.ravel() + rng.uniform(-5, 5, gx.size)
    f = 10 ** rng.uniform(np.log10(flux[0]), np.log10(flux[1]), x.size)
    return x, y, f


@pytest.mark.parametrize("fwhm", [2.0, 3.0, 5.0])
def test_fwhm_matches_the_true_psf(fwhm):
    rng = np.random.default_rng(1)
    x, y, f = sky_catalog(150, 512, rng, margin=10)
    m, _ = measure(render(SHAPE, x, y, f, fwhm=fwhm, rng=rng))
    assert abs(m.fwhm - fwhm) / fwhm < 0.10
    # and it is the FWHM as sampled by pixels: optical FWHM^2 + one pixel box variance
    sampled = np.sqrt(fwhm**2 + 8 * np.log(2) / 12)
    assert abs(m.fwhm - sampled) / sampled < 0.03
    assert m.elongation < 1.15


def test_fwhm_of_stars_with_moffat_wings():
    # half-light radii read 2*r_half = 3.9 px here: the wings must not count
    rng = np.random.default_rng(2)
    x, y, f = sky_catalog(120, 512, rng, margin=20)
    m, _ = measure(render(SHAPE, x, y, f, fwhm=3.0, beta=3.0, rng=rng))
    assert abs(m.fwhm - 3.0) / 3.0 < 0.06


def test_counts_every_isolated_star_and_centroids_are_precise():
    rng = np.random.default_rng(3)
    x, y, f = grid_field(rng, flux=(1e4, 1e5))
    m, stars = measure(render(SHAPE, x, y, f, rng=rng))
    assert m.n_stars == len(x)
    assert abs(m.background - 800) < 2 and abs(m.noise - np.sqrt(800 + 36)) < 1.5
    dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([stars.x, stars.y]))
    # windowed centroids; isophotal barycentres give 0.027 / 0.057 px here
    assert np.median(dist) < 0.018 and np.percentile(dist, 90) < 0.045


def test_star_list_is_brightest_first_in_column_row_order_and_capped():
    rng = np.random.default_rng(4)
    x, y, f = grid_field(rng, flux=(3e3, 2e4))
    x, y, f = np.append(x, 100.3), np.append(y, 407.0), np.append(f, 5e5)
    m, stars = measure(render(SHAPE, x, y, f, rng=rng), max_stars=20)
    assert len(stars) == 20 and m.n_stars == len(x)  # the count is not capped
    assert abs(stars.x[0] - 100.3) < 0.05 and abs(stars.y[0] - 407.0) < 0.05
    assert np.all(np.diff(stars.flux) <= 0)
    assert stars.x.dtype == np.float64


def test_nan_region_and_mask_are_ignored():
    rng = np.random.default_rng(5)
    x, y, f = grid_field(rng)
    image = render(SHAPE, x, y, f, rng=rng)
    image[100:300, 50:200] = np.nan
    mask = np.zeros(SHAPE, dtype=bool)
    mask[400:, 400:] = True
    m, stars = measure(image, mask=mask)

    def hidden(px, py, grow):  # inside the NaN block or the masked corner, grown by `grow`
        return ((px > 50 - grow) & (px < 199 + grow) & (py > 100 - grow) & (py < 299 + grow)) | (
            (px > 400 - grow) & (py > 400 - grow)
        )

    assert not np.any(hidden(stars.x, stars.y, -2))
    assert len(x) - hidden(x, y, 5).sum() <= m.n_stars <= len(x) - hidden(x, y, -5).sum()
    assert np.isfinite(m.background) and abs(m.fwhm - 3.08) < 0.2
    assert np.all(np.isfinite(stars.x))
    # a mask the caller gives up is completed in place (the NaN block added), with the same result
    given_up = mask.copy()
    assert measure(image, mask=given_up, overwrite_mask=True)[0] == m
    assert given_up[100:300, 50:200].all() and given_up[400:, 400:].all() and given_up.sum() > mask.sum()
    assert measure(image, mask=mask)[0] == m and mask.sum() == (SHAPE[0] - 400) * (SHAPE[1] - 400)  # kept


def test_big_endian_fits_data_is_accepted():
    rng = np.random.default_rng(6)
    x, y, f = grid_field(rng)
    image = render(SHAPE, x, y, f, rng=rng).astype(">f4")
    m, _ = measure(image)
    assert m.n_stars == len(x)


@pytest.mark.parametrize("image", [np.zeros(SHAPE), np.full(SHAPE, np.nan)], ids=["zeros", "nan"])
def test_blank_frames_have_no_stars(image):
    m, stars = measure(image)
    assert m.n_stars == 0 and m.fwhm is None and m.elongation is None and len(stars) == 0
    if np.isfinite(image).any():
        assert m.noise == 0.0


def test_pure_noise_hot_pixels_and_cosmic_rays_are_not_stars():
    rng = np.random.default_rng(7)
    image = rng.normal(800.0, 6.0, SHAPE)
    r, c = rng.integers(5, 507, 60), rng.integers(5, 507, 60)
    image[r, c] += rng.uniform(200, 5000, 60)  # hot pixels, one-pixel hits
    image[r[:30] + 1, c[:30]] += rng.uniform(200, 5000, 30)  # two-pixel cosmic-ray tracks
    image[r[:10] + 1, c[:10] + 1] += rng.uniform(200, 5000, 10)  # some three-pixel ones
    m, stars = measure(image)
    assert m.n_stars <= 3 and len(stars) == m.n_stars


def test_saturated_stars_are_counted_and_kept_out_of_fwhm():
    rng = np.random.default_rng(8)
    x, y, f = grid_field(rng, flux=(2e3, 2e4))
    f[::2] = 3e6  # half the stars far beyond full well
    image = np.minimum(render(SHAPE, x, y, f, fwhm=3.0, rng=rng), 50000.0)
    m, stars = measure(image, saturation=50000.0)
    assert m.n_saturated == len(x[::2])
    assert abs(m.fwhm - 3.08) < 0.2  # flat-topped stars would read much wider
    # still usable for alignment: every saturated star is in the list
    dist, _ = cKDTree(np.column_stack([stars.x, stars.y])).query(np.column_stack([x, y])[::2])
    assert np.all(dist < 0.5)


def test_trailed_frame_is_elongated():
    rng = np.random.default_rng(9)
    x, y, f = grid_field(rng)
    # sigma 1.27 px trailed 12.5 px: sqrt(s^2 + L^2/12) / s = 3
    m, _ = measure(render(SHAPE, x, y, f, trail=(8.84, 8.84), rng=rng))
    assert 2.5 < m.elongation < 3.6
    assert m.fwhm is None  # no round star to measure the seeing on


def test_judge_flags_clouds_and_trailing_and_passes_good_frames():
    rng = np.random.default_rng(10)
    x, y, f = sky_catalog(200, 512, rng, margin=10)
    good, _ = measure(render(SHAPE, x, y, f, rng=rng))
    cloudy, _ = measure(render(SHAPE, x[::10], y[::10], f[::10], rng=rng))
    trailed, _ = measure(render(SHAPE, x, y, f, trail=(0.0, 12.5), rng=rng))
    best = good.n_stars
    assert judge(good, best) is None
    reason = judge(cloudy, best)
    assert reason is not None and "clouds" in reason and f"({best})" in reason
    assert f"{cloudy.n_stars} stars" in reason
    reason = judge(trailed, best)
    assert reason is not None and "elongated" in reason and "limit 1.6" in reason


def test_judge_thresholds():
    def m(n, elongation=1.1):
        return Measurement(100.0, 5.0, n, 3.0, elongation, 0)

    assert judge(m(50), 100) is None  # exactly half: still good
    assert "49 stars, 49%" in judge(m(49), 100)
    assert judge(m(40), 100, min_star_fraction=0.3) is None
    assert judge(m(100, 1.6), 100) is None
    assert "1.7" in judge(m(100, 1.7), 100)
    assert "no stars" in judge(m(0, None), 0)
    assert judge(m(10), 0) is None  # no best frame yet: nothing to compare
