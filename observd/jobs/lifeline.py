"""Worker processes end when the process that started them ends, however it ends.

A daemon killed outright (SIGKILL, the OOM killer, a crash outside systemd, which would kill
the whole control group) runs no clean-up: its fork server and workers would stay, idle and
holding their memory, for good, and a set more after every restart. Each of them therefore
watches, once a second, the process that owns the pool — named in the environment
(`OWNER_ENV`, set by `jobs.pool` before the fork server starts, so it is known even to a fork
server that starts after its owner already died) — and its own parent, and exits once either
is gone.

The fork server runs no observd code but the modules it preloads, so its lifeline starts when it
imports `jobs.fork_server_lifeline` (one of `jobs.pool`'s preloads: that import is the one place
observd's code runs there). Workers start theirs in their initialiser; a forked worker does not
inherit the fork server's thread.
"""

from __future__ import annotations

import os
import threading
import time

CHECK_SECONDS = 1.0
OWNER_ENV = "OBSERVD_POOL_OWNER"


def mark_owner() -> None:
    """This process owns the worker pools it starts: their processes end when it does."""
    os.environ[OWNER_ENV] = str(os.getpid())


def watch_parent(interval: float = CHECK_SECONDS) -> None:
    """Exit this process (at once, without clean-up: there is nobody left to report to) when its
    parent, or the pool's owner, is gone."""
    parent = os.getppid()
    owner = int(os.environ.get(OWNER_ENV, "0") or 0)

    def orphaned() -> bool:
        return os.getppid() != parent or (owner > 0 and not alive(owner))

    def wait() -> None:
        while not orphaned():
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=wait, name="observd-lifeline", daemon=True).start()


def alive(pid: int) -> bool:
    """Whether process `pid` runs (someone else's counts; one that exited and awaits its parent's
    `wait()`, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc: the signal's answer stands
        return True
