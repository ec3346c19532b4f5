"""A combination shared out among worker processes, written straight into shared planes.

`observd.core.combine` runs bands on threads, which contend for the GIL between numpy
calls; processes do not. With a process pool, the rows are therefore cut into one share per
worker, each combined by `combine` on one thread in its worker process. The sources travel
to the workers by pickle (a compressed file is then decoded once per share); the workers
write their rows straight into planes shared with this process (`_SharedPlanes`).
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from observd.core.combine import Combined, FrameSource, combine, params
from observd.jobs.lifeline import alive
from observd.jobs.mapped_masters import unmap_masters
from observd.jobs.pool import give_back_freed_memory, offload, outcome

__all__ = ["SharedPlane", "combine_in_pool", "shared", "with_shared"]

_SHARED_PREFIX = "observd-combine-"


def combine_in_pool(
    sources: Sequence[FrameSource],
    *,
    executor: Executor | None,
    workers: int | None = None,
    memory_limit: int = 1 << 30,
    **options,
) -> Combined:
    """`combine(sources, **options)` with its rows cut into `workers` shares (default: one per
    core), each combined by one of `executor`'s workers within `memory_limit // workers`.

    A share the pool takes no work for, or whose worker died, is combined here instead. The
    whole combination runs here, on `workers` threads within `memory_limit`, when there is no
    pool, fewer than two rows per share, or no room for the shared planes.

    Raises:
        ValueError: as `combine` (no sources, shapes differ, bad options), before any share starts.
    """
    params(sources, **options)  # bad options fail here, not in every worker
    workers = max(1, workers or os.cpu_count() or 1)
    shape = tuple(sources[0].shape)
    output = None
    if executor is not None and workers > 1 and shape[0] >= 2 * workers:
        try:
            output = _SharedPlanes.create(shape)
        except OSError:  # no room for them
            output = None
    if output is None:
        return combine(sources, memory_limit=memory_limit, workers=workers, **options)
    try:
        bounds = np.linspace(0, shape[0], workers + 1).astype(int)
        shares = [
            (list(sources), int(y0), int(y1), memory_limit // workers, options, output)
            for y0, y1 in zip(bounds[:-1], bounds[1:])
        ]
        started = [offload(executor, _combine_share, *share) for share in shares]
        for future, share in zip(started, shares):
            outcome(future, _combine_share, *share)
        return output.planes()
    finally:
        os.unlink(output.path)  # the mapping stays valid: the memory goes with the last array


def _combine_share(
    sources: list[FrameSource], y0: int, y1: int, memory_limit: int, options: dict, output: _SharedPlanes
) -> None:
    """One worker process's share of a combination: rows y0..y1 of every frame, on one
    thread, written into the shared planes. The worker first lets go of what its light jobs
    left: their masters' maps (`unmap_masters`; a flat's share maps its bias and dark again) and
    the heap they kept (`give_back_freed_memory`), since a share's bands need a few MiB; and
    after it, the maps it made (a flat's bias and dark), which the lights that follow in this
    worker may not use (`mapped_masters.dark_offset`)."""
    unmap_masters()
    give_back_freed_memory()
    try:
        combine(
            [_Rows(src, y0, y1) for src in sources],
            memory_limit=memory_limit,
            workers=1,
            out=output.planes(y0, y1),
            **options,
        )
    finally:
        unmap_masters()


@dataclass(frozen=True)
class _SharedPlanes:
    """A combination's output planes (data, uncertainty, count) in a file that the parent and
    its worker processes map: each worker writes its rows in place, and the parent's planes
    are the file's pages. Returning the rows through the pool instead pickled, piped,
    unpickled and concatenated them, four frame-sized copies in fresh memory while the workers
    waited. The file: `_shared_file`."""

    path: str
    shape: tuple[int, int]

    @classmethod
    def create(cls, shape: tuple[int, int]) -> _SharedPlanes:
        return cls(_shared_file(cls._bytes(shape)), shape)

    @staticmethod
    def _bytes(shape: tuple[int, int]) -> int:
        return shape[0] * shape[1] * 10  # float32 data and uncertainty, uint16 count

    def planes(self, y0: int = 0, y1: int | None = None) -> Combined:
        """Rows y0..y1 of the three planes, as arrays on a shared mapping of the file."""
        with open(self.path, "r+b") as fh:
            mapping = mmap.mmap(fh.fileno(), self._bytes(self.shape))
        n = self.shape[0] * self.shape[1]
        data, unc, count = (
            np.frombuffer(mapping, dtype, n, offset).reshape(self.shape)[y0:y1]
            for dtype, offset in ((np.float32, 0), (np.float32, 4 * n), (np.uint16, 8 * n))
        )
        return Combined(data, unc, count)


@dataclass(frozen=True)
class SharedPlane:
    """A frame-sized argument for another process of this host: a file in shared memory that it
    maps read-only (`with_shared`), instead of a pickled copy of the array in this process and an
    unpickled one in the worker (a stack's data, measured by one worker and drawn by another)."""

    path: str
    shape: tuple[int, ...]
    dtype: str

    def array(self) -> np.ndarray:
        return np.memmap(self.path, np.dtype(self.dtype), "r", shape=self.shape)


@contextmanager
def shared(array: np.ndarray) -> Iterator[SharedPlane | np.ndarray]:
    """`array` as a `SharedPlane` for the duration of the block (the file is removed after it;
    a worker still mapping it keeps its pages), or the array itself when shared memory has no
    room for it (then it is pickled, as any argument)."""
    array = np.ascontiguousarray(array)
    try:
        path = _shared_file(array.nbytes)
    except OSError:
        yield array
        return
    try:
        with open(path, "r+b") as fh:
            fh.write(array.data)
        yield SharedPlane(path, array.shape, array.dtype.str)
    finally:
        os.unlink(path)


def with_shared(func, *args, **kwargs):
    """`func(*args, **kwargs)` with each `SharedPlane` among them mapped: what a worker runs."""

    def resolved(value):
        return value.array() if isinstance(value, SharedPlane) else value

    return func(*map(resolved, args), **{key: resolved(value) for key, value in kwargs.items()})


def _shared_file(size: int) -> str:
    """A new file of `size` bytes for this host's processes to map: in /dev/shm where there is one
    (memory, no disk writes), else the temporary folder; named after this process, so that one
    left by a killed process is removed by the next (`_remove_orphans`). Raises OSError when there
    is no room."""
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    _remove_orphans(Path(folder))
    fd, path = tempfile.mkstemp(prefix=f"{_SHARED_PREFIX}{os.getpid()}-", dir=folder)
    try:
        # the space is taken now: a full tmpfs raises here, instead of killing a worker with
        # SIGBUS when it first writes to a page that cannot be had
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, max(1, size))
        else:
            os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def _remove_orphans(folder: Path) -> None:
    """Shared planes whose process is gone (killed while it combined)."""
    for path in folder.glob(f"{_SHARED_PREFIX}*"):
        pid = path.name[len(_SHARED_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Rows:
    """Rows y0..y1 of a source, seen as a frame of their own (a worker's share)."""

    source: FrameSource
    y0: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.source.shape[1])

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        return self.source.read_rows(self.y0 + y0, self.y0 + y1)
