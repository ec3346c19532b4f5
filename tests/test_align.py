import os
from pathlib import Path

import astroalign
import numpy as np
import pytest
from astropy.io import fits
from starfield import apply_matrix, render, similarity, sky_catalog

from observd.core import align as align_module
from observd.core.align import AlignError, Transform, apply_transform, find_transform
from observd.core.measure import Stars, measure

N = 512
GRID = np.meshgrid(np.linspace(0, N - 1, 9), np.linspace(0, N - 1, 9))


@pytest.fixture(scope="module")
def sky():
    """A 250-star sky (about 150 fall in each frame), and the reference frame's stars."""
    rng = np.random.default_rng(11)
    x, y, f = sky_catalog(250, N, rng)
    _, ref_stars = measure(render((N, N), x, y, f, rng=rng))
    return x, y, f, ref_stars


def frame_through(sky, ref_to_frame, seed, **kw):
    x, y, f, _ = sky
    fx, fy = apply_matrix(ref_to_frame, x, y)
    return render((N, N), fx, fy, f, rng=np.random.default_rng(seed), **kw)


def grid_error(matrix, truth):
    ex, ey = apply_matrix(matrix, *GRID)
    tx, ty = apply_matrix(truth, *GRID)
    return np.sqrt(np.mean((ex - tx) ** 2 + (ey - ty) ** 2))


CASES = {
    "shift+rotation": similarity(2.5, 1.0, (13.4, -7.8), (N / 2, N / 2)),
    "scale": similarity(0.3, 1.004, (3.3, 2.1), (N / 2, N / 2)),
    "meridian flip": similarity(180.0, 1.0, (1.7, -2.2), (N / 2, N / 2)),
    "flip+rotation+scale": similarity(179.2, 0.998, (5.7, -4.2), (N / 2, N / 2)),
}


@pytest.mark.parametrize("name", CASES)
def test_recovers_known_transform_to_subpixel_accuracy(sky, name):
    ref_to_frame = CASES[name]
    _, stars = measure(frame_through(sky, ref_to_frame, seed=len(name)))
    t = find_transform(stars, sky[3])
    truth = np.linalg.inv(ref_to_frame)  # frame -> reference
    assert grid_error(t.matrix, truth) <= 0.05
    # refined on more pairs than astroalign's 50 control points
    assert t.n_matches > 80 and t.rms < 0.15
    a = truth[:2, :2]
    true_rotation = np.degrees(np.arctan2(a[1, 0], a[0, 0]))
    assert abs((t.rotation_deg - true_rotation + 180) % 360 - 180) < 0.02
    assert abs(t.scale - np.sqrt(np.linalg.det(a))) < 2e-4
    assert t.shift == pytest.approx((truth[0, 2], truth[1, 2]), abs=0.1)


def test_refinement_rejects_pairs_that_disagree(sky):
    ref_to_frame = CASES["shift+rotation"]
    _, stars = measure(frame_through(sky, ref_to_frame, seed=3))
    clean = find_transform(stars, sky[3])
    # displace six matched stars by 1.2 px: within the match radius, but wrong
    ref = np.column_stack([sky[3].x, sky[3].y])
    mapped = apply_matrix(clean.matrix, stars.x, stars.y)
    matched = np.flatnonzero(np.hypot(mapped[0][:, None] - ref[:, 0], mapped[1][:, None] - ref[:, 1]).min(axis=1) < 0.3)
    x = stars.x.copy()
    x[matched[60:66]] += 1.2
    t = find_transform(Stars(x, stars.y, stars.flux), sky[3])
    # kept, six 1.2 px residuals would lift the RMS from ~0.05 to ~0.25 px
    assert t.n_matches <= clean.n_matches and t.rms < 1.2 * clean.rms
    assert grid_error(t.matrix, np.linalg.inv(ref_to_frame)) <= 0.05


def test_noise_frame_cannot_be_aligned(sky):
    _, stars = measure(np.random.default_rng(1).normal(800.0, 6.0, (N, N)))
    with pytest.raises(AlignError, match=r"only 0 stars detected in the frame \(need 4\)"):
        find_transform(stars, sky[3])


