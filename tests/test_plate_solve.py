"""Plate solving without the sky: hints from headers, the index-coverage limit, the xylist, the
solve-field command line, and every way a solve can go wrong (each a reason, never an exception)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from observd.adapters import plate_solver
from observd.adapters.catalog import Catalog
from observd.adapters.plate_solver import Solution, command, solve, write_xylist
from observd.core.wcs_hints import SolveHints, pixel_scale, position, sexagesimal, solve_args, solve_hints, too_narrow
from observd.service.reports import format_astrometry, format_status, product_entry, status_report

# astrometry-data-tycho2's index files 4107..4119: quads of 22'..2000' (SCALE_L/SCALE_U)
TYCHO2 = ((22.0, 30.0), (30.0, 42.0), (42.0, 60.0), (60.0, 85.0), (85.0, 120.0), (1400.0, 2000.0))


def test_sexagesimal_and_positions():
    assert sexagesimal("12 50 53.1") == pytest.approx(12 + 50 / 60 + 53.1 / 3600)
    assert sexagesimal("-05:23:28") == pytest.approx(-(5 + 23 / 60 + 28 / 3600))
    assert sexagesimal("-00 30 00") == pytest.approx(-0.5)
    assert sexagesimal("") is None and sexagesimal(None) is None
    assert position({"RA": 31.312099, "DEC": 46.769087}) == (31.312099, 46.769087, "RA/DEC")
    ra, dec, source = position({"OBJCTRA": "12 50 53.1", "OBJCTDEC": "+41 07 13.6"})
    assert (ra, dec, source) == (pytest.approx(192.72125), pytest.approx(41.120444, abs=1e-6), "OBJCTRA/OBJCTDEC")
    ra, dec, _ = position({"RA": "02:04:10.26", "DEC": "+46:41:16.3"})  # sexagesimal RA card: hours
    assert ra == pytest.approx(31.04275) and dec == pytest.approx(46.687861, abs=1e-6)
    assert position({"OBJECT": "M 94"}) == (None, None, None)
    assert position({"RA": 400.0, "DEC": 10.0}) == (None, None, None)


def test_pixel_scale_from_focal_length_pixel_size_and_binning():
    # Seestar S50: 2.9 µm at 250 mm
    scale, source = pixel_scale({"FOCALLEN": 250, "XPIXSZ": 2.90000009536743, "XBINNING": 1})
    assert scale == pytest.approx(2.3927, abs=1e-4) and source == "FOCALLEN/XPIXSZ"
    # XPIXSZ already includes binning (MaxIm); PIXSIZE1 does not
    assert pixel_scale({"FOCALLEN": 1000, "XPIXSZ": 18.0, "XBINNING": 2})[0] == pytest.approx(3.7128, abs=1e-4)
    assert pixel_scale({"FOCALLEN": 1000, "PIXSIZE1": 9.0, "XBINNING": 2})[0] == pytest.approx(3.7128, abs=1e-4)
    assert pixel_scale({"PIXSCALE": 1.5, "FOCALLEN": 1000, "XPIXSZ": 9.0}) == (1.5, "PIXSCALE")
    # a capture program's placeholder WCS (CDELT1 = 1 degree) is not a hint
    assert pixel_scale({"CTYPE1": "RA---TAN", "CDELT1": 1.0}) == (None, None)
    assert pixel_scale({"FOCALLEN": 0, "XPIXSZ": 3.8}) == (None, None)


def test_solve_args_carry_the_hints():
    hints = solve_hints({"FOCALLEN": 250, "XPIXSZ": 2.9, "RA": 192.995835, "DEC": 40.978611})
    args = solve_args(hints, radius_deg=2.0)
    lo, hi = float(args[args.index("--scale-low") + 1]), float(args[args.index("--scale-high") + 1])
    assert lo < 2.3927 < hi and hi / lo == pytest.approx(1.5625, rel=1e-3)
    assert args[args.index("--scale-units") + 1] == "arcsecperpix"
    assert args[args.index("--ra") + 1] == "192.995835" and args[args.index("--radius") + 1] == "2.000"
    assert solve_args(SolveHints(None, None, None, None, None), radius_deg=2.0) == []


def test_fields_narrower_than_the_smallest_index_quads_are_skipped():
    # MicroObservatory 650x500 at 5.2"/px: 56'x43' — Tycho-2's 22' quads fit
    assert too_narrow(650, 500, 5.2, TYCHO2) is None
    # Seestar S50 1080x1920 at 2.39"/px: 43'x77'
    assert too_narrow(1080, 1920, 2.39, TYCHO2) is None
    # a 2048² camera at 0.4"/px: 13.7' square, diagonal 19.3' (24' with the scale tolerance) < 22'... just
    assert too_narrow(2048, 2048, 0.4, TYCHO2) is None
    reason = too_narrow(1024, 1024, 0.5, TYCHO2)  # 8.5' square, diagonal 12.1'
    assert reason.startswith("field too narrow for the installed index files: 8.5'x8.5' (diagonal 12.1')")
    assert "smallest index quads 22.0'" in reason
    assert too_narrow(1024, 1024, 0.5, []) == "no astrometry.net index files installed"


def test_xylist_is_one_based_brightest_first(tmp_path):
    x, y, flux = np.array([10.0, 0.0, 5.5]), np.array([20.0, 0.0, 7.25]), np.array([5.0, 50.0, 20.0])
    path = write_xylist(tmp_path / "f.xyls", x, y, flux, 650, 500)
    with fits.open(path) as hdul:
        table, header = hdul[1].data, hdul[1].header
        assert list(table["X"]) == [1.0, 6.5, 11.0]  # the 0-based centre of the first pixel is FITS 1.0
        assert list(table["Y"]) == [1.0, 8.25, 21.0]
        assert list(table["FLUX"]) == [50.0, 20.0, 5.0]
        assert (header["IMAGEW"], header["IMAGEH"]) == (650, 500)


def test_command_line(tmp_path):
    hints = SolveHints(5.2, "PIXSCALE", 31.3, 46.8, "RA/DEC")
    args = command(tmp_path / "f.xyls", tmp_path, 650, 500, hints, cpu_limit=20, radius_deg=1.5, tweak_order=3)
    joined = " ".join(args)
    for part in (
        "--x-column X --y-column Y --sort-column FLUX",
        "--width 650 --height 500",
        "--cpulimit 20",
        "--no-plots --overwrite",
        f"--dir {tmp_path}",
        "--crpix-center --tweak-order 3",
        "--ra 31.300000 --dec 46.800000 --radius 1.500",
    ):
        assert part in joined
    assert "--config" not in args
    args = command(tmp_path / "f.xyls", tmp_path, 650, 500, hints, cpu_limit=20, radius_deg=1, tweak_order=2,
                   index_dir=tmp_path / "idx")  # fmt: skip
    assert (tmp_path / "astrometry.cfg").read_text().startswith(f"add_path {tmp_path / 'idx'}")


STARS = (np.arange(20.0) * 10, np.arange(20.0) * 7, np.arange(20.0, 0, -1))
HINTS = SolveHints(5.2, "PIXSCALE", 31.3, 46.8, "RA/DEC")


def test_without_solve_field_the_stage_is_skipped_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(plate_solver, "solver_path", lambda: None)
    monkeypatch.setattr(plate_solver, "_warned_missing", False)
    with caplog.at_level(logging.WARNING, logger="observd.adapters.plate_solver"):
        first = solve(*STARS, 650, 500, HINTS)
        second = solve(*STARS, 650, 500, HINTS)
    assert first.state == second.state == "skipped"
    assert "solve-field is not installed" in first.reason
    assert len([r for r in caplog.records if "plate solving skipped" in r.message]) == 1


def _fake_solver(tmp_path: Path, monkeypatch, script: str) -> None:
    fake = tmp_path / "solve-field"
    fake.write_text("#!/bin/sh\n" + script + "\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(plate_solver, "solver_path", lambda: str(fake))
    monkeypatch.setattr(plate_solver, "index_quad_ranges", lambda _dir: TYCHO2)


def test_solver_failures_are_reasons(tmp_path, monkeypatch):
    _fake_solver(tmp_path, monkeypatch, "echo 'segfault'; exit 3")
    result = solve(*STARS, 650, 500, HINTS)
    assert result.state == "failed" and result.reason.startswith("solve-field exited with status 3")
    _fake_solver(tmp_path, monkeypatch, "echo 'Did not solve (or no WCS file was written).'; exit 0")
    result = solve(*STARS, 650, 500, HINTS)
    assert result.state == "failed" and result.reason.startswith("no solution")
    assert result.seconds is not None


def test_a_hung_solver_is_stopped(tmp_path, monkeypatch):
    _fake_solver(tmp_path, monkeypatch, "sleep 60")
    monkeypatch.setattr(plate_solver, "TIMEOUT_MARGIN_S", 0.5)
    result = solve(*STARS, 650, 500, HINTS, cpu_limit=0.2)
    assert result.state == "failed" and "was stopped" in result.reason and result.seconds < 10


def test_skips_before_running_the_solver(tmp_path, monkeypatch):
    _fake_solver(tmp_path, monkeypatch, "exit 99")  # never reached
    narrow = solve(*STARS, 1024, 1024, SolveHints(0.5, "PIXSCALE", 31.3, 46.8, "RA/DEC"))
    assert narrow.state == "skipped" and narrow.reason.startswith("field too narrow")
    nowhere = solve(*STARS, 650, 500, SolveHints(5.2, "PIXSCALE", None, None, None))
    assert nowhere.state == "skipped" and "no RA/DEC" in nowhere.reason
    few = solve(*(a[:3] for a in STARS), 650, 500, HINTS)
    assert few.state == "skipped" and "3 stars" in few.reason


def test_the_solution_is_recorded_and_shown_in_status(tmp_path):
    catalog = Catalog.open(tmp_path / "o.db")
    solved = Solution("solved", None, None, 31.04275, 46.6879, 5.171, 179.8, 3.86, 19, 1.24)
    skipped = Solution("skipped", "field too narrow for the installed index files: 8.5'x8.5'")
    for obj, solution in (("HATP-32", solved), ("M 57", skipped)):
        catalog.add_product(
            {"night": "2017-12-19", "object": obj, "filter": "V", "path": f"/x/{obj}.fits", "preview_path": "p",
             "n_combined": 10, "total_exptime": 600.0, **solution.record()},
            [],
        )  # fmt: skip
    catalog.add_product(
        {"night": "2017-12-19", "object": "old", "filter": "V", "path": "/x/o.fits", "total_exptime": 1.0}, []
    )
    report = status_report(catalog)
    entries = {p["object"]: p["astrometry"] for p in report["products"]}
    assert entries["HATP-32"] == {
        "state": "solved",
        "reason": None,
        "ra": 31.04275,
        "dec": 46.6879,
        "scale": 5.171,
        "rotation": 179.8,
        "residual": 3.86,
        "seconds": 1.24,
    }
    assert entries["M 57"]["state"] == "skipped" and entries["old"] is None
    text = format_status(report)
    assert 'WCS: centre 02:04:10.3 +46:41:16.4 (31.0428 +46.6879), 5.171"/px, rotation 179.8°' in text
    assert "WCS: skipped — field too narrow" in text
    assert format_astrometry(product_entry({"solve_state": None})["astrometry"]) is None
    catalog.close()
