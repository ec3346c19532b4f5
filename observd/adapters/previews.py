"""PNG previews and thumbnails of stacks: what the observer looks at every morning.

The picture must show faint nebulosity *and* resolved star cores at once. A plain zscale
display clips every star to a white disc, so the zscale limits are used differently: the
lower limit is the black point, the white point is the brightest cores (`CORE_PERCENTILE`),
and the zscale range sets the asinh softening (`SOFTENING`): levels stay linear over the sky
noise, where faint nebulosity lives, and turn logarithmic above it, so stellar profiles are
compressed instead of clipped. The sky ends up dark grey (about 0.1); pixels outside the
aligned footprint (NaN) are black, so the footprint edge stays visible.

Orientation follows DS9 and Siril: FITS row 0 is the bottom of the picture. Large images are
shrunk by an integer block average, which keeps faint diffuse light and star fluxes that
nearest-neighbour sampling would alias away. Files are written atomically (`fitsio.write_with`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.visualization import AsinhStretch, ZScaleInterval
from PIL import Image, ImageDraw, ImageFont

from observd.adapters.fits_files import write_with
from observd.core.colour import star_gains

__all__ = ["block_average", "stretch", "write_pictures", "write_preview", "write_thumbnail"]

SOFTENING = 0.25  # asinh `a` as a fraction of the zscale range (a few sky sigma)
CORE_PERCENTILE = 99.995  # white point; the few pixels above it (hot pixels, cosmics) may clip
LABEL_DIMMING = 0.35  # the label's box keeps this fraction of the image brightness under it
_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu ships with matplotlib


def display_levels(values: np.ndarray) -> tuple[float, float, float]:
    """(black point, white point, asinh softening as a fraction of the range) of finite values."""
    low, zhigh = ZScaleInterval().get_limits(values)
    high = max(float(np.percentile(values, CORE_PERCENTILE)), zhigh)
    softening = max(SOFTENING * (zhigh - low) / (high - low), 1e-6) if high > low else 1.0
    return float(low), float(high), softening  # AsinhStretch needs a softening > 0


def stretch(data: np.ndarray) -> np.ndarray:
    """Map an image to display levels in [0, 1] (float32); NaN and inf become 0 (black)."""
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    out = np.zeros(data.shape, dtype=np.float32)
    if not finite.any():
        return out
    values = data[finite]
    low, high, softening = display_levels(values)
    if high <= low:  # a flat image has no contrast to show
        return out
    out[finite] = AsinhStretch(a=softening)((values - low) / (high - low), clip=True)
    return out


def colour_stretch(rgb: np.ndarray, gains: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Map a linear (3, rows, cols) image to display levels in [0, 1], colour kept.

    Each channel's sky is brought to zero (a sigma-clipped median), the channels are multiplied
    by the white-balance `gains`, and then ONE stretch is applied: the asinh stretch of the
    luminance (the mean of the channels), each channel scaled by the same factor as the
    luminance at that pixel (Lupton et al. 2004). The sky thus comes out the same grey in every
    channel, and a star keeps its colour up to the white point; stretching each channel on its
    own would equalise their histograms and turn every star green. NaN becomes black."""
    rgb = np.asarray(rgb, dtype=np.float32)
    finite = np.isfinite(rgb).all(axis=0)
    out = np.zeros(rgb.shape, dtype=np.float32)
    if not finite.any():
        return out
    balanced = np.stack([(rgb[k] - sky_level(rgb[k][finite])) * np.float32(gains[k]) for k in range(3)])
    lum = balanced.mean(axis=0)
    low, high, softening = display_levels(lum[finite])
    if high <= low:
        return out
    shifted = np.clip((balanced - np.float32(low)) / np.float32(high - low), 0, None)
    intensity = shifted.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(intensity > 0, AsinhStretch(a=softening)(intensity, clip=False) / intensity, 0)
    out = shifted * factor
    out /= np.maximum(out.max(axis=0), 1.0)  # clipped cores turn white-ish, not another hue
    out[:, ~finite] = 0
    return out


