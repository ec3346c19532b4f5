"""Where the reducer's jobs run: this host's worker pool, or a cluster whose workers are elsewhere.

The reducer hands its jobs to a `concurrent.futures.Executor`. By default that is this host's
worker pool (`jobs.pool`): its workers share this host's memory, so they can write their share of
a combination straight into planes this process maps (`jobs.shares`) and be handed a stack's
arrays to draw. A `Cluster` is the other implementation of the same interface
(`jobs.dask_cluster`: Dask's distributed scheduler), with three differences the stages act on:

- its workers may be on other hosts and see only the shared file system: a job takes paths and
  small parameters and returns a record, and a master or a stack is built whole by one job
  instead of being shared out (`master_stage`, `stacking`); masters are mapped from each
  worker's own host (`LightJob.planes_on_host`);
- it places each job by its memory need (`submit_sized`) on a worker that has room, instead of
  this host's `[daemon] memory_limit_mb`; a job no worker has room for is refused (`refusal`);
- a job whose worker died is run again on another worker by the cluster itself; one that
  killed several workers comes back as `WorkerLost`, a failure of its frame like any other; a
  lost scheduler stops the run (`ClusterLost`).

Only the process that submits the jobs (the driver) writes the catalog, whichever runs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor, Future

from observd.core.memory import Need


class WorkerLost(Exception):
    """The cluster gave up on a job: the workers that ran it died (out of memory, a crash in a library)."""


class ClusterLost(BaseException):
    """The cluster's scheduler was lost mid-run. Like an interrupt, a BaseException: no frame is
    at fault, so no `except Exception` that records a frame's failure may take it for one. The
    run stops; what was recorded stays, and the jobs in flight leave their frames as they were."""


class ClusterError(Exception):
    """The cluster cannot be used: its scheduler cannot be reached, it has no workers, or a worker
    cannot see the files. A usage error: nothing has been processed."""


class Cluster(Executor, ABC):
    """An Executor whose workers need not be on this host (module docstring)."""

    dashboard: str | None = None
    """The address of the cluster's dashboard page, when it has one."""

    @abstractmethod
    def submit_sized(self, need: Need | None, fn: Callable, /, *args) -> Future:
        """`fn(*args)` on a worker that has room for `need` (None: anywhere); when no worker has,
        a future that raises `MemoryBudgetError` with both numbers (`refusal`), without running."""

    @abstractmethod
    def refusal(self, need: Need) -> str | None:
        """Why no worker can run a job of `need`; None when one can."""

    @abstractmethod
    def in_flight(self, window: int) -> int:
        """How many jobs to keep submitted at once: `[daemon] queue_size`, or more on a cluster
        with more worker threads, so that no worker waits for the driver."""
