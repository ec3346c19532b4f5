"""The Bayer convention (pattern, offsets, row order, trims), repair and demosaicing."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from colour_demosaicing import demosaicing_CFA_Bayer_bilinear, mosaicing_CFA_Bayer

from observd.adapters.fits_files import header_cards
from observd.core import bayer
from observd.core.bayer import BAYER_PATTERNS, BayerError, shifted, stored_pattern
from observd.core.calibrate import MASK_BAD, MASK_SATURATED, Calibrated
from observd.core.classify import ClassifyRules, classify


def cards(**values):
    h = fits.Header()
    h["IMAGETYP"] = "Light Frame"
    h["NAXIS1"], h["NAXIS2"] = 64, 48
    for key, value in values.items():
        h[key] = value
    return header_cards(h)


def colour_map(pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """The colour letter of every pixel of a mosaic whose stored pattern is `pattern`."""
    grid = np.array([[pattern[0], pattern[1]], [pattern[2], pattern[3]]])
    rows, cols = np.indices(shape)
    return grid[rows % 2, cols % 2]


def test_offsets_shift_the_pattern_like_siril():
    assert shifted("RGGB", 1, 0) == "GRBG"
    assert shifted("RGGB", 0, 1) == "GBRG"
    assert shifted("RGGB", 1, 1) == "BGGR"
    assert shifted("GRBG", 2, 4) == "GRBG"


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("height", [48, 49])
def test_bottom_up_reads_the_sensor_from_its_last_row(pattern, height):
    """A sensor with `pattern` at its top-left, stored bottom row first: the stored first row is
    the sensor's row height-1 (checked on an explicit colour map, flipped)."""
    sensor = colour_map(pattern, (height, 8))
    stored = sensor[::-1]
    expected = "".join(stored[:2, :2].ravel())
    assert stored_pattern(pattern, height=height, row_order="BOTTOM-UP") == expected
    assert stored_pattern(pattern, height=height, row_order="TOP-DOWN") == pattern
    assert stored_pattern(pattern, height=height) == pattern  # no ROWORDER: top-down, as cameras write


@pytest.mark.parametrize("value", ["XTRANS", "RGBGGBGRBRGB", "RGBG", "RRGB", "rgb", ""])
def test_unknown_patterns_are_refused_with_a_reason(value):
    with pytest.raises(BayerError, match="BAYERPAT"):
        bayer.parse_pattern(value)


def test_classification_folds_offsets_and_row_order():
    info = classify(cards(BAYERPAT="RGGB", XBAYROFF=1, YBAYROFF=0, ROWORDER="TOP-DOWN"), "a.fits")
    assert info.bayer == "GRBG" and info.bayer_note is None
    # 48 rows stored bottom-up: the first stored row is the sensor's row 47, odd
    assert classify(cards(BAYERPAT="RGGB", ROWORDER="BOTTOM-UP"), "a.fits").bayer == "GBRG"
    # a subframe starting at an odd column keeps the sensor's phase
    assert classify(cards(BAYERPAT="RGGB", XORGSUBF=3, YORGSUBF=2), "a.fits").bayer == "GRBG"
    assert classify(cards(), "a.fits").bayer is None  # mono


def test_a_pattern_observd_cannot_use_is_mono_with_a_reason():
    for bad in (
        {"BAYERPAT": "XTRANS"},
        {"BAYERPAT": "RGGB", "ROWORDER": "SIDEWAYS"},
        {"BAYERPAT": "RGGB", "XBAYROFF": 0.5},
    ):
        info = classify(cards(**bad), "a.fits")
        assert info.bayer is None and info.frame_type == "light"
        assert info.bayer_note.startswith("processed as mono")


def test_the_instrument_override_names_the_pattern_for_cameras_that_write_none():
    rules = ClassifyRules(bayer={"ZWO ASI120MC-S": "GRBG"})
    assert classify(cards(INSTRUME="ZWO ASI120MC-S"), "a.fits", rules).bayer == "GRBG"
    assert classify(cards(INSTRUME="Other"), "a.fits", rules).bayer is None
    # the header's row order still applies to the configured pattern
    assert classify(cards(INSTRUME="ZWO ASI120MC-S", ROWORDER="BOTTOM-UP"), "a.fits", rules).bayer == "BGGR"


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bilinear_matches_colour_demosaicing_inside_the_border(pattern):
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 1000, (40, 56, 3))
    cfa = mosaicing_CFA_Bayer(rgb, pattern).astype(np.float32)
    reference = np.moveaxis(demosaicing_CFA_Bayer_bilinear(cfa, pattern), -1, 0)
    # the border differs on purpose: observd mirrors without repeating the edge pixel, which
    # keeps each colour's lattice (scipy's default 'reflect' puts a red value on a green site)
    np.testing.assert_allclose(bayer.bilinear(cfa, pattern)[:, 1:-1, 1:-1], reference[:, 1:-1, 1:-1], rtol=1e-5)


