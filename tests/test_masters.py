"""Master calibrations: equal to the astropy reference, faithful to the simulator's truth,
CCD-TEMP tolerance with reasons, versioned refresh, change flags, the real SBIG set."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import sigma_clip
from support import gunzip_set, ingest_into, require_real_data

from observd.core.config import MastersConfig
from observd.pipeline.batch import ingest
from observd.service.reports import pending_groups, status_report
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

SHAPE = (96, 128)


def _night(folder: Path, **kw) -> dict:
    spec = dict(shape=SHAPE, n_bias=9, n_dark=7, n_flat=7, targets=(TargetSpec(n_lights=0),), seed=3)
    spec.update(kw)
    return write_night(folder, SimSpec(**spec))


def _stack(paths):
    return np.array([fits.getdata(p).astype(np.float32) for p in paths])


def _reference_median(stack):
    return _reference(stack, np.ma.median)


def _reference(stack, combine):
    """astropy's sigma clipping (3 sigma around the median, population std), then `combine`."""
    return (
        combine(sigma_clip(stack, axis=0, sigma=3, maxiters=5, cenfunc="median", stdfunc="std"), axis=0)
        .filled(np.nan)
        .astype(np.float32)
    )


def _reference_flat(inputs, masters, combine):
    """The flats with the masters' bias and scaled dark removed, each divided by its own median
    (on the every-4th-pixel grid), combined, normalised."""
    flats = _stack(inputs["flat"])
    exps = [fits.getheader(p)["EXPTIME"] for p in inputs["flat"]]
    got_bias, got_dark = (fits.getdata(masters[k]["path"]) for k in ("bias", "dark"))
    dark_exp = fits.getheader(masters["dark"]["path"])["EXPTIME"]
    cal = np.array([f - got_bias - got_dark * (e / dark_exp) for f, e in zip(flats, exps)])
    cal /= np.median(cal[:, ::4, ::4], axis=(1, 2))[:, None, None]
    flat = _reference(cal, combine)
    return flat / np.nanmedian(flat[::4, ::4])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("masters")
    truth = _night(tmp / "night")
    config, catalog = ingest_into(tmp, [tmp / "night"])
    masters = {m["type"]: m for m in catalog.masters(current_only=True)}
    inputs = {k: [catalog.file(i)["path"] for i in catalog.master_input_ids(m["id"])] for k, m in masters.items()}
    yield truth, config, catalog, masters, inputs
    catalog.close()


def test_one_master_per_type_from_every_frame(built):
    truth, _, catalog, masters, inputs = built
    assert set(masters) == {"bias", "dark", "flat"}
    assert {k: len(v) for k, v in inputs.items()} == {"bias": 9, "dark": 7, "flat": 7}
    assert {r["state"] for r in catalog.files()} == {"combined"}


def test_masters_equal_the_astropy_reference(built):
    _, _, _, masters, inputs = built
    bias = _reference_median(_stack(inputs["bias"]))
    got_bias = fits.getdata(masters["bias"]["path"])
    np.testing.assert_allclose(got_bias, bias, rtol=1e-5)
    dark = _reference_median(_stack(inputs["dark"]) - got_bias)
    got_dark = fits.getdata(masters["dark"]["path"])
    np.testing.assert_allclose(got_dark, dark, rtol=1e-5, atol=1e-3)
    # flats are averaged after the same clipping (`[masters] flat_method`, default mean)
    flat = _reference_flat(inputs, masters, np.ma.mean)
    np.testing.assert_allclose(fits.getdata(masters["flat"]["path"]), flat, rtol=1e-5)


def test_flat_method_median_gives_the_clipped_median(tmp_path):
    _night(tmp_path / "night")
    _, catalog = ingest_into(tmp_path, [tmp_path / "night"], masters={"flat_method": "median"})
    masters = {m["type"]: m for m in catalog.masters(current_only=True)}
    inputs = {k: [catalog.file(i)["path"] for i in catalog.master_input_ids(m["id"])] for k, m in masters.items()}
    got = fits.getdata(masters["flat"]["path"])
    np.testing.assert_allclose(got, _reference_flat(inputs, masters, np.ma.median), rtol=1e-5)
    assert not np.allclose(got, _reference_flat(inputs, masters, np.ma.mean), rtol=1e-5)
    catalog.close()


def test_master_bias_reproduces_the_true_pattern(built):
    truth, _, _, masters, _ = built
    npz = np.load(_truth_dir(built) / "truth.npz")
    residual = fits.getdata(masters["bias"]["path"]) - npz["bias"]
    limit = truth["read_noise_adu"] / np.sqrt(9)
    # a median's noise is up to sqrt(pi/2) = 1.25 x a mean's: that is the price of rejecting outliers
    assert abs(residual.mean()) < 0.2 * limit
    assert residual.std() < 1.25 * limit


