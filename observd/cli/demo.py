"""`observd demo`: the whole night on embedded defaults, in a temporary folder.

The real daemon (`Daemon`: watcher, worker pool, catalog, scheduler) watches a fresh folder
while the simulated camera writes a night into it at a brisk pace — biases, darks, lights of
two targets in two filters with a meridian flip, a cloud and a trailed frame, then the dawn
flats — so the lights wait for their flats exactly as they would at a real site. Then the
nightly stack is requested, and the status and the products are printed (and with `--web`, the
night's web page is served).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.core.config import Config, config_from_dict
from observd.core.obstime import night_of
from observd.service.daemon import Daemon
from observd.service.reports import format_status, status_for
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

TIMEZONE = "Europe/Berlin"
TERMINAL = ("aligned", "bad", "unaligned", "failed", "rejected", "unknown")
TIMEOUT = 170.0  # seconds: the demo must finish in under 3 minutes


def demo_config(root: Path) -> Config:
    """Embedded defaults, with the settle time shortened: the simulated night lasts a minute."""
    return config_from_dict(
        {
            "paths": {
                "watch": str(root / "camera"),
                "output": str(root / "output"),
                "database": str(root / "output" / "observd.db"),
                "status_log": str(root / "output" / "status.log"),
            },
            "site": {"timezone": TIMEZONE},
            "masters": {"settle_seconds": 2.0},
            "watch": {"settle_seconds": 0.5, "poll_interval": 0.5},
            # the smart telescope takes no calibration frames: its lights go through uncalibrated
            "calibrate": {"require_by_instrument": {"Seestar S50": []}},
        },
        source="observd demo (embedded defaults)",
    )


def demo_spec(night: str, size: int) -> SimSpec:
    return SimSpec(
        seed=2026,
        shape=(size, size),
        dialect="nina",
        night=night,
        timezone=TIMEZONE,
        targets=(
            TargetSpec("M42", ("L", "R"), n_lights=6, n_stars=300),
            TargetSpec("NGC7000", ("L", "R"), n_lights=6, n_stars=300),
        ),
        flats_at="dawn",
        pace=0.15,
        truth=False,
    )


def colour_spec(night: str, size: int) -> SimSpec:
    """A smart telescope beside the observatory's camera: a Seestar S50's one-shot-colour lights
    (GRBG mosaic, no calibration frames) of a third target."""
    return SimSpec(
        seed=2027,
        shape=(size, size),
        dialect="seestar",
        night=night,
        timezone=TIMEZONE,
        targets=(TargetSpec("M 57", ("IRCUT",), n_lights=6, exptime=10.0, n_stars=300),),
        n_bias=0,
        n_dark=0,
        n_flat=0,
        ccd_temp=25.0,
        truth=False,
    )


def run_demo(*, size: int = 512, out=sys.stdout, then: Callable[[Config], object] | None = None) -> int:
    """The demo; `then(config)` runs at its end, with the demo's configuration (`--web` serves
    the night's page)."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="observd-demo-"))
    config = demo_config(root)
    (root / "camera").mkdir()
    night = night_of(datetime.now(UTC), TIMEZONE)
    daemon = Daemon(config)
    daemon.start()
    loop = threading.Thread(target=daemon.serve, name="observd-daemon", daemon=True)
    loop.start()
    try:
        print(f"observd demo: daemon watching {config.paths.watch}", file=out)
        print(
            f"simulated cameras writing night {night} (biases, darks, 2 targets x 2 filters, dawn flats; "
            "a Seestar's colour lights of a third target)…",
            file=out,
            flush=True,
        )
        written = write_night(config.paths.watch, demo_spec(night, size))
        colour = write_night(config.paths.watch / "seestar", colour_spec(night, size))
        n_files = len(written["files"]) + len(colour["files"])
        print(f"camera done: {n_files} files; waiting for the daemon to reduce them…", file=out, flush=True)
        if not _wait(lambda: _reduced(config, n_files), started):
            print("observd demo: the daemon did not finish in time", file=out)
            return 1
        daemon.request_stack(night)
        if not _wait(lambda: night in _read(config, lambda c: c.stacked_nights()), started):
            print("observd demo: the nightly stack did not finish in time", file=out)
            return 1
    finally:
        daemon.request_stop()
        loop.join(timeout=60)
        daemon.shutdown()
    report = _read(config, lambda c: status_for(c, config, night=night))
    print("\n" + format_status(report), file=out)
    products = report["products"]
    print(f"\n{len(products)} stacked product(s) in {time.monotonic() - started:.0f} s:", file=out)
    for p in products:
        print(
            f"  {p['object']} [{p['filter']}] {p['n_combined']} frames: {p['path']}\n"
            f"      preview: {p['preview_path']}",
            file=out,
        )
    print(
        f"\nEverything is in {root} (camera folder, masters, calibrated and aligned lights, stacks,\n"
        f"catalog, status log); look at the previews, then remove it with: rm -rf {root}",
        file=out,
    )
    if then is not None:
        then(config)
    return 0 if len(products) == 5 else 1


def _read(config: Config, query):
    catalog = Catalog.open(config.paths.database, readonly=True)
    try:
        return query(catalog)
    finally:
        catalog.close()


def _reduced(config: Config, n_files: int) -> bool:
    rows = _read(config, lambda c: c.files())
    lights = [r for r in rows if r["frame_type"] == "light"]
    return len(rows) >= n_files and bool(lights) and all(r["state"] in TERMINAL for r in lights)


def _wait(condition, started: float) -> bool:
    while time.monotonic() - started < TIMEOUT:
        if condition():
            return True
        time.sleep(0.5)
    return False
