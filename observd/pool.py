"""The worker processes that run CPU-heavy jobs (masters, lights) for ingest and the daemon."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from .config import Config


def worker_pool(config: Config) -> ProcessPoolExecutor:
    """Worker processes for CPU-heavy jobs, one per core unless `[daemon] workers` says otherwise.

    forkserver, never fork: the parent holds threads (observer, scheduler) and an SQLite connection.
    """
    workers = config.daemon.workers or os.cpu_count() or 1
    context = multiprocessing.get_context("forkserver")
    # the fork server imports the job modules once (astropy, sep, OpenCV: ~1 s), so every worker
    # it forks starts warm instead of importing them again
    context.set_forkserver_preload(["observd.lights", "observd.masters"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_threaded_worker)


def _single_threaded_worker() -> None:
    """Parallelism comes from the worker processes: OpenCV's own thread pool inside each of them
    would only oversubscribe the cores."""
    import cv2
    cv2.setNumThreads(1)
