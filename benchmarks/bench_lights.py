"""Per-light cost of calibrate + measure + align + write, against ccdproc + astroalign (and Siril).

Simulates a 2048² night (masters built once with observd), then, on the same lights:
  observd   `reduce_light` (calibrate with uncertainty, measure, write calibrated) followed by
            alignment (match, resample data/uncertainty/mask, write aligned) — one process, and
            the same through a 2-worker pool (throughput per light);
  reference `ccdproc.ccd_process` (with uncertainty) + `astroalign.register` + writing both;
  Siril     `preprocess` + `register` on the same raw lights and masters, when `siril-cli` exists.
Prints median seconds per light and the ratios measured in this run.

    python benchmarks/bench_lights.py [--lights 8] [--size 2048] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import astroalign
import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from ccdproc import ccd_process

from observd.adapters.catalog import Catalog
from observd.core.align import prepare_astroalign
from observd.core.config import config_from_dict
from observd.jobs.light_job import Reference, reduce_light
from observd.jobs.pool import reuse_freed_memory, worker_pool
from observd.pipeline.batch import ingest
from observd.pipeline.reducer import Reducer
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night


def _night(root: Path, size: int, n_lights: int):
    write_night(
        root / "raw",
        SimSpec(
            shape=(size, size),
            n_bias=7,
            n_dark=5,
            n_flat=5,
            seed=2,
            truth=False,
            targets=(TargetSpec(n_lights=n_lights, n_stars=400),),
            n_clouded=0,
            n_trailed=0,
        ),
    )
    config = config_from_dict(
        {
            "paths": {"output": str(root / "out"), "database": str(root / "out" / "c.db")},
            "calibrate": {"gain": 1.5, "read_noise": 8.0},
        }
    )
    catalog = Catalog.open(config.paths.database)
    lights = sorted((root / "raw" / "LIGHT").glob("*.fits"))
    # masters only: ingest the calibration frames, then catalogue the lights without reducing them
    ingest([root / "raw" / d for d in ("BIAS", "DARK", "FLAT")], catalog, config)
    return config, catalog, lights


def _observd_jobs(config, catalog, lights):
    """LightJobs exactly as the daemon builds them (first light as the reference)."""
    from observd.core.master_choice import select_masters
    from observd.pipeline.intake import catalogue

    reducer = Reducer(config, catalog)
    masters = catalog.masters(current_only=True)
    jobs = []
    for path in lights:
        seen = catalogue(path, catalog, config)
        row = catalog.file(seen.file_id)
        sel = select_masters(row, masters, config.masters, config.calibrate)
        jobs.append(reducer._lights._light_job(row, sel, 0, None))
    return jobs


def make_reference(reference_result) -> Reference:
    ref = reference_result
    return Reference(ref.file_id, "ref", fits.getdata(ref.calibrated_path).shape, *(tuple(c) for c in zip(*ref.stars)))


def run_observd(jobs, reference) -> list[float]:
    """Seconds per light in one process, as the daemon runs a light once its reference is known."""
    times = []
    for job in jobs:
        t0 = time.perf_counter()
        result = _full((job, reference))
        times.append(time.perf_counter() - t0)
        assert result.aligned and result.aligned.aligned_path
    return times


def _full(job_and_ref):
    job, reference = job_and_ref
    import dataclasses

    return reduce_light(dataclasses.replace(job, reference=reference))


def run_observd_pool(config, jobs, reference) -> float:
    """Throughput per light through the daemon's own worker pool (one worker per core)."""
    with worker_pool(config) as pool:
        list(pool.map(_full, [(jobs[0], reference)] * (os.cpu_count() or 1)))  # warm the workers up
        t0 = time.perf_counter()
        results = list(pool.map(_full, [(j, reference) for j in jobs]))
        elapsed = time.perf_counter() - t0
    assert all(r.aligned and r.aligned.aligned_path for r in results)
    return elapsed / len(jobs)


