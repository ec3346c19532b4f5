"""observd.core.classify on real headers from several observatories and camera programs.

Expected values were read by hand from each file's header (`astropy.io.fits.getheader`) and
cross-checked with the folder's headers.tsv; the data are described in PROVENANCE.tsv.
"""

from __future__ import annotations

import os
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from observd.adapters.fits_files import header_cards
from observd.core.classify import classify

REAL = Path(os.environ.get("OBSERVD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))

# Site time zones (from each set's provenance: observatory location).
TIMEZONES = {
    "01_umd_sbig_st8_maximdl": "America/New_York",  # University of Maryland
    "02_microobs_hatp32_lights": "America/Phoenix",  # Whipple Observatory, Amado AZ
    "03_stoneedge_stx6303_m57": "America/Los_Angeles",  # Stone Edge, Sonoma CA
    "04_msumastro_header_zoo": "America/Chicago",  # Feder Observatory, Minnesota
    "05_ccdproc_saao_apogee": "Africa/Johannesburg",  # SAAO (a8280271)
    "08_huntsman_asi183_science_cutout": "Australia/Sydney",  # Siding Spring
}

# Frame type by (set, file): what IMAGETYP says, read from each header.
EXPECTED_TYPES = {
    "01_umd_sbig_st8_maximdl": {
        "UB17-001-c.fit": "light",
        "UB17-033-c.fit": "light",
        "focus.fit": "light",
        "fov.fit": "light",
        "calib-001-bi.fit": "bias",
        "calib-002-bi.fit": "bias",
        "calib-001-d.fit": "dark",
        "calib-002-d.fit": "dark",
        "flat-001-c.fit": "flat",
        "flat-002-c.fit": "flat",
    },
    "03_stoneedge_stx6303_m57": {
        "dark_m57_i-band_10sec_bin2_2016jul09_lindsaymberkhout_num5_seo.fits": "dark",
        "m57_clear_10sec_bin2_2016jul09_lindsaymberkhout_num1_seo.fits": "light",
        "m57_g-band_10sec_bin2_2016jul09_lindsaymberkhout_num2_seo.fits": "light",
        "m57_r-band_10sec_bin2_2016jul09_lindsaymberkhout_num3_seo.fits": "light",
        "m57_i-band_10sec_bin2_2016jul09_lindsaymberkhout_num4_seo.fits": "light",
    },
    "04_msumastro_header_zoo": {
        "aspen_trimmed.fit": "flat",
        **{f"biastest{i}.fit": "bias" for i in range(1, 6)},
        **{f"darktest{i}.fit": "dark" for i in range(1, 6)},
        "flattest.fit": "bias",  # the name says flat, IMAGETYP says BIAS: the header wins
        "celestron_nightscape_10100_astro_fx_v106.fit": "light",
        "maximdl_5_21_header.fit": "light",
        "maximdl_5_23_header.fit": "light",
        "maximdl_6_16_header.fit": "light",
        "maximdl_6_18_header.fit": "light",
        "uint16.fit": "light",
        "uint16_missing_filter.fit": "light",
        "uint16_no_pointing.fit": "light",
        "uint16_not_m101.fit": "light",
        "neon-on-dome-10-sec-high-res-though-scope.fit": "unknown",  # no type keyword, no hint
    },
    "05_ccdproc_saao_apogee": {"a8280271.fits": "light", "sip-wcs.fit": "light"},
    "08_huntsman_asi183_science_cutout": {"science_0.fits": "light"},
}


def fits_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.lower().endswith((".fit.gz", ".fits.gz", ".fts.gz")))


def real_set(name: str) -> Path:
    folder = REAL / name
    if not folder.is_dir():
        pytest.skip(f"real data set {name} not found under {REAL}")
    return folder


def classify_file(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # non-standard cards are expected
        header = fits.getheader(path)
    return classify(header_cards(header), path.name.removesuffix(".gz"), timezone=TIMEZONES[path.parent.name])


def test_real_data_present():
    if not REAL.is_dir():
        pytest.skip(f"no real data at {REAL} (set OBSERVD_REAL_DATA)")
    assert {p.name for p in REAL.iterdir() if p.is_dir()} >= set(TIMEZONES)


@pytest.mark.parametrize("set_name", sorted(TIMEZONES))
def test_every_real_file_classifies_without_error(set_name):
    files = fits_files(real_set(set_name))
    assert files
    for path in files:
        result = classify_file(path)
        assert (result.frame_type == "unknown") == (result.reason is not None), path.name
        assert result.date_obs is not None and result.night is not None, path.name
        assert result.shape is not None and result.exptime is not None, path.name


@pytest.mark.parametrize("set_name", sorted(EXPECTED_TYPES))
def test_real_frame_types(set_name):
    folder = real_set(set_name)
    expected = EXPECTED_TYPES[set_name]
    got = {p.name.removesuffix(".gz"): classify_file(p) for p in fits_files(folder)}
    assert set(got) == set(expected)
    assert {name: r.frame_type for name, r in got.items()} == expected
    for name, result in got.items():
        if result.frame_type != "unknown":
            assert result.type_source.startswith("IMAGETYP="), name


def test_microobservatory_frames_without_type_are_unknown_with_reason():
    files = fits_files(real_set("02_microobs_hatp32_lights"))
    assert len(files) == 12
    for path in files:
        result = classify_file(path)
        assert result.frame_type == "unknown"
        assert "no frame-type keyword" in result.reason and path.name.removesuffix(".gz") in result.reason


def test_neon_dome_frame_reason():
    result = classify_file(real_set("04_msumastro_header_zoo") / "neon-on-dome-10-sec-high-res-though-scope.fit.gz")
    assert result.frame_type == "unknown" and "IMAGETYP" in result.reason


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# (set, file) -> FrameInfo field values read from that header.
EXPECTED_VALUES = {
    ("01_umd_sbig_st8_maximdl", "UB17-001-c.fit.gz"): dict(
        exptime=300.0,
        ccd_temp=0.18901872786513252,
        set_temp=0.0,
        filter="clear",
        xbin=1,
        ybin=1,
        naxis1=1530,
        naxis2=1020,
        egain=2.5999999046325684,
        gain_setting=None,
        readout_mode="Normal",
        saturation=65535.0,
        instrument="SBIG ST-8 3 CCD Camera",
        telescope=None,
        object=None,
        date_obs=at(2025, 6, 25, 3, 16, 10),
        night="2025-06-24",
    ),
    ("01_umd_sbig_st8_maximdl", "flat-002-c.fit.gz"): dict(  # dawn flat: same night
        exptime=2.0, filter="clear", date_obs=at(2025, 6, 25, 6, 51, 48), night="2025-06-24"
    ),
    ("01_umd_sbig_st8_maximdl", "calib-002-bi.fit.gz"): dict(
        exptime=0.0, ccd_temp=-0.23181540522300637, filter=None, date_obs=at(2025, 6, 25, 6, 17, 57)
    ),
    ("02_microobs_hatp32_lights", "HATP-32171220013343.FITS.gz"): dict(
        exptime=60.0,  # written as '060.00'
        ccd_temp=-2.15,  # CAMTEMP = 271.0 / ... in Kelvin
        filter="Clear",
        instrument="Main",
        telescope="Cecilia",
        object="HATP-32",
        date_obs=at(2017, 12, 20, 1, 33, 43, 317000),  # '2017-12-19T18:33:43.317-0700'
        night="2017-12-19",
        saturation=32767.0,
        naxis1=650,
        naxis2=500,
    ),
    ("03_stoneedge_stx6303_m57", "m57_g-band_10sec_bin2_2016jul09_lindsaymberkhout_num2_seo.fits.gz"): dict(
        exptime=10.0,
        ccd_temp=-10.0,
        filter="g-band",
        xbin=2,
        ybin=2,
        naxis1=1536,
        naxis2=1023,
        telescope="0.5meter",
        date_obs=at(2016, 7, 9, 6, 33, 41),
        night="2016-07-08",
    ),
    ("04_msumastro_header_zoo", "maximdl_6_18_header.fit.gz"): dict(
        exptime=90.0,
        ccd_temp=-19.984783500000002,
        set_temp=-20.0,
        filter="r",
        readout_mode="Monochrome",
        object="kelt-16-b",
        instrument="AspenCG16",
        date_obs=at(2018, 8, 23, 8, 49, 30),
        night="2018-08-22",
    ),
    ("04_msumastro_header_zoo", "neon-on-dome-10-sec-high-res-though-scope.fit.gz"): dict(
        filter=None,  # FILTER = 'None'
        egain=1.74,
        saturation=65535.0,  # DATAMAX
        ccd_temp=4.455891600369,
        date_obs=at(2013, 1, 28, 3, 8, 12),
    ),
    ("04_msumastro_header_zoo", "uint16_missing_filter.fit.gz"): dict(filter=None, set_temp=-19.899999618530273),
    ("04_msumastro_header_zoo", "biastest1.fit.gz"): dict(
        exptime=0.0, saturation=None, set_temp=-35.0, telescope="Feder"
    ),  # BITPIX -32
    ("05_ccdproc_saao_apogee", "a8280271.fits.gz"): dict(
        exptime=150.04,
        ccd_temp=-92.95,  # CCD-TEMP = 180.2 (K, Cu block)
        egain=1.9,
        gain_setting=None,  # GAIN = 1.9 / e-/ADU
        rdnoise=5.0,
        object="rf0420",
        telescope="SAAO 1.0m",
        filter=None,
        biassec="[   4:  13,   1: 520]",
        trimsec="[  17: 528,   1: 520]",
        date_obs=at(2013, 7, 13, 0, 57, 33),  # DATE-OBS '2013-07-13' + UT '00:57:33'
        night="2013-07-12",
    ),
    ("05_ccdproc_saao_apogee", "sip-wcs.fit.gz"): dict(
        filter="B", exptime=120.0, set_temp=-18.899999618530273, date_obs=at(2011, 9, 1, 2, 9, 5)
    ),
    ("08_huntsman_asi183_science_cutout", "science_0.fits.gz"): dict(
        exptime=300.0,
        ccd_temp=0.5,
        set_temp=0.0,
        filter="g_band",
        gain_setting=100.0,  # CAM-GAIN
        egain=1.144744515419006,
        naxis1=800,
        naxis2=800,
        saturation=65535.0,
        date_obs=at(2021, 1, 18, 11, 26, 32, 228000),
        night="2021-01-18",
    ),
}


@pytest.mark.parametrize("set_name, file_name", sorted(EXPECTED_VALUES))
def test_real_header_values(set_name, file_name):
    path = real_set(set_name) / file_name
    result = classify_file(path)
    for field, expected in EXPECTED_VALUES[(set_name, file_name)].items():
        got = getattr(result, field)
        if isinstance(expected, float):
            assert got == pytest.approx(expected, abs=1e-9), field
        else:
            assert got == expected, field
