"""From a path to a catalog row (observd.pipeline.intake.catalogue): hashes, the stat-only fast
path, rewritten files, incomplete and unreadable files, classification into the row."""

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from observd.pipeline import intake
from observd.pipeline.intake import catalogue, known_unchanged


def fits_bytes(shape=(16, 16), **cards) -> bytes:
    hdu = fits.PrimaryHDU(np.zeros(shape, dtype=np.uint16))
    hdu.header.update(
        {"IMAGETYP": "LIGHT", "EXPTIME": 60.0, "DATE-OBS": "2026-11-20T22:00:00", "CCD-TEMP": -10.0, **cards}
    )
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


@pytest.fixture
def config(config_factory):
    return config_factory(site={"timezone": "Europe/Berlin"})


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "incoming"
    path.mkdir()
    return path


def _forbid(monkeypatch, *names):
    """Make reading a file's content (hash, header) an error from here on."""

    def fail(*args, **kwargs):
        raise AssertionError("an unchanged file was read again")

    for name in names:
        monkeypatch.setattr(intake, name, fail)


# -- a new file -----------------------------------------------------------------------------------


def test_a_complete_light_becomes_a_classified_row_with_its_hash_and_stat(folder, catalog, config):
    data = fits_bytes()
    path = folder / "M42_0001.fits"
    path.write_bytes(data)
    seen = catalogue(path, catalog, config)
    assert (seen.state, seen.frame_type, seen.new, seen.reason) == ("classified", "light", True, None)
    row = catalog.file(seen.file_id)
    st = path.stat()
    assert row["path"] == seen.path == str(path) and row["name"] == "M42_0001.fits"
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert (row["size"], row["mtime_ns"], row["version"], row["current"]) == (len(data), st.st_mtime_ns, 1, 1)
    assert row["exptime"] == 60.0 and row["ccd_temp"] == -10.0 and row["night"] == "2026-11-20"
    assert row["group_key"] is None  # lights belong to no calibration group


def test_a_calibration_frame_gets_its_group_key(folder, catalog, config):
    path = folder / "bias_001.fits"
    path.write_bytes(fits_bytes(IMAGETYP="BIAS", EXPTIME=0.0))
    seen = catalogue(path, catalog, config)
    assert seen.frame_type == "bias" and catalog.file(seen.file_id)["group_key"].startswith("bias|")


def test_a_relative_path_is_recorded_absolute(folder, catalog, config, monkeypatch):
    (folder / "a.fits").write_bytes(fits_bytes())
    monkeypatch.chdir(folder)
    seen = catalogue(Path("a.fits"), catalog, config)
    assert seen.path == str(folder / "a.fits") and catalog.file(seen.file_id)["path"] == str(folder / "a.fits")


def test_the_given_digest_replaces_sha256_file(folder, catalog, config, monkeypatch):
    (folder / "a.fits").write_bytes(fits_bytes())
    _forbid(monkeypatch, "sha256_file")
    seen = catalogue(folder / "a.fits", catalog, config, digest=lambda p: "precomputed")
    assert catalog.file(seen.file_id)["sha256"] == "precomputed"


def test_configured_filename_patterns_classify_a_file_the_header_cannot(folder, catalog, config_factory):
    hdu = fits.PrimaryHDU(np.zeros((8, 8), np.uint16))  # no frame-type keyword at all
    hdu.writeto(folder / "HATP-32_001.fits")
    hdu.writeto(folder / "other_001.fits")
    config = config_factory(classify={"filename_patterns": {"HATP-*": "light"}})
    assert catalogue(folder / "HATP-32_001.fits", catalog, config).frame_type == "light"
    unknown = catalogue(folder / "other_001.fits", catalog, config)
    assert unknown.state == "unknown" and unknown.frame_type == "unknown" and unknown.reason


# -- the stat-only fast path and rewritten files --------------------------------------------------


def test_an_unchanged_file_is_not_hashed_or_read_again_with_known_stats(folder, catalog, config, monkeypatch):
    path = folder / "a.fits"
    path.write_bytes(fits_bytes())
    first = catalogue(path, catalog, config)
    _forbid(monkeypatch, "sha256_file", "read_image_header", "check_fits_size")
    again = catalogue(path, catalog, config, known=catalog.known_stats())
    assert (again.file_id, again.state, again.new) == (first.file_id, "classified", False)
    assert len(catalog.files(current=False)) == 1


def test_a_touched_file_is_hashed_again_but_stays_one_row(folder, catalog, config, monkeypatch):
    path = folder / "a.fits"
    path.write_bytes(fits_bytes())
    first = catalogue(path, catalog, config)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert not known_unchanged(str(path), path.stat(), catalog.known_stats())
    hashed = []
    real = intake.sha256_file
    monkeypatch.setattr(intake, "sha256_file", lambda p: hashed.append(p) or real(p))
    again = catalogue(path, catalog, config, known=catalog.known_stats())
    assert hashed == [path] and again.file_id == first.file_id and not again.new
    assert catalog.file(first.file_id)["mtime_ns"] == 1_000_000_000
    assert len(catalog.files(current=False)) == 1


