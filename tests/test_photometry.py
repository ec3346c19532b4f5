"""Differential photometry's maths (observd.core.photometry), times and airmass (observd.core.timing)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from observd.core.calibrate import MASK_SATURATED
from observd.core.photometry import (
    bin_series,
    choose_comparisons,
    comparison_outliers,
    ensemble,
    measure_stars,
    outliers,
    point_to_point,
    relative_flux,
)
from observd.core.timing import Site, airmass_from_altitude, bjd_tdb_and_airmass, site_from_header
from observd.core.wcs_hints import radec


def _star_field(rng, flux=20000.0, sky=100.0, sigma_px=1.3, shape=(64, 64), at=(30.3, 20.6)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    star = flux / (2 * np.pi * sigma_px**2) * np.exp(-((xx - at[0]) ** 2 + (yy - at[1]) ** 2) / (2 * sigma_px**2))
    return rng.normal(sky, 5.0, shape) + star


def test_aperture_flux_and_error_match_the_noise_actually_there():
    rng = np.random.default_rng(3)
    fluxes, errors = [], []
    for _ in range(200):
        m = measure_stars(_star_field(rng), [30.3], [20.6], radius=6.0, annulus=(12.0, 18.0), gain=None)
        fluxes.append(m.flux[0])
        errors.append(m.error[0])
    # the star's total flux is caught (6 px = 4.6 sigma of the PSF) and the sky removed
    assert np.mean(fluxes) == pytest.approx(20000.0, rel=0.002)
    # without a gain, the error is the sky's: area x 5² plus the sky level's own error
    assert np.std(fluxes) == pytest.approx(np.median(errors), rel=0.15)
    assert np.median(errors) == pytest.approx(5.0 * np.sqrt(np.pi * 36 * (1 + 36 / (324 - 144))), rel=0.1)


def test_saturated_bad_and_edge_stars_are_flagged():
    rng = np.random.default_rng(4)
    data = _star_field(rng)
    mask = np.zeros(data.shape, np.uint8)
    mask[20, 30] = MASK_SATURATED
    m = measure_stars(data, [30.3, 32.0, 5.0], [20.6, 45.0, 5.0], radius=6.0, annulus=(12.0, 18.0), mask=mask)
    assert list(m.saturated) == [True, False, False]
    assert list(m.edge) == [False, False, True]
    mask[45, 33] = 1  # MASK_BAD
    m = measure_stars(data, [32.0], [45.0], radius=6.0, annulus=(12.0, 18.0), mask=mask)
    assert m.bad_pixel[0] and np.isfinite(m.flux[0])


def _night(n_frames=60, n_stars=6, seed=5):
    """Fluxes of n_stars steady stars (1 % photon noise) with a common transparency."""
    rng = np.random.default_rng(seed)
    transparency = rng.uniform(0.8, 1.0, n_frames)[:, None]
    true = np.array([10000.0, 8000.0, 12000.0, 9000.0, 11000.0, 500000.0][:n_stars])
    flux = true * transparency * (1 + rng.normal(0, 0.01, (n_frames, n_stars)))
    return flux, 0.01 * flux


def test_comparisons_drop_the_variable_saturated_and_dissimilar_stars():
    flux, error = _night()
    t = np.arange(len(flux))
    flux[:, 3] *= 1 + 0.1 * np.sin(t / 5.0)  # a variable star among the candidates
    unusable = np.zeros(flux.shape, bool)
    unusable[10, 2] = True  # star 2 saturates once
    good = np.ones(len(flux), bool)
    target = float(np.median(flux[:, 0]))  # a star like star 0, measured in the same frames
    comps = choose_comparisons(flux, error, unusable, good, target, max_n=8, brightness_ratio=4.0, max_scatter=3.0)
    assert comps.chosen == (0, 4, 1)  # nearest in brightness first
    assert comps.dropped[3].startswith("variable")
    assert "saturated" in comps.dropped[2] and "brightness 50" in comps.dropped[5]
    # the frame where star 2 saturated is a bad frame: then star 2 is fine
    good[10] = False
    comps = choose_comparisons(flux, error, unusable, good, target, max_n=8, brightness_ratio=4.0, max_scatter=3.0)
    assert 2 in comps.chosen and 3 not in comps.chosen


def test_relative_flux_cancels_transparency_and_keeps_the_signal():
    flux, error = _night()
    signal = np.where(np.arange(len(flux)) >= 30, 0.97, 1.0)
    target = flux[:, 1] * signal
    ens, ens_err = ensemble(flux, error, [0, 2, 4])
    assert ens_err == pytest.approx(np.sqrt(error[:, 0] ** 2 + error[:, 2] ** 2 + error[:, 4] ** 2))
    rel, rel_err = relative_flux(target, error[:, 1], ens, ens_err, np.ones(len(flux), bool))
    drop = np.median(rel[30:]) / np.median(rel[:30])
    assert drop == pytest.approx(0.97, abs=0.006)
    expected = np.sqrt(0.01**2 + 0.01**2 / 3)  # the target's 1 % and the 3-star ensemble's
    assert np.median(rel_err) == pytest.approx(expected, rel=0.1)
    residual = rel / np.where(signal < 1, drop, 1.0)
    assert point_to_point(residual) == pytest.approx(expected, rel=0.25)


def test_outliers_flag_spikes_but_follow_a_transit():
    y = np.concatenate([np.ones(20), np.linspace(1.0, 0.97, 8), np.full(20, 0.97), np.linspace(0.97, 1.0, 8)])
    error = np.full(len(y), 0.001)
    good = np.ones(len(y), bool)
    assert not outliers(y, error, good).any()
    y[40] += 0.02
    y[1] -= 0.02
    good[10] = False
    y[10] = 5.0  # already bad: not looked at
    assert list(np.nonzero(outliers(y, error, good))[0]) == [1, 40]


def test_binning_and_point_to_point():
    rng = np.random.default_rng(6)
    t = np.arange(300) * 20.0 / 86400
    y = 1 + rng.normal(0, 0.002, 300) + 0.01 * np.sin(2 * np.pi * t / 0.2)  # slow signal
    assert point_to_point(y) == pytest.approx(0.002, rel=0.12)
    times, mean, err, n = bin_series(t, y, np.full(300, 0.002), 5.0 / 1440)
    assert list(n) == [15] * 20 and err == pytest.approx(0.002 / np.sqrt(15))
    assert np.all(np.diff(times) > 0) and np.std(mean - (1 + 0.01 * np.sin(2 * np.pi * times / 0.2))) < 0.0015


def test_target_coordinates_and_sites():
    assert radec("02:04:10.26 +46:41:16.3") == pytest.approx((31.04275, 46.687861), abs=1e-6)
    assert radec("31.04275 -46.6") == (31.04275, -46.6)
    assert radec("M 42") is None and radec("25:00:00 +10:00:00") is None
    site = site_from_header({"SITELAT": "+52 31 12", "SITELONG": 13.405, "SITEELEV": 34.0})
    assert (site.latitude, site.longitude, site.elevation, site.source) == (
        pytest.approx(52.52), 13.405, 34.0, "SITELAT/SITELONG")  # fmt: skip
    assert site_from_header({}, 31.68, -110.88, 2320.0) == Site(31.68, -110.88, 2320.0, "[site]")
    assert site_from_header({"LATITUDE": 31.68, "LONGITUD": 110.88}) is None  # sign convention unknown: not read


def test_bjd_tdb_and_airmass_offline():
    """HAT-P-32 from Whipple Observatory at the first MicroObservatory frame (2017-12-20 01:33:43 UTC
    + 30 s): the telescope's own TELALT was 62.592° (airmass 1.126)."""
    site = Site(31.68, -110.88, 2320.0, "[site]")
    mid = datetime(2017, 12, 20, 1, 34, 13, 317000, tzinfo=UTC)
    bjd, airmass = bjd_tdb_and_airmass([mid], 31.04275, 46.687861, site)
    assert airmass[0] == pytest.approx(float(airmass_from_altitude(np.array([62.592]))[0]), abs=0.005)
    jd_utc = 2458107.5 + (1 * 3600 + 34 * 60 + 13.317) / 86400
    # TDB - UTC = 69.18 s in 2017; the light travel time to the barycentre is within +-8.4 min
    correction = (bjd[0] - jd_utc) * 86400 - 69.184
    assert -505 < correction < 505 and abs(correction) > 60
    # the same as from the geocentre within 25 ms (the site is < 6400 km from it)
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    centre = EarthLocation.from_geocentric(0, 0, 0, unit="m")
    star = SkyCoord(31.04275, 46.687861, unit="deg")
    geocentric = Time(mid, location=centre).light_travel_time(star, ephemeris="builtin")
    assert correction == pytest.approx(geocentric.to_value("s"), abs=0.025)
    assert airmass_from_altitude(np.array([90.0, -5.0]))[0] == pytest.approx(1.0, abs=1e-3)
    assert np.isnan(airmass_from_altitude(np.array([-5.0]))[0])


