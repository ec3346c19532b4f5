"""Master-bias combination: observd vs ccdproc vs Siril — wall time and peak memory.

Writes N simulated 16-bit bias frames (BITPIX 16, BZERO 32768, like a camera), then
times each tool on them, every run in a fresh process so that its peak RSS is its own:

* observd: ``combine([FitsSource(p) ...], method='median', rejection='sigclip')`` on one
  thread per core + write;
* ccdproc: ``ccdproc.combine(files, method='median', sigma_clip=True, ...)`` + write
  (default ``mem_limit``);
* Siril (when ``siril-cli`` is on PATH): ``convert`` to a sequence, then
  ``stack <seq> rej 3 3 -nonorm`` — Siril's mean with its default rejection, so a timing
  reference only, not the same statistic.

The times are measured inside the child around the work (interpreter start-up and
imports excluded; for Siril the whole ``siril-cli`` run); peak RSS is the child's own
high-water mark (``VmHWM``, imports included; for Siril its ``ru_maxrss``).  Also checks that
observd's master equals ccdproc's:
ccdproc clips once (``maxiters=1``), so that check uses observd with ``maxiters=1``; the
difference from observd's default (``maxiters=5``) is printed too.

    python benchmarks/bench_masters.py [--sizes 20 50] [--shape 2048] [--repeats 3]
                                       [--workdir DIR] [--tools observd ccdproc siril]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

TOOLS = ("observd", "ccdproc", "siril")


# ------------------------------------------------------------------------ frames


def write_bias_frames(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """N bias frames: level + fixed column pattern + read noise + hot pixels + cosmics."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    columns = 1000.0 + 3.0 * np.sin(np.arange(size) / 37.0) + rng.normal(0, 2.0, size)
    hot = rng.integers(0, size, (2, max(1, size * size // 20000)))
    hot_level = rng.uniform(200, 5000, hot.shape[1])
    paths = []
    for i in range(n):
        frame = rng.normal(0.0, 5.0, (size, size)).astype(np.float32)
        frame += columns.astype(np.float32)
        frame[hot[0], hot[1]] += hot_level
        for _ in range(size * size // 100000):  # cosmic rays: short streaks
            y, x = rng.integers(2, size - 2, 2)
            frame[y, x : x + rng.integers(1, 3)] += rng.uniform(500, 40000)
        data = np.clip(np.rint(frame), 0, 65535).astype(np.uint16)
        header = fits.Header({"IMAGETYP": "Bias Frame", "EXPTIME": 0.0})
        path = folder / f"bias_{i + 1:04d}.fits"
        fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)  # BZERO 32768
        paths.append(path)
    return paths


# ------------------------------------------------------------------------ children


def child(tool: str, files: list[Path], out: Path, maxiters: int) -> dict:
    """Run one tool in this (fresh) process; return wall time and peak RSS."""
    if tool == "observd":
        from observd.adapters.fits_rows import FitsSource
        from observd.core.combine import combine

        t0 = time.perf_counter()
        res = combine(
            [FitsSource(p) for p in files],
            method="median",
            rejection="sigclip",
            maxiters=maxiters,
            workers=os.cpu_count() or 1,
        )
        fits.HDUList([fits.PrimaryHDU(res.data), fits.ImageHDU(res.uncertainty, name="UNCERT")]).writeto(
            out, overwrite=True
        )
        elapsed = time.perf_counter() - t0
    elif tool == "ccdproc":
        import ccdproc

        t0 = time.perf_counter()
        ccdproc.combine(
            [str(p) for p in files],
            output_file=str(out),
            method="median",
            sigma_clip=True,
            sigma_clip_low_thresh=3,
            sigma_clip_high_thresh=3,
            sigma_clip_func=np.ma.median,
            sigma_clip_dev_func=np.ma.std,
            unit="adu",
            overwrite_output=True,
        )
        elapsed = time.perf_counter() - t0
    else:
        elapsed = _run_siril(files, out)
        return {"time": elapsed, "rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    return {"time": elapsed, "rss_mib": _own_peak_rss_kib() / 1024}


def _own_peak_rss_kib() -> int:
    """This process's peak RSS.

    Not ``ru_maxrss``: Linux carries the spawning process's RSS over into it (the
    parent's memory high-water mark at vfork+exec), which made this child look as big as
    the benchmark driver.  ``VmHWM`` belongs to the process's own address space.  (Siril's
    figure does come from ``ru_maxrss`` and so is at least this wrapper's ~60 MiB.)
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_siril(files: list[Path], out: Path) -> float:
    work = out.parent / (out.stem + "_siril")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for i, p in enumerate(files):
        (work / f"bias_{i + 1:04d}.fits").symlink_to(p.resolve())
    (work / "master.ssf").write_text(
        f"requires 1.0.0\nconvert bias -out=seq\ncd seq\nstack bias_ rej 3 3 -nonorm -out={out.resolve()}\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["siril-cli", "-d", str(work), "-s", str(work / "master.ssf")], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0 or not _siril_output(out).exists():
        raise RuntimeError(f"siril-cli failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def _siril_output(out: Path) -> Path:
    return out if out.suffix else out.with_suffix(".fit")


def run_child(tool: str, files: list[Path], out: Path, maxiters: int = 5) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        tool,
        "--out",
        str(out),
        "--maxiters",
        str(maxiters),
        "--files",
        *map(str, files),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ main


def siril_available() -> bool:
    return shutil.which("siril-cli") is not None


def max_rel_diff(a: Path, b: Path) -> tuple[float, float]:
    """Max relative difference of two masters, and the fraction of pixels above 1e-5."""
    da = fits.getdata(a).astype(np.float64)
    db = fits.getdata(b).astype(np.float64)
    rel = np.abs(da - db) / np.maximum(np.abs(db), 1e-30)
    return float(np.nanmax(rel)), float(np.mean(rel > 1e-5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--shape", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    ap.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    ap.add_argument("--files", nargs="*", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--maxiters", type=int, default=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.files, args.out, args.maxiters)))
        return 0

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_masters_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    tools = [t for t in args.tools if t != "siril" or siril_available()]
    if not siril_available():
        print("siril-cli not on PATH: Siril skipped")
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()}")

    rows = []
    checks = []
    for n in args.sizes:
        frames = write_bias_frames(workdir / f"bias{n}", n, args.shape)
        outs = {t: workdir / f"master_{t}_{n}.fits" for t in tools}
        results = {t: [] for t in tools}
        for _ in range(args.repeats):
            for t in tools:  # interleaved, so load spikes hit all tools
                results[t].append(run_child(t, frames, outs[t]))
        if "observd" in tools and "ccdproc" in tools:
            one_pass = workdir / f"master_observd1_{n}.fits"
            run_child("observd", frames, one_pass, maxiters=1)
            checks.append((n, max_rel_diff(one_pass, outs["ccdproc"]), max_rel_diff(outs["observd"], outs["ccdproc"])))
        for t in tools:
            rows.append(
                (
                    t,
                    n,
                    statistics.median(r["time"] for r in results[t]),
                    statistics.median(r["rss_mib"] for r in results[t]),
                )
            )
    print(f"load average after: {os.getloadavg()}")
    _print_table(rows, checks, args.repeats, args.shape)
    if tmp is not None:
        tmp.cleanup()
    return 0


def _print_table(rows, checks, repeats, size) -> None:
    by = {(t, n): (tm, rss) for t, n, tm, rss in rows}
    print(f"\n{size}x{size} uint16 bias frames, median of {repeats} runs")
    print(f"{'tool':<8} {'N':>3} {'time s':>8} {'peak RSS MiB':>13} {'time/observd':>13} {'RSS/observd':>12}")
    for t, n, tm, rss in rows:
        ot, orss = by.get(("observd", n), (np.nan, np.nan))
        print(f"{t:<8} {n:>3} {tm:>8.2f} {rss:>13.0f} {tm / ot:>13.2f} {rss / orss:>12.2f}")
    sizes = sorted({n for t, n, _, _ in rows if t == "observd"})
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        ratio = by[("observd", last)][1] / by[("observd", first)][1]
        print(f"observd peak RSS N={last} / N={first}: {ratio:.2f}")
    for n, (one, one_frac), (default, default_frac) in checks:
        print(
            f"N={n}: observd(maxiters=1) vs ccdproc max rel diff {one:.2e} "
            f"({one_frac:.1e} of pixels > 1e-5); observd(maxiters=5) vs ccdproc "
            f"{default:.2e} ({default_frac:.1e} of pixels > 1e-5)"
        )


if __name__ == "__main__":
    sys.exit(main())
