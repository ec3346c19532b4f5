"""FolderWatcher with a real observer on real files; is_candidate and scan as pure-ish helpers."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from watchdog.events import FileClosedEvent
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD

from observd.adapters.fully_written import check_fits_size
from observd.adapters.watcher import FolderWatcher, is_candidate, scan
from observd.core.config import WatchConfig

DEADLINE = 10.0  # generous: the machine is shared; waits return as soon as the condition holds


def fits_bytes(shape=(64, 64), value=0) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(np.full(shape, value, np.uint16)).writeto(buf)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class Recorder:
    """Collects callbacks (from any thread) and drives `poll()` while waiting."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ready: list[tuple[Path, int]] = []  # (path, size when reported)
        self.rescans: list[str] = []
        self.stalled: list[tuple[Path, str]] = []
        self.watcher: FolderWatcher | None = None

    def on_ready(self, path: Path) -> None:
        with self.lock:
            self.ready.append((path, path.stat().st_size))

    def on_rescan(self, reason: str) -> None:
        with self.lock:
            self.rescans.append(reason)

    def on_stalled(self, path: Path, check) -> None:
        with self.lock:
            self.stalled.append((path, check.reason))

    def paths(self) -> list[Path]:
        with self.lock:
            return [p for p, _ in self.ready]

    def wait(self, condition, timeout: float = DEADLINE) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.watcher is not None:
                self.watcher.poll()
            if condition():
                return True
            time.sleep(0.02)
        return condition()

    def settle(self, seconds: float) -> None:
        """Keep polling for a while, to give a wrong implementation the chance to misbehave."""
        self.wait(lambda: False, seconds)


@pytest.fixture
def watch(tmp_path):
    """Factory: start a watcher on tmp_path/'camera' with the given settings; stopped at the end."""
    started = []

    def make(**settings) -> tuple[Recorder, FolderWatcher, Path]:
        root = tmp_path / "camera"
        root.mkdir(exist_ok=True)
        rec = Recorder()
        watcher = FolderWatcher(root, WatchConfig(**settings), rec.on_ready, rec.on_rescan, on_stalled=rec.on_stalled)
        rec.watcher = watcher
        watcher.start()
        started.append(watcher)
        return rec, watcher, root

    yield make
    for watcher in started:
        watcher.stop()


# -- pure helpers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("light_001.fits", True),
        ("LIGHT_001.FIT", True),
        ("a.fts", True),
        ("a.fits.gz", True),
        ("a.FITS.GZ", True),
        ("a.fits.fz", True),
        ("a.fz", True),
        ("a.fits.tmp", False),
        ("a.fits.part", False),
        ("a.fits.partial", False),
        (".a.fits", False),
        ("a.fits~", False),
        ("a.txt", False),
        ("a.gz", False),
        ("fits", False),
        ("night/.cache/a.fits", False),
        ("night.tmp/a.fits", False),
        ("n1/sub/a.fits", True),
    ],
)
def test_is_candidate(name, expected):
    root = Path("/srv/camera")
    assert is_candidate(root / name, WatchConfig(), root) is expected


def test_is_candidate_only_judges_folders_below_the_root():
    root = Path("/home/obs/.camera")
    assert is_candidate(root / "a.fits", WatchConfig(), root)
    assert not is_candidate(root / "a.fits", WatchConfig())  # no root: all folders count
    assert not is_candidate(Path("/elsewhere/a.fits"), WatchConfig(), root)


