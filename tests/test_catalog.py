"""The catalog: one row per content version, WAL readers, the stat fast path."""

import threading

from observd.adapters.catalog import Catalog
from observd.adapters.catalog_schema import MIGRATIONS
from observd.core.frames import FrameInfo


def _record(catalog, path="/data/a.fits", sha="aaa", size=100, mtime=1):
    return catalog.record_file(
        path=path,
        size=size,
        mtime_ns=mtime,
        sha256=sha,
        state="classified",
        info=FrameInfo(frame_type="light", type_source="test", night="2026-11-20"),
    )


def test_same_content_is_one_row_and_new_content_a_new_version(catalog):
    first, new = _record(catalog)
    again, new_again = _record(catalog, mtime=2)  # touched, same bytes
    assert new and not new_again and again == first
    assert catalog.file(first)["mtime_ns"] == 2
    second, new_content = _record(catalog, sha="bbb", mtime=3)
    assert new_content and second != first
    old, cur = catalog.file(first), catalog.file(second)
    assert (old["current"], old["state"], cur["current"], cur["version"]) == (0, "superseded", 1, 2)
    assert "rewritten" in old["reason"]
    assert [r["id"] for r in catalog.files()] == [second]


def test_incomplete_row_is_completed_in_place(catalog):
    pending, _ = catalog.record_file(
        path="/d/x.fits", size=10, mtime_ns=1, sha256=None, state="pending", reason="data ends at byte 10 of 5,760"
    )
    done, new = _record(catalog, path="/d/x.fits")
    assert done == pending and new
    assert catalog.file(done)["state"] == "classified" and catalog.file(done)["reason"] is None


def test_known_stats_fast_path(catalog):
    file_id, _ = _record(catalog, size=123, mtime=456)
    assert catalog.known_stats()["/data/a.fits"] == (123, 456, "classified", file_id)


def test_wal_reader_never_blocks_writer(tmp_path):
    path = tmp_path / "c.db"
    writer = Catalog.open(path)
    assert writer.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    errors, stop = [], threading.Event()

    def read():
        reader = Catalog.open(path, readonly=True)
        while not stop.is_set():
            try:
                reader.counts()
                reader.files()
            except Exception as exc:  # noqa: BLE001 - the test collects anything
                errors.append(exc)
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(300):
        _record(writer, path=f"/d/{i}.fits", sha=str(i))
    stop.set()
    thread.join()
    writer.close()
    assert errors == []


def test_masters_are_versioned_per_group(catalog):
    rec = {"type": "bias", "group_key": "bias|cam", "path": "/o/b1.fits", "n_frames": 7}
    m1 = catalog.add_master(rec, [1, 2])
    m2 = catalog.add_master(dict(rec, path="/o/b2.fits"), [1, 2, 3])
    rows = catalog.masters()
    assert [(r["version"], r["current"]) for r in rows] == [(1, 0), (2, 1)]
    assert catalog.master_input_ids(m2) == [1, 2, 3] and catalog.master_input_ids(m1) == [1, 2]


def test_schema_migration_is_idempotent(tmp_path):
    path = tmp_path / "c.db"
    Catalog.open(path).close()
    again = Catalog.open(path)
    assert again.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(len(MIGRATIONS))
    again.close()


def test_a_version_1_catalog_is_upgraded_and_keeps_its_masters(tmp_path):
    """A catalog made before masters recorded what they subtracted gains the column; its masters
    stay, with nothing recorded (NULL), and new ones record it."""
    import sqlite_utils

    from observd.adapters import catalog_schema

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    db["meta"].create({"key": str, "value": str}, pk="key")
    catalog_schema.MIGRATIONS[0](db)
    db["meta"].insert({"key": "schema_version", "value": "1"})
    db["masters"].insert({"type": "bias", "group_key": "bias|x", "version": 1, "current": 1, "path": "/m.fits"})
    db.conn.close()
    upgraded = Catalog.open(path)
    (old,) = upgraded.masters()
    assert old["subtracted"] is None and old["group_key"] == "bias|x"
    new_id = upgraded.add_master(
        {"type": "dark", "group_key": "dark|x", "path": "/d.fits", "subtracted": '{"bias": 1, "dark": null}'}, []
    )
    assert upgraded.master(new_id)["subtracted"] == '{"bias": 1, "dark": null}'
    assert upgraded.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
        len(MIGRATIONS)
    )
    upgraded.close()
