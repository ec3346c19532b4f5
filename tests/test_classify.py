"""observd.core.classify: header dialects -> FrameInfo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from astropy.io import fits

from observd.adapters.fits_files import header_cards
from observd.core import dialects
from observd.core.cards import HeaderCards
from observd.core.classify import ClassifyRules, classify
from observd.core.frames import FRAME_TYPES


def header(**cards) -> HeaderCards:
    """Header cards from keyword=value or keyword=(value, comment); '_' in names becomes '-'.

    Built as an astropy header and read through the FITS adapter, as a file's would be."""
    h = fits.Header()
    for key, value in cards.items():
        h[key.replace("__", "-")] = value
    return header_cards(h)


def info(name: str = "frame.fits", rules: ClassifyRules = ClassifyRules(), tz: str = "UTC", **cards):
    return classify(header(**cards), name, rules, tz)


# --- frame type from the header ----------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Light Frame", "light"),
        ("LIGHT", "light"),
        ("object", "light"),
        ("science", "light"),
        ("OBJECT", "light"),
        ("Light", "light"),
        ("Bias Frame", "bias"),
        ("BIAS", "bias"),
        ("zero", "bias"),
        ("Dark Frame", "dark"),
        ("DARK", "dark"),
        ("DarkFlat", "dark"),
        ("Dark Flat", "dark"),
        ("Flat Field", "flat"),
        ("Flat Frame", "flat"),
        ("FLAT", "flat"),
        ("SKYFLAT", "flat"),
        ("DOMEFLAT", "flat"),
        ("TWILIGHT", "flat"),
        ("Sky Flat", "flat"),
        ("dome_flat", "flat"),
        ("  light frame  ", "light"),
        ("bIaS   fRaMe", "bias"),
        ("flat-field", "flat"),
    ],
)
@pytest.mark.parametrize("keyword", ["IMAGETYP", "OBSTYPE", "FRAME", "FRAMETYP"])
def test_type_values_in_every_type_keyword(keyword, value, expected):
    h = fits.Header()
    h[keyword] = value
    result = classify(header_cards(h), "x.fits")
    assert result.frame_type == expected
    assert result.reason is None
    assert result.type_source.startswith(f"{keyword}=")


@pytest.mark.parametrize(
    "value, expected",
    [
        (1, "light"),
        (2, "bias"),
        (3, "dark"),
        (4, "flat"),
        ("3", "dark"),
        (4.0, "flat"),
    ],
)
def test_numeric_picttype_codes(value, expected):
    assert info(PICTTYPE=value).frame_type == expected


@pytest.mark.parametrize("value", [0, 5, -1])
def test_picttype_without_a_type_is_unknown(value):
    result = info(PICTTYPE=value)
    assert result.frame_type == "unknown"
    assert "PICTTYPE" in result.reason


def test_numeric_codes_apply_to_picttype_only():
    result = info(IMAGETYP=3)
    assert result.frame_type == "unknown"
    assert "IMAGETYP=3" in result.reason


@pytest.mark.parametrize("value", ["Master Dark", "MASTER_BIAS", "MasterFlat", "master light"])
def test_masters_of_other_programs_are_unknown(value):
    result = info(name="Dark_001.fits", IMAGETYP=value)
    assert result.frame_type == "unknown"
    assert "already a master calibration" in result.reason and value in result.reason


def test_unrecognised_value_is_unknown_and_says_how_to_fix_it():
    result = info(name="Light_001.fits", IMAGETYP="Tricolor Image")
    assert result.frame_type == "unknown"  # the header said something: no name fallback
    assert "Tricolor Image" in result.reason and "[classify]" in result.reason


def test_imagetyp_takes_precedence_over_frame_and_the_conflict_is_recorded():
    result = info(IMAGETYP="Light Frame", FRAME="Dark")
    assert result.frame_type == "light"
    assert "IMAGETYP='Light Frame'" in result.type_source and "FRAME='Dark'" in result.type_source