def run_reference(catalog, lights, out: Path, gain: float, rdnoise: float):
    masters = {m["type"]: m for m in catalog.masters(current_only=True)}

    def ccd(path):
        with fits.open(path) as h:
            return CCDData(
                h[0].data.astype(np.float32),
                unit="adu",
                meta=h[0].header,
                uncertainty=StdDevUncertainty(h["UNCERT"].data.astype(np.float32)),
            )

    bias, dark, flat = (ccd(masters[k]["path"]) for k in ("bias", "dark", "flat"))
    out.mkdir(parents=True, exist_ok=True)
    ref_data = None
    times = []
    for path in lights:
        t0 = time.perf_counter()
        raw = CCDData.read(path, unit="adu")
        cal = ccd_process(
            raw,
            error=True,
            gain=gain * u.electron / u.adu,
            readnoise=rdnoise * u.electron,
            master_bias=bias,
            dark_frame=dark,
            master_flat=flat,
            exposure_key="EXPTIME",
            exposure_unit=u.s,
            dark_scale=True,
            gain_corrected=False,
        )
        cal.write(out / f"cal_{path.name}", overwrite=True)
        if ref_data is None:
            ref_data = cal.data
        aligned, footprint = astroalign.register(cal.data, ref_data)
        CCDData(aligned, unit=cal.unit, mask=footprint).write(out / f"al_{path.name}", overwrite=True)
        times.append(time.perf_counter() - t0)
    return times


def run_siril(catalog, lights, work: Path) -> float | None:
    if not shutil.which("siril-cli"):
        return None
    masters = {m["type"]: m for m in catalog.masters(current_only=True)}
    work.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(lights, start=1):
        shutil.copy(path, work / f"light_{i:05d}.fit")
    for kind in ("bias", "dark", "flat"):
        data = fits.getdata(masters[kind]["path"]).astype(np.float32)
        fits.PrimaryHDU(data).writeto(work / f"master_{kind}.fit", overwrite=True)
    (work / "run.ssf").write_text(
        "requires 1.0.0\n"
        "setext fit\n"
        "convert light -out=seq\n"
        "cd seq\n"
        "preprocess light -bias=../master_bias.fit -dark=../master_dark.fit -flat=../master_flat.fit\n"
        "register pp_light\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(["siril-cli", "-d", str(work), "-s", str(work / "run.ssf")], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not list((work / "seq").glob("r_pp_light*")):
        print("siril failed:", (proc.stdout + proc.stderr)[-800:])
        return None
    return elapsed / len(lights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lights", type=int, default=8)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    reuse_freed_memory()  # as in observd's own processes (the CLI and the pool's workers)
    prepare_astroalign()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_lights_"))
    try:
        config, catalog, lights = _night(root, args.size, args.lights)
        jobs = _observd_jobs(config, catalog, lights)
        reference = make_reference(reduce_light(jobs[0]))
        ours = run_observd(jobs, reference)
        pooled = run_observd_pool(config, jobs, reference)
        theirs = run_reference(catalog, lights, root / "reference", 1.5, 8.0)
        siril = run_siril(catalog, lights, root / "siril")
        catalog.close()
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    o, r = statistics.median(ours), statistics.median(theirs)
    print(f"{args.lights} lights of {args.size}², seconds per light (median):")
    print(f"  observd, one process:           {o:.3f} s")
    print(f"  observd, {os.cpu_count()} workers (throughput): {pooled:.3f} s")
    print(
        f"  ccdproc + astroalign:           {r:.3f} s   -> observd is {r / o:.1f}x faster (one process), "
        f"{r / pooled:.1f}x (pool)"
    )
    if siril is not None:
        print(f"  Siril preprocess + register:    {siril:.3f} s   -> observd/Siril = {pooled / siril:.2f} (pool)")
    else:
        print("  Siril: not installed or failed (siril-cli)")


if __name__ == "__main__":
    main()
