"""Plate-solving hints and limits, from a frame's header: pure arithmetic, no I/O.

- Pixel scale ("/px): the header's own scale (PIXSCALE, SECPIX, SCALE), else
  206.265 · pixel size (µm) / focal length (mm). XPIXSZ/YPIXSZ follow MaxIm DL's convention and
  already include binning; PIXSIZE1 (unbinned) is multiplied by XBINNING. A CDELT/CD matrix is
  *not* trusted as a hint: capture programs write placeholder WCS cards (the Seestar writes
  CTYPE1 = 'RA---TAN' with CDELT1 = 1.0, one degree per pixel).
- Position (degrees): RA/DEC as numbers in degrees (or sexagesimal strings), else
  OBJCTRA/OBJCTDEC (sexagesimal hours and degrees, 'hh mm ss.s' / '+dd mm ss').
- Index coverage: astrometry.net index files hold "quads" (four-star skymarks) whose size lies in
  the file's [SCALE_L, SCALE_U]; the solver only uses quads up to the image's diagonal, so a field
  whose diagonal is smaller than the smallest quad of every installed index cannot be solved at
  all (astrometry.net recommends quads of 10-100 % of the image size).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ARCSEC_PER_RADIAN = 206264.806
SCALE_TOLERANCE = 1.25
"""The scale hint's range: [scale / 1.25, scale · 1.25] — wide enough for focal lengths quoted
from the catalogue (a reducer, a focuser's travel) and for binning written or not."""


@dataclass(frozen=True)
class SolveHints:
    scale: float | None  # "/px
    scale_source: str | None  # which cards gave it
    ra: float | None  # degrees (J2000 as written)
    dec: float | None
    position_source: str | None


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        v = float(str(value).strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def sexagesimal(text) -> float | None:
    """'12 50 53.1', '12:50:53.1', '+41 07 13.6', '-05d23m' -> the value in the text's unit."""
    if text is None:
        return None
    s = str(text).strip()
    if not s:
        return None
    parts = re.findall(r"[-+]?\d+(?:\.\d*)?", s)
    if not parts:
        return None
    sign = -1.0 if s.lstrip().startswith("-") else 1.0
    values = [abs(float(p)) for p in parts[:3]]
    value = sum(v / 60.0**i for i, v in enumerate(values))
    return sign * value


def pixel_scale(header: Mapping) -> tuple[float | None, str | None]:
    """The pixel scale in arcsec/px the header implies, and which cards gave it."""
    for key in ("PIXSCALE", "SECPIX", "SCALE"):
        v = _number(header.get(key))
        if v is not None and 0.01 < v < 3600:
            return v, key
    focal = _number(header.get("FOCALLEN"))
    if focal is None or focal <= 0:
        return None, None
    pixel = _number(header.get("XPIXSZ"))
    source = "FOCALLEN/XPIXSZ"
    if pixel is None:
        unbinned = _number(header.get("PIXSIZE1")) or _number(header.get("PIXSIZE"))
        binning = _number(header.get("XBINNING")) or 1.0
        pixel = unbinned * binning if unbinned else None
        source = "FOCALLEN/PIXSIZE1/XBINNING"
    if pixel is None or pixel <= 0:
        return None, None
    return ARCSEC_PER_RADIAN * pixel * 1e-3 / focal, source


def position(header: Mapping) -> tuple[float | None, float | None, str | None]:
    """(ra, dec) in degrees from RA/DEC or OBJCTRA/OBJCTDEC, and which cards; Nones when absent."""
    ra, dec = header.get("RA"), header.get("DEC")
    if ra is not None and dec is not None:
        r, d = _number(ra), _number(dec)
        if r is None and isinstance(ra, str):  # a sexagesimal RA card is in hours
            h, d2 = sexagesimal(ra), sexagesimal(dec)
            r, d = (h * 15.0 if h is not None else None), d2
        if r is not None and d is not None and 0 <= r < 360 and -90 <= d <= 90:
            return r, d, "RA/DEC"
    h, d = sexagesimal(header.get("OBJCTRA")), sexagesimal(header.get("OBJCTDEC"))
    if h is not None and d is not None and 0 <= h < 24 and -90 <= d <= 90:
        return h * 15.0, d, "OBJCTRA/OBJCTDEC"
    return None, None, None


def radec(text: str) -> tuple[float, float] | None:
    """A target's "RA Dec" (J2000) in degrees: sexagesimal hours and degrees ("02:04:10.26 +46:41:16.3",
    "02 04 10.26 +46 41 16.3") or two decimal numbers in degrees ("31.04275 46.68786"); None when
    it is neither, or out of range."""
    parts = str(text).replace(",", " ").split()
    if len(parts) == 2 and all(_number(p) is not None for p in parts):
        ra, dec = _number(parts[0]), _number(parts[1])
    elif len(parts) in (2, 6) and all(re.fullmatch(r"[-+]?[\d:.]+", p) for p in parts):
        half = len(parts) // 2
        hours, dec = sexagesimal(" ".join(parts[:half])), sexagesimal(" ".join(parts[half:]))
        ra = None if hours is None else hours * 15.0
    else:
        return None
    if ra is None or dec is None or not (0 <= ra < 360 and -90 <= dec <= 90):
        return None
    return ra, dec


def solve_hints(header: Mapping) -> SolveHints:
    scale, scale_source = pixel_scale(header)
    ra, dec, position_source = position(header)
    return SolveHints(scale, scale_source, ra, dec, position_source)


def scale_range(scale: float, tolerance: float = SCALE_TOLERANCE) -> tuple[float, float]:
    return scale / tolerance, scale * tolerance


def field_arcmin(width: int, height: int, scale: float) -> tuple[float, float, float]:
    """(width, height, diagonal) of the field in arcminutes."""
    w, h = width * scale / 60.0, height * scale / 60.0
    return w, h, math.hypot(w, h)


def too_narrow(width: int, height: int, scale: float, quad_ranges: Iterable[tuple[float, float]]) -> str | None:
    """Why no installed index can solve this field (None when one can). `quad_ranges`: each index
    file's (SCALE_L, SCALE_U) quad sizes in arcminutes. With the scale hint's tolerance: a field
    that might be up to 25 % larger is still tried."""
    ranges = list(quad_ranges)
    if not ranges:
        return "no astrometry.net index files installed"
    w, h, diagonal = field_arcmin(width, height, scale)
    smallest = min(lo for lo, _ in ranges)
    if diagonal * SCALE_TOLERANCE < smallest:
        return (
            f"field too narrow for the installed index files: {w:.1f}'x{h:.1f}' "
            f"(diagonal {diagonal:.1f}') at {scale:.2f}\"/px, smallest index quads {smallest:.1f}'"
        )
    return None


def solve_args(hints: SolveHints, *, radius_deg: float) -> list[str]:
    """solve-field's hint options for `hints` (scale and position; none when unknown)."""
    args: list[str] = []
    if hints.scale is not None:
        lo, hi = scale_range(hints.scale)
        args += ["--scale-units", "arcsecperpix", "--scale-low", f"{lo:.4f}", "--scale-high", f"{hi:.4f}"]
    if hints.ra is not None and hints.dec is not None:
        args += ["--ra", f"{hints.ra:.6f}", "--dec", f"{hints.dec:.6f}", "--radius", f"{radius_deg:.3f}"]
    return args