def test_obstype_ranks_below_imagetyp_above_frame():
    assert info(OBSTYPE="zero", FRAME="Flat").frame_type == "bias"
    assert info(IMAGETYP="DARK", OBSTYPE="object").frame_type == "dark"


def test_agreeing_keywords_are_not_reported_as_conflict():
    result = info(IMAGETYP="DARK", FRAME="Dark")
    assert result.frame_type == "dark" and "precedence" not in result.type_source


def test_unrecognised_first_keyword_falls_to_a_recognised_later_one():
    result = info(IMAGETYP="Tricolor Image", FRAME="Light")
    assert result.frame_type == "light" and result.type_source.startswith("FRAME=")


def test_blank_type_keyword_counts_as_absent():
    assert info(name="Bias_0001.fit", IMAGETYP="   ").frame_type == "bias"


# --- configured rules --------------------------------------------------------------------


def test_extra_keyword_is_tried_before_builtin_ones():
    rules = ClassifyRules(keywords=("mytype",))
    result = info(rules=rules, MYTYPE="Bias", IMAGETYP="Light Frame")
    assert result.frame_type == "bias" and result.type_source.startswith("MYTYPE=")


def test_extra_value_mapping_is_case_and_separator_insensitive():
    rules = ClassifyRules(values={"Focus Frame": "light", "calZ": "bias"})
    assert info(rules=rules, IMAGETYP="FOCUS_FRAME").frame_type == "light"
    assert info(rules=rules, OBSTYPE="CALZ").frame_type == "bias"
    assert info(IMAGETYP="FOCUS_FRAME").frame_type == "unknown"  # not without the rule


def test_extra_value_overrides_builtin_meaning():
    rules = ClassifyRules(values={"zero": "dark"})
    assert info(rules=rules, IMAGETYP="ZERO").frame_type == "dark"


def test_extra_keyword_with_extra_value():
    rules = ClassifyRules(keywords=("CALTYPE",), values={"sci-frame": "light"})
    assert info(rules=rules, CALTYPE="SCI FRAME").frame_type == "light"


def test_rules_reject_an_invalid_type():
    with pytest.raises(ValueError, match="darks"):
        ClassifyRules(values={"x": "darks"})
    with pytest.raises(ValueError, match="stack"):
        ClassifyRules(filename_patterns={"*.fit": "stack"})


def test_rules_are_frozen_and_hashable():
    a = ClassifyRules(values={"X": "Light"}, filename_patterns={"*_B_*": "bias"})
    b = ClassifyRules(values={"x": "light"}, filename_patterns={"*_b_*": "bias"})
    assert a == b and hash(a) == hash(b)
    with pytest.raises(TypeError):
        a.values["y"] = "dark"


# --- file-name fallback ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Light_M42_120.0s_Bin1_2600MC_gain100_20230101-203040_-10.0C_0001.fit", "light"),
        ("Bias_1.0ms_Bin1_2600MC_gain100_20230101-063040_-10.0C_0001.fit", "bias"),
        ("Dark_300.0s_Bin1_2600MC_gain100_20230101-063040_-10.0C_0001.fit", "dark"),
        ("Flat_1.2s_Bin1_Ha_gain100_20230101-063040_-10.0C_0001.fit", "flat"),
        ("DarkFlat_1.2s_Bin1_gain100_0001.fit", "dark"),
        ("LIGHT_m31_0001.fits", "light"),
        ("M42-dark-300s-001.fits", "dark"),
        ("bias001.fit", "bias"),
        ("zero_0003.fits", "bias"),
        ("ngc7000_flats_Ha.fits", "flat"),
        ("/data/2024-01-01/Flat_001.fits", "flat"),
    ],
)
def test_builtin_filename_hints(name, expected):
    result = info(name=name)
    assert result.frame_type == expected
    assert "file name" in result.type_source and result.reason is None


