"""The header dialect table: which keywords and values camera programs use for what.

Plain data, read by `observd.core.classify`; extending observd to a new camera program should
mean adding a line here (or, for a site, a `[classify]` entry in the config), not code.
Every keyword tuple is in precedence order: the first keyword present with a usable value
wins.
"""

from __future__ import annotations

from types import MappingProxyType

# --- frame type --------------------------------------------------------------------------

# IMAGETYP first: it is the FITS-dictionary keyword and what MaxIm DL, N.I.N.A., SGP, ASIAIR,
# Ekos and ACP write. FRAME (old INDI) can be left stale by clients that rewrite only
# IMAGETYP (see pchev/ccdciel PR #16), so it ranks below IMAGETYP. OBSTYPE is the IRAF/NOAO
# keyword. PICTTYPE carries TheSkyX/CCDSoft numeric codes.
TYPE_KEYWORDS = ("IMAGETYP", "OBSTYPE", "FRAMETYP", "FRAME", "PICTTYPE")

# Values are compared after `normalise_type_value` (lower case, no spaces, '_' or '-'), so
# 'Light Frame', 'LIGHT_FRAME' and 'light-frame' are one entry.
TYPE_VALUES = MappingProxyType(
    {
        "light": "light",
        "lightframe": "light",
        "lights": "light",
        "object": "light",
        "science": "light",
        "sci": "light",
        "bias": "bias",
        "biasframe": "bias",
        "zero": "bias",
        "offset": "bias",
        "dark": "dark",
        "darkframe": "dark",
        "darkcurrent": "dark",
        # A dark taken at the flats' exposure ("dark flat", "flat dark") is a dark for observd.
        "darkflat": "dark",
        "flatdark": "dark",
        "flat": "flat",
        "flatframe": "flat",
        "flatfield": "flat",
        "skyflat": "flat",
        "domeflat": "flat",
        "twilight": "flat",
        "twilightflat": "flat",
        "twiflat": "flat",
        "screenflat": "flat",
        "lampflat": "flat",
    }
)

# A value containing this word marks a product of another program's calibration ('Master
# Dark' from MaxIm DL, Mira, PixInsight...). It is not raw data: averaging it with raw frames
# would give it the weight of a single frame and break the noise model, so it is 'unknown'.
MASTER_MARKER = "master"

# TheSkyX/CCDSoft PICTTYPE: 0 unknown, 1 light, 2 bias, 3 dark, 4 flat.
NUMERIC_TYPE_CODES = MappingProxyType(
    {
        "PICTTYPE": MappingProxyType({1: "light", 2: "bias", 3: "dark", 4: "flat"}),
    }
)

# --- file-name fallbacks (used only when the header names no type) -------------------------

# ASIAIR, SharpCap, ASIImg, N.I.N.A. templates: '<Type>_...' at the start of the name,
# compared case-insensitively; longest first so 'DarkFlat_' is not read as 'Dark_'.
FILENAME_PREFIXES = (
    ("darkflat_", "dark"),
    ("flatdark_", "dark"),
    ("light_", "light"),
    ("bias_", "bias"),
    ("dark_", "dark"),
    ("flat_", "flat"),
)

# Whole alphabetic words of the file name (digits and punctuation separate words), so
# 'bias001.fit' and 'M42-dark-300s.fits' match and 'darkroom.fits' or 'calib-001-bi.fit' do
# not. Short codes such as MaxIm's '-bi'/'-d' are left out: '-d' is as likely a filter.
FILENAME_WORDS = MappingProxyType(
    {
        "bias": "bias",
        "biases": "bias",
        "zero": "bias",
        "zeros": "bias",
        "dark": "dark",
        "darks": "dark",
        "darkflat": "dark",
        "flatdark": "dark",
        "flat": "flat",
        "flats": "flat",
        "flatfield": "flat",
        "skyflat": "flat",
        "domeflat": "flat",
    }
)

# --- exposure ----------------------------------------------------------------------------

EXPTIME_KEYS = ("EXPTIME", "EXPOSURE", "EXP_TIME", "EXPTIM", "ITIME")
# A comment naming milliseconds (real example: "EXPTIME = 90000 / exposure time in ms").
MILLISECOND_COMMENT = r"\b(ms|msec|millisec\w*)\b"

# --- temperatures (deg C, Kelvin recognised) ---------------------------------------------

