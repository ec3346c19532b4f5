"""A whole simulated night, observd against Siril, in the same run.

Writes a night for each `--size` (20 bias, 20 dark, 20 flat, 20 lights of one target, 10 of each
above 25 MP; no clouds or trails, so both pipelines stack the same frames), then runs
  observd  `observd ingest --stack` (masters, calibration, measurement, alignment, then the
           night's weighted rejecting stack), and
  Siril    its standard 1.0 script: stack bias, stack dark, preprocess flat, stack flat,
           preprocess lights, register, stack with rejection (when `siril-cli` exists),
each in a subprocess whose process tree is polled for its memory (PSS, summed over the tree from
/proc/<pid>/smaps_rollup: pages shared between processes, like memory-mapped masters, count
once): one untimed warm-up run of each, then timed runs alternating between the two. Prints
wall time, peak memory,
their ratios, and compares the two stacks: sky noise in an aperture, relative to the flux of
the same bright stars in the same aperture in each stack (lower is better; unit-free, so the
stacks' scales do not matter), as produced and at equal resolution, and median star FWHM.

    python benchmarks/bench_night.py [--size 2048 4800 9576x6388] [--frames 20] [--repeats 3] [--warmup 1]
                                     [--memory-limit MIB] [--masters-method median|mean] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import sep
from astropy.io import fits
from scipy import ndimage
from scipy.spatial import cKDTree

from observd.core.align import find_transform
from observd.core.measure import FWHM_PER_SIGMA, Stars, measure
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

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
    """Wall time and peak memory (bytes: PSS summed over the process tree, polled every 50 ms)."""
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
                peak = max(peak, sum(pss(p.pid) for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    return time.perf_counter() - started, peak, subprocess.CompletedProcess(command, proc.returncode, out, err)


def pss(pid: int) -> int:
    """A process's proportional set size in bytes (0 once it has ended)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0


def observd_runner(root: Path, config: Path):
    """A function that runs `observd ingest root/raw --stack -c config` from scratch (no catalog,
    no outputs: the config's output folder is root/out) and returns `timed`'s result."""
    command = [sys.executable, "-m", "observd", "ingest", str(root / "raw"), "--stack", "-c", str(config)]

    def run_observd():
        shutil.rmtree(root / "out", ignore_errors=True)
        os.sync()
        run = timed(command)
        if run[2].returncode:
            print(run[2].stdout[-2000:], run[2].stderr[-2000:])
            raise SystemExit("observd failed")
        return run

    return run_observd


