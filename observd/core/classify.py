"""Header -> FrameInfo: frame type and normalised values, whatever the camera program.

`classify` is pure (no I/O): it reads the header cards the FITS adapter has already turned
into plain values (`HeaderCards`), the file name, the site's rules and time zone. It never
raises on odd header content: a value that cannot be read becomes None, and a frame whose
type cannot be told is 'unknown' with a reason that says what was looked at, so an
observer can fix it with a `[classify]` rule.

Type precedence: configured keywords, then `dialects.TYPE_KEYWORDS` in order; the first
keyword whose value is recognised decides, and disagreeing keywords are named in
`type_source`. A header that names a type observd does not know (e.g. 'Tricolor Image') or
another program's master gives 'unknown' without looking at the file name; the file name
is consulted only when no type keyword is present at all.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from types import MappingProxyType
from typing import TypeVar

from observd.core import dialects as d
from observd.core.bayer import BayerError, stored_pattern
from observd.core.cards import HeaderCards
from observd.core.frames import FRAME_TYPES, FrameInfo
from observd.core.obstime import combine, from_jd, from_mjd, night_of, parse_date_obs, parse_time_of_day

__all__ = ["ClassifyRules", "classify"]

_KINDS = tuple(t for t in FRAME_TYPES if t != "unknown")  # what a rule may name
_T = TypeVar("_T")


def _normalise_type_value(value: object) -> str:
    """'Light Frame', 'LIGHT_FRAME', ' light-frame ' -> 'lightframe' (how type values compare)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return re.sub(r"[\s_\-]+", "", str(value)).lower()


@dataclass(frozen=True)
class ClassifyRules:
    """Site additions to the dialect table (the `[classify]` config section).

    keywords: extra type keywords, tried before the built-in ones (a HIERARCH keyword with
        or without its prefix, as FITS header lookups take it).
    values: extra value -> 'light'|'bias'|'dark'|'flat', compared like built-in values
        (case, spaces, '_' and '-' ignored); they also override the built-in meaning.
    filename_patterns: fnmatch glob on the base name (case-insensitive) -> type, tried
        before the built-in name hints.

    Raises:
        ValueError: a type that is not one of light, bias, dark, flat.
    """

    keywords: tuple[str, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)
    filename_patterns: Mapping[str, str] = field(default_factory=dict)
    bayer: Mapping[str, str] = field(default_factory=dict)  # INSTRUME -> pattern at the sensor's top-left

    def __post_init__(self) -> None:
        object.__setattr__(self, "keywords", tuple(k.strip().upper() for k in self.keywords))
        object.__setattr__(
            self, "values", _kind_table({_normalise_type_value(k): v for k, v in self.values.items()}, "values")
        )
        object.__setattr__(
            self,
            "filename_patterns",
            _kind_table({k.lower(): v for k, v in self.filename_patterns.items()}, "filename_patterns"),
        )

    def __hash__(self) -> int:
        return hash(
            (
                self.keywords,
                tuple(self.values.items()),
                tuple(self.filename_patterns.items()),
                tuple(self.bayer.items()),
            )
        )


def _kind_table(table: dict[str, str], name: str) -> Mapping[str, str]:
    checked = {}
    for key, kind in table.items():
        kind = str(kind).strip().lower()
        if kind not in _KINDS:
            raise ValueError(f"classify {name}: {key!r} -> {kind!r}: expected one of {', '.join(_KINDS)}")
        checked[key] = kind
    return MappingProxyType(checked)


def classify(
    cards: HeaderCards, filename: str, rules: ClassifyRules = ClassifyRules(), timezone: str = "UTC", hdu_index: int = 0
) -> FrameInfo:
    """The normalised view of one raw frame's header.

    Raises:
        zoneinfo.ZoneInfoNotFoundError: `timezone` is not a zone name (a configuration
            error; header content never makes this raise).
    """
    frame_type, type_source, reason = _frame_type(cards, filename, rules)
    naxis1, naxis2, saturation = _shape_and_saturation(cards)
    xbin, ybin = _binning(cards)
    gain_setting, egain = _gain(cards)
    date_obs = _observation_time(cards)
    bayer, bayer_note = _bayer(cards, rules, naxis2)
    return FrameInfo(
        frame_type=frame_type,
        type_source=type_source,
        reason=reason,
        exptime=_exptime(cards),
        ccd_temp=_first(cards, d.CCD_TEMP_KEYS, _celsius),
        set_temp=_first(cards, d.SET_TEMP_KEYS, _celsius),
        filter=_filter(cards),
        xbin=xbin,
        ybin=ybin,
        naxis1=naxis1,
        naxis2=naxis2,
        gain_setting=gain_setting,
        offset=_first(cards, d.OFFSET_KEYS, _number),
        readout_mode=_first(cards, d.READOUT_KEYS, _text),
        egain=egain,
        rdnoise=_first(cards, d.RDNOISE_KEYS, _positive),
        saturation=saturation,
        instrument=_text(cards, "INSTRUME"),
        telescope=_text(cards, "TELESCOP"),
        object=_text(cards, "OBJECT"),
        date_obs=date_obs,
        night=night_of(date_obs, timezone) if date_obs else None,
        biassec=_text(cards, "BIASSEC"),
        trimsec=_text(cards, "TRIMSEC"),
        hdu_index=hdu_index,
        bayer=bayer,
        bayer_note=bayer_note,
    )