def test_known_unchanged_compares_size_and_mtime_of_a_known_path(tmp_path):
    path = tmp_path / "a.fits"
    path.write_bytes(b"x" * 2880)
    st, key = path.stat(), str(path)
    assert known_unchanged(key, st, {key: (2880, st.st_mtime_ns, "classified", 7)})
    assert not known_unchanged(key, st, {str(tmp_path / "b.fits"): (2880, st.st_mtime_ns, "classified", 7)})
    assert not known_unchanged(key, st, {key: (5760, st.st_mtime_ns, "classified", 7)})
    assert not known_unchanged(key, st, {key: (2880, st.st_mtime_ns + 1, "classified", 7)})


def test_a_rewritten_file_gets_a_new_version_and_the_old_one_is_superseded(folder, catalog, config):
    path = folder / "a.fits"
    path.write_bytes(fits_bytes(EXPTIME=60.0))
    first = catalogue(path, catalog, config, known=catalog.known_stats())
    path.write_bytes(fits_bytes(shape=(32, 32), EXPTIME=120.0))
    second = catalogue(path, catalog, config, known=catalog.known_stats())
    assert second.new and second.file_id != first.file_id and second.state == "classified"
    old, new = catalog.file(first.file_id), catalog.file(second.file_id)
    assert (old["version"], old["current"], old["state"]) == (1, 0, "superseded")
    assert (new["version"], new["current"], new["naxis1"], new["exptime"]) == (2, 1, 32, 120.0)
    assert [r["id"] for r in catalog.files()] == [second.file_id]


# -- incomplete, broken and unreadable files ------------------------------------------------------


def test_a_truncated_fits_is_rejected_when_final_and_pending_while_it_may_grow(folder, catalog, config):
    data = fits_bytes(shape=(64, 64))
    path = folder / "growing.fits"
    path.write_bytes(data[: 2880 + 1000])
    pending = catalogue(path, catalog, config, final=False)
    assert pending.state == "pending" and "data ends at byte 3,880" in pending.reason
    row = catalog.file(pending.file_id)
    assert row["sha256"] is None and row["size"] == 3880
    path.write_bytes(data)  # the camera finished writing
    done = catalogue(path, catalog, config, final=False)
    assert done.file_id == pending.file_id and done.state == "classified" and done.new
    assert catalog.file(done.file_id)["version"] == 1 and len(catalog.files(current=False)) == 1

    cut = folder / "cut.fits"
    cut.write_bytes(data[: 2880 + 1000])
    rejected = catalogue(cut, catalog, config)  # final=True: an archive, nothing will grow
    assert rejected.state == "rejected" and "data ends at byte 3,880" in rejected.reason


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("empty.fits", b"", "empty file"),
        ("page.fits", b"<!DOCTYPE html><html><body>404</body></html>", "not a FITS file"),
        ("header_only.fits", None, "header incomplete"),
    ],
)
def test_broken_files_are_rejected_with_the_reason(folder, catalog, config, name, content, words):
    path = folder / name
    path.write_bytes(fits_bytes()[:1000] if content is None else content)
    seen = catalogue(path, catalog, config)
    assert seen.state == "rejected" and words in seen.reason
    row = catalog.file(seen.file_id)
    assert row["state"] == "rejected" and words in row["reason"] and row["current"] == 1


def test_a_fits_without_an_image_is_rejected_with_its_hash(folder, catalog, config):
    buf = io.BytesIO()
    fits.PrimaryHDU().writeto(buf)
    (folder / "table.fits").write_bytes(buf.getvalue())
    seen = catalogue(folder / "table.fits", catalog, config)
    assert seen.state == "rejected" and "no 2-D image" in seen.reason
    assert catalog.file(seen.file_id)["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()


def test_a_missing_path_is_gone_not_a_failure_and_a_directory_is_rejected(folder, catalog, config):
    """A file renamed or deleted before it could be read (a temporary name) is recorded, but as
    'gone', no longer current: it is nothing an observer can act on, and counts nowhere."""
    gone = catalogue(folder / "gone.fits", catalog, config)
    assert gone.state == "gone" and "before it was processed" in gone.reason and not gone.new
    row = catalog.file(gone.file_id)
    assert row["state"] == "gone" and row["current"] == 0
    assert catalog.current_file(str(folder / "gone.fits")) is None
    (folder / "dir.fits").mkdir()
    directory = catalogue(folder / "dir.fits", catalog, config)
    assert directory.state == "rejected" and "is a directory" in directory.reason


def test_a_file_observd_may_not_read_is_rejected_with_the_permission_reason(folder, catalog, config, monkeypatch):
    (folder / "locked.fits").write_bytes(fits_bytes())

    def deny(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(intake, "sha256_file", deny)
    seen = catalogue(folder / "locked.fits", catalog, config)
    assert seen.state == "rejected" and seen.reason.startswith("permission denied: observd cannot read")
    assert catalog.file(seen.file_id)["size"] == (folder / "locked.fits").stat().st_size
