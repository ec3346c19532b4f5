"""Worker processes end when the process that started them ends, however it ends.

A daemon killed outright (SIGKILL, the OOM killer, a crash outside systemd, which would kill
the whole control group) runs no clean-up: its fork server and workers would stay, idle and
holding their memory, for good, and a set more after every restart. Each of them therefore
watches its parent and exits once the parent is gone (the kernel then gives it another parent,
so `os.getppid()` changes): the fork server watches observd's process, the workers watch the
fork server. The check is one system call a second per process.

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


def watch_parent(interval: float = CHECK_SECONDS) -> None:
    """Exit this process (at once, without clean-up: there is nobody left to report to) when its
    parent process is gone."""
    parent = os.getppid()

    def wait() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=wait, name="observd-lifeline", daemon=True).start()