def test_another_field_raises_with_the_astroalign_cause(sky):
    rng = np.random.default_rng(2)
    x, y, f = sky_catalog(150, N, rng, margin=10)
    _, stars = measure(render((N, N), x, y, f, rng=rng))
    with pytest.raises(AlignError, match="no star pattern in common") as info:
        find_transform(stars, sky[3])
    assert isinstance(info.value.__cause__, astroalign.MaxIterError)


def test_too_few_matches_is_reported():
    ref = Stars(np.array([10.0, 200.0, 50.0, 400.0, 300.0]), np.array([20.0, 40.0, 300.0, 420.0, 150.0]), np.ones(5))
    frame = Stars(ref.x[:3] + 5.0, ref.y[:3] - 3.0, np.ones(3))
    with pytest.raises(AlignError, match=r"only 3 stars detected in the frame \(need 4\)"):
        find_transform(frame, ref)


def _transform(matrix):
    return Transform.from_matrix(matrix, rms=0.0, n_matches=0)


def _aperture_sums(image, x, y, radius=8.0):
    rows, cols = np.indices(image.shape)
    return np.array([np.nansum(image[(cols - xi) ** 2 + (rows - yi) ** 2 <= radius**2]) for xi, yi in zip(x, y)])


def test_resampled_frame_lands_on_the_reference_and_keeps_flux():
    # frame -> reference is a rotation with a 1 % scale change: flux per pixel changes 2 %
    frame_to_ref = similarity(23.0, 1.01, (4.3, -2.7), (N / 2, N / 2))
    rng = np.random.default_rng(5)
    x = rng.uniform(140, 370, 12)
    y = rng.uniform(140, 370, 12)
    flux = np.full(12, 5e4)
    frame = render((N, N), x, y, flux, sky=0.0, noise=False)
    out = apply_transform(frame, _transform(frame_to_ref), (N, N))
    assert out.dtype == np.float32
    rx, ry = apply_matrix(frame_to_ref, x, y)
    np.testing.assert_allclose(_aperture_sums(out, rx, ry), _aperture_sums(frame, x, y), rtol=0.01)
    _, found = measure(out + np.random.default_rng(6).normal(100.0, 3.0, out.shape))
    dist = np.hypot(found.x[:, None] - rx, found.y[:, None] - ry).min(axis=1)
    assert np.all(dist < 0.05)


def test_nan_outside_footprint_and_nan_holes_do_not_spread():
    # frame x -> reference x + 10.5, frame y -> reference y - 20
    t = _transform(similarity(0.0, 1.0, (10.5, -20.0)))
    rng = np.random.default_rng(7)
    frame = rng.normal(100.0, 5.0, (N, N))
    holed = frame.copy()
    holed[200:210, 300:310] = np.nan
    out = apply_transform(holed, t, (N, N))
    clean = apply_transform(frame, t, (N, N))
    outside = np.zeros((N, N), dtype=bool)
    outside[:, :11] = True  # reference x < 10.5
    outside[N - 20 :, :] = True  # reference y > N - 1 - 20
    np.testing.assert_array_equal(np.isnan(out), outside)
    # away from the hole (which lands at rows 180-189, cols 310.5-319.5) nothing changed
    far = ~outside
    far[175:195, 305:325] = False
    np.testing.assert_allclose(out[far], clean[far], atol=0.05)


@pytest.mark.parametrize("engine", ["opencv", "scipy"])
def test_a_plane_given_up_is_resampled_alike_with_its_holes_filled_in_place(engine):
    t = _transform(similarity(0.3, 1.0, (10.5, -20.0)))
    frame = np.random.default_rng(8).normal(100.0, 5.0, (N, N)).astype(np.float32)
    frame[200:210, 300:310] = np.nan
    expected = apply_transform(frame, t, (N, N), engine=engine)
    assert np.isnan(frame).sum() == 100  # the caller's plane is left alone by default
    out = apply_transform(frame, t, (N, N), engine=engine, overwrite=True)
    np.testing.assert_array_equal(out, expected)
    assert np.isfinite(frame).all() and np.all(frame[200:210, 300:310] == frame[200, 300])


