"""Calibration arithmetic for one light: (raw − bias − dark·t/t_dark) / flat, in float32.

Pure numpy. The uncertainty follows ccdproc's model (read noise + Poisson from the
bias-subtracted signal, in ADU) and propagates the masters' own uncertainty planes the way
astropy's NDData arithmetic does, so `ccdproc.ccd_process` is the reference in tests —
this module exists because that path is 5–8× slower and works in float64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# MASK extension bits written with calibrated and aligned lights. Stacking ignores only
# MASK_BAD pixels: a saturated star core is clipped but real, and must not become a hole.
MASK_BAD = 1  # bad pixel of a master (hot, dead), non-finite, or outside the footprint
MASK_SATURATED = 2  # at the raw saturation level

_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


class SectionError(ValueError):
    """A BIASSEC/TRIMSEC value that cannot be used."""


def fits_section(text: str, shape: tuple[int, int]) -> tuple[slice, slice]:
    """'[x1:x2,y1:y2]' (FITS: 1-based, inclusive, x first) -> numpy (rows, cols) slices."""
    m = _SECTION.match(text.strip()) if text else None
    if not m:
        raise SectionError(f"section {text!r} is not of the form [x1:x2,y1:y2]")
    x1, x2, y1, y2 = map(int, m.groups())
    xs, ys = sorted((x1, x2)), sorted((y1, y2))
    if xs[0] < 1 or ys[0] < 1 or xs[1] > shape[1] or ys[1] > shape[0]:
        raise SectionError(f"section {text!r} lies outside the {shape[1]}x{shape[0]} image")
    return slice(ys[0] - 1, ys[1]), slice(xs[0] - 1, xs[1])


def trim_origin(trimsec: str | None, shape: tuple[int, int]) -> tuple[int, int]:
    """(x, y) of the first kept pixel: a trim starting at an odd column or row shifts a Bayer pattern."""
    if not trimsec:
        return 0, 0
    rows, cols = fits_section(trimsec, shape)
    return cols.start, rows.start


def overscan_model(data: np.ndarray, biassec: str) -> np.ndarray:
    """The overscan level to subtract, broadcastable to `data`: one median per row for a strip
    of columns ((rows, 1)), one per column for a strip of rows ((1, cols)); rows or columns
    outside the strip get the strip's overall median."""
    rows, cols = fits_section(biassec, data.shape)
    region = data[rows, cols].astype(np.float32)
    if region.shape[1] <= region.shape[0]:
        level = np.full((data.shape[0], 1), np.median(region), dtype=np.float32)
        level[rows, 0] = np.median(region, axis=1)
    else:
        level = np.full((1, data.shape[1]), np.median(region), dtype=np.float32)
        level[0, cols] = np.median(region, axis=0)
    return level


def trim(data: np.ndarray | None, trimsec: str | None) -> np.ndarray | None:
    if data is None or not trimsec:
        return data
    rows, cols = fits_section(trimsec, data.shape)
    return np.ascontiguousarray(data[rows, cols])


def overscan_and_trim(data: np.ndarray, biassec: str | None, trimsec: str | None, *, copy: bool = True) -> np.ndarray:
    """float32 data with its overscan level subtracted, trimmed; `copy=False`: a float32 `data`
    is changed in place (and returned, when there is no section to trim)."""
    out = data.astype(np.float32, copy=copy)
    if biassec:
        out -= overscan_model(out, biassec)
    return trim(out, trimsec)


@dataclass(frozen=True)
class Plane:
    """A master's data with its uncertainty (std-dev) and bad-pixel mask, all optional but data.

    Masters are stored full-frame (overscan-subtracted, untrimmed), so one master serves
    lights whatever TRIMSEC they carry; `trimmed` cuts it to the light's section."""

    data: np.ndarray
    uncertainty: np.ndarray | None = None
    mask: np.ndarray | None = None

    # Derived planes are cached: a worker keeps its masters, and every light of the night uses them.
    @cached_property
    def mean(self) -> float:
        """Mean of the finite data: a flat is applied normalised by it (ccdproc's convention)."""
        return float(np.nanmean(self.data))

    @cached_property
    def normalised(self) -> np.ndarray:
        return self.data / np.float32(self.mean)

    @cached_property
    def inverse_square(self) -> np.ndarray:
        """1 / normalised²: how a flat scales a variance."""
        with np.errstate(divide="ignore"):
            return np.float32(1.0) / (self.normalised * self.normalised)

    @cached_property
    def relative_variance(self) -> np.ndarray | None:
        """(σ/value)²: a flat's relative error, what it adds to a flat-fielded pixel."""
        if self.uncertainty is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.uncertainty / self.data) ** 2

    @cached_property
    def variance(self) -> np.ndarray | None:
        return None if self.uncertainty is None else self.uncertainty * self.uncertainty

    @cached_property
    def bad(self) -> np.ndarray | None:
        return None if self.mask is None else self.mask.astype(bool)

    @cached_property
    def _trimmed_planes(self) -> dict[str, Plane]:
        return {}

    def trimmed(self, trimsec: str | None) -> Plane:
        """This plane cut to `trimsec`; kept, so its own cached planes serve every later light."""
        if not trimsec:
            return self
        if trimsec not in self._trimmed_planes:
            self._trimmed_planes[trimsec] = Plane(
                trim(self.data, trimsec), trim(self.uncertainty, trimsec), trim(self.mask, trimsec)
            )
        return self._trimmed_planes[trimsec]


