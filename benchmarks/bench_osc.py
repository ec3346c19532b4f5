"""A one-shot-colour night, observd against Siril's OSC preprocessing, in the same run.

Writes a simulated 4144x2822 RGGB night (N.I.N.A. headers, ROWORDER TOP-DOWN; by default 20 bias,
20 dark, 20 flat, 30 lights of one target of coloured stars, no clouds or trails), then runs
  observd  `observd ingest --stack` (masters in mosaic space, flats normalised per Bayer site,
           calibration, repair, Malvar demosaicing, measurement and alignment on the luminance,
           a per-channel weighted rejecting stack), and
  Siril    its OSC script: stack bias, preprocess and stack flats, stack darks, preprocess the
           lights with `-cfa -equalize_cfa -debayer`, register, stack with rejection,
each in a subprocess whose process tree is polled for peak RSS (see bench_night.py), alternating.
Colour accuracy of each stack against the simulator's truth: the bright isolated stars' R/G and
B/G (aperture photometry, 8 px), each star's measured / true, as a median (the bias) and the
median absolute deviation of the stars around it (the star-to-star scatter).

    python benchmarks/bench_osc.py [--lights 30] [--calibration 20] [--repeats 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_night import SIRIL_SCRIPT, observd_runner, read_stack_planes, siril_runner

from observd.core.align import find_transform
from observd.core.measure import Stars, measure, sky
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

# Siril's calibration steps as bench_night runs them; the lights calibrated in mosaic space, the
# flat's colour sites equalised, then demosaiced (Siril's OSC preprocessing script)
SIRIL_OSC_SCRIPT = SIRIL_SCRIPT.replace(
    "preprocess light -dark=dark_stacked -flat=pp_flat_stacked",
    "preprocess light -dark=dark_stacked -flat=pp_flat_stacked -cfa -equalize_cfa -debayer",
)
assert SIRIL_OSC_SCRIPT != SIRIL_SCRIPT


def colour_accuracy(cube: np.ndarray, truth: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """(median measured/true [R/G, B/G], their median absolute deviation, n stars) of a stack,
    whatever its registration: stars matched to the truth catalogue by asterisms."""
    if cube.shape[0] != 3:
        raise ValueError(f"not an RGB cube: {cube.shape}")
    levels = np.array([sky(plane)[0] for plane in cube])
    above = cube - levels[:, None, None]
    _, found = measure(above.mean(axis=0), max_stars=200)
    stars = np.asarray(next(iter(truth["targets"].values()))["stars_rgb"])
    catalogue = Stars(stars[:, 0], stars[:, 1], stars[:, 3])
    transform = find_transform(catalogue, found)  # sky frame -> stack pixels
    m = np.asarray(transform.matrix)
    xy = stars[:, :2] @ m[:2, :2].T + m[:2, 2]
    rows, cols = cube.shape[1:]
    ratios = []
    for i in np.argsort(-stars[:, 3])[:400]:
        x, y = xy[i]
        near = np.hypot(xy[:, 0] - x, xy[:, 1] - y)
        if not (20 < x < cols - 20 and 20 < y < rows - 20) or np.sum(near < 16) > 1:
            continue
        ix, iy = int(round(x)), int(round(y))
        yy, xx = np.mgrid[-15:16, -15:16]
        rr = np.hypot(yy - (y - iy), xx - (x - ix))
        cut = above[:, iy - 15 : iy + 16, ix - 15 : ix + 16]
        local = np.nanmedian(cut[:, (rr >= 11) & (rr <= 15)], axis=1)
        flux = np.nansum(cut[:, rr <= 8], axis=1) - local * (rr <= 8).sum()
        if flux.min() <= 0 or cut[:, rr <= 2].max() > 0.8 * np.nanmax(cube):
            continue
        ratios.append(
            [flux[0] / flux[1] / (stars[i, 2] / stars[i, 3]), flux[2] / flux[1] / (stars[i, 4] / stars[i, 3])]
        )
    ratios = np.asarray(ratios)
    median = np.median(ratios, axis=0)
    return median, np.median(np.abs(ratios - median), axis=0), len(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lights", type=int, default=30)
    parser.add_argument("--calibration", type=int, default=20, help="bias, dark and flat frames each")
    parser.add_argument("--shape", type=int, nargs=2, default=(2822, 4144), metavar=("ROWS", "COLS"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_osc_"))
    n = args.calibration
    try:
        t0 = time.perf_counter()
        truth = write_night(
            root / "raw",
            SimSpec(
                shape=tuple(args.shape),
                bayer="RGGB",
                row_order="TOP-DOWN",
                n_bias=n,
                n_dark=n,
                n_flat=n,
                seed=7,
                n_clouded=0,
                n_trailed=0,
                meridian_flip=False,
                cosmic_rays=20,
                targets=(TargetSpec(n_lights=args.lights, n_stars=1500),),
            ),
        )
        print(f"simulated OSC night written in {time.perf_counter() - t0:.0f} s ({3 * n + args.lights} files)")
        os.sync()
        config = root / "observd.toml"
        config.write_text(
            "[paths]\noutput = 'out'\ndatabase = 'out/observd.db'\n[site]\ntimezone = 'Europe/Berlin'\n"
            f"[masters]\nmin_bias = {min(n, 7)}\nmin_dark = {min(n, 5)}\nmin_flat = {min(n, 5)}\n"
        )
        pipelines = {"observd": observd_runner(root, config)}
        if shutil.which("siril-cli"):
            pipelines["Siril"] = siril_runner(root, SIRIL_OSC_SCRIPT)
        runs = {name: [] for name in pipelines}
        for _ in range(args.repeats):
            for name, run in pipelines.items():
                runs[name].append(run())
        stacks = {"observd": next((root / "out").rglob("stacks/*_RGB.fits"))}
        if "Siril" in pipelines:
            stacks["Siril"] = root / "siril" / "siril_stack.fits"
        results = {}
        for name, timings in runs.items():
            wall, rss = statistics.median(r[0] for r in timings), max(r[1] for r in timings)
            bias, scatter, count = colour_accuracy(read_stack_planes(stacks[name]), truth)
            results[name] = (wall, rss)
            print(
                f"{name}: median {wall:.1f} s of {len(timings)} run(s), peak RSS {rss / 2**20:.0f} MiB; "
                f"colour vs truth ({count} stars): R/G {bias[0]:.4f} (scatter {scatter[0]:.4f}), B/G {bias[1]:.4f} "
                f"(scatter {scatter[1]:.4f})"
            )
        if "Siril" in results:
            (w1, r1), (w2, r2) = results["observd"], results["Siril"]
            print(f"ratios observd/Siril: wall time {w1 / w2:.2f}, peak RSS {r1 / r2:.2f}")
        else:
            print("Siril: siril-cli not installed — no comparison")
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
