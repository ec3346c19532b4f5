"""Nightly stacks: weights, rejection, masks, and the quality of a stacked simulated night.

The quality tests ingest one small simulated night (two filters, a cloud, a trail, hot pixels,
cosmic rays, a meridian flip) through the real pipeline and compare the stacks with the
simulator's ground truth.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import sigma_clipped_stats
from support import make_config, single_frame_noise

from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import write_image
from observd.core.stack_plan import StackGroup, frame_weights, plan_stacks, rejection_for
from observd.pipeline.batch import ingest
from observd.pipeline.stacking import stack_frames, stack_night
from observd.sim import scene as sim_scene
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

# --------------------------------------------------------------------------- small, pure pieces


def write_frame(path: Path, data: np.ndarray, mask: np.ndarray | None = None) -> Path:
    return write_image(
        path,
        data,
        fits.Header(),
        uncertainty=np.ones_like(data),
        mask=np.zeros(data.shape, bool) if mask is None else mask,
    )


def test_weights_are_inverse_variance_and_unmeasured_noise_gets_the_median():
    w = frame_weights([10.0, 20.0, None])
    # 1/100, 1/400, and the median noise (15) for the unmeasured frame: 1/225
    expected = np.array([1 / 100, 1 / 400, 1 / 225])
    np.testing.assert_allclose(w, expected / expected.sum())


def test_noise_fwhm_weights_divide_by_the_fwhm_squared_and_equal_weights_are_equal():
    w = frame_weights([10.0, 10.0, 20.0], [2.0, 4.0, None], weighting="noise_fwhm")
    # the unmeasured FWHM gets the median of the others' (3)
    expected = np.array([1 / (100 * 4), 1 / (100 * 16), 1 / (400 * 9)])
    np.testing.assert_allclose(w, expected / expected.sum())
    np.testing.assert_allclose(frame_weights([1.0, 5.0, None, 2.0], weighting="equal"), 0.25)
    with pytest.raises(ValueError, match="FWHM per frame"):
        frame_weights([1.0, 2.0], weighting="noise_fwhm")
    with pytest.raises(ValueError, match="noise_fwhm"):
        frame_weights([1.0, 2.0], weighting="fwhm")


def test_noise_fwhm_weighting_raises_a_faint_stars_peak_signal_to_noise(tmp_path):
    """Half the frames in good seeing (FWHM 2.5 px), half in poor (5 px), same sky noise: the
    sharp frames' faint-star peak is 4x higher, and weighting them up beats the noise weights
    (here equal) on the star's peak S/N, at the cost of some sky noise."""
    rng = np.random.default_rng(5)
    shape, fwhms, sky_noise = (96, 96), [2.5, 5.0] * 4, 10.0
    star = [
        sim_scene.render_stars(shape, np.array([48.0]), np.array([48.0]), np.array([3000.0]), f) for f in (2.5, 5.0)
    ]
    paths = [
        write_frame(tmp_path / f"s{i}.fits", (100 + star[i % 2] + rng.normal(0, sky_noise, shape)).astype(np.float32))
        for i in range(len(fwhms))
    ]
    noises = [sky_noise] * len(fwhms)
    sky = np.ones(shape, bool)
    sky[28:69, 28:69] = False

    def peak_snr(weighting: str) -> tuple[float, float]:
        w = frame_weights(noises, fwhms, weighting=weighting)
        data, _, _ = stack_frames(paths, weights=w, rejection="none", sigma=3.0, memory_limit=1 << 20, workers=1)
        noise = float(np.std(data[sky]))
        peak = float(data[47:50, 47:50].max() - np.median(data[sky]))
        return peak / noise, noise

    snr_noise, sky_noise_noise = peak_snr("noise")
    snr_fwhm, sky_noise_fwhm = peak_snr("noise_fwhm")
    # expected S/N gain: weights 16:1 between sharp and soft frames (peaks 4:1)
    w = np.array([16.0, 1.0])
    peaks = np.array([4.0, 1.0])
    gain = (w @ peaks / np.sqrt(w @ w)) / (peaks.sum() / np.sqrt(2.0))
    print(
        f"peak S/N {snr_noise:.1f} -> {snr_fwhm:.1f} (expected x{gain:.2f}); "
        f"sky noise {sky_noise_noise:.2f} -> {sky_noise_fwhm:.2f}"
    )
    assert snr_fwhm > 1.08 * snr_noise and snr_fwhm == pytest.approx(gain * snr_noise, rel=0.1)
    assert sky_noise_fwhm > sky_noise_noise


