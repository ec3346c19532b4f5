"""Image synthesis for the simulated camera: the sensor, the optics and the sky.

Everything here is pure numpy: arrays in, arrays out, randomness only from the
`numpy.random.Generator` the caller passes, so `observd.sim.writer` decides which seeded
stream feeds what and the files come out byte-identical for the same seed.

Units: images are built in electrons (e-) and converted to ADU at readout with the
camera gain (e-/ADU); rates are per second. Coordinates follow numpy: an image is indexed
[row, column] = [y, x], and pixel centres sit on integers (0-based).

Speed matters (a benchmark writes 80 lights of 2048x2048): stars are rendered as small
stamps, all stars at once, and scattered into the frame with one `np.bincount`.

Colour (CFA) sensors: each pixel sees one channel, given by a colour map (int8, R = 0,
G = 1, B = 2; see `observd.sim.mosaic`). Stars are rendered once, each stamp pixel weighted
by the star's flux in the channel of the site it falls on, which is what sampling three
full-resolution channel images at the mosaic's sites gives, at the cost of one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ADU_MAX = 65535  # 16-bit unsigned readout: saturation level in ADU
MOFFAT_BETA = 3.0  # typical seeing-limited wing shape (2.5..4.7 in practice)
PSF_SUBSAMPLE = 3  # 3x3 samples per pixel integrate a FWHM>=2.5 px PSF to <1e-3
DARK_DOUBLING_C = 6.0  # dark current doubles every 6 degC (silicon rule of thumb)
HOT_PIXEL_RATE = (100.0, 3000.0)  # e-/s range of hot pixels at the set point (log-uniform)


@dataclass(frozen=True)
class Sensor:
    """The fixed properties of one camera for a whole night."""

    level: float  # ADU, the electronic offset (what an overscan strip reads)
    bias: np.ndarray  # ADU, `level` + fixed 2-D pattern (float32)
    dark_e: np.ndarray  # e-/s per pixel at `ref_temp`, hot pixels included (float32)
    hot_pixels: np.ndarray  # (n, 2) int array of [x, y] pixel coordinates
    ref_temp: float  # degC at which `dark_e` holds

    def dark_rate(self, temp: float) -> np.ndarray:
        """Dark current map (e-/s) at sensor temperature `temp` (degC)."""
        factor = 2.0 ** ((temp - self.ref_temp) / DARK_DOUBLING_C)
        return (self.dark_e * np.float32(factor)).astype(np.float32)


def make_sensor(
    shape: tuple[int, int],
    *,
    bias_level: float,
    dark_current: float,
    hot_pixel_fraction: float,
    ref_temp: float,
    rng: np.random.Generator,
) -> Sensor:
    """Bias pattern (column structure + gradient + corner glow, a few ADU) and dark map.

    The dark map is lognormal around `dark_current` (pixel-to-pixel spread ~25 %) plus
    hot pixels, so a master dark has the structure a real one has.
    """
    rows, cols = shape
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    columns = rng.normal(0.0, 1.5, cols).astype(np.float32)[None, :]
    gradient = rng.uniform(1.5, 3.0) * x + rng.uniform(-1.5, 1.5) * y
    glow = 4.0 * np.exp(-((x - 1.0) ** 2 + (y + 1.0) ** 2) / 0.08)  # amplifier corner
    bias = (bias_level + columns + gradient + glow).astype(np.float32)

    sigma = 0.25
    dark = dark_current * rng.lognormal(-(sigma**2) / 2, sigma, shape)
    n_hot = int(round(hot_pixel_fraction * rows * cols))
    flat_idx = rng.choice(rows * cols, size=n_hot, replace=False)
    lo, hi = np.log(HOT_PIXEL_RATE)
    dark.flat[flat_idx] = np.exp(rng.uniform(lo, hi, n_hot))
    hy, hx = np.divmod(np.sort(flat_idx), cols)
    hot = np.stack([hx, hy], axis=1).astype(np.int64)
    return Sensor(level=bias_level, bias=bias, dark_e=dark.astype(np.float32), hot_pixels=hot, ref_temp=ref_temp)


@dataclass(frozen=True)
class Optics:
    """What is common to every filter's flat: vignetting centre and dust on the window."""

    vignetting: float  # fractional falloff at the farthest corner
    centre: tuple[float, float]  # (x, y) of the optical axis
    donuts: tuple[tuple[float, float, float, float, float], ...]  # x, y, r_out, r_in/r_out, depth
    prnu: np.ndarray  # pixel response non-uniformity, mean ~1