@pytest.mark.parametrize(
    "name",
    [
        "darkroom_test.fits",  # 'dark' inside a longer word
        "calib-001-bi.fit",  # MaxIm-style short suffixes are not used
        "flatten.fits",
        "/data/darks/img001.fits",  # folder names are not used
        "HATP-32171220013343.FITS",
    ],
)
def test_names_without_an_unambiguous_hint_are_unknown(name):
    result = info(name=name)
    assert result.frame_type == "unknown"
    assert repr(name.rsplit("/", 1)[-1]) in result.reason


def test_ambiguous_name_is_unknown_and_says_why():
    result = info(name="m42_flat_and_dark.fits")
    assert result.frame_type == "unknown" and "ambiguous" in result.reason


def test_configured_pattern_is_case_insensitive_and_beats_builtin_hints():
    rules = ClassifyRules(filename_patterns={"*_CALB_*": "bias", "light_*": "flat"})
    assert info(name="N1_calb_001.FIT", rules=rules).frame_type == "bias"
    result = info(name="Light_skyflat_001.fit", rules=rules)
    assert result.frame_type == "flat" and "configured pattern" in result.type_source


def test_header_keyword_beats_file_name():
    assert info(name="Dark_001.fit", IMAGETYP="Light Frame").frame_type == "light"


def test_unknown_reason_names_the_keywords_and_the_file():
    result = info(name="/x/y/obs_0001.fits")
    assert result.frame_type == "unknown"
    for keyword in ("IMAGETYP", "OBSTYPE", "FRAME", "FRAMETYP", "PICTTYPE"):
        assert keyword in result.reason
    assert "'obs_0001.fits'" in result.reason and "matches no pattern" in result.reason
    assert result.frame_type in FRAME_TYPES


# --- exposure ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["EXPTIME", "EXPOSURE", "EXP_TIME", "ITIME"])
def test_exposure_keywords(key):
    assert classify(header(**{key: 42.5}), "x.fits").exptime == 42.5


@pytest.mark.parametrize(
    "value, expected",
    [
        ("060.00", 60.0),
        ("6,4E-05", 6.4e-5),
        (" 12,5 ", 12.5),
        ("+1.0D+01", 10.0),
        (0, 0.0),
    ],
)
def test_exposure_strings_and_decimal_commas(value, expected):
    assert info(EXPTIME=value).exptime == pytest.approx(expected)


def test_unreadable_exposure_falls_back_to_the_next_keyword():
    assert info(EXPTIME="n/a", EXPOSURE=5.0).exptime == 5.0


@pytest.mark.parametrize("value", ["abc", -1.0, "1,000.5", "nan", True])
def test_bad_exposure_is_none(value):
    assert info(EXPTIME=value).exptime is None


def test_exposure_in_milliseconds_by_comment():
    # as written by the NF Observatory camera: "EXPTIME = 90000 / exposure time in ms"
    assert info(EXPTIME=(90000, "exposure time in ms")).exptime == 90.0
    assert info(EXPTIME=(90, "exposure time in seconds")).exptime == 90.0


# --- temperature -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["CCD-TEMP", "CCD_TEMP", "CCDTEMP", "TEMPERAT", "DET-TEMP", "SENSTEMP", "CAMTEMP", "DEWTEM1"]
)
def test_sensor_temperature_keywords(key):
    assert classify(header(**{key: -12.5}), "x.fits").ccd_temp == -12.5


def test_ccd_temp_beats_dewar_temperature():
    assert info(DEWTEMP=-120.0, CCD__TEMP=-10.0).ccd_temp == -10.0


