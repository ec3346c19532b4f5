"""What observers read (observd.service.reports): the status and frames documents built from the
catalog, and their text forms."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from observd.core.frames import FrameInfo
from observd.service.reports import (
    format_frames,
    format_masters,
    format_status,
    frame_entry,
    frames_report,
    master_entry,
    pending_groups,
    status_report,
)

NIGHT, OTHER = "2026-11-20", "2026-11-21"


def add(catalog, name, frame_type, state, *, night=NIGHT, reason=None, sha=None, **fields):
    """One current catalog row, as the pipeline would leave it."""
    info = None
    if frame_type is not None:
        hour = len(catalog.files(current=False))
        info = FrameInfo(
            frame_type=frame_type,
            type_source="test",
            night=night,
            exptime=fields.pop("exptime", 60.0),
            ccd_temp=fields.pop("ccd_temp", -10.0),
            filter=fields.pop("filter", "L"),
            object=fields.pop("object", "M42" if frame_type == "light" else None),
            date_obs=datetime(2026, 11, 20, 20, tzinfo=UTC) + timedelta(minutes=hour),
        )
    file_id, _ = catalog.record_file(
        path=f"/cam/{name}", size=1, mtime_ns=1, sha256=sha or name, state=state, reason=reason, info=info
    )
    catalog.update_file(file_id, state=state, reason=reason, **fields)
    return file_id


@pytest.fixture
def night_catalog(catalog):
    """Tonight: lights in every state, calibration frames, an unknown file; another night; a
    rewritten file whose old version must not be counted."""
    add(catalog, "L1.fits", "light", "aligned", fwhm=2.5, ccd_temp=-10.2)
    add(catalog, "L2.fits", "light", "aligned", fwhm=3.1, ccd_temp=-9.8)
    add(catalog, "L3.fits", "light", "waiting", reason="waiting: no flat for filter L, 16x16, binning 1x1 yet")
    add(catalog, "L4.fits", "light", "bad", reason="clouds: 12 stars, best frame 150", fwhm=4.0, ccd_temp=-10.1)
    add(catalog, "L5.fits", "light", "failed", reason="OSError: No space left on device")
    add(catalog, "L6.fits", "light", "unaligned", reason="only 2 stars matched", fwhm=2.9)
    add(catalog, "B1.fits", "bias", "combined", exptime=0.0)
    add(catalog, "B2.fits", "bias", "combined", exptime=0.0)
    add(catalog, "U1.fits", "unknown", "unknown", reason="no frame-type keyword")
    add(catalog, "N1.fits", "light", "waiting", night=OTHER, reason="waiting: no dark")
    add(catalog, "R1.fits", "light", "aligned", sha="first content", fwhm=9.9)
    add(catalog, "R1.fits", "light", "aligned", sha="second content", fwhm=2.7)  # rewritten: v1 superseded
    return catalog


# -- the status document --------------------------------------------------------------------------


def test_status_counts_current_files_by_night_type_and_state(night_catalog):
    report = status_report(night_catalog)
    nights = {n["night"]: n for n in report["nights"]}
    assert list(nights) == [NIGHT, OTHER]
    assert nights[NIGHT]["counts"] == {
        "light": {"aligned": 3, "waiting": 1, "bad": 1, "failed": 1, "unaligned": 1},
        "bias": {"combined": 2},
        "unknown": {"unknown": 1},
    }
    assert nights[NIGHT]["total"] == 10  # the superseded version of R1 is not a file of tonight
    assert nights[OTHER] == {"night": OTHER, "counts": {"light": {"waiting": 1}}, "total": 1}


def test_status_lists_waiting_failed_and_bad_frames_with_their_reasons(night_catalog):
    report = status_report(night_catalog, night=NIGHT)
    assert [(e["name"], e["state"], e["reason"]) for e in report["waiting"]] == [
        ("L3.fits", "waiting", "waiting: no flat for filter L, 16x16, binning 1x1 yet")
    ]
    assert {e["name"] for e in report["failures"]} == {"L5.fits", "L6.fits", "U1.fits"}
    assert [e["name"] for e in report["bad"]] == ["L4.fits"]
    entry = report["bad"][0]
    assert entry["type"] == "light" and "frame_type" not in entry and entry["path"] == "/cam/L4.fits"


def test_a_night_report_leaves_other_nights_out(night_catalog):
    report = status_report(night_catalog, night=OTHER)
    assert report["night"] == OTHER and [n["night"] for n in report["nights"]] == [OTHER]
    assert [e["name"] for e in report["waiting"]] == ["N1.fits"]
    assert report["failures"] == [] and report["bad"] == []
    everything = status_report(night_catalog)
    assert {e["name"] for e in everything["waiting"]} == {"L3.fits", "N1.fits"}


def test_rejected_files_without_a_header_are_counted_as_undated(catalog):
    add(catalog, "cut.fits", None, "rejected", reason="data ends at byte 3,880 of 11,520")
    report = status_report(catalog)
    assert report["nights"] == [{"night": "undated", "counts": {"none": {"rejected": 1}}, "total": 1}]
    assert [(e["name"], e["reason"]) for e in report["failures"]] == [("cut.fits", "data ends at byte 3,880 of 11,520")]


def test_quality_summarises_the_measured_lights(night_catalog):
    q = status_report(night_catalog, night=NIGHT)["quality"]
    fwhms = sorted([2.5, 3.1, 4.0, 2.9, 2.7])  # measured lights (current versions only)
    assert q["lights_measured"] == len(fwhms) and q["fwhm_best"] == fwhms[0]
    assert q["fwhm_median"] == fwhms[len(fwhms) // 2]
    assert (q["ccd_temp_min"], q["ccd_temp_max"]) == (-10.2, -9.8)
    assert q["lights_bad"] == 1


def test_status_lists_current_masters_products_and_the_given_groups(night_catalog):
    key = "bias|Cam|16x16|bin1x1|-|-|-"
    night_catalog.add_master({"type": "bias", "group_key": key, "path": "/o/b1.fits", "n_frames": 2}, [7, 8])
    night_catalog.add_master(
        {"type": "bias", "group_key": key, "path": "/o/b2.fits", "n_frames": 2, "ccd_temp_mean": -10.0}, [7, 8]
    )
    night_catalog.add_product(
        {"night": NIGHT, "object": "M42", "filter": "L", "path": "/o/s.fits", "n_combined": 3, "total_exptime": 180.0},
        [1, 2],
    )
    night_catalog.add_product(
        {"night": OTHER, "object": "M42", "filter": "L", "path": "/o/t.fits", "n_combined": 1, "total_exptime": 60.0},
        [10],
    )
    groups = [
        {"type": "flat", "group": "flat|x", "eligible": 2, "needed": 5, "message": "2 eligible frame(s), needs 5"}
    ]
    report = status_report(night_catalog, night=NIGHT, status_log="/var/log/observd/status.log", pending_groups=groups)
    assert [(m["path"], m["version"], m["current"]) for m in report["masters"]] == [("/o/b2.fits", 2, True)]
    assert report["masters"][0]["ccd_temp"] == {"mean": -10.0, "min": None, "max": None}
    assert [p["path"] for p in report["products"]] == ["/o/s.fits"]
    assert report["calibration_groups"] == groups
    assert report["status_log"] == "/var/log/observd/status.log"
    assert json.loads(json.dumps(report)) == report  # the --json document as it is printed


def test_master_entry_age_is_counted_from_its_creation():
    created = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    row = {
        "id": 3,
        "type": "dark",
        "group_key": "dark|x",
        "version": 2,
        "current": 0,
        "n_frames": 7,
        "ccd_temp_mean": -10.0,
        "ccd_temp_min": -10.2,
        "ccd_temp_max": -9.9,
        "exptime": 60.0,
        "filter": None,
        "night": NIGHT,
        "path": "/o/d.fits",
        "created": created.isoformat(),
        "includes_bias": 1,
        "flag": None,
    }
    entry = master_entry(row, now=created + timedelta(hours=30, minutes=18))
    assert entry["age_hours"] == 30.3
    assert entry["current"] is False and entry["includes_bias"] is True
    assert entry["group"] == "dark|x" and entry["ccd_temp"] == {"mean": -10.0, "min": -10.2, "max": -9.9}


def test_pending_groups_come_from_the_catalogs_calibration_frames(catalog):
    for i in range(3):
        catalog.record_file(
            path=f"/cam/bias_{i}.fits",
            size=1,
            mtime_ns=1,
            sha256=f"b{i}",
            state="classified",
            group_key="bias|A",
            info=FrameInfo(frame_type="bias", type_source="test", ccd_temp=-10.0),
        )
    from observd.core.config import Config

    assert pending_groups(catalog, Config(), now=time.time()) == [
        {"type": "bias", "group": "bias|A", "eligible": 3, "needed": 7, "message": "3 eligible frame(s), needs 7"}
    ]


# -- the frames document --------------------------------------------------------------------------


def test_frames_report_filters_by_night_and_state(night_catalog):
    waiting = frames_report(night_catalog, state="waiting")
    assert [e["name"] for e in waiting] == ["L3.fits", "N1.fits"]
    assert [e["name"] for e in frames_report(night_catalog, night=OTHER)] == ["N1.fits"]
    assert {e["name"] for e in frames_report(night_catalog, night=NIGHT, state="aligned")} == {
        "L1.fits",
        "L2.fits",
        "R1.fits",
    }
    (r1,) = [e for e in frames_report(night_catalog) if e["name"] == "R1.fits"]
    assert r1["version"] == 2
    assert set(waiting[0]) == {
        "id",
        "name",
        "path",
        "version",
        "type",
        "night",
        "date_obs",
        "object",
        "filter",
        "exptime",
        "ccd_temp",
        "state",
        "reason",
        "bayer",
    }


def test_frame_entry_renames_frame_type_and_ignores_other_columns():
    row = {"name": "a.fits", "frame_type": "dark", "state": "combined", "sha256": "x", "stars": "[]"}
    entry = frame_entry(row)
    assert entry["type"] == "dark" and "sha256" not in entry and "stars" not in entry and entry["reason"] is None


# -- text -----------------------------------------------------------------------------------------


def test_format_status_shows_counts_waiting_problems_and_bad_frames(night_catalog):
    text = format_status(status_report(night_catalog, night=NIGHT, status_log="/srv/status.log"))
    assert f"night {NIGHT}" in text and "status log: /srv/status.log" in text
    assert f"Night {NIGHT}: 10 files" in text
    light_line = next(line for line in text.splitlines() if line.strip().startswith("light"))
    assert " 7 " in light_line and "3 aligned" in light_line and "1 waiting" in light_line
    assert "Lights waiting (1):\n  L3.fits: [waiting] waiting: no flat for filter L, 16x16, binning 1x1 yet" in text
    assert "Judged bad (kept, not stacked) (1):\n  L4.fits: [bad] clouds" in text
    problems = text[text.index("Problems (3):") :]
    assert "L5.fits: [failed] OSError: No space left on device" in problems
    assert "L6.fits: [unaligned]" in problems and "U1.fits: [unknown]" in problems
    assert "FWHM median 2.90 px, best 2.50 px" in text and "1 light(s) judged bad" in text


def test_format_status_of_an_empty_catalog_says_so(catalog):
    text = format_status(status_report(catalog))
    assert "all nights" in text and "No files catalogued yet." in text
    assert "Quality" not in text and "Lights waiting" not in text


def test_format_status_shows_at_most_twenty_entries_per_list(catalog):
    for i in range(25):
        add(catalog, f"W{i:02d}.fits", "light", "waiting", reason="waiting: no dark")
    text = format_status(status_report(catalog))
    assert "Lights waiting (25):" in text and text.count("[waiting]") == 20
    assert "… and 5 more" in text


def test_format_status_shows_masters_groups_and_products():
    report = {
        "night": NIGHT,
        "generated": "2026-11-21T08:00:00+00:00",
        "status_log": None,
        "nights": [],
        "masters": [
            {
                "type": "flat",
                "version": 3,
                "current": True,
                "n_frames": 9,
                "ccd_temp": {"mean": -10.04, "min": None, "max": None},
                "age_hours": 5.0,
                "group": "flat|Cam|L",
                "path": "/o/flat_v3.fits",
                "flag": "differs from v2",
            }
        ],
        "calibration_groups": [{"group": "bias|Cam", "message": "3 eligible frame(s), needs 7"}],
        "waiting": [],
        "failures": [],
        "bad": [],
        "products": [
            {
                "night": NIGHT,
                "object": "M42",
                "filter": "L",
                "n_combined": 12,
                "total_exptime": 1440.0,
                "path": "/o/M42_L.fits",
                "preview_path": "/o/M42_L.png",
            }
        ],
        "quality": {"lights_measured": 0},
    }
    text = format_status(report)
    assert "Masters in use:" in text and "flat|Cam|L" in text and "/o/flat_v3.fits" in text
    assert "-10.0 °C" in text and "FLAGGED: differs from v2" in text
    assert "(no master) bias|Cam: 3 eligible frame(s), needs 7" in text
    assert "M42 [L] N=12 1440 s" in text and "/o/M42_L.fits" in text and "/o/M42_L.png" in text


def test_format_masters_marks_superseded_versions_and_missing_temperatures():
    entries = [
        {
            "type": "bias",
            "version": 1,
            "current": False,
            "n_frames": 7,
            "ccd_temp": {"mean": None},
            "age_hours": 48.0,
            "group": "bias|Cam",
            "path": "/o/b1.fits",
            "flag": None,
        }
    ]
    text = format_masters(entries)
    assert "bias|Cam (superseded)" in text and "no temp" in text and "FLAGGED" not in text


def test_format_frames_has_one_line_per_frame_and_dashes_for_unknown_values():
    entries = [
        {
            "name": "a.fits",
            "type": "light",
            "night": NIGHT,
            "exptime": 120.0,
            "filter": "L",
            "ccd_temp": -10.04,
            "state": "aligned",
            "reason": None,
        },
        {
            "name": "b.fits",
            "type": None,
            "night": None,
            "exptime": None,
            "filter": None,
            "ccd_temp": None,
            "state": "rejected",
            "reason": "empty file (0 bytes)",
        },
    ]
    header, first, second = format_frames(entries).splitlines()
    assert header.split()[:3] == ["name", "type", "night"]
    assert first.split() == ["a.fits", "light", NIGHT, "120", "L", "-10.0", "aligned"]
    assert second.split()[:7] == ["b.fits", "-", "-", "-", "-", "-", "rejected"]
    assert second.endswith("empty file (0 bytes)")
