"""How much memory a job needs, from its frame's shape, and how many jobs fit in `[daemon] memory_limit_mb`.

The coefficients are measured, not guessed: `benchmarks/measure_footprint.py` reduces each light of
an ingested night again in a fresh process, as a worker would, and reads its resident size after its
imports and its peak (VmHWM, reset through /proc/self/clear_refs) while the light is calibrated,
measured, aligned and written, and how much of that peak is the masters' memory-mapped planes
(RssFile: page-cache pages every worker shares, `observd.jobs.mapped_masters`). Measured for a mono
light, per pixel of the raw frame: without a noise model (gain or read noise unknown) its own memory
12.5 bytes and the masters' mapped planes it touches 9.8 (one plane of bias and dark,
`mapped_masters.dark_offset`, and its mask; the flat's normalised plane), at 4800²; with one
(uncertainty planes calibrated, aligned and written) 37 and 35.6, measured at 2048² before a light's
temporaries were cut (`light_job`), so upper bounds now. A colour light (three planes after
demosaicing) took 84 bytes of its own, measured before a light dropped its raw frame early and
aligned in place (so an upper bound too). A worker's own PSS after its imports is ~40 MiB (the rest
is shared with its fork server); the command's own process and the fork server ~100 MiB before any
frame. The constants below round these up.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20

TREE_MB = 256
"""The command's (or daemon's) own process and the fork server, before any job: not for jobs."""

WORKER_MB = 64
"""A worker's own memory beside its job's frames: its imports (PSS) and the allocator's slack."""

LIGHT_BYTES_PER_PIXEL = 16
"""A mono light job's own peak, per raw pixel, without a noise model (measured 12.5)."""

NOISE_LIGHT_BYTES_PER_PIXEL = 40
"""The same with a noise model: uncertainty planes beside the data (measured 37)."""

COLOUR_LIGHT_BYTES_PER_PIXEL = 88
"""A colour light's (three planes after demosaicing) own peak, per raw pixel (measured 84)."""

NOISE_MASTERS_BYTES_PER_PIXEL = 40
"""The masters' mapped planes a light with a noise model touches (measured 35.6), of the 56 bytes
per pixel `mapped_masters` stores for bias, dark and flat (float32 data and uncertainty and a
bool mask each, the flat's normalised, inverse-square and relative-variance planes, the bias's
and dark's variances)."""

PLAIN_MASTERS_BYTES_PER_PIXEL = 12
"""What a mono light without a noise model touches: the bias and dark as one plane with the three
masters' masks combined (`mapped_masters.dark_offset`) and the flat's normalised plane (measured 9.8)."""

MASTER_PLANES_BYTES_PER_PIXEL = 18
"""A master being built, beside its band-by-band combination (capped by `[masters] memory_limit_mb`):
its float32 data and uncertainty, its mask, and their big-endian copies as they are written
(counted from the planes, not measured)."""


@dataclass(frozen=True)
class Need:
    """What jobs on frames of `shape` (rows, columns) take: each job's own MiB at its peak, and the
    MiB held once per host for all of them (the mapped masters)."""

    job_mb: int
    shared_mb: int
    shape: tuple[int, int]

    @property
    def one_job_mb(self) -> int:
        """The whole tree's memory while one such job runs."""
        return TREE_MB + self.shared_mb + self.job_mb


class MemoryBudgetError(Exception):
    """Not even one job of the frames at hand fits in `[daemon] memory_limit_mb`."""


@dataclass(frozen=True)
class Budget:
    """`[daemon] memory_limit_mb` as resolved on this machine, and the pool's size."""

    limit_mb: int
    workers: int

    def jobs_at_once(self, need: Need) -> int:
        """How many jobs of `need` run at once: what the budget leaves after the process tree's own
        memory and the shared masters, at least one (a job that does not fit at all is refused
        before: `refusal`) and at most one per worker."""
        room = self.limit_mb - TREE_MB - need.shared_mb
        return max(1, min(self.workers, room // max(1, need.job_mb)))

    def refusal(self, need: Need) -> str | None:
        """Why a job of `need` cannot run; None when it can."""
        if need.one_job_mb <= self.limit_mb:
            return None
        rows, cols = need.shape
        return (
            f"one job of a {cols}x{rows} frame needs {need.one_job_mb} MiB "
            f"(with observd's own {TREE_MB} MiB), more than the memory budget of {self.limit_mb} MiB "
            "([daemon] memory_limit_mb)"
        )


def light_need(shape: tuple[int, ...], *, colour: bool, noise: bool = True) -> Need:
    """Light jobs (calibrate, measure, align, write) on raw frames of `shape`, with their masters.
    `noise`: whether the lights have a noise model (gain and read noise known), hence
    uncertainty planes to calibrate, align and write, and more of the masters' planes to read
    (the same for colour lights, whose masters are mosaics like a mono light's)."""
    if colour:
        per_pixel = COLOUR_LIGHT_BYTES_PER_PIXEL
    else:
        per_pixel = NOISE_LIGHT_BYTES_PER_PIXEL if noise else LIGHT_BYTES_PER_PIXEL
    shared = NOISE_MASTERS_BYTES_PER_PIXEL if noise else PLAIN_MASTERS_BYTES_PER_PIXEL
    return Need(WORKER_MB + _mib(shape, per_pixel), _mib(shape, shared), _frame(shape))


def master_need(shape: tuple[int, ...], combine_mb: int) -> Need:
    """Building one master of `shape`: its combination runs band by band within `combine_mb`
    (`[masters] memory_limit_mb`), beside the master's own planes."""
    return Need(WORKER_MB + combine_mb + _mib(shape, MASTER_PLANES_BYTES_PER_PIXEL), 0, _frame(shape))


def stack_need(shape: tuple[int, ...], combine_mb: int, *, colour: bool) -> Need:
    """Building one stack of frames of `shape` as a master is built (`master_need`), within
    `combine_mb` (`[stack] memory_limit_mb`), beside its planes: three sets for a colour cube."""
    planes = MASTER_PLANES_BYTES_PER_PIXEL * (3 if colour else 1)
    return Need(WORKER_MB + combine_mb + _mib(shape, planes), 0, _frame(shape))


def default_limit_mb(total_mb: int) -> int:
    """`[daemon] memory_limit_mb = 0`: half of the machine's memory, leaving the rest to the
    system, the camera's program and the page cache that holds the frames."""
    return max(1, total_mb // 2)


def _frame(shape: tuple[int, ...]) -> tuple[int, int]:
    rows, cols = shape[-2:]
    return (rows, cols)


def _mib(shape: tuple[int, ...], bytes_per_pixel: int) -> int:
    rows, cols = _frame(shape)
    return -(-rows * cols * bytes_per_pixel // MIB)