@pytest.mark.parametrize(
    "cards, expected",
    [
        ({"CCD__TEMP": 263.15}, -10.0),  # above 100: Kelvin
        ({"CCD__TEMP": 180.2}, -92.95),  # LN2-cooled CCD (SAAO)
        ({"CCD__TEMP": 120.0}, -153.15),
        ({"CAMTEMP": (271.0, "CCD Camera Temperature in Kelvin")}, -2.15),
        ({"CCD__TEMP": (80.0, "[K] detector temperature")}, -193.15),  # low, but comment says K
        ({"CCD__TEMP": (80.0, "temperature in K")}, -193.15),
        ({"CCD__TEMP": (80.0, "CCD TEMP IN DEGREES K")}, -193.15),
        ({"CCD__TEMP": (4.5, "CCD TEMP IN DEGREES C")}, 4.5),
        ({"CCD__TEMP": (-10.0, "temperature in KPNO dewar, C")}, -10.0),
        ({"CCD__TEMP": (45.0, "deg C")}, 45.0),
        ({"CCD__TEMP": "-9,5"}, -9.5),
        ({"CCD__TEMP": "-10.0"}, -10.0),
    ],
)
def test_temperature_units(cards, expected):
    assert info(**cards).ccd_temp == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    "cards",
    [
        {"CAMTEMP": (-1.0, "CCD Camera Temperature in Kelvin, =-1 if no data")},
        {"CCD__TEMP": -300.0},
        {"CCD__TEMP": "cold"},
    ],
)
def test_impossible_temperatures_are_none(cards):
    assert info(**cards).ccd_temp is None


@pytest.mark.parametrize("key", ["SET-TEMP", "SETTEMP", "SET_TEMP"])
def test_set_point_keywords(key):
    result = classify(header(**{key: -20.0, "CCD-TEMP": -19.9}), "x.fits")
    assert result.set_temp == -20.0 and result.ccd_temp == -19.9


def test_set_point_in_kelvin():
    assert info(SET__TEMP=253.15).set_temp == pytest.approx(-20.0)


# --- filter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Ha", "Ha"),
        ("L", "L"),
        ("r'", "r'"),
        ("  OIII  ", "OIII"),
        ("Clear", "Clear"),
        ("None", None),
        ("NONE", None),
        ("", None),
        ("Empty", None),
        ("open", None),
        ("Open", None),
    ],
)
def test_filter_normalisation(value, expected):
    assert info(FILTER=value).filter == expected


def test_filter_absent_is_none():
    assert info().filter is None


def test_filtname_keyword():
    assert info(FILTNAME="B").filter == "B"


def test_two_wheels_are_joined_and_open_positions_dropped():
    assert info(FILTER1="open", FILTER2="Ha").filter == "Ha"
    assert info(FILTER1="V", FILTER2="ND1").filter == "V+ND1"
    assert info(FILTER1="Open", FILTER2="Empty").filter is None


def test_filter_keyword_wins_over_wheels_unless_empty():
    assert info(FILTER="R", FILTER1="V").filter == "R"
    assert info(FILTER="None", FILTER1="V").filter == "V"


# --- binning and shape -------------------------------------------------------------------


@pytest.mark.parametrize(
    "cards, expected",
    [
        ({"XBINNING": 2, "YBINNING": 2}, (2, 2)),
        ({"XBIN": 3, "YBIN": 3}, (3, 3)),
        ({"BINX": 1, "BINY": 2}, (1, 2)),
        ({"CCDXBIN": 4, "CCDYBIN": 4}, (4, 4)),
        ({"CCDSUM": "2 2"}, (2, 2)),
        ({"CCDSUM": "1 2"}, (1, 2)),
        ({"BINNING": "3x3"}, (3, 3)),
        ({"BINNING": 2}, (2, 2)),
        ({"XBINNING": 2}, (2, 2)),  # one axis only: square
        ({"XBINNING": 2.0, "YBINNING": "2"}, (2, 2)),
        ({}, (1, 1)),
        ({"CCDSUM": "garbage"}, (1, 1)),
        ({"XBINNING": 0, "YBINNING": 0}, (1, 1)),
    ],
)
def test_binning(cards, expected):
    result = classify(header(**cards), "x.fits")
    assert (result.xbin, result.ybin) == expected