def _expected_mask(bad_rc, shift_xy, grow):
    """Brute force: output pixel is bad when an input pixel in its support is bad."""
    rows, cols = np.indices((N, N), dtype=float)
    in_r, in_c = rows - shift_xy[1], cols - shift_xy[0]
    r0, c0 = np.floor(in_r), np.floor(in_c)
    bad = np.zeros((N, N), dtype=bool)
    for br, bc in bad_rc:
        bad |= (br >= r0 - grow) & (br <= r0 + 1 + grow) & (bc >= c0 - grow) & (bc <= c0 + 1 + grow)
    outside = (in_r < 0) | (in_r > N - 1) | (in_c < 0) | (in_c > N - 1)
    return bad | outside


@pytest.mark.parametrize("order,grow", [(3, 1), (1, 0)])
def test_mask_marks_every_pixel_a_bad_input_pixel_contributes_to(order, grow):
    shift = (3.5, -6.25)
    bad_rc = [(50, 60), (300, 301), (301, 301)]
    mask = np.zeros((N, N), dtype=bool)
    for r, c in bad_rc:
        mask[r, c] = True
    t = _transform(similarity(0.0, 1.0, shift))
    out = apply_transform(mask, t, (N, N), kind="mask", order=order)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, _expected_mask(bad_rc, shift, grow))


def test_uncertainty_is_resampled_positive_and_scaled():
    t = _transform(similarity(17.0, 1.02, (2.0, 1.0), (N / 2, N / 2)))
    sigma = np.full((N, N), 2.0)
    sigma[256, 256] = 500.0  # a hot pixel
    out = apply_transform(sigma, t, (N, N), kind="uncertainty")
    inside = np.isfinite(out)
    assert out.dtype == np.float32 and 0.5 * N * N < inside.sum() < N * N
    np.testing.assert_array_equal(inside, np.isfinite(apply_transform(sigma, t, (N, N))))
    assert np.all(out[inside] >= 2.0 / 1.02**2 - 1e-5)  # never rings below the floor
    assert np.median(out[inside]) == pytest.approx(2.0 / 1.02**2, rel=1e-5)


def test_rejects_unknown_kind_and_order():
    t = _transform(np.eye(3))
    with pytest.raises(ValueError, match="kind"):
        apply_transform(np.zeros((4, 4)), t, (4, 4), kind="variance")
    with pytest.raises(ValueError, match="order"):
        apply_transform(np.zeros((4, 4)), t, (4, 4), order=2)


