"""Soak: nights delivered with every fault of SPEC §7 while the daemon is killed and restarted,
then compared with one clean batch run of the final folder. Live must equal batch.

    python benchmarks/soak.py [--files 2000] [--kills 20] [--seed 1] [--workdir DIR] [--size 128]

1. A corpus of simulated nights (several camera programs' dialects, future dates so no night is
   due for stacking while it arrives) is written to a staging folder.
2. A camera thread delivers it into the watch folder, in order: chunked writes, temporary names
   renamed at the end (`~NAME.fits`, `NAME.fits.tmp`), duplicated writes of the same content,
   header-only rewrites (new content, same pixels), junk (`.txt`, an HTML page named `.fits`, an
   empty `.fits`, a truncated frame that never completes).
3. Meanwhile `observd run` is killed at random moments — SIGKILL of its process group (what
   systemd does to the service's control group), SIGKILL of the daemon alone (a crash outside
   systemd), one SIGTERM — and restarted. After the delivery it is left to finish, stopped with
   SIGTERM, and `observd stack` builds the nights' stacks (what the morning job does).
4. `observd ingest --stack` runs once over the final folder into a separate output and catalog.
5. Compared: every candidate file has one current row in each catalog; the same state and
   reason per file; the same current masters (pixels within float32 rounding); the same stacks
   (NCOMBINE and pixels); every output opens and is whole; no temporary file left; raw files as
   the camera last wrote them; no process left behind. Exit 0 only when nothing differs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
from astropy.io import fits

from observd.adapters.fully_written import check_fits_size
from observd.adapters.watcher import is_candidate
from observd.core.config import WatchConfig
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

DIALECTS = ("nina", "maxim", "asiair", "theskyx", "iraf")
TIMEZONE = "UTC"


def _config(root: Path, output: str) -> Path:
    """The site's configuration; `output` names the output folder (live or batch)."""
    path = root / f"{output}.toml"
    path.write_text(
        f"[paths]\nwatch = '{root / 'camera'}'\noutput = '{root / output}'\n"
        f"database = '{root / output / 'observd.db'}'\nstatus_log = '{root / output / 'status.log'}'\n"
        f"[site]\ntimezone = '{TIMEZONE}'\n"
        "[masters]\nsettle_seconds = 4.0\n"  # longer than any pause of the delivery
        "[watch]\nsettle_seconds = 0.5\npoll_interval = 0.5\nstall_seconds = 3.0\n"
        "[daemon]\nworkers = 2\nretry_backoff = 1.0\n"
    )
    return path


