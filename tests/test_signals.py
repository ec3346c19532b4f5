"""`observd run`'s signal handling (service.signals): stop, reload, restored handlers."""

from __future__ import annotations

import os
import signal
import threading

from observd.service.signals import StopSignals


def _signals(calls: list, *, stopped: bool = False, timeout: float = 60.0) -> StopSignals:
    stop = threading.Event()

    def request_stop():
        calls.append("stop")
        stop.set()

    return StopSignals(
        request_stop=request_stop,
        request_reload=lambda: calls.append("reload"),
        stopping=stop.is_set,
        stopped=lambda: stopped,
        processes=lambda: [],
        timeout=timeout,
    )


def test_sigterm_and_sigint_stop_and_sighup_reloads_while_installed():
    calls: list[str] = []
    # stopped: the forced exit the stop arms must find the stop done, or it ends pytest 60 s later
    with _signals(calls, stopped=True).installed():
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert calls == ["reload", "stop", "stop"]


def test_the_previous_handlers_come_back_after_the_block():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    with _signals([]).installed():
        assert signal.getsignal(signal.SIGHUP) is not before[signal.SIGHUP]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_stop_that_completed_in_time_is_not_forced(monkeypatch):
    """The forced exit is armed on the first stop signal only, and does nothing once stopped."""
    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    timers = []
    real_timer = threading.Timer

    def recording_timer(interval, function):
        timer = real_timer(interval, function)
        timers.append((interval, function))
        return timer

    monkeypatch.setattr(threading, "Timer", recording_timer)
    calls: list[str] = []
    signals = _signals(calls, stopped=True, timeout=7.5)
    with signals.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a second stop arms no second timer
    assert [interval for interval, _ in timers] == [7.5]
    timers[0][1]()  # the timer fires after the shutdown finished
    assert exits == []