def test_shape_and_saturation_from_bitpix_and_bzero():
    result = info(BITPIX=16, NAXIS=2, NAXIS1=300, NAXIS2=200, BZERO=32768)
    assert (result.naxis1, result.naxis2, result.shape) == (300, 200, (200, 300))
    assert result.saturation == 65535


@pytest.mark.parametrize(
    "cards, expected",
    [
        ({"BITPIX": 16}, 32767),
        ({"BITPIX": 8}, 255),
        ({"BITPIX": 32, "BZERO": 2147483648}, 4294967295),
        ({"BITPIX": -32}, None),
        ({"BITPIX": 16, "BZERO": 32768, "SATURATE": 50000}, 50000),
        ({"BITPIX": 16, "BZERO": 32768, "DATAMAX": 60000}, 60000),
        ({"BITPIX": -32, "SATURATE": 64000.0, "DATAMAX": 65535}, 64000),
    ],
)
def test_saturation(cards, expected):
    assert info(**cards).saturation == expected


def test_tile_compressed_hdu_shape(tmp_path):
    data = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    path = tmp_path / "c.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(path)
    with fits.open(path) as hdul:
        result = classify(header_cards(hdul[1].header), path.name, hdu_index=1)
    assert result.shape == (20, 30) and result.saturation == 65535 and result.hdu_index == 1


def test_raw_compressed_table_header_uses_z_keywords():
    result = info(ZIMAGE=True, BITPIX=8, NAXIS1=8, NAXIS2=20, ZBITPIX=16, ZNAXIS1=30, ZNAXIS2=20, BZERO=32768)
    assert result.shape == (20, 30) and result.saturation == 65535


# --- gain, offset, readout, detector -----------------------------------------------------


@pytest.mark.parametrize(
    "cards, setting, egain",
    [
        ({"GAIN": 139}, 139, None),  # N.I.N.A./ASIAIR setting
        ({"GAIN": 0}, 0, None),
        ({"GAIN": "120"}, 120, None),
        ({"GAIN": 1.4}, None, 1.4),  # CCD e-/ADU
        ({"GAIN": (2.0, "e-/ADU")}, None, 2.0),  # whole, but the comment says e-/ADU
        ({"GAIN": (1.9, "e-/ADU")}, None, 1.9),
        ({"GAIN": (2, "electrons per ADU")}, None, 2.0),
        ({"GAIN": 100, "EGAIN": 0.8}, 100, 0.8),  # both written by a CMOS program
        ({"GAIN": 1.4, "EGAIN": 1.2}, None, 1.2),  # explicit EGAIN wins
        ({"CAM-GAIN": 100, "EGAIN": 1.14}, 100, 1.14),  # Huntsman/POCS
        ({"GAIN": -5}, None, None),
        ({"GAIN": 35.5}, None, None),  # neither a setting nor e-/ADU
        ({"GAIN": "high"}, None, None),
        ({}, None, None),
    ],
)
def test_gain_setting_versus_egain(cards, setting, egain):
    result = classify(header(**cards), "x.fits")
    assert result.gain_setting == setting
    assert result.egain == (pytest.approx(egain) if egain is not None else None)


@pytest.mark.parametrize("key", ["OFFSET", "BLKLEVEL"])
def test_offset_keywords(key):
    assert classify(header(**{key: 30}), "x.fits").offset == 30


@pytest.mark.parametrize("key", ["READOUTM", "READMODE", "READOUT"])
def test_readout_mode_keywords(key):
    assert classify(header(**{key: "High Gain  "}), "x.fits").readout_mode == "High Gain"


@pytest.mark.parametrize("key", ["RDNOISE", "READNOIS", "RON"])
def test_read_noise_keywords(key):
    assert classify(header(**{key: "3,2"}), "x.fits").rdnoise == pytest.approx(3.2)


