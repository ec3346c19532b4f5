"""What the daemon tells people (observd.service.status_log): status log lines, rotation by size,
writes that fail without stopping anything, journald priority prefixes on stderr."""

import io
import logging
import sys
from datetime import datetime

import pytest

from observd.service.status_log import JournalFormatter, StatusLog, journal_stderr, journal_wanted, status_line

WHEN = datetime(2026, 11, 21, 3, 12, 9)


# -- moved from test_daemon.py --------------------------------------------------------------------


def test_journal_priority_prefixes_on_every_line():
    import logging

    from observd.service.status_log import JournalFormatter, journal_wanted

    fmt = JournalFormatter("%(message)s")
    record = logging.LogRecord("observd", logging.ERROR, __file__, 1, "failed\nTraceback line", None, None)
    assert fmt.format(record) == "<3>failed\n<3>Traceback line"
    record.levelno = logging.WARNING
    assert fmt.format(record).startswith("<4>")
    record.levelno = logging.INFO
    assert fmt.format(record).startswith("<6>")

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert journal_wanted(Tty(), {}) is False
    assert journal_wanted(Tty(), {"JOURNAL_STREAM": "8:1234"}) is True
    assert journal_wanted(io.StringIO(), {}) is True


def test_status_log_lines_and_rotation(tmp_path):
    from datetime import datetime

    from observd.service.status_log import StatusLog

    log = StatusLog(tmp_path / "status.log", max_bytes=400, backups=2)
    when = datetime(2026, 11, 21, 3, 12, 9)
    log.record("info", "calibrated  (bias v1; 183 stars, FWHM 2.9 px)", "/cam/M42_0012.fits", when=when)
    first = (tmp_path / "status.log").read_text().splitlines()[0]
    assert first == "2026-11-21 03:12:09  M42_0012.fits  calibrated  (bias v1; 183 stars, FWHM 2.9 px)"
    for i in range(40):
        log.record("warning", f"waiting: no flat for filter L ({i})", "/cam/x.fits")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["status.log", "status.log.1", "status.log.2"]
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())


# -- lines ----------------------------------------------------------------------------------------


def test_a_line_is_local_time_file_name_and_message_on_one_line():
    assert (
        status_line(WHEN, "/cam/2026-11-20/M42/M42_0013.fits", "waiting: no flat for filter L")
        == "2026-11-21 03:12:09  M42_0013.fits  waiting: no flat for filter L"
    )
    assert status_line(WHEN, None, "observd started") == "2026-11-21 03:12:09  observd  observd started"
    assert (
        status_line(WHEN, "/cam/a.fits", "failed: OSError\nTraceback (most recent call last):\n  x")
        == "2026-11-21 03:12:09  a.fits  failed: OSError Traceback (most recent call last):   x"
    )
    assert status_line(datetime(2026, 1, 2, 3, 4, 5, 999999), "", "m").startswith("2026-01-02 03:04:05  observd")


def test_record_appends_one_line_per_event_whatever_the_level(tmp_path):
    log = StatusLog(tmp_path / "logs" / "status.log")  # its folder is created
    for i, level in enumerate(("info", "warning", "error", "debug", "no such level")):
        log.record(level, f"event {i}", f"/cam/f{i}.fits", when=WHEN)
    log.close()
    lines = (tmp_path / "logs" / "status.log").read_text(encoding="utf-8").splitlines()
    assert lines == [f"2026-11-21 03:12:09  f{i}.fits  event {i}" for i in range(5)]


def test_lines_are_appended_to_an_existing_log_and_written_as_utf8(tmp_path):
    path = tmp_path / "status.log"
    path.write_text("an earlier line\n", encoding="utf-8")
    log = StatusLog(path)
    message = "excluded: CCD-TEMP -8.00 °C is 2.00 °C from the set point −10 °C"
    log.record("info", message, "/cam/d.fits", when=WHEN)
    log.close()
    lines = path.read_bytes().decode("utf-8").splitlines()
    assert lines == ["an earlier line", f"2026-11-21 03:12:09  d.fits  {message}"]


