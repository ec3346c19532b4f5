"""pool: jobs handed to the workers, and done here when the pool cannot take them."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from observd.jobs.pool import call, offload, outcome


def _die() -> int:
    os._exit(3)  # a worker killed under its job (OOM killer, crash in a library)


def test_without_a_pool_the_job_runs_here():
    assert offload(None, pow, 2, 5) is None
    assert outcome(None, pow, 2, 5) == 32


def test_a_job_offloaded_to_a_pool_runs_there():
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = offload(pool, os.getpid)
        assert future is not None
        # were it run here, it would give this process's pid
        assert outcome(future, os.getpid) != os.getpid()


def test_a_shut_down_pool_takes_no_job_and_it_runs_here():
    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown()
    future = offload(pool, divmod, 7, 2)
    assert future is None
    assert outcome(future, divmod, 7, 2) == (3, 1)


def test_a_job_whose_worker_died_is_done_here():
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = offload(pool, _die)
        assert outcome(future, os.getpid) == os.getpid()


def test_a_job_that_fails_in_the_pool_raises_and_is_not_redone_here():
    done_here = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = offload(pool, int, "not a number")
        with pytest.raises(ValueError):
            outcome(future, lambda *_: done_here.append(1))
    assert not done_here


def test_call_names_the_function_by_module_and_name():
    assert call("os.path:join", "a", "b") == os.path.join("a", "b")
    assert call("math:hypot", 3, 4) == 5.0
