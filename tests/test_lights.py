"""Lights through the pipeline: waiting for masters, alignment against the simulator's truth
(meridian flip included), bad-frame judgement, the real sets. The calibration arithmetic is in
test_calibrate.py, master selection in test_master_choice.py, atomic writes in test_fits_files.py."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from support import gunzip_set, ingest_into, require_real_data

from observd.pipeline.batch import ingest
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A realistic night whose flats arrive at dawn, after the lights: ingested in two batches."""
    tmp = tmp_path_factory.mktemp("night")
    truth = write_night(
        tmp / "night",
        SimSpec(
            shape=(512, 512), seed=11, n_bias=7, n_dark=5, n_flat=5, targets=(TargetSpec(n_lights=8, n_stars=400),)
        ),
    )
    flats = tmp / "night" / "FLAT"
    dawn = tmp / "dawn"
    flats.rename(dawn)
    config, catalog = ingest_into(tmp, [tmp / "night"])
    before = {r["name"]: (r["state"], r["reason"]) for r in catalog.files(types=("light",))}
    ingest([dawn], catalog, config)
    yield truth, config, catalog, before
    catalog.close()


def test_lights_wait_for_dawn_flats_then_calibrate_without_a_manual_step(night):
    truth, config, catalog, before = night
    assert {s for s, _ in before.values()} == {"waiting"}
    assert all(r == "waiting: no flat for filter L, 512x512, binning 1x1 yet" for _, r in before.values())
    after = {r["name"]: r for r in catalog.files(types=("light",))}
    assert {r["state"] for r in after.values()} <= {"aligned", "bad"}
    assert all(r["flat_id"] and r["dark_id"] and r["bias_id"] for r in after.values())


def test_clouded_and_trailed_frames_are_judged_bad_and_good_ones_are_not(night):
    truth, _, catalog, _ = night
    rows = {r["path"]: r for r in catalog.files(types=("light",))}
    root = Path(next(iter(rows))).parents[1]
    for f in (f for f in truth["files"] if f["type"] == "light"):
        row = rows[str(root / f["name"])]
        if f["clouded"]:
            assert row["state"] == "bad" and "clouds" in row["reason"], row["reason"]
        elif f["trailed"]:
            assert row["state"] == "bad" and "elongated" in row["reason"], row["reason"]
        else:
            assert row["state"] == "aligned", (f["name"], row["reason"])


def test_alignment_matches_the_true_transforms_on_a_grid(night):
    truth, _, catalog, _ = night
    rows = {r["path"]: r for r in catalog.files(types=("light",))}
    root = Path(next(iter(rows))).parents[1]
    lights = {str(root / f["name"]): f for f in truth["files"] if f["type"] == "light"}
    aligned = [r for r in rows.values() if r["state"] == "aligned"]
    ref_path = catalog.file(aligned[0]["reference_id"])["path"]
    m_ref = np.array(lights[ref_path]["matrix"])
    xs, ys = np.meshgrid(np.linspace(0, 511, 9), np.linspace(0, 511, 9))
    grid = np.vstack([xs.ravel(), ys.ravel(), np.ones(81)])
    flipped = 0
    for row in aligned:
        true = m_ref @ np.linalg.inv(np.array(lights[row["path"]]["matrix"]))  # frame -> reference
        got = np.array(json.loads(row["transform"]))
        err = np.sqrt(np.mean(np.sum(((got @ grid) - (true @ grid))[:2] ** 2, axis=0)))
        assert err <= 0.05, (row["name"], err)
        flipped += lights[row["path"]]["flipped"]
    assert flipped >= 2  # the meridian flip was exercised


def test_darks_warmer_than_the_lights_leave_them_waiting(tmp_path):
    write_night(
        tmp_path / "night",
        SimSpec(
            shape=(64, 64),
            dark_temps=(-7.0,),
            n_bias=7,
            n_dark=5,
            n_flat=5,
            targets=(TargetSpec(n_lights=2, n_stars=20),),
        ),
    )
    config, catalog = ingest_into(tmp_path, [tmp_path / "night"])
    lights = catalog.files(types=("light",))
    assert {r["state"] for r in lights} == {"waiting"}
    assert all(
        "no dark within 0.5 °C of -10.0 °C" in r["reason"]
        or "no dark within 0.5 °C of -9.9 °C" in r["reason"]
        or "no dark within 0.5 °C of -10.1 °C" in r["reason"]
        for r in lights
    )
    catalog.close()


def test_microobservatory_lights_align_uncalibrated(tmp_path):
    raw = gunzip_set(require_real_data("02_*"), tmp_path / "raw")
    config, catalog = ingest_into(
        tmp_path,
        [raw],
        site={"timezone": "America/Phoenix"},
        classify={"filename_patterns": {"HATP-*": "light"}},
        calibrate={"require": []},
    )
    lights = catalog.files(types=("light",))
    assert len(lights) == 12
    aligned = [r for r in lights if r["state"] == "aligned"]
    assert len(aligned) >= 11, [(r["name"], r["state"], r["reason"]) for r in lights]
    rms = [r["align_rms"] for r in aligned if r["id"] != r["reference_id"]]
    assert np.median(rms) < 0.3 and all(r["n_matches"] >= 10 for r in aligned)
    header = fits.getheader(aligned[0]["aligned_path"])
    assert any("UNCALIBRATED" in str(h) for h in header["HISTORY"])
    print(f"MicroObservatory alignment residuals: median {np.median(rms):.3f} px, max {max(rms):.3f} px")
    catalog.close()