def test_status_lines_do_not_reach_the_root_logger(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    log = StatusLog(tmp_path / "status.log")
    log.record("error", "calibration failed", "/cam/a.fits", when=WHEN)
    log.close()
    assert caplog.records == []
    assert "calibration failed" in (tmp_path / "status.log").read_text()


# -- rotation -------------------------------------------------------------------------------------


def test_rotation_by_size_keeps_n_backups_newest_first_and_loses_no_recent_line(tmp_path):
    path = tmp_path / "status.log"
    log = StatusLog(path, max_bytes=300, backups=3)
    for i in range(100):
        log.record("info", f"event {i:03d}", "/cam/a.fits", when=WHEN)
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.log", "status.log.1", "status.log.2", "status.log.3"]
    kept = [path.with_name(f"status.log.{i}") for i in (3, 2, 1)] + [path]
    assert all(p.stat().st_size <= 300 for p in kept)
    numbers = [int(line.rsplit(" ", 1)[1]) for p in kept for line in p.read_text().splitlines()]
    assert numbers == list(range(numbers[0], 100))  # oldest backup .3 ... current, in order
    assert numbers[0] > 0  # the oldest lines were rotated away


def test_without_backups_the_log_is_not_rotated_away(tmp_path):
    path = tmp_path / "status.log"
    log = StatusLog(path, max_bytes=200, backups=0)
    for i in range(20):
        log.record("info", f"event {i}", None, when=WHEN)
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["status.log"]
    assert path.read_text().splitlines()[-1].endswith("event 19")


# -- failures -------------------------------------------------------------------------------------


def test_a_failing_write_is_reported_on_stderr_and_never_raised(capsys):
    log = StatusLog("/dev/full")  # every write: ENOSPC, as on a full disk
    try:
        log.record("info", "calibrated", "/cam/a.fits", when=WHEN)
        log.record("error", "failed", "/cam/b.fits", when=WHEN)
        err = capsys.readouterr().err
        assert "No space left on device" in err and "b.fits  failed" in err
    finally:
        log.close()


def test_closing_on_a_full_disk_does_not_raise(caplog):
    """The daemon's shutdown closes the status log last but one; a failing final flush must not
    stop it before it says it stopped."""
    log = StatusLog("/dev/full")
    log.record("info", "calibrated", "/cam/a.fits", when=WHEN)
    with caplog.at_level("WARNING", logger="observd.service.status_log"):
        log.close()  # raised OSError (ENOSPC) before
    assert any("last lines lost" in r.getMessage() for r in caplog.records)


# -- journald -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "level, prefix",
    [
        (logging.CRITICAL, "<2>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (25, "<6>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
        (5, "<7>"),
    ],
)
def test_each_logging_level_maps_to_its_syslog_priority(level, prefix):
    record = logging.LogRecord("observd", level, __file__, 1, "message", None, None)
    assert JournalFormatter("%(message)s").format(record) == prefix + "message"


def test_a_traceback_keeps_the_error_priority_on_every_line():
    try:
        raise ValueError("bad header")
    except ValueError:
        record = logging.LogRecord("observd.daemon", logging.ERROR, __file__, 1, "job failed", None, sys.exc_info())
    lines = JournalFormatter("%(name)s: %(message)s").format(record).splitlines()
    assert lines[0] == "<3>observd.daemon: job failed"
    assert len(lines) >= 4 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: bad header"
    empty = logging.LogRecord("observd", logging.WARNING, __file__, 1, "", None, None)
    assert JournalFormatter("%(message)s").format(empty) == "<4>"


def test_journal_wanted_when_stderr_cannot_say_it_is_a_terminal():
    closed = io.StringIO()
    closed.close()
    assert journal_wanted(closed, {}) is True  # isatty() raises ValueError on a closed stream
    assert journal_wanted(object(), {}) is True  # no isatty at all
    assert journal_wanted(io.StringIO(), {"JOURNAL_STREAM": ""}) is True


def test_journal_stderr_swaps_only_stderr_handlers_and_restores_them(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    logger = logging.Logger("observd.test")
    to_stderr = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(levelname)s %(message)s")
    to_stderr.setFormatter(plain)
    other = logging.StreamHandler(io.StringIO())
    other_format = logging.Formatter("%(message)s")
    other.setFormatter(other_format)
    logger.addHandler(to_stderr)
    logger.addHandler(other)
    record = logging.LogRecord("observd.daemon", logging.WARNING, __file__, 1, "disk almost full", None, None)
    with journal_stderr(logger):
        assert isinstance(to_stderr.formatter, JournalFormatter)
        assert to_stderr.format(record) == "<4>observd.daemon: disk almost full"
        assert other.formatter is other_format
    assert to_stderr.formatter is plain and other.formatter is other_format


def test_journal_stderr_leaves_a_terminal_alone(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    logger = logging.Logger("observd.test")
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(message)s")
    handler.setFormatter(plain)
    logger.addHandler(handler)
    with journal_stderr(logger):
        assert handler.formatter is plain
