"""Calibration arithmetic of one light (observd.core.calibrate): equal to ccdproc on a simulated
night with overscan, equal to the formula on hand-made planes, sections, masks, uncertainty."""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from ccdproc import ccd_process, create_deviation, subtract_bias
from support import ingest_into

from observd.core.calibrate import (
    MASK_BAD,
    MASK_SATURATED,
    Plane,
    SectionError,
    calibrate,
    fits_section,
    overscan_and_trim,
    overscan_model,
    trim,
)
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

SHAPE = (160, 200)


def _plane(path, trimsec=None):
    with fits.open(path) as h:
        return Plane(
            trim(h[0].data.astype(np.float32), trimsec),
            trim(h["UNCERT"].data.astype(np.float32), trimsec),
            trim(h["MASK"].data.astype(bool), trimsec),
        )


@pytest.fixture(scope="module")
def overscan_night(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oscan")
    write_night(
        tmp / "night",
        SimSpec(
            shape=SHAPE,
            overscan=12,
            dialect="iraf",
            seed=5,
            n_bias=7,
            n_dark=5,
            n_flat=5,
            dark_exptimes=(60.0,),
            targets=(TargetSpec(n_lights=2, exptime=120.0, n_stars=60),),
        ),
    )
    config, catalog = ingest_into(tmp, [tmp / "night"])
    yield config, catalog
    catalog.close()


# -- moved from test_lights.py --------------------------------------------------------------------


def test_calibration_equals_ccdproc_with_overscan_trim_and_scaled_dark(overscan_night):
    config, catalog = overscan_night
    light = catalog.files(types=("light",))[0]
    masters = {m["type"]: m for m in catalog.masters(current_only=True)}
    raw = fits.getdata(light["path"]).astype(np.float32)
    gain, rdnoise = light["egain"], light["rdnoise"]
    assert light["biassec"] and light["trimsec"] and gain and rdnoise
    ours = calibrate(
        raw,
        bias=_plane(masters["bias"]["path"]),
        dark=_plane(masters["dark"]["path"]),
        dark_scale=120 / 60,
        flat=_plane(masters["flat"]["path"]),
        gain=gain,
        read_noise=rdnoise,
        biassec=light["biassec"],
        trimsec=light["trimsec"],
    )
    t = light["trimsec"]

    def ccd(plane):
        return CCDData(plane.data, uncertainty=StdDevUncertainty(plane.uncertainty), unit="adu")

    bias, dark, flat = (ccd(_plane(masters[k]["path"], t)) for k in ("bias", "dark", "flat"))
    ref = ccd_process(
        CCDData(raw, unit="adu"),
        oscan=light["biassec"],
        trim=t,
        master_bias=bias,
        dark_frame=dark,
        master_flat=flat,
        dark_exposure=60 * u.s,
        data_exposure=120 * u.s,
        dark_scale=True,
    )
    scale = np.median(np.abs(ref.data))
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-4, atol=1e-4 * scale)
    assert ours.data.dtype == np.float32 and ours.data.shape == ref.data.shape

    # uncertainty: Poisson + read noise of the bias-subtracted signal, then the masters' errors
    prepared = CCDData(overscan_and_trim(raw, light["biassec"], t), unit="adu")
    signal = subtract_bias(prepared, CCDData(bias.data, unit="adu"))
    deviation = create_deviation(signal, gain=gain * u.electron / u.adu, readnoise=rdnoise * u.electron)
    noisy = CCDData(prepared.data, uncertainty=deviation.uncertainty, unit="adu")
    ref_unc = ccd_process(
        noisy,
        master_bias=bias,
        dark_frame=dark,
        master_flat=flat,
        dark_exposure=60 * u.s,
        data_exposure=120 * u.s,
        dark_scale=True,
    ).uncertainty.array
    ratio = ours.uncertainty / ref_unc
    assert np.nanmax(np.abs(ratio - 1)) < 0.01


def test_trimmed_master_planes_are_kept_with_their_cached_derivatives():
    flat = Plane(np.full((10, 12), 2.0, np.float32), np.full((10, 12), 0.02, np.float32), np.zeros((10, 12), bool))
    first = flat.trimmed("[2:11,1:8]")
    assert first.data.shape == (8, 10) and flat.trimmed("[2:11,1:8]") is first
    assert first.normalised is first.normalised and np.allclose(first.normalised, 1.0)
    assert flat.trimmed(None) is flat


