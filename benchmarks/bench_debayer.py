"""Demosaicing methods compared: speed, star colour, and colour fringes, to choose the default.

    python benchmarks/bench_debayer.py [--size 2822 4144] [--repeats 5]

For each of observd's `[calibrate] debayer` methods (and OpenCV's VNG, which needs 8-bit data):
- time: median of `--repeats` runs on a mosaic of the given size;
- star colour: a simulated field of Moffat stars (FWHM 2.6 px, undersampled like a Seestar's)
  of known R/G and B/G, mosaicked RGGB with noise; each star's 9x9-aperture colour vs truth:
  the median error (a bias) and the median absolute error (bias and noise), in %;
- fringes: how differently the channels spread a star's light: R/G and B/G of the light in the
  core (r < 1 px) against that in the wings (2-5 px). 1.00 = no fringe; < 1 means the core takes
  the colour of green and the wings the opposite (magenta), the look of a poor interpolation;
- the same core/wing ratio on real Seestar S50 frames (../shared/data/real/09_seestar_s50_osc,
  or $OBSERVD_REAL_DATA), where the truth is unknown but the optics are the same for all methods.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

import cv2
import numpy as np
from astropy.io import fits

from observd.core import bayer
from observd.core.measure import measure, sky

REAL = Path(os.environ.get("OBSERVD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def opencv_vng_8bit(data: np.ndarray, pattern: str) -> np.ndarray:
    """OpenCV's VNG, which refuses 16-bit input: the mosaic scaled to 0..255 (what it costs)."""
    low, high = float(np.nanmin(data)), float(np.nanmax(data))
    scale = 255.0 / max(high - low, 1e-6)
    scaled = np.clip(np.round((data - low) * scale), 0, 255).astype(np.uint8)
    code = getattr(cv2, f"COLOR_Bayer{bayer._OPENCV_CODE[pattern]}2RGB_VNG")
    return np.moveaxis(cv2.cvtColor(scaled, code), -1, 0).astype(np.float32) / np.float32(scale) + np.float32(low)


METHODS = {m: (lambda d, p, m=m: bayer.debayer(d, p, m)) for m in bayer.DEBAYER_METHODS}
METHODS["opencv_vng (8-bit)"] = opencv_vng_8bit


def star_field(shape: tuple[int, int], n: int, rng: np.random.Generator):
    """(rgb truth image, star table [x, y, r, g, b]) of Moffat stars on a sky, in electrons."""
    rows, cols = shape
    x, y = rng.uniform(12, cols - 12, n), rng.uniform(12, rows - 12, n)
    flux = 10 ** rng.uniform(4.0, 5.3, n)
    rg, bg = rng.uniform(0.5, 1.8, n), rng.uniform(0.4, 1.6, n)
    colours = np.stack([rg, np.ones(n), bg])
    image = np.zeros((3, rows, cols), np.float64)
    alpha, beta = 2.6 / (2 * np.sqrt(2 ** (1 / 3.0) - 1)), 3.0
    yy, xx = np.mgrid[-8:9, -8:9]
    for i in range(n):
        ix, iy = int(x[i]), int(y[i])
        r2 = (xx - (x[i] - ix)) ** 2 + (yy - (y[i] - iy)) ** 2
        psf = (1 + r2 / alpha**2) ** -beta
        psf /= psf.sum()
        image[:, iy - 8 : iy + 9, ix - 8 : ix + 9] += flux[i] * colours[:, i, None, None] * psf
    return image + 200.0, np.column_stack([x, y, colours.T])


def core_wing(rgb: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(R/G, B/G) of core light over wing light, summed over stars (1.00: no fringe)."""
    levels = np.array([sky(p)[0] for p in rgb])
    above = rgb - levels[:, None, None]
    yy, xx = np.mgrid[-6:7, -6:7]
    rr = np.hypot(yy, xx)
    core, wing = np.zeros(3), np.zeros(3)
    for cx, cy in zip(x, y):
        ix, iy = int(round(cx)), int(round(cy))
        if not (7 < ix < rgb.shape[2] - 7 and 7 < iy < rgb.shape[1] - 7):
            continue
        cut = above[:, iy - 6 : iy + 7, ix - 6 : ix + 7]
        core += cut[:, rr < 1].sum(axis=1)
        wing += cut[:, (rr >= 2) & (rr < 5)].sum(axis=1)
    ratio = (core / core[1]) / (wing / wing[1])
    return float(ratio[0]), float(ratio[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=(2822, 4144), metavar=("ROWS", "COLS"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    big = rng.normal(1000, 30, tuple(args.size)).astype(np.float32)
    truth, stars = star_field((512, 512), 150, rng)
    mosaic = truth[0].copy()
    mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2] = (
        truth[1][0::2, 1::2],
        truth[1][1::2, 0::2],
        truth[2][1::2, 1::2],
    )
    mosaic = (rng.poisson(mosaic) + rng.normal(0, 5, mosaic.shape)).astype(np.float32)
    real = sorted(glob.glob(str(REAL / "09_seestar_s50_osc" / "Light_M 94*")))
    raw = fits.getdata(real[0]).astype(np.float32) if real else None

    print(
        f"{'method':<20} {'time (s)':>9} {'colour bias %':>13} {'colour err %':>12} "
        f"{'fringe R,B (sim)':>18} {'fringe R,B (Seestar)':>21}"
    )
    for name, method in METHODS.items():
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            method(big, "RGGB")
            times.append(time.perf_counter() - t)
        rgb = method(mosaic, "RGGB")
        levels = np.array([sky(p)[0] for p in rgb])
        errors = []
        for x, y, r, _, b in stars:
            ix, iy = int(round(x)), int(round(y))
            flux = (rgb[:, iy - 4 : iy + 5, ix - 4 : ix + 5] - levels[:, None, None]).sum(axis=(1, 2))
            errors += [flux[0] / flux[1] / r - 1, flux[2] / flux[1] / b - 1]
        fringe = core_wing(rgb, stars[:, 0], stars[:, 1])
        real_fringe = "-"
        if raw is not None:
            colour = method(raw.copy(), "GRBG")
            _, found = measure(colour.mean(axis=0), max_stars=60)
            real_fringe = "{:.2f}, {:.2f}".format(*core_wing(colour, found.x, found.y))
        print(
            f"{name:<20} {np.median(times):9.3f} {100 * np.median(errors):13.2f} "
            f"{100 * np.median(np.abs(errors)):12.2f} "
            f"{fringe[0]:8.2f}, {fringe[1]:.2f} {real_fringe:>21}"
        )


if __name__ == "__main__":
    main()