# DEWTEM1/DEWTEMP last: some cameras (the Stone Edge STX-6303 set) report only the dewar
# temperature, which then is the best sensor temperature there is.
CCD_TEMP_KEYS = (
    "CCD-TEMP",
    "CCD_TEMP",
    "CCDTEMP",
    "DET-TEMP",
    "DETTEMP",
    "SENSTEMP",
    "TEMPERAT",
    "CAMTEMP",
    "DEWTEM1",
    "DEWTEMP",
)
SET_TEMP_KEYS = ("SET-TEMP", "SETTEMP", "SET_TEMP", "CCD-SET", "CCDSETP", "SETPOINT")
# No sensor runs above 100 deg C, and deep-cooled CCDs run at 120-180 K: a larger value is
# Kelvin. (Below it, only a comment saying so makes a value Kelvin.)
KELVIN_ABOVE = 100.0
KELVIN_COMMENT = r"\bkelvin\b"
KELVIN_UNIT_COMMENT = r"\[K\]|\(K\)|\b(?i:deg(?:rees?)?\.?)\s*K\b|\b(?i:in)\s+K\b"  # capital K only

# --- filter ------------------------------------------------------------------------------

FILTER_KEYS = ("FILTER", "FILTNAME", "FILTNAM")
# Two- or three-wheel instruments: the non-empty positions are joined with '+'.
WHEEL_FILTER_KEYS = ("FILTER1", "FILTER2", "FILTER3")
# Values meaning "nothing in the beam". 'Open' is included (an open wheel slot is the same
# light path as no wheel); 'Clear' and 'L' are real glass and stay filter names.
NO_FILTER_VALUES = frozenset({"", "none", "empty", "open", "nofilter", "no filter", "n/a", "na", "-", "null"})

# --- binning -----------------------------------------------------------------------------

BINNING_PAIRS = (("XBINNING", "YBINNING"), ("XBIN", "YBIN"), ("BINX", "BINY"), ("CCDXBIN", "CCDYBIN"), ("HBIN", "VBIN"))
BINNING_COMBINED_KEYS = ("CCDSUM", "BINNING")  # '2 2', '2x2', '2'

# --- camera settings and detector properties ---------------------------------------------

# GAIN is ambiguous: CMOS programs (N.I.N.A., ASIAIR, SharpCap, MaxIm with CMOS) write the
# gain *setting* (an integer such as 0, 100, 139), CCD-era observatories write e-/ADU (1.9).
# See `classify._gain` for the rule; these keywords are unambiguous.
GAIN_KEY = "GAIN"
GAIN_SETTING_KEYS = ("CAM-GAIN", "GAINRAW", "LOG-GAIN")
EGAIN_KEYS = ("EGAIN",)
# A GAIN that is not a whole number and at most this is read as e-/ADU.
EGAIN_MAX = 20.0
ELECTRONS_PER_ADU_COMMENT = r"\be-?\s*/\s*(adu|dn)\b|electrons?\s*(/|per)\s*(adu|dn)|photoelectrons"

OFFSET_KEYS = ("OFFSET", "BLKLEVEL", "BLACKLEV")
READOUT_KEYS = ("READOUTM", "READMODE", "READOUT")
RDNOISE_KEYS = ("RDNOISE", "READNOIS", "RON", "RDNOIS")
SATURATION_KEYS = ("SATURATE", "DATAMAX", "SATLEVEL")

# --- observation time --------------------------------------------------------------------

DATE_KEYS = ("DATE-OBS", "DATE_OBS", "DATEOBS")
# Time of day (combined with a date-only DATE-OBS) or, as MicroObservatory writes UT-OBS,
# a full date-time.
TIME_KEYS = ("TIME-OBS", "UT", "UT-OBS", "UTSTART", "UTC-OBS", "UT-START")
MJD_KEYS = ("MJD-OBS", "MJD_OBS")
JD_KEYS = ("JD-OBS", "JD")

# One-shot-colour cameras: the Bayer pattern and where it starts (see observd.core.bayer).
BAYER_KEYS = ("BAYERPAT", "CFAPAT", "COLORTYP", "BAYERPATN")
BAYER_OFFSET_PAIRS = (("XBAYROFF", "YBAYROFF"), ("BAYOFFX", "BAYOFFY"))
SUBFRAME_ORIGIN_PAIR = ("XORGSUBF", "YORGSUBF")
ROW_ORDER_KEYS = ("ROWORDER",)
