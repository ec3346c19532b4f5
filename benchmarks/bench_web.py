"""The web page's speed on a large catalog, and the daemon's frame latency while a page polls.

    python benchmarks/bench_web.py [--nights 200] [--frames-per-night 100] [--requests 50]
                                   [--daemon-latency] [--lat-size 2048] [--lat-n 10]

1. pages: a catalog of `--nights` x `--frames-per-night` frames (20,000 by default: lights of
   two targets in two filters with measurements, calibration frames, three events per frame,
   four masters and four stacks with their PNGs per night) is written straight into the tables;
   then every page and JSON endpoint is requested `--requests` times through the application
   (no network) and its p50/p95 printed against the budget (`BUDGET_MS`).
2. with `--daemon-latency`: `bench_daemon.py`'s latency measurement (a light written into the
   watched folder -> its catalog row -> calibrated), once alone and once while `observd web`
   serves the same catalog and a client asks for the Tonight page every second.

The machine may be shared: read the figures as indicative.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from observd.adapters.catalog import Catalog
from observd.adapters.previews import write_thumbnail
from observd.core.config import config_from_dict
from observd.web.app import create_app

BUDGET_MS = 200.0  # p95 of each page
TARGETS = (("M42", "L"), ("M42", "R"), ("NGC7000", "L"), ("NGC7000", "R"))


def build_catalog(root: Path, nights: int, per_night: int):
    """A catalog of nights x per_night frames, written in bulk (a benchmark's set-up, not the pipeline)."""
    out = root / "out"
    config = config_from_dict(
        {
            "paths": {
                "watch": str(root / "camera"),
                "output": str(out),
                "database": str(out / "observd.db"),
                "status_log": str(out / "status.log"),
            },
            "site": {"timezone": "Europe/Berlin"},
        },
        source="bench_web",
    )
    rng = random.Random(1)
    catalog = Catalog.open(config.paths.database)
    png = out / "thumb.png"
    write_thumbnail(np.random.default_rng(1).normal(100, 5, (256, 256)), png)
    first = datetime(2026, 1, 1, 18, tzinfo=UTC)
    file_id = master_id = product_id = 0
    with catalog.db.atomic():
        for n in range(nights):
            evening = first + timedelta(days=n)
            night = evening.date().isoformat()
            files, events, masters, products, inputs = [], [], [], [], []
            for i in range(per_night):
                file_id += 1
                kind = ("bias", "dark", "flat")[i % 3] if i < 30 else "light"
                target, filt = TARGETS[i % 4] if kind == "light" else (None, "L")
                state = "combined" if kind != "light" else rng.choice(["aligned"] * 8 + ["bad", "waiting"])
                t = evening + timedelta(minutes=3 * i)
                name = f"{night}_{kind}_{i:04d}.fits"
                files.append(
                    {
                        "id": file_id,
                        "path": f"/camera/{night}/{name}",
                        "name": name,
                        "version": 1,
                        "current": 1,
                        "size": 8_000_000,
                        "mtime_ns": 0,
                        "sha256": f"{file_id:064x}",
                        "state": state,
                        "reason": {"bad": "judged bad: clouds?", "waiting": "waiting: no flat for filter R"}.get(state),
                        "frame_type": kind,
                        "object": target,
                        "filter": filt,
                        "exptime": 60.0,
                        "ccd_temp": -10 + rng.gauss(0, 0.1),
                        "set_temp": -10.0,
                        "date_obs": t.isoformat(),
                        "night": night,
                        "first_seen": t.isoformat(),
                        "fwhm": rng.uniform(2.5, 3.5) if kind == "light" else None,
                        "n_stars": rng.randint(50, 150) if kind == "light" else None,
                        "background": rng.uniform(7000, 9000) if kind == "light" else None,
                        "elongation": rng.uniform(1.0, 1.2) if kind == "light" else None,
                    }
                )
                events += [
                    {"time": t.isoformat(), "level": "info", "event": e, "path": files[-1]["path"], "message": e}
                    for e in ("catalogued", "calibrated", "aligned")
                ]
            for kind in ("bias", "dark", "flat", "flat"):
                master_id += 1
                masters.append(
                    {
                        "id": master_id,
                        "type": kind,
                        "group_key": f"{kind}|cam|{night}|{master_id}",
                        "version": 1,
                        "current": int(n == nights - 1),
                        "path": str(out / night / "masters" / f"{kind}_{master_id}.fits"),
                        "night": night,
                        "created": evening.isoformat(),
                        "n_frames": 10,
                        "ccd_temp_mean": -10.0,
                        "ccd_temp_min": -10.1,
                        "ccd_temp_max": -9.9,
                    }
                )
            stacks = out / night / "stacks"
            stacks.mkdir(parents=True)
            for target, filt in TARGETS:
                product_id += 1
                thumb = stacks / f"{target}_{filt}_thumb.png"
                os.link(png, thumb)
                products.append(
                    {
                        "id": product_id,
                        "night": night,
                        "object": target,
                        "filter": filt,
                        "path": str(stacks / f"{target}_{filt}.fits"),
                        "preview_path": str(thumb),
                        "thumbnail_path": str(thumb),
                        "n_combined": 15,
                        "total_exptime": 900.0,
                        "created": evening.isoformat(),
                        "current": 1,
                    }
                )
                inputs += [
                    {"product_id": product_id, "file_id": f["id"]}
                    for f in files
                    if f["object"] == target and f["filter"] == filt and f["state"] == "aligned"
                ]
            catalog.db["files"].insert_all(files)
            catalog.db["events"].insert_all(events)
            catalog.db["masters"].insert_all(masters)
            catalog.db["products"].insert_all(products)
            catalog.db["product_inputs"].insert_all(inputs)
            catalog.db["stack_runs"].insert({"night": night, "ran_at": evening.isoformat(), "n_products": 4})
    catalog.close()
    return config


def bench_pages(config, requests: int) -> list[tuple[str, float, float]]:
    client = TestClient(create_app(config), base_url="http://localhost")
    catalog = Catalog.open(config.paths.database, readonly=True)
    nights = catalog.nights()
    light = catalog.files(night=nights[-1], state="aligned")[0]["id"]
    catalog.close()
    middle = nights[len(nights) // 2]
    paths = [
        "/",
        f"/?night={middle}",
        "/?partial=1",
        "/quality",
        "/masters",
        "/products",
        "/nights",
        f"/frame/{light}",
        "/api/status",
        f"/api/frames?night={middle}",
    ]
    rows = []
    for path in paths:
        assert client.get(path).status_code == 200, path
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - started) * 1000)
        rows.append((path, statistics.median(times), statistics.quantiles(times, n=20)[18]))
    return rows