def test_sbig_lights_calibrate_with_their_own_masters(tmp_path):
    raw = gunzip_set(require_real_data("01_*"), tmp_path / "raw")
    config, catalog = ingest_into(
        tmp_path, [raw], site={"timezone": "America/New_York"}, masters={"min_bias": 2, "min_dark": 2, "min_flat": 2}
    )
    ub = [r for r in catalog.files(types=("light",)) if r["name"].startswith("UB17")]
    assert len(ub) == 2
    for row in ub:
        assert row["bias_id"] is None or row["bias_id"]
        assert row["dark_id"] and row["flat_id"], (row["state"], row["reason"])
        cal = fits.getdata(row["calibrated_path"])
        raw_data = fits.getdata(row["path"]).astype(np.float32)
        assert np.median(cal) < np.median(raw_data) - 500  # the ~900 ADU pedestal is gone
    catalog.close()


def test_a_batch_measures_every_light_then_aligns_them_all_to_the_nights_best(tmp_path, monkeypatch):
    """In a batch the reference is the best light of the whole sequence (the reference the night
    ends with in the daemon too, `finish_night`): every light is calibrated and measured first,
    then read back once and aligned to it."""
    import observd.pipeline.alignment_stage as alignment_stage
    from observd.core.references import quality_rank

    write_night(
        tmp_path / "night",
        SimSpec(
            shape=(256, 256),
            seed=4,
            n_bias=7,
            n_dark=5,
            n_flat=5,
            n_clouded=0,
            n_trailed=0,
            meridian_flip=False,
            targets=(TargetSpec(n_lights=7, n_stars=150),),
        ),
    )
    read_back = []
    original = alignment_stage.align_calibrated
    monkeypatch.setattr(alignment_stage, "align_calibrated", lambda job: read_back.append(job.file_id) or original(job))
    import observd.pipeline.light_stage as light_stage

    monkeypatch.setattr(light_stage, "align_calibrated", lambda job: read_back.append(job.file_id) or original(job))
    config, catalog = ingest_into(tmp_path, [tmp_path / "night"], align={"reference_min_frames": 3})
    lights = sorted(catalog.files(types=("light",)), key=lambda r: r["date_obs"])
    assert [r["state"] for r in lights] == ["aligned"] * 7
    assert sorted(read_back) == sorted(r["id"] for r in lights)  # each read back once
    best = max(lights, key=quality_rank)
    assert all(r["reference_id"] == best["id"] for r in lights)
    catalog.close()


def test_the_daemon_takes_its_reference_from_the_first_frames_a_batch_holds_nothing_back():
    from observd.core.references import held_for_reference

    rows = [
        {
            "id": i,
            "night": "n",
            "object": "M42",
            "state": "classified",
            "path": f"/x/{i}",
            "date_obs": f"2026-11-20T2{i}:00:00",
        }
        for i in range(8)
    ]
    rows[0] = dict(rows[0], state="bad")  # measured, judged bad: not a candidate
    ready = rows[1:]
    daemon_held = held_for_reference(ready, rows, {}, final=False, min_frames=3)
    assert {r["id"] for r in ready} - daemon_held == {1, 2, 3}  # the first three that came
    assert held_for_reference(ready, rows, {}, final=True, min_frames=3) == set()  # a batch measures all first
    rows[1] = dict(rows[1], state="calibrated")  # one good frame measured
    assert {r["id"] for r in ready[1:]} - held_for_reference(ready[1:], rows, {}, final=False, min_frames=3) == {2, 3}
    assert held_for_reference(ready, rows, {("n", "M42"): object()}, final=False, min_frames=3) == set()
    assert held_for_reference(ready, rows, {}, final=False, min_frames=3, fixed=True) == set()


def test_outputs_leave_the_page_cache_unless_read_back_at_once(tmp_path, monkeypatch):
    """A calibrated frame aligned in its own job (the daemon, once its reference is known) is not
    read again, and an aligned frame is read again only by the stack (from disk): their pages go
    back to serve the next output. A calibrated frame read back for alignment — in a batch, every
    one: it measures all lights before choosing the reference — stays cached. The files are
    complete either way."""
    import observd.adapters.fits_files

    dropped = []
    real = observd.adapters.fits_files.os.posix_fadvise
    monkeypatch.setattr(
        observd.adapters.fits_files.os,
        "posix_fadvise",
        lambda fd, offset, length, advice: (
            dropped.append((Path(os.readlink(f"/proc/self/fd/{fd}")), advice)) or real(fd, offset, length, advice)
        ),
    )
    write_night(
        tmp_path / "night",
        SimSpec(
            shape=(256, 256),
            seed=4,
            n_bias=7,
            n_dark=5,
            n_flat=5,
            n_clouded=0,
            n_trailed=0,
            meridian_flip=False,
            targets=(TargetSpec(n_lights=5, n_stars=150),),
        ),
    )
    _, catalog = ingest_into(tmp_path, [tmp_path / "night"], align={"reference_min_frames": 3})
    lights = sorted(catalog.files(types=("light",)), key=lambda r: r["date_obs"])
    read_back = {r["calibrated_path"] for r in lights}  # a batch aligns after measuring them all
    assert {advice for _, advice in dropped} == {os.POSIX_FADV_DONTNEED}
    # the temporary ".<name>.<random>.tmp" beside each output
    assert {str(path.parent / path.name.split(".fits.")[0][1:]) + ".fits" for path, _ in dropped} == (
        {r["calibrated_path"] for r in lights} - read_back
    ) | {r["aligned_path"] for r in lights}
    for row in lights:
        # an aligned frame is NaN outside its footprint (shifted by the night's drift)
        for kind, finite in (("calibrated_path", 0.99), ("aligned_path", 0.9)):
            with fits.open(row[kind]) as hdul:
                assert hdul[0].data.shape == (256, 256) and np.isfinite(hdul[0].data).mean() > finite and "MASK" in hdul
    catalog.close()
