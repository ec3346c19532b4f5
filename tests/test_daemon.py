"""The daemon on real files with a real observer: in a thread (fast cases) or a subprocess (signals).

Every scenario ends with the same audit: each raw file has exactly one current catalog row,
at most one calibrated and one aligned output, and is byte-identical to what was written.
Lights come from the simulator (128x128, with stars); `[calibrate] require = []` lets them be
calibrated without masters, so each scenario is about arrival, not about calibration.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import observd.jobs.light_job
import observd.pipeline.light_stage
from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import write_with
from observd.core.config import config_from_dict
from observd.service import arrivals as arrivals_module
from observd.service.daemon import Daemon
from observd.service.reports import status_report
from observd.service.sdnotify import Notifier
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

DEADLINE = 60.0  # generous (shared machine); waits return as soon as the condition holds
DONE = ("calibrated", "aligned", "unaligned", "bad")


# -- inputs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_lights(tmp_path_factory) -> list[tuple[fits.Header, np.ndarray]]:
    out = tmp_path_factory.mktemp("sim")
    spec = SimSpec(
        shape=(128, 128),
        n_bias=1,
        n_dark=1,
        n_flat=1,
        truth=False,
        n_clouded=0,
        n_trailed=0,
        meridian_flip=False,
        cosmic_rays=0,
        targets=(TargetSpec(n_lights=6, n_stars=60),),
    )
    write_night(out, spec)
    lights = []
    for path in sorted(out.rglob("*.fits")):
        with fits.open(path) as hdul:
            if str(hdul[0].header.get("IMAGETYP", "")).lower().startswith("light"):
                lights.append((hdul[0].header.copy(), hdul[0].data.copy()))
    assert len(lights) == 6
    return lights


@pytest.fixture
def light_bytes(sim_lights):
    """light_bytes(i, variant=0): distinct FITS bytes for file number i (a simulated light)."""

    def make(i: int, variant: int = 0) -> bytes:
        header, data = sim_lights[i % len(sim_lights)]
        header = header.copy()
        header["SEQNUM"] = (i, "test sequence number")
        header["VARIANT"] = variant
        buf = io.BytesIO()
        fits.PrimaryHDU(data, header).writeto(buf)
        return buf.getvalue()

    return make


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Site:
    """A camera folder, an output folder and a config; remembers what the 'camera' wrote."""

    def __init__(self, root: Path, **overrides):
        self.root = root
        self.watch = root / "camera"
        self.output = root / "out"
        self.watch.mkdir(parents=True, exist_ok=True)
        raw = {
            "paths": {
                "watch": str(self.watch),
                "output": str(self.output),
                "database": str(self.output / "observd.db"),
                "status_log": str(self.output / "status.log"),
            },
            "calibrate": {"require": []},
            "watch": {"settle_seconds": 0.5, "poll_interval": 0.2, "stall_seconds": 2.0},
            "daemon": {"retry_backoff": 0.3, "max_retries": 3, "workers": 1},
        }
        for section, values in overrides.items():
            raw.setdefault(section, {}).update(values)
        self.raw = raw
        self.config = config_from_dict(raw, source="test")
        self.written: dict[Path, str] = {}  # final raw path -> sha256 of its final content

    def write_toml(self) -> Path:
        lines = []
        for section, values in self.raw.items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                lines.append(f"{key} = {toml_value(value)}")
        path = self.root / "observd.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def put(self, rel: str, data: bytes) -> Path:
        path = self.watch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.written[path] = sha(data)
        return path

    def rows(self) -> list[dict]:
        if not self.config.paths.database.exists():
            return []
        catalog = Catalog.open(self.config.paths.database, readonly=True)
        try:
            return catalog.files(current=False)
        finally:
            catalog.close()

    def current(self) -> dict[str, dict]:
        return {r["path"]: r for r in self.rows() if r["current"]}

    def wait_for(self, condition, timeout: float = DEADLINE) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition(self.current()):
                return
            time.sleep(0.1)
        raise AssertionError(
            f"timed out; catalog: {[(Path(p).name, r['state'], r['reason']) for p, r in self.current().items()]}"
        )

    def wait_states(self, expected: dict[Path, tuple[str, ...]], timeout: float = DEADLINE) -> dict[str, dict]:
        def ok(current):
            return all(str(p) in current and current[str(p)]["state"] in states for p, states in expected.items())

        self.wait_for(ok, timeout)
        return self.current()

    def audit(self) -> None:
        """Exactly one current row per raw file, at most one output each, raw files unchanged."""
        rows = self.rows()
        current = [r for r in rows if r["current"]]
        paths = [r["path"] for r in current]
        assert len(paths) == len(set(paths)), "a path has two current rows"
        for path, digest in self.written.items():
            assert paths.count(str(path)) == 1, f"{path.name}: {paths.count(str(path))} current rows"
            assert sha(path.read_bytes()) == digest, f"{path.name}: raw file modified"
        for kind in ("calibrated", "aligned"):
            outputs = sorted(self.output.rglob(f"{kind}/**/*.fits"))
            names = [p.name for p in outputs]
            assert len(names) == len(set(names)), f"duplicate {kind} outputs: {names}"
            referenced = {r[f"{kind}_path"] for r in current if r[f"{kind}_path"]}
            assert {str(p) for p in outputs} <= referenced | {r[f"{kind}_path"] for r in rows if r[f"{kind}_path"]}
            for path in outputs:  # every output is whole
                with fits.open(path) as hdul:
                    assert hdul[0].data.shape == (128, 128)
        leftovers = [p for p in self.output.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"temporary outputs left: {leftovers}"


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\") + '"'


class Running:
    """A Daemon serving in a background thread (signals are not involved)."""

    def __init__(self, site: Site, **kwargs):
        kwargs.setdefault("pool_factory", lambda config: None)
        kwargs.setdefault("notifier", Notifier(""))
        kwargs.setdefault("tick", 0.2)
        self.daemon = Daemon(site.config, **kwargs)
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        assert self.started.wait(DEADLINE), "daemon did not start"

    def _main(self):
        try:
            self.daemon.start()
            self.started.set()
            self.daemon.serve()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self.started.set()
            self.daemon.shutdown()

    def stop(self):
        self.daemon.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "daemon did not stop within 30 s"
        assert self.error is None, repr(self.error)


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


@pytest.fixture
def running(site):
    started = []

    def start(**kwargs) -> Running:
        r = Running(site, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


# -- writers ------------------------------------------------------------------------------------


def chunked_write(path: Path, data: bytes, chunks: int = 5, pause: float = 0.4) -> None:
    bounds = np.linspace(0, len(data), chunks + 1).astype(int)
    with open(path, "wb") as fh:
        for i in range(chunks):
            fh.write(data[bounds[i] : bounds[i + 1]])
            fh.flush()
            os.fsync(fh.fileno())
            if i < chunks - 1:
                time.sleep(pause)


# -- arrival scenarios ----------------------------------------------------------------------------


def test_slow_chunked_writer_is_processed_once_after_last_chunk(site, running, light_bytes):
    running()
    data = light_bytes(0)
    path = site.watch / "M42_0001.fits"
    site.written[path] = sha(data)
    chunked_write(path, data, chunks=5, pause=0.5)  # 2 s of partial file, longer than settle_seconds
    rows = site.wait_states({path: DONE})
    row = rows[str(path)]
    assert row["sha256"] == sha(data) and row["size"] == len(data) and row["version"] == 1
    history = [r for r in site.rows() if r["path"] == str(path)]
    assert len(history) == 1, "the partial file must not have produced its own version"
    site.audit()


def test_temp_name_then_rename_is_processed_once_under_final_name(site, running, light_bytes):
    running()
    data = light_bytes(1)
    tmp = site.watch / "M42_0002.fits.tmp"
    chunked_write(tmp, data, chunks=3, pause=0.3)
    final = site.watch / "M42_0002.fits"
    os.replace(tmp, final)
    site.written[final] = sha(data)
    site.wait_states({final: DONE})
    assert [Path(r["path"]).name for r in site.rows()] == ["M42_0002.fits"]
    site.audit()


def test_a_completed_file_renamed_from_a_temporary_name_leaves_one_row_and_no_failure(tmp_path, light_bytes):
    """A program writes ~NAME.fits whole, closes it and renames it. With ~* not ignored (the
    mechanism, not the default rule, is under test), the temporary name may be catalogued as a
    light before the rename: its row must be retired ('gone', not current), never 'failed', and
    the night counts one light."""
    site = Site(tmp_path, watch={"ignore": ["*.tmp"]})
    running = Running(site)
    try:
        data = light_bytes(4)
        tmp = site.watch / "~M42_0009.fits"
        tmp.write_bytes(data)
        site.wait_for(lambda cur: str(tmp) in cur)  # catalogued under its temporary name
        final = site.watch / "M42_0009.fits"
        os.replace(tmp, final)
        site.written[final] = sha(data)
        site.wait_states({final: DONE})
        site.wait_for(lambda cur: str(tmp) not in cur)
        rows = {r["path"]: r for r in site.rows()}
        assert rows[str(tmp)]["state"] == "gone" and rows[str(tmp)]["current"] == 0
        assert all(r["state"] != "failed" for r in site.rows())
        assert [Path(p).name for p in site.current()] == ["M42_0009.fits"]
        site.audit()
    finally:
        running.stop()


def test_temporary_tilde_names_are_ignored_by_default(site, running, light_bytes):
    running()
    data = light_bytes(5)
    tmp = site.watch / "~M42_0010.fits"
    tmp.write_bytes(data)
    final = site.watch / "M42_0010.fits"
    time.sleep(1.0)  # longer than the settle time: a watched name would be catalogued by now
    os.replace(tmp, final)
    site.written[final] = sha(data)
    site.wait_states({final: DONE})
    assert [Path(r["path"]).name for r in site.rows()] == ["M42_0010.fits"]
    site.audit()


def test_open_close_reopen_writer(site, running, light_bytes):
    """Header and half the data, close; reopen, append the rest, close: one row, complete content."""
    running()
    data = light_bytes(2)
    path = site.watch / "M42_0003.fits"
    half = len(data) // 2
    path.write_bytes(data[:half])
    time.sleep(1.2)  # longer than settle_seconds: a naive "stable" rule would take it
    with open(path, "ab") as fh:
        fh.write(data[half:])
    site.written[path] = sha(data)
    rows = site.wait_states({path: DONE})
    assert rows[str(path)]["sha256"] == sha(data)
    assert len(site.rows()) == 1
    site.audit()


def test_files_added_while_down_are_processed_at_startup(site, running, light_bytes):
    paths = [site.put(f"night1/M42_{i:04d}.fits", light_bytes(i)) for i in range(50)]
    old = time.time() - 30  # written a while ago, while observd was down
    for p in paths:
        os.utime(p, (old, old))
    running()
    site.wait_states({p: DONE for p in paths}, timeout=120)
    site.audit()


def test_new_subfolder_then_immediate_write(site, running, light_bytes):
    running()
    sub = site.watch / "2026-11-21" / "M42" / "L"
    sub.mkdir(parents=True)  # mkdir -p, then write at once: before the watch is added
    path = site.put("2026-11-21/M42/L/M42_0001.fits", light_bytes(3))
    site.wait_states({path: DONE})
    site.audit()


def test_duplicate_events_and_rescans_give_one_row_one_output(site, running, light_bytes):
    r = running()
    path = site.put("M42_0004.fits", light_bytes(4))
    site.wait_states({path: DONE})
    r.daemon.arrivals.on_ready(path)  # the same event delivered again (as watchdog may)
    r.daemon.arrivals.on_ready(path)
    r.daemon._on_rescan_needed("test: pretend events were lost")
    time.sleep(1.5)
    assert len(site.rows()) == 1
    site.audit()


def test_rewritten_file_is_reprocessed_as_new_version(site, running, light_bytes):
    running()
    path = site.put("M42_0005.fits", light_bytes(5))
    first = site.wait_states({path: DONE})[str(path)]
    site.put("M42_0005.fits", light_bytes(5, variant=1))
    site.wait_for(lambda cur: str(path) in cur and cur[str(path)]["version"] == 2 and cur[str(path)]["state"] in DONE)
    versions = sorted((r["version"], r["current"], r["state"]) for r in site.rows())
    assert versions == [(1, 0, "superseded"), (2, 1, site.current()[str(path)]["state"])]
    assert site.current()[str(path)]["sha256"] != first["sha256"]
    site.audit()


def test_handler_that_raises_for_one_file_is_recorded_and_others_go_on(site, running, light_bytes, monkeypatch):
    real = arrivals_module.catalogue

    def flaky(path, *args, **kwargs):
        if Path(path).name == "M42_bad.fits":
            raise RuntimeError("injected failure")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(arrivals_module, "catalogue", flaky)
    r = running()
    bad = site.put("M42_bad.fits", light_bytes(0))
    good = site.put("M42_good.fits", light_bytes(1))
    rows = site.wait_states({bad: ("failed",), good: DONE})
    assert "injected failure" in rows[str(bad)]["reason"]
    assert "RuntimeError: injected failure" in rows[str(bad)]["traceback"]
    assert r.thread.is_alive()
    later = site.put("M42_later.fits", light_bytes(2))  # still serving afterwards
    site.wait_states({later: DONE})
    status = (site.output / "status.log").read_text()
    assert "M42_bad.fits  cannot catalogue: RuntimeError: injected failure" in status
    site.audit()


def test_truncated_empty_nonfits_and_tmp_files(site, running, light_bytes):
    running()
    truncated = site.put("M42_trunc.fits", light_bytes(0)[:5000])
    empty = site.put("empty.fits", b"")
    html = site.put("error.fits", b"<html><body>502 Bad Gateway</body></html>\n" * 80)
    ignored = site.put("M42_0009.fits.tmp", light_bytes(1))
    notes = site.put("notes.txt", b"clouds at 2am\n")
    good = site.put("M42_0010.fits", light_bytes(2))
    rows = site.wait_states({truncated: ("rejected",), empty: ("rejected",), html: ("rejected",), good: DONE})
    assert "5,000" in rows[str(truncated)]["reason"]  # the exact reason: where the data ends
    assert "empty" in rows[str(empty)]["reason"].lower()
    assert str(ignored) not in rows and str(notes) not in rows
    del site.written[ignored], site.written[notes]
    status = (site.output / "status.log").read_text()
    assert "M42_trunc.fits  rejected" in status
    site.audit()


def test_disk_full_leaves_no_partial_output_and_is_retried(site, running, light_bytes, monkeypatch):
    failures = []

    def full_disk_write(path, data, header, **options):
        if len(failures) < 2:  # the first two writes run out of space half-way

            def write(fh):
                buf = io.BytesIO()
                fits.PrimaryHDU(np.asarray(data, dtype=">f4"), header=header).writeto(buf)
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                failures.append(path)
                raise OSError(errno.ENOSPC, "No space left on device")

            return write_with(path, write)
        return daemon_real_write(path, data, header, **options)

    daemon_real_write = observd.jobs.light_job.write_image
    monkeypatch.setattr(observd.jobs.light_job, "write_image", full_disk_write)
    running(pool_factory=lambda config: ThreadPoolExecutor(2))
    path = site.put("M42_0011.fits", light_bytes(3))
    failed = site.wait_states({path: ("failed",)})[str(path)]
    assert "No space left" in failed["reason"]
    assert not list(site.output.rglob("calibrated/**/*.fits")), "partial output after ENOSPC"
    row = site.wait_states({path: DONE})[str(path)]
    assert len(failures) == 2 and row["attempts"] == 2
    site.audit()


def test_a_dead_worker_fails_its_jobs_once_and_new_workers_take_over(site, light_bytes):
    """A worker killed mid-job (OOM killer, segfault) breaks its pool for good: the daemon must
    record the attempt and start new workers, not fail every later job."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    class DeadPool(ThreadPoolExecutor):
        """Like a ProcessPoolExecutor whose worker dies during the first pass's two jobs: those
        fail, every later submit raises."""

        submitted = 0

        def submit(self, fn, /, *args, **kwargs):
            self.submitted += 1
            if self.submitted > 2:
                raise BrokenProcessPool("A child process terminated abruptly")
            future = Future()
            future.set_exception(BrokenProcessPool("A child process terminated abruptly"))
            return future

    pools = []

    def factory(config):
        pools.append(DeadPool(1) if not pools else ThreadPoolExecutor(2))
        return pools[-1]

    paths = [site.put(f"M42_00{i}.fits", light_bytes(i)) for i in (21, 22)]  # two jobs: the pool is used
    r = Running(site, pool_factory=factory)
    try:
        rows = site.wait_states({p: DONE for p in paths})
    finally:
        r.stop()
    assert len(pools) == 2
    assert [row["attempts"] for row in rows.values()] == [1, 1]  # each in-flight job: one attempt
    events = [e["message"] for e in Catalog.open(site.config.paths.database, readonly=True).events()]
    assert any("worker process died" in m and "starting new workers" in m for m in events)
    site.audit()