def test_pixels_kept_from_fewer_than_three_frames_get_the_frames_noise_as_uncertainty():
    from observd.pipeline.stacking import _floor_uncertainty

    unc = np.array([[np.nan, 0.0, 0.0], [2.5, 3.0, 1.0]], np.float32)
    count = np.array([[0, 1, 2], [3, 9, 2]], np.uint16)
    rows = [{"noise": 8.0}, {"noise": 12.0}, {"noise": None}]
    out = _floor_uncertainty(unc, count, rows)
    # median noise 10: 10/sqrt(1), 10/sqrt(2) where 1 or 2 values were kept; the rest as combined
    np.testing.assert_allclose(out, [[np.nan, 10.0, 10 / np.sqrt(2)], [2.5, 3.0, 10 / np.sqrt(2)]], rtol=1e-6)
    assert out.dtype == np.float32


def test_small_stacks_use_winsorized_clipping():
    # with sigma 3 a lone outlier is 3.6 std from the median only from 12 frames on
    assert rejection_for("sigclip", 11, 6, 3.0) == "winsorized"
    assert rejection_for("sigclip", 12, 6, 3.0) == "sigclip"
    assert rejection_for("sigclip", 20, 25, 3.0) == "winsorized"  # small_n above the limit wins
    assert rejection_for("sigclip", 6, 6, 2.0) == "winsorized"
    assert rejection_for("sigclip", 7, 6, 2.0) == "sigclip"
    assert rejection_for("none", 3, 6) == "none"  # an explicit choice is honoured