def make_optics(shape: tuple[int, int], rng: np.random.Generator) -> Optics:
    rows, cols = shape
    centre = (cols / 2 + rng.uniform(-0.05, 0.05) * cols, rows / 2 + rng.uniform(-0.05, 0.05) * rows)
    n_donuts = max(3, int(round(4 * np.sqrt(rows * cols) / 512)))
    donuts = tuple(
        (
            float(rng.uniform(0, cols)),
            float(rng.uniform(0, rows)),
            float(rng.uniform(8, 25)),
            float(rng.uniform(0.4, 0.6)),
            float(rng.uniform(0.02, 0.05)),
        )
        for _ in range(n_donuts)
    )
    prnu = rng.normal(1.0, 0.01, shape).astype(np.float32)
    return Optics(vignetting=float(rng.uniform(0.15, 0.25)), centre=centre, donuts=donuts, prnu=prnu)


def make_flat(shape: tuple[int, int], optics: Optics, rng: np.random.Generator) -> np.ndarray:
    """One filter's flat field, normalised to mean 1 (float32).

    Filters differ a little, as real ones do: vignetting depth (+-2 %), donut depth
    (dust shadows depend on wavelength through the f-ratio cone only weakly) and a small
    extra per-filter PRNU term.
    """
    rows, cols = shape
    cx, cy = optics.centre
    y, x = np.ogrid[:rows, :cols]
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    corner2 = max((cx - a) ** 2 + (cy - b) ** 2 for a in (0, cols - 1) for b in (0, rows - 1))
    falloff = optics.vignetting + rng.uniform(-0.02, 0.02)
    flat = (1.0 - falloff * r2 / corner2).astype(np.float32)
    for dx, dy, r_out, ratio, depth in optics.donuts:
        depth *= rng.uniform(0.85, 1.15)
        x0, x1 = max(0, int(dx - r_out - 3)), min(cols, int(dx + r_out + 4))
        y0, y1 = max(0, int(dy - r_out - 3)), min(rows, int(dy + r_out + 4))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        r = np.hypot(xx - dx, yy - dy)
        edge = 1.5  # soft edges: the shadow of an out-of-focus speck
        ring = _smoothstep((r - ratio * r_out) / edge) * _smoothstep((r_out - r) / edge)
        flat[y0:y1, x0:x1] *= (1.0 - depth * ring).astype(np.float32)
    flat *= optics.prnu * rng.normal(1.0, 0.002, shape).astype(np.float32)
    return (flat / flat.mean(dtype=np.float64)).astype(np.float32)


# Chromatic vignetting of a CFA flat: extra fractional falloff at the farthest corner per
# channel (R, G, B): the optics pass red a little better towards the edge than blue.
CHROMATIC_FALLOFF = (-0.02, 0.0, 0.03)


def colour_flat(flat: np.ndarray, optics: Optics, colours: np.ndarray) -> np.ndarray:
    """A filter's flat (`make_flat`) as a CFA sensor sees it: per channel a slightly different
    vignetting (`CHROMATIC_FALLOFF`), each channel's sites then normalised to mean 1 (float32).

    The tint of the light (lamp, sky, star colours) and the channels' response are *not* in
    here: they scale whole channels and are applied to the light itself.
    """
    rows, cols = flat.shape
    cx, cy = optics.centre
    y, x = np.ogrid[:rows, :cols]
    corner2 = max((cx - a) ** 2 + (cy - b) ** 2 for a in (0, cols - 1) for b in (0, rows - 1))
    radial = ((x - cx) ** 2 + (y - cy) ** 2) / corner2
    extra = np.asarray(CHROMATIC_FALLOFF, np.float64)[colours]
    out = flat * (1.0 - extra * radial)
    sums = np.bincount(colours.ravel(), weights=out.ravel(), minlength=3)
    counts = np.bincount(colours.ravel(), minlength=3)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
    return (out / means[colours]).astype(np.float32)