# --- colour ------------------------------------------------------------------------------


def _bayer(cards: HeaderCards, rules: ClassifyRules, height: int | None) -> tuple[str | None, str | None]:
    """(stored pattern, None) for a one-shot-colour frame, (None, why) when its pattern cannot be
    used (the frame is then processed as mono), (None, None) for a mono frame.

    A `[classify] bayer` entry for the instrument names the pattern at the sensor's top-left
    and wins over the header (it exists for cameras that write none or a wrong one); the
    header's Bayer offsets, subframe origin and row order still apply."""
    instrument = _text(cards, "INSTRUME")
    configured = rules.bayer.get(instrument) if instrument else None
    named = configured or _first(cards, d.BAYER_KEYS, _text)
    if named is None:
        return None, None
    pair = next((pair for pair in d.BAYER_OFFSET_PAIRS if pair[0] in cards or pair[1] in cards), ("", ""))
    try:
        if height is None:
            raise BayerError("the image has no NAXIS2: the row order cannot be applied")
        xoff, yoff = (_offset(cards, pair[i]) + _offset(cards, d.SUBFRAME_ORIGIN_PAIR[i]) for i in (0, 1))
        pattern = stored_pattern(
            named, height=height, xoff=xoff, yoff=yoff, row_order=_first(cards, d.ROW_ORDER_KEYS, _text)
        )
    except BayerError as exc:
        return None, f"processed as mono: {exc}"
    return pattern, None


def _offset(cards: HeaderCards, key: str) -> int:
    """A Bayer offset or subframe origin: absent is 0; anything but a whole number >= 0 is an error."""
    value = _raw(cards, key) if key else None
    if value is None:
        return 0
    number = _to_float(value)
    if number is None or not math.isfinite(number) or number < 0 or not number.is_integer():
        raise BayerError(f"{key}={value!r} is not a pixel offset")
    return int(number)


# --- frame type --------------------------------------------------------------------------


def _frame_type(cards: HeaderCards, filename: str, rules: ClassifyRules) -> tuple[str, str, str | None]:
    """(frame_type, type_source, reason)."""
    keywords = rules.keywords + tuple(k for k in d.TYPE_KEYWORDS if k not in rules.keywords)
    seen = []  # (evidence, kind or 'master' or None)
    for keyword in keywords:
        value = _raw(cards, _card_keyword(keyword))
        if value is None or str(value).strip() == "":
            continue
        shown = value.strip() if isinstance(value, str) else value
        seen.append((f"{keyword}={shown!r}", _kind_of_value(keyword, value, rules)))
    decided = [(evidence, kind) for evidence, kind in seen if kind is not None]
    if decided:
        evidence, kind = decided[0]
        others = [e for e, k in decided[1:] if k != kind]
        source = evidence + (f" (takes precedence over {', '.join(others)})" if others else "")
        if kind == "master":
            return (
                "unknown",
                source,
                f"{evidence} is already a master calibration made by another "
                "program; observd builds its own masters from raw frames",
            )
        return kind, source, None
    if seen:
        shown = ", ".join(evidence for evidence, _ in seen)
        return ("unknown", shown, f"{shown}: not a known frame type (map it with [classify] values)")
    by_name = _kind_from_filename(PurePath(filename).name, rules)
    if isinstance(by_name, tuple):
        return by_name[0], by_name[1], None
    return (
        "unknown",
        "none",
        f"no frame-type keyword ({', '.join(keywords)}) and the file name {PurePath(filename).name!r} {by_name}",
    )


def _card_keyword(keyword: str) -> str:
    """The `HeaderCards` key of a configured keyword: 'HIERARCH ESO DPR TYPE' -> 'ESO DPR TYPE'.

    The rule keeps the name as written, so `type_source` shows what the observer configured.
    """
    return keyword[9:].strip() if len(keyword) > 9 and keyword.startswith("HIERARCH ") else keyword


