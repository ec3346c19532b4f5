"""How much memory one light job takes in a worker: the measurements behind `observd.core.memory`.

Reduces every light of an ingested night again (calibrate, measure, align to the night's
reference, write to a scratch folder), each in a fresh process, as a worker would, and prints
per light: the process's resident size after its imports (the worker's fixed cost), the peak
above that while the light is reduced (VmHWM after resetting it through /proc/self/clear_refs),
and how much of it is the masters' memory-mapped planes (file pages, shared by every worker
through the page cache: RssFile), in MiB and in bytes per pixel of the frame.

    python benchmarks/measure_footprint.py -c CONFIG.toml   # a night already `observd ingest`ed
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import tempfile
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.adapters.config_file import load_config
from observd.pipeline.dispatch import StageContext
from observd.pipeline.events import Events
from observd.pipeline.light_stage import LightStage


def _status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) << 10
    raise KeyError(key)


def _measure(job, shape, queue) -> None:
    from observd.adapters import previews  # noqa: F401  (preloaded by the fork server, as in a worker)
    from observd.jobs import light_job

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    base, files = _status("VmRSS"), _status("RssFile")
    light_job.reduce_light(job)
    queue.put((base, _status("VmHWM") - base, _status("RssFile") - files, shape))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    catalog = Catalog.open(config.paths.database, readonly=True)
    context = StageContext(
        config, catalog, Events(catalog, logging.getLogger(__name__)), lambda *a: None, None, lambda: 0.0, lambda: False
    )
    stage = LightStage(context)
    rows = [dict(r, state="classified") for r in catalog.files(types=("light",))]
    references = stage.alignment.references(catalog.files(types=("light",)))
    jobs = stage._light_jobs(rows, references, final=True)
    shapes = {r["id"]: (r["naxis2"], r["naxis1"]) for r in rows}
    ctx = multiprocessing.get_context("spawn")  # a fresh process: nothing cached from the last light
    with tempfile.TemporaryDirectory() as scratch:
        for job in jobs:
            job = dataclasses.replace(
                job,
                calibrated_path=str(Path(scratch, "c.fits")),
                aligned_path=str(Path(scratch, "a.fits")),
                thumbnail_path=str(Path(scratch, "t.png")),
            )
            queue = ctx.Queue()
            p = ctx.Process(target=_measure, args=(job, shapes[job.file_id], queue))
            p.start()
            base, peak, mapped, (h, w) = queue.get()
            p.join()
            pixels = w * h
            print(
                f"{Path(job.path).name} {w}x{h} colour={bool(job.bayer)} aligned={job.reference is not None}: "
                f"worker {base / 2**20:.0f} MiB, peak +{peak / 2**20:.0f} MiB ({peak / pixels:.1f} B/px), "
                f"of which mapped masters {mapped / 2**20:.0f} MiB ({mapped / pixels:.1f} B/px), "
                f"own {(peak - mapped) / 2**20:.0f} MiB ({(peak - mapped) / pixels:.1f} B/px)"
            )


if __name__ == "__main__":
    main()
