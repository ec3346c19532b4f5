"""The simulated one-shot-colour (Bayer / CFA) camera: headers, stored mosaic and truth agree.

The checks read the files with astropy and work out each stored pixel's colour from the
*header convention* alone (written here, independently of the simulator and of observd):
the colour of sensor pixel (x, y) — x the column of the written readout, y the row from the
sensor's top — is P[(y + YBAYROFF + YORGSUBF) % 2][(x + XBAYROFF + XORGSUBF) % 2] with P the
2x2 grid of BAYERPAT, and a file written ROWORDER = 'BOTTOM-UP' stores the sensor's bottom
row first. A simulator that flipped the wrong row order, ignored an odd prescan or wrote a
BAYERPAT that does not match its offsets fails here, whatever its own truth says.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from astropy.io import fits

from observd.sim import scene, writer
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")
CHANNEL = {"R": 0, "G": 1, "B": 2}


# --------------------------------------------------------------------------- the convention


def convention_colours(header: fits.Header, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) array of 'R'/'G'/'B': each stored pixel's colour as the header describes it."""
    pattern = header["BAYERPAT"].strip()
    xoff, yoff = header.get("XBAYROFF", 0), header.get("YBAYROFF", 0)
    xorg, yorg = header.get("XORGSUBF", 0), header.get("YORGSUBF", 0)
    row = np.arange(rows)[:, None]
    sensor_row = rows - 1 - row if header.get("ROWORDER", "TOP-DOWN") == "BOTTOM-UP" else row
    col = np.arange(cols)[None, :]
    index = 2 * ((sensor_row + yoff + yorg) % 2) + (col + xoff + xorg) % 2
    return np.array(list(pattern))[index]


def data_section(header: fits.Header, image: np.ndarray) -> tuple[slice, slice]:
    """TRIMSEC as numpy slices (the whole image without one)."""
    if "TRIMSEC" not in header:
        return slice(None), slice(None)
    x1, x2, y1, y2 = map(int, re.fullmatch(r"\[(\d+):(\d+),(\d+):(\d+)\]", header["TRIMSEC"]).groups())
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def read(out: Path, rec: dict):
    """(header, stored data section as float, its colours by the convention)."""
    with fits.open(out / rec["name"]) as hdul:
        header, raw = hdul[0].header, hdul[0].data.astype(np.float64)
    colours = convention_colours(header, *raw.shape)
    section = data_section(header, raw)
    return header, raw[section], colours[section]


def _night(tmp_path: Path, **spec):
    truth = write_night(tmp_path, SimSpec(**spec))
    npz = np.load(tmp_path / "truth.npz")
    return truth, {k: npz[k] for k in npz.files}


def _files(truth, kind):
    return [f for f in truth["files"] if f["type"] == kind]


# --------------------------------------------------------------------------- stored pattern


OFFSETS = {"RGGB": (0, 0), "GRBG": (1, 0), "GBRG": (0, 1), "BGGR": (1, 1)}  # every offset gets used