def star_colours(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) intrinsic R, G, B weights of `n` stars, G = 1.

    A colour index c in [-1, 1] (blue .. red) per star: most near neutral-yellowish
    (normal around 0.1, sigma 0.4), one star in 8 clearly red (c 0.75..1) and one in 8
    clearly blue (c -1..-0.75); R/G = exp(0.8 c), B/G = exp(-0.8 c), i.e. 0.45..2.2.
    """
    c = np.clip(rng.normal(0.1, 0.4, n), -1.0, 1.0)
    k = n // 8
    order = rng.permutation(n)
    c[order[:k]] = rng.uniform(0.75, 1.0, k)
    c[order[k : 2 * k]] = rng.uniform(-1.0, -0.75, k)
    return np.stack([np.exp(0.8 * c), np.ones(n), np.exp(-0.8 * c)], axis=1)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t + 0.5, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def psf_peak_fraction(fwhm: float) -> float:
    """Fraction of a star's flux in its brightest pixel (centred), for flux-range choices."""
    alpha = _moffat_alpha(fwhm)
    return (MOFFAT_BETA - 1) / (np.pi * alpha**2) * 0.85  # 0.85: pixel integration, centred


def _moffat_alpha(fwhm: float) -> float:
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0))


def make_catalog(
    shape: tuple[int, int], n: int, *, f_min: float, f_sat: float, margin: float, rng: np.random.Generator
) -> np.ndarray:
    """Star catalogue in sky-frame pixels: (n, 3) array of x, y, flux (ADU), brightest first.

    Fluxes follow a power law (many faint, few bright: N(>F) ~ F^-0.8) between `f_min`
    and 3 x `f_sat`; at least one star in 75 is forced above `f_sat` so every night has
    saturated stars to exercise the saturation mask. Stars cover the frame plus `margin`
    so drifted frames still have stars up to their edges.
    """
    rows, cols = shape
    x = rng.uniform(-margin, cols - 1 + margin, n)
    y = rng.uniform(-margin, rows - 1 + margin, n)
    u = rng.uniform(0.0, 1.0, n)
    flux = np.minimum(f_min * u ** (-1.0 / 0.8), 3.0 * f_sat)
    n_sat = max(1, n // 75) if n else 0
    flux[:n_sat] = f_sat * rng.uniform(1.2, 3.0, n_sat)
    cat = np.stack([x, y, flux], axis=1)
    return cat[np.argsort(-cat[:, 2], kind="stable")]


def render_stars(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: float,
    trail: tuple[float, float] = (0.0, 0.0),
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """Stars as pixel-integrated Moffat profiles (total `flux` each), float32 image.

    A trailed frame (`trail` = total (dx, dy) motion during the exposure) spreads each
    star over points every ~0.5 px along the segment centred on its position, so the
    centroid stays where the transform puts it.

    A CFA sensor: `colours` is the frame's colour map and `flux` an (n, 3) array of each
    star's R, G, B flux; a pixel gets the star's flux of its own channel (so each channel's
    sites sample that channel's full-resolution image, total flux = the channel's flux).
    """
    rows, cols = shape
    length = float(np.hypot(*trail))
    n_pts = max(1, int(np.ceil(length / 0.5))) if length > 0 else 1
    s = (np.arange(n_pts) + 0.5) / n_pts - 0.5
    px = (x[:, None] + s[None, :] * trail[0]).ravel()
    py = (y[:, None] + s[None, :] * trail[1]).ravel()
    pf = np.repeat(flux / n_pts, n_pts, axis=0)
    radius = int(np.ceil(4.5 * fwhm))
    keep = (px > -radius) & (px < cols - 1 + radius) & (py > -radius) & (py < rows - 1 + radius)
    px, py, pf = px[keep], py[keep], pf[keep]
    if px.size == 0:
        return np.zeros(shape, np.float32)

    ix, iy = np.rint(px).astype(np.int64), np.rint(py).astype(np.int64)
    sub = PSF_SUBSAMPLE if n_pts == 1 else 1  # a trail already integrates along its length
    off = (np.arange((2 * radius + 1) * sub) + 0.5) / sub - radius - 0.5
    dx = off[None, :] - (px - ix)[:, None]  # (n, m) sample minus star centre
    dy = off[None, :] - (py - iy)[:, None]
    alpha = _moffat_alpha(fwhm)
    prof = (1.0 + (dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / alpha**2) ** (-MOFFAT_BETA)
    norm = (MOFFAT_BETA - 1) / (np.pi * alpha**2) / sub**2  # analytic total flux = 1
    size = 2 * radius + 1
    unit = prof.reshape(-1, size, sub, size, sub).sum(axis=(2, 4))

    k = np.arange(-radius, radius + 1)
    yy = iy[:, None, None] + k[None, :, None]
    xx = ix[:, None, None] + k[None, None, :]
    inside = (yy >= 0) & (yy < rows) & (xx >= 0) & (xx < cols)
    idx = (yy * cols + xx)[inside]
    if colours is None:
        weights = (unit * (norm * pf)[:, None, None])[inside]
    else:  # each stamp pixel weighted by the star's flux in the channel of its site
        star = np.broadcast_to(np.arange(len(pf))[:, None, None], inside.shape)[inside]
        channel_flux = (norm * pf).astype(np.float64).ravel()  # (n_points * 3,)
        weights = unit[inside] * channel_flux[3 * star + colours.ravel()[idx]]
    img = np.bincount(idx, weights=weights, minlength=rows * cols)
    return img.reshape(shape).astype(np.float32)


def cosmic_rays(shape: tuple[int, int], n: int, gain: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` cosmic-ray hits of 1-3 adjacent pixels: (pixels (m, 2) as [x, y], values in ADU).

    Sharp (no PSF) and deposited after the optics, so never multiplied by the flat.
    """
    rows, cols = shape
    steps = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)])
    pixels: list[tuple[int, int]] = []
    for _ in range(n):
        x, y = int(rng.integers(0, cols)), int(rng.integers(0, rows))
        length = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        sx, sy = steps[rng.integers(0, len(steps))]
        for i in range(length):
            px, py = x + i * sx, y + i * sy
            if 0 <= px < cols and 0 <= py < rows:
                pixels.append((px, py))
    pix = np.unique(np.array(pixels, dtype=np.int64).reshape(-1, 2), axis=0)
    values = rng.lognormal(np.log(3000.0), 0.6, len(pix)) / gain
    return pix, values


def read_out(
    electrons: np.ndarray,
    sensor: Sensor,
    read_noise_e: float,
    gain: float,
    rng: np.random.Generator,
    extra_adu: tuple[np.ndarray, np.ndarray] | None = None,
    overscan: int = 0,
    prescan: int = 0,
) -> np.ndarray:
    """Photon noise, ADC conversion, bias, read noise, saturation: the uint16 raw image.

    `electrons` is the expected charge (light + dark current); Poisson noise is drawn here.
    `extra_adu` adds cosmic-ray hits (pixels as [x, y], values in ADU). `overscan` appends
    that many columns on the right holding bias level + read noise only (no pattern, no
    charge), as a real serial overscan does; `prescan` puts such columns on the left.
    """
    adu = rng.poisson(electrons).astype(np.float32) / np.float32(gain)
    adu += sensor.bias
    if extra_adu is not None and len(extra_adu[0]):
        pix, values = extra_adu
        adu[pix[:, 1], pix[:, 0]] += values.astype(np.float32)
    if overscan or prescan:
        rows = adu.shape[0]
        left = np.full((rows, prescan), sensor.level, np.float32)
        right = np.full((rows, overscan), sensor.level, np.float32)
        adu = np.hstack([left, adu, right])
    adu += rng.normal(0.0, read_noise_e / gain, adu.shape).astype(np.float32)
    return np.clip(np.rint(adu), 0, ADU_MAX).astype(np.uint16)
