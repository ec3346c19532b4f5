"""`observd ingest`: every simulated dialect classified, bad input rejected with reasons, raw files untouched."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from support import make_config, sha256_tree

from observd.adapters.catalog import Catalog
from observd.cli.main import main
from observd.pipeline import batch as ingest_module
from observd.pipeline import intake
from observd.pipeline.batch import ingest
from observd.pipeline.reducer import Reducer
from observd.sim.dialects import DIALECTS
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night


class _NoReduction(Reducer):
    """Classification-only ingest for tests that are about the catalog, not the pixels."""

    def advance(self, *, final, progress=None):
        return 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_simulated_frame_is_classified(tmp_path, dialect):
    truth = write_night(
        tmp_path / "night",
        SimSpec(
            dialect=dialect, shape=(64, 64), n_bias=2, n_dark=2, n_flat=2, targets=(TargetSpec(n_lights=3, n_stars=20),)
        ),
    )
    config = make_config(tmp_path, site={"timezone": "Europe/Berlin"})
    catalog = Catalog.open(config.paths.database)
    result = ingest([tmp_path / "night"], catalog, config, reducer=_NoReduction(config, catalog))
    assert not result.failed
    rows = {Path(r["path"]).relative_to(tmp_path / "night").as_posix(): r for r in catalog.files()}
    assert len(rows) == len(truth["files"])
    for f in truth["files"]:
        row = rows[f["name"]]
        assert row["frame_type"] == f["type"], (f["name"], row["type_source"])
        assert row["exptime"] == pytest.approx(f["exptime"], abs=1e-3)
        assert row["ccd_temp"] == pytest.approx(f["ccd_temp"], abs=0.06)
        assert row["night"] == "2026-11-20"
        if f["type"] in ("light", "flat"):
            assert row["filter"] == f["filter"]
    catalog.close()


def _fits_bytes(shape=(64, 64)) -> bytes:
    hdu = fits.PrimaryHDU(np.zeros(shape, dtype=np.uint16))
    hdu.header["IMAGETYP"] = "LIGHT"
    from io import BytesIO

    buf = BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def _bad_inputs(folder: Path) -> dict[str, str]:
    """File name -> words its rejection reason must contain."""
    folder.mkdir()
    good = _fits_bytes()
    (folder / "truncated_data.fits").write_bytes(good[: 2880 + 1000])
    (folder / "truncated_header.fits").write_bytes(good[:1000])
    (folder / "empty.fits").write_bytes(b"")
    (folder / "page.fits").write_bytes(b"<!DOCTYPE html><html><body>404</body></html>")
    (folder / "folder.fits").mkdir()
    (folder / "notes.txt").write_text("not data")
    (folder / "ok.fits").write_bytes(good)
    return {
        "truncated_data.fits": "data ends at byte 3,880 of 11,520",
        "truncated_header.fits": "header incomplete",
        "empty.fits": "empty file",
        "page.fits": "not a FITS file",
        "folder.fits": "directory",
    }


def test_bad_input_is_rejected_with_a_reason_and_left_untouched(tmp_path, capsys):
    expected = _bad_inputs(tmp_path / "in")
    before = sha256_tree(tmp_path / "in")
    config_file = tmp_path / "c.toml"
    config_file.write_text(
        f"[paths]\noutput = '{tmp_path / 'out'}'\ndatabase = '{tmp_path / 'out' / 'c.db'}'\n[calibrate]\nrequire = []\n"
    )
    # the folder itself, plus the directory named .fits given explicitly
    code = main(["ingest", str(tmp_path / "in"), str(tmp_path / "in" / "folder.fits"), "-c", str(config_file)])
    out = capsys.readouterr()
    assert code == 0, out.err  # bad input is not a failure of observd
    assert "Traceback" not in out.err + out.out
    assert sha256_tree(tmp_path / "in") == before
    catalog = Catalog.open(tmp_path / "out" / "c.db", readonly=True)
    rows = {Path(r["path"]).name: r for r in catalog.files()}
    for name, words in expected.items():
        assert rows[name]["state"] == "rejected", name
        assert words in rows[name]["reason"], (name, rows[name]["reason"])
    assert "notes.txt" not in rows and rows["ok.fits"]["frame_type"] == "light"
    catalog.close()
    assert main(["frames", "--state", "rejected", "--json", "-c", str(config_file)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in listed} == set(expected)


def test_unreadable_file_is_rejected_with_permission_reason(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "locked.fits").write_bytes(_fits_bytes())

    def deny(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ingest_module, "sha256_file", deny)  # the batch hashes ahead, in threads
    config = make_config(tmp_path)
    catalog = Catalog.open(config.paths.database)
    ingest([tmp_path / "in"], catalog, config, reducer=_NoReduction(config, catalog))
    row = catalog.files()[0]
    assert row["state"] == "rejected" and "permission denied" in row["reason"]
    catalog.close()


def test_missing_path_fails_the_exit_code(tmp_path, capsys):
    config_file = tmp_path / "c.toml"
    config_file.write_text(f"[paths]\ndatabase = '{tmp_path / 'c.db'}'\n")
    assert main(["ingest", str(tmp_path / "nowhere"), "-c", str(config_file)]) == 1
    assert "no such file or folder" in capsys.readouterr().out


def _folder_of_fits(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        (folder / f"f{i:03d}.fits").write_bytes(_fits_bytes((8, 8)))
    return folder


def test_second_ingest_uses_the_stat_fast_path(tmp_path, monkeypatch):
    folder = _folder_of_fits(tmp_path, 30)
    config = make_config(tmp_path)
    catalog = Catalog.open(config.paths.database)
    ingest([folder], catalog, config, reducer=_NoReduction(config, catalog))

    def no_hashing(path):
        raise AssertionError("an unchanged file was hashed again")

    monkeypatch.setattr(intake, "sha256_file", no_hashing)
    monkeypatch.setattr(ingest_module, "sha256_file", no_hashing)
    result = ingest([folder], catalog, config, reducer=_NoReduction(config, catalog))
    assert len(result.seen) == 30 and not any(s.new for s in result.seen)
    os.utime(folder / "f000.fits", ns=(1, 1))  # changed stat: hashed (and caught here)
    with pytest.raises(AssertionError):
        intake.catalogue(folder / "f000.fits", catalog, config, known=catalog.known_stats())
    catalog.close()


def test_rewritten_file_is_a_new_version(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "a.fits"
    path.write_bytes(_fits_bytes())
    config = make_config(tmp_path)
    catalog = Catalog.open(config.paths.database)
    ingest([folder], catalog, config, reducer=_NoReduction(config, catalog))
    path.write_bytes(_fits_bytes((32, 32)))
    ingest([folder], catalog, config, reducer=_NoReduction(config, catalog))
    rows = catalog.files(current=False)
    assert [(r["version"], r["state"], r["naxis1"]) for r in rows] == [(1, "superseded", 64), (2, "classified", 32)]
    catalog.close()


def test_workers_start_only_when_the_batch_has_new_files(tmp_path, monkeypatch):
    """A rescan of known files must not pay for starting the worker processes."""
    import observd.pipeline.reducer as reduce_module

    started = []
    monkeypatch.setattr(reduce_module, "warm_up", lambda pool, workers: started.append(workers))
    folder = _folder_of_fits(tmp_path, 3)
    config = make_config(tmp_path)
    catalog = Catalog.open(config.paths.database)
    pool = object()  # never used: _NoReduction reduces nothing
    ingest([folder], catalog, config, reducer=_NoReduction(config, catalog, pool=pool))
    assert len(started) == 1  # once, however many new files
    ingest([folder], catalog, config, reducer=_NoReduction(config, catalog, pool=pool))
    assert len(started) == 1  # nothing new: no workers started
    catalog.close()


def test_a_batch_hashes_new_files_ahead_in_threads_and_never_reads_known_ones(tmp_path, monkeypatch):
    import hashlib
    import threading

    folder = _folder_of_fits(tmp_path, 6)
    files = sorted(folder.iterdir())
    hashed: dict[str, str] = {}

    def recording(path):
        hashed[Path(path).name] = threading.current_thread().name
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    monkeypatch.setattr(ingest_module, "sha256_file", recording)
    st = files[0].stat()
    known = {str(files[0].absolute()): (st.st_size, st.st_mtime_ns, "classified", 1)}
    with ingest_module.HashAhead(files, known, threads=2, lookahead=2) as hashes:
        digests = {f.name: hashes.digest(f.absolute()) for f in files[1:]}
    assert digests == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files[1:]}
    assert files[0].name not in hashed  # known, unchanged: not read
    assert set(hashed) == set(digests) and all(t.startswith("hash") for t in hashed.values())