def _kind_of_value(keyword: str, value: object, rules: ClassifyRules) -> str | None:
    key = _normalise_type_value(value)
    if key in rules.values:
        return rules.values[key]
    if d.MASTER_MARKER in key:
        return "master"
    if key in d.TYPE_VALUES:
        return d.TYPE_VALUES[key]
    code = _to_float(value)
    codes = d.NUMERIC_TYPE_CODES.get(keyword, {})
    return codes.get(int(code)) if code is not None and code.is_integer() else None


def _kind_from_filename(name: str, rules: ClassifyRules) -> tuple[str, str] | str:
    """(kind, source), or why nothing matched (to finish the 'unknown' reason)."""
    lower = name.lower()
    for pattern, kind in rules.filename_patterns.items():
        if fnmatch.fnmatchcase(lower, pattern):
            return kind, f"file name {name!r} matches configured pattern {pattern!r}"
    for prefix, kind in d.FILENAME_PREFIXES:
        if lower.startswith(prefix):
            return kind, f"file name prefix {name[: len(prefix)]!r}"
    words = [w for w in re.findall(r"[a-z]+", lower) if w in d.FILENAME_WORDS]
    kinds = {d.FILENAME_WORDS[w] for w in words}
    if len(kinds) == 1:
        return kinds.pop(), f"file name word {words[0]!r}"
    if kinds:
        return f"is ambiguous (words {', '.join(repr(w) for w in words)})"
    return "matches no pattern"


# --- values ------------------------------------------------------------------------------

_ABSENT = (None, "")


def _raw(cards: HeaderCards, key: str) -> object | None:
    """The card's value, None when absent, undefined or unreadable (see `HeaderCards`)."""
    return cards.get(key, _ABSENT)[0]


def _comment(cards: HeaderCards, key: str) -> str:
    return cards.get(key, _ABSENT)[1]


def _first(cards: HeaderCards, keys: tuple[str, ...], parse: Callable[[HeaderCards, str], _T | None]) -> _T | None:
    """The first key in precedence order whose value parses."""
    for key in keys:
        value = parse(cards, key)
        if value is not None:
            return value
    return None


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$")


def _to_float(value: object) -> float | None:
    """Numbers, and strings like '060.00', '+1.0D+01' or the decimal comma '6,4E-05'."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if "," in text and "." not in text:
            text = text.replace(",", ".")
        if not _NUMBER.match(text):
            return None
        number = float(text.replace("d", "e").replace("D", "e"))
    else:
        return None
    return number if math.isfinite(number) else None


def _number(cards: HeaderCards, key: str) -> float | None:
    return _to_float(_raw(cards, key))


def _positive(cards: HeaderCards, key: str) -> float | None:
    value = _number(cards, key)
    return value if value is not None and value > 0 else None


def _whole(cards: HeaderCards, key: str) -> int | None:
    """A positive whole number (axis lengths, binning)."""
    value = _number(cards, key)
    return int(value) if value is not None and value >= 1 and value.is_integer() else None


def _text(cards: HeaderCards, key: str) -> str | None:
    value = _raw(cards, key)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _exptime(cards: HeaderCards) -> float | None:
    for key in d.EXPTIME_KEYS:
        value = _number(cards, key)
        if value is None or value < 0:
            continue
        if re.search(d.MILLISECOND_COMMENT, _comment(cards, key), re.IGNORECASE):
            value /= 1000.0
        return value
    return None


def _celsius(cards: HeaderCards, key: str) -> float | None:
    """Temperature in deg C; Kelvin when the comment says so or the value is above KELVIN_ABOVE.

    A Kelvin value <= 0 is a 'no data' placeholder (MicroObservatory writes -1), and
    anything below absolute zero is one too.
    """
    value = _number(cards, key)
    if value is None:
        return None
    comment = _comment(cards, key)
    kelvin = (
        value > d.KELVIN_ABOVE
        or re.search(d.KELVIN_COMMENT, comment, re.IGNORECASE)
        or re.search(d.KELVIN_UNIT_COMMENT, comment)
    )
    if kelvin:
        return round(value - 273.15, 6) if value > 0 else None
    return value if value >= -273.15 else None


def _filter(cards: HeaderCards) -> str | None:
    """Filter name, case kept; 'None', 'Empty', 'Open'... mean no filter (None)."""
    summary = _first(cards, d.FILTER_KEYS, _filter_name)
    if summary is not None:
        return summary
    wheels = [n for n in (_filter_name(cards, key) for key in d.WHEEL_FILTER_KEYS) if n is not None]
    return "+".join(wheels) or None


def _filter_name(cards: HeaderCards, key: str) -> str | None:
    text = _text(cards, key)
    return None if text is None or text.lower() in d.NO_FILTER_VALUES else text


def _binning(cards: HeaderCards) -> tuple[int, int]:
    for xkey, ykey in d.BINNING_PAIRS:
        x, y = _whole(cards, xkey), _whole(cards, ykey)
        if x or y:
            return (x or y, y or x)  # only one axis given: square binning
    for key in d.BINNING_COMBINED_KEYS:
        parts = re.split(r"\s*[x×,\s]\s*", _text(cards, key) or "", flags=re.IGNORECASE)
        factors = [_to_float(p) for p in parts if p]
        if 1 <= len(factors) <= 2 and all(f is not None and f >= 1 and f.is_integer() for f in factors):
            return (int(factors[0]), int(factors[-1]))
    return (1, 1)


def _shape_and_saturation(cards: HeaderCards) -> tuple[int | None, int | None, float | None]:
    """(naxis1, naxis2, saturation); tile-compressed HDUs keep the image's in Z* keywords."""
    prefix = "Z" if _raw(cards, "ZIMAGE") is True else ""
    naxis1, naxis2 = _whole(cards, prefix + "NAXIS1"), _whole(cards, prefix + "NAXIS2")
    saturation = _first(cards, d.SATURATION_KEYS, _positive)
    if saturation is None:
        saturation = _integer_full_scale(
            _number(cards, prefix + "BITPIX"), _number(cards, "BZERO") or 0.0, _number(cards, "BSCALE") or 1.0
        )
    return naxis1, naxis2, saturation


