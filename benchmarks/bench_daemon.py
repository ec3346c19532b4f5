"""Benchmark `observd run` as a subprocess: burst throughput and memory, idle CPU, arrival latency.

    python benchmarks/bench_daemon.py [--burst 500] [--burst-size 512] [--idle 60]
                                      [--lat-size 2048] [--lat-n 20] [--repeats 1]

1. burst: N simulated lights written at full speed into the watched folder; time until every
   one is catalogued, reduced and aligned (uncalibrated mode: calibrate, measure, align); peak RSS of
   the daemon plus its worker processes (psutil, polled every 0.2 s).
2. idle: CPU time (process + children) over `--idle` seconds with nothing arriving.
3. latency: 2048x2048 lights written one at a time with masters present (built by the daemon
   from simulated bias/dark/flat first); time from the writer's close() to the catalog row,
   to the calibrated row, and — for the lights that arrive once the night has a reference (the
   first `[align] reference_min_frames` wait for it by design) — to calibrated *and* aligned.
   p50 and p95.

The machine may be shared: figures are medians over `--repeats` and should be read as such.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from astropy.io import fits

from observd.adapters.catalog import Catalog
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

DONE = ("calibrated", "aligned", "unaligned", "bad")
FINAL = ("aligned", "unaligned", "bad")  # a burst has a reference: 'calibrated' still has work ahead


def variants(folder: Path, n: int) -> list[bytes]:
    """n distinct light files (header SEQNUM differs) from the simulated lights in `folder`."""
    bases = []
    for path in sorted(folder.rglob("*.fits")):
        with fits.open(path) as hdul:
            if str(hdul[0].header.get("IMAGETYP", "")).lower().startswith("light"):
                bases.append((hdul[0].header.copy(), hdul[0].data.copy()))
    out = []
    for i in range(n):
        header, data = bases[i % len(bases)]
        header = header.copy()
        header["SEQNUM"] = i
        buf = io.BytesIO()
        fits.PrimaryHDU(data, header).writeto(buf)
        out.append(buf.getvalue())
    return out


def write_config(root: Path, require: list[str]) -> Path:
    watch, out = root / "camera", root / "out"
    watch.mkdir(parents=True, exist_ok=True)
    req = ", ".join(f'"{r}"' for r in require)
    text = f"""[paths]
