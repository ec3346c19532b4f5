"""Messages to people through Apprise: e-mail, ntfy, Telegram, Slack, Matrix… one URL each.

Sending takes a network round trip and may hang until a time-out, so one background thread
sends (`Sender`) and the daemon's loop never waits for it. What became of each message is
handed to a callback on that thread (`Delivery`); whoever must record it in the catalog queues
it for the main thread. A URL is never logged whole: it may hold a password or a token.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Delivery", "Message", "Sender", "deliver", "redacted"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    attachments: tuple[str, ...] = ()  # files sent along (product thumbnails), when they exist


@dataclass(frozen=True)
class Delivery:
    key: Hashable  # the sender's own name for the message (e.g. night and target)
    url: str
    error: str | None  # None: the target took the message


def redacted(url: str) -> str:
    """'ntfy://user:pass@host/topic' -> 'ntfy://…': enough to tell targets apart in a log."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://…" if sep else "(not a URL)"


def deliver(url: str, message: Message) -> str | None:
    """Send `message` to one Apprise URL; None when it was taken, else why it was not."""
    import apprise  # imported when the first message goes out: the daemon starts without it

    target = apprise.Apprise()
    if not target.add(url):
        return f"not an Apprise URL: {redacted(url)}"
    attach = [p for p in message.attachments if Path(p).is_file()]
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        sent = target.notify(body=message.body, title=message.title, attach=attach or None)
    if sent:
        return None
    reasons = [line for line in captured.getvalue().splitlines() if line.strip()]
    return reasons[-1] if reasons else "not delivered"


class Sender:
    """One thread that sends queued messages in order; `send` never blocks."""

    def __init__(
        self,
        on_delivery: Callable[[Delivery], None],
        *,
        send: Callable[[str, Message], str | None] = deliver,
        name: str = "observd-messages",
    ):
        self._on_delivery = on_delivery
        self._send = send
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send(self, url: str, message: Message, key: Hashable = None) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((url, message, key))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop once the queued messages are sent, waiting at most `timeout` s: what is not sent by
        then is lost with the process (a report among them stays due in the ledger)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            url, message, key = item
            try:
                error = self._send(url, message)
            except Exception as exc:  # a bug in a notification plugin must not end the thread
                log.exception("sending %r to %s failed", message.title, redacted(url))
                error = f"{type(exc).__name__}: {exc}"
            try:
                self._on_delivery(Delivery(key, url, error))
            except Exception:
                log.exception("cannot handle the delivery of %r", message.title)
