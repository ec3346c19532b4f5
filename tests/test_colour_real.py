"""Real one-shot-colour frames: the Seestar S50 lights of ../shared/data/real/09_seestar_s50_osc
(GRBG, no ROWORDER, no calibration frames) become colour stacks whose colours make sense."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from astropy.io import fits

from observd.adapters.catalog import Catalog
from observd.core.align import find_transform
from observd.core.config import config_from_dict
from observd.core.measure import Stars, measure, sky
from observd.pipeline.batch import ingest
from observd.pipeline.stacking import stack_night

REAL = Path(os.environ.get("OBSERVD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
SEESTAR = REAL / "09_seestar_s50_osc"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SEESTAR.is_dir(), reason=f"real Seestar frames not found at {SEESTAR}"),
]


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    root = tmp_path_factory.mktemp("seestar")
    camera = root / "camera"
    shutil.copytree(SEESTAR, camera)
    config = config_from_dict(
        {
            "paths": {"watch": str(camera), "output": str(root / "out"), "database": str(root / "out" / "o.db")},
            "site": {"timezone": "Europe/Paris"},
            "calibrate": {"require_by_instrument": {"Seestar S50": []}},
        }
    )
    catalog = Catalog.open(config.paths.database)
    ingest([camera], catalog, config)
    for night in catalog.nights_with_lights():
        stack_night(config, catalog, night)
    yield config, catalog
    catalog.close()


def star_colours(cube: np.ndarray) -> tuple[Stars, np.ndarray]:
    """Stars of a colour stack and their (R/G, B/G) in 9x9 apertures above each channel's sky."""
    levels = np.array([sky(plane)[0] for plane in cube])
    above = cube - levels[:, None, None]
    _, stars = measure(above.mean(axis=0), max_stars=300)
    ix, iy = np.round(stars.x).astype(int), np.round(stars.y).astype(int)
    inside = (ix > 5) & (iy > 5) & (ix < cube.shape[2] - 5) & (iy < cube.shape[1] - 5)
    flux = np.array([above[:, y - 4 : y + 5, x - 4 : x + 5].sum(axis=(1, 2)) for x, y in zip(ix, iy)])
    colours = np.column_stack([flux[:, 0] / flux[:, 1], flux[:, 2] / flux[:, 1]])
    keep = inside & (flux > 0).all(axis=1)
    return Stars(stars.x[keep], stars.y[keep], stars.flux[keep]), colours[keep]


def test_every_seestar_light_is_debayered_and_stacked_in_colour(reduced):
    config, catalog = reduced
    lights = catalog.files(types=("light",))
    assert len(lights) == 17 and {r["bayer"] for r in lights} == {"GRBG"}
    assert {r["state"] for r in lights} == {"aligned"}
    products = catalog.products()
    assert sorted((p["night"], p["object"]) for p in products) == [
        ("2024-07-30", "NGC 7023"),
        ("2025-04-09", "M 94"),
        ("2025-06-29", "NGC 7023"),
    ]
    for p in products:
        assert p["channels"] == "R,G,B"
        with fits.open(p["path"]) as hdul:
            assert hdul[0].header["NAXIS3"] == 3 and hdul[0].header["CHANNELS"] == "R,G,B"
            assert "BAYERPAT" not in hdul[0].header  # an RGB cube must not be demosaiced again
            cube = hdul[0].data.astype(np.float32)
        # no mosaic residue: the four 2x2 phases of each channel's sky agree within half its noise
        for plane in cube:
            level, noise = sky(plane)
            phases = [
                np.median(plane[dy::2, dx::2][np.abs(plane[dy::2, dx::2] - level) < 3 * noise])
                for dy in (0, 1)
                for dx in (0, 1)
            ]
            assert np.ptp(phases) < 0.5 * noise, (p["object"], phases, noise)


def test_the_reflection_nebula_star_is_blue_and_the_galaxy_core_yellow(reduced):
    """HD 200775, the B star lighting NGC 7023, is bluer than the field's median star; M 94's
    nucleus (an old stellar population) is redder than it."""
    _, catalog = reduced
    for p in catalog.products():
        cube = fits.getdata(p["path"]).astype(np.float32)
        stars, colours = star_colours(cube)
        median = np.median(colours, axis=0)
        if p["object"] == "NGC 7023":  # HD 200775 (V 7.4) is the field's brightest star
            r_g, b_g = colours[int(np.argmax(stars.flux))] / median
        else:  # M 94's nucleus: the Seestar centres its target; the brightest pixel near the centre
            levels = np.array([sky(plane)[0] for plane in cube])
            above = cube - levels[:, None, None]
            rows, cols = cube.shape[1:]
            box = np.nan_to_num(above.mean(axis=0))[
                rows // 2 - 150 : rows // 2 + 150, cols // 2 - 150 : cols // 2 + 150
            ]
            y, x = np.unravel_index(np.argmax(cv2.blur(box, (5, 5))), box.shape)
            y, x = y + rows // 2 - 150, x + cols // 2 - 150
            flux = above[:, y - 6 : y + 7, x - 6 : x + 7].sum(axis=(1, 2))
            r_g, b_g = np.array([flux[0] / flux[1], flux[2] / flux[1]]) / median
        print(f"{p['object']} {p['night']}: R/G {r_g:.2f}, B/G {b_g:.2f} of the median star's")
        if p["object"] == "NGC 7023":  # a Herbig Be star: blue (with H-alpha in the red)
            assert b_g > 1.4, (p["night"], r_g, b_g)
        else:  # an old stellar population: yellow, redder than the median star
            assert r_g > 1.0 and r_g / b_g > 1.1, (r_g, b_g)


def test_star_colours_agree_between_the_two_ngc7023_nights(reduced):
    """The same stars a year apart (4 x 10 s and 2 x 20 s, another sky, no flats): each star's
    colour relative to the matched bright stars' median agrees from one night to the other."""
    _, catalog = reduced
    cubes = {
        p["night"]: fits.getdata(p["path"]).astype(np.float32) for p in catalog.products() if p["object"] == "NGC 7023"
    }
    (s1, c1), (s2, c2) = (star_colours(cubes[n]) for n in sorted(cubes))
    transform = find_transform(s1, s2)  # the two nights have different pointings and references
    moved = (np.column_stack([s1.x, s1.y, np.ones(len(s1))]) @ np.asarray(transform.matrix).T)[:, :2]
    nearest = np.argmin(np.hypot(moved[:, :1] - s2.x, moved[:, 1:] - s2.y), axis=1)
    close = np.hypot(moved[:, 0] - s2.x[nearest], moved[:, 1] - s2.y[nearest]) < 1.5
    assert close.sum() >= 40
    bright = np.argsort(-s1.flux[close])[:40]
    ratio = c1[close][bright] / c2[nearest[close]][bright]  # night 1 / night 2, per star
    scatter = ratio / np.median(ratio, axis=0) - 1
    top10, next30 = np.median(np.abs(scatter[:10]), axis=0), np.median(np.abs(scatter[10:]), axis=0)
    print(
        f"NGC 7023 night-to-night colour: median ratio R/G {np.median(ratio[:, 0]):.3f}, B/G "
        f"{np.median(ratio[:, 1]):.3f}; scatter of the 10 brightest |d(R/G)| {top10[0]:.3f}, |d(B/G)| "
        f"{top10[1]:.3f}; of the next 30 {next30[0]:.3f}, {next30[1]:.3f}"
    )
    assert (top10 < 0.10).all() and (next30 < 0.16).all(), (top10, next30)