def test_master_flat_matches_the_true_flat(built):
    _, _, _, masters, inputs = built
    npz = np.load(_truth_dir(built) / "truth.npz")
    truth = json.loads((_truth_dir(built) / "truth.json").read_text())
    true_flat = npz[truth["arrays"]["flat"]["L"]]
    master = fits.getdata(masters["flat"]["path"])
    ratio = (master / master.mean()) / (true_flat / true_flat.mean())
    # the photon noise of an unweighted mean of the normalised flats, each of S_i electrons a pixel
    # (the 1 % vignetting and donut shadows change S little); a median's is ~20 % more for 7 flats
    signal = (
        np.array([np.median(fits.getdata(p).astype(float)) - truth["bias_level"] for p in inputs["flat"]])
        * truth["gain"]
    )
    expected = np.sqrt(np.sum(1 / signal)) / len(signal)
    assert np.std(ratio) < 1.08 * expected


def test_hot_pixels_are_in_the_dark_mask(built):
    truth, _, _, masters, _ = built
    mask = fits.getdata(masters["dark"]["path"], "MASK").astype(bool)
    hot = truth["hot_pixels"]
    assert hot, "the simulation should have hot pixels"
    assert all(mask[y, x] for x, y in hot)
    assert mask.mean() < 0.01  # and not much else


def test_masters_open_in_ccddata_with_provenance(built):
    _, _, _, masters, inputs = built
    ccd = CCDData.read(masters["dark"]["path"])
    assert ccd.data.dtype.kind == "f" and ccd.data.dtype.itemsize == 4
    assert ccd.uncertainty is not None and ccd.mask is not None
    h = ccd.header
    assert h["NCOMBINE"] == 7 and h["MVERSION"] == 1 and h["EXPTIME"] == 60.0
    assert h["CCDTMIN"] <= h["CCD-TEMP"] <= h["CCDTMAX"]
    assert {h[f"IMCMB{i:03d}"] for i in range(1, 8)} == {Path(p).name for p in inputs["dark"]}
    assert any("bias subtracted" in str(c) for c in h["HISTORY"])
    assert "OBSERVD" in h and h["GROUPKEY"].startswith("dark|")
    # uncertainty is the standard error of the combine: about read noise / sqrt(N) for a dark
    assert (
        0.5 < np.median(ccd.uncertainty.array) * np.sqrt(7) / fits.getheader(inputs["dark"][0]).get("RDNOISE", 5.3) < 2
    )


def _truth_dir(built) -> Path:
    _, config, _, _, _ = built
    return config.paths.output.parent / "night"


def test_out_of_tolerance_frames_are_excluded_with_a_reason(tmp_path):
    _night(tmp_path / "night", targets=(TargetSpec(n_lights=0),), n_flat=0)
    darks = sorted(p for p in (tmp_path / "night").rglob("*DARK*") if p.is_file())
    warm = darks[0]
    with fits.open(warm, mode="update") as hdul:  # our own simulated copy, not a raw file of a user
        hdul[0].header["CCD-TEMP"] = -8.0
    config, catalog = ingest_into(tmp_path, [tmp_path / "night"])
    row = catalog.current_file(str(warm))
    assert row["state"] == "excluded"
    assert "CCD-TEMP -8.00 °C is 2.00 °C from the set point -10.00 °C (tolerance 0.5 °C)" in row["reason"]
    dark = catalog.masters(current_only=True, kind="dark")[0]
    assert dark["n_frames"] == 6
    catalog.close()


def test_two_dark_temperatures_make_two_groups_and_short_groups_say_what_they_need(tmp_path):
    _night(tmp_path / "night", dark_temps=(-10.0, -5.0), n_flat=0)
    config, catalog = ingest_into(tmp_path, [tmp_path / "night"], masters={"min_bias": 20})
    darks = catalog.masters(current_only=True, kind="dark")
    assert sorted(round(d["ccd_temp_mean"]) for d in darks) == [-10, -5]
    assert all(d["includes_bias"] for d in darks)  # no master bias (too few biases): darks keep the bias
    groups = pending_groups(catalog, config, now=time.time())
    assert [(g["type"], g["eligible"], g["needed"]) for g in groups] == [("bias", 9, 20)]
    assert "9 eligible frame(s), needs 20" in groups[0]["message"]
    report = status_report(catalog, pending_groups=groups)
    assert report["calibration_groups"][0]["needed"] == 20
    catalog.close()