# -- the arithmetic against a hand computation ------------------------------------------------------


def _masters(shape=(6, 8), seed=0):
    """Small random masters (float64 copies kept for the hand computation) and a raw light."""
    rng = np.random.default_rng(seed)
    bias = rng.uniform(95, 105, shape)
    dark = rng.uniform(2, 6, shape)
    flat = rng.uniform(1.5, 2.5, shape)  # mean ~2: the light is divided by flat / mean(flat)
    raw = rng.uniform(500, 3000, shape)
    unc = {
        "bias": rng.uniform(0.5, 1.0, shape),
        "dark": rng.uniform(0.1, 0.3, shape),
        "flat": rng.uniform(0.005, 0.02, shape),
    }
    return raw, bias, dark, flat, unc


def _p(values, unc=None, mask=None):
    return Plane(values.astype(np.float32), None if unc is None else unc.astype(np.float32), mask)


def test_raw_minus_bias_minus_scaled_dark_over_normalised_flat():
    raw, bias, dark, flat, _ = _masters()
    out = calibrate(raw.astype(np.float32), bias=_p(bias), dark=_p(dark), dark_scale=2.5, flat=_p(flat))
    expected = (raw - bias - 2.5 * dark) / (flat / flat.mean())
    np.testing.assert_allclose(out.data, expected, rtol=2e-6)
    assert out.data.dtype == np.float32 and out.data.shape == raw.shape
    assert out.uncertainty is None  # neither gain nor read noise given
    assert not out.mask.any()


def test_each_master_is_optional():
    raw, bias, dark, flat, _ = _masters(seed=1)
    r = raw.astype(np.float32)
    np.testing.assert_allclose(calibrate(r, bias=_p(bias)).data, raw - bias, rtol=1e-6)
    np.testing.assert_allclose(calibrate(r, dark=_p(dark), dark_scale=0.5).data, raw - 0.5 * dark, rtol=1e-6)
    np.testing.assert_allclose(calibrate(r, flat=_p(flat)).data, raw / (flat / flat.mean()), rtol=2e-6)
    np.testing.assert_array_equal(calibrate(r).data, r)


def test_the_callers_raw_and_master_arrays_are_not_modified():
    raw, bias, dark, flat, unc = _masters(seed=2)
    r = raw.astype(np.float32)
    planes = [_p(bias, unc["bias"]), _p(dark, unc["dark"]), _p(flat, unc["flat"])]
    before = [r.copy()] + [p.data.copy() for p in planes] + [p.uncertainty.copy() for p in planes]
    calibrate(r, bias=planes[0], dark=planes[1], dark_scale=3.0, flat=planes[2], gain=1.5, read_noise=7.0)
    after = [r] + [p.data for p in planes] + [p.uncertainty for p in planes]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_overwriting_the_raw_frame_gives_the_same_result_in_its_memory():
    raw, bias, dark, flat, unc = _masters(shape=(700, 1600), seed=5)  # several blocks of the scaled dark
    masters = dict(bias=_p(bias, unc["bias"]), dark=_p(dark, unc["dark"]), dark_scale=1.7, flat=_p(flat, unc["flat"]))
    r = raw.astype(np.float32)
    copied = calibrate(r, **masters, gain=1.5, read_noise=7.0, saturation=2900.0)
    in_place = calibrate(r, **masters, gain=1.5, read_noise=7.0, saturation=2900.0, overwrite_raw=True)
    assert np.shares_memory(in_place.data, r)
    for a, b in ((copied.data, in_place.data), (copied.uncertainty, in_place.uncertainty)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(copied.bitmask(), in_place.bitmask())
    assert copied.saturated.any()


def test_uint16_raw_is_calibrated_in_float32_without_wrapping():
    raw = np.array([[0, 100, 65535]], dtype=np.uint16)
    bias = _p(np.array([[100.0, 100.0, 100.0]]))
    out = calibrate(raw, bias=bias)
    assert out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data, [[-100.0, 0.0, 65435.0]])