@pytest.mark.parametrize("prescan", [0, 1])
@pytest.mark.parametrize("row_order", ["TOP-DOWN", "BOTTOM-UP"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_stored_pattern_is_where_a_tinted_flat_puts_its_levels(tmp_path, pattern, row_order, prescan):
    """A strongly tinted lamp (R brightest, B dimmest) makes each site's colour readable from
    its level: the sites must be where the header says, and the truth must name them."""
    dialect = "nina" if prescan == 0 else "asiair"
    truth, arrays = _night(
        tmp_path,
        dialect=dialect,
        shape=(32, 40),
        n_bias=0,
        n_dark=0,
        n_flat=1,
        targets=(TargetSpec(n_lights=1, n_stars=5),),
        bayer=pattern,
        row_order=row_order,
        prescan=prescan,
        bayer_offset=OFFSETS[pattern],
        flat_colour=(2.5, 1.0, 0.5),
    )
    flat = _files(truth, "flat")[0]
    header, data, colours = read(tmp_path, flat)
    bayer = truth["bayer"]
    assert header["BAYERPAT"] == bayer["header_pattern"]
    assert (header.get("XBAYROFF", 0), header.get("YBAYROFF", 0)) == (bayer["xoff"], bayer["yoff"])
    assert header.get("ROWORDER") == bayer["row_order"] == row_order
    assert data.shape == (32, 40)
    # the truth's stored pattern and colour map are the convention's
    assert bayer["stored_pattern"] == "".join(colours[:2, :2].ravel())
    assert (np.array(list("RGB"))[arrays["colours"]] == colours).all()
    # ... and the pixels agree: each 2x2 phase at its channel's level
    tint = np.array(bayer["flat_tint"])
    assert tint[0] == 1.0 and tint[2] < 0.5 * tint[1] < 0.5  # R > G > B by far
    level = {}
    for i in (0, 1):
        for j in (0, 1):
            letter = colours[i, j]
            assert (colours[i::2, j::2] == letter).all()
            mean = (data - arrays["bias"])[i::2, j::2].mean()
            assert mean == pytest.approx(flat["flat_adu_rgb"][CHANNEL[letter]], rel=0.03), (i, j, letter)
            level.setdefault(letter, []).append(mean)
    g1, g2 = level["G"]
    assert abs(g1 - g2) < 0.01 * g1
    assert level["R"][0] > 1.5 * g1 and level["B"][0] < 0.75 * g1


def test_a_bottom_up_file_is_the_top_down_file_with_its_mosaic_upside_down(tmp_path):
    """Same sensor, same seed: the stored patterns of the two row orders differ by the row
    flip (the sky's pixels are in stored orientation in both, as the truth says)."""
    common = dict(shape=(32, 32), n_bias=0, n_dark=0, n_flat=1, targets=(TargetSpec(n_lights=1, n_stars=5),))
    top, _ = _night(tmp_path / "top", bayer="RGGB", row_order="TOP-DOWN", **common)
    bottom, _ = _night(tmp_path / "bottom", bayer="RGGB", row_order="BOTTOM-UP", **common)
    odd, _ = _night(tmp_path / "odd", bayer="RGGB", row_order="BOTTOM-UP", **{**common, "shape": (33, 32)})
    assert top["bayer"]["stored_pattern"] == "RGGB"
    assert bottom["bayer"]["stored_pattern"] == "GBRG"  # stored row 0 is sensor row 31: G B
    assert odd["bayer"]["stored_pattern"] == "RGGB"  # stored row 0 is sensor row 32: R G
    assert top["bayer"]["header_pattern"] == bottom["bayer"]["header_pattern"] == "RGGB"


# --------------------------------------------------------------------------- star colours


def _calibrated(truth, arrays, rec, data, colours):
    """(raw - bias - dark t) / flat - sky of each pixel's channel, with the true arrays."""
    dark = arrays[truth["arrays"]["dark"][str(float(rec["set_temp"]))]]
    flat = arrays[truth["arrays"]["flat"][rec["filter"]]]
    sky = np.array(rec["sky_adu_rgb"])[np.vectorize(CHANNEL.get)(colours)]
    return (data - arrays["bias"] - dark * rec["exptime"]) / flat - sky


def _channel_fluxes(img, colours, x, y, half):
    """Each channel's flux of the star at (x, y) from a 2half x 2half box: the sum over its
    sites x 4 (R, B: one pixel in four) or x 2 (G), which the PSF (FWHM > 2.5 px) allows."""
    iy, ix = int(round(y)), int(round(x))
    box = (slice(iy - half, iy + half), slice(ix - half, ix + half))
    sub, col = img[box], colours[box]
    return np.array([sub[col == c].sum() * share for c, share in (("R", 4), ("G", 2), ("B", 4))])


def _box(xy, half):
    iy, ix = (int(round(v)) for v in xy[::-1])
    return slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1)


COLOUR_NIGHTS = {
    "nina-RGGB": dict(dialect="nina", bayer="RGGB"),
    "nina-GBRG-bottom-up-prescan": dict(dialect="nina", bayer="GBRG", row_order="BOTTOM-UP", prescan=1),
    "asiair-BGGR-bottom-up-offset": dict(dialect="asiair", bayer="BGGR", row_order="BOTTOM-UP", bayer_offset=(0, 1)),
    "asiair-GRBG-no-roworder-prescan": dict(dialect="asiair", bayer="GRBG", row_order=None, prescan=3),
    "seestar": dict(dialect="seestar"),
}


@pytest.mark.parametrize("name", COLOUR_NIGHTS)
def test_red_stars_are_red_and_blue_stars_blue_where_the_truth_puts_them(tmp_path, name):
    """Each star's flux per channel, measured on the sites the header names in the stored
    data at the truth's position, is its true flux; neighbours are subtracted with a model
    made of three mono renderings (one per channel) sampled at the convention's sites."""
    size = 160
    truth, arrays = _night(
        tmp_path,
        shape=(size, size),
        seed=4,
        n_bias=0,
        n_dark=0,
        n_flat=0,
        n_clouded=0,
        n_trailed=0,
        cosmic_rays=0,
        hot_pixel_fraction=0.0,
        targets=(TargetSpec(name="M 94", filters=("IRCUT",), n_lights=1, n_stars=160, exptime=30.0),),
        **COLOUR_NIGHTS[name],
    )
    rec = _files(truth, "light")[0]
    header, data, colours = read(tmp_path, rec)
    img = _calibrated(truth, arrays, rec, data, colours)
    stars = np.array(truth["targets"]["M 94"]["stars_rgb"])
    assert (stars[:, :2] == np.array(truth["targets"]["M 94"]["stars"])[:, :2]).all()
    m = np.array(rec["matrix"])
    xy = (m[:2, :2] @ stars[:, :2].T + m[:2, 2:3]).T
    rgb = stars[:, 2:] * rec["transparency"]
    index = np.vectorize(CHANNEL.get)(colours)

    def model(which):
        planes = [
            scene.render_stars((size, size), xy[which, 0], xy[which, 1], rgb[which, c], rec["fwhm"]) for c in range(3)
        ]
        return np.choose(index, planes)

    everything = model(np.arange(len(xy)))
    radius = int(np.ceil(3 * rec["fwhm"]))
    inside = (xy > radius + 1).all(axis=1) & (xy < size - radius - 2).all(axis=1)
    unsaturated = rgb.max(axis=1) * scene.psf_peak_fraction(rec["fwhm"]) < 0.6 * (65535 - 3000)
    # the whole frame is that model plus noise (pixels the ADC clips aside)
    sky = np.array(rec["sky_adu_rgb"])[index]
    flat = arrays[truth["arrays"]["flat"][rec["filter"]]]
    sigma = np.sqrt((everything + sky) / truth["gain"] + truth["read_noise_adu"] ** 2) / flat
    unclipped = (everything + sky) * flat + arrays["bias"] < 60000
    z = ((img - everything) / sigma)[unclipped]
    assert abs(z.mean()) < 0.05 and 0.95 < z.std() < 1.05 and np.abs(z).max() < 6, (z.mean(), z.std(), z.max())
    usable = [
        i
        for i in np.flatnonzero(inside & unsaturated & (rgb[:, 1] > 5e3))
        if unclipped[_box(xy[i], radius)].all()  # no saturated neighbour either
    ]
    ratios = rgb[:, [0, 2]] / rgb[:, 1:2]
    red = [i for i in usable if ratios[i, 0] > 1.3 and ratios[i, 1] < 0.5]
    blue = [i for i in usable if ratios[i, 0] < 0.6 and ratios[i, 1] > 1.0]
    assert len(usable) >= 8 and red and blue, (len(usable), len(red), len(blue))
    for i in usable:
        own = model(np.array([i]))
        measured = _channel_fluxes(img - (everything - own), colours, *xy[i], radius)
        box = _box(xy[i], radius)
        noise = 4 * 4 * np.sqrt((sigma[box] ** 2).sum() / 4)  # 4 sigma of a quarter of the box, x 4
        assert np.abs(measured - rgb[i]).max() < 0.02 * rgb[i].max() + noise, (i, measured / rgb[i])
    # in the stored data (less bias and sky): R sites brighter than B sites around a red star,
    # the reverse around a blue one
    for group, bright, dim, factor in ((red, "R", "B", 1.5), (blue, "B", "R", 1.2)):
        alone = [i for i in group if (everything - model(np.array([i])))[_box(xy[i], 2)].sum() < 0.02 * rgb[i].min()]
        assert alone, f"no isolated {bright} star"
        box = _box(xy[alone[0]], 2)
        assert img[box][colours[box] == bright].mean() > factor * img[box][colours[box] == dim].mean()


def test_one_pass_mosaic_render_equals_three_channel_images_sampled_at_their_sites():
    rng = np.random.default_rng(0)
    shape = (40, 50)
    x, y = rng.uniform(-5, 55, 12), rng.uniform(-5, 45, 12)
    rgb = rng.uniform(1e3, 1e4, (12, 3))
    colours = rng.integers(0, 3, shape).astype(np.int8)  # any map: not only a Bayer one
    for trail in ((0.0, 0.0), (6.0, -3.0)):
        mosaic = scene.render_stars(shape, x, y, rgb, 2.8, trail, colours=colours)
        planes = [scene.render_stars(shape, x, y, rgb[:, c], 2.8, trail) for c in range(3)]
        sampled = np.choose(colours, planes)
        np.testing.assert_allclose(mosaic, sampled, rtol=1e-5, atol=1e-3)


NOISE_FREE_NIGHTS = {
    "nina-RGGB-wide-psf": dict(dialect="nina", bayer="RGGB", seeing=5.0, sky=30.0),
    "asiair-BGGR-bottom-up-prescan": dict(dialect="asiair", bayer="BGGR", row_order="BOTTOM-UP", prescan=1),
}


@pytest.mark.parametrize("name", NOISE_FREE_NIGHTS)
def test_noise_free_lights_hold_the_truths_flux_per_channel(tmp_path, monkeypatch, name):
    """Without noise, a light calibrated with the truth arrays is the truth's stars and sky:
    each star's flux per channel (its sites' sum / their share of the pixels, in a box that
    holds its whole profile, the other stars subtracted) is stars_rgb x transparency, to 0.5 %
    at the wide seeing of a 5 px FWHM (1.5 % at 2.7 px, where one-in-four sampling aliases),
    at the matrix's position, in every light (flipped, clouded and trailed ones included).
    The sky and dark are in the pixels too: noise is all that a measurement can add."""
    options = dict(
        seed=11,
        shape=(160, 192),
        n_bias=0,
        n_dark=0,
        n_flat=0,
        cosmic_rays=0,
        targets=(TargetSpec(name="NGC 7000", filters=("IRCUT",), n_lights=4, exptime=120.0, n_stars=60),),
        **NOISE_FREE_NIGHTS[name],
    )
    truth, arrays = _night(tmp_path, **options)
    spec = SimSpec(**options)
    expected = {}  # the expected charge each light is read out from (before Poisson and readout)

    def capture(electrons, *args, **kwargs):
        expected["e"] = electrons.copy()
        return np.zeros((1, 1), np.uint16)

    monkeypatch.setattr(scene, "read_out", capture)
    night = writer.build_night(spec)
    planned = {f.name: f for f in writer.plan_night(spec)}
    stars = np.array(truth["targets"]["NGC 7000"]["stars_rgb"])
    assert (stars[:, :2] == np.array(truth["targets"]["NGC 7000"]["stars"])[:, :2]).all()
    gain, rows, cols = truth["gain"], *truth["shape"]
    lights = _files(truth, "light")
    assert all(any(rec[kind] for rec in lights) for kind in ("flipped", "clouded", "trailed"))
    checked = 0
    for rec in lights:
        _, _, colours = read(tmp_path, rec)  # each stored pixel's colour by the header convention
        index = np.vectorize(CHANNEL.get)(colours)
        share = np.array([np.mean(index == c) for c in range(3)])
        writer.synthesize(planned[rec["name"]], spec, night)
        # calibrate with the truth: dark scaled from the set point to this light's sensor temperature
        dark = arrays[truth["arrays"]["dark"][str(float(rec["set_temp"]))]]
        dark = dark * 2.0 ** ((rec["ccd_temp"] - rec["set_temp"]) / truth["dark_doubling_temp"])
        flat = arrays[truth["arrays"]["flat"][rec["filter"]]]
        img = (expected["e"] / gain - dark * rec["exptime"]) / flat - np.array(rec["sky_adu_rgb"])[index]
        m = np.array(rec["matrix"])
        xy = (m[:2, :2] @ stars[:, :2].T + m[:2, 2:3]).T
        rgb = stars[:, 2:] * rec["transparency"]

        def planes(which, xy=xy, rgb=rgb, fwhm=rec["fwhm"], trail=tuple(rec["trail"])):
            """Each channel's full-resolution image of these stars, from the truth alone."""
            return [
                scene.render_stars((rows, cols), xy[which, 0], xy[which, 1], rgb[which, c], fwhm, trail)
                for c in range(3)
            ]

        everything = np.choose(index, planes(np.arange(len(xy))))  # ... sampled at the convention's sites
        assert (np.abs(img - everything) < 1e-5 * np.abs(everything) + 0.05).all()
        half = int(np.ceil(4.5 * rec["fwhm"])) + int(np.ceil(np.hypot(*rec["trail"]) / 2)) + 1  # the whole stamp
        inside = (xy > half).all(axis=1) & (xy[:, 0] < cols - 1 - half) & (xy[:, 1] < rows - 1 - half)
        assert inside.sum() >= 5
        for i in np.flatnonzero(inside):
            own = planes(np.array([i]))
            box = _box(xy[i], half)
            sub, col = (img - (everything - np.choose(index, own)))[box], index[box]
            measured = np.array([sub[col == c].sum() / share[c] for c in range(3)])
            # the truth's flux: the full-resolution images hold it (the stamp's cut-off wings aside) ...
            full = np.array([own[c][box].sum() for c in range(3)])
            np.testing.assert_allclose(full, rgb[i], rtol=0.002, err_msg=f"{rec['name']} star {i}")
            # ... and so do each channel's sites (x 1/share; sampling a PSF of FWHM < 3 px with one
            # pixel in four aliases by up to ~1 %; 2 ADU: float32 rounding of the sky over the box)
            rtol = 0.005 if rec["fwhm"] >= 4 else 0.015
            np.testing.assert_allclose(measured, rgb[i], rtol=rtol, atol=2.0, err_msg=f"{rec['name']} star {i}")
            # ... where the matrix puts it, in every channel
            yy, xx = np.mgrid[box]
            for c in range(3):
                w = np.where(col == c, sub, 0.0)
                centre = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
                assert np.hypot(*(centre - xy[i])) < 0.05, (rec["name"], i, c, centre - xy[i])
            checked += 1
    assert checked >= 20


# --------------------------------------------------------------------------- the scene's colours


def test_colour_truth_star_spread_sky_and_flat(tmp_path):
    spec = dict(
        shape=(64, 64),
        n_bias=0,
        n_dark=0,
        n_flat=2,
        targets=(TargetSpec(n_lights=2, n_stars=400), TargetSpec(name="NGC 7023", n_lights=1, n_stars=40)),
        bayer="GRBG",
    )
    truth, arrays = _night(tmp_path, **spec)
    on_disk = json.loads((tmp_path / "truth.json").read_text())
    assert on_disk["bayer"] == truth["bayer"]
    b = truth["bayer"]
    assert set(b) >= {"header_pattern", "xoff", "yoff", "row_order", "stored_pattern"}
    stars = np.array(truth["targets"]["M42"]["stars"])
    rgb = np.array(truth["targets"]["M42"]["stars_rgb"])
    assert rgb.shape == (400, 5) and (rgb[:, :2] == stars[:, :2]).all()
    assert np.allclose(rgb[:, 3], stars[:, 2] * b["channel_qe"][1])  # G = the mono flux x G response
    rg, bg = rgb[:, 2] / rgb[:, 3], rgb[:, 4] / rgb[:, 3]
    assert rg.min() < 0.5 and rg.max() > 1.6 and 0.25 < bg.min() < 0.45 and bg.max() > 1.3
    assert (rg > 1.3).sum() >= 30 and (bg > 1.1).sum() >= 30  # clearly red, clearly blue
    assert np.corrcoef(rg, bg)[0, 1] < -0.8  # red stars are not blue
    # sky and flats are tinted; a raw flat's four sites differ by tens of %
    light = _files(truth, "light")[0]
    sky = np.array(light["sky_adu_rgb"])
    assert np.allclose(sky, light["sky_adu"] * np.array(b["sky_colour"]) * np.array(b["channel_qe"]))
    header, data, colours = read(tmp_path, _files(truth, "flat")[0])
    sites = [data[i::2, j::2].mean() - 1000 for i in (0, 1) for j in (0, 1)]
    assert max(sites) / min(sites) > 1.2
    flat = arrays[truth["arrays"]["flat"]["L"]]
    for c in "RGB":
        assert flat[colours == c].mean() == pytest.approx(1.0, abs=1e-4)
    assert truth["files"] == on_disk["files"]


# --------------------------------------------------------------------------- dialects


REAL_S50_KEYS = [  # a real Seestar S50 light's cards, in order (Light_M 94_10.0s_IRCUT_20250409-225435.fit)
    "CREATOR", "PRODUCER", "XORGSUBF", "YORGSUBF", "FOCALLEN", "APERTURE", "PROGRAM", "XBINNING", "YBINNING",
    "CCDXBIN", "CCDYBIN", "XPIXSZ", "YPIXSZ", "IMAGETYP", "EXPOSURE", "EXPTIME", "CCD-TEMP", "RA", "DEC",
    "SITELONG", "SITELAT", "DATE-OBS", "FILTER", "INSTRUME", "BAYERPAT", "GAIN", "FOCUSPOS", "TELESCOP", "OBJECT",
    "TOTALEXP",
]  # fmt: skip


def test_seestar_writes_what_a_seestar_s50_writes(tmp_path):
    spec = SimSpec(
        dialect="seestar",
        shape=(64, 48),
        night="2025-04-09",
        timezone="Europe/Paris",
        n_bias=0,
        n_dark=0,
        n_flat=0,
        ccd_temp=23.4,
        dark_temps=(23.4,),
        site=(-0.620833, 44.7417),
        targets=(
            TargetSpec(name="M 94", filters=("IRCUT",), n_lights=3, exptime=10.0, n_stars=20, ra=192.995835, dec=40.98),
        ),
    )
    assert (spec.bayer, spec.row_order, spec.instrument) == ("GRBG", None, "Seestar S50")
    truth = write_night(tmp_path, spec)
    assert [f["type"] for f in truth["files"]] == ["light"] * 3  # a Seestar night: lights only
    assert truth["bayer"] == {**truth["bayer"], "header_pattern": "GRBG", "stored_pattern": "GRBG", "row_order": None}
    tz = ZoneInfo("Europe/Paris")
    for rec in truth["files"]:
        m = re.fullmatch(r"Light_M 94_10\.0s_IRCUT_(\d{8}-\d{6})\.fit", rec["name"])
        assert m, rec["name"]
        start = datetime.fromisoformat(rec["date_obs"])
        saved = (start + timedelta(seconds=12.5)).astimezone(tz)  # local time, when saved
        assert m.group(1) == saved.strftime("%Y%m%d-%H%M%S")
        with fits.open(tmp_path / rec["name"]) as hdul:
            hdul.verify("exception")
            h, data = hdul[0].header, hdul[0].data.astype(float)
        keys = [k for k in h if k not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BZERO", "BSCALE")]
        assert keys == REAL_S50_KEYS
        assert {k: h[k] for k in REAL_S50_KEYS if k not in ("CCD-TEMP", "DATE-OBS")} == {
            "CREATOR": "ZWO Seestar S50",
            "PRODUCER": "ZWO",
            "XORGSUBF": 0,
            "YORGSUBF": 0,
            "FOCALLEN": 250,
            "APERTURE": 5.0,
            "PROGRAM": "4.43",
            "XBINNING": 1,
            "YBINNING": 1,
            "CCDXBIN": 1,
            "CCDYBIN": 1,
            "XPIXSZ": 2.90000009536743,
            "YPIXSZ": 2.90000009536743,
            "IMAGETYP": "Light",
            "EXPOSURE": 10.0,
            "EXPTIME": 10.0,
            "RA": 192.995835,
            "DEC": 40.98,
            "SITELONG": -0.620833,
            "SITELAT": 44.7417,
            "FILTER": "IRCUT",
            "INSTRUME": "Seestar S50",
            "BAYERPAT": "GRBG",
            "GAIN": 80,
            "FOCUSPOS": 1655,
            "TELESCOP": "S50_12d98769",
            "OBJECT": "M 94",
            "TOTALEXP": 10.0,
        }
        assert not {"ROWORDER", "XBAYROFF", "YBAYROFF"} & set(h)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", h["DATE-OBS"])
        assert datetime.fromisoformat(h["DATE-OBS"]).replace(tzinfo=UTC) == start
        assert h["CCD-TEMP"] * 16 == round(h["CCD-TEMP"] * 16) and abs(h["CCD-TEMP"] - rec["ccd_temp"]) <= 1 / 32
        # as real S50 files: numpy [0::2, 0::2] and [1::2, 1::2] green; the orange sky's R over B
        g1, r, b, g2 = (np.median(data[i::2, j::2]) for i in (0, 1) for j in (0, 1))
        assert abs(g1 - g2) < 0.02 * (g1 - 1000) and r > g1 > b
    assert json.loads((tmp_path / "truth.json").read_text())["bayer"]["row_order"] is None
    # calibration frames, when asked for, say what they are
    cal = write_night(tmp_path / "cal", SimSpec(dialect="seestar", shape=(32, 32), n_bias=1, n_dark=1, n_flat=1))
    words = {f["type"]: fits.getheader(tmp_path / "cal" / f["name"])["IMAGETYP"] for f in cal["files"]}
    assert words == {"bias": "Bias", "dark": "Dark", "flat": "Flat", "light": "Light"}
    assert all(re.fullmatch(r"(Bias|Dark|Flat|Light)_.*\.fit", f["name"]) for f in cal["files"])


@pytest.mark.parametrize(
    ("dialect", "row_order", "offset", "expected"),
    [
        ("nina", "TOP-DOWN", (0, 0), {"BAYERPAT": "RGGB", "XBAYROFF": 0, "YBAYROFF": 0, "ROWORDER": "TOP-DOWN"}),
        ("nina", None, (1, 0), {"BAYERPAT": "GRBG", "XBAYROFF": 1, "YBAYROFF": 0}),
        ("nina", "BOTTOM-UP", (1, 1), {"BAYERPAT": "BGGR", "XBAYROFF": 1, "YBAYROFF": 1, "ROWORDER": "BOTTOM-UP"}),
        ("asiair", "TOP-DOWN", (0, 0), {"BAYERPAT": "RGGB", "ROWORDER": "TOP-DOWN"}),
        ("asiair", None, (0, 0), {"BAYERPAT": "RGGB"}),
        ("asiair", "BOTTOM-UP", (0, 1), {"BAYERPAT": "GBRG", "XBAYROFF": 0, "YBAYROFF": 1, "ROWORDER": "BOTTOM-UP"}),
    ],
)
def test_nina_and_asiair_bayer_cards(tmp_path, dialect, row_order, offset, expected):
    spec = SimSpec(
        dialect=dialect,
        shape=(16, 16),
        n_bias=1,
        n_dark=0,
        n_flat=0,
        targets=(TargetSpec(n_lights=1, n_stars=3),),
        bayer="RGGB",
        row_order=row_order,
        bayer_offset=offset,
    )
    truth = write_night(tmp_path, spec)
    for rec in truth["files"]:
        h = fits.getheader(tmp_path / rec["name"])
        assert {k: h[k] for k in ("BAYERPAT", "XBAYROFF", "YBAYROFF", "ROWORDER") if k in h} == expected


@pytest.mark.parametrize(("prescan", "overscan"), [(3, 0), (1, 4)])
def test_prescan_columns_shift_the_data_section(tmp_path, prescan, overscan):
    spec = SimSpec(
        dialect="nina",
        shape=(20, 24),
        n_bias=1,
        n_dark=0,
        n_flat=0,
        targets=(TargetSpec(n_lights=1, n_stars=3),),
        prescan=prescan,
        overscan=overscan,
    )
    truth = write_night(tmp_path, spec)
    rec = _files(truth, "bias")[0]
    h, raw = fits.getheader(tmp_path / rec["name"]), fits.getdata(tmp_path / rec["name"]).astype(float)
    assert raw.shape == (20, prescan + 24 + overscan)
    assert h["TRIMSEC"] == f"[{prescan + 1}:{prescan + 24},1:20]"
    assert h["BIASSEC"] == (f"[{prescan + 25}:{prescan + 24 + overscan},1:20]" if overscan else f"[1:{prescan},1:20]")
    strip = raw[:, :prescan]
    assert abs(strip.mean() - spec.bias_level) < 3 * spec.read_noise / spec.gain / np.sqrt(strip.size) + 0.5
    assert truth["prescan"] == prescan and "bayer" not in truth


# --------------------------------------------------------------------------- mono unchanged


# sha256 of the files (names, header cards, pixels) of two small mono nights, as written by the
# simulator before colour cameras existed. A change here changes every mono night (if numpy
# itself changed its random streams, regenerate them with the code of that commit).
MONO_DIGESTS = {
    "nina": "82b72f4597b943583d21c6272f75ecee5d4148826581b034c75f304d80ea8e91",
    "asiair": "08b0dbfb3b79ae68070f7475a1400afd03fea2d6e0926800efe1e6049ebe1492",
}
MONO = dict(
    seed=11,
    shape=(48, 64),
    n_bias=1,
    n_dark=1,
    n_flat=1,
    overscan=3,
    targets=(TargetSpec(filters=("L", "R"), n_lights=2, n_stars=20),),
)


def _digest(out: Path, truth: dict) -> str:
    h = hashlib.sha256()
    for rec in truth["files"]:
        with fits.open(out / rec["name"]) as hdul:
            h.update(rec["name"].encode())
            for card in hdul[0].header.cards:
                h.update(f"{card.keyword}={card.value!r}".encode())
            h.update(np.ascontiguousarray(hdul[0].data, dtype="<u2").tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("dialect", MONO_DIGESTS)
def test_mono_nights_are_byte_identical_to_before_colour(tmp_path, dialect):
    truth = write_night(tmp_path / "a", SimSpec(dialect=dialect, **MONO))
    assert _digest(tmp_path / "a", truth) == MONO_DIGESTS[dialect]
    assert "bayer" not in truth and "prescan" not in truth
    assert all("stars_rgb" not in t for t in truth["targets"].values())
    assert all("sky_adu_rgb" not in f and "flat_adu_rgb" not in f for f in truth["files"])
    # the colour of the light is a CFA camera's business: a mono camera ignores it
    tinted = SimSpec(dialect=dialect, channel_qe=(0.3, 1.0, 2.0), sky_colour=(2, 1, 1), flat_colour=(1, 1, 3), **MONO)
    assert _digest(tmp_path / "b", write_night(tmp_path / "b", tinted)) == MONO_DIGESTS[dialect]
    for rec in truth["files"]:
        h = fits.getheader(tmp_path / "a" / rec["name"])
        assert "BAYERPAT" not in h and h.get("ROWORDER") == ("TOP-DOWN" if dialect == "nina" else None)


# --------------------------------------------------------------------------- spec and CLI


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (dict(bayer="RGBG"), "bayer 'RGBG'"),
        (dict(bayer="XTRANS"), "bayer 'XTRANS'"),
        (dict(bayer="RGGB", row_order="BOTTOM_UP"), "row_order 'BOTTOM_UP'"),
        (dict(bayer="RGGB", dialect="maxim"), "'maxim' dialect writes no Bayer"),
        (dict(bayer="RGGB", bayer_offset=(1,)), "bayer_offset"),
        (dict(prescan=-2), "prescan"),
        (dict(channel_qe=(1.0, 0.0, 1.0)), "channel_qe"),
        (dict(dialect="seestar", bayer="RGGB"), "GRBG"),
        (dict(dialect="seestar", row_order="BOTTOM-UP"), "no ROWORDER"),
        (dict(dialect="seestar", bayer_offset=(1, 0)), "XBAYROFF"),
        (dict(n_flat=-1), "n_flat"),
    ],
)
def test_invalid_colour_specs_are_refused_with_the_reason(options, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        SimSpec(**options)


def test_simulate_command_line_maps_onto_the_spec():
    from observd.cli.main import build_parser
    from observd.cli.simulate import simulation_spec

    def spec(*argv):
        return simulation_spec(build_parser().parse_args(["simulate", "out", *argv]))

    mono = spec()
    assert mono == SimSpec(targets=(TargetSpec(),))  # the defaults did not move
    cfa = spec("--bayer", "BGGR", "--row-order", "BOTTOM-UP", "--bayer-offset", "1", "0", "--prescan", "3")
    assert (cfa.bayer, cfa.row_order, cfa.bayer_offset, cfa.prescan) == ("BGGR", "BOTTOM-UP", (1, 0), 3)
    assert spec("--bayer", "RGGB", "--row-order", "none").row_order is None
    s50 = spec("--dialect", "seestar")
    assert (s50.dialect, s50.bayer, s50.row_order, s50.n_bias, s50.n_dark, s50.n_flat) == (
        "seestar",
        "GRBG",
        None,
        0,
        0,
        0,
    )
    assert s50.targets[0].exptime == 10.0 and s50.targets[0].filters == ("IRCUT",)
    assert spec("--dialect", "seestar", "--n-dark", "5", "--exptime", "20").n_dark == 5
    from observd.cli.main import UsageError

    with pytest.raises(UsageError, match="GRBG"):
        spec("--dialect", "seestar", "--bayer", "RGGB")
