"""`observd ingest --cluster`: the jobs on Dask's distributed scheduler (`jobs.dask_cluster`).

Placement by memory, workers that cannot see the files or run another observd, a worker killed
mid-run, an unreachable or lost scheduler; and the same catalog, masters and stacks as this
host's pool over five nights.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from distributed import Client, Scheduler, SpecCluster, Worker, get_worker
from support import make_config, simulate

from observd.adapters.catalog import Catalog
from observd.cli.main import main
from observd.core.memory import Budget, MemoryBudgetError, Need
from observd.jobs import dask_cluster
from observd.jobs.cluster import ClusterError, ClusterLost
from observd.jobs.dask_cluster import RESOURCE, DaskCluster, open_cluster
from observd.pipeline.batch import ingest
from observd.pipeline.dispatch import Failure, run_jobs
from observd.pipeline.reducer import Reducer
from observd.sim.spec import TargetSpec

# -- placement by memory -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_and_big():
    """Two in-process workers: 'small' offers 100 MiB on one thread, 'big' 1000 MiB on two."""
    spec = {
        name: {"cls": Worker, "options": {"nthreads": threads, "resources": {RESOURCE: mb}, "name": name}}
        for name, threads, mb in (("small", 1, 100), ("big", 2, 1000))
    }
    local = SpecCluster(
        scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}, workers=spec, asynchronous=False
    )
    with DaskCluster(Client(local), local) as cluster:
        cluster.client.wait_for_workers(2)
        yield cluster


def _where(job):
    """A job that tells which worker ran it, and when."""
    start = time.monotonic()
    time.sleep(0.2)
    return get_worker().name, start, time.monotonic()


def _run(cluster, needs_mb):
    tasks = [(_where, mb) for mb in needs_mb]
    return list(
        run_jobs(
            cluster,
            tasks,
            window=16,
            should_stop=lambda: False,
            budget=Budget(1 << 20, 1),
            footprint=lambda mb: Need(mb, 0, (100, 100)),
        )
    )


def test_a_big_frame_runs_only_on_a_worker_with_room_for_it(small_and_big):
    outcomes = _run(small_and_big, [500] * 4)
    assert {where for _, (where, _, _) in outcomes} == {"big"}
    spans = sorted((start, end) for _, (_, start, end) in outcomes)
    # two fit in big's 1000 MiB at once
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_no_more_jobs_at_once_on_a_worker_than_fit_in_it(small_and_big):
    outcomes = _run(small_and_big, [600] * 3)
    spans = sorted((start, end) for _, (_, start, end) in outcomes)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_small_frames_use_every_worker(small_and_big):
    outcomes = _run(small_and_big, [50] * 12)
    assert {where for _, (where, _, _) in outcomes} == {"small", "big"}


def test_a_job_no_worker_has_room_for_is_refused_not_left_waiting(small_and_big):
    outcomes = _run(small_and_big, [2000, 50, 50])
    refused = [o for job, o in outcomes if job == 2000]
    assert len(refused) == 1 and isinstance(refused[0], Failure)
    assert MemoryBudgetError.__name__ in refused[0].message
    assert "needs 2000 MiB" in refused[0].message and "largest MEMORY_MB is 1000 MiB" in refused[0].message
    assert {o[0] for job, o in outcomes if job == 50} <= {"small", "big"}  # the others ran


def test_a_whole_build_no_worker_has_room_for_is_refused_without_running(small_and_big):
    refused = small_and_big.submit_sized(Need(1500, 0, (2048, 4096)), _where, None)
    assert isinstance(refused.exception(timeout=5), MemoryBudgetError)
    assert "a 4096x2048 frame needs 1500 MiB" in str(refused.exception())
    assert small_and_big.submit_sized(Need(900, 0, (2048, 4096)), _where, None).result(timeout=30)[0] == "big"


# -- workers that cannot see the files -----------------------------------------------------------


@pytest.fixture(scope="module")
def local2(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("local2"))
    with open_cluster("local:2", config) as cluster:
        yield cluster


def test_a_worker_that_cannot_see_an_input_stops_the_run_with_one_message(local2, tmp_path):
    with pytest.raises(ClusterError) as error:
        local2.check_visible([tmp_path / "seen", tmp_path / "archive"], tmp_path / "out")
    message = str(error.value)
    assert f"cannot see {tmp_path / 'seen'}" in message and "Dask worker tcp://" in message
    assert socket.gethostname() in message and "same path" in message
    assert not list((tmp_path / "out").iterdir())  # the probe is gone


def test_a_worker_running_another_observd_stops_the_run(local2, tmp_path, monkeypatch):
    monkeypatch.setattr(dask_cluster, "__version__", "0.0.0")  # as if this host had another version
    with pytest.raises(ClusterError, match=r"runs observd \S+, not 0\.0\.0 as this host"):
        local2.check_visible([], tmp_path / "out")


def test_workers_that_see_everything_pass(local2, tmp_path):
    (tmp_path / "archive").mkdir()
    local2.check_visible([tmp_path / "archive"], tmp_path / "out")


def test_a_local_cluster_declares_memory_and_prints_its_dashboard(local2):
    assert len(local2.offered_mb()) == 2 and min(local2.offered_mb()) > 0
    assert local2.dashboard.startswith("http://") and ":8787/" not in local2.dashboard
    assert local2.in_flight(4) == 4 and local2.in_flight(1) == 4  # two jobs per worker thread at least


# -- an unreachable scheduler, a malformed address -------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config_file(tmp_path: Path, cluster: str = "") -> Path:
    path = tmp_path / "observd.toml"
    path.write_text(
        f"[paths]\noutput = '{tmp_path / 'out'}'\ndatabase = '{tmp_path / 'out' / 'observd.db'}'\n"
        f"[cluster]\ntimeout = 1.0\n{cluster}"
    )
    return path


@pytest.mark.parametrize("where", ["option", "config"])
def test_an_unreachable_scheduler_exits_2_with_one_line(tmp_path, capsys, where):
    (tmp_path / "night").mkdir()
    address = f"tcp://127.0.0.1:{_closed_port()}"
    if where == "option":
        args = ["--cluster", address, "-c", str(_config_file(tmp_path))]
    else:
        args = ["-c", str(_config_file(tmp_path, f"scheduler = '{address}'\n"))]
    assert main(["ingest", str(tmp_path / "night"), *args]) == 2
    err = capsys.readouterr().err
    assert f"observd: cannot reach the Dask scheduler at {address}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_malformed_local_cluster_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "night").mkdir()
    assert main(["ingest", str(tmp_path / "night"), "--cluster", "local:0", "-c", str(_config_file(tmp_path))]) == 2
    assert "expected local:N with N >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_scheduler_lost_mid_run_stops_it_without_failing_a_frame(tmp_path):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", address.rsplit(":", 1)[1]], **quiet
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1"]
        + ["--resources", f"{RESOURCE}=1000", "--death-timeout", "60"],
        **quiet,
    )
    try:
        with open_cluster(address, make_config(tmp_path, cluster={"timeout": 30})) as cluster:
            outcomes = run_jobs(cluster, [(time.sleep, 0.5)] * 8, window=2, should_stop=lambda: False)
            assert next(outcomes) == (0.5, None)  # a job done: the run is under way
            scheduler.kill()
            with pytest.raises(ClusterLost, match=f"lost the Dask scheduler at {address} .* goes on from there"):
                list(outcomes)  # not a Failure for the jobs in flight: no frame is at fault
    finally:
        for process in (worker, scheduler):
            process.kill()
            process.wait()


# -- a worker killed mid-run ----------------------------------------------------------------------


def _night(folder: Path, **spec) -> Path:
    simulate(
        folder,
        shape=(128, 128),
        n_bias=7,
        n_dark=5,
        n_flat=5,
        targets=(TargetSpec("M42", ("L",), 8), TargetSpec("M31", ("L",), 6)),
        **spec,
    )
    return folder


def _states(catalog: Catalog) -> dict[str, tuple]:
    return {
        Path(r["path"]).name: (r["state"], r["reason"], r["n_stars"], r["reference_id"] is not None)
        for r in catalog.files()
    }


def test_a_worker_killed_mid_run_loses_no_frame_and_records_none_twice(tmp_path):
    night = _night(tmp_path / "night")
    config = make_config(tmp_path / "cluster", site={"timezone": "Europe/Berlin"})
    catalog = Catalog.open(config.paths.database)
    passes: list[list[str]] = []
    killed: list[tuple[str, int, int]] = []  # (worker, pid, tasks it was running)

    with open_cluster("local:2", config) as cluster:

        def progress(done: int, total: int, label: str) -> None:
            if done == 1:
                passes.append([])
            if label.startswith(("calibrated", "aligned")):
                passes[-1].append(label)
                if not killed and done < total:
                    busy = {w: keys for w, keys in cluster.client.processing().items() if keys}
                    if busy:
                        worker, keys = next(iter(busy.items()))
                        pid = cluster.client.run(os.getpid, workers=[worker])[worker]
                        os.kill(pid, signal.SIGKILL)
                        killed.append((worker, pid, len(keys)))

        result = ingest([night], catalog, config, progress=progress, reducer=Reducer(config, catalog, pool=cluster))
        survivors = cluster.client.run(os.getpid)
    assert not result.failed, result.errors
    assert killed and killed[0][1] not in survivors.values() and killed[0][2] >= 1
    for labels in passes:  # each job's outcome came back, and was recorded, once
        assert not [label for label, n in Counter(labels).items() if n > 1]
    rows = catalog.files(types=("light",))
    assert len(rows) == 14 and all(r["state"] in ("aligned", "bad") for r in rows)
    assert not any(r["attempts"] for r in catalog.files())
    # the same as without a cluster
    reference = make_config(tmp_path / "here", site={"timezone": "Europe/Berlin"})
    here = Catalog.open(reference.paths.database)
    assert not ingest([night], here, reference).failed
    assert _states(catalog) == _states(here)
    catalog.close()
    here.close()


# -- five nights: the same results as this host's pool ------------------------------------------------

NIGHTS = {
    "2026-11-16": ("M42", "M31"),
    "2026-11-17": ("M42",),
    "2026-11-18": ("M31", "NGC7000"),
    "2026-11-19": ("M42", "NGC7000"),
    "2026-11-20": ("M31", "M42", "NGC7000"),
}


def _archive(root: Path) -> Path:
    for k, (night, targets) in enumerate(NIGHTS.items()):
        simulate(
            root / night,
            seed=k + 1,
            setup_seed=1,  # one camera and sky: the targets seen on several nights get deep stacks
            night=night,
            shape=(128, 128),
            n_bias=7,
            n_dark=5,
            n_flat=5,
            targets=tuple(TargetSpec(name, ("L", "R") if name == "M42" else ("L",), 4) for name in targets),
        )
    return root


def _ingest_cli(tmp_path: Path, archive: Path, name: str, *cluster: str) -> Path:
    out = tmp_path / name
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f"[paths]\noutput = '{out}'\ndatabase = '{out / 'observd.db'}'\nstatus_log = '{out / 'status.log'}'\n"
        "[site]\ntimezone = 'Europe/Berlin'\n[stack]\ndeep = true\n"
    )
    assert main(["ingest", str(archive), "--stack", "-c", str(config), *cluster]) == 0
    return out


def _products(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for p in out.rglob("*.fits") if "/lights/" not in f"/{p.relative_to(out)}"}


@pytest.mark.slow
def test_five_nights_on_a_local_cluster_give_the_pool_s_catalog_masters_and_stacks_deep_ones_too(tmp_path, capsys):
    archive = _archive(tmp_path / "archive")
    pool = _ingest_cli(tmp_path, archive, "pool")
    cluster = _ingest_cli(tmp_path, archive, "cluster", "--cluster", "local:2")
    assert "Dask dashboard at http://" in capsys.readouterr().err
    a, b = Catalog.open(pool / "observd.db"), Catalog.open(cluster / "observd.db")
    assert _states(a) == _states(b)
    masters = [(m["group_key"], m["version"], m["n_frames"]) for m in a.masters()]
    assert masters == [(m["group_key"], m["version"], m["n_frames"]) for m in b.masters()]
    stacks = {(p["night"], p["object"], p["filter"], p["n_combined"]) for p in a.products()}
    assert stacks == {(p["night"], p["object"], p["filter"], p["n_combined"]) for p in b.products()}
    assert {night for night, *_ in stacks} == set(NIGHTS) and len(stacks) >= 12
    deep = {(p["nights"], p["object"], p["filter"], p["n_combined"]) for p in a.products(deep=True)}
    assert deep == {(p["nights"], p["object"], p["filter"], p["n_combined"]) for p in b.products(deep=True)}
    assert any("," in nights for nights, *_ in deep)  # a target of several nights
    a.close()
    b.close()
    products = _products(pool)
    assert products.keys() == _products(cluster).keys()
    assert sum("/masters/" in k for k in products) == len(masters)
    assert sum("/stacks/" in k for k in products) == len(stacks)
    for name, path in products.items():
        with fits.open(path) as x, fits.open(cluster / name) as y:
            for hx, hy in zip(x, y):
                if hx.data is not None:
                    np.testing.assert_allclose(hy.data, hx.data, rtol=2e-7, atol=0, equal_nan=True, err_msg=name)


def test_every_local_cluster_process_is_gone_after_shutdown(tmp_path):
    config = make_config(tmp_path)
    with open_cluster("local:1", config) as cluster:
        pids = set(cluster.client.run(os.getpid).values())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
