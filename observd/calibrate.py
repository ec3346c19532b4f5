"""Calibration arithmetic for one light: (raw − bias − dark·t/t_dark) / flat, in float32.

Pure numpy. The uncertainty follows ccdproc's model (read noise + Poisson from the
bias-subtracted signal, in ADU) and propagates the masters' own uncertainty planes the way
astropy's NDData arithmetic does, so `ccdproc.ccd_process` is the reference in tests —
this module exists because that path is 5–8× slower and works in float64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

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


def subtract_overscan(data: np.ndarray, biassec: str) -> np.ndarray:
    """Subtract the overscan level: per row for a column strip, per column for a row strip (median)."""
    rows, cols = fits_section(biassec, data.shape)
    region = data[rows, cols]
    if region.shape[1] <= region.shape[0]:       # a strip of columns: one level per row
        level = np.median(region, axis=1).astype(np.float32)
        out = data.astype(np.float32, copy=True)
        out[rows] -= level[:, None]
        if rows != slice(0, data.shape[0]):
            out[: rows.start] -= np.median(level)
            out[rows.stop:] -= np.median(level)
        return out
    level = np.median(region, axis=0).astype(np.float32)
    out = data.astype(np.float32, copy=True)
    out[:, cols] -= level[None, :]
    outside = np.ones(data.shape[1], bool)
    outside[cols] = False
    out[:, outside] -= np.median(level)
    return out


def overscan_and_trim(data: np.ndarray, biassec: str | None, trimsec: str | None) -> np.ndarray:
    out = subtract_overscan(data, biassec) if biassec else data.astype(np.float32, copy=False)
    if trimsec:
        rows, cols = fits_section(trimsec, out.shape)
        out = out[rows, cols]
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class Plane:
    """A master's data with its uncertainty (std-dev) and bad-pixel mask, all optional but data."""
    data: np.ndarray
    uncertainty: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class Calibrated:
    data: np.ndarray                      # float32, ADU
    uncertainty: np.ndarray | None        # float32 std-dev in ADU, when gain and read noise are known
    mask: np.ndarray                      # bool: masters' bad pixels, saturated pixels, non-finite results
    saturated: np.ndarray | None = None   # bool: pixels at the raw saturation level (also in `mask`)

    @property
    def saturation_level(self) -> float | None:
        """The lowest calibrated value of a saturated pixel: where stars start to clip."""
        if self.saturated is None or not self.saturated.any():
            return None
        return float(np.nanmin(self.data[self.saturated]))


def calibrate(raw: np.ndarray, *, bias: Plane | None = None, dark: Plane | None = None, dark_scale: float = 1.0,
              flat: Plane | None = None, gain: float | None = None, read_noise: float | None = None,
              saturation: float | None = None, biassec: str | None = None, trimsec: str | None = None
              ) -> Calibrated:
    """Calibrate one light. `raw` in ADU as read; masters already trimmed to the light's output shape."""
    saturated = None
    if saturation is not None:
        saturated = overscan_and_trim((raw >= saturation).astype(np.float32), None, trimsec) > 0
    data = overscan_and_trim(raw, biassec, trimsec)
    with np.errstate(invalid="ignore", divide="ignore"):
        if bias is not None:
            data -= bias.data
        if dark is not None:
            data -= np.float32(dark_scale) * dark.data
        variance = None
        if gain and read_noise is not None:
            # Poisson from the signal with the bias removed (ccdproc's create_deviation on
            # bias-free data), plus read noise, in ADU²; then the masters' own variance.
            signal = data + (np.float32(dark_scale) * dark.data if dark is not None else 0)
            variance = np.maximum(signal, 0) / np.float32(gain) + np.float32((read_noise / gain) ** 2)
            if bias is not None and bias.uncertainty is not None:
                variance += bias.uncertainty ** 2
            if dark is not None and dark.uncertainty is not None:
                variance += (np.float32(dark_scale) * dark.uncertainty) ** 2
        if flat is not None:
            norm = flat.data / np.float32(np.nanmean(flat.data))
            result = data / norm
            if variance is not None:
                # relative errors add in quadrature: (σ/d)² = (σ_d/d)² + (σ_f/f)²
                rel = variance / np.where(data != 0, data, np.nan) ** 2
                if flat.uncertainty is not None:
                    flat_sigma = flat.uncertainty / np.float32(np.nanmean(flat.data))
                    rel = rel + (flat_sigma / norm) ** 2
                variance = np.where(data != 0, rel * result ** 2, variance / norm ** 2)
            data = result
    mask = ~np.isfinite(data)
    for plane in (bias, dark, flat):
        if plane is not None and plane.mask is not None:
            mask |= plane.mask.astype(bool)
    if saturated is not None:
        mask |= saturated
    uncertainty = None if variance is None else np.sqrt(variance).astype(np.float32)
    return Calibrated(data.astype(np.float32, copy=False), uncertainty, mask, saturated)