@dataclass(frozen=True)
class Calibrated:
    data: np.ndarray  # float32, ADU
    uncertainty: np.ndarray | None  # float32 std-dev in ADU, when gain and read noise are known
    mask: np.ndarray  # bool: masters' bad pixels, saturated pixels, non-finite results
    saturated: np.ndarray | None = None  # bool: good pixels at the raw saturation level (also in `mask`)

    def bitmask(self) -> np.ndarray:
        """The MASK extension: MASK_BAD | MASK_SATURATED bits, uint8."""
        bits = (self.mask & ~self.saturated if self.saturated is not None else self.mask).astype(np.uint8)
        if self.saturated is not None:
            bits |= self.saturated.astype(np.uint8) * MASK_SATURATED
        return bits

    @property
    def saturation_level(self) -> float | None:
        """The lowest calibrated value of a saturated pixel: where stars start to clip."""
        return None if self.saturated is None else lowest(self.data, self.saturated)


def _subtract_scaled(data: np.ndarray, plane: np.ndarray, scale: np.float32) -> None:
    """``data -= scale * plane``, a block of rows at a time: the same arithmetic without a
    frame-sized product."""
    step = max(1, (1 << 20) // max(1, data.shape[-1]))
    for y in range(0, data.shape[0], step):
        data[y : y + step] -= scale * plane[y : y + step]


def lowest(image: np.ndarray, where: np.ndarray) -> float | None:
    """The lowest value of `image` where `where` holds (None when nowhere): a saturation level."""
    return float(np.nanmin(image[where])) if where.any() else None


def calibrate(
    raw: np.ndarray,
    *,
    bias: Plane | None = None,
    dark: Plane | None = None,
    dark_scale: float = 1.0,
    flat: Plane | None = None,
    gain: float | None = None,
    read_noise: float | None = None,
    saturation: float | None = None,
    biassec: str | None = None,
    trimsec: str | None = None,
    overwrite_raw: bool = False,
) -> Calibrated:
    """Calibrate one light. `raw` in ADU as read; masters full-frame like the raw (trimmed here).
    `overwrite_raw`: a float32 `raw` the caller needs no more becomes the calibrated data, rather
    than a copy of it (a frame's worth of memory less at a light's peak)."""
    saturated = trim(raw >= saturation, trimsec) if saturation is not None else None
    data = overscan_and_trim(raw, biassec, trimsec, copy=not overwrite_raw)
    bias, dark, flat = (p.trimmed(trimsec) if p is not None else None for p in (bias, dark, flat))
    with np.errstate(invalid="ignore", divide="ignore"):
        if bias is not None:
            data -= bias.data
        if dark is not None:
            _subtract_scaled(data, dark.data, np.float32(dark_scale))
        variance = None
        if gain and read_noise is not None:
            # Poisson from the signal with the bias removed (ccdproc's create_deviation on
            # bias-free data), plus read noise, in ADU²; then the masters' own variance.
            signal = data + np.float32(dark_scale) * dark.data if dark is not None else data.copy()
            variance = np.maximum(signal, 0, out=signal)
            variance /= np.float32(gain)
            variance += np.float32((read_noise / gain) ** 2)
            if bias is not None and bias.variance is not None:
                variance += bias.variance
            if dark is not None and dark.variance is not None:
                variance += np.float32(dark_scale**2) * dark.variance
        if flat is not None:
            data /= flat.normalised
            if variance is not None:
                # quadrature of relative errors, (σ_r/r)² = (σ_d/d)² + (σ_n/n)², written without
                # dividing by d: σ_r² = σ_d²/n² + r²(σ_n/n)²
                variance *= flat.inverse_square
                if flat.relative_variance is not None:
                    variance += data * data * flat.relative_variance
    known_bad = np.zeros(data.shape, bool)
    for plane in (bias, dark, flat):
        if plane is not None and plane.bad is not None:
            known_bad |= plane.bad
    mask = known_bad | ~np.isfinite(data)
    if saturated is not None:
        saturated = saturated & ~known_bad  # saturated hot pixels are the dark's business, not stars'
        mask |= saturated
    uncertainty = None if variance is None else np.sqrt(variance).astype(np.float32)
    return Calibrated(data.astype(np.float32, copy=False), uncertainty, mask, saturated)
