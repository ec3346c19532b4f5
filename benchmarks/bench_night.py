"""A whole simulated night, observd against Siril, in the same run.

Writes a 2048² night (20 bias, 20 dark, 20 flat, 20 lights of one target; no clouds or
trails, so both pipelines stack the same frames), then runs
  observd  `observd ingest` + `observd stack` (masters, calibration, measurement, alignment,
           weighted rejecting stack), and
  Siril    its standard 1.0 script: stack bias, stack dark, preprocess flat, stack flat,
           preprocess lights, register, stack with rejection (when `siril-cli` exists),
each in a subprocess whose process tree is polled for peak RSS. Prints wall time, peak RSS,
their ratios, and compares the two stacks: sky noise in an aperture relative to bright stars'
flux in the same aperture (lower is better; unit-free, so the stacks' scales do not matter)
and median star FWHM.

    python benchmarks/bench_night.py [--size 2048] [--frames 20] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import sep
from astropy.io import fits

from observd.measure import measure
from observd.simulate import SimSpec, TargetSpec, write_night

SIRIL_SCRIPT = """requires 1.0.0
setext fits
cd BIAS
convert bias -out=../process
cd ../process
stack bias rej 3 3 -nonorm
cd ../DARK
convert dark -out=../process
cd ../process
stack dark rej 3 3 -nonorm
cd ../FLAT
convert flat -out=../process
cd ../process
preprocess flat -bias=bias_stacked
stack pp_flat rej 3 3 -norm=mul
cd ../LIGHT
convert light -out=../process
cd ../process
preprocess light -dark=dark_stacked -flat=pp_flat_stacked
register pp_light
stack r_pp_light rej 3 3 -norm=addscale -output_norm -out=../siril_stack
"""


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall time and peak RSS (bytes, summed over the process tree, polled every 50 ms)."""
    peak = 0
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def poll():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root] + root.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    return time.perf_counter() - started, peak, subprocess.CompletedProcess(command, proc.returncode, out, err)


def stack_quality(path: Path) -> tuple[float, float | None]:
    """(sky noise in an r=6 px aperture / median flux of bright stars in the same aperture, FWHM).

    Measured in apertures rather than per pixel: resampling correlates neighbouring pixels,
    so a blurrier stack shows less per-pixel noise without being any better (its stars get
    wider instead). The scatter of aperture sums on empty sky counts that correlation."""
    data = fits.getdata(path).astype(np.float32)
    if data.ndim == 3:
        data = data[0]
    data = np.ascontiguousarray(data)
    m, stars = measure(data, max_stars=60)
    finite = np.ascontiguousarray(np.where(np.isfinite(data), data, np.nanmedian(data)))
    bkg = sep.Background(finite)
    sub = finite - bkg.back()
    objects, segmap = sep.extract(sub, 1.5, err=bkg.globalrms, segmentation_map=True)
    rng = np.random.default_rng(0)
    ny, nx = data.shape
    margin = max(40, ny // 20)
    x = rng.uniform(margin, nx - margin, 4000)
    y = rng.uniform(margin, ny - margin, 4000)
    clear = np.array([not segmap[int(yi) - 8:int(yi) + 9, int(xi) - 8:int(xi) + 9].any()
                      and np.isfinite(data[int(yi) - 8:int(yi) + 9, int(xi) - 8:int(xi) + 9]).all()
                      for xi, yi in zip(x, y)])
    sky, _, _ = sep.sum_circle(sub, x[clear][:1000], y[clear][:1000], 6.0)
    flux, _, _ = sep.sum_circle(sub, stars.x[5:35], stars.y[5:35], 6.0)
    mad = 1.4826 * np.median(np.abs(sky - np.median(sky)))
    return float(mad / np.median(flux)), m.fwhm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_night_"))
    n = args.frames
    try:
        t0 = time.perf_counter()
        write_night(root / "raw", SimSpec(shape=(args.size, args.size), n_bias=n, n_dark=n, n_flat=n, seed=7,
                                          truth=False, n_clouded=0, n_trailed=0, meridian_flip=False,
                                          targets=(TargetSpec(n_lights=n, n_stars=400),)))
        print(f"simulated night written in {time.perf_counter() - t0:.0f} s ({4 * n} files of {args.size}²)")
        config = root / "observd.toml"
        config.write_text("[paths]\noutput = 'out'\ndatabase = 'out/observd.db'\n[site]\ntimezone = 'Europe/Berlin'\n"
                          f"[masters]\nmin_bias = {min(n, 7)}\nmin_dark = {min(n, 5)}\nmin_flat = {min(n, 5)}\n")
        observd = [sys.executable, "-m", "observd.cli"]
        w1, m1, r1 = timed(observd + ["ingest", str(root / "raw"), "-c", str(config)])
        w2, m2, r2 = timed(observd + ["stack", "-c", str(config)])
        if r1.returncode or r2.returncode:
            print(r1.stdout[-2000:], r1.stderr[-2000:], r2.stdout[-2000:], r2.stderr[-2000:])
            raise SystemExit("observd failed")
        ours_wall, ours_rss = w1 + w2, max(m1, m2)
        ours_stack = next((root / "out").rglob("stacks/*.fits"))
        print(f"observd: {ours_wall:.1f} s (ingest {w1:.1f} s + stack {w2:.1f} s), peak RSS {ours_rss / 2**20:.0f} MiB")
        q_ours = stack_quality(ours_stack)
        print(f"  stack aperture noise/flux {q_ours[0]:.3e}, FWHM {q_ours[1]:.2f} px")
        if not shutil.which("siril-cli"):
            print("Siril: siril-cli not installed — no comparison")
            return
        (root / "raw" / "process").mkdir(exist_ok=True)
        (root / "raw" / "night.ssf").write_text(SIRIL_SCRIPT)
        ws, ms, rs = timed(["siril-cli", "-d", str(root / "raw"), "-s", str(root / "raw" / "night.ssf")])
        siril_stack = root / "raw" / "siril_stack.fits"
        if rs.returncode or not siril_stack.exists():
            print("Siril failed:", (rs.stdout + rs.stderr)[-1500:])
            return
        q_siril = stack_quality(siril_stack)
        print(f"Siril 1.0: {ws:.1f} s, peak RSS {ms / 2**20:.0f} MiB")
        print(f"  stack aperture noise/flux {q_siril[0]:.3e}, FWHM {q_siril[1]:.2f} px")
        print(f"ratios observd/Siril: wall time {ours_wall / ws:.2f}, peak RSS {ours_rss / ms:.2f}, "
              f"noise/flux {q_ours[0] / q_siril[0]:.3f} (< 1: observd's stack is less noisy)")
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
