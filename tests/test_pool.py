"""pool: jobs handed to the workers, and done here when the pool cannot take them."""

from __future__ import annotations

import os
import subprocess
import sys
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


_HEAP_PROBE = """
import sys
from pathlib import Path

import numpy as np

from observd.jobs import pool


def rss() -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:"))


getattr(pool, sys.argv[1])()
base = rss()
for _ in range(2):  # a frame-sized temporary made and freed twice (the second one glibc keeps by default)
    frame = np.ones((2048, 2048), np.float32)
    del frame
kept = rss() - base
if len(sys.argv) > 2:
    getattr(pool, sys.argv[2])()
print(kept >> 20, (rss() - base) >> 20)
"""


def _heap_after(*calls: str) -> tuple[int, int]:
    """MiB still resident after two 16 MiB frames were made and freed, in a fresh process that
    first called `calls[0]` of `jobs.pool`; and after `calls[1]`."""
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE, *calls], capture_output=True, text=True, check=True)
    kept, after = out.stdout.split()
    return int(kept), int(after)


def test_a_worker_keeps_freed_frames_until_it_gives_them_back():
    kept, after = _heap_after("reuse_freed_memory", "give_back_freed_memory")
    assert kept >= 12  # kept for the next light, no page faults
    assert after <= 2  # given back before a job that needs far less


def test_the_commands_process_returns_freed_frames_at_once():
    assert _heap_after("return_freed_frames")[0] <= 2
