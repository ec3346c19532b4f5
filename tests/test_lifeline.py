"""Worker processes end with the daemon, however it ends (jobs.lifeline)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from observd.jobs.lifeline import watch_parent


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not reaped yet
    except psutil.NoSuchProcess:
        return True


def _wait(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_process_ends_when_its_parent_is_killed():
    """A child that called watch_parent() exits once its parent is SIGKILLed."""
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'from observd.jobs.lifeline import watch_parent; import time; watch_parent(0.05); time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.5)
        assert not _gone(child)
        parent.kill()
        assert _wait(lambda: _gone(child), 5.0), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_a_process_whose_owner_died_before_its_lifeline_started_still_ends():
    """A daemon killed in the second after it starts its pool: the fork server is still importing
    its preloads, and is already re-parented when its lifeline starts. It must end all the same
    (it knows its owner from the environment)."""
    code = (
        "import os, subprocess, sys\n"
        "from observd.jobs.lifeline import mark_owner\n"
        "mark_owner()\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(1.0); from observd.jobs.lifeline import watch_parent; "
        "watch_parent(0.05); time.sleep(60)'], stdout=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"  # and exit at once, before the child watches
    )
    parent = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True)
    child = int(parent.stdout.strip())
    assert not _gone(child)  # still starting
    assert _wait(lambda: _gone(child), 6.0), "a late-starting child outlived its owner"


def test_watch_parent_leaves_a_living_parent_alone():
    watch_parent(0.01)
    time.sleep(0.1)  # this test process is still here: its parent (pytest's shell) lives
    assert os.getpid() > 0


@pytest.mark.slow
def test_the_fork_server_and_workers_end_when_the_daemon_alone_is_killed(tmp_path):
    """SIGKILL of the daemon's process only (no systemd to kill its control group): its fork
    server, workers and resource tracker must not stay behind."""
    (tmp_path / "camera").mkdir()
    config = tmp_path / "observd.toml"
    config.write_text(
        f"[paths]\nwatch = '{tmp_path / 'camera'}'\noutput = '{tmp_path / 'out'}'\n"
        f"database = '{tmp_path / 'out' / 'observd.db'}'\nstatus_log = '{tmp_path / 'out' / 'status.log'}'\n"
        "[daemon]\nworkers = 2\n"
    )
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "observd", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        process = psutil.Process(daemon.pid)
        assert _wait(lambda: len(process.children(recursive=True)) >= 4, 60.0), "workers never started"
        tree = [p.pid for p in process.children(recursive=True)]  # fork server, 2 workers, tracker
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        assert _wait(lambda: all(_gone(pid) for pid in tree), 10.0), [
            (pid, psutil.Process(pid).cmdline()[-1][:60]) for pid in tree if not _gone(pid)
        ]
    finally:
        daemon.kill()
        daemon.wait()