@pytest.mark.parametrize("method", bayer.DEBAYER_METHODS)
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_every_method_keeps_each_colour_in_its_channel(method, pattern):
    """A scene of distinct flat colours comes out in the right planes: OpenCV's naming quirk
    (its 'BayerBG' is an RGGB mosaic) is caught here."""
    truth = np.array([300.0, 1000.0, 120.0])
    rgb = np.broadcast_to(truth, (32, 32, 3))
    cfa = mosaicing_CFA_Bayer(rgb, pattern).astype(np.float32)
    out = bayer.debayer(cfa, pattern, method)
    np.testing.assert_allclose(np.median(out[:, 4:-4, 4:-4], axis=(1, 2)), truth, rtol=0.01)


def test_repair_uses_same_colour_neighbours_only():
    data = np.array(colour_map("RGGB", (16, 16)) == "R", dtype=np.float32) * 900 + 100  # R 1000, G and B 100
    bad = np.zeros(data.shape, bool)
    bad[6, 6] = True  # a red site
    bad[6, 7] = True  # a green site
    data[6, 6], data[6, 7] = 60000, 0
    still = bayer.repair(data, bad)
    assert not still.any()
    assert data[6, 6] == pytest.approx(1000) and data[6, 7] == pytest.approx(100)


def test_develop_propagates_a_variance_and_spreads_the_masks():
    rng = np.random.default_rng(5)
    data = rng.normal(500, 10, (32, 32)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[10:12, 10:12] = True  # a 2x2 block: every site loses a pixel, all are repairable
    saturated = np.zeros(data.shape, bool)
    saturated[20, 20] = True
    cal = Calibrated(data.copy(), np.full(data.shape, 10, np.float32), mask | saturated, saturated)
    out = bayer.develop(cal, "RGGB", "bilinear")
    assert out.rgb.shape == (3, 32, 32) and out.uncertainty.shape == (3, 32, 32)
    assert not (out.bits & MASK_BAD).any()  # repaired, not holes
    assert (out.bits[19:22, 19:22] & MASK_SATURATED).all() and not (out.bits[15, 15] & MASK_SATURATED)
    # a red value interpolated from 4 diagonal neighbours has half their std-dev
    assert out.uncertainty[0, 5, 5] == pytest.approx(5.0, rel=1e-5)  # (5, 5) is a blue site
    assert out.uncertainty[0, 4, 4] == pytest.approx(10.0, rel=1e-5)  # a red site keeps its own


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_malvar_matches_colour_demosaicing_inside_the_border(pattern):
    from colour_demosaicing import demosaicing_CFA_Bayer_Malvar2004

    rng = np.random.default_rng(4)
    cfa = mosaicing_CFA_Bayer(rng.uniform(0, 1000, (40, 56, 3)), pattern).astype(np.float32)
    reference = np.moveaxis(demosaicing_CFA_Bayer_Malvar2004(cfa.astype(np.float64), pattern), -1, 0)
    np.testing.assert_allclose(bayer.malvar(cfa, pattern)[:, 2:-2, 2:-2], reference[:, 2:-2, 2:-2], atol=1e-3)


def test_malvar_variance_is_the_noise_it_makes():
    """The squared-kernel propagation gives the scatter that white noise actually comes out with."""
    rng = np.random.default_rng(6)
    noise = rng.normal(0, 10, (256, 256)).astype(np.float32)
    out = bayer.malvar(noise, "GRBG")
    predicted = np.sqrt(bayer.malvar(np.full(noise.shape, 100, np.float32), "GRBG", squared=True))
    for k in range(3):
        for dy in (0, 1):
            for dx in (0, 1):
                measured = (
                    out[k, 4:-4:2, 4:-4:2].std()
                    if (dy, dx) == (0, 0)
                    else out[k, 4 + dy : -4 : 2, 4 + dx : -4 : 2].std()
                )
                assert measured == pytest.approx(predicted[k, 10 + dy, 10 + dx], rel=0.08)


def test_an_unknown_pattern_is_processed_as_mono_with_a_warning_and_a_reason(tmp_path):
    from tests.support import ingest_into

    camera = tmp_path / "camera"
    camera.mkdir()
    rng = np.random.default_rng(8)
    for i, pattern in enumerate(("XTRANS", "RGGB")):
        h = fits.Header()
        h["IMAGETYP"], h["EXPTIME"], h["OBJECT"], h["BAYERPAT"] = "Light Frame", 10.0, "M1", pattern
        h["DATE-OBS"] = f"2026-11-20T21:0{i}:00"
        fits.writeto(camera / f"light_{i}.fits", rng.normal(1000, 10, (64, 64)).astype(np.uint16), h)
    config, catalog = ingest_into(tmp_path, [camera], calibrate={"require": []})
    try:
        rows = {r["name"]: r for r in catalog.files()}
        assert rows["light_0.fits"]["bayer"] is None and "XTRANS" in rows["light_0.fits"]["bayer_note"]
        assert rows["light_1.fits"]["bayer"] == "RGGB" and rows["light_1.fits"]["bayer_note"] is None
        assert {r["state"] for r in rows.values()} <= {"calibrated", "aligned", "bad", "unaligned"}
        warnings = [e for e in catalog.events(level="warning") if e["event"] == "colour"]
        assert len(warnings) == 1 and "light_0.fits" in warnings[0]["message"]
    finally:
        catalog.close()
