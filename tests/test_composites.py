"""Colour from mono filters: a night's R, G, B (and L) stacks, or narrowband ones, of one target
become a colour composite; the mapping is in the config and the product's header."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs import WCS

from observd.adapters.plate_solver import Solution
from observd.core.colour import composite_plan, lrgb, star_gains
from observd.pipeline import astrometry, stacking
from observd.pipeline.stacking import stack_night
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night
from tests.support import ingest_into


def test_the_plan_reads_filter_names_as_observers_write_them():
    assert composite_plan(["Red", "Green", "Blue"]).planes == ("Red", "Green", "Blue")
    plan = composite_plan(["B", "G", "L", "R"])
    assert (plan.kind, plan.planes, plan.luminance) == ("LRGB", ("R", "G", "B"), "L")
    assert composite_plan(["Ha", "OIII", "SII"]).planes == ("SII", "Ha", "OIII")  # SHO: SII red, Ha green
    assert composite_plan(["Ha", "OIII"], "HOO").planes == ("Ha", "OIII", "OIII")
    assert composite_plan(["Ha", "OIII"]) is None  # SHO needs SII
    assert composite_plan(["L", "R", "G"]) is None


def test_lrgb_takes_luminance_from_l_and_colour_from_rgb():
    rng = np.random.default_rng(1)
    rgb = np.stack([np.full((40, 40), v, np.float32) for v in (110.0, 100.0, 90.0)])
    rgb[:, 20, 20] += np.array([300.0, 200.0, 100.0], np.float32)  # a red star
    lum = rgb.mean(axis=0) * 2 + rng.normal(0, 0.01, (40, 40)).astype(np.float32)  # L: twice the signal
    out = lrgb(rgb, lum)
    colour_difference = out[:, 20, 20] - out[:, 20, 20].mean()
    np.testing.assert_allclose(colour_difference, rgb[:, 20, 20] - rgb[:, 20, 20].mean(), atol=0.1)


def test_star_gains_make_the_median_star_white():
    rng = np.random.default_rng(2)
    cube = np.zeros((3, 200, 200), np.float32) + rng.normal(100, 2, (3, 200, 200)).astype(np.float32)
    yy, xx = np.mgrid[:200, :200]
    camera = np.array([0.6, 1.0, 0.5])  # a camera's response: the median star comes out green
    for x, y, flux in zip(rng.uniform(10, 190, 40), rng.uniform(10, 190, 40), rng.uniform(2e3, 2e4, 40)):
        star = flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.3**2)) / (2 * np.pi * 1.3**2)
        cube += (camera[:, None, None] * star).astype(np.float32)
    wb = star_gains(cube)
    assert wb.n_stars >= 20
    np.testing.assert_allclose(wb.gains, (1 / 0.6, 1.0, 1 / 0.5), rtol=0.03)


@pytest.mark.slow
def test_a_night_in_lrgb_and_narrowband_gives_composites(tmp_path):
    spec = SimSpec(
        seed=4,
        shape=(192, 192),
        n_bias=5,
        n_dark=5,
        n_flat=5,
        targets=(
            TargetSpec("M42", ("L", "R", "G", "B"), n_lights=3, exptime=30.0, n_stars=120),
            TargetSpec("NGC7000", ("Ha", "OIII"), n_lights=3, exptime=30.0, n_stars=120),
        ),
        n_clouded=0,
        n_trailed=0,
    )
    write_night(tmp_path / "raw", spec)
    config, catalog = ingest_into(
        tmp_path, [tmp_path / "raw"], masters={"min_bias": 5, "min_dark": 5, "min_flat": 5}, colour={"palette": "HOO"}
    )
    try:
        stack_night(config, catalog, spec.night)
        products = {(p["object"], p["filter"]): p for p in catalog.products()}
        expected = {
            "M42": ("LRGB", "R=R G=G B=B L=L", {"L", "R", "G", "B"}),
            "NGC7000": ("HOO", "R=Ha G=OIII B=OIII", {"Ha", "OIII"}),
        }
        for object_, (kind, mapping, filters) in expected.items():
            p = products[(object_, kind)]
            assert p["channels"] == "R,G,B" and p["preview_path"].endswith(f"{object_}_{kind}.png")
            assert {r["filter"] for r in catalog.product_inputs(p["id"])} == filters
            cube = CCDData.read(p["path"])
            assert cube.shape == (3, 192, 192) and cube.mask.shape == cube.shape
            assert cube.header["CMAPPING"] == mapping and cube.header["COMPOSIT"] == kind
        assert sorted(f for o, f in products if o == "M42") == ["B", "G", "L", "LRGB", "R"]
    finally:
        catalog.close()


@pytest.mark.slow
def test_one_solve_gives_its_wcs_to_the_aligned_lights_and_the_composite(tmp_path, monkeypatch):
    """Without a solver for the simulated sky, each stack is "solved" to a known TAN WCS (a
    different one per filter, to see which went where): with `[astrometry] lights`, every aligned
    light of that filter carries its stack's WCS, and the RGB composite carries one of its
    stacks' (all share the night's reference grid), recorded with its solution."""
    spec = SimSpec(
        seed=5,
        shape=(160, 160),
        n_bias=3,
        n_dark=3,
        n_flat=3,
        targets=(TargetSpec("M42", ("R", "G", "B"), n_lights=3, exptime=30.0, n_stars=100),),
        n_clouded=0,
        n_trailed=0,
    )
    write_night(tmp_path / "raw", spec)
    config, catalog = ingest_into(
        tmp_path, [tmp_path / "raw"], masters={"min_bias": 3, "min_dark": 3, "min_flat": 3}, astrometry={"lights": True}
    )
    centres = {"R": 83.0, "G": 84.0, "B": 85.0}

    def solve_to_known_wcs(config, path, stars, header):
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crpix = [80.5, 80.5]
        wcs.wcs.crval = [centres[fits.getheader(path)["FILTER"]], -5.4]
        wcs.wcs.cd = np.array([[-1.0, 0.0], [0.0, 1.0]]) / 3600
        solution = Solution("solved", None, wcs, wcs.wcs.crval[0], -5.4, 1.0, 0.0, 0.5, 40, 1.5)
        astrometry._write_wcs(path, solution)
        return solution

    monkeypatch.setattr(stacking, "solve_stack", solve_to_known_wcs)
    try:
        stack_night(config, catalog, spec.night)
        lights = [r for r in catalog.files(night=spec.night, types=("light",)) if r["aligned_path"]]
        assert len(lights) == 9
        for row in lights:
            header = fits.getheader(row["aligned_path"])
            assert header["PLTSOLVD"] is True and header["CRVAL1"] == centres[row["filter"]], row["name"]
            assert fits.getheader(row["path"]).get("PLTSOLVD") is None  # raw files untouched
        composite = next(p for p in catalog.products() if p["filter"] == "RGB")
        header = fits.getheader(composite["path"])
        assert header["CTYPE1"] == "RA---TAN" and header["CRVAL1"] == centres["R"]
        assert (composite["solve_state"], composite["solve_reason"]) == ("solved", "WCS of the R stack")
        assert composite["solve_ra"] == centres["R"] and composite["solve_seconds"] == 0.0
        assert any("aligned lights" in e["message"] and "3 of 3" in e["message"] for e in catalog.events())
    finally:
        catalog.close()