def test_errors_without_photon_noise_do_not_make_every_comparison_variable():
    """The gain unknown, the errors leave the stars' photon noise out (here: 0.3 % for 1 % of
    noise): judged against each other, only the variable star goes."""
    rng = np.random.default_rng(7)
    true = np.array([10000.0, 9000.0, 11000.0, 9500.0, 10500.0, 12000.0])
    flux = true * rng.uniform(0.8, 1.0, 60)[:, None] * (1 + rng.normal(0, 0.01, (60, 6)))
    flux[:, 3] *= 1 + 0.1 * np.sin(np.arange(60) / 5.0)
    args = (flux, 0.003 * flux, np.zeros(flux.shape, bool), np.ones(60, bool), float(np.median(flux[:, 0])))
    known = choose_comparisons(*args, max_n=8, brightness_ratio=4.0, max_scatter=3.0)
    unknown = choose_comparisons(*args, max_n=8, brightness_ratio=4.0, max_scatter=3.0, errors_complete=False)
    assert len(known.chosen) == 2  # taken at their word, the errors call the steady stars variable too
    assert sorted(unknown.chosen) == [0, 1, 2, 4, 5] and list(unknown.dropped) == [3]


def test_a_cosmic_ray_on_a_comparison_star_leaves_the_ensemble_alone():
    flux, error = _night(n_stars=5)
    hit = flux.copy()
    hit[17, 2] += 0.08 * hit[17, 2]  # 8 sigma of that star's noise, in one frame
    good = np.ones(len(flux), bool)
    rejected = comparison_outliers(hit, error, good, limit=4.0)
    assert list(zip(*np.nonzero(rejected))) == [(17, 2)]
    clean, _ = ensemble(flux, error)
    patched, patched_err = ensemble(hit, error, rejected=rejected)
    plain, plain_err = ensemble(hit, error)
    assert abs(plain[17] / clean[17] - 1) > 0.015  # the hit moves the plain sum by 2 %
    assert abs(patched[17] / clean[17] - 1) < 0.01  # the others, scaled, stay within the noise
    assert np.array_equal(patched[:17], plain[:17])
    assert patched_err[17] / patched[17] > plain_err[17] / plain[17]  # one star fewer: a larger relative error
