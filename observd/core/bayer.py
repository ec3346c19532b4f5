"""One-shot-colour (Bayer, CFA) frames: which colour each stored pixel saw, and mosaic -> RGB.

The convention (the one Siril, N.I.N.A., INDI and ASCOM share): `BAYERPAT` names the colour
sites as the sensor reads out, from its top-left pixel: first letter at (row 0, column 0),
second at (0, 1), third at (1, 0), fourth at (1, 1). `XBAYROFF`/`YBAYROFF` and a subframe's
origin (`XORGSUBF`/`YORGSUBF`) shift where that grid starts: sensor pixel (x, y), y counted from
the top, has the colour ``P[(y + yoff) % 2][(x + xoff) % 2]``. `ROWORDER = 'TOP-DOWN'` means the
file stores the top row first; `'BOTTOM-UP'` (the FITS convention) the bottom row first. A file
without ROWORDER is taken as top-down: camera drivers write that way, and real Seestar S50
files (BAYERPAT 'GRBG', no ROWORDER) have their green sites at stored [0, 0] and [1, 1].

observd keeps pixels in stored order (numpy row 0 = the file's first row) and folds all of
this into one *stored pattern*: the colours at stored [0, 0], [0, 1], [1, 0], [1, 1]. A trim
that starts at an odd row or column shifts it again (`shifted`).

Demosaicing (`[calibrate] debayer`, measured in benchmarks/bench_debayer.py): Malvar-He-Cutler
(`malvar2004`, the default), a fast float implementation checked against colour-demosaicing's;
`bilinear`, likewise; OpenCV's edge-aware conversion on a scaled 16-bit copy (`opencv_ea`);
colour-demosaicing's Menon (2007) in float (`menon2007`). Stars are a few pixels wide, so the
choice shows in their colour: bilinear and OpenCV's interpolations blur red and blue more than
green, which turns every star core green and its wings magenta; Malvar's gradient correction
and Menon's directional filtering keep the three profiles alike, and Malvar is linear (exact
noise propagation) and ~5x faster than Menon. OpenCV's VNG works on 8-bit data only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from observd.core.calibrate import MASK_BAD, MASK_SATURATED, Calibrated

BAYER_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")
CHANNELS = ("R", "G", "B")
DEBAYER_METHODS = ("malvar2004", "bilinear", "opencv_ea", "menon2007")

# OpenCV names a Bayer conversion after the second row's 2nd and 3rd pixels, not the first two
# of the first row: an RGGB mosaic is OpenCV's "BayerBG" (checked in tests against a red scene).
_OPENCV_CODE = {"RGGB": "BG", "GRBG": "GB", "GBRG": "GR", "BGGR": "RG"}

# Bilinear interpolation kernels (as in colour-demosaicing): green is on a quincunx, red and
# blue on a square lattice of pitch 2.
_K_GREEN = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4
_K_RED_BLUE = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32)

# Malvar, He & Cutler (2004): bilinear interpolation corrected by the sampled colour's own
# Laplacian, as 5x5 kernels: green at a red or blue site; red (blue) at a green site whose row
# holds red (blue) sites, or whose column does; red at a blue site and blue at a red one.
_M_GREEN = (
    np.array([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]], np.float32) / 8
)
_M_ROW = (
    np.array(
        [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]], np.float32
    )
    / 8
)
_M_COLUMN = np.ascontiguousarray(_M_ROW.T)
_M_DIAGONAL = (
    np.array(
        [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]], np.float32
    )
    / 8
)


class BayerError(ValueError):
    """A pattern observd cannot demosaic (X-Trans, a quad pattern, a misspelt value)."""


def parse_pattern(value: object) -> str:
    """'rggb ' -> 'RGGB'.

    Raises:
        BayerError: anything but one of BAYER_PATTERNS, with a reason a person can act on.
    """
    text = str(value).strip().upper()
    if text in BAYER_PATTERNS:
        return text
    if len(text) > 4 and set(text) <= set("RGB"):
        hint = "a pattern larger than 2x2 (X-Trans or a quad Bayer sensor)"
    else:
        hint = "not a 2x2 Bayer pattern"
    raise BayerError(f"BAYERPAT {value!r}: {hint}; observd knows {', '.join(BAYER_PATTERNS)}")


def shifted(pattern: str, dx: int, dy: int) -> str:
    """The pattern seen from an origin moved by (dx, dy) pixels (an offset, a trim, a subframe)."""
    grid = [pattern[:2], pattern[2:]]
    return "".join(grid[(r + dy) % 2][(c + dx) % 2] for r in (0, 1) for c in (0, 1))


def stored_pattern(
    bayerpat: str,
    *,
    height: int,
    xoff: int = 0,
    yoff: int = 0,
    row_order: str | None = None,
) -> str:
    """The colours at stored [0, 0], [0, 1], [1, 0], [1, 1] of a frame `height` rows high.

    `xoff`/`yoff` hold the header's Bayer offsets plus any subframe origin. A bottom-up file's
    first stored row is the sensor's row `height - 1`.

    Raises:
        BayerError: an unknown pattern or ROWORDER value.
    """
    top_left = shifted(parse_pattern(bayerpat), xoff, yoff)
    order = (row_order or "TOP-DOWN").strip().upper()
    if order == "TOP-DOWN":
        return top_left
    if order == "BOTTOM-UP":
        return shifted(top_left, 0, height - 1)[:2] + shifted(top_left, 0, height - 2)[:2]
    raise BayerError(f"ROWORDER {row_order!r}: expected TOP-DOWN or BOTTOM-UP")


def sites(pattern: str, colour: str) -> list[tuple[int, int]]:
    """(row, column) phases of `colour` within the 2x2 cell, e.g. sites('RGGB', 'G') -> [(0, 1), (1, 0)]."""
    return [(i // 2, i % 2) for i, c in enumerate(pattern) if c == colour]


def site_levels(image: np.ndarray, step: int = 1) -> np.ndarray:
    """(2, 2) medians of the four Bayer sites (every `step`-th cell of each), for a flat that must
    not tint: its colour sites differ by tens of per cent (lamp or twilight colour, the filters'
    transmission), and normalising them together would put that colour into every light."""
    return np.array([[np.nanmedian(image[dy :: 2 * step, dx :: 2 * step]) for dx in (0, 1)] for dy in (0, 1)])


def divide_sites(image: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """`image` with each site divided by its level of `site_levels`, in place."""
    for dy in (0, 1):
        for dx in (0, 1):
            image[dy::2, dx::2] /= np.float32(levels[dy, dx])
    return image


def repair(data: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Bad pixels (hot, dead, non-finite) replaced, in place, by the mean of their good
    same-colour neighbours (the 8 around them on their site's lattice, 2 pixels away); returns
    the pixels that had no good neighbour (still bad). Same-colour only: a hot red pixel filled
    from its green neighbours would leave a coloured dot after demosaicing."""
    still_bad = np.zeros(data.shape, bool)
    for dy in (0, 1):
        for dx in (0, 1):
            values, flags = data[dy::2, dx::2], bad[dy::2, dx::2]
            if not flags.any():
                continue
            good = (~flags & np.isfinite(values)).astype(np.float32)
            total = cv2.filter2D(np.where(good > 0, values, 0).astype(np.float32), -1, _NEIGHBOURS)
            count = cv2.filter2D(good, -1, _NEIGHBOURS)
            fixable = flags & (count > 0.5)
            values[fixable] = total[fixable] / count[fixable]
            values[flags & ~fixable] = 0.0
            still_bad[dy::2, dx::2] = flags & ~fixable
    return still_bad