def siril_runner(root: Path, script: str):
    """A function that runs `script` with siril-cli from scratch (no sequences, no outputs) and
    returns `timed`'s result; the script's stack is root/siril/siril_stack.fits.

    Siril works in its own folder beside raw/ (which observd ingests whole): hard links to the
    raw frames (its script's `cd ../process` would leave a symlinked folder), its sequences in
    process/, its stack beside them."""
    siril = root / "siril"
    shutil.rmtree(siril, ignore_errors=True)
    for frame in (root / "raw").rglob("*.fits"):
        (siril / frame.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(frame, siril / frame.parent.name / frame.name)
    (siril / "night.ssf").write_text(script)
    stack = siril / "siril_stack.fits"

    def run_siril():
        shutil.rmtree(siril / "process", ignore_errors=True)
        (siril / "process").mkdir()
        stack.unlink(missing_ok=True)
        os.sync()
        run = timed(["siril-cli", "-d", str(siril), "-s", str(siril / "night.ssf")])
        if run[2].returncode or not stack.exists():
            print("Siril failed:", (run[2].stdout + run[2].stderr)[-1500:])
            raise SystemExit("Siril failed")
        return run

    return run_siril


def read_stack(path: Path) -> np.ndarray:
    data = read_stack_planes(path)
    return np.ascontiguousarray(data[0] if data.ndim == 3 else data)


def read_stack_planes(path: Path) -> np.ndarray:
    """A stack's primary data as float32: (rows, cols), or (planes, rows, cols) for a colour cube."""
    return fits.getdata(path).astype(np.float32)


def blur_to(data: np.ndarray, fwhm: float, target_fwhm: float) -> np.ndarray:
    """`data` convolved with the Gaussian that widens stars of `fwhm` to `target_fwhm` px."""
    sigma = np.sqrt(max(target_fwhm**2 - fwhm**2, 0.0)) / FWHM_PER_SIGMA
    filled = np.where(np.isfinite(data), data, np.nanmedian(data))
    out = ndimage.gaussian_filter(filled, sigma).astype(np.float32)
    out[~np.isfinite(data)] = np.nan
    return out


@dataclass(frozen=True)
class Quality:
    noise: float  # robust scatter of r=6 px aperture sums on empty sky
    noise_error: float  # its relative standard error
    fwhm: float | None  # median star FWHM (px)
    stars: Stars  # brightest stars, for matching the other stack's
    flux: np.ndarray  # their r=6 px aperture sums


def stack_quality(data: np.ndarray) -> Quality:
    """Sky noise in r=6 px apertures, and bright stars' flux in the same apertures.

    Measured in apertures rather than per pixel: resampling correlates neighbouring pixels,
    so a blurrier stack shows less per-pixel noise without being any better (its stars get
    wider instead). The scatter of aperture sums on empty sky counts most of that
    correlation, not all: smoothing still lowers it by a few per cent (a bilinear half-pixel
    shift of a stack: -5 %, stars 12 % wider), because the aperture's edge pixels become
    fractional. Hence the comparison is also made at equal resolution (`blur_to`)."""
    m, stars = measure(data, max_stars=200)
    finite = np.ascontiguousarray(np.where(np.isfinite(data), data, np.nanmedian(data)))
    bkg = sep.Background(finite)
    sub = finite - bkg.back()
    objects, segmap = sep.extract(sub, 1.5, err=bkg.globalrms, segmentation_map=True)
    rng = np.random.default_rng(0)
    ny, nx = data.shape
    margin = max(40, ny // 20)
    x = rng.uniform(margin, nx - margin, 4000)
    y = rng.uniform(margin, ny - margin, 4000)
    clear = np.array(
        [
            not segmap[int(yi) - 8 : int(yi) + 9, int(xi) - 8 : int(xi) + 9].any()
            and np.isfinite(data[int(yi) - 8 : int(yi) + 9, int(xi) - 8 : int(xi) + 9]).all()
            for xi, yi in zip(x, y)
        ]
    )
    sky, _, _ = sep.sum_circle(sub, x[clear], y[clear], 6.0)
    flux, _, _ = sep.sum_circle(sub, stars.x, stars.y, 6.0)
    mad = 1.4826 * np.median(np.abs(sky - np.median(sky)))
    # the MAD of n sums scatters by ~1.17/sqrt(2n) relative: about ±2 % for the ~2,000 clear apertures
    return Quality(float(mad), 1.17 / np.sqrt(2 * len(sky)), m.fwhm, stars, flux)


def relative_noise(a: Quality, b: Quality) -> float:
    """Noise of stack `a` relative to stack `b` at the same flux scale (< 1: `a` is less noisy).

    The scale is the median flux ratio of the same stars in both (matched through the
    transform between the star lists; the 5 brightest, perhaps saturated, left out), so the
    stacks' units and a star entering or leaving a field shifted by the other reference do
    not matter."""
    t = find_transform(a.stars, b.stars)
    moved = np.column_stack([a.stars.x, a.stars.y]) @ t.matrix[:2, :2].T + t.matrix[:2, 2]
    dist, index = cKDTree(np.column_stack([b.stars.x, b.stars.y])).query(moved)
    pairs = np.flatnonzero(dist < 1.0)[5:]
    scale = float(np.median(a.flux[pairs] / b.flux[index[pairs]]))
    return (a.noise / b.noise) / scale


def _peaks(runs) -> str:
    """Each run's peak memory, in MiB."""
    return ", ".join(f"{r[1] / 2**20:.0f}" for r in runs)


def frame_shape(text: str) -> tuple[int, int]:
    """`--size` "2048" (square) or "9576x6388" (width x height) as (rows, columns)."""
    width, _, height = text.lower().partition("x")
    return (int(height or width), int(width))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=frame_shape, nargs="+", default=[frame_shape("2048")], metavar="WxH")
    parser.add_argument("--frames", type=int, help="of each kind (default 20; 10 above 25 MP)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each pipeline, alternating (medians are reported)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each pipeline first")
    parser.add_argument("--memory-limit", type=int, default=0, metavar="MIB", help="observd's [daemon] memory_limit_mb")
    parser.add_argument(
        "--masters-method",
        choices=("median", "mean"),
        help="every observd master combined by this, after sigma clipping (default: observd's "
        "defaults, a median for bias and dark and a mean for flats; Siril's script "
        "uses a mean throughout)",
    )
    args = parser.parse_args()
    for shape in args.size:
        frames = args.frames or (20 if shape[0] * shape[1] <= 25_000_000 else 10)
        name = f"{shape[1]}x{shape[0]}"
        root = args.workdir / name if args.workdir else Path(tempfile.mkdtemp(prefix=f"bench_night_{name}_"))
        try:
            bench(root, shape, frames, args)
        finally:
            if not args.workdir:
                shutil.rmtree(root, ignore_errors=True)


def bench(root: Path, shape: tuple[int, int], n: int, args) -> None:
    """One night of frames of `shape`, `n` of each kind, through both pipelines; prints the figures."""
    size = f"{shape[1]}x{shape[0]}"
    t0 = time.perf_counter()
    write_night(
        root / "raw",
        SimSpec(
            shape=shape,
            n_bias=n,
            n_dark=n,
            n_flat=n,
            seed=7,
            truth=False,
            n_clouded=0,
            n_trailed=0,
            meridian_flip=False,
            targets=(TargetSpec(n_lights=n, n_stars=400),),
        ),
    )
    print(f"== {size}: simulated night written in {time.perf_counter() - t0:.0f} s ({4 * n} files)")
    os.sync()  # the night's raw files reach the disk before anything is timed, not during
    config = root / "observd.toml"
    config.write_text(
        "[paths]\noutput = 'out'\ndatabase = 'out/observd.db'\n[site]\ntimezone = 'Europe/Berlin'\n"
        f"[daemon]\nmemory_limit_mb = {args.memory_limit}\n"
        f"[masters]\nmin_bias = {min(n, 7)}\nmin_dark = {min(n, 5)}\nmin_flat = {min(n, 5)}\n"
        + (f"method = '{args.masters_method}'\nflat_method = '{args.masters_method}'\n" if args.masters_method else "")
    )
    run_observd = observd_runner(root, config)

    run_siril = siril_runner(root, SIRIL_SCRIPT) if shutil.which("siril-cli") else None
    siril_stack = root / "siril" / "siril_stack.fits"

    # Warm-up runs are not timed (the first run after the night is written was often 1-3 s
    # slower, for both pipelines); then the two pipelines alternate, so that a drift of this
    # machine's speed during the benchmark (seen here: ±10 % over minutes) hits both alike.
    pipelines = [run_observd] + ([run_siril] if run_siril else [])
    for _ in range(args.warmup):
        for run in pipelines:
            run()
    runs = {run: [] for run in pipelines}
    for _ in range(args.repeats):
        for run in pipelines:
            runs[run].append(run())
    ours = runs[run_observd]
    ours_wall, ours_mem = statistics.median(r[0] for r in ours), max(r[1] for r in ours)
    ours_stack = next((root / "out").rglob("stacks/*.fits"))
    print(
        f"observd: median {ours_wall:.1f} s of {args.repeats} runs ({', '.join(f'{r[0]:.1f}' for r in ours)}; "
        f"`observd ingest --stack`), peak PSS {ours_mem / 2**20:.0f} MiB (the highest of its runs': {_peaks(ours)})"
    )
    ours_data = read_stack(ours_stack)
    q_ours = stack_quality(ours_data)
    masters = (
        f"sigma-clipped {args.masters_method}"
        if args.masters_method
        else "defaults (sigma-clipped median bias and dark, mean flat)"
    )
    print(f"  stack FWHM {q_ours.fwhm:.2f} px, masters: {masters}")
    if not run_siril:
        print("Siril: siril-cli not installed — no comparison")
        return
    theirs = runs[run_siril]
    ws, ms = statistics.median(r[0] for r in theirs), max(r[1] for r in theirs)
    siril_data = read_stack(siril_stack)
    q_siril = stack_quality(siril_data)
    print(
        f"Siril 1.0: median {ws:.1f} s of {args.repeats} runs ({', '.join(f'{r[0]:.1f}' for r in theirs)}), "
        f"peak PSS {ms / 2**20:.0f} MiB ({_peaks(theirs)})"
    )
    print(f"  stack FWHM {q_siril.fwhm:.2f} px")
    paired = statistics.median(a[0] / b[0] for a, b in zip(ours, theirs))
    # the sharper stack blurred to the other's star FWHM: noise at equal resolution
    fwhm = max(q_ours.fwhm, q_siril.fwhm)
    blurred = [stack_quality(blur_to(d, q.fwhm, fwhm)) for d, q in ((ours_data, q_ours), (siril_data, q_siril))]
    error = np.hypot(q_ours.noise_error, q_siril.noise_error)
    print(
        f"ratios observd/Siril ({size}): wall time {ours_wall / ws:.2f} (median of the {args.repeats} alternating "
        f"pairs' ratios {paired:.2f}), peak PSS {ours_mem / ms:.2f}, "
        f"aperture noise at the same flux scale {relative_noise(q_ours, q_siril):.3f} as produced, "
        f"{relative_noise(*blurred):.3f} at equal resolution (both {fwhm:.2f} px) "
        f"(< 1: observd's stack is less noisy; each ±{error:.0%})"
    )


if __name__ == "__main__":
    main()