def test_real_lights_align_consistently():
    """Three consecutive HAT-P-32 lights: A->C must equal (B->C) after (A->B)."""
    root = Path(os.environ.get("OBSERVD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    files = sorted((root / "02_microobs_hatp32_lights").glob("HATP-32*.FITS.gz"))[1:4]
    if len(files) < 3:
        pytest.skip(f"real sample data not found under {root}")
    a, b, c = (measure(fits.getdata(f))[1] for f in files)
    ab, bc, ac = find_transform(a, b), find_transform(b, c), find_transform(a, c)
    for t in (ab, bc, ac):
        assert t.rms < 0.15 and t.n_matches > 100 and abs(t.scale - 1) < 1e-3
    assert grid_error(bc.matrix @ ab.matrix, ac.matrix) < 0.05


def test_fast_engine_agrees_with_the_scipy_reference():
    """OpenCV's warp is the production path; scipy's spline resampling is the reference."""
    frame_to_ref = similarity(181.3, 0.998, (7.25, -3.6), (N / 2, N / 2))  # a meridian flip
    rng = np.random.default_rng(9)
    x, y = rng.uniform(60, N - 60, 40), rng.uniform(60, N - 60, 40)
    frame = render((N, N), x, y, np.full(40, 3e4), sky=200.0, noise=False)
    t = _transform(frame_to_ref)
    fast, exact = (apply_transform(frame, t, (N, N), engine=e) for e in ("opencv", "scipy"))
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(exact))
    rx, ry = apply_matrix(frame_to_ref, x, y)
    # Keys' cubic kernel and the B-spline differ in how a star's wings land with sub-pixel
    # phase: aperture sums agree within 0.5 % per star (and average out over a stack)
    ratio = _aperture_sums(fast, rx, ry) / _aperture_sums(exact, rx, ry)
    assert np.all(np.abs(ratio - 1) < 0.005) and abs(np.median(ratio) - 1) < 0.001
    _, found = measure(fast + np.random.default_rng(6).normal(100.0, 3.0, fast.shape))
    assert np.all(np.hypot(found.x[:, None] - rx, found.y[:, None] - ry).min(axis=1) < 0.05)

    # Masks. OpenCV quantises sample positions to 1/32 px, so a bad neighbour whose bilinear
    # weight is below 1/64 contributes nothing to its data and is not flagged, where scipy
    # flags it (OpenCV's one- and multi-channel paths may also round such a weight differently):
    # the masks may differ by those few pixels, never on the footprint.
    bad = np.zeros((N, N), bool)
    bad[100, 200] = bad[300:303, 50] = True
    other = np.zeros((N, N), bool)
    other[400, 10:14] = True
    stacked = apply_transform(np.stack([bad, other]), t, (N, N), kind="mask")  # one warp, two planes
    assert stacked.shape == (2, N, N)
    for plane, quick in zip((bad, other), stacked):
        reference = apply_transform(plane, t, (N, N), kind="mask", engine="scipy")
        assert np.count_nonzero(quick ^ reference) <= 2
        assert np.count_nonzero(quick ^ apply_transform(plane, t, (N, N), kind="mask")) <= 2
        assert quick[np.isnan(exact)].all()  # everything outside the footprint is flagged
    sig = np.full((N, N), 4.0, np.float32)
    uncs = [apply_transform(sig, t, (N, N), kind="uncertainty", engine=e) for e in ("opencv", "scipy")]
    inside = ~np.isnan(uncs[1])
    np.testing.assert_allclose(uncs[0][inside], uncs[1][inside], rtol=1e-4)


def test_sparse_and_dense_mask_warps_agree(monkeypatch):
    """Sparse masks are warped pixel by pixel; the dense OpenCV path is what heavy masks take."""
    rng = np.random.default_rng(12)
    bad = rng.random((N, N)) < 0.004
    bad[200:230, 100] = True  # a bad column segment
    t = _transform(similarity(33.0, 1.01, (5.3, -2.8), (N / 2, N / 2)))
    for order in (3, 1):
        sparse = apply_transform(bad, t, (N, N), kind="mask", order=order)
        monkeypatch.setattr(align_module, "SPARSE_MASK_FRACTION", 0.0)
        dense = apply_transform(bad, t, (N, N), kind="mask", order=order)
        monkeypatch.undo()
        # the two differ only where OpenCV's 1/32 px weights round a tiny contribution away
        assert sparse.sum() > (9 if order == 3 else 2) * bad.sum()
        assert np.count_nonzero(sparse ^ dense) <= 0.01 * sparse.sum()


def test_the_same_star_lists_always_give_the_same_transform():
    """astroalign's first estimate comes from an unseeded random search; the refinement must not
    depend on it (a daemon and a batch align the same frame to the same reference identically)."""
    from observd.core.align import find_transform, prepare_astroalign
    from observd.core.measure import Stars

    prepare_astroalign()  # as every observd process does when it starts (idempotent)
    rng = np.random.default_rng(0)
    ref_xy = rng.uniform(0, 512, (60, 2))
    matrix = np.array([[0.9998, -0.0175, 7.3], [0.0175, 0.9998, -4.1], [0, 0, 1]])
    frame_xy = (ref_xy - matrix[:2, 2]) @ np.linalg.inv(matrix[:2, :2]).T
    frame_xy += rng.normal(0, 1.0, frame_xy.shape)  # noisy positions: some pairs near the match radius
    frame_xy = np.vstack([frame_xy, rng.uniform(0, 512, (15, 2))])  # and stars the reference lacks
    flux = rng.uniform(100, 5000, len(frame_xy))
    stars = Stars(frame_xy[:, 0], frame_xy[:, 1], flux)
    ref = Stars(ref_xy[:, 0], ref_xy[:, 1], rng.uniform(100, 5000, len(ref_xy)))
    results = {find_transform(stars, ref).matrix.tobytes() for _ in range(30)}
    assert len(results) == 1
