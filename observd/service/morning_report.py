"""The morning report: once a night is stacked, one message to each `[notify] urls` target with
what the night gave — frames by state, the stacks (their thumbnails attached) — and what needs a
person: lights still waiting and why, masters not built, failures, frames judged bad,
temperature excursions, low disk space.

Exactly once per night and target: the night's report becomes due in the catalog's ledger when
its stacks are built (`schedule`, from the nightly stack job's finish path); the daemon's loop
hands due reports to the sender's thread (`step`) and records each outcome on its own thread,
`sent` — never sent again, whatever restarts follow — or a failed attempt, logged and tried
again after a back-off that doubles up to an hour, until `MAX_ATTEMPTS`. A report being sent
when the daemon stops stays due and goes out after the restart: the only way it can arrive twice
is a stop between the target taking it and the ledger recording it.
"""

from __future__ import annotations

import queue
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.adapters.report_ledger import ReportLedger, target_of
from observd.core.config import Config
from observd.core.stack_plan import format_exposure
from observd.pipeline.events import Events
from observd.service.apprise_sender import Delivery, Message, Sender, deliver, redacted
from observd.service.reports import format_counts, format_quality, status_for

__all__ = ["MorningReports", "DiskSpace", "report_message"]

RETRY_FIRST = 60.0  # s before the first retry of a failed send; doubled each time
RETRY_MAX = 3600.0  # s, the longest wait between two attempts
MAX_ATTEMPTS = 30  # then the report is given up (over a day of trying)
LISTED = 10  # frames listed by name per problem; the rest are counted
CATCH_UP = 24.0  # h: at start, nights stacked this recently get their report if it was never scheduled


@dataclass(frozen=True)
class DiskSpace:
    path: str
    free: int  # bytes
    total: int
    low: float  # free fraction below which the report warns (`[notify] disk_free_percent` / 100)

    @classmethod
    def of(cls, path: Path, low: float) -> DiskSpace | None:
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            return None
        return cls(str(path), usage.free, usage.total, low)


def report_message(
    status: dict, *, excursions: list[dict], tolerance: float, disk: DiskSpace | None, host: str
) -> Message:
    """The report of the night of `status` (a `status --json` document); `excursions`: frames whose
    CCD-TEMP was more than `tolerance` °C from their set point."""
    night = status["night"]
    counts = status["nights"][0] if status["nights"] else {"night": night, "total": 0, "counts": {}}
    lights = counts["counts"].get("light", {})
    products = status["products"]
    body = format_counts(counts)
    if status["quality"]["lights_measured"]:
        body.append(format_quality(status["quality"]))
    body.append(f"\nStacks ({len(products)}):" if products else "\nNo stacks: no target had enough good lights.")
    body += [
        f"  {p['object']} [{p['filter']}]: {p['n_combined']} frames, {format_exposure(p['total_exptime'])}"
        for p in products
    ]
    problems = _problems(status, excursions, tolerance, disk)
    body.append("\nProblems:" if problems else "\nNo problems.")
    body += problems
    if disk is not None:
        body.append(f"\nOutput disk: {_size(disk.free)} free of {_size(disk.total)} ({disk.path})")
    title = f"observd on {host}: night {night}: {len(products)} stack(s), {lights.get('aligned', 0)} good lights" + (
        f", {len(problems)} problem(s)" if problems else ""
    )
    attachments = tuple(p["thumbnail_path"] for p in products if p.get("thumbnail_path"))
    return Message(title, "\n".join(body), attachments)


def _problems(status: dict, excursions: list[dict], tolerance: float, disk: DiskSpace | None) -> list[str]:
    out = []
    if status["waiting"]:
        out.append(f"  {len(status['waiting'])} light(s) still waiting:")
        reasons = Counter(e["reason"] for e in status["waiting"]).most_common()
        out += [f"    {n} × {reason}" for reason, n in reasons]
    for group in status["calibration_groups"]:
        out.append(f"  no master {group['type']} for {group['group']}: {group['message']}")
    for title, entries in (("failed", status["failures"]), ("judged bad", status["bad"])):
        if entries:
            out.append(f"  {len(entries)} frame(s) {title}:")
            out += [f"    {e['name']}: [{e['state']}] {e['reason'] or ''}" for e in entries[:LISTED]]
            if len(entries) > LISTED:
                out.append(f"    … and {len(entries) - LISTED} more")
    if excursions:
        worst = max(excursions, key=lambda r: abs(r["ccd_temp"] - r["set_temp"]))
        out.append(
            f"  {len(excursions)} frame(s) more than {tolerance:g} °C from their set point, "
            f"worst {worst['name']}: {worst['ccd_temp']:+.1f} °C for {worst['set_temp']:+.1f} °C"
        )
    if disk is not None and disk.free < disk.low * disk.total:
        out.append(f"  low disk space: {_size(disk.free)} free ({disk.free / disk.total:.0%}) on {disk.path}")
    return out


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


