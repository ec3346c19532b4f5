"""Serving the page: which interfaces may be used, the listening socket, and uvicorn.

Loopback by default; any other interface only with a token (`check_exposure`), because the
page shows the observatory's data to whoever reaches the port. The socket is bound before
anything else starts (`listen`), so a port in use is an error at once rather than a thread
that dies quietly. uvicorn then runs either in the foreground (`observd web`, its own signal
handling) or in a thread beside the daemon (`observd run` with `[web] enabled`), stopped with
it within a few seconds.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading

import uvicorn

__all__ = ["ExposureError", "WebServer", "check_exposure", "is_loopback", "listen"]

log = logging.getLogger(__name__)

STOP_SECONDS = 5.0  # open connections get this long to finish when the server stops


class ExposureError(Exception):
    """A non-loopback address without a token; the message says what to do."""


def is_loopback(host: str) -> bool:
    """'127.0.0.1', '::1', 'localhost' (and 127.x.y.z) are loopback; names and 0.0.0.0 are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve beyond this computer without a token."""
    if not is_loopback(host) and not token:
        raise ExposureError(
            f"the web page would listen on {host}, beyond this computer, without an access token: "
            "set [web] token in the configuration or the OBSERVD_WEB_TOKEN environment variable "
            "(or keep the default host 127.0.0.1 and use an SSH tunnel)"
        )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); OSError says why not (port in use, no such address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host.strip("[]"), port), family=family, backlog=64)


class WebServer:
    """uvicorn serving `app` on an already bound socket (connections made before it runs wait
    in the socket's backlog, so callers need not wait for it to start)."""

    def __init__(self, app, sock: socket.socket):
        self.sock = sock
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,  # observd's logging set-up stays
                access_log=False,
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=STOP_SECONDS,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve(self) -> None:
        """In the foreground until SIGINT or SIGTERM, which stop it cleanly. uvicorn handles both
        and raises the signal again once stopped, with the handler it found: for SIGTERM too that
        is the one raising KeyboardInterrupt, caught here, so the command returns normally."""
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            self._server.run(sockets=[self.sock])
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    def start(self) -> None:
        """In a background thread; `stop()` ends it."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self.sock]}, name="observd-web", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, let open requests finish (at most `STOP_SECONDS`), close the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS + 2.0)
            if self._thread.is_alive():
                log.warning("the web page's server did not stop within %.0f s", STOP_SECONDS + 2.0)
        self.sock.close()
