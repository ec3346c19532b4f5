"""The simulated camera's files: deterministic, written as camera software does, truth that holds.

Most checks measure the written files with independent tools (astropy, sep) and compare
with truth.json/truth.npz, so a simulator whose truth drifts from its pixels fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from scipy import ndimage

from observd.sim.schedule import plan_night
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

SMALL = dict(
    shape=(64, 64), n_bias=2, n_dark=2, n_flat=2, targets=(TargetSpec(filters=("L", "R"), n_lights=2, n_stars=30),)
)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """One 256x256 night with enough frames to average; shared by the truth tests."""
    spec = SimSpec(
        seed=3,
        shape=(256, 256),
        n_bias=16,
        n_dark=8,
        n_flat=8,
        dark_temps=(-10.0, -16.0),
        targets=(TargetSpec(n_lights=6, n_stars=200),),
    )
    out = tmp_path_factory.mktemp("night")
    truth = write_night(out, spec)
    arrays = np.load(out / "truth.npz")
    return spec, out, truth, {k: arrays[k] for k in arrays.files}


def _files(truth, kind):
    return [f for f in truth["files"] if f["type"] == kind]


def _data(out, rec):
    return fits.getdata(out / rec["name"]).astype(np.float64)


def _calibrated(out, truth, arrays, rec):
    """(raw - bias - dark t) / flat with the *true* calibration arrays."""
    dark = arrays[truth["arrays"]["dark"][str(float(rec["set_temp"]))]]
    flat = arrays[truth["arrays"]["flat"][rec["filter"]]]
    return ((_data(out, rec) - arrays["bias"] - dark * rec["exptime"]) / flat).astype(np.float64)


def _predicted(truth, rec):
    stars = np.array(truth["targets"][rec["target"]]["stars"])
    m = np.array(rec["matrix"])
    xy = (m @ np.column_stack([stars[:, :2], np.ones(len(stars))]).T)[:2].T
    return xy, stars[:, 2]


# --------------------------------------------------------------------------- files


def test_same_seed_same_bytes_other_seed_different(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_night(a, SimSpec(seed=5, **SMALL))
    write_night(b, SimSpec(seed=5, **SMALL))
    write_night(c, SimSpec(seed=6, **SMALL))
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(names) == 2 + 2 + 2 * 2 + 2 * 2 + 2  # + truth.json, truth.npz
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    fits_a = sorted(p for p in a.rglob("*.fits"))
    fits_c = sorted(p for p in c.rglob("*.fits"))
    assert len(fits_a) == len(fits_c)
    assert all(fits.getdata(x).tobytes() != fits.getdata(y).tobytes() for x, y in zip(fits_a, fits_c))


def test_overscan_strip_and_sections(tmp_path):
    spec = SimSpec(dialect="iraf", overscan=10, **SMALL)
    truth = write_night(tmp_path, spec)
    rec = _files(truth, "bias")[0]
    h = fits.getheader(tmp_path / rec["name"])
    assert (h["NAXIS2"], h["NAXIS1"]) == (64, 74)
    assert h["BIASSEC"] == "[65:74,1:64]" and h["TRIMSEC"] == "[1:64,1:64]"
    strip = fits.getdata(tmp_path / rec["name"]).astype(float)[:, 64:]
    assert abs(strip.mean() - spec.bias_level) < 0.5
    assert strip.std() == pytest.approx(spec.read_noise / spec.gain, rel=0.15)


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("temp_names", [False, True])
def test_chunked_and_temporary_writes_expose_only_what_real_software_does(tmp_path, temp_names):
    spec = SimSpec(dialect="maxim", chunked=True, temp_names=temp_names, pace=2.5, **SMALL)
    snapshots, delays, completed = [], [], []

    def fake_sleep(seconds):
        delays.append(seconds)
        snapshots.append(_snapshot(tmp_path))

    def on_file(path):
        completed.append((path.name, path.stat().st_size, path.exists()))

    truth = write_night(tmp_path, spec, sleep=fake_sleep, on_file=on_file)
    final = {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("truth")}
    n = len(truth["files"])
    assert len(final) == n and not any(k.endswith(".tmp") for k in final)
    assert delays.count(2.5) == n - 1  # pace between files
    assert delays.count(spec.chunk_delay) == 3 * n  # 4 chunks, 3 pauses per file
    assert [c[0] for c in completed] == [Path(f["name"]).name for f in truth["files"]]
    assert all(size == final[name] for name, size, _ in completed)
    partial_final = [(k, v) for s in snapshots for k, v in s.items() if not k.endswith(".tmp") and v < final.get(k, 0)]
    partial_tmp = [k for s in snapshots for k in s if k.endswith(".tmp")]
    if temp_names:
        assert not partial_final and partial_tmp  # final names appear only complete
    else:
        assert partial_final and not partial_tmp  # a half-written file is visible
        assert all(v % 2880 or v < final[k] for k, v in partial_final)


# --------------------------------------------------------------------------- truth


def test_mean_bias_matches_truth_pattern_within_read_noise(night):
    spec, out, truth, arrays = night
    biases = np.stack([_data(out, r) for r in _files(truth, "bias")])
    resid = biases.mean(axis=0) - arrays["bias"]
    expected = truth["read_noise_adu"] / np.sqrt(len(biases))
    assert abs(resid.mean()) < 0.2
    assert resid.std() == pytest.approx(expected, rel=0.15)
    # the pattern is real structure: a flat bias_level would explain the mean far worse
    assert np.std(biases.mean(axis=0) - spec.bias_level) > 1.3 * resid.std()


def test_dark_truth_and_hot_pixels(night):
    spec, out, truth, arrays = night
    hot = np.array(truth["hot_pixels"])
    assert len(hot) == round(spec.hot_pixel_fraction * 256 * 256)
    hx, hy = hot[:, 0], hot[:, 1]
    true_rates = {}
    for temp in (-10.0, -16.0):
        darks = [r for r in _files(truth, "dark") if r["set_temp"] == temp]
        mean = np.stack([_data(out, r) for r in darks]).mean(axis=0)
        rate = (mean - arrays["bias"]) / darks[0]["exptime"]
        true_rates[temp] = true_rate = arrays[truth["arrays"]["dark"][str(temp)]]
        unsat = mean[hy, hx] < 60000
        assert unsat.sum() >= 3
        np.testing.assert_allclose(rate[hy, hx][unsat], true_rate[hy, hx][unsat], rtol=0.05)
        assert true_rate[hy, hx].min() > 50 * np.median(true_rate)
    assert np.median(true_rates[-10.0]) * spec.gain == pytest.approx(spec.dark_current, rel=0.05)
    # dark current halves for every 6 degC of cooling
    np.testing.assert_allclose(true_rates[-16.0], true_rates[-10.0] / 2, rtol=1e-5)
    # cosmic-ray hits recorded in the truth stand out in their dark
    rec = _files(truth, "dark")[0]
    cr = np.array(rec["cosmic_rays"])
    assert len(cr) >= 3
    resid = _data(out, rec) - arrays["bias"] - true_rates[-10.0] * rec["exptime"]
    assert np.median(resid[cr[:, 1], cr[:, 0]]) > 20 * truth["read_noise_adu"]


def test_flat_truth_vignetting_and_dust(night):
    spec, out, truth, arrays = night
    flats = _files(truth, "flat")
    norm = [(d := _data(out, r) - arrays["bias"]) / d.mean() for r in flats]
    mean = np.mean(norm, axis=0)
    true = arrays[truth["arrays"]["flat"]["L"]]
    assert true.mean() == pytest.approx(1.0, abs=1e-5)
    assert np.std(mean - true) < 0.005
    corners = np.mean([true[:8, :8], true[:8, -8:], true[-8:, :8], true[-8:, -8:]])
    assert 0.72 < corners / true[120:136, 120:136].mean() < 0.9
    # dust donuts: 2-5 % dips left once the smooth vignetting (a quadratic) is divided out
    smooth = ndimage.gaussian_filter(true.astype(np.float64), 2)
    yy, xx = np.mgrid[:256, :256] / 256
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(basis, smooth.ravel(), rcond=None)
    assert 0.94 < (smooth / (basis @ coef).reshape(256, 256)).min() < 0.985
    levels = [np.median(_data(out, r)) / 65535 for r in flats]
    assert all(0.28 < v < 0.52 for v in levels)


def _detections(img, fwhm):
    img = np.ascontiguousarray(img, dtype=np.float64)
    bkg = sep.Background(img)
    sub = img - bkg.back()
    objs = sep.extract(sub, 5.0, err=bkg.globalrms, minarea=5)
    return sub, objs, bkg


def _clean_stars(truth, rec, xy, flux, lo=2e4, hi=5e5):
    """Indices of stars (brightest first) bright but unsaturated, inside the frame, whose
    neighbours put < 1 % of its flux into its 3-FWHM aperture (Moffat beta=3 wings), with
    no cosmic ray or hot pixel (which may saturate) within 10 px: stars one can trust."""
    defects = np.array(rec["cosmic_rays"] + truth["hot_pixels"]).reshape(-1, 2)
    alpha = rec["fwhm"] / (2 * np.sqrt(2 ** (1 / 3) - 1))
    radius = 3 * rec["fwhm"]
    keep = []
    for i, (x, y) in enumerate(xy):
        d = np.hypot(*(xy - xy[i]).T)
        others = d > 0
        spill = flux[others] * 2 * radius**2 / alpha**2 * (1 + d[others] ** 2 / alpha**2) ** -3
        overlap = (d[others] < radius + 3) & (flux[others] > 0.01 * flux[i])
        crowded = spill.sum() > 0.01 * flux[i] or overlap.any()
        near_defect = np.hypot(*(defects - [x, y]).T).min() < 10
        if 14 < x < 241 and 14 < y < 241 and lo < flux[i] < hi and not crowded and not near_defect:
            keep.append(i)
    return keep


def test_stars_sit_where_the_matrix_puts_them(night):
    spec, out, truth, arrays = night
    lights = [r for r in _files(truth, "light") if not (r["clouded"] or r["trailed"])]
    assert {r["flipped"] for r in lights} == {False, True}
    for rec in lights:
        img = _calibrated(out, truth, arrays, rec)
        sub, objs, _ = _detections(img, rec["fwhm"])
        xw, yw, _ = sep.winpos(sub, objs["x"], objs["y"], rec["fwhm"] / 2.355)
        xy, flux = _predicted(truth, rec)
        clean = _clean_stars(truth, rec, xy, flux)
        errors = np.array([np.hypot(xw - xy[i, 0], yw - xy[i, 1]).min() for i in clean])
        bright = flux[clean] > 4e4  # SNR > ~50: centroid noise < 0.03 px
        assert bright.sum() >= 1 and len(errors) >= 3, rec["name"]
        assert errors[bright].max() < 0.1, (rec["name"], errors)
        assert np.median(errors) < 0.06 and errors.max() < 0.25, (rec["name"], errors)


def _aperture_fluxes(out, truth, arrays, rec):
    """Aperture photometry at the predicted positions over the *true* sky level."""
    sub = _calibrated(out, truth, arrays, rec) - rec["sky_adu"]
    xy, flux = _predicted(truth, rec)
    ok = _clean_stars(truth, rec, xy, flux)
    sky_noise = np.sqrt(rec["sky_adu"] / truth["gain"] + truth["read_noise_adu"] ** 2)
    meas, err, _ = sep.sum_circle(sub, xy[ok, 0], xy[ok, 1], 3 * rec["fwhm"], err=sky_noise, gain=truth["gain"])
    return meas, err, flux[ok]


def test_star_fluxes_match_truth_and_clouds_dim_them(night):
    spec, out, truth, arrays = night
    lights = _files(truth, "light")
    clear = next(r for r in lights if not (r["clouded"] or r["trailed"]))
    cloudy = next(r for r in lights if r["clouded"])
    meas, err, true = _aperture_fluxes(out, truth, arrays, clear)
    expected = true * clear["transparency"]
    assert len(meas) >= 3
    assert (np.abs(meas - expected) < 4 * err + 0.02 * expected).all(), (meas / expected, err / expected)
    meas_c, _, true_c = _aperture_fluxes(out, truth, arrays, cloudy)
    ratio = np.median(meas_c / true_c) / np.median(meas / true)
    assert 0.1 <= cloudy["transparency"] <= 0.2
    assert ratio == pytest.approx(cloudy["transparency"] / clear["transparency"], rel=0.2)
    n_clear = len(_detections(_calibrated(out, truth, arrays, clear), 3)[1])
    n_cloudy = len(_detections(_calibrated(out, truth, arrays, cloudy), 3)[1])
    assert n_cloudy < 0.5 * n_clear
    assert cloudy["sky_adu"] > clear["sky_adu"]


def test_trailed_frames_have_elongated_stars(night):
    spec, out, truth, arrays = night
    lights = _files(truth, "light")
    trailed = next(r for r in lights if r["trailed"])
    clear = next(r for r in lights if not (r["clouded"] or r["trailed"]))
    assert 10 <= np.hypot(*trailed["trail"]) <= 15

    def elongation(rec):
        _, objs, _ = _detections(_calibrated(out, truth, arrays, rec), rec["fwhm"])
        bright = objs[(objs["flux"] > np.percentile(objs["flux"], 50)) & (objs["peak"] < 4e4)]
        return np.median(bright["a"] / bright["b"])

    assert elongation(trailed) > 2.0
    assert elongation(clear) < 1.3


def test_truth_files_describe_the_night(night):
    spec, out, truth, arrays = night
    on_disk = json.loads((out / "truth.json").read_text())
    assert on_disk == json.loads(json.dumps(truth))
    assert set(arrays) == {"bias", *truth["arrays"]["dark"].values(), *truth["arrays"]["flat"].values()}
    assert all(a.shape == (256, 256) for a in arrays.values())
    assert [f["name"] for f in truth["files"]] == [f.name for f in plan_night(spec)]
    stars = np.array(truth["targets"]["M42"]["stars"])
    assert stars.shape == (200, 3) and (np.diff(stars[:, 2]) <= 0).all()
    # some stars saturate in a clear light, as in real fields
    clear = next(r for r in _files(truth, "light") if not (r["clouded"] or r["trailed"]))
    assert _data(out, clear).max() == 65535
    lights = _files(truth, "light")
    assert sum(r["clouded"] for r in lights) == 1 and sum(r["trailed"] for r in lights) == 1
    assert all(len(r["cosmic_rays"]) >= 0.5 * 20 / 4 for r in lights)  # 20 per 512^2
    assert not (out / "truth.json.tmp").exists()
