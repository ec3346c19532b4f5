"""observd's jobs on Dask's distributed scheduler: a `Cluster` (`jobs.cluster`) over a `distributed.Client`.

`open_cluster("local:N", config)` starts a LocalCluster of N single-threaded worker processes on
this host; any other address is a running scheduler's (`tcp://host:8786`), whose workers were
started with `dask worker ADDRESS --nthreads 1 --resources MEMORY_MB=...` (README, "Running on a
Dask cluster").

Placement: every worker declares how much memory its jobs may take, as the `MEMORY_MB` resource,
and every job asks for its own need (`observd.core.memory`), so the scheduler runs a big frame's
job only on a worker with that much room, and never more jobs at once on a worker than fit in
it. A job that asks for a resource no worker has would wait for ever: such a job is refused
instead (`refusal`), and a cluster whose workers declare no `MEMORY_MB` is refused at start.

Worker loss: the scheduler runs a task whose worker died again on another worker (up to
`distributed.scheduler.allowed-failures`, 3 by default); only the result of the run that
finished comes back, once, to the driver, which alone records it. Outputs are written
atomically, so a run cut short leaves nothing half-written behind. A lost scheduler (the client
gives up reconnecting, the futures are cancelled) stops the run: `ClusterLost`.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from pathlib import Path

from distributed import Client, LocalCluster, WorkerPlugin
from distributed.scheduler import KilledWorker

from observd import __version__
from observd.core.config import Config
from observd.core.memory import TREE_MB, MemoryBudgetError, Need
from observd.jobs.cluster import Cluster, ClusterError, ClusterLost, WorkerLost
from observd.jobs.pool import memory_budget, prepare_worker

RESOURCE = "MEMORY_MB"
"""The resource by which workers declare, and jobs ask for, memory (MiB)."""

LOCAL = "local:"


def open_cluster(address: str, config: Config) -> DaskCluster:
    """A client of the scheduler at `address` ("local:N": a LocalCluster of N workers started
    here), with at least one worker that offers `MEMORY_MB`.

    Raises:
        ClusterError: the address is malformed, the scheduler cannot be reached or has no
        suitable worker within `[cluster] timeout`.
    """
    timeout = config.cluster.timeout
    if address.startswith(LOCAL):
        n = address[len(LOCAL) :]
        if not n.isdigit() or int(n) < 1:
            raise ClusterError(f"cluster {address!r}: expected local:N with N >= 1 workers, e.g. local:4")
        local = _local_cluster(int(n), config)
        client = Client(local, timeout=timeout)
    else:
        local = None
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    cluster = DaskCluster(client, local, address)
    try:
        try:
            client.register_plugin(_PreparedWorker(), name="observd-worker")
        except Exception as exc:  # raised by the workers: most often, observd is not installed there
            raise ClusterError(
                f"the workers of the Dask scheduler at {address} cannot prepare observd's jobs "
                f"({type(exc).__name__}: {exc}): install the same observd on every host"
            ) from None
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ClusterError(f"the Dask scheduler at {address} has no worker after {timeout:g} s") from None
        if not cluster.offered_mb():
            raise ClusterError(
                f"no worker of the Dask scheduler at {address} declares the {RESOURCE} resource: start them with "
                f"`dask worker {address} --nthreads 1 --resources {RESOURCE}=<MiB for observd's jobs>`"
            )
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def _local_cluster(n: int, config: Config) -> LocalCluster:
    """N single-threaded worker processes here, sharing this host's `[daemon] memory_limit_mb`;
    their dashboard on a free port (8787 may be taken)."""
    per_worker = max(1, (memory_budget(config).limit_mb - TREE_MB) // n)
    return LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        resources={RESOURCE: per_worker},
    )


class _PreparedWorker(WorkerPlugin):
    """Every worker, those that join later too, set up as a pool worker is (`prepare_worker`)."""

    def setup(self, worker) -> None:
        prepare_worker()


class DaskCluster(Cluster):
    """observd's `Cluster` on a Dask client; `shutdown` closes the client (and a LocalCluster it started)."""

    def __init__(self, client: Client, local: LocalCluster | None = None, address: str = ""):
        self.client = client  # for what observd does not wrap: the workers' processes, the scheduler's state
        self._local = local
        self._address = address or client.scheduler.address
        try:
            self.dashboard = client.dashboard_link
        except KeyError:  # a scheduler started without its dashboard (no Bokeh there)
            self.dashboard = None
        self._largest = (0, -float("inf"))  # (MiB, when asked)

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        return self._submit(fn, *args, pure=False, **kwargs)

    def submit_sized(self, need: Need | None, fn: Callable, /, *args) -> Future:
        reason = None if need is None else self.refusal(need)
        if reason:  # it would wait for a worker for ever
            refused: Future = Future()
            refused.set_exception(MemoryBudgetError(reason))
            return refused
        return self._submit(fn, *args, pure=False, resources=None if need is None else {RESOURCE: need.job_mb})

    def _submit(self, fn: Callable, *args, **kwargs) -> Future:
        if self.client.status in ("closing", "closed"):  # it gave up reconnecting to the scheduler
            raise self._lost(f"the client is {self.client.status}")
        return self._wrap(self.client.submit(fn, *args, **kwargs))

    def refusal(self, need: Need) -> str | None:
        largest = self._largest_mb()
        if need.job_mb <= largest:
            return None
        rows, cols = need.shape
        return (
            f"one job of a {cols}x{rows} frame needs {need.job_mb} MiB, more than any Dask worker offers "
            f"(the largest {RESOURCE} is {largest} MiB: fewer workers per host, each with more)"
        )

    def in_flight(self, window: int) -> int:
        threads = sum(w.get("nthreads", 1) for w in self._workers().values())
        return max(window, 2 * threads)

    def _largest_mb(self) -> int:
        """The most `MEMORY_MB` a worker offers, asked of the scheduler at most once a second: a
        pass asks it for every job it plans."""
        now = time.monotonic()
        if now - self._largest[1] > 1.0:
            self._largest = (max(self.offered_mb(), default=0), now)
        return self._largest[0]

    def offered_mb(self) -> list[int]:
        """The `MEMORY_MB` each worker now connected offers (workers without it take no observd job)."""
        return [int(w["resources"][RESOURCE]) for w in self._workers().values() if RESOURCE in w.get("resources", {})]

    def check_visible(self, paths: list[Path], output: Path) -> None:
        """Every worker runs this observd, sees `paths` and writes into `output` on the same file
        system as this process: a probe file written here must be read there, and the folder
        must be writable.

        Raises:
            ClusterError: naming the first worker (and host) that does not, and what it misses.
        """
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".observd-probe-{uuid.uuid4().hex}"
        probe.write_text(probe.name)
        try:
            problems = self.client.run(_unseen, [str(p) for p in paths], str(probe), __version__)
        finally:
            probe.unlink(missing_ok=True)
        for worker, (host, missing) in sorted(problems.items()):
            if missing:
                raise ClusterError(f"Dask worker {worker} on {host} {missing[0]}")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.client.close()
        if self._local is not None:
            self._local.close()

    def _workers(self) -> dict:
        """The scheduler's workers now: asked of the scheduler itself, since `Client.scheduler_info`
        returns a copy that the client's periodic update replaces with one without workers."""
        try:
            return self.client.sync(self.client.scheduler.identity, n_workers=-1)["workers"]
        except OSError as exc:
            raise self._lost(exc) from None

    def _lost(self, why) -> ClusterLost:
        return ClusterLost(
            f"lost the Dask scheduler at {self._address} ({' '.join(str(why).split())}): what was recorded stays, "
            "and the same command again goes on from there"
        )

    def _wrap(self, future) -> Future:
        """The Dask future as a concurrent.futures one (what `run_jobs` waits on); a task the
        scheduler gave up on because its workers kept dying comes back as `WorkerLost`."""
        done: Future = Future()
        done.set_running_or_notify_cancel()

        def transfer(finished) -> None:
            try:
                done.set_result(finished.result())
            except KilledWorker as exc:
                done.set_exception(WorkerLost(f"the Dask workers that ran it died ({exc})"))
            except CancelledError as exc:  # observd cancels nothing: the scheduler was lost
                done.set_exception(self._lost(exc))
            except BaseException as exc:  # the job's own error
                done.set_exception(exc)

        future.add_done_callback(transfer)
        return done


_SHARED = (
    "inputs and outputs must be on a file system every host mounts at the same path "
    "(README, 'Running on a Dask cluster')"
)


def _unseen(paths: list[str], probe: str, version: str) -> tuple[str, list[str]]:
    """On a worker: its host, and what it cannot see of `paths` and the output folder of `probe`
    (or another observd than the driver's `version`, whose results could differ), each with what to do."""
    missing = (
        [] if __version__ == version else [f"runs observd {__version__}, not {version} as this host: install the same"]
    )
    missing += [f"cannot see {p}: {_SHARED}" for p in paths if not os.path.exists(p)]
    folder = os.path.dirname(probe)
    try:
        with open(probe) as f:
            same = f.read() == os.path.basename(probe)
    except OSError:
        same = False
    if not same:
        missing.append(f"does not see the output folder {folder} this host writes: {_SHARED}")
    elif not os.access(folder, os.W_OK):
        missing.append(f"cannot write into the output folder {folder}")
    return socket.gethostname(), missing