def test_names_are_stripped_and_blank_is_none():
    result = info(INSTRUME="  ZWO ASI2600MM Pro ", TELESCOP="        ", OBJECT=" M 31  ")
    assert (result.instrument, result.telescope, result.object) == ("ZWO ASI2600MM Pro", None, "M 31")


def test_sections_are_carried_through():
    result = info(BIASSEC="[   4:  13,   1: 520]", TRIMSEC="[17:528,1:520]")
    assert result.biassec == "[   4:  13,   1: 520]" and result.trimsec == "[17:528,1:520]"


# --- observation time --------------------------------------------------------------------


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "cards, expected",
    [
        ({"DATE-OBS": "2024-03-01T22:15:30"}, utc(2024, 3, 1, 22, 15, 30)),  # no zone: UTC
        ({"DATE-OBS": "2024-03-01T22:15:30Z"}, utc(2024, 3, 1, 22, 15, 30)),
        ({"DATE-OBS": "2024-03-01 22:15:30"}, utc(2024, 3, 1, 22, 15, 30)),
        ({"DATE-OBS": "2024-03-01T22:15:30.25"}, utc(2024, 3, 1, 22, 15, 30, 250000)),
        ({"DATE-OBS": "2024-03-01T22:15:30.1234567"}, utc(2024, 3, 1, 22, 15, 30, 123457)),
        ({"DATE-OBS": "2024-03-01T22:15:30.1234564"}, utc(2024, 3, 1, 22, 15, 30, 123456)),
        ({"DATE-OBS": "2024-03-01T23:59:59.9999996"}, utc(2024, 3, 2, 0, 0, 0)),  # rounding carries
        ({"DATE-OBS": "2024-03-01T22:15:30+02:00"}, utc(2024, 3, 1, 20, 15, 30)),
        ({"DATE-OBS": "2017-12-19T18:33:43.317-0700"}, utc(2017, 12, 20, 1, 33, 43, 317000)),
        ({"DATE-OBS": "2024-03-01T01:00:00+05:30"}, utc(2024, 2, 29, 19, 30, 0)),
        ({"DATE-OBS": "2024-03-01", "TIME-OBS": "22:15:30.5"}, utc(2024, 3, 1, 22, 15, 30, 500000)),
        ({"DATE-OBS": "2013-07-13", "UT": "00:57:33"}, utc(2013, 7, 13, 0, 57, 33)),
        ({"DATE-OBS": "2024-03-01", "UTSTART": "22:15"}, utc(2024, 3, 1, 22, 15, 0)),
        ({"DATE-OBS": "2024-03-01", "UT-OBS": "2024-03-01T22:15:30"}, utc(2024, 3, 1, 22, 15, 30)),
        ({"UT-OBS": "2017-12-20T01:33:43.317-0000"}, utc(2017, 12, 20, 1, 33, 43, 317000)),
        ({"DATE-OBS": "03/12/96", "UT": "02:03:28"}, utc(1996, 12, 3, 2, 3, 28)),  # old dd/mm/yy
        ({"DATE-OBS": "23/08/18", "TIME-OBS": "08:49:30"}, utc(2018, 8, 23, 8, 49, 30)),
        ({"DATE-OBS": "2024-03-01T22:15:30", "TIME-OBS": "01:00:00"}, utc(2024, 3, 1, 22, 15, 30)),
        ({"MJD-OBS": 58107.065}, utc(2017, 12, 20, 1, 33, 36)),
        ({"DATE-OBS": "2024-03-01", "MJD-OBS": 60370.5}, utc(2024, 3, 1, 12, 0, 0)),
        ({"JD": 2460851.7588657406}, utc(2025, 6, 25, 6, 12, 46)),
    ],
)
def test_observation_time_forms(cards, expected):
    result = classify(header(**cards), "x.fits")
    assert result.date_obs.tzinfo is not None
    assert abs(result.date_obs - expected) < timedelta(milliseconds=1)


