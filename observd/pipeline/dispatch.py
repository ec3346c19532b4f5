"""Running a pass's jobs, in the worker pool when there is one, and carrying back every outcome.

A job that raises comes back as a `Failure` (message and traceback) instead of stopping the
pass; a job whose worker process died comes back as a `Failure` too, so it counts as an
attempt and a frame that kills its worker every time ends up failed instead of killing the
daemon's pool for ever.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, wait
from dataclasses import dataclass

from observd.adapters.catalog import Catalog
from observd.core.config import Config
from observd.pipeline.events import Events

Fail = Callable[[int, str, BaseException | str, str], None]  # (file id, path, error, traceback)


@dataclass
class StageContext:
    """What the reducer's stages work with; one object, so that a new configuration (a reload) or
    new workers (after a crash) reach every stage at once."""

    config: Config
    catalog: Catalog
    events: Events
    fail: Fail
    pool: Executor | None
    clock: Callable[[], float]
    should_stop: Callable[[], bool]


class Stage:
    """One of the reducer's stages: its `step()` is a pass over the catalog, in `context`."""

    def __init__(self, context: StageContext):
        self.context = context

    config = property(lambda self: self.context.config)
    catalog = property(lambda self: self.context.catalog)
    events = property(lambda self: self.context.events)
    pool = property(lambda self: self.context.pool)

    def fail(self, file_id: int, path: str, error: BaseException | str, tb: str = "") -> None:
        self.context.fail(file_id, path, error, tb)


class WorkerDied(Exception):
    """A worker process ended abruptly while running a job (killed by the OOM killer, a segfault)."""


class Failure:
    """A job that raised: carried back from the worker instead of the exception, with its traceback."""

    def __init__(self, exc: BaseException, tb: str | None = None):
        self.message = f"{type(exc).__name__}: {exc}"
        self.tb = traceback.format_exc() if tb is None else tb


def _call(func: Callable, job):
    try:
        return func(job)
    except Exception as exc:
        return Failure(exc)


def run_jobs(
    pool: Executor | None, tasks: list[tuple[Callable, object]], *, window: int, should_stop: Callable[[], bool]
) -> Iterator[tuple[object, object]]:
    """(job, result or Failure) for each (function, job) task, in completion order.

    In the pool at most `window` jobs are in flight at once (a burst cannot queue every frame's
    work in memory), and no new job starts once `should_stop()` is true (jobs in flight finish).
    Without a pool, or for a single task, the jobs run here.
    """
    if pool is None or len(tasks) < 2:
        for func, job in tasks:
            if should_stop():
                return
            yield job, _call(func, job)
        return
    pending = iter(tasks)
    in_flight: dict = {}
    while True:
        while len(in_flight) < max(1, window) and not should_stop():
            task = next(pending, None)
            if task is None:
                break
            in_flight[pool.submit(_call, *task)] = task[1]
        if not in_flight:
            return
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            job = in_flight.pop(future)
            try:
                outcome = future.result()
            except BrokenExecutor as exc:
                # the next submit raises too: the daemon then replaces the pool
                outcome = Failure(
                    WorkerDied(f"the worker process reducing it died ({exc}): out of memory, or a crash in a library")
                )
            yield job, outcome
