"""What the daemon says about its progress: status log lines for lights, systemd's STATUS= line.

The reducer reports problems as events; the good news an observer tailing the status log
wants to see — each light calibrated, each light aligned — is said here, once per light and
state, from the catalog after each reduction pass. The STATUS= line summarises the latest
night for `systemctl status`.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from observd.adapters.catalog import Catalog
from observd.core.frames import CALIBRATION_TYPES
from observd.core.obstime import night_of
from observd.service.sdnotify import Notifier
from observd.service.status_log import StatusLog

DONE_STATES = ("calibrated", "aligned", "unaligned", "bad")  # a light's reduction has run


class Announcer:
    """Remembers what it has said, so each light's progress is said once."""

    def __init__(self, catalog: Catalog, status_log: StatusLog, notifier: Notifier, timezone_name: str):
        self.catalog = catalog
        self.status_log = status_log
        self.notifier = notifier
        self.timezone = timezone_name
        self._announced = {r["id"]: r["state"] for r in catalog.files(types=("light",))}
        self._master_versions: dict[int, int] = {}
        self._status_text = ""

    def lights(self) -> None:
        """Status log lines for lights newly calibrated or aligned (the reducer reports only problems)."""
        for row in self.catalog.files(types=("light",)):
            state = row["state"]
            previous = self._announced.get(row["id"])
            if previous == state:
                continue
            self._announced[row["id"]] = state
            if state in ("calibrated", "aligned") and previous not in ("calibrated", "aligned"):
                self.status_log.record("info", f"calibrated  ({self._calibration_summary(row)})", row["path"])
            if state == "aligned":
                self.status_log.record(
                    "info",
                    f"aligned  (rms {row['align_rms'] or 0:.2f} px, {row['n_matches'] or 0} stars matched)",
                    row["path"],
                )

    def _calibration_summary(self, row: dict) -> str:
        parts = []
        for kind in CALIBRATION_TYPES:
            master_id = row[f"{kind}_id"]
            if master_id is None:
                continue
            if master_id not in self._master_versions:
                master = self.catalog.master(master_id) or {}
                self._master_versions[master_id] = master.get("version") or 0
            scale = f" x{row['dark_scale']:.2f}" if kind == "dark" and row["dark_scale"] is not None else ""
            parts.append(f"{kind} v{self._master_versions[master_id]}{scale}")
        masters = ", ".join(parts) or "no masters"
        fwhm = f", FWHM {row['fwhm']:.1f} px" if row["fwhm"] is not None else ""
        return f"{masters}; {row['n_stars'] or 0} stars{fwhm}"

    def status(self) -> None:
        """systemd STATUS=: the latest night's lights, what they wait for, failures (sent on change)."""
        tonight = night_of(datetime.now(UTC), self.timezone)
        nights = self.catalog.nights()
        night = tonight if tonight in nights or not nights else nights[-1]
        lights = Counter()
        failed = 0
        for row in self.catalog.counts(night):
            if row["frame_type"] == "light":
                lights[row["state"]] += row["n"]
            if row["state"] == "failed":
                failed += row["n"]
        text = f"{'tonight' if night == tonight else night}: {sum(lights[s] for s in DONE_STATES)} lights calibrated"
        if lights["waiting"]:
            reasons = Counter(r["reason"] for r in self.catalog.files(night=night, state="waiting"))
            text += f", {lights['waiting']} waiting ({reasons.most_common(1)[0][0].removeprefix('waiting: ')})"
        if failed:
            text += f", {failed} failed"
        if text != self._status_text:
            self._status_text = text
            self.notifier.status(text)
