"""The daemon loop's timers (service.timers), on a scripted clock: no sleeping."""

from __future__ import annotations

from observd.service.timers import ADVANCE_INTERVAL, RETRY_INTERVAL, STATUS_INTERVAL, LoopTimers


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_everything_is_due_at_the_first_step():
    timers = LoopTimers(Clock())
    assert timers.rescan_due() and timers.status_due()
    assert timers.retry_due(backoff=30.0)
    assert not timers.advance_due()  # nothing is settling before anything arrived


def test_a_rescan_is_due_again_after_its_period_only():
    clock = Clock()
    timers = LoopTimers(clock)
    timers.rescanned(600.0)
    clock.t += 599.9
    assert not timers.rescan_due()
    clock.t += 0.1
    assert timers.rescan_due()


def test_retries_are_looked_for_every_interval_or_the_shorter_backoff():
    clock = Clock()
    timers = LoopTimers(clock)
    assert timers.retry_due(backoff=30.0)
    assert not timers.retry_due(backoff=30.0)  # claimed: not due twice in the same instant
    clock.t += RETRY_INTERVAL - 0.01
    assert not timers.retry_due(backoff=30.0)
    clock.t += 0.01
    assert timers.retry_due(backoff=2.0)
    clock.t += 2.0  # a back-off shorter than the interval sets the pace
    assert timers.retry_due(backoff=2.0)


def test_passes_repeat_while_groups_settle_then_stop():
    clock = Clock()
    timers = LoopTimers(clock)
    timers.settle(120.0)  # a frame arrived; its group settles for 120 s
    timers.advanced()  # the pass it caused
    clock.t += ADVANCE_INTERVAL - 0.1
    assert not timers.advance_due()  # not before the interval
    clock.t += 0.1
    assert timers.advance_due()
    passes = 0
    while clock.t < 1000.0 + 200.0:
        if timers.advance_due():
            timers.advanced()
            passes += 1
        clock.t += 1.0
    # one pass per interval until settle + two intervals after the arrival (the first at the
    # arrival itself, before the loop), none after
    assert passes == int((120.0 + 2 * ADVANCE_INTERVAL) / ADVANCE_INTERVAL) - 1
    assert not timers.advance_due()


def test_a_reload_asks_for_a_pass_at_once():
    timers = LoopTimers(Clock())
    timers.advanced()
    assert not timers.advance_due()
    timers.advance_now()
    assert timers.advance_due()


def test_status_is_sent_at_most_once_per_interval_unless_asked():
    clock = Clock()
    timers = LoopTimers(clock)
    timers.status_sent()
    clock.t += STATUS_INTERVAL / 2
    assert not timers.status_due()
    timers.status_now()  # lights moved: say so at the next step
    assert timers.status_due()