watch = "{watch}"
output = "{out}"
database = "{out / "observd.db"}"
status_log = "{out / "status.log"}"
[calibrate]
require = [{req}]
[masters]
settle_seconds = 2.0
min_bias = 5
min_dark = 5
min_flat = 5
"""
    path = root / "observd.toml"
    path.write_text(text)
    return path


class Daemon:
    def __init__(self, config: Path):
        self.log = open(config.parent / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observd", "run", "-c", str(config)], stdout=self.log, stderr=self.log
        )
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        end = time.monotonic() + 60
        while "observd started" not in (config.parent / "daemon.log").read_text():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("daemon did not start")
            time.sleep(0.1)

    def _procs(self):
        try:
            return [self.ps] + self.ps.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def _sample(self):
        while not self._stop.wait(0.2):
            rss = 0
            for p in self._procs():
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> int:
        self._stop.set()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.log.close()
        return code


def states(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    catalog = Catalog.open(db, readonly=True)
    try:
        return {r["path"]: r["state"] for r in catalog.files()}
    finally:
        catalog.close()


def wait_all(db: Path, paths: list[Path], wanted: tuple[str, ...], timeout: float) -> None:
    end = time.monotonic() + timeout
    keys = [str(p) for p in paths]
    while time.monotonic() < end:
        s = states(db)
        if all(s.get(k) in wanted for k in keys):
            return
        time.sleep(0.5)
    raise RuntimeError("timed out")


def bench_burst(n: int, size: int, idle: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="observd-bench-") as tmp:
        root = Path(tmp)
        write_night(
            root / "sim",
            SimSpec(shape=(size, size), n_bias=1, n_dark=1, n_flat=1, truth=False, targets=(TargetSpec(n_lights=8),)),
        )
        payloads = variants(root / "sim", n)
        config = write_config(root, [])
        daemon = Daemon(config)
        watch, db = root / "camera", root / "out" / "observd.db"
        t0 = time.monotonic()
        paths = []
        for i, data in enumerate(payloads):
            path = watch / f"M42_{i:04d}.fits"
            path.write_bytes(data)
            paths.append(path)
        written = time.monotonic() - t0
        wait_all(db, paths, FINAL, timeout=3600)
        total = time.monotonic() - t0
        time.sleep(5)
        cpu0 = daemon.cpu_seconds()
        time.sleep(idle)
        cpu = (daemon.cpu_seconds() - cpu0) / idle
        code = daemon.stop()
        return {
            "write_s": written,
            "processed_s": total,
            "peak_rss_mb": daemon.peak_rss / 2**20,
            "idle_cpu_pct": 100 * cpu,
            "exit": code,
        }


def bench_latency(size: int, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="observd-bench-") as tmp:
        root = Path(tmp)
        sim = root / "sim"
        write_night(
            sim,
            SimSpec(
                shape=(size, size),
                n_bias=5,
                n_dark=5,
                n_flat=5,
                truth=False,
                flats_at="dusk",
                targets=(TargetSpec(n_lights=n, exptime=60.0),),
                pace=0.0,
            ),
        )
        config = write_config(root, ["bias", "dark", "flat"])
        daemon = Daemon(config)
        watch, db = root / "camera", root / "out" / "observd.db"
        calib = [p for p in sorted(sim.rglob("*.fits")) if "LIGHT" not in str(p)]
        for p in calib:
            (watch / p.name).write_bytes(p.read_bytes())
        catalog_wait = time.monotonic() + 600
        while True:  # masters present: one current master of each type
            if db.exists():
                c = Catalog.open(db, readonly=True)
                kinds = {m["type"] for m in c.masters(current_only=True)}
                c.close()
                if {"bias", "dark", "flat"} <= kinds:
                    break
            if time.monotonic() > catalog_wait:
                raise RuntimeError("masters were not built")
            time.sleep(0.5)
        lights = [p for p in sorted(sim.rglob("*.fits")) if "LIGHT" in str(p)]
        to_row, to_cal, to_aligned = [], [], []
        for p in lights:
            data = p.read_bytes()
            dest = watch / p.name
            with open(dest, "wb") as fh:
                fh.write(data)
            closed = time.monotonic()
            row = None
            while True:
                c = Catalog.open(db, readonly=True)
                r = c.current_file(str(dest))
                c.close()
                if r is not None and row is None:
                    row = time.monotonic() - closed
                if r is not None and r["state"] in DONE + ("waiting",):
                    to_cal.append(time.monotonic() - closed)
                    if r["state"] in FINAL:  # calibrated and aligned in one step
                        to_aligned.append(to_cal[-1])
                    break
                time.sleep(0.01)
            to_row.append(row)
        daemon.stop()
        q = lambda xs, f: statistics.quantiles(xs, n=20)[18] if f == 95 else statistics.median(xs)  # noqa: E731
        return {
            "row_p50_s": q(to_row, 50),
            "row_p95_s": q(to_row, 95),
            "calibrated_p50_s": q(to_cal, 50),
            "calibrated_p95_s": q(to_cal, 95),
            "aligned_p50_s": q(to_aligned, 50),
            "aligned_p95_s": q(to_aligned, 95),
            "n_aligned": len(to_aligned),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--burst-size", type=int, default=512)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--lat-size", type=int, default=2048)
    parser.add_argument("--lat-n", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared: read figures as indicative)")
    runs = [bench_burst(args.burst, args.burst_size, args.idle) for _ in range(args.repeats if args.burst else 0)]
    for key in runs[0] if runs else ():
        print(f"burst {args.burst} x {args.burst_size}^2  {key:>14}: {statistics.median(r[key] for r in runs):10.2f}")
    runs = [bench_latency(args.lat_size, args.lat_n) for _ in range(args.repeats if args.lat_n else 0)]
    for key in runs[0] if runs else ():
        print(f"latency {args.lat_size}^2 lights  {key:>16}: {statistics.median(r[key] for r in runs):10.3f}")


if __name__ == "__main__":
    main()