def test_uncertainty_is_read_noise_plus_poisson_propagated_through_the_masters():
    raw, bias, dark, flat, unc = _masters(seed=3)
    raw[0, 0] = bias[0, 0] - 20  # below the bias: no negative Poisson variance
    gain, rn, scale = 1.6, 8.0, 2.0
    out = calibrate(
        raw.astype(np.float32),
        bias=_p(bias, unc["bias"]),
        dark=_p(dark, unc["dark"]),
        dark_scale=scale,
        flat=_p(flat, unc["flat"]),
        gain=gain,
        read_noise=rn,
    )
    n = flat / flat.mean()
    result = (raw - bias - scale * dark) / n
    # Poisson from the bias-subtracted signal (dark current included), read noise, in ADU²
    var = np.maximum(raw - bias, 0) / gain + (rn / gain) ** 2 + unc["bias"] ** 2 + scale**2 * unc["dark"] ** 2
    # then the flat: relative errors in quadrature
    expected = np.sqrt(var / n**2 + result**2 * (unc["flat"] / flat) ** 2)
    np.testing.assert_allclose(out.uncertainty, expected, rtol=1e-5)
    assert out.uncertainty.dtype == np.float32
    assert out.uncertainty[0, 0] == pytest.approx(
        np.sqrt(
            ((rn / gain) ** 2 + unc["bias"][0, 0] ** 2 + scale**2 * unc["dark"][0, 0] ** 2) / n[0, 0] ** 2
            + result[0, 0] ** 2 * (unc["flat"][0, 0] / flat[0, 0]) ** 2
        ),
        rel=1e-5,
    )


def test_masters_without_uncertainty_add_nothing_and_unknown_gain_gives_no_uncertainty():
    raw, bias, dark, flat, _ = _masters(seed=4)
    out = calibrate(
        raw.astype(np.float32), bias=_p(bias), dark=_p(dark), dark_scale=1.0, flat=_p(flat), gain=2.0, read_noise=5.0
    )
    n = flat / flat.mean()
    expected = np.sqrt((np.maximum(raw - bias, 0) / 2.0 + (5.0 / 2.0) ** 2) / n**2)
    np.testing.assert_allclose(out.uncertainty, expected, rtol=1e-5)
    assert calibrate(raw.astype(np.float32), bias=_p(bias), gain=2.0).uncertainty is None
    assert calibrate(raw.astype(np.float32), bias=_p(bias), read_noise=5.0).uncertainty is None


# -- sections, overscan, trim -----------------------------------------------------------------------


def test_fits_sections_are_one_based_inclusive_x_first():
    rows, cols = fits_section("[3:10,2:5]", (6, 12))
    assert (rows, cols) == (slice(1, 5), slice(2, 10))
    assert fits_section("[10:3,5:2]", (6, 12)) == (rows, cols)  # reversed bounds: same region
    assert fits_section(" [ 1 : 12 , 1 : 6 ] ", (6, 12)) == (slice(0, 6), slice(0, 12))
    a = np.arange(72).reshape(6, 12)
    assert a[fits_section("[12:12,6:6]", a.shape)].tolist() == [[71]]  # last pixel: x=12, y=6


@pytest.mark.parametrize("text", ["[0:4,1:2]", "[1:13,1:6]", "[1:12,1:7]", "1:4,1:2", "[1:4]", "", "[a:b,c:d]"])
def test_unusable_sections_raise_a_section_error(text):
    with pytest.raises(SectionError):
        fits_section(text, (6, 12))


def test_column_overscan_removes_a_level_per_row_and_trim_keeps_the_image():
    rng = np.random.default_rng(5)
    image = rng.uniform(100, 200, (20, 30))
    rows_level = np.linspace(1000, 1100, 20)[:, None]  # a row-dependent pedestal
    raw = np.hstack([image, np.zeros((20, 6))]) + rows_level  # 6 overscan columns at the right
    raw[:, 30:] += rng.normal(0, 0.1, (20, 6))
    out = overscan_and_trim(raw.astype(np.float32), "[31:36,1:20]", "[1:30,1:20]")
    assert out.shape == (20, 30) and out.dtype == np.float32
    np.testing.assert_allclose(out, image, atol=0.3)
    level = overscan_model(raw.astype(np.float32), "[31:36,1:20]")
    assert level.shape == (20, 1)
    np.testing.assert_allclose(level[:, 0], np.median(raw[:, 30:], axis=1), rtol=1e-6)