def write_corpus(staging: Path, n_files: int, size: int, seed: int) -> list[Path]:
    """Simulated nights in several dialects until about `n_files` frames, in delivery order."""
    first_night = datetime.now(UTC).date() + timedelta(days=2)  # not due for stacking while it runs
    files: list[Path] = []
    index = 0
    while len(files) < n_files:
        left = n_files - len(files)
        n_lights = max(2, min(40, (left - 20) // 4))
        spec = SimSpec(
            seed=seed * 100 + index,
            shape=(size, size),
            dialect=DIALECTS[index % len(DIALECTS)],
            night=(first_night + timedelta(days=index)).isoformat(),
            timezone=TIMEZONE,
            n_bias=7,
            n_dark=5,
            n_flat=5,
            targets=(
                TargetSpec("M42", ("L", "R"), n_lights=n_lights, n_stars=150),
                TargetSpec("NGC7000", ("L",), n_lights=max(2, n_lights // 2), n_stars=150),
            ),
            truth=False,
        )
        folder = staging / f"night{index:02d}"
        written = write_night(folder, spec)
        files += [folder / f["name"] for f in written["files"]]  # in acquisition order
        index += 1
    return files


@dataclass
class Delivery:
    """What the camera wrote: final content of every path (sha256), and counts of each fault."""

    final: dict[Path, str] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _resaved(data: bytes) -> bytes:
    """The same frame saved again with one more header card: new content, same pixels."""
    with fits.open(io.BytesIO(data)) as hdul:
        hdul[0].header["SAVED"] = (2, "saved again by the camera program")
        out = io.BytesIO()
        hdul.writeto(out)
    return out.getvalue()


def deliver(files: list[Path], staging: Path, watch: Path, delivery: Delivery, rng: random.Random, pace: float) -> None:
    """The camera: every file of the corpus into `watch`, with faults (module docstring)."""
    for i, source in enumerate(files):
        data = source.read_bytes()
        target = watch / source.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        forced = FIRST_FAULTS.get(i)  # each kind at least once, however small the corpus
        roll = {"chunked": 0.0, "tilde": 0.1, "tmp": 0.2}.get(forced, rng.random())
        if roll < 0.10:
            _chunked(target, data, rng)
            delivery.count("chunked")
        elif roll < 0.18:
            temporary = target.with_name("~" + target.name)
            temporary.write_bytes(data)
            os.replace(temporary, target)
            delivery.count("tilde temporary name")
        elif roll < 0.24:
            temporary = target.with_name(target.name + ".tmp")
            _chunked(temporary, data, rng)
            os.replace(temporary, target)
            delivery.count(".tmp temporary name")
        else:
            target.write_bytes(data)
        delivery.final[target] = _sha(data)
        if forced == "duplicate" or rng.random() < 0.04:
            target.write_bytes(data)  # the same content again: a duplicated event and write
            delivery.count("duplicate")
        if forced == "rewrite" or rng.random() < 0.03:
            time.sleep(0.3)
            data = _resaved(data)
            target.write_bytes(data)
            delivery.final[target] = _sha(data)
            delivery.count("rewrite")
        if i % 97 == 6:
            _junk(target.parent, i, data, delivery)
        time.sleep(pace)
    delivery.done.set()


FIRST_FAULTS = {1: "chunked", 2: "tilde", 3: "tmp", 4: "duplicate", 5: "rewrite"}


def _chunked(path: Path, data: bytes, rng: random.Random) -> None:
    bounds = sorted({0, len(data), *(rng.randrange(1, len(data)) for _ in range(3))})
    with open(path, "wb") as fh:
        for a, b in zip(bounds, bounds[1:]):
            fh.write(data[a:b])
            fh.flush()
            time.sleep(0.02)


def _junk(folder: Path, i: int, frame: bytes, delivery: Delivery) -> None:
    """Files an observer finds in a camera folder: notes, an error page, empty and cut files."""
    (folder / f"notes_{i}.txt").write_text("focus 12345\n")
    junk = {
        f"download_{i}.fits": b"<!DOCTYPE html>\n<html>404</html>\n",
        f"empty_{i}.fits": b"",
        f"cut_{i}.fits": frame[: len(frame) // 2],
    }
    for name, data in junk.items():
        (folder / name).write_bytes(data)
        delivery.final[folder / name] = _sha(data)
    delivery.count("junk")


class DaemonProcess:
    """`observd run` in a session of its own (so its process group can be killed)."""

    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log
        self.proc: subprocess.Popen | None = None
        self.seen: set[int] = set()  # every pid the daemon and its children ever had

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observd", "run", "-c", str(self.config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
            start_new_session=True,
        )
        self.seen.add(self.proc.pid)

    def note_children(self) -> None:
        try:
            self.seen |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def kill(self, how: str) -> None:
        self.note_children()
        if how == "group":
            os.killpg(self.proc.pid, signal.SIGKILL)
        elif how == "alone":
            os.kill(self.proc.pid, signal.SIGKILL)
        else:
            os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)

    def left_behind(self, grace: float = 15.0) -> list[str]:
        """Processes the daemon ever had that still run after `grace` seconds (each polls for
        its parent once a second): "pid command line"."""
        end = time.monotonic() + grace
        while time.monotonic() < end and self._alive():
            time.sleep(0.5)
        return self._alive()

    def _alive(self) -> list[str]:
        alive = []
        for pid in sorted(self.seen):
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        return alive


def _rows(database: Path) -> list[dict]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM files WHERE current = 1")]


def _settled(database: Path) -> bool:
    """Nothing in flight: no current row pending, classified or failed-with-retries-left."""
    try:
        rows = _rows(database)
    except sqlite3.Error:
        return False
    return bool(rows) and all(r["state"] not in ("pending", "classified") for r in rows)


class LiveRun:
    """The daemon under faults: the camera delivers, the daemon is killed and restarted to plan."""

    def __init__(self, root: Path, files: list[Path], kills: int, rng: random.Random, pace: float):
        self.root, self.files, self.rng, self.pace = root, files, rng, pace
        self.config = _config(root, "live")
        self.database = root / "live" / "observd.db"
        self.daemon = DaemonProcess(self.config, root / "daemon.log")
        self.delivery = Delivery()
        plan = ["alone"] + ["group"] * (kills - 1) if kills else []
        rng.shuffle(plan)
        plan.insert(len(plan) // 2, "term")
        self.plan = plan
        self.killed: dict[str, int] = {}

    def run(self) -> dict:
        started = time.monotonic()
        self.daemon.start()
        try:
            self._deliver_and_kill()
            unsettled = self._wait_until_settled(60 + 0.2 * len(self.files))
            time.sleep(6.0)  # twice the stall time: the last never-completing files are rejected
            self.daemon.kill("term")
        finally:
            if self.daemon.proc.poll() is None:
                self.daemon.kill("group")
        stack = subprocess.run([sys.executable, "-m", "observd", "stack", "-c", str(self.config)], capture_output=True)
        return {
            "delivery": self.delivery,
            "killed": self.killed,
            "seconds": time.monotonic() - started,
            "stack_exit": stack.returncode,
            "left_behind": self.daemon.left_behind(),
            "unsettled": unsettled,
        }

    def _deliver_and_kill(self) -> None:
        camera = threading.Thread(
            target=deliver,
            args=(self.files, self.root / "staging", self.root / "camera", self.delivery, self.rng, self.pace),
            daemon=True,
        )
        camera.start()
        gap = len(self.files) * self.pace / (len(self.plan) + 1)
        for how in self.plan:
            time.sleep(self.rng.uniform(0.5, 1.5) * gap)
            self.daemon.kill(how)
            self.killed[how] = self.killed.get(how, 0) + 1
            time.sleep(self.rng.uniform(0.0, 1.0))  # files keep arriving while it is down
            self.daemon.start()
        camera.join()

    def _wait_until_settled(self, timeout: float) -> list[str]:
        """Wait until nothing is in flight on three looks in a row; what still is after `timeout`."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            time.sleep(1.0)
            quiet = quiet + 1 if _settled(self.database) else 0
        if quiet >= 3:
            return []
        return [f"{r['name']}: {r['state']}" for r in _rows(self.database) if r["state"] in ("pending", "classified")]


def run_batch(root: Path) -> subprocess.CompletedProcess:
    config = _config(root, "batch")
    return subprocess.run(
        [sys.executable, "-m", "observd", "ingest", str(root / "camera"), "--stack", "-c", str(config)],
        capture_output=True,
        text=True,
    )


def compare(root: Path, delivery: Delivery) -> dict[str, list]:
    """Every difference between the live and the batch run, by kind (empty lists: none)."""
    problems: dict[str, list] = {
        k: [] for k in ("lost", "duplicated", "state", "master", "stack", "corrupt", "temporary", "raw changed")
    }
    candidates = {
        str(p) for p in (root / "camera").rglob("*") if p.is_file() and is_candidate(p, WatchConfig(), root / "camera")
    }
    runs = {name: _rows(root / name / "observd.db") for name in ("live", "batch")}
    for name, rows in runs.items():
        paths = [r["path"] for r in rows]
        problems["duplicated"] += [(name, p) for p in set(paths) if paths.count(p) > 1]
        problems["lost"] += [(name, p) for p in candidates - set(paths)]
        problems["lost"] += [(name, "row of a missing file", p) for p in set(paths) - candidates]
    live = {r["path"]: r for r in runs["live"]}
    batch = {r["path"]: r for r in runs["batch"]}
    for path in candidates & live.keys() & batch.keys():
        a, b = live[path], batch[path]
        if (a["state"], a["reason"]) != (b["state"], b["reason"]):
            problems["state"].append((Path(path).name, (a["state"], a["reason"]), (b["state"], b["reason"])))
    problems["master"] += _compare_products(root, "masters")
    problems["stack"] += _compare_products(root, "stacks")
    for name in ("live", "batch"):
        for path in (root / name).rglob("*.fits"):
            check = check_fits_size(path)
            if not check.complete:
                problems["corrupt"].append((name, str(path), check.reason))
        problems["temporary"] += [str(p) for p in (root / name).rglob(".*.tmp")]
    for path, digest in delivery.final.items():
        if not path.exists() or _sha(path.read_bytes()) != digest:
            problems["raw changed"].append(str(path))
    return problems


def _compare_products(root: Path, kind: str) -> list:
    """Current masters or stacks of both runs: same set, same NCOMBINE, same pixels."""
    table = {
        "masters": "SELECT path FROM masters WHERE current = 1",
        "stacks": "SELECT path FROM products WHERE current = 1",
    }[kind]
    found = {}
    for name in ("live", "batch"):
        with sqlite3.connect(f"file:{root / name / 'observd.db'}?mode=ro", uri=True) as conn:
            paths = [Path(r[0]) for r in conn.execute(table)]
        found[name] = {_product_key(p, root / name): p for p in paths}
    problems = [("missing", k) for k in found["live"].keys() ^ found["batch"].keys()]
    for key in found["live"].keys() & found["batch"].keys():
        with fits.open(found["live"][key]) as a, fits.open(found["batch"][key]) as b:
            if a[0].header.get("NCOMBINE") != b[0].header.get("NCOMBINE"):
                problems.append(("NCOMBINE", key, a[0].header.get("NCOMBINE"), b[0].header.get("NCOMBINE")))
            elif not np.allclose(a[0].data, b[0].data, rtol=1e-6, atol=1e-3, equal_nan=True):
                diff = np.nanmax(np.abs(a[0].data.astype(np.float64) - b[0].data))
                problems.append(("pixels", key, float(diff)))
    return problems


def _product_key(path: Path, output: Path) -> str:
    """A product's path below its output folder, its version number dropped (a live run may have
    made more versions of a master than a batch)."""
    rel = str(path.relative_to(output))
    return rel.rsplit("_v", 1)[0] if "/masters/" in rel else rel


def soak(root: Path, *, n_files: int, kills: int, seed: int, size: int, pace: float) -> dict:
    """One whole soak in `root`; returns the figures and the problems found."""
    rng = random.Random(seed)
    (root / "camera").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    files = write_corpus(root / "staging", n_files, size, seed)
    corpus_seconds = time.monotonic() - t0
    live = LiveRun(root, files, kills, rng, pace).run()
    t1 = time.monotonic()
    batch = run_batch(root)
    problems = compare(root, live["delivery"])
    problems["left behind"] = live["left_behind"]
    problems["never settled"] = live["unsettled"]
    if live["stack_exit"] != 0:
        problems["stack"].append(("observd stack exit code", live["stack_exit"]))
    if batch.returncode != 0:
        problems["stack"].append(("observd ingest exit code", batch.returncode, batch.stderr[-500:]))
    return {
        "files": len(files),
        "delivered": len(live["delivery"].final),
        "faults": live["delivery"].faults,
        "kills": live["killed"],
        "seconds": {
            "corpus": round(corpus_seconds),
            "live": round(live["seconds"]),
            "batch": round(time.monotonic() - t1),
        },
        "problems": {k: v for k, v in problems.items() if v},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pace", type=float, default=0.03, help="seconds between files")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="observd_soak_"))
    result = soak(root, n_files=args.files, kills=args.kills, seed=args.seed, size=args.size, pace=args.pace)
    print(json.dumps(result, indent=2, default=str))
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
