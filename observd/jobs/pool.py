"""The worker processes that run CPU-heavy jobs (masters, lights) for ingest and the daemon."""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import threading
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor

from observd.core.align import prepare_astroalign
from observd.core.config import Config
from observd.core.memory import Budget, default_limit_mb
from observd.jobs.lifeline import mark_owner, watch_parent


def worker_pool(config: Config, *, warm: bool = True) -> ProcessPoolExecutor:
    """Worker processes for CPU-heavy jobs, one per core unless `[daemon] workers` says otherwise.

    forkserver, never fork: the parent holds threads (observer, scheduler) and an SQLite connection.
    `warm`: start the workers now (see `warm_up`); otherwise they start with the first job or
    when `warm_up` is called.
    """
    workers = worker_count(config)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_single_threaded_worker)
    if warm:
        warm_up(pool, workers)
    return pool


def start_fork_server() -> None:
    """Start the fork server now, without workers: its imports (~1 s) then run beside the
    caller's own (a command's start-up), and a pool made later forks warm workers at once.
    Cheap to waste: a command that finds no work leaves the server idle, and it exits with
    its parent."""
    from multiprocessing import forkserver

    _context()
    try:
        forkserver.ensure_running()
    except OSError:  # the pool will meet the same problem and report it with the jobs it fails
        pass


_PRELOAD = [
    "observd.jobs.fork_server_lifeline",
    "observd.jobs.light_job",
    "observd.jobs.master_job",
    "scipy.spatial",
    "observd.adapters.previews",
]
"""What the fork server imports once (astropy, sep, OpenCV), so that every worker it forks starts
warm instead of importing them again; first, its lifeline (`jobs.lifeline`). scipy.spatial is
imported by the functions that use it rather than at the top of their modules, and the previews
(which bring matplotlib through astropy.visualization) are drawn by the workers
(`call`), so that a command's own process (which plans, records and writes) does without them."""


def offload(pool: Executor | None, func, *args, **kwargs) -> Future | None:
    """`func(*args, **kwargs)` started in `pool`; None when there is no pool or it takes no work
    (a worker died, or it is shut down): then `outcome` runs it here."""
    if pool is None:
        return None
    try:
        return pool.submit(func, *args, **kwargs)
    except (BrokenExecutor, RuntimeError):
        return None


def outcome(future: Future | None, func, *args, **kwargs):
    """The result of what `offload` started, or of `func(*args, **kwargs)` run here when it was
    not started or its worker died."""
    if future is not None:
        try:
            return future.result()
        except BrokenExecutor:
            pass
    return func(*args, **kwargs)


def call(target: str, *args, **kwargs):
    """Call "module:function": a job a process can hand to the pool without importing the
    module itself (only the name travels)."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


def _context():
    mark_owner()  # before the fork server starts: its processes end with this one (`jobs.lifeline`)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def worker_count(config: Config) -> int:
    """`[daemon] workers`, or one per core: the pool's size, and the shares or threads of a
    combination (masters, stacks)."""
    return config.daemon.workers or os.cpu_count() or 1


def memory_budget(config: Config) -> Budget:
    """`[daemon] memory_limit_mb` on this machine (0: half its memory), with the pool's size."""
    return Budget(config.daemon.memory_limit_mb or default_limit_mb(total_memory_mb()), worker_count(config))


def total_memory_mb() -> int:
    """This machine's physical memory, in MiB."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20


def warm_up(pool: Executor, workers: int) -> None:
    """Start the fork server and the workers now, in the background: their imports (~1 s) then
    overlap the caller's own work (cataloguing, building masters) instead of delaying the first
    job. Starting a forkserver blocks its caller until the server is up, hence the thread."""
    threading.Thread(target=_start_workers, args=(pool, workers), name="pool-warm-up", daemon=True).start()


def _start_workers(pool: Executor, workers: int) -> None:
    try:
        for future in [pool.submit(os.getpid) for _ in range(workers)]:
            future.result()
    except Exception:  # the pool was shut down first, or a worker could not start: the jobs will say
        pass


def _single_threaded_worker() -> None:
    """A pool worker's process set-up (`prepare_worker`); it ends with the fork server and the
    pool's owner (`jobs.lifeline`)."""
    prepare_worker()
    watch_parent()


def prepare_worker() -> None:
    """What every worker process does before its first job, in this host's pool or on a cluster:
    astroalign made deterministic (`prepare_astroalign`), freed buffers kept, and one OpenCV
    thread — parallelism comes from the worker processes, and OpenCV's own thread pool inside
    each of them would only oversubscribe the cores."""
    import cv2

    cv2.setNumThreads(1)
    reuse_freed_memory()
    prepare_astroalign()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():
    """glibc, or None where it is not the C library (then the allocator is left as it is)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def reuse_freed_memory() -> None:
    """Keep freed frame-sized buffers in a worker's heap instead of returning them to the OS.

    glibc serves every allocation above 128 KiB-32 MiB with a fresh mmap and unmaps it on
    free, so each 16 MB temporary of a 2048² frame costs 4,096 page faults (kernel time spent
    zeroing pages) every time it is made: ~15 % of a light's reduction. With the thresholds
    raised, a worker that has once needed N such buffers reuses them for its next light; its
    resident size stays at its peak (at most 256 MiB of free heap is kept) until
    `give_back_freed_memory`. Buffers above 32 MiB (a float32 plane above 8 MP: 88 MiB at
    4800²) are still mapped afresh and returned when freed: per byte their page faults cost the
    same, but a worker holding a big frame's buffers after its light would add them to the tree's
    peak while the other workers stack (4800² night: ~800 -> ~735 MiB; wall time unchanged over
    three runs of each).
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def return_freed_frames() -> None:
    """In the command's (or daemon's) own process: every frame-sized buffer goes back to the OS when
    it is freed. This process only plans, records and writes; the few frames it handles (a
    master finished, a stack written) come and go, and glibc's own rule (its threshold for a
    fresh mapping grows to the largest buffer freed, up to 32 MiB) left them in its heap, which
    fragments and is not given back: ~30 MiB more after the masters of a 2048² night, held for
    the rest of the run. Buffers from 1 MiB on are mapped on their own, and unmapped when freed."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def give_back_freed_memory() -> None:
    """Return a worker's kept free heap (`reuse_freed_memory`) to the OS: before a job that needs far
    less than the light jobs did (a share of a combination, whose bands are a few MiB), so that
    the memory the lights' peak left behind is not held through the stacking as well.
    Measured at 2048²: 130 MiB per worker."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