def test_row_overscan_removes_a_level_per_column():
    rng = np.random.default_rng(6)
    image = rng.uniform(100, 200, (20, 30))
    cols_level = np.linspace(500, 560, 30)[None, :]
    raw = np.vstack([np.zeros((4, 30)), image]) + cols_level  # 4 overscan rows at the bottom (y = 1..4)
    out = overscan_and_trim(raw.astype(np.float32), "[1:30,1:4]", "[1:30,5:24]")
    assert out.shape == (20, 30)
    np.testing.assert_allclose(out, image, rtol=1e-5)
    assert overscan_model(raw.astype(np.float32), "[1:30,1:4]").shape == (1, 30)


def test_rows_outside_a_partial_overscan_strip_get_its_overall_median():
    raw = np.zeros((10, 8), np.float32)
    raw[2:6, 6:] = np.arange(4, dtype=np.float32)[:, None] + 10  # strip x 7..8, y 3..6: rows 10, 11, 12, 13
    level = overscan_model(raw, "[7:8,3:6]")
    assert level[2:6, 0].tolist() == [10, 11, 12, 13]
    assert set(level[[0, 1, 6, 7, 8, 9], 0].tolist()) == {11.5}


def test_full_frame_masters_are_cut_to_the_lights_trim_section():
    rng = np.random.default_rng(7)
    full = (20, 24)
    oscan = np.full((20, 4), 300.0)
    raw = np.hstack([rng.uniform(1000, 2000, (20, 20)), np.zeros((20, 4))]) + 300.0
    raw[:, 20:] = oscan
    bias = rng.uniform(5, 10, full)  # masters overscan-subtracted, untrimmed
    dark = rng.uniform(1, 2, full)
    flat = rng.uniform(0.8, 1.2, full)
    out = calibrate(
        raw.astype(np.float32),
        bias=_p(bias),
        dark=_p(dark),
        dark_scale=2.0,
        flat=_p(flat),
        biassec="[21:24,1:20]",
        trimsec="[1:20,3:18]",
    )
    cut = (slice(2, 18), slice(0, 20))
    f = flat[cut]
    expected = (raw[cut] - 300.0 - bias[cut] - 2.0 * dark[cut]) / (f / f.mean())  # normalised on the cut flat
    assert out.data.shape == (16, 20) and out.mask.shape == (16, 20)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5)


# -- masks and saturation ---------------------------------------------------------------------------


def test_mask_holds_master_bad_pixels_non_finite_results_and_saturation():
    raw = np.full((4, 5), 1000.0, np.float32)
    raw[0, 0] = 60000  # a saturated star core
    raw[1, 1] = 60000  # saturated, but a hot pixel of the dark
    dark_mask = np.zeros((4, 5), bool)
    dark_mask[1, 1] = True
    flat_data = np.ones((4, 5))
    flat_data[2, 2] = 0.0  # a dead flat pixel: division by zero
    flat_mask = np.zeros((4, 5), bool)
    flat_mask[3, 4] = True
    out = calibrate(
        raw,
        bias=_p(np.full((4, 5), 100.0)),
        dark=_p(np.ones((4, 5)), mask=dark_mask),
        flat=_p(flat_data, mask=flat_mask),
        saturation=60000,
    )
    assert not np.isfinite(out.data[2, 2])
    assert set(zip(*np.nonzero(out.mask))) == {(0, 0), (1, 1), (2, 2), (3, 4)}
    assert set(zip(*np.nonzero(out.saturated))) == {(0, 0)}  # the hot pixel is the dark's business
    bits = out.bitmask()
    assert bits.dtype == np.uint8
    assert bits[0, 0] == MASK_SATURATED and bits[1, 1] == MASK_BAD
    assert bits[2, 2] == MASK_BAD and bits[3, 4] == MASK_BAD and bits.sum() == MASK_SATURATED + 3 * MASK_BAD
    assert out.saturation_level == pytest.approx(out.data[0, 0])


def test_saturation_level_is_the_lowest_calibrated_saturated_value():
    raw = np.full((3, 3), 500.0, np.float32)
    raw[0, :] = 4095
    flat = np.ones((3, 3))
    flat[0, :] = [1.0, 1.2, 0.8]
    out = calibrate(raw, flat=_p(flat), saturation=4095)
    n = flat / flat.mean()
    assert out.saturation_level == pytest.approx(4095 / n[0, 1], rel=1e-6)
    assert calibrate(raw).saturation_level is None
    assert calibrate(np.full((3, 3), 10.0, np.float32), saturation=4095).saturation_level is None
