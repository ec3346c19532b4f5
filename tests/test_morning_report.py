"""The morning report (observd.service.morning_report) and the alarms (observd.service.alarms),
through Apprise's JSON notification to a local HTTP endpoint that records what it receives:
one report per night with the right counts and the stacks' thumbnails, never again after a
restart; an unreachable endpoint is a logged warning and a later retry, while the daemon goes on."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import threading
import time
from collections import namedtuple
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from web_night import NIGHT, night_config, reduce_night

from observd.adapters.catalog import Catalog
from observd.adapters.report_ledger import ReportLedger, target_of
from observd.core.config import NotifyConfig, config_from_dict
from observd.service.alarms import Alarms
from observd.service.apprise_sender import Message, deliver
from observd.service.daemon import Daemon
from observd.service.morning_report import DiskSpace, MorningReports, report_message
from observd.service.reports import status_for
from observd.service.sdnotify import Notifier

DEADLINE = 60.0


class Recorder:
    """An HTTP endpoint on loopback that records every JSON body posted to it."""

    def __init__(self, port: int = 0):
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"json://127.0.0.1:{self.port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """The night reduced, not stacked yet: the daemon stacks it, and the report follows."""
    root = tmp_path_factory.mktemp("reduced")
    reduce_night(root, stack=False)
    return root


@pytest.fixture
def site(reduced, tmp_path):
    """A copy of the reduced night for one test (the ledger is the test's own)."""
    shutil.copytree(reduced / "out", tmp_path / "out")
    (tmp_path / "incoming").mkdir()
    return tmp_path


class Clock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def start_daemon(config, clock=None) -> Daemon:
    daemon = Daemon(config, pool_factory=lambda c: None, notifier=Notifier(""), clock=clock or time.time)
    daemon.start()
    return daemon


def step_until(daemon: Daemon, condition, timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        daemon.step()
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def ledger(config) -> list[dict]:
    catalog = Catalog.open(config.paths.database, readonly=True)
    try:
        return ReportLedger(catalog).entries()
    finally:
        catalog.close()


# -- the daemon sends one report per night ----------------------------------------------------------


def test_one_report_per_night_with_counts_and_thumbnails_and_none_after_a_restart(site, recorder):
    config = night_config(site, notify={"urls": [recorder.url], "disk_free_percent": 0.0})  # whatever this disk holds
    daemon = start_daemon(config)
    try:
        daemon.request_stack(NIGHT)
        step_until(daemon, lambda: [r["state"] for r in ledger(config)] == ["sent"])
    finally:
        daemon.shutdown()
    assert len(recorder.posts) == 1
    post = recorder.posts[0]
    assert f"night {NIGHT}: 3 stack(s), 8 good lights" in post["title"]
    body = post["message"]
    assert "Night 2026-11-20: 35 files" in body  # 34 frames and the H-alpha light
    assert "light       13  (8 aligned, 4 bad, 1 waiting)" in body
    assert "1 × waiting: no flat for filter Ha" in body and "4 frame(s) judged bad" in body
    assert "M42 [R]: 4 frames, 4 min" in body and "Output disk:" in body
    assert sorted(a["filename"] for a in post["attachments"]) == [
        "M42_L_thumb.png",
        "M42_R_thumb.png",
        "NGC7000_L_thumb.png",
    ]
    assert all(base64.b64decode(a["base64"]).startswith(b"\x89PNG") for a in post["attachments"])

    again = start_daemon(config)  # a restart: the night is stacked and reported, nothing more to say
    try:
        again.request_stack(NIGHT)
        for _ in range(20):
            again.step()
            time.sleep(0.05)
    finally:
        again.shutdown()
    assert len(recorder.posts) == 1 and [r["state"] for r in ledger(config)] == ["sent"]


def test_an_unreachable_endpoint_is_logged_and_retried_later_while_the_daemon_goes_on(site, caplog):
    port = free_port()
    config = night_config(site, notify={"urls": [f"json://127.0.0.1:{port}/"], "disk_free_percent": 0.0})
    clock = Clock()
    daemon = start_daemon(config, clock)
    recorder = None
    try:
        with caplog.at_level(logging.WARNING):
            daemon.request_stack(NIGHT)
            step_until(daemon, lambda: (ledger(config) or [{}])[0].get("attempts") == 1)
        row = ledger(config)[0]
        assert row["state"] == "due" and row["last_error"] and row["next_attempt"] > time.time() + 30
        assert any("morning report of night 2026-11-20 not sent" in r.getMessage() for r in caplog.records)
        assert config.paths.status_log.read_text().count("not sent to json://…") == 1  # the URL never logged
        for _ in range(10):  # the daemon goes on; the retry waits for its time
            daemon.step()
        assert ledger(config)[0]["attempts"] == 1
        recorder = Recorder(port)
        clock.offset = 120.0
        step_until(daemon, lambda: ledger(config)[0]["state"] == "sent")
    finally:
        daemon.shutdown()
        if recorder is not None:
            recorder.close()
    assert len(recorder.posts) == 1 and NIGHT in recorder.posts[0]["title"]


def test_no_urls_no_report_and_no_ledger(site):
    config = night_config(site)
    daemon = start_daemon(config)
    try:
        daemon.request_stack(NIGHT)
        step_until(daemon, lambda: NIGHT in _stacked(config))
    finally:
        daemon.shutdown()
    assert ledger(config) == []


def _stacked(config) -> set[str]:
    catalog = Catalog.open(config.paths.database, readonly=True)
    try:
        return catalog.stacked_nights()
    finally:
        catalog.close()


# -- the ledger -------------------------------------------------------------------------------------


def test_the_ledger_schedules_each_night_and_target_once(catalog):
    ledger = ReportLedger(catalog)
    a, b = target_of("ntfy://secret@host/topic"), target_of("json://127.0.0.1:1/")
    assert "secret" not in a and len(a) == 16
    assert ledger.schedule(NIGHT, [a, b]) == 2
    assert ledger.schedule(NIGHT, [a, b]) == 0
    ledger.sent(NIGHT, a)
    assert [r["target"] for r in ledger.due(time.time())] == [b]
    ledger.failed(NIGHT, b, "refused", retry_at=time.time() + 60)
    assert ledger.due(time.time()) == [] and ledger.attempts(NIGHT, b) == 1
    assert [r["target"] for r in ledger.due(time.time() + 61)] == [b]
    ledger.failed(NIGHT, b, "refused again", retry_at=None)
    assert ledger.due(time.time() + 1e6) == []
    assert {r["target"]: r["state"] for r in ledger.entries(NIGHT)} == {a: "sent", b: "abandoned"}


# -- the message --------------------------------------------------------------------------------------


def test_at_start_a_recently_stacked_night_without_a_report_gets_one_and_old_nights_do_not(tmp_path):
    """The daemon may stop between stacking a night and scheduling its report: the start catches up."""
    catalog = Catalog.open(tmp_path / "c.db")
    try:
        catalog.mark_stacked("2026-11-20", 2)  # just now, its report never scheduled
        catalog.db["stack_runs"].insert({"night": "2026-10-01", "ran_at": "2026-10-02T08:00:00+00:00", "n_products": 1})
        config = config_from_dict({"notify": {"urls": ["json://127.0.0.1:9/"]}})
        reports = MorningReports(send=lambda url, message: None)
        try:
            reports.catch_up(catalog, config)
            reports.catch_up(catalog, config)  # twice: still one row
        finally:
            reports.stop()
        rows = ReportLedger(catalog).entries()
        assert [(r["night"], r["state"]) for r in rows] == [("2026-11-20", "due")]
    finally:
        catalog.close()


def test_the_message_lists_problems_and_warns_of_low_disk_space(site):
    config = night_config(site)
    catalog = Catalog.open(config.paths.database, readonly=True)
    try:
        status = status_for(catalog, config, night=NIGHT)
    finally:
        catalog.close()
    hot = {"name": "warm.fits", "ccd_temp": -7.5, "set_temp": -10.0}
    message = report_message(
        status,
        excursions=[hot],
        tolerance=0.5,
        disk=DiskSpace("/srv", 2_000_000_000, 100_000_000_000, 0.10),
        host="obs",
    )
    assert message.title.startswith("observd on obs: night 2026-11-20: 0 stack(s)")
    assert "No stacks" in message.body
    assert "1 frame(s) more than 0.5 °C from their set point, worst warm.fits: -7.5 °C for -10.0 °C" in message.body
    assert "low disk space: 2.0 GB free (2%) on /srv" in message.body
    assert message.attachments == ()


def test_deliver_says_why_a_url_is_not_usable():
    assert deliver("not a url at all", Message("t", "b")).startswith("not an Apprise URL")


# -- alarms -------------------------------------------------------------------------------------------


def test_alarms_go_out_at_once_for_a_broken_pool_or_a_full_disk_at_most_once_an_hour_per_kind():
    sent: list[Message] = []
    now = [0.0]
    alarms = Alarms(sent.append, clock=lambda: now[0], host="obs")
    alarms.on_event("error", "a worker process died (BrokenProcessPool); starting new workers", None)
    alarms.on_event("error", "processing failed (attempt 1): OSError: [Errno 28] No space left on device", "/c/a.fits")
    alarms.on_event("error", "processing failed (attempt 1): OSError: [Errno 28] No space left on device", "/c/b.fits")
    alarms.on_event("warning", "a worker process died", None)  # not an error: no alarm
    alarms.on_event("error", "processing failed: ValueError: bad header", "/c/c.fits")  # a retry may cure it
    assert [m.title for m in sent] == ["observd on obs: the worker pool broke", "observd on obs: the disk is full"]
    assert "a.fits" in sent[1].body
    now[0] = 3601.0
    alarms.on_event("error", "processing failed (attempt 2): OSError: [Errno 28] No space left on device", "/c/d.fits")
    assert sent[-1].title.endswith("the disk is full") and "(1 more such event(s) in the last 60 min)" in sent[-1].body


def test_a_restarted_watcher_a_nearly_full_disk_and_a_quiet_night_raise_alarms(tmp_path, monkeypatch):
    sent: list[Message] = []
    clock, wall = [0.0], [datetime(2026, 11, 20, 21, 0, tzinfo=UTC)]  # 22:00 in Berlin
    alarms = Alarms(sent.append, clock=lambda: clock[0], host="obs", wall=lambda: wall[0])
    alarms.on_event("warning", "observer thread died; restarted: scanning /srv/camera", None)
    assert sent[-1].title == "observd on obs: the folder watcher died and was restarted"

    notify = NotifyConfig(disk_free_percent=10.0, quiet_hours=2.0, night_end="05:00")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(100 * 2**30, 95 * 2**30, 5 * 2**30))
    last = {"2026-11-20": "2026-11-20T20:30:00+00:00"}  # the last light, 30 min ago
    alarms.check(tmp_path, notify, last.get, "Europe/Berlin")
    assert sent[-1].title == "observd on obs: the disk is nearly full" and "5.0 GiB free of 100 GiB" in sent[-1].body
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(100 * 2**30, 50 * 2**30, 50 * 2**30))
    count = len(sent)
    clock[0], wall[0] = 120.0, datetime(2026, 11, 20, 22, 0, tzinfo=UTC)  # 1.5 h quiet: not yet
    alarms.check(tmp_path, notify, last.get, "Europe/Berlin")
    assert len(sent) == count
    clock[0], wall[0] = 240.0, datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # 2.5 h quiet, at midnight
    alarms.check(tmp_path, notify, last.get, "Europe/Berlin")
    assert sent[-1].title == "observd on obs: a night went quiet" and "21:30 local time" in sent[-1].body
    clock[0], wall[0] = 4000.0, datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    alarms.check(tmp_path, notify, last.get, "Europe/Berlin")
    assert len(sent) == count + 1  # once per night
    # after night_end the session has simply ended; a night with no light yet is not quiet
    late = Alarms(sent.append, clock=lambda: 0.0, wall=lambda: datetime(2026, 11, 21, 5, 30, tzinfo=UTC))
    late.check(tmp_path, notify, last.get, "Europe/Berlin")
    early = Alarms(sent.append, clock=lambda: 0.0, wall=lambda: datetime(2026, 11, 20, 23, 0, tzinfo=UTC))
    early.check(tmp_path, notify, {}.get, "Europe/Berlin")
    assert len(sent) == count + 1


def test_the_daemon_sends_alarms_through_apprise(site, recorder):
    config = night_config(site, notify={"urls": [recorder.url], "morning_report": False, "disk_free_percent": 0.0})
    daemon = start_daemon(config)
    try:
        daemon.events.emit("error", "workers", "a worker process died (test); starting new workers")
        end = time.monotonic() + DEADLINE
        while not recorder.posts and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        daemon.shutdown()
    assert [p["title"].rsplit(": ", 1)[1] for p in recorder.posts] == ["the worker pool broke"]