def test_scan_is_recursive_sorted_and_prunes_ignored_folders(tmp_path):
    for rel in [
        "b.fits",
        "a.fit",
        "n2/z.fits.gz",
        "n1/y.fts",
        "n1/notes.txt",
        ".hidden/x.fits",
        "n1/.x.fits",
        "up.tmp/w.fits",
        "n1/v.fits.part",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")

    found = [p.relative_to(tmp_path).as_posix() for p in scan(tmp_path, WatchConfig())]

    assert found == ["a.fit", "b.fits", "n1/y.fts", "n2/z.fits.gz"]


# -- the watcher with a real observer -------------------------------------------------------
def test_slow_chunked_writer_is_reported_once_after_the_last_chunk(watch):
    rec, _, root = watch(settle_seconds=60)  # only the close event can make it ready
    data = fits_bytes((256, 256))
    path = root / "light_001.fits"
    with open(path, "wb") as f:
        for i in range(0, len(data), len(data) // 5 + 1):
            f.write(data[i : i + len(data) // 5 + 1])
            f.flush()
            rec.settle(0.1)
            assert rec.paths() == []  # never while chunks are still coming

    assert rec.wait(lambda: rec.ready)
    rec.settle(0.3)
    assert rec.ready == [(path, len(data))]


def test_temp_name_then_rename_is_reported_once_under_the_final_name(watch):
    rec, _, root = watch(settle_seconds=60)  # the rename itself says "done"
    data = fits_bytes()
    write_file(root / "light_002.fits.tmp", data)
    os.rename(root / "light_002.fits.tmp", root / "light_002.fits")

    assert rec.wait(lambda: rec.ready)
    rec.settle(0.3)
    assert rec.paths() == [root / "light_002.fits"]


def test_open_close_reopen_writer_is_reported_when_really_complete(watch):
    rec, _, root = watch(settle_seconds=60)
    data = fits_bytes((128, 128))
    path = root / "light_003.fits"
    write_file(path, data[:10_000])  # header + part of the data, then close
    rec.settle(0.3)
    assert rec.ready == []  # closed, but structurally incomplete
    with open(path, "ab") as f:
        f.write(data[10_000:])

    assert rec.wait(lambda: rec.ready)
    rec.settle(0.2)
    assert rec.ready == [(path, len(data))]


def test_mkdir_p_then_immediate_write_is_caught(watch):
    rec, _, root = watch(settle_seconds=0.3)
    sub = root / "2024-05-01" / "flats"
    os.makedirs(sub)
    write_file(sub / "flat_001.fits", fits_bytes())  # possibly before the new watch exists

    assert rec.wait(lambda: rec.ready)
    rec.settle(0.4)
    assert rec.paths() == [sub / "flat_001.fits"]


def test_same_event_twice_gives_one_report(tmp_path):
    rec = Recorder()
    watcher = FolderWatcher(tmp_path, WatchConfig(settle_seconds=60), rec.on_ready, rec.on_rescan)
    path = tmp_path / "bias_001.fits"
    write_file(path, fits_bytes())

    watcher._handler.dispatch(FileClosedEvent(str(path)))
    watcher._handler.dispatch(FileClosedEvent(str(path)))
    watcher.poll()

    assert rec.paths() == [path]


def test_rewritten_file_is_reported_again(watch):
    rec, _, root = watch(settle_seconds=60)
    path = root / "light_004.fits"
    write_file(path, fits_bytes((64, 64), 1))
    assert rec.wait(lambda: len(rec.ready) == 1)

    write_file(path, fits_bytes((96, 96), 2))  # new content, new size and mtime

    assert rec.wait(lambda: len(rec.ready) == 2)
    assert [size for _, size in rec.ready] == [len(fits_bytes((64, 64))), len(fits_bytes((96, 96)))]


def test_ignored_names_are_never_reported(watch):
    rec, _, root = watch(settle_seconds=0.2)
    data = fits_bytes()
    for name in ["a.fits.tmp", ".hidden.fits", "notes.txt", "b.fits~"]:
        write_file(root / name, data)
    (root / ".cache").mkdir()
    write_file(root / ".cache" / "c.fits", data)
    write_file(root / "real.fits", data)

    assert rec.wait(lambda: rec.ready)
    rec.settle(0.5)  # > settle_seconds: the others had their chance
    assert rec.paths() == [root / "real.fits"]


def test_polling_mode_uses_settling(watch):
    rec, watcher, root = watch(polling=True, poll_interval=0.1, settle_seconds=0.3)
    path = root / "dark_001.fits"
    data = fits_bytes()
    write_file(path, data[:5000])
    rec.settle(0.6)
    assert rec.ready == []  # stable but incomplete: not ready

    with open(path, "ab") as f:
        f.write(data[5000:])

    assert rec.wait(lambda: rec.ready)
    rec.settle(0.4)
    assert rec.ready == [(path, len(data))]
    assert watcher.alive()


def test_incomplete_file_that_stops_changing_is_reported_as_stalled(tmp_path):
    """Scripted: the writer's close event is fed in and time is an injected clock."""
    now = [100.0]
    rec = Recorder()
    watcher = FolderWatcher(
        tmp_path,
        WatchConfig(settle_seconds=0.1, stall_seconds=0.3),
        rec.on_ready,
        rec.on_rescan,
        clock=lambda: now[0],
        on_stalled=rec.on_stalled,
    )
    page = tmp_path / "download.fits"
    page.write_text("<!DOCTYPE html>\n<html>404</html>\n")
    watcher._handler.dispatch(FileClosedEvent(str(page)))
    assert rec.stalled == []  # written, but not unchanged for the stall time yet
    now[0] += 0.29
    watcher.poll()
    assert rec.stalled == []
    now[0] += 0.01
    watcher.poll()
    now[0] += 5.0
    watcher.poll()  # reported once, not again
    assert rec.stalled == [(page, "not a FITS file: starts with '<!DOCTYPE html>'")]
    assert rec.ready == []


def test_dead_observer_is_restarted_and_asks_for_a_rescan(watch):
    rec, watcher, root = watch(settle_seconds=60)
    watcher._observer.stop()  # simulate the observer thread dying
    watcher._observer.join(5)
    assert not watcher.alive()

    watcher.poll()

    assert watcher.alive()
    assert len(rec.rescans) == 1 and "observer" in rec.rescans[0]
    write_file(root / "after.fits", fits_bytes())  # events flow again
    assert rec.wait(lambda: rec.ready)
    assert rec.paths() == [root / "after.fits"]


def test_inotify_queue_overflow_asks_for_a_rescan(watch):
    rec, _, _ = watch()
    overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")

    InotifyFD.get_instance().handle_event(overflow)  # what watchdog's reader does on overflow

    assert len(rec.rescans) == 1 and "overflow" in rec.rescans[0]


def test_reported_file_is_complete_at_report_time(watch):
    """The contract the pipeline relies on: when on_ready fires, the structure is whole."""
    seen = []
    rec, watcher, root = watch(settle_seconds=60)
    watcher._on_ready = lambda p: seen.append(check_fits_size(p).complete)
    data = fits_bytes((128, 128))
    with open(root / "x.fits", "wb") as f:
        f.write(data[:4000])
        f.flush()
        f.write(data[4000:])

    assert rec.wait(lambda: seen)
    assert seen == [True]


def test_settling_is_measured_on_the_injected_clock_and_restarts_on_change(tmp_path):
    """No observer: files are tracked as after a rescan, time is scripted."""
    now = [100.0]
    rec = Recorder()
    watcher = FolderWatcher(
        tmp_path, WatchConfig(settle_seconds=2.0), rec.on_ready, rec.on_rescan, clock=lambda: now[0]
    )
    path = tmp_path / "light_010.fits"
    data = fits_bytes()
    write_file(path, data[:6000])
    watcher.track(path)
    watcher.poll()  # first look at t=100

    write_file(path, data)  # grew: the 2 s start again
    now[0] = 101.5
    watcher.poll()
    now[0] = 103.4  # 1.9 s after the change
    watcher.poll()
    assert rec.ready == []
    now[0] = 103.5  # 2.0 s after the change
    watcher.poll()
    assert rec.ready == [(path, len(data))]
    assert watcher.alive() is False  # never started: no observer thread