def sky_level(values: np.ndarray) -> float:
    """The sky of an image's finite values: sigma-clipped median of a sample."""
    sample = values[:: max(1, values.size // 200_000)]
    return float(sigma_clipped_stats(sample, sigma=3.0, maxiters=5)[1])


def block_average(data: np.ndarray, max_size: int) -> np.ndarray:
    """Shrink by the smallest integer factor that brings both sides to <= max_size.

    Partial blocks at the right/top edges are averaged over their finite pixels; a block with
    no finite pixel stays NaN, so the footprint edge survives the reduction. Worked through in
    bands of whole blocks of at most `_BAND_BYTES`: the temporaries (a padded copy, a mask, the
    finite values) cost ~10 bytes per pixel of what they cover, and a stack of a 61 MP sensor
    must not need them for the whole frame at once.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    data = np.asarray(data)
    factor = math.ceil(max(data.shape) / max_size)
    if factor <= 1:
        return np.asarray(data, dtype=np.float32)
    rows, cols = (math.ceil(n / factor) for n in data.shape)
    out = np.empty((rows, cols), np.float32)
    step = max(1, _BAND_BYTES // (4 * factor * factor * cols))  # block rows per band
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        band = data[r0 * factor : r1 * factor]
        padded = np.full(((r1 - r0) * factor, cols * factor), np.nan, dtype=np.float32)
        padded[: band.shape[0], : band.shape[1]] = band
        blocks = padded.reshape(r1 - r0, factor, cols, factor)
        finite = np.isfinite(blocks)
        total = np.where(finite, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
        count = finite.sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[r0:r1] = np.where(count > 0, total / count, np.nan)
    return out


_BAND_BYTES = 4 << 20


Gains = Sequence[float] | None
"""White-balance multipliers (R, G, B) of a colour cube's picture; None: the cube's own, measured
on its stars (`observd.core.colour.star_gains`)."""


def write_preview(
    data: np.ndarray,
    path: Path,
    *,
    title: str,
    lines: Sequence[str] = (),
    max_size: int = 1600,
    gains: Gains = None,
) -> Path:
    """Write a labelled PNG of a 2-D image (grey) or a (3, rows, cols) R, G, B cube (colour, see
    `colour_stretch`), e.g. a stack; returns `path`.

    `title` (bold) and `lines` (e.g. filter, N frames, total exposure, night) are drawn in the
    top-left corner on a dimmed box. Size: each side divided by ceil(max side / max_size).
    """
    image = _render(data, max_size, gains)
    _draw_label(image, [title, *lines])
    return _save_png(image, path)


def write_pictures(
    data: np.ndarray, stem: Path, title: str, lines: Sequence[str], gains: Gains = None
) -> tuple[Path, Path]:
    """The labelled preview and the thumbnail of a product, `stem`.png and `stem`_thumb.png."""
    if data.ndim == 3 and gains is None:
        gains = star_gains(data).gains
    preview = write_preview(data, stem.with_name(f"{stem.name}.png"), title=title, lines=lines, gains=gains)
    return preview, write_thumbnail(data, stem.with_name(f"{stem.name}_thumb.png"), gains=gains)


def write_thumbnail(data: np.ndarray, path: Path, *, size: int = 256, gains: Gains = None) -> Path:
    """Write an unlabelled PNG whose longer side is at most `size`; returns `path`."""
    return _save_png(_render(data, size, gains), path)


def _render(data: np.ndarray, max_size: int, gains: Gains = None) -> Image.Image:
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 3:
        small = np.stack([block_average(plane, max_size) for plane in data])
        levels = colour_stretch(small, star_gains(small).gains if gains is None else gains)
        rgb = np.round(np.moveaxis(levels, 0, -1) * 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb[::-1]), mode="RGB")  # row 0 at the bottom
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image or a (3, rows, cols) cube, got shape {data.shape}")
    levels = stretch(block_average(data, max_size))
    grey = np.round(levels * 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(grey[::-1]), mode="L")  # row 0 at the bottom


def _draw_label(image: Image.Image, texts: Sequence[str]) -> None:
    size = max(10, round(min(image.size) / 48))
    margin = max(3, size // 2)
    fonts = [_font("DejaVuSans-Bold.ttf", size)]
    fonts += [_font("DejaVuSans.ttf", size)] * (len(texts) - 1)
    draw = ImageDraw.Draw(image)
    step = round(size * 1.3)
    width = max(draw.textlength(text, font=font) for text, font in zip(texts, fonts))
    box = (0, 0, min(image.width, math.ceil(width) + 2 * margin), min(image.height, step * len(texts) + 2 * margin))
    # Dim rather than blank the corner: the label stays readable and the image stays visible.
    region = image.crop(box)
    image.paste(region.point(lambda v: round(v * LABEL_DIMMING)), box)
    for i, (text, font) in enumerate(zip(texts, fonts)):
        draw.text((margin, margin + i * step), text, fill="white", font=font)


@functools.lru_cache(maxsize=16)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_DIR / name), size)


def _save_png(image: Image.Image, path: Path) -> Path:
    return write_with(Path(path), lambda fh: image.save(fh, format="PNG", optimize=False))