def test_new_frames_make_a_new_version_and_a_wild_change_is_flagged(tmp_path):
    _night(tmp_path / "a", n_dark=0, n_flat=0)
    config, catalog = ingest_into(tmp_path, [tmp_path / "a"])
    v1 = catalog.masters(kind="bias")[0]
    assert v1["version"] == 1 and v1["flag"] is None
    _night(tmp_path / "b", n_dark=0, n_flat=0, n_bias=12, seed=4, bias_level=1300.0)
    ingest([tmp_path / "b"], catalog, config)
    versions = catalog.masters(kind="bias")
    assert [(m["version"], m["current"]) for m in versions] == [(1, 0), (2, 1)]
    assert Path(versions[0]["path"]).exists() and Path(versions[1]["path"]).exists()
    assert versions[1]["n_frames"] == 21 and "differs from" in versions[1]["flag"]
    assert any("FLAGGED" in e["message"] for e in catalog.events())
    catalog.close()


def test_real_sbig_maximdl_set_builds_masters(tmp_path):
    src = require_real_data("01_*")
    raw = gunzip_set(src, tmp_path / "raw")
    config, catalog = ingest_into(
        tmp_path, [raw], site={"timezone": "America/New_York"}, masters={"min_bias": 2, "min_dark": 2, "min_flat": 2}
    )
    masters = {m["type"]: m for m in catalog.masters(current_only=True)}
    assert set(masters) == {"bias", "dark", "flat"}
    bias = fits.getdata(masters["bias"]["path"])
    dark = fits.getdata(masters["dark"]["path"])
    flat = fits.getdata(masters["flat"]["path"])
    assert 850 < np.median(bias) < 950  # the ST-8's pedestal (raw biases median ~900)
    assert -5 < np.median(dark) < 30 and masters["dark"]["exptime"] == 300
    assert np.median(flat) == pytest.approx(1.0, abs=1e-3) and 0.5 < np.percentile(flat, 1) < 1
    assert not masters["dark"]["includes_bias"]
    catalog.close()


def test_ignore_keys_merges_frames_whose_instrument_name_varies(tmp_path):
    _night(tmp_path / "a", n_dark=0, n_flat=0, n_bias=4, instrument="ZWO ASI294MM Pro")
    _night(tmp_path / "b", n_dark=0, n_flat=0, n_bias=4, seed=4, instrument="ZWO ASI294MM")
    config, catalog = ingest_into(tmp_path, [tmp_path / "a", tmp_path / "b"], masters={"min_bias": 7})
    assert catalog.masters() == []  # two groups of 4: neither reaches 7
    catalog.close()
    config, catalog = ingest_into(
        tmp_path / "merged", [tmp_path / "a", tmp_path / "b"], masters={"min_bias": 7, "ignore_keys": ["instrument"]}
    )
    (bias,) = catalog.masters()
    assert bias["n_frames"] == 8 and "ZWO" not in bias["group_key"]
    catalog.close()


@pytest.mark.parametrize("compressed", [False, True])
def test_pixel_checks_sample_scaled_values_from_plain_and_compressed_files(tmp_path, compressed):
    from observd.adapters.fits_rows import sample_rows
    from observd.jobs.master_job import SAMPLE_STRIDE, FrameRef, MasterSettings, check_frames

    data = (np.arange(64 * 64).reshape(64, 64) % 60000 + 100).astype(np.uint16)
    data[:8] = 65535  # 12.5 % of the rows at full scale
    path = tmp_path / ("f.fz" if compressed else "f.fits")
    hdus = [fits.PrimaryHDU(), fits.CompImageHDU(data)] if compressed else [fits.PrimaryHDU(data)]
    fits.HDUList(hdus).writeto(path)
    hdu = 1 if compressed else 0
    sample, floating = sample_rows(path, hdu, SAMPLE_STRIDE)
    assert not floating and np.array_equal(sample, data[::4].astype(np.float32))
    frame = FrameRef(1, str(path), hdu, 0.0, -10.0, 65535.0, None)
    excluded, _ = check_frames([frame], "bias", MasterSettings.for_kind("bias", MastersConfig(), workers=1))
    assert "12.5% of pixels at full scale" in excluded[1]


def test_darks_are_combined_once_beside_the_bias_being_built(tmp_path, monkeypatch):
    """The dark group's combination starts in the background before the master bias exists
    and is used as it is (its frames did not change): no second combination in the foreground."""
    import threading

    import observd.jobs.master_job
    import observd.pipeline.master_stage

    calls = []
    original = observd.jobs.master_job.combine_master

    def recording(job, executor=None):
        calls.append((job.kind, threading.current_thread().name))
        return original(job, executor)

    monkeypatch.setattr(observd.pipeline.master_stage, "combine_master", recording)
    monkeypatch.setattr(observd.jobs.master_job, "combine_master", recording)
    _night(tmp_path / "night")
    _, catalog = ingest_into(tmp_path, [tmp_path / "night"])
    assert [kind for kind, _ in calls] == ["dark", "bias", "flat"]
    assert calls[0][1].startswith("darks") and calls[1][1] == threading.main_thread().name
    dark = next(m for m in catalog.masters(current_only=True) if m["type"] == "dark")
    assert "bias subtracted" in str(fits.getheader(dark["path"])["HISTORY"])
    catalog.close()
