"""Notifier against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from observd.service.sdnotify import Notifier


def receive(sock: socket.socket) -> list[str]:
    messages = []
    sock.settimeout(0.05)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except (TimeoutError, BlockingIOError):
        return messages


def test_messages_arrive_through_notify_socket(fake_systemd, monkeypatch):
    sock, path = fake_systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier()

    notifier.ready()
    notifier.status("watching /srv/camera: 12 frames, 0 failed")
    notifier.watchdog()
    notifier.stopping()

    assert receive(sock) == ["READY=1", "STATUS=watching /srv/camera: 12 frames, 0 failed", "WATCHDOG=1", "STOPPING=1"]


def test_status_is_one_line(fake_systemd):
    sock, path = fake_systemd
    Notifier(path).status("master flat R rebuilt\n3 lights waiting")
    assert receive(sock) == ["STATUS=master flat R rebuilt 3 lights waiting"]


def test_abstract_namespace_socket():
    name = f"observd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        Notifier("@" + name).ready()
        assert receive(sock) == ["READY=1"]


def test_no_socket_is_a_no_op_that_opens_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    opened = []
    monkeypatch.setattr("observd.service.sdnotify.socket.socket", lambda *a: opened.append(a))
    notifier = Notifier()
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    assert opened == []


def test_unreachable_socket_never_raises(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level("DEBUG", logger="observd.service.sdnotify"):
        notifier.ready()
    assert "READY=1" in caplog.text and "failed" in caplog.text


@pytest.mark.parametrize(
    "usec, pid, expected",
    [
        ("60000000", None, 30.0),
        ("60000000", "own", 30.0),
        ("60000000", "other", None),
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for key, value in (
        ("WATCHDOG_USEC", usec),
        ("WATCHDOG_PID", {"own": str(os.getpid()), "other": str(os.getpid() + 1), None: None}[pid]),
    ):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert Notifier().watchdog_interval() == expected