def bench_latency_while_polled(size: int, n: int) -> tuple[dict, dict]:
    """bench_daemon.py's latency, alone, then with `observd web` serving its catalog, polled every second."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_daemon

    alone = bench_daemon.bench_latency(size, n)
    write_config, stop = bench_daemon.write_config, threading.Event()
    servers = []

    def with_page(root: Path, require: list[str]) -> Path:
        path = write_config(root, require)
        port = 18750
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "observd", "web", "-c", str(path), "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        threading.Thread(target=_poll, args=(f"http://127.0.0.1:{port}/?partial=1", stop), daemon=True).start()
        return path

    bench_daemon.write_config = with_page
    try:
        polled = bench_daemon.bench_latency(size, n)
    finally:
        bench_daemon.write_config = write_config
        stop.set()
        for server in servers:
            server.terminate()
            server.wait(15)
    return alone, polled


def _poll(url: str, stop: threading.Event) -> None:
    """A browser's page asking every second (without an ETag: the full render each time)."""
    while not stop.wait(1.0):
        try:
            urllib.request.urlopen(url, timeout=5).read()
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=200)
    parser.add_argument("--frames-per-night", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--daemon-latency", action="store_true")
    parser.add_argument("--lat-size", type=int, default=2048)
    parser.add_argument("--lat-n", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared: read figures as indicative)")
    with tempfile.TemporaryDirectory(prefix="observd-bench-web-") as tmp:
        started = time.monotonic()
        config = build_catalog(Path(tmp), args.nights, args.frames_per_night)
        total = args.nights * args.frames_per_night
        print(f"catalog: {total} frames over {args.nights} nights, built in {time.monotonic() - started:.0f} s")
        for path, p50, p95 in bench_pages(config, args.requests):
            verdict = "ok" if p95 <= BUDGET_MS else f"OVER {BUDGET_MS:.0f} ms"
            print(f"{path:<28} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  {verdict}")
    if args.daemon_latency:
        alone, polled = bench_latency_while_polled(args.lat_size, args.lat_n)
        for key in alone:
            print(f"daemon latency {key:>18}: alone {alone[key]:7.3f} s   page polled every 1 s {polled[key]:7.3f} s")


if __name__ == "__main__":
    main()
