"""The morning reports' ledger in the catalog: which night's report went to which target.

A night's report becomes due when its stacks are built (`schedule`), one row per notification
target; the row says `sent` once the target took it, so a restart never sends it again, and
while it says `due` it is tried again after a back-off (`failed`) until it goes through or is
given up (`abandoned`). Targets are recorded by a digest of their Apprise URL (`target_of`):
URLs carry passwords and tokens, and observers may read the catalog. The table belongs to the
catalog's schema (`catalog_schema`, migration 4); like every table, only the daemon's main
thread writes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from observd.adapters.catalog import Catalog, utcnow

__all__ = ["ReportLedger", "target_of"]

TABLE = "morning_reports"


def target_of(url: str) -> str:
    """The ledger's name of a notification URL: a digest, never the URL itself."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class ReportLedger:
    """Reads and writes the `morning_reports` table of an open catalog."""

    def __init__(self, catalog: Catalog):
        self.db = catalog.db

    def schedule(self, night: str, targets: Iterable[str]) -> int:
        """Make `night`'s report due for each target that has no row for it yet; returns how many."""
        rows = [
            {"night": night, "target": t, "state": "due", "attempts": 0, "next_attempt": 0.0, "created": utcnow()}
            for t in targets
        ]
        with self.db.atomic():
            before = self.db[TABLE].count
            self.db[TABLE].insert_all(rows, ignore=True)
            return self.db[TABLE].count - before

    def due(self, now: float) -> list[dict]:
        """Rows whose next attempt is due at `now` (POSIX seconds), oldest night first."""
        return list(self.db[TABLE].rows_where("state = 'due' AND next_attempt <= ?", [now], order_by="night, target"))

    def sent(self, night: str, target: str) -> None:
        with self.db.atomic():
            self.db[TABLE].update((night, target), {"state": "sent", "sent": utcnow(), "last_error": None})

    def attempts(self, night: str, target: str) -> int:
        """Failed attempts so far."""
        return self.db[TABLE].get((night, target))["attempts"] or 0

    def failed(self, night: str, target: str, error: str, *, retry_at: float | None) -> None:
        """Record a failed attempt: due again at `retry_at` (POSIX seconds), or None: given up."""
        with self.db.atomic():
            update = {"attempts": self.attempts(night, target) + 1, "last_error": error}
            update |= {"next_attempt": retry_at} if retry_at is not None else {"state": "abandoned"}
            self.db[TABLE].update((night, target), update)

    def entries(self, night: str | None = None) -> list[dict]:
        where, params = ("night = ?", [night]) if night else (None, [])
        return list(self.db[TABLE].rows_where(where, params, order_by="night, target"))