class MorningReports:
    """The daemon's morning reports; `schedule` and `step` run on its main thread (the catalog's
    writer), the sending on the sender's thread."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        send: Callable[[str, Message], str | None] = deliver,
        retry_first: float = RETRY_FIRST,
    ):
        self.clock = clock
        self.retry_first = retry_first
        self._delivered: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self.sender = Sender(self._delivered.put, send=send, name="observd-reports")
        self._in_flight: set[tuple[str, str]] = set()

    def schedule(self, catalog: Catalog, config: Config, night: str) -> None:
        """`night` is stacked: its report is due for every target (once; again is harmless)."""
        if config.notify.morning_report and config.notify.urls:
            ReportLedger(catalog).schedule(night, [target_of(url) for url in config.notify.urls])

    def catch_up(self, catalog: Catalog, config: Config) -> None:
        """At start: the reports of the nights stacked in the last CATCH_UP hours are due, in case
        the daemon stopped between stacking a night and scheduling its report (scheduling is
        idempotent: a report already scheduled or sent stays as it is). Older nights are left
        alone, so that turning notifications on does not send the archive's reports."""
        since = datetime.fromtimestamp(self.clock() - CATCH_UP * 3600, UTC).isoformat(timespec="seconds")
        for night in catalog.stacked_since(since):
            self.schedule(catalog, config, night)

    def step(self, catalog: Catalog, config: Config, events: Events) -> None:
        """Record what the sender did, then hand it the reports that are due."""
        ledger = ReportLedger(catalog)
        while not self._delivered.empty():
            self._record(ledger, self._delivered.get(), events)
        if not config.notify.urls:
            return
        urls = {target_of(url): url for url in config.notify.urls}
        messages: dict[str, Message] = {}
        for row in ledger.due(self.clock()):
            key = (row["night"], row["target"])
            if key in self._in_flight or row["target"] not in urls:  # a target since removed: left due
                continue
            if row["night"] not in messages:
                messages[row["night"]] = self.message(catalog, config, row["night"])
            self._in_flight.add(key)
            self.sender.send(urls[row["target"]], messages[row["night"]], key)

    def message(self, catalog: Catalog, config: Config, night: str) -> Message:
        tolerance = config.masters.temp_tolerance
        excursions = [
            r
            for r in catalog.files(night=night)
            if r["ccd_temp"] is not None
            and r["set_temp"] is not None
            and abs(r["ccd_temp"] - r["set_temp"]) > tolerance
        ]
        return report_message(
            status_for(catalog, config, night=night),
            excursions=excursions,
            tolerance=tolerance,
            disk=DiskSpace.of(config.paths.output, config.notify.disk_free_percent / 100),
            host=socket.gethostname(),
        )

    def stop(self) -> None:
        self.sender.stop()

    def _record(self, ledger: ReportLedger, delivery: Delivery, events: Events) -> None:
        night, target = delivery.key
        self._in_flight.discard(delivery.key)
        where = redacted(delivery.url)
        if delivery.error is None:
            ledger.sent(night, target)
            events.emit("info", "report", f"morning report of night {night} sent to {where}")
            return
        attempts = ledger.attempts(night, target) + 1
        if attempts >= MAX_ATTEMPTS:
            ledger.failed(night, target, delivery.error, retry_at=None)
            events.emit(
                "error",
                "report",
                f"morning report of night {night} to {where} given up after {attempts} attempts: {delivery.error}",
            )
            return
        delay = min(RETRY_MAX, self.retry_first * 2 ** (attempts - 1))
        ledger.failed(night, target, delivery.error, retry_at=self.clock() + delay)
        events.emit(
            "warning",
            "report",
            f"morning report of night {night} not sent to {where} (attempt {attempts}): {delivery.error}; "
            f"trying again in {delay:.0f} s",
        )