# -- watchdog -------------------------------------------------------------------------------------


def received(sock, seconds: float) -> list[str]:
    end, messages = time.monotonic() + seconds, []
    while time.monotonic() < end:
        try:
            messages.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass
    return messages


def test_watchdog_pings_stop_while_a_worker_hangs(site, running, light_bytes, fake_systemd, monkeypatch):
    sock, path = fake_systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    release, entered = threading.Event(), threading.Event()
    real = observd.pipeline.light_stage.reduce_light

    def hanging(job):
        if Path(job.path).name == "M42_hang.fits":
            entered.set()
            release.wait(30)
        return real(job)

    monkeypatch.setattr(observd.pipeline.light_stage, "reduce_light", hanging)
    running(notifier=Notifier(), hang_limit=1.0)
    before = received(sock, 1.0)
    assert "READY=1" in before and before.count("WATCHDOG=1") >= 5
    hung = site.put("M42_hang.fits", light_bytes(0))
    try:
        assert entered.wait(DEADLINE)
        time.sleep(1.5)  # past the hang limit
        received(sock, 0.1)  # drop pings sent before the limit was reached
        during = received(sock, 1.0)
        assert "WATCHDOG=1" not in during, "pings must stop while a worker hangs"
    finally:
        release.set()
    site.wait_states({hung: DONE})
    after = received(sock, 1.0)
    assert after.count("WATCHDOG=1") >= 3, "pings resume once the worker is back"
    statuses = [m for m in before + during + after if m.startswith("STATUS=")]
    assert statuses and "1 lights calibrated" in statuses[-1]
    site.audit()


