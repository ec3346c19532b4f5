"""The systemd notify protocol (sd_notify(3)) with the standard library only.

Under ``Type=notify`` systemd passes a datagram socket in ``NOTIFY_SOCKET``; the daemon sends
``READY=1`` once it watches the folder, ``STATUS=...`` lines shown by ``systemctl status``,
``WATCHDOG=1`` pings (more often than ``WatchdogSec=``, else systemd kills and restarts it) and
``STOPPING=1`` on SIGTERM. Outside systemd (a terminal, tests, `observd demo`) the variable is
unset and every call does nothing, so callers never need to ask.

Notification is best effort by design: a failure to notify must never stop data reduction,
so errors are logged at debug level and swallowed.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to systemd; a no-op when there is no notify socket.

    `socket_path` defaults to ``$NOTIFY_SOCKET`` (read once, here); a leading ``@`` means
    a Linux abstract-namespace socket, as systemd writes it.
    """

    def __init__(self, socket_path: str | None = None):
        self._address = _address(socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET"))
        self._watchdog_usec = os.environ.get("WATCHDOG_USEC")
        self._watchdog_pid = os.environ.get("WATCHDOG_PID")

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        """One line for ``systemctl status``; newlines are flattened (one message, one line)."""
        self._send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between `watchdog()` pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3)
        advises; None when systemd expects no pings (unset, invalid, or meant for another PID)."""
        if self._watchdog_pid is not None:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec or "")
        except ValueError:
            return None
        return usec / 2e6 if usec > 0 else None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            log.debug("sd_notify %r to %r failed: %s", message, self._address, exc)


def _address(path: str | None) -> str | bytes | None:
    """The sendto() address for NOTIFY_SOCKET, or None when notification is off."""
    if not path:
        return None
    if path.startswith("@"):
        return b"\0" + path[1:].encode()  # abstract namespace
    if not path.startswith("/"):
        log.debug("NOTIFY_SOCKET %r is not a unix socket path; notifications disabled", path)
        return None
    return path
