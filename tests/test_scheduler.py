"""The nightly stacks' timer (service.scheduler): catch-up, DST days, failures, APScheduler."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from observd.core.nights import next_run, nights_due
from observd.service.scheduler import NightlyScheduler, NightlyTrigger

TZ = "Europe/Berlin"
BERLIN = ZoneInfo(TZ)
UTC = dt.UTC
TEN = dt.time(10, 0)


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def night_labels(first: str, n: int) -> list[str]:
    start = dt.date.fromisoformat(first)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]


class FakeClock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Site:
    """The daemon's side: catalog nights, a ledger that survives restarts, a stack recorder."""

    def __init__(self, nights, clock, at=TEN, failing=()):
        self.nights = set(nights)
        self.ledger: set[str] = set()
        self.calls: list[tuple[str, dt.datetime]] = []
        self.clock, self.at, self.failing = clock, at, set(failing)

    def due(self) -> list[str]:
        return nights_due(self.clock(), timezone=TZ, at=self.at, nights_with_lights=self.nights, stacked=self.ledger)

    def stack_night(self, night: str) -> None:
        self.calls.append((night, self.clock()))
        if night in self.failing:
            raise RuntimeError(f"no aligned frames for {night}")
        self.ledger.add(night)  # the caller of stack_night records success

    def scheduler(self) -> NightlyScheduler:
        return NightlyScheduler(timezone=TZ, at=self.at, due=self.due, stack_night=self.stack_night, clock=self.clock)


# --- the APScheduler trigger ----------------------------------------------------------------


def test_trigger_uses_the_site_timezone_and_fires_at_the_expected_utc_instant():
    trigger = NightlyTrigger(timezone=TZ, at=TEN)
    assert trigger.timezone == BERLIN
    now = utc(2026, 3, 28, 12, 0).astimezone(BERLIN)
    first = trigger.get_next_fire_time(None, now)
    assert first == utc(2026, 3, 29, 8, 0)  # 10:00 CEST
    assert first.tzinfo == BERLIN  # the scheduler's own zone
    # after a fire: the next date, even when asked late (so missed fires can be counted)
    assert trigger.get_next_fire_time(first, utc(2026, 4, 2, 12)) == utc(2026, 3, 30, 8, 0)


@pytest.mark.parametrize("at", [TEN, dt.time(0, 0), dt.time(2, 30), dt.time(23, 59, 30)])
def test_trigger_fires_once_per_local_date_for_a_year(at):
    """CronTrigger 3.11.3 fails this for 00:00 (skips 2026-03-30) and 02:30 (fires twice)."""
    trigger = NightlyTrigger(timezone=TZ, at=at)
    previous, now, fires = None, dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=BERLIN), []
    while len(fires) < 366:
        previous = trigger.get_next_fire_time(previous, now)
        fires.append(previous)
    local = [f.astimezone(BERLIN) for f in fires]
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(366)]
    assert [d.date() for d in local] == days
    skipped = {dt.date(2026, 3, 29)} if at == dt.time(2, 30) else set()
    assert all(d.time() == at for d in local if d.date() not in skipped)
    if skipped:  # 02:30 does not exist that day: 03:30 CEST
        assert fires[87] == utc(2026, 3, 29, 1, 30)


# --- NightlyScheduler with a fake clock ---------------------------------------------------


def simulate(site: Site, sched: NightlyScheduler, until: dt.datetime) -> list[dt.datetime]:
    """Fire run_now at every fire time of the scheduler's trigger up to `until`."""
    fires, previous = [], None
    while (fire := sched.trigger.get_next_fire_time(previous, site.clock())) <= until:
        site.clock.now = previous = fire
        fires.append(fire)
        sched.run_now()
    return fires


@pytest.mark.parametrize(
    "first_night, at",
    [
        ("2026-05-04", TEN),
        ("2026-03-25", TEN),
        ("2026-03-25", dt.time(2, 30)),  # spring forward 2026-03-29
        ("2026-03-25", dt.time(0, 0)),
        ("2026-10-21", TEN),
        ("2026-10-21", dt.time(2, 30)),  # fall back 2026-10-25
        ("2026-10-21", dt.time(2, 0)),
        ("2026-10-21", dt.time(0, 0)),
    ],
)
def test_one_stack_per_night_over_simulated_days(first_night, at):
    nights = night_labels(first_night, 8)
    clock = FakeClock(
        dt.datetime.combine(dt.date.fromisoformat(first_night), dt.time(18, 0), tzinfo=BERLIN).astimezone(UTC)
    )
    site = Site([n for n in nights if n != nights[3]], clock, at=at)  # one night clouded out
    sched = site.scheduler()
    sched.run_now()  # start-up: nothing due yet
    fires = simulate(site, sched, until=clock.now + dt.timedelta(days=8))

    assert len(fires) == 8  # one fire per local date
    counts = Counter(night for night, _ in site.calls)
    assert set(counts) == site.nights and set(counts.values()) == {1}
    for night, when in site.calls:  # stacked on the next local date, at (or just after) `at`
        local = when.astimezone(BERLIN)
        assert local.date() == dt.date.fromisoformat(night) + dt.timedelta(days=1)
        assert when == next_run(when - dt.timedelta(seconds=1), timezone=TZ, at=at)
    stacking_days = [when.astimezone(BERLIN).date() for _, when in site.calls]
    assert len(stacking_days) == len(set(stacking_days))


