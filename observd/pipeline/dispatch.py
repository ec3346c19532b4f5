"""Running a pass's jobs, in the worker pool when there is one, and carrying back every outcome.

A job that raises comes back as a `Failure` (message and traceback) instead of stopping the
pass; a job whose worker process died comes back as a `Failure` too, so it counts as an
attempt and a frame that kills its worker every time ends up failed instead of killing the
daemon's pool for ever. Within `[daemon] memory_limit_mb`, big frames mean fewer jobs at once,
and a job that cannot fit at all comes back as a `Failure` without running: refused, not
killed by the OOM killer half-way.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, wait
from dataclasses import dataclass

from observd.adapters.catalog import Catalog
from observd.core.config import Config
from observd.core.memory import Budget, MemoryBudgetError, Need
from observd.jobs.cluster import Cluster, WorkerLost
from observd.jobs.pool import memory_budget
from observd.pipeline.events import Events

Fail = Callable[[int, str, BaseException | str, str], None]  # (file id, path, error, traceback)

Footprint = Callable[[object], Need]
"""What a job needs in memory: `observd.jobs.light_job.footprint`."""


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

    @property
    def budget(self) -> Budget:
        """`[daemon] memory_limit_mb` on this machine, as the configuration says now (a reload)."""
        return memory_budget(self.config)

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
    pool: Executor | None,
    tasks: list[tuple[Callable, object]],
    *,
    window: int,
    should_stop: Callable[[], bool],
    budget: Budget | None = None,
    footprint: Footprint | None = None,
) -> Iterator[tuple[object, object]]:
    """(job, result or Failure) for each (function, job) task, in completion order.

    In the pool at most `window` jobs are in flight at once (a burst cannot queue every frame's
    work in memory), and no new job starts once `should_stop()` is true (jobs in flight finish).
    With a `budget`, each job's `footprint` decides: fewer jobs at once when the biggest needs
    more than the budget leaves per worker (`Budget.jobs_at_once`), and a job that does not fit
    even alone is refused. Without a pool, or for a single task, the jobs run here.

    On a `Cluster`, each job's `footprint` places it instead (`Cluster.submit_sized`): on a
    worker with room for it, and refused when no worker has that much (`Cluster.refusal`).
    """
    cluster = pool if isinstance(pool, Cluster) else None
    needs: dict[int, Need] = {}
    if budget is not None and footprint is not None:
        tasks, refused, needs = _within(cluster.refusal if cluster else budget.refusal, footprint, tasks)
        yield from refused
        at_once = min((budget.jobs_at_once(need) for need in needs.values()), default=budget.workers)
        if cluster is None and at_once < budget.workers:  # otherwise the pool's own size limits them
            window = min(window, at_once)
    if pool is None or len(tasks) < 2:
        for func, job in tasks:
            if should_stop():
                return
            yield job, _call(func, job)
        return
    if cluster is not None:
        window = cluster.in_flight(window)
        submit = lambda task: cluster.submit_sized(needs.get(id(task[1])), _call, *task)
    else:
        submit = lambda task: pool.submit(_call, *task)
    pending = iter(tasks)
    in_flight: dict = {}
    while True:
        while len(in_flight) < max(1, window) and not should_stop():
            task = next(pending, None)
            if task is None:
                break
            in_flight[submit(task)] = task[1]
        if not in_flight:
            return
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            job = in_flight.pop(future)
            try:
                outcome = future.result()
            except (BrokenExecutor, WorkerLost) as exc:
                # a broken pool (the next submit raises too: the daemon then replaces the pool),
                # or a cluster's job whose workers kept dying
                outcome = Failure(
                    WorkerDied(f"the worker process reducing it died ({exc}): out of memory, or a crash in a library")
                )
            yield job, outcome


def _within(refusal: Callable[[Need], str | None], footprint: Footprint, tasks: list) -> tuple[list, list, dict]:
    """The tasks whose job `refusal` lets run, (job, Failure) for each it does not, and the need
    of each job that runs (by `id` of the job). A job whose frame cannot be read is left to fail
    as it runs, with its reason."""
    fitting, refused, needs = [], [], {}
    for task in tasks:
        try:
            need = footprint(task[1])
        except (OSError, ValueError, KeyError):
            fitting.append(task)
            continue
        reason = refusal(need)
        if reason:
            refused.append((task[1], Failure(MemoryBudgetError(reason), tb="")))
        else:
            fitting.append(task)
            needs[id(task[1])] = need
    return fitting, refused, needs