@pytest.mark.parametrize(
    "cards",
    [
        {},
        {"DATE-OBS": "yesterday"},
        {"DATE-OBS": "2024-13-01T00:00:00"},
        {"DATE-OBS": "2024-02-30"},
        {"DATE-OBS": "2024-03-01T25:00:00"},
        {"DATE-OBS": "2024-03-01"},  # a date without any time
        {"DATE-OBS": "2024-03-01T10:00:00+99:00"},
        {"MJD-OBS": 0.0},
        {"DATE-OBS": 20240301},
    ],
)
def test_unusable_observation_times_are_none(cards):
    result = classify(header(**cards), "x.fits")
    assert result.date_obs is None and result.night is None


# --- night label -------------------------------------------------------------------------


def test_classify_labels_the_night_in_the_site_timezone():
    cards = {"DATE-OBS": "2026-03-29T09:59:00", "IMAGETYP": "LIGHT"}
    assert classify(header(**cards), "x.fits", timezone="Europe/Berlin").night == "2026-03-28"
    assert classify(header(**cards), "x.fits", timezone="UTC").night == "2026-03-28"
    assert classify(header(**cards), "x.fits", timezone="Asia/Tokyo").night == "2026-03-29"


# --- robustness --------------------------------------------------------------------------

ALL_KEYS = sorted(
    {k for name in dir(dialects) if name.endswith("_KEYS") or name == "TYPE_KEYWORDS" for k in getattr(dialects, name)}
    | {
        k
        for pair in dialects.BINNING_PAIRS + dialects.BAYER_OFFSET_PAIRS + (dialects.SUBFRAME_ORIGIN_PAIR,)
        for k in pair
    }
    | {
        "GAIN",
        "NAXIS1",
        "NAXIS2",
        "BITPIX",
        "BZERO",
        "BSCALE",
        "INSTRUME",
        "TELESCOP",
        "OBJECT",
        "BIASSEC",
        "TRIMSEC",
        "ZIMAGE",
        "ZNAXIS1",
    }
)
ODD_VALUES = [
    True,
    False,
    "",
    "   ",
    "nan",
    "inf",
    "-",
    "1e400",
    -1,
    0,
    10**18,
    -1e300,
    3.7,
    "2024-99-99T99:99:99",
    "[1:2",
    "x" * 90,
    "12:99:00",
]


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_odd_values_never_raise(value):
    h = fits.Header()
    for key in ALL_KEYS:
        h[key] = value
    result = classify(header_cards(h), "odd.fits")
    assert result.frame_type in FRAME_TYPES
    assert (result.frame_type == "unknown") == (result.reason is not None)
    assert result.xbin >= 1 and result.ybin >= 1


def test_undefined_values_are_absent():
    h = fits.Header([fits.Card("EXPTIME", fits.card.UNDEFINED), fits.Card("IMAGETYP", fits.card.UNDEFINED)])
    result = classify(header_cards(h), "Dark_1.fits")
    assert result.exptime is None and result.frame_type == "dark"


def test_non_standard_cards_as_read_from_a_real_file():
    # lower-case exponent (Stone Edge headers) and a value astropy cannot parse at all
    cards = [
        "IMAGETYP= 'Flat Field'",
        "EXPTIME =        2.500000e+00",
        "CCD-TEMP=        -1.000000e+01",
        "SET-TEMP= -20 C",
    ]
    result = classify(header_cards(fits.Header.fromstring("".join(c.ljust(80) for c in cards))), "f.fits")
    assert (result.frame_type, result.exptime, result.ccd_temp) == ("flat", 2.5, -10.0)
    assert result.set_temp is None


def test_empty_header_is_unknown_with_defaults():
    result = classify(header_cards(fits.Header()), "a.fits")
    assert result.frame_type == "unknown" and result.reason
    assert (result.exptime, result.ccd_temp, result.filter, result.date_obs) == (None, None, None, None)
    assert (result.xbin, result.ybin, result.hdu_index) == (1, 1, 0)