def _integer_full_scale(bitpix: float | None, bzero: float, bscale: float) -> float | None:
    """Largest physical value an integer BITPIX can hold (BITPIX 16 + BZERO 32768 -> 65535).

    None for floating-point data, where the header alone cannot tell.
    """
    if bitpix not in (8.0, 16.0, 32.0, 64.0):
        return None
    stored_max = 255 if bitpix == 8 else 2 ** (int(bitpix) - 1) - 1
    return bzero + bscale * stored_max


def _gain(cards: HeaderCards) -> tuple[float | None, float | None]:
    """(gain_setting, egain).

    EGAIN is e-/ADU; CAM-GAIN/GAINRAW/LOG-GAIN are settings. GAIN is read as e-/ADU when its
    comment says so ('e-/ADU', 'electrons per ADU'), else as a setting when it is a whole
    number >= 0 (what N.I.N.A., ASIAIR, SharpCap write: 0, 100, 139), else as e-/ADU when it
    is a fraction in (0, EGAIN_MAX] (CCD-era 1.4, 2.6). Explicit keywords win over GAIN.
    """
    egain = _first(cards, d.EGAIN_KEYS, _positive)
    setting = _first(cards, d.GAIN_SETTING_KEYS, lambda c, k: _nonnegative(_number(c, k)))
    gain = _number(cards, d.GAIN_KEY)
    if gain is None:
        return setting, egain
    if re.search(d.ELECTRONS_PER_ADU_COMMENT, _comment(cards, d.GAIN_KEY), re.IGNORECASE):
        return setting, egain if egain is not None else (gain if gain > 0 else None)
    if gain >= 0 and gain.is_integer():
        return (setting if setting is not None else gain), egain
    if 0 < gain <= d.EGAIN_MAX:
        return setting, egain if egain is not None else gain
    return setting, egain


def _nonnegative(value: float | None) -> float | None:
    return value if value is not None and value >= 0 else None


def _observation_time(cards: HeaderCards) -> datetime | None:
    """Start of exposure in UTC: DATE-OBS, else its date + TIME-OBS/UT..., else MJD-OBS, JD."""
    day = None
    for key in d.DATE_KEYS:
        parsed = parse_date_obs(_text(cards, key))
        if isinstance(parsed, datetime):
            return parsed
        day = day or parsed
    for key in d.TIME_KEYS:
        text = _text(cards, key)
        parsed = parse_date_obs(text)
        if isinstance(parsed, datetime):
            return parsed
        time_of_day = parse_time_of_day(text)
        if day is not None and time_of_day is not None:
            return combine(day, time_of_day)
    for key in d.MJD_KEYS:
        if (when := from_mjd(_number(cards, key))) is not None:
            return when
    for key in d.JD_KEYS:
        if (when := from_jd(_number(cards, key))) is not None:
            return when
    return None
