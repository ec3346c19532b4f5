"""The SQLite catalog: the ledger of every file seen and everything made from it.

This module and its schema (`catalog_schema`) are the only ones that speak SQL. One process
writes (the daemon or an ingest); any number of readers (`observd status`, scripts) read
concurrently: the database is in WAL mode with a busy timeout, and readers open it read-only,
so a reader never blocks the writer and never sees "database is locked".

Tables
------
files          one row per (path, content version): stat, sha256, state, reason, the
               normalised header (FrameInfo fields) and, for lights, what was done to it
masters        master calibrations, versioned per group; `current` marks the newest
master_inputs  which files went into which master
products       nightly stacks, and deep stacks of every night (`nights` set, `night` NULL);
               product_inputs lists their frames
deep_frames    lights resampled onto their target's deep reference, with the transform used
stack_runs     ledger of nights already stacked (the scheduler's "exactly once")
events         the event log behind the status log
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from observd.adapters.catalog_schema import MIGRATIONS
from observd.core.frames import FrameInfo

# States a file row can be in. Everything not processed carries a reason.
STATES = (
    "pending",  # seen, not yet complete or not yet read
    "rejected",  # not usable as FITS: truncated, empty, not FITS... (reason)
    "unknown",  # FITS, but its frame type cannot be told (reason)
    "classified",  # a bias/dark/flat/light known to the catalog, nothing done yet
    "excluded",  # a calibration frame not eligible for a master (reason)
    "combined",  # a calibration frame that went into a master
    "waiting",  # a light waiting for masters (reason names what is missing)
    "calibrated",  # a light calibrated and measured, not aligned yet
    "bad",  # a light judged bad (clouds, trailing): kept, not stacked (reason)
    "aligned",  # a light aligned to its night's reference
    "unaligned",  # a light that could not be aligned (reason)
    "failed",  # processing raised; traceback kept, retried with backoff
    "superseded",  # an older content version of a path that was rewritten
    "gone",  # the file disappeared before it was processed (renamed or deleted); not current
)

RETIRABLE = ("pending", "rejected", "unknown", "classified", "waiting", "failed")
"""States of a file that was not processed: when it disappears, its row is retired as 'gone'.
A processed file that disappears (its outputs made) keeps its row: that is its history."""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Catalog:
    """The ledger. Construct with `Catalog.open(path)`; `readonly=True` for status readers."""

    def __init__(self, db: sqlite_utils.Database, *, readonly: bool = False):
        self.db = db
        self.readonly = readonly

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, timeout: float = 30.0) -> Catalog:
        path = Path(path)
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"no catalog at {path} (has observd run or ingest been started?)")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        catalog = cls(sqlite_utils.Database(conn), readonly=readonly)
        if not readonly:
            catalog.db.enable_wal()
            conn.execute("PRAGMA synchronous = NORMAL")
            catalog._migrate()
        return catalog

    def close(self) -> None:
        self.db.conn.close()

    # -- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create or upgrade the schema; each step is idempotent and runs in a transaction."""
        meta = self.db["meta"]
        if not meta.exists():
            meta.create({"key": str, "value": str}, pk="key")
        row = self._query_one("SELECT value FROM meta WHERE key = 'schema_version'")
        version = int(row["value"]) if row else 0
        for target, step in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db.atomic():
                step(self.db)
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", [str(target)])

    # -- generic helpers ----------------------------------------------------------------------

    def _query(self, sql: str, params: Iterable = ()) -> list[dict]:
        return list(self.db.query(sql, list(params)))

    def _query_one(self, sql: str, params: Iterable = ()) -> dict | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def _select(
        self, table: str, order: str, *, where: Iterable[str] = (), where_params: Iterable = (), **equal
    ) -> list[dict]:
        """SELECT * with `column = value` for every non-None keyword, plus `where` clauses."""
        clauses = list(where) + [f"{column} = ?" for column, value in equal.items() if value is not None]
        params = list(where_params) + [value for value in equal.values() if value is not None]
        return self._query(f"SELECT * FROM {table} WHERE {' AND '.join(clauses) or '1 = 1'} ORDER BY {order}", params)

    # -- files --------------------------------------------------------------------------------

    def known_stats(self) -> dict[str, tuple[int, int, str, int]]:
        """path -> (size, mtime_ns, state, id) of current rows: the stat-only fast path of a rescan."""
        return {
            r[0]: tuple(r[1:])
            for r in self.db.execute("SELECT path, size, mtime_ns, state, id FROM files WHERE current = 1").fetchall()
        }

    def current_file(self, path: str) -> dict | None:
        return self._query_one("SELECT * FROM files WHERE path = ? AND current = 1", [path])

    def file(self, file_id: int) -> dict | None:
        return self._query_one("SELECT * FROM files WHERE id = ?", [file_id])

    def record_file(
        self,
        *,
        path: str,
        size: int,
        mtime_ns: int,
        sha256: str | None,
        state: str,
        reason: str | None = None,
        info: FrameInfo | None = None,
        group_key: str | None = None,
    ) -> tuple[int, bool]:
        """Record what was seen at `path`. Returns (row id, is_new_content).

        Same content as the current row: only stat fields are refreshed (a touch is not new data).
        New content at a known path: the old row becomes 'superseded' and a new version is added.
        """
        now = utcnow()
        with self.db.atomic():
            current = self.current_file(path)
            if current and current["sha256"] == sha256 and sha256 is not None:
                self.db["files"].update(current["id"], {"size": size, "mtime_ns": mtime_ns, "updated": now})
                return current["id"], False
            record = {
                "path": path,
                "name": Path(path).name,
                "size": size,
                "mtime_ns": mtime_ns,
                "sha256": sha256,
                "state": state,
                "reason": reason,
                "updated": now,
                "current": 1,
                "attempts": 0,
                "group_key": group_key,
            }
            if info is not None:
                record.update(info.to_record())
                record.pop("reason", None)
                record["reason"] = reason if reason is not None else info.reason
            if current and current["sha256"] is None:
                # a pending/rejected row for an incomplete or unreadable file: same file, now readable
                self.db["files"].update(current["id"], record)
                return current["id"], True
            if current:
                self.db["files"].update(
                    current["id"],
                    {"current": 0, "state": "superseded", "reason": f"rewritten with new content at {now}"},
                )
            last = self._query_one("SELECT MAX(version) AS v FROM files WHERE path = ?", [path])
            record["version"] = (last["v"] or 0) + 1
            record["first_seen"] = now
            file_id = self.db["files"].insert(record).last_pk
            return file_id, True

    def retire(self, path: str, reason: str, *, processed: bool = False) -> int | None:
        """The file at `path` is gone: its current row becomes 'gone' and no longer current, so it
        counts nowhere (and is never stacked), when it was not processed (`RETIRABLE`) or when
        `processed` says its content lives on under another name (a rename); a path never recorded
        gets such a row (every file seen is in the catalog). Returns the row's id, or None when the
        current row is a processed file's, which stays: that is its history."""
        now = utcnow()
        with self.db.atomic():
            current = self.current_file(path)
            if current is not None:
                if current["state"] not in RETIRABLE and not processed:
                    return None
                self.db["files"].update(
                    current["id"], {"state": "gone", "reason": reason, "current": 0, "updated": now}
                )
                return current["id"]
            last = self._query_one("SELECT MAX(version) AS v FROM files WHERE path = ?", [path])
            record = {
                "path": path,
                "name": Path(path).name,
                "size": 0,
                "mtime_ns": 0,
                "sha256": None,
                "state": "gone",
                "reason": reason,
                "current": 0,
                "attempts": 0,
                "version": (last["v"] or 0) + 1,
                "first_seen": now,
                "updated": now,
            }
            return self.db["files"].insert(record).last_pk

    def same_content_elsewhere(self, sha256: str, path: str) -> list[str]:
        """Paths of current rows, other than `path`, whose content is `sha256`."""
        return [
            r["path"]
            for r in self._query(
                "SELECT path FROM files WHERE sha256 = ? AND current = 1 AND path != ?", [sha256, path]
            )
        ]

    def update_file(self, file_id: int, **fields) -> None:
        """Change a file row's fields; a state must be one of `STATES`."""
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"not a file state: {fields['state']!r}")
        fields["updated"] = utcnow()
        with self.db.atomic():
            self.db["files"].update(file_id, fields)

    def files(
        self,
        *,
        night: str | None = None,
        state: str | None = None,
        types: Iterable[str] | None = None,
        current: bool = True,
    ) -> list[dict]:
        where = ["current = 1"] if current else []
        types = None if types is None else list(types)
        if types is not None:
            where.append(f"frame_type IN ({', '.join('?' * len(types))})" if types else "0")
        return self._select("files", "date_obs, path", where=where, where_params=types or (), night=night, state=state)

    def frames_of_groups_without_master(self, types: Iterable[str]) -> list[dict]:
        """Current frames of `types` whose calibration group has no current master: what the
        status report explains, without reading every calibration frame of the archive."""
        types = list(types)
        return self._query(
            f"SELECT * FROM files WHERE current = 1 AND frame_type IN ({', '.join('?' * len(types))}) "
            "AND group_key NOT IN (SELECT group_key FROM masters WHERE current = 1 AND group_key IS NOT NULL) "
            "ORDER BY date_obs, path",
            types,
        )

    def undated_files(self) -> list[dict]:
        """Current files with no night: unreadable ones (rejected) and headers without a time."""
        return self._query("SELECT * FROM files WHERE current = 1 AND night IS NULL ORDER BY first_seen, path")

    def last_arrival(self, night: str) -> str | None:
        """When the newest light of `night` was first seen (ISO-8601 UTC), None before its first."""
        row = self._query_one(
            "SELECT MAX(first_seen) AS t FROM files WHERE night = ? AND frame_type = 'light'", [night]
        )
        return row["t"] if row else None

    def nights(self) -> list[str]:
        return [
            r["night"]
            for r in self._query(
                "SELECT DISTINCT night FROM files WHERE night IS NOT NULL AND current = 1 ORDER BY night"
            )
        ]

    def nights_with_lights(self) -> list[str]:
        return [
            r["night"]
            for r in self._query(
                "SELECT DISTINCT night FROM files WHERE frame_type = 'light' AND current = 1 "
                "AND night IS NOT NULL ORDER BY night"
            )
        ]

    def counts(self, night: str | None = None) -> list[dict]:
        sql = (
            "SELECT night, frame_type, state, COUNT(*) AS n FROM files WHERE current = 1 "
            + ("AND night = ? " if night else "")
            + "GROUP BY night, frame_type, state ORDER BY night"
        )
        return self._query(sql, [night] if night else [])

    # -- masters ------------------------------------------------------------------------------

    def add_master(self, record: dict, input_ids: Iterable[int]) -> int:
        """Add a new version of a master; earlier versions of its group stay, no longer current."""
        with self.db.atomic():
            version = self.next_master_version(record["group_key"])
            self.db.execute("UPDATE masters SET current = 0 WHERE group_key = ?", [record["group_key"]])
            rec = dict(record, version=version, current=1, created=record.get("created") or utcnow())
            master_id = self.db["masters"].insert(rec).last_pk
            self.db["master_inputs"].insert_all({"master_id": master_id, "file_id": f} for f in input_ids)
            return master_id

    def masters(self, *, current_only: bool = False, kind: str | None = None) -> list[dict]:
        return self._select(
            "masters", "type, group_key, version", where=["current = 1"] if current_only else [], type=kind
        )

    def master(self, master_id: int) -> dict | None:
        return self._query_one("SELECT * FROM masters WHERE id = ?", [master_id])

    def master_input_ids(self, master_id: int) -> list[int]:
        return [
            r["file_id"]
            for r in self._query("SELECT file_id FROM master_inputs WHERE master_id = ? ORDER BY file_id", [master_id])
        ]

    def next_master_version(self, group_key: str) -> int:
        row = self._query_one("SELECT MAX(version) AS v FROM masters WHERE group_key = ?", [group_key])
        return (row["v"] or 0) + 1

    # -- products and the nightly ledger --------------------------------------------------------

    def add_product(self, record: dict, input_ids: Iterable[int]) -> int:
        """A new current product; it supersedes the one of its night (or deep: no night), object,
        filter and channels."""
        with self.db.atomic():
            self.db.execute(
                "UPDATE products SET current = 0 WHERE night IS ? AND object IS ? AND filter IS ? AND channels IS ?",
                [record.get("night"), record.get("object"), record.get("filter"), record.get("channels")],
            )
            product_id = self.db["products"].insert(dict(record, current=1, created=utcnow())).last_pk
            self.db["product_inputs"].insert_all({"product_id": product_id, "file_id": f} for f in input_ids)
            return product_id

    def products(self, *, night: str | None = None, current_only: bool = True, deep: bool = False) -> list[dict]:
        """Nightly products (of `night`, or every night), or with `deep` the deep stacks of every night."""
        where = ["current = 1"] if current_only else []
        where.append("nights IS NOT NULL" if deep else "nights IS NULL")
        return self._select("products", "night, object, filter", where=where, night=night)

    def product_inputs(self, product_id: int) -> list[dict]:
        """The file rows a product was stacked from, in time order."""
        return self._query(
            "SELECT files.* FROM product_inputs JOIN files ON files.id = product_inputs.file_id "
            "WHERE product_inputs.product_id = ? ORDER BY files.date_obs, files.path",
            [product_id],
        )

    def deep_frames(self, object: str | None) -> dict[int, dict]:
        """file id -> the `deep_frames` row of each light of `object` resampled for a deep stack."""
        return {
            r["file_id"]: r
            for r in self._select("deep_frames", "file_id", where=["object IS ?"], where_params=[object])
        }

    def record_deep_frame(self, record: dict) -> None:
        """A light resampled onto its target's deep reference (replaces the light's earlier row)."""
        with self.db.atomic():
            self.db["deep_frames"].upsert(dict(record, aligned=record.get("aligned") or utcnow()), pk="file_id")

    def replace_light_curves(self, night: str, records: Iterable[dict]) -> None:
        """The night's light curves (and the reasons for those not made), made again as a whole:
        they supersede all the night's earlier ones (kept, no longer current)."""
        now = utcnow()
        with self.db.atomic():
            self.db.execute("UPDATE light_curves SET current = 0 WHERE night = ?", [night])
            self.db["light_curves"].insert_all(dict(r, night=night, current=1, created=now) for r in records)

    def light_curves(self, *, night: str | None = None) -> list[dict]:
        """The current light curves (and the reasons for those not made)."""
        if not self.db["light_curves"].exists():  # a catalog read-only, of an observd before light curves
            return []
        return self._select("light_curves", "night, target, object, filter", where=["current = 1"], night=night)

    def mark_stacked(self, night: str, n_products: int) -> None:
        with self.db.atomic():
            self.db["stack_runs"].upsert({"night": night, "ran_at": utcnow(), "n_products": n_products}, pk="night")

    def stacked_nights(self) -> set[str]:
        return {r["night"] for r in self._query("SELECT night FROM stack_runs")}

    def stacked_since(self, since: str) -> list[str]:
        """The nights whose stack run ended at or after `since` (ISO-8601 UTC)."""
        return [
            r["night"] for r in self._query("SELECT night FROM stack_runs WHERE ran_at >= ? ORDER BY night", [since])
        ]

    # -- events -------------------------------------------------------------------------------

    def event(self, level: str, event: str, message: str, path: str | None = None) -> None:
        with self.db.atomic():
            self.db["events"].insert(
                {"time": utcnow(), "level": level, "event": event, "path": path, "message": message}
            )

    def events(self, *, limit: int = 50, level: str | None = None) -> list[dict]:
        sql = "SELECT * FROM events " + ("WHERE level = ? " if level else "") + "ORDER BY id DESC LIMIT ?"
        return self._query(sql, ([level] if level else []) + [limit])

    def events_of(self, path: str, *, limit: int = 200) -> list[dict]:
        """The events about one file, oldest first (its history)."""
        rows = self._query("SELECT * FROM events WHERE path = ? ORDER BY id DESC LIMIT ?", [path, limit])
        return rows[::-1]


def change_stamp(path: Path) -> str:
    """A token that changes whenever a transaction is committed to the catalog at `path`, read
    without opening it: in WAL mode every commit appends to `<path>-wal`, and a checkpoint
    rewrites the database file. Readers compare stamps to skip work when nothing changed."""
    parts = []
    for file in (Path(path), Path(f"{path}-wal")):
        try:
            st = file.stat()
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{st.st_size:x}.{st.st_mtime_ns:x}")
    return "-".join(parts)


def dumps(value) -> str:
    """JSON for list/dict columns (star lists, transforms)."""
    return json.dumps(value, separators=(",", ":"))