# -- readers while the daemon writes ----------------------------------------------------------------


def test_status_reader_never_sees_database_locked(site, running, light_bytes):
    """`observd status` in a loop (read-only connection, another thread) during a burst of 200 files."""
    site.config = config_from_dict({**site.raw, "calibrate": {"require": ["flat"]}}, source="test")
    running()
    errors, reads, stop = [], [0], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                if site.config.paths.database.exists():
                    catalog = Catalog.open(site.config.paths.database, readonly=True, timeout=5)
                    try:
                        status_report(catalog)
                        reads[0] += 1
                    finally:
                        catalog.close()
            except sqlite3.OperationalError as exc:
                errors.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        paths = [site.put(f"burst/M42_{i:04d}.fits", light_bytes(i)) for i in range(200)]
        site.wait_states({p: ("waiting",) for p in paths}, timeout=120)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert reads[0] > 20
    site.audit()


# -- signals and crashes (subprocess) ---------------------------------------------------------------


def start_process(site: Site) -> subprocess.Popen:
    config = site.write_toml()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    runs = len(list(site.root.glob("daemon-*.log")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "observd", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(site.root / f"daemon-{runs}.log", "wb"),
    )
    proc.log = site.root / f"daemon-{runs}.log"
    return proc


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the daemon and its worker processes at once, as systemd kills the service's
    control group: killed alone, it would leave its workers (and their fork server) waiting
    for jobs forever."""
    import psutil

    tree = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(10)


def restart_until_done(site: Site, paths: list[Path]) -> None:
    """Start the daemon again, wait until every path is reduced, stop it with SIGTERM (exit 0)."""
    proc = start_process(site)
    try:
        wait_started(site, proc)
        site.wait_states({p: DONE for p in paths}, timeout=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_started(site: Site, proc: subprocess.Popen) -> None:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(proc.log.read_text())
        if "observd started" in proc.log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError("daemon did not start")


def burst_until_done(site: Site, proc: subprocess.Popen, light_bytes, n: int, done: int) -> list[Path]:
    """Once the daemon process is up, write `n` lights at once; return when `done` are reduced."""
    wait_started(site, proc)
    paths = [site.put(f"M42_{i:04d}.fits", light_bytes(i)) for i in range(n)]
    site.wait_for(lambda cur: sum(r["state"] in DONE for r in cur.values()) >= done)
    return paths


@pytest.mark.slow
def test_sigterm_during_burst_exits_zero_and_loses_nothing(site, light_bytes):
    proc = start_process(site)
    try:
        paths = burst_until_done(site, proc, light_bytes, 40, done=3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.log.read_text()
    assert "observd stopped" in log and "<6>" in log  # journald priority prefixes on stderr
    restart_until_done(site, paths)  # the restart finishes what was left
    site.audit()


@pytest.mark.slow
def test_sigkill_mid_write_then_restart_redoes_the_work(site, light_bytes):
    proc = start_process(site)
    try:
        paths = burst_until_done(site, proc, light_bytes, 30, done=2)
    finally:
        kill_tree(proc)  # SIGKILL while it is calibrating and writing
    # what a SIGKILL inside fitsio.write_atomic leaves: a dot-temporary beside the final name
    stale = site.output / "2026-11-20" / "calibrated" / "M42" / ".M42_0029.fits.abc123.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(light_bytes(0)[:4000])
    restart_until_done(site, paths)
    assert not stale.exists()
    site.audit()


def test_restart_resumes_files_catalogued_but_not_reduced_before_a_crash(site, light_bytes, running):
    """A crash can leave every file catalogued ('classified') with nothing new to find at start-up:
    the daemon must still resume their reduction."""
    from observd.pipeline.intake import catalogue

    paths = [site.put(f"M42_{i:04d}.fits", light_bytes(i)) for i in range(4)]
    catalog = Catalog.open(site.config.paths.database)
    for path in paths:
        catalogue(path, catalog, site.config)
    catalog.close()
    assert {r["state"] for r in site.current().values()} == {"classified"}
    r = running()
    site.wait_states({p: DONE for p in paths})
    r.stop()
    site.audit()


# -- configuration reload and logs ------------------------------------------------------------------


def test_sighup_reload_applies_good_config_and_keeps_running_one_on_error(site, running):
    config_path = site.write_toml()
    r = running()
    r.daemon.config_path = config_path
    site.raw["masters"] = {"min_bias": 9}
    site.write_toml()
    r.daemon.request_reload()
    deadline = time.monotonic() + DEADLINE
    while r.daemon.config.masters.min_bias != 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.daemon.config.masters.min_bias == 9 and r.daemon.reducer.config.masters.min_bias == 9
    config_path.write_text("[masters]\nmin_bias = 'many'\n")
    r.daemon.request_reload()
    log = site.output / "status.log"
    deadline = time.monotonic() + DEADLINE
    while "not reloaded" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "configuration not reloaded, keeping the running one" in log.read_text()
    assert "min_bias" in log.read_text()
    assert r.daemon.config.masters.min_bias == 9 and r.thread.is_alive()
