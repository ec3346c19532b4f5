"""An archive of simulated nights reprocessed through this host's pool and through a Dask LocalCluster.

Simulates NIGHTS nights (biases, darks, flats in two filters, three targets in two filters) of
small frames, >= 2,000 files in all, then ingests the whole archive twice, into two output
folders: through this host's worker pool of WORKERS processes (`[daemon] workers`) and through
`--cluster local:WORKERS` (a LocalCluster of single-threaded worker processes). Prints, for each:
  frames/s       files catalogued and reduced (masters, calibration, measurement, alignment) per
                 second of the ingest, the workers' start-up excluded;
  driver CPU     CPU seconds of the ingesting process per frame (cataloguing, planning, recording:
                 the single catalog writer; with the LocalCluster, its scheduler runs there too);
and the scheduler's overhead per task: the wall time per job of NOOPS jobs that do nothing,
submitted and collected by `run_jobs` as the reduction's jobs are. Then the bytes each reduced
frame moves through the file system (raw read, calibrated written and read again, aligned
written), what the README's scaling estimate rests on. Both ingests must agree on every state.

The two ingests alternate `--repeats` times (paired: each pair sees the same machine load); the
figures are medians, and the ratio is the median of the pairs' ratios. A temporary work folder is
removed at the end (`--workdir DIR` is kept).

    python benchmarks/bench_archive.py [--nights 10] [--lights 30] [--size 128] [--workers 2] [--repeats 3]
                                       [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median

from observd.adapters.catalog import Catalog
from observd.core.config import config_from_dict
from observd.jobs.dask_cluster import open_cluster
from observd.jobs.pool import worker_pool
from observd.pipeline.batch import ingest
from observd.pipeline.dispatch import run_jobs
from observd.pipeline.reducer import Reducer
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

TARGETS = ("M42", "M31", "NGC7000")
FILTERS = ("L", "R")


def simulate_archive(root: Path, nights: int, lights: int, size: int) -> int:
    """`nights` consecutive nights, each with every target in every filter; returns the file count."""
    first = dt.date(2026, 10, 1)
    for k in range(nights):
        write_night(
            root / f"night{k:02d}",
            SimSpec(
                seed=k + 1,
                night=(first + dt.timedelta(days=k)).isoformat(),
                shape=(size, size),
                n_bias=7,
                n_dark=5,
                n_flat=5,
                truth=False,
                targets=tuple(TargetSpec(name, FILTERS, lights, n_stars=60) for name in TARGETS),
            ),
        )
    return sum(1 for p in root.rglob("*.fits"))


def _config(out: Path, workers: int):
    return config_from_dict(
        {
            "paths": {"output": str(out), "database": str(out / "observd.db"), "status_log": str(out / "status.log")},
            "site": {"timezone": "Europe/Berlin"},
            "daemon": {"workers": workers},
        }
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reprocess(archive: Path, out: Path, workers: int, cluster: bool) -> dict:
    """Ingest the archive through the pool or a LocalCluster; its seconds, CPU and states."""
    config = _config(out, workers)
    catalog = Catalog.open(config.paths.database)
    started = time.perf_counter()
    pool = open_cluster(f"local:{workers}", config) if cluster else worker_pool(config)
    with pool:
        if cluster:
            pool.check_visible([archive], out)
        else:  # the pool's workers start in the background: their start-up is not the ingest's
            for future in [pool.submit(os.getpid) for _ in range(workers)]:
                future.result()
        startup = time.perf_counter() - started
        cpu, wall = _cpu(), time.perf_counter()
        result = ingest([archive], catalog, config, reducer=Reducer(config, catalog, pool=pool))
        seconds, cpu = time.perf_counter() - wall, _cpu() - cpu
    assert not result.failed, result.errors
    states = {Path(r["path"]).name: (r["state"], r["reason"]) for r in catalog.files()}
    catalog.close()
    return {"startup": startup, "seconds": seconds, "cpu": cpu, "states": states}


def _noop(job):
    return job


def overhead_per_task(workers: int, n: int, cluster: bool, workdir: Path) -> float:
    """Seconds of wall time per job that does nothing, through `run_jobs` as the reduction uses it."""
    config = _config(workdir / "noop", workers)
    pool = open_cluster(f"local:{workers}", config) if cluster else worker_pool(config)
    with pool:
        list(run_jobs(pool, [(_noop, i) for i in range(8)], window=64, should_stop=lambda: False))  # warm
        started = time.perf_counter()
        done = sum(1 for _ in run_jobs(pool, [(_noop, i) for i in range(n)], window=64, should_stop=lambda: False))
        seconds = time.perf_counter() - started
    assert done == n
    return seconds / n


def bytes_per_frame(archive: Path, out: Path) -> tuple[float, int]:
    """File-system bytes per reduced light (raw read, calibrated written and read, aligned written), and lights."""
    catalog = Catalog.open(out / "observd.db")
    lights = [r for r in catalog.files(types=("light",)) if r["calibrated_path"]]
    total = 0
    for row in lights:
        total += Path(row["path"]).stat().st_size + 2 * Path(row["calibrated_path"]).stat().st_size
        if row["aligned_path"]:
            total += Path(row["aligned_path"]).stat().st_size
    catalog.close()
    return total / max(1, len(lights)), len(lights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--lights", type=int, default=30, help="lights per target and filter per night")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of ingests (pool, cluster)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the frames judged bad, the scheduler's chatter
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="observd-archive-"))
    archive = workdir / "archive"
    if archive.exists():
        shutil.rmtree(archive)
    started = time.perf_counter()
    files = simulate_archive(archive, args.nights, args.lights, args.size)
    print(
        f"archive: {files} files, {args.nights} nights, {args.size}x{args.size} px "
        f"(simulated in {time.perf_counter() - started:.0f} s) in {workdir}"
    )
    runs: dict[str, list[dict]] = {"local pool": [], "LocalCluster": []}
    for _ in range(args.repeats):
        for name, cluster in (("local pool", False), ("LocalCluster", True)):
            out = workdir / name.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(reprocess(archive, out, args.workers, cluster))
    for name, done in runs.items():
        print(
            f"{name:>12}, {args.workers} workers: {files / median(r['seconds'] for r in done):6.1f} frames/s "
            f"(median of {len(done)}: {', '.join(format(r['seconds'], '.1f') for r in done)} s; start-up "
            f"{median(r['startup'] for r in done):.1f} s), "
            f"driver CPU {1000 * median(r['cpu'] for r in done) / files:.1f} ms/frame"
        )
        assert all(r["states"] == runs["local pool"][0]["states"] for r in done), "the ingests disagree"
    ratio = median(c["seconds"] / p["seconds"] for p, c in zip(runs["local pool"], runs["LocalCluster"]))
    print(f"LocalCluster / local pool wall time: {ratio:.2f} (median of the pairs)")
    print("both ingests give the same state and reason for every file")
    pool_s, cluster_s = (overhead_per_task(args.workers, args.noops, c, workdir) for c in (False, True))
    print(
        f"overhead per task ({args.noops} no-op jobs through run_jobs): local pool {1e3 * pool_s:.2f} ms, "
        f"LocalCluster {1e3 * cluster_s:.2f} ms"
    )
    per_frame, lights = bytes_per_frame(archive, workdir / "LocalCluster")
    print(f"file-system traffic per reduced light: {per_frame / 1e6:.2f} MB ({lights} lights)")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