def test_plain_sigma_clipping_misses_a_cosmic_ray_in_six_frames_winsorized_does_not(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(6):
        frame = (1000 + rng.normal(0, 5, (6, 6))).astype(np.float32)
        if i == 0:
            frame[2, 2] += 2000.0
        paths.append(write_frame(tmp_path / f"c{i}.fits", frame))
    kw = dict(weights=[1 / 6] * 6, sigma=3.0, memory_limit=1 << 20, workers=1)
    plain, _, _ = stack_frames(paths, rejection="sigclip", **kw)
    chosen, _, count = stack_frames(paths, rejection=rejection_for("sigclip", 6, 6, 3.0), **kw)
    assert plain[2, 2] > 1300  # 2000/6 left in: the reason for the rule
    assert count[2, 2] == 5 and abs(chosen[2, 2] - 1000) < 10


def test_weighted_mean_with_offsets(tmp_path):
    levels, noises = [100.0, 130.0, 90.0], [1.0, 2.0, 4.0]
    paths = [write_frame(tmp_path / f"f{i}.fits", np.full((8, 9), v, np.float32)) for i, v in enumerate(levels)]
    w = frame_weights(noises)
    data, unc, count = stack_frames(paths, weights=w, rejection="none", sigma=3.0, memory_limit=1 << 20, workers=1)
    np.testing.assert_allclose(data, np.dot(w, levels), rtol=1e-6)
    assert (count == 3).all()
    # offsets bring every frame to the first one's level: the result is that level whatever the weights
    data, _, _ = stack_frames(
        paths,
        weights=w,
        rejection="sigclip",
        sigma=3.0,
        memory_limit=1 << 20,
        workers=1,
        offsets=[100.0 - v for v in levels],
    )
    np.testing.assert_allclose(data, 100.0, rtol=1e-6)


def test_masked_and_nan_pixels_are_ignored_and_outliers_rejected(tmp_path):
    rng = np.random.default_rng(1)
    frames = [(1000 + rng.normal(0, 5, (40, 30))).astype(np.float32) for _ in range(5)]
    masks = [np.zeros((40, 30), bool) for _ in range(5)]
    frames[0][3, 4] = 60000.0  # saturated, masked
    masks[0][3, 4] = True
    frames[1][10, 10] = np.nan  # outside a footprint
    frames[2][20, 5] = 5000.0  # a cosmic ray, not masked: rejection's job
    for k in range(5):  # a pixel nobody saw
        masks[k][39, 29] = True
    paths = [write_frame(tmp_path / f"m{i}.fits", f, m) for i, (f, m) in enumerate(zip(frames, masks))]
    data, unc, count = stack_frames(
        paths, weights=[0.2] * 5, rejection=rejection_for("sigclip", 5, 6), sigma=3.0, memory_limit=1 << 20, workers=2
    )
    assert count[3, 4] == 4 and abs(data[3, 4] - np.mean([f[3, 4] for f in frames[1:]])) < 1e-3
    assert count[10, 10] == 4 and np.isfinite(data[10, 10])
    assert count[20, 5] == 4 and abs(data[20, 5] - 1000) < 15
    assert count[39, 29] == 0 and np.isnan(data[39, 29]) and np.isnan(unc[39, 29])
    assert np.median(count) == 5


def _row(i, *, state="aligned", obj="M42", filt="L", night="2026-11-20", ref=1, bg=100.0):
    return {
        "id": i,
        "name": f"f{i}.fits",
        "frame_type": "light",
        "state": state,
        "aligned_path": f"/a/f{i}.fits",
        "night": night,
        "object": obj,
        "filter": filt,
        "reference_id": ref,
        "date_obs": f"2026-11-20T2{i % 10}",
        "path": f"/raw/f{i}.fits",
        "background": bg,
        "noise": 1.0,
        "exptime": 60.0,
    }


def test_plan_takes_aligned_frames_per_target_and_filter_with_enough_frames():
    rows = [
        _row(1),
        _row(2),
        _row(3, state="bad"),
        _row(4, state="unaligned"),
        _row(5, filt="R"),
        _row(6, obj="M31", ref=7),
        _row(7, obj="M31", ref=7),
        _row(8, night="2026-11-21"),
    ]
    refs = {1: rows[0], 7: rows[6]}
    plans = plan_stacks(rows, refs, night="2026-11-20", min_frames=2)
    assert [(p.object, p.filter, [r["id"] for r in p.rows]) for p in plans] == [
        ("M31", "L", [6, 7]),
        ("M42", "L", [1, 2]),
    ]
    only = plan_stacks(rows, refs, night="2026-11-20", min_frames=1, object="M42", filter="R")
    assert [(p.filter, len(p.rows)) for p in only] == [("R", 1)]


def test_backgrounds_go_to_the_reference_level_or_the_median_when_it_is_another_filter():
    a, b, c = _row(1, bg=100.0), _row(2, bg=130.0), _row(3, bg=90.0)
    assert StackGroup("n", "M42", "L", (a, b, c), a).offsets() == [0.0, -30.0, 10.0]
    other = _row(9, filt="R", bg=500.0)
    assert StackGroup("n", "M42", "L", (a, b, c), other).offsets() == [0.0, -30.0, 10.0]  # median 100
    assert StackGroup("n", "M42", "L", (b, c), other).background_level() == 110.0


# --------------------------------------------------------------------------- a simulated night

SPEC = SimSpec(
    seed=5,
    shape=(384, 384),
    sky=60.0,
    n_bias=7,
    n_dark=5,
    n_flat=5,
    targets=(TargetSpec("M42", ("L", "R"), n_lights=9, exptime=60.0, n_stars=400),),
)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    base = tmp_path_factory.mktemp("stacknight")
    truth = write_night(base / "raw", SPEC)
    config = make_config(base)
    catalog = Catalog.open(config.paths.database)
    result = ingest([base / "raw"], catalog, config)
    assert not result.failed, result.errors
    products = stack_night(config, catalog, SPEC.night)
    yield {
        "base": base,
        "truth": truth,
        "npz": dict(np.load(base / "raw" / "truth.npz")),
        "config": config,
        "catalog": catalog,
        "products": products,
    }
    catalog.close()


def truth_file(truth: dict, name: str) -> dict:
    return next(f for f in truth["files"] if Path(f["name"]).name == name)


def product_frames(night, product) -> tuple[list[dict], list[dict]]:
    """Catalog rows and truth records of a product's inputs."""
    rows = [night["catalog"].file(i) for i in product.input_ids]
    return rows, [truth_file(night["truth"], r["name"]) for r in rows]


def to_stack(matrix_ref, matrix_frame, xy: np.ndarray) -> np.ndarray:
    """Frame pixel coordinates -> stack (reference) coordinates, through the sky frame."""
    m = np.asarray(matrix_ref) @ np.linalg.inv(np.asarray(matrix_frame))
    return xy @ m[:2, :2].T + m[:2, 2]


def moffat_enclosed(r: float, fwhm: float) -> float:
    """Fraction of a Moffat star's flux within radius r (the simulator's PSF)."""
    beta = sim_scene.MOFFAT_BETA
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return 1.0 - (1.0 + r * r / alpha**2) ** (1.0 - beta)


def star_model(night, product) -> tuple[np.ndarray, np.ndarray]:
    """The stack's expected star light (no sky), and the star catalogue in stack pixels."""
    rows, recs = product_frames(night, product)
    truth = night["truth"]
    ref = truth_file(truth, product.reference)
    cat = np.asarray(truth["targets"][product.object]["stars"])
    xy = cat[:, :2] @ np.asarray(ref["matrix"])[:2, :2].T + np.asarray(ref["matrix"])[:2, 2]
    w = frame_weights([r["noise"] for r in rows])
    scale = float(np.dot(w, [t["transparency"] for t in recs]))
    fwhm = float(np.dot(w, [t["fwhm"] for t in recs]))
    image = sim_scene.render_stars(tuple(truth["shape"]), xy[:, 0], xy[:, 1], cat[:, 2] * scale, fwhm)
    return image, np.column_stack([xy, cat[:, 2]])


def read_product(product):
    with fits.open(product.path) as hdul:
        return hdul[0].data.astype(np.float64), hdul[0].header, hdul["MASK"].data.astype(bool)


def coverage(rows) -> np.ndarray:
    """How many input frames have a valid (unmasked) value at each stack pixel."""
    return sum((fits.getdata(r["aligned_path"], "MASK") == 0).astype(int) for r in rows)


@pytest.mark.slow
def test_one_product_per_filter_excluding_clouded_and_trailed_frames(night):
    truth, catalog = night["truth"], night["catalog"]
    products = night["products"]
    assert sorted((p.object, p.filter) for p in products) == [("M42", "L"), ("M42", "R")]
    bad_names = {
        Path(f["name"]).name for f in truth["files"] if f["type"] == "light" and (f["clouded"] or f["trailed"])
    }
    assert len(bad_names) == 2
    total = 0
    for p in products:
        names = {catalog.file(i)["name"] for i in p.input_ids}
        assert not names & bad_names
        header = read_product(p)[1]
        assert {header[k] for k in header if k.startswith("IMCMB")} == names
        assert header["NCOMBINE"] == p.n_combined == len(names)
        assert header["TOTEXP"] == header["EXPTIME"] == pytest.approx(60.0 * len(names))
        assert header["ALIGNREF"] == p.reference and header["OBJECT"] == "M42" and header["FILTER"] == p.filter
        assert any("weighted mean" in h and "weights 1/noise^2" in h for h in header["HISTORY"])
        total += len(names)
    # every light of the night that is neither clouded nor trailed is in a stack
    assert total == 18 - 2


@pytest.mark.slow
def test_stack_noise_beats_single_frames_by_sqrt_n(night):
    for product in night["products"]:
        data, _, mask = read_product(product)
        model, _ = star_model(night, product)
        rows, _ = product_frames(night, product)
        count_ok = ~mask
        paths = [r["aligned_path"] for r in rows]
        masks = [fits.getdata(p, "MASK").astype(bool) for p in paths]
        region = count_ok & ~np.any(masks, axis=0) & (model < 1.0)
        region[:16] = region[-16:] = region[:, :16] = region[:, -16:] = False
        assert region.sum() > 0.3 * region.size
        _, _, stack_noise = sigma_clipped_stats(data[region], sigma=3.0, maxiters=10)
        singles = single_frame_noise(paths, region)
        n = len(paths)
        limit = 1.05 * np.median(singles) / math.sqrt(n)
        print(
            f"{product.filter}: N={n} single median {np.median(singles):.2f} stack {stack_noise:.3f} "
            f"ideal {np.median(singles) / math.sqrt(n):.3f} -> {stack_noise / limit * 1.05:.3f} x ideal"
        )
        assert stack_noise <= limit


@pytest.mark.slow
def test_backgrounds_are_matched_so_no_frame_is_clipped_wholesale(night):
    catalog = night["catalog"]
    for product in night["products"]:
        rows, recs = product_frames(night, product)
        # the sky really differs between frames by several noise sigma...
        assert np.ptp([t["sky_adu"] for t in recs]) > 2 * np.median([r["noise"] for r in rows])
        ref_row = catalog.file(rows[0]["reference_id"])
        group = StackGroup(SPEC.night, product.object, product.filter, tuple(rows), ref_row)
        common = dict(
            weights=frame_weights([r["noise"] for r in rows]),
            rejection="sigclip",
            sigma=3.0,
            memory_limit=1 << 24,
            workers=1,
        )
        _, _, count = stack_frames(group.paths, offsets=group.offsets(), **common)
        covered = coverage(rows) == len(rows)
        full = np.mean(count[covered] == len(rows))
        print(f"{product.filter}: pixels seen by every frame that keep every frame: {full:.4f}")
        assert full > 0.97
        # ...and the product's sky is at the reference's level (or the group median in another filter)
        data, _, mask = read_product(product)
        expected = (
            ref_row["background"]
            if ref_row["filter"] == product.filter
            else float(np.median([r["background"] for r in rows]))
        )
        assert abs(float(np.median(data[~mask])) - expected) < 0.01 * expected


@pytest.mark.slow
def test_star_fluxes_match_the_truth(night):
    """Aperture photometry of bright unsaturated stars against the simulator's fluxes.

    Expected flux = truth x median(true flat) (the simulated flat has mean 1, observd's master
    flat median 1) x the weighted mean over the inputs of transparency x the Moffat fraction
    inside the aperture (r = 4 FWHM; ~0.3 % falls outside). Faint neighbours are removed with the
    truth model (the field is crowded enough that few bright stars have no neighbour at all);
    stars with a neighbour brighter than a fifth of them nearby are not used.
    """
    truth, npz = night["truth"], night["npz"]
    for product in night["products"]:
        data, _, mask = read_product(product)
        rows, recs = product_frames(night, product)
        model, stars = star_model(night, product)
        w = frame_weights([r["noise"] for r in rows])
        fwhm = float(np.dot(w, [t["fwhm"] for t in recs]))
        r_ap, r_in, r_out = 4.0 * fwhm, 5.0 * fwhm, 7.0 * fwhm
        scale = float(np.median(npz[truth["arrays"]["flat"][product.filter]]))
        enclosed = float(np.dot(w, [t["transparency"] * moffat_enclosed(r_ap, t["fwhm"]) for t in recs]))
        transparency = float(np.dot(w, [t["transparency"] for t in recs]))
        f_sat = (
            sim_scene.ADU_MAX - truth["bias_level"] - 2 * max(t["sky_adu"] for t in recs)
        ) / sim_scene.psf_peak_fraction(min(t["fwhm"] for t in recs))
        x, y, flux = stars.T
        dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        np.fill_diagonal(dist, np.inf)
        full = coverage(rows) == len(rows)
        h, wd = data.shape
        inside = (x > r_out + 2) & (x < wd - r_out - 3) & (y > r_out + 2) & (y < h - r_out - 3)
        pick = [
            i
            for i in np.flatnonzero(inside & (flux < 0.5 * f_sat) & (flux > 150 * product.noise))
            if not np.any((dist[i] < r_out + 3 * fwhm) & (flux > 0.2 * flux[i]))
            and full[
                int(y[i]) - int(r_out) - 1 : int(y[i]) + int(r_out) + 2,
                int(x[i]) - int(r_out) - 1 : int(x[i]) + int(r_out) + 2,
            ].all()
        ]
        assert len(pick) >= 6, f"only {len(pick)} bright isolated stars in {product.filter}"
        ratio, rel_err = [], []
        for i in pick:
            own = sim_scene.render_stars(data.shape, x[i : i + 1], y[i : i + 1], flux[i : i + 1] * transparency, fwhm)
            image = np.ascontiguousarray((data - scale * (model - own)).astype(np.float32))
            ap, ap_err, flag = sep.sum_circle(image, [x[i]], [y[i]], r_ap, bkgann=(r_in, r_out), err=product.noise)
            assert flag[0] == 0
            expected = flux[i] * scale * enclosed
            ratio.append(ap[0] / expected)
            rel_err.append(ap_err[0] / expected)
        ratio, rel_err = np.array(ratio), np.array(rel_err)
        print(
            f"{product.filter}: {len(pick)} stars, flux ratio median {np.median(ratio):.4f}, "
            f"std {np.std(ratio):.4f}, range {ratio.min():.4f}..{ratio.max():.4f}, "
            f"expected noise per star {np.median(rel_err):.4f}"
        )
        assert abs(np.median(ratio) - 1.0) < 0.005
        assert np.all(np.abs(ratio - 1.0) < 0.005 + 4 * rel_err)


@pytest.mark.slow
def test_hot_pixels_and_cosmic_rays_are_gone(night):
    truth = night["truth"]
    hot = np.asarray(truth["hot_pixels"], dtype=float).reshape(-1, 2)
    for product in night["products"]:
        data, _, mask = read_product(product)
        model, _ = star_model(night, product)
        rows, recs = product_frames(night, product)
        ref = truth_file(truth, product.reference)
        image = np.ascontiguousarray(np.where(mask, np.nan, data).astype(np.float32))
        background = sep.Background(np.nan_to_num(image), mask=~np.isfinite(image)).back()
        sigma = product.noise
        excess = data - background - model
        full = coverage(rows) == len(rows)  # rejection needs the other frames' values
        h, w = data.shape
        checked = 0
        for rec in recs:
            cosmics = np.asarray(rec["cosmic_rays"], dtype=float).reshape(-1, 2)
            for xs, ys in to_stack(ref["matrix"], rec["matrix"], np.vstack([hot, cosmics])):
                ix, iy = int(round(xs)), int(round(ys))
                if not (1 <= ix < w - 1 and 1 <= iy < h - 1):
                    continue
                box = (slice(iy - 1, iy + 2), slice(ix - 1, ix + 2))
                if not full[box].all() or model[box].max() > 3 * sigma:  # a star is there
                    continue
                checked += 1
                assert excess[box].max() < 5 * sigma, f"residual at stack ({xs:.1f}, {ys:.1f}) from {rec['name']}"
        assert checked > 100


@pytest.mark.slow
def test_products_are_catalogued_readable_and_replaced_on_rerun(night, tmp_path):
    catalog, config = night["catalog"], night["config"]
    assert SPEC.night in catalog.stacked_nights()
    first = {(p["object"], p["filter"]): p for p in catalog.products(night=SPEC.night)}
    assert set(first) == {("M42", "L"), ("M42", "R")}
    for product in night["products"]:
        row = first[(product.object, product.filter)]
        assert row["path"] == str(product.path) and row["n_combined"] == product.n_combined
        assert row["total_exptime"] == product.total_exptime and row["noise"] == pytest.approx(product.noise)
        ccd = CCDData.read(product.path)
        assert ccd.unit == "adu" and ccd.uncertainty is not None and ccd.mask is not None
        assert ccd.shape == tuple(SPEC.shape)
        assert np.all(ccd.uncertainty.array[~ccd.mask] > 0)
        assert product.preview_path.stat().st_size > 1000 and product.thumbnail_path.exists()
        assert product.path.name == f"M42_{product.filter}.fits"
        assert product.path.parent == config.paths.output / SPEC.night / "stacks"
    again = stack_night(config, catalog, SPEC.night, object="M42", filter="L")
    assert [(p.object, p.filter) for p in again] == [("M42", "L")]
    current = catalog.products(night=SPEC.night)
    assert len(current) == 2
    assert {p["id"] for p in current} != {p["id"] for p in first.values()}
    assert len(catalog.products(night=SPEC.night, current_only=False)) == 3
    newest = next(p for p in current if p["filter"] == "L")
    inputs = list(catalog.db["product_inputs"].rows_where("product_id = ?", [newest["id"]]))
    assert sorted(r["file_id"] for r in inputs) == sorted(again[0].input_ids)
