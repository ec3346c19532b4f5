"""Light curves of a simulated night, end to end (simulate, ingest, stack, plate solve, photometry):
a transiting planet (the pointing target, OBJECT) and a pulsating star (named by its RA/Dec) in one
field; their depth, mid-time, amplitude and period are recovered, and the scatter is the noise the
simulator put in. Then the bad inputs: a saturated target, a target outside the field, no WCS.

The simulated sky is random, not the real one, so astrometry.net cannot solve it: the plate solver
is replaced by one that returns the simulator's true WCS of the reference frame (the sky frame's
TAN WCS carried through the reference's sky-to-frame matrix). Everything else is observd's own.
Cosmic rays are switched off: the noise criterion is about photon, sky and read noise (cosmic rays
in an aperture are flagged only above 5 sigma; `test_photometry` tests that flag)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS
from scipy.optimize import curve_fit
from support import make_config

from observd.adapters import plate_solver
from observd.adapters.catalog import Catalog
from observd.adapters.plate_solver import Solution
from observd.core.timing import Site, bjd_tdb_and_airmass
from observd.pipeline.batch import ingest
from observd.pipeline.stacking import stack_night
from observd.service.reports import format_status, status_report
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.variables import Pulsator, Transit, transit_flux
from observd.sim.writer import write_night

pytestmark = pytest.mark.slow

TRANSIT = Transit(brightness=0.15, radius_ratio=0.15, mid_s=1200.0, duration_s=1200.0)
PULSATOR = Pulsator(offset=(60.0, -50.0), brightness=0.15, period_s=600.0, amplitude=0.02)
SPEC = SimSpec(
    shape=(256, 256),
    dialect="nina",
    pixel_scale=1.5,
    meridian_flip=False,
    n_clouded=0,
    n_trailed=0,
    drift=0.1,
    field_rotation=0.0,
    seeing=3.0,
    n_dark=5,
    sky=100.0,
    cosmic_rays=4,  # per 512²: one per 10 s light of 256² (9 µm pixels: 5 cm², ~1 muon/cm²/min at sea level)
    targets=(
        TargetSpec(
            name="KELT-X",
            filters=("V",),
            n_lights=120,  # every ~20 s: 40 min
            exptime=10.0,
            n_stars=300,
            ra=345.0,
            dec=45.0,
            variables=(TRANSIT, PULSATOR),
        ),
    ),
)


def _radec_text(ra: float, dec: float) -> str:
    return f"{ra:.6f} {dec:.6f}"


def reference_wcs(truth: dict, target: str, reference_name: str) -> WCS:
    """The true WCS of a light: the sky frame's, through the light's sky -> frame matrix."""
    sky = WCS(truth["targets"][target]["wcs"])
    (light,) = [f for f in truth["files"] if Path(f["name"]).name == reference_name]
    matrix = np.array(light["matrix"])
    wcs = sky.deepcopy()
    wcs.wcs.cd = sky.wcs.cd @ np.linalg.inv(matrix[:2, :2])
    wcs.wcs.crpix = matrix[:2, :2] @ (sky.wcs.crpix - 1) + matrix[:2, 2] + 1
    return wcs


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lightcurves")
    truth = write_night(tmp / "raw", SPEC)
    target = truth["targets"]["KELT-X"]
    transit, pulsator = target["variables"]
    # the simulator makes its brightest stars (one in 75) saturate: one well inside the field
    inside = [s for s in target["stars"] if 30 < s[0] < 226 and 30 < s[1] < 226]
    brightest = WCS(target["wcs"]).all_pix2world([inside[0][:2]], 0)[0]
    config = make_config(
        tmp,
        site={"timezone": "Europe/Berlin"},
        photometry={
            "targets": {
                "OBJECT": "",
                "PULS": _radec_text(pulsator["ra"], pulsator["dec"]),
                "BRIGHT": _radec_text(*brightest),
                "FAR": "00:00:00 +10:00:00",
            }
        },
    )
    catalog = Catalog.open(config.paths.database)
    ingest([tmp / "raw"], catalog, config)
    (name,) = catalog.nights_with_lights()
    reference = catalog.file(catalog.files(night=name, types=("light",))[0]["reference_id"])
    wcs = reference_wcs(truth, "KELT-X", reference["name"])

    def solve(*args, **kwargs):
        return Solution("solved", None, wcs, 345.0, 45.0, 1.5, 0.0, 0.05, 40, 0.1)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plate_solver, "solve", solve)
        stack_night(config, catalog, name)
    yield config, catalog, name, truth
    catalog.close()


def _curve(record: dict) -> tuple[Table, np.ndarray]:
    table = Table.read(record["path"])
    return table, np.asarray(table["flag"]) == "ok"


def _expected_noise(table: Table, good: np.ndarray, truth: dict) -> float:
    """The relative flux's noise from the simulator's camera alone: photon noise of the target and
    the comparison stars, sky and read noise in each aperture (and the error of the sky level
    subtracted), for the apertures observd used; fluxes from the table, in electrons."""
    gain, read_noise = truth["gain"], truth["read_noise"]
    radius = table.meta["aperture_radius_fwhm"] * np.asarray(table["fwhm"])[good]
    inner, outer = (f * np.asarray(table["fwhm"])[good] for f in table.meta["annulus_fwhm"])
    area, n_sky = np.pi * radius**2, np.pi * (outer**2 - inner**2)
    sky = np.asarray(table["sky"])[good] * gain  # e- per pixel (dark current: < 1 e- in 10 s)

    def variance(flux_e):
        return flux_e + area * (sky + read_noise**2) * (1 + area / n_sky)

    target = np.asarray(table["flux"])[good] * gain
    comps = [c["median_flux"] * gain for c in table.meta["comparisons"]]
    ens = np.sum(comps)
    ens_var = np.sum([variance(c) for c in comps], axis=0)
    return float(np.median(np.sqrt(variance(target) / target**2 + ens_var / ens**2)))


def _bjd(utc: str, ra: float, dec: float) -> float:
    lon, lat = SPEC.site
    return float(bjd_tdb_and_airmass([datetime.fromisoformat(utc)], ra, dec, Site(lat, lon, 0.0, "test"))[0][0])


def test_the_transit_is_measured_on_the_pointing_target(night):
    config, catalog, name, truth = night
    (record,) = [c for c in catalog.light_curves() if c["target"] == "OBJECT"]
    assert record["state"] == "written", record["reason"]
    table, good = _curve(record)
    assert len(table) == 120 and good.sum() >= 115
    assert table["bjd_tdb"].unit == "d" and table["flux"].unit == "adu" and table["fwhm"].unit == "pix"
    truth_transit = truth["targets"]["KELT-X"]["variables"][0]
    # the pointing target: the nina lights' OBJCTRA/OBJCTDEC, the transit host at the field centre
    assert table.meta["position_from"] == "OBJCTRA/OBJCTDEC" and table.meta["target_detected_on_reference"]
    t, y, err = (np.asarray(table[c], np.float64)[good] for c in ("bjd_tdb", "rel_flux", "rel_flux_err"))
    t0 = np.floor(t[0])  # days from the night's start: the fit's steps are relative to the values
    t = t - t0
    b, (u1, u2) = TRANSIT.impact, TRANSIT.limb_darkening
    mid_true = _bjd(truth_transit["mid_utc"], table.meta["ra_deg"], table.meta["dec_deg"]) - t0

    def model(t, level, mid, duration, k):
        return level * transit_flux(t, mid, duration, k, b, u1, u2)

    start = (1.0, mid_true + 0.003, TRANSIT.duration_s / 86400 * 1.1, 0.13)  # 4 min and 10 % off the truth
    (level, mid, duration, k), _ = curve_fit(model, t, y, p0=start, sigma=err)
    depth = 1.0 - transit_flux(np.array([mid]), mid, duration, k, b, u1, u2)[0]
    residual = y / model(t, level, mid, duration, k)
    scatter, expected = np.sqrt(np.mean(np.diff(residual) ** 2) / 2), _expected_noise(table, good, truth)
    print(
        f"\ntransit: depth {depth:.5f} (truth {truth_transit['depth']:.5f}, "
        f"{depth / truth_transit['depth'] - 1:+.2%}), mid-time {(mid - mid_true) * 1440:+.2f} min, "
        f"duration {duration * 86400:.0f} s (truth {TRANSIT.duration_s:.0f});"
        f" point-to-point scatter {scatter:.5f} = {scatter / expected:.2f} x the expected {expected:.5f}"
        f" (observd's own estimate {record['expected']:.5f}); {record['n_comparisons']} comparison stars"
    )
    assert depth == pytest.approx(truth_transit["depth"], rel=0.05)
    assert abs(mid - mid_true) * 1440 < 2.0
    assert scatter <= 1.2 * expected
    assert record["expected"] == pytest.approx(expected, rel=0.15)  # observd's error model agrees with the camera's


def test_the_pulsation_is_measured_on_a_named_star_and_dropped_from_the_other_ensemble(night):
    config, catalog, name, truth = night
    curves = {c["target"]: c for c in catalog.light_curves()}
    record = curves["PULS"]
    assert record["state"] == "written", record["reason"]
    table, good = _curve(record)
    truth_puls = truth["targets"]["KELT-X"]["variables"][1]
    t, y, err = (np.asarray(table[c], np.float64)[good] for c in ("bjd_tdb", "rel_flux", "rel_flux_err"))
    t0 = np.floor(t[0])
    t = t - t0
    phase_true = _bjd(truth_puls["phase_utc"], truth_puls["ra"], truth_puls["dec"]) - t0

    def model(t, level, amplitude, period, phase):
        return level * (1 + amplitude * np.sin(2 * np.pi * (t - phase) / period))

    start = (1.0, 0.015, PULSATOR.period_s / 86400 * 1.05, phase_true + 0.0005)
    (level, amplitude, period, phase), _ = curve_fit(model, t, y, p0=start, sigma=err)
    residual = y / model(t, level, amplitude, period, phase)
    scatter, expected = np.sqrt(np.mean(np.diff(residual) ** 2) / 2), _expected_noise(table, good, truth)
    print(
        f"\npulsation: amplitude {amplitude:.5f} (truth {PULSATOR.amplitude}, "
        f"{amplitude / PULSATOR.amplitude - 1:+.2%}), period {period * 86400:.1f} s "
        f"(truth {PULSATOR.period_s:.0f}, {period * 86400 / PULSATOR.period_s - 1:+.3%});"
        f" point-to-point scatter {scatter:.5f} = {scatter / expected:.2f} x the expected {expected:.5f}"
    )
    assert amplitude == pytest.approx(PULSATOR.amplitude, rel=0.05)
    assert period * 86400 == pytest.approx(PULSATOR.period_s, rel=0.01)
    assert scatter <= 1.2 * expected
    # each variable star is kept out of the other's comparison ensemble
    transit_table, _ = _curve(curves["OBJECT"])
    for curve, other in ((transit_table, (truth_puls["ra"], truth_puls["dec"])), (table, (345.0, 45.0))):
        for c in curve.meta["comparisons"]:
            separation = np.hypot((c["ra_deg"] - other[0]) * np.cos(np.radians(45.0)), c["dec_deg"] - other[1])
            assert separation * 3600 > 6.0, c
        assert curve.meta["comparisons_dropped"]["variable"] >= 1


def test_bad_targets_and_status(night):
    config, catalog, name, truth = night
    curves = {c["target"]: c for c in catalog.light_curves()}
    bright, far = curves["BRIGHT"], curves["FAR"]
    assert bright["state"] == "skipped" and bright["path"] is None
    assert bright["reason"].startswith("only 0 good frames (needs 5): a saturated pixel in the target's aperture in")
    assert far["state"] == "skipped" and far["object"] is None
    assert far["reason"].startswith("not in the field of any stack of the night (FAR (RA 0.00000 Dec +10.00000) is")
    report = status_report(catalog)
    assert {c["target"]: c["state"] for c in report["light_curves"]} == {
        "BRIGHT": "skipped",
        "FAR": "skipped",
        "OBJECT": "written",
        "PULS": "written",
    }
    text = format_status(report)
    assert "Light curves:" in text and "OBJECT on KELT-X [V]: 1" in text and ".ecsv" in text and ".png" in text
    assert f"{name} BRIGHT on KELT-X [V]: skipped — only 0 good frames" in text
    for c in report["light_curves"]:
        if c["state"] == "written":
            assert Path(c["path"]).exists() and Path(c["plot_path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_wcs_the_reasons_are_recorded(night, monkeypatch):
    config, catalog, name, truth = night
    monkeypatch.setattr(plate_solver, "solver_path", lambda: None)
    stack_night(config, catalog, name)
    curves = {c["target"]: c for c in catalog.light_curves()}
    assert curves["OBJECT"]["state"] == "skipped"
    assert curves["OBJECT"]["reason"] == (
        "no WCS: plate solving skipped: astrometry.net's solve-field is not installed "
        "(apt install astrometry.net astrometry-data-tycho2)"
    )
    assert curves["FAR"]["object"] == "KELT-X" and curves["FAR"]["reason"].startswith("no WCS: plate solving skipped")
    # the files of the earlier light curves stay, but they are no longer the current ones
    assert not any(c["path"] for c in curves.values())