def test_catch_up_after_downtime_stacks_every_missed_night_once_and_survives_restarts():
    nights = night_labels("2026-06-01", 6)
    clock = FakeClock(utc(2026, 6, 2, 8, 0))  # 10:00 CEST after night 1
    site = Site(nights, clock)
    assert site.scheduler().run_now() == ["2026-06-01"]

    clock.now = utc(2026, 6, 6, 15, 0)  # daemon was down for four days
    assert site.scheduler().run_now() == nights[1:5]  # a new instance: a restart
    assert site.scheduler().run_now() == []  # restarted again the same day
    clock.now = utc(2026, 6, 7, 8, 0)
    assert site.scheduler().run_now() == ["2026-06-06"]
    assert Counter(n for n, _ in site.calls) == Counter(nights)


def test_a_failing_night_is_logged_and_the_others_still_stack(caplog):
    nights = night_labels("2026-06-01", 4)
    clock = FakeClock(utc(2026, 6, 5, 12, 0))
    site = Site(nights, clock, failing={"2026-06-02"})
    with caplog.at_level(logging.ERROR, logger="observd.service.scheduler"):
        assert site.scheduler().run_now() == ["2026-06-01", "2026-06-03", "2026-06-04"]
    assert "2026-06-02" in caplog.text and "no aligned frames" in caplog.text
    assert [n for n, _ in site.calls].count("2026-06-02") == 1  # not retried in the same run

    site.failing.clear()  # fixed: next run retries it
    assert site.scheduler().run_now() == ["2026-06-02"]


def test_a_night_that_becomes_due_during_a_long_catch_up_is_stacked_in_the_same_run():
    clock = FakeClock(utc(2026, 6, 5, 7, 0))  # 09:00 CEST: 06-04 not due yet
    site = Site(night_labels("2026-06-01", 4), clock)

    def slow_stack(night):
        site.stack_night(night)
        clock.now += dt.timedelta(minutes=30)  # each stack takes half an hour

    sched = NightlyScheduler(timezone=TZ, at=TEN, due=site.due, stack_night=slow_stack, clock=clock)
    assert sched.run_now() == night_labels("2026-06-01", 4)


def test_concurrent_runs_never_stack_a_night_twice():
    clock = FakeClock(utc(2026, 6, 3, 12, 0))
    site = Site(night_labels("2026-06-01", 2), clock)
    entered, release = threading.Event(), threading.Event()

    def blocking_stack(night):
        entered.set()
        assert release.wait(5)
        site.stack_night(night)

    sched = NightlyScheduler(timezone=TZ, at=TEN, due=site.due, stack_night=blocking_stack)
    results = []
    first = threading.Thread(target=lambda: results.append(sched.run_now()))
    first.start()
    assert entered.wait(5)
    second = threading.Thread(target=lambda: results.append(sched.run_now()))
    second.start()
    time.sleep(0.2)  # let the second run reach the lock (or, without one, a night)
    release.set()
    first.join(5)
    second.join(5)
    assert sorted(results) == [[], ["2026-06-01", "2026-06-02"]]
    assert Counter(n for n, _ in site.calls) == Counter(["2026-06-01", "2026-06-02"])


def test_start_runs_the_catch_up_in_the_background_and_schedules_the_next_night():
    """Real BackgroundScheduler, real clock; waits only for the catch-up itself."""
    now = dt.datetime.now(UTC)
    missed = (now.astimezone(BERLIN) - dt.timedelta(days=2)).date().isoformat()
    done = threading.Event()
    ledger: set[str] = set()

    def stack_night(night):
        ledger.add(night)
        done.set()

    sched = NightlyScheduler(
        timezone=TZ,
        at=TEN,
        stack_night=stack_night,
        due=lambda: nights_due(dt.datetime.now(UTC), timezone=TZ, at=TEN, nights_with_lights=[missed], stacked=ledger),
    )
    sched.start()
    try:
        assert done.wait(10)
        job = sched._scheduler.get_job("nightly-stacks")  # peek: the options the brief requires
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)
        deadline = time.monotonic() + 5
        while job.next_run_time <= now and time.monotonic() < deadline:  # rescheduled yet?
            time.sleep(0.01)
            job = sched._scheduler.get_job("nightly-stacks")
        assert job.next_run_time == next_run(dt.datetime.now(UTC), timezone=TZ, at=TEN)
    finally:
        sched.shutdown()
    assert ledger == {missed}
    sched.shutdown()  # a second shutdown is harmless