def _sparse(image: np.ndarray, pattern: str, colour: str) -> np.ndarray:
    out = np.zeros(image.shape, np.float32)
    for dy, dx in sites(pattern, colour):
        out[dy::2, dx::2] = image[dy::2, dx::2]
    return out


def bilinear(data: np.ndarray, pattern: str) -> np.ndarray:
    """(3, rows, cols) float32 RGB by bilinear interpolation of each colour's sites."""
    return np.stack(
        [cv2.filter2D(_sparse(data, pattern, c), -1, _K_GREEN if c == "G" else _K_RED_BLUE) for c in CHANNELS]
    )


def bilinear_variance(variance: np.ndarray, pattern: str) -> np.ndarray:
    """(3, rows, cols) variance of `bilinear`'s output: a weighted mean's weights, squared."""
    return np.stack(
        [
            cv2.filter2D(_sparse(variance, pattern, c), -1, (_K_GREEN if c == "G" else _K_RED_BLUE) ** 2)
            for c in CHANNELS
        ]
    )


def malvar(data: np.ndarray, pattern: str, *, squared: bool = False) -> np.ndarray:
    """(3, rows, cols) float32 RGB by Malvar-He-Cutler interpolation (checked against
    colour-demosaicing's Malvar2004). It is linear, so `squared=True` turns it into the exact
    propagation of a variance plane (each output is a weighted sum of inputs: var = Σ w² var)."""
    power = 2 if squared else 1
    filtered = {
        name: cv2.filter2D(data, -1, kernel**power)
        for name, kernel in (("G", _M_GREEN), ("row", _M_ROW), ("col", _M_COLUMN), ("diag", _M_DIAGONAL))
    }
    out = np.empty((3, *data.shape), np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            site = pattern[2 * dy + dx]
            row_colour = pattern[2 * dy + 1 - dx]  # the other colour of this row
            cells = (slice(dy, None, 2), slice(dx, None, 2))
            for k, colour in enumerate(CHANNELS):
                if colour == site:
                    out[(k, *cells)] = data[cells]
                elif colour == "G":
                    out[(k, *cells)] = filtered["G"][cells]
                elif site != "G":
                    out[(k, *cells)] = filtered["diag"][cells]
                else:
                    out[(k, *cells)] = filtered["row" if colour == row_colour else "col"][cells]
    return out


def _opencv_ea(data: np.ndarray, pattern: str) -> np.ndarray:
    """OpenCV's edge-aware demosaicing works on 8/16-bit integers: scale to the full 16-bit range
    (a step of at most one ADU for data spanning 0..65535, finer for smaller ranges) and back."""
    finite = data[np.isfinite(data)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = 65535.0 / max(high - low, 1e-6)
    scaled = np.clip(np.round((np.nan_to_num(data, nan=low) - low) * scale), 0, 65535).astype(np.uint16)
    code = getattr(cv2, f"COLOR_Bayer{_OPENCV_CODE[pattern]}2RGB_EA")
    rgb = cv2.cvtColor(scaled, code)
    return np.moveaxis(rgb, -1, 0).astype(np.float32) / np.float32(scale) + np.float32(low)


def _menon2007(data: np.ndarray, pattern: str) -> np.ndarray:
    from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007

    rgb = demosaicing_CFA_Bayer_Menon2007(np.nan_to_num(data).astype(np.float64), pattern)
    return np.moveaxis(rgb, -1, 0).astype(np.float32)


def debayer(data: np.ndarray, pattern: str, method: str = "malvar2004") -> np.ndarray:
    """(3, rows, cols) float32 RGB of a calibrated, repaired mosaic whose stored pattern is `pattern`."""
    pattern = parse_pattern(pattern)
    if method == "malvar2004":
        return malvar(data, pattern)
    if method == "bilinear":
        return bilinear(data, pattern)
    if method == "opencv_ea":
        return _opencv_ea(data, pattern)
    if method == "menon2007":
        return _menon2007(data, pattern)
    raise ValueError(f"debayer method {method!r}: expected one of {', '.join(DEBAYER_METHODS)}")


def spread(mask: np.ndarray) -> np.ndarray:
    """A pixel mask after demosaicing: every output pixel whose interpolation used a flagged one."""
    if not mask.any():
        return mask
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """The image stars are detected, measured and matched on: the mean of the three channels
    (more signal than green alone for stars of every colour)."""
    return (rgb[0] + rgb[1] + rgb[2]) / np.float32(3)


@dataclass(frozen=True)
class Developed:
    """A calibrated mosaic made RGB: the planes, their uncertainty, and one mask for all three."""

    rgb: np.ndarray  # (3, rows, cols) float32
    uncertainty: np.ndarray | None  # (3, rows, cols) float32 std-dev, when the mosaic had one
    bits: np.ndarray  # (rows, cols) uint8 MASK_BAD | MASK_SATURATED


def develop(cal: Calibrated, pattern: str, method: str = "malvar2004") -> Developed:
    """Repair, then demosaic a calibrated mosaic whose stored pattern (after any trim) is `pattern`.

    Bad pixels of the masters are filled from their colour's neighbours first, so they are no
    longer holes; only pixels without a good same-colour neighbour stay MASK_BAD, with every
    pixel their interpolation reached (`spread`). Saturated sites mark their neighbourhood
    saturated. Changes `cal.data` in place."""
    bits = cal.bitmask()
    bad = (bits & MASK_BAD) != 0
    data = cal.data
    still_bad = repair(data, bad)
    rgb = debayer(data, pattern, method)
    uncertainty = None
    if cal.uncertainty is not None:
        variance = cal.uncertainty * cal.uncertainty
        repair(variance, bad)
        # exact for the linear methods; for the others, the bilinear estimate of their noise
        spread_variance = malvar(variance, pattern, squared=True) if method == "malvar2004" else None
        uncertainty = np.sqrt(spread_variance if spread_variance is not None else bilinear_variance(variance, pattern))
    saturated = spread((bits & MASK_SATURATED) != 0)
    still_bad = spread(still_bad)
    out_bits = still_bad.astype(np.uint8) * MASK_BAD | (saturated & ~still_bad).astype(np.uint8) * MASK_SATURATED
    return Developed(rgb, uncertainty, out_bits)
