"""Deep stacks: every good light of a target over all its nights, refreshed as nights are added.

Three simulated nights of one target with one setup (camera, telescope and sky: `SimSpec.setup_seed`),
each with its own drift and field rotation, the second with a meridian flip, the third with a clouded
light, are ingested and stacked night by night (`observd ingest --stack`), then deep-stacked
(`observd stack --object M42 --all-nights`). A fourth night then comes through the daemon's nightly
stacks with `[stack] deep = true`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from support import config_file, ingest_into, make_config, single_frame_noise

from observd.adapters.catalog import Catalog
from observd.cli.main import main
from observd.core.deep_plan import DeepPlan, compose, deep_reference, plan_deep
from observd.core.measure import measure
from observd.core.references import quality_rank
from observd.pipeline import deep_stacks
from observd.pipeline.batch import ingest
from observd.pipeline.events import Events
from observd.pipeline.reducer import Reducer
from observd.pipeline.stacking import stack_night
from observd.service.health import Health
from observd.service.nightly_stacks import NightlyStacks
from observd.service.sdnotify import Notifier
from observd.sim import scene
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

# night, drift (px per light), field rotation (deg per light), meridian flip, clouded lights, seeing
NIGHTS = (
    ("2026-11-20", 0.5, 0.02, False, 0, 3.0),
    ("2026-11-21", 0.9, -0.03, True, 0, 3.0),
    ("2026-11-22", 0.6, 0.05, False, 1, 3.0),
)
FOURTH = ("2026-11-25", 0.7, -0.01, False, 0, 3.6)  # worse seeing: the deep reference stays
N_LIGHTS = 6


def night_spec(k: int, night: str, drift: float, rotation: float, flip: bool, clouded: int, seeing: float) -> SimSpec:
    return SimSpec(
        seed=40 + k,
        setup_seed=7,
        night=night,
        shape=(320, 320),
        n_bias=7,
        n_dark=5,
        n_flat=9,  # a night's flat noise is common to its frames: enough flats to keep it small
        targets=(TargetSpec("M42", ("L",), n_lights=N_LIGHTS + clouded),),
        drift=drift,
        field_rotation=rotation,
        meridian_flip=flip,
        n_clouded=clouded,
        n_trailed=0,
        seeing=seeing,
    )


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    base = tmp_path_factory.mktemp("deep")
    sections = {"site": {"timezone": "Europe/Berlin"}, "astrometry": {"enabled": False}}
    config_path = config_file(base, **sections)
    truths = {}
    for k, (night, *conditions) in enumerate(NIGHTS):
        truths[night] = write_night(base / "raw" / night, night_spec(k, night, *conditions))
        run_cli("ingest", str(base / "raw" / night), "--stack", "-c", str(config_path))
    printed = run_cli("stack", "--object", "M42", "--all-nights", "-c", str(config_path))
    catalog = Catalog.open(base / "out" / "observd.db")
    (product,) = catalog.products(deep=True)
    with fits.open(product["path"]) as hdul:
        data, header, mask = hdul[0].data.astype(np.float64), hdul[0].header, hdul["MASK"].data.astype(bool)
    frames = catalog.deep_frames("M42")
    yield {
        "base": base,
        "config": make_config(base, **sections),
        "config_file": config_path,
        "catalog": catalog,
        "truths": truths,
        "printed": printed,
        "product": product,
        "inputs": catalog.product_inputs(product["id"]),
        "data": data,
        "header": header,
        "mask": mask,
        "frames": frames,
        "nightly": catalog.products(),
    }
    catalog.close()


def truth_of(deep, name: str) -> dict:
    return next(f for t in deep["truths"].values() for f in t["files"] if Path(f["name"]).name == name)


def star_free(deep) -> np.ndarray:
    """Pixels of the deep stack where no simulated star adds 1 adu, every input has a value, and
    16 px from the edges."""
    reference = truth_of(deep, deep["product"]["reference"])
    stars = np.asarray(deep["truths"][NIGHTS[0][0]]["targets"]["M42"]["stars"])
    m = np.asarray(reference["matrix"])
    xy = stars[:, :2] @ m[:2, :2].T + m[:2, 2]
    model = scene.render_stars(deep["data"].shape, xy[:, 0], xy[:, 1], stars[:, 2], 4.0)
    inputs = [fits.getdata(deep["frames"][r["id"]]["path"], "MASK") != 0 for r in deep["inputs"]]
    region = ~deep["mask"] & ~np.any(inputs, axis=0) & (model < 1.0)
    region[:16] = region[-16:] = region[:, :16] = region[:, -16:] = False
    return region


@pytest.mark.slow
def test_the_deep_stack_has_every_good_light_and_its_noise_falls_as_sqrt_n(deep):
    inputs = deep["inputs"]
    files = [f for t in deep["truths"].values() for f in t["files"]]
    clouded = {Path(f["name"]).name for f in files if f["type"] == "light" and f["clouded"]}
    assert len(clouded) == 1 and not clouded & {r["name"] for r in inputs}
    assert len(inputs) == deep["product"]["n_combined"] == N_LIGHTS * len(NIGHTS)
    assert {r["night"] for r in inputs} == {n[0] for n in NIGHTS}
    region = star_free(deep)
    assert region.sum() > 0.3 * region.size
    _, _, stack_noise = sigma_clipped_stats(deep["data"][region], sigma=3.0, maxiters=10)
    # single frames as the stack saw them: resampled onto the deep reference (an interpolation
    # smooths noise a little; the stack's frames had exactly one)
    singles = single_frame_noise([deep["frames"][r["id"]]["path"] for r in inputs], region)
    ideal = np.median(singles) / math.sqrt(len(inputs))
    print(
        f"deep N={len(inputs)}: single median {np.median(singles):.2f}, stack {stack_noise:.3f}, "
        f"{stack_noise / ideal:.3f} x ideal"
    )
    assert stack_noise <= 1.05 * ideal


@pytest.mark.slow
def test_the_deep_stack_is_as_sharp_as_the_nightly_stacks(deep):
    """Nights registered to each other (a flip composed the wrong way doubles every star) and each
    frame resampled once. The registration itself is checked against the simulator's truth in
    `test_the_deep_product_records_its_nights_reference_inputs_and_transforms`: a night 0.5 px off
    widens the stars by only ~1 %."""
    quality, _ = measure(deep["data"], mask=deep["mask"])
    nightly = []
    for product in deep["nightly"]:
        with fits.open(product["path"]) as hdul:
            nightly.append(measure(hdul[0].data.astype(np.float64), mask=hdul["MASK"].data.astype(bool))[0].fwhm)
    assert len(nightly) == len(NIGHTS)
    ratio = quality.fwhm / float(np.mean(nightly))
    print(f"deep FWHM {quality.fwhm:.3f} px, nightly {', '.join(f'{f:.3f}' for f in nightly)}: ratio {ratio:.3f}")
    assert abs(ratio - 1.0) <= 0.05


@pytest.mark.slow
def test_the_deep_product_records_its_nights_reference_inputs_and_transforms(deep):
    product, header, frames = deep["product"], deep["header"], deep["frames"]
    out = deep["base"] / "out"
    assert product["night"] is None and product["nights"].split(",") == [n[0] for n in NIGHTS]
    assert Path(product["path"]) == out / "deep" / "M42" / "M42_L.fits" and Path(product["preview_path"]).exists()
    assert product["path"] in deep["printed"] and "18 light(s) resampled" in deep["printed"]
    assert header["NIGHTS"] == f"{NIGHTS[0][0]}..{NIGHTS[-1][0]}" and "NIGHT" not in header
    assert header["NCOMBINE"] == len(deep["inputs"]) and header["ALIGNREF"] == product["reference"]
    # the reference is the best light of all nights, whatever the night
    lights = [r for r in deep["catalog"].files(types=("light",)) if r["night"] in {n[0] for n in NIGHTS}]
    assert product["reference"] == max((r for r in lights if r["state"] == "aligned"), key=quality_rank)["name"]
    reference_id = next(r["id"] for r in lights if r["name"] == product["reference"])
    errors = []
    for row in deep["inputs"]:
        frame = frames[row["id"]]
        assert frame["reference_id"] == reference_id and Path(frame["path"]).is_relative_to(out / "deep" / "M42")
        assert fits.getheader(frame["path"])["ALIGNREF"] == product["reference"]
        # frame -> deep reference, checked against the simulator's truth: the frame's pixel (100, 120)
        # lands where the sky point it saw lands in the reference
        m_frame = np.asarray(truth_of(deep, row["name"])["matrix"])
        m_ref = np.asarray(truth_of(deep, product["reference"])["matrix"])
        expected = m_ref @ np.linalg.inv(m_frame) @ [100.0, 120.0, 1.0]
        got = np.asarray(json.loads(frame["matrix"])) @ [100.0, 120.0, 1.0]
        errors.append(float(np.hypot(*(got - expected)[:2])))
    print(f"frame -> deep reference vs truth: median {np.median(errors):.3f} px, max {max(errors):.3f} px")
    assert max(errors) < 0.1


@pytest.mark.slow
def test_status_lists_the_deep_product(deep, capsys):
    config_file = str(deep["config_file"])
    assert main(["status", "--json", "-c", config_file]) == 0
    report = json.loads(capsys.readouterr().out)
    (entry,) = report["deep_products"]
    assert all(p["night"] is not None for p in report["products"])
    current = Catalog.open(deep["base"] / "out" / "observd.db", readonly=True)
    try:
        (row,) = current.products(deep=True)
        inputs = current.product_inputs(row["id"])
    finally:
        current.close()
    assert entry["object"] == "M42" and entry["filter"] == "L" and entry["night"] is None
    assert entry["n_combined"] == len(inputs) and entry["nights"] == sorted({r["night"] for r in inputs})
    assert entry["path"] == row["path"] and entry["reference"] == row["reference"]
    assert main(["status", "-c", config_file]) == 0
    text = capsys.readouterr().out
    assert "Deep stacks (all nights):" in text and row["path"] in text


@pytest.mark.slow
def test_a_fourth_night_with_deep_true_resamples_only_its_own_lights(deep, monkeypatch):
    catalog, base = deep["catalog"], deep["base"]
    config = replace(deep["config"], stack=replace(deep["config"].stack, deep=True))
    night, *conditions = FOURTH
    write_night(base / "raw" / night, night_spec(len(NIGHTS), night, *conditions))
    result = ingest([base / "raw" / night], catalog, config)
    assert not result.failed
    before = {i: (Path(f["path"]).stat(), f["aligned"]) for i, f in catalog.deep_frames("M42").items()}
    resampled = []

    def counting(job):
        resampled.append(job.file_id)
        return real(job)

    real = deep_stacks.align_calibrated
    monkeypatch.setattr(deep_stacks, "align_calibrated", counting)
    reducer = Reducer(config, catalog)
    nightly = NightlyStacks(
        lambda c, cat, n: stack_night(c, cat, n),
        Health(Notifier(), lambda: True),
        wake=lambda: None,
        finish=reducer.finish_night,
        refresh_deep=lambda c, cat, n, stopping: deep_stacks.refresh_after_night(c, cat, n, should_stop=stopping),
    )
    nightly.request(night)
    nightly.run_requests(config, catalog, Events(catalog, logging.getLogger("test")), lambda: False)

    (product,) = catalog.products(deep=True)
    inputs = catalog.product_inputs(product["id"])
    fourth = {r["id"] for r in inputs if r["night"] == night}
    assert len(fourth) == N_LIGHTS and len(inputs) == N_LIGHTS * (len(NIGHTS) + 1)
    assert product["reference"] == deep["product"]["reference"]
    # only the new night's lights were resampled; the others' files and records are untouched
    assert sorted(resampled) == sorted(fourth)
    after = catalog.deep_frames("M42")
    for i, (stat, aligned) in before.items():
        now = Path(after[i]["path"]).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns) and after[i]["aligned"] == aligned
    assert product["nights"].split(",") == [n[0] for n in NIGHTS] + [night]


def _row(i: int, night: str, reference_id: int, transform, *, n_stars=50, fwhm=3.0) -> dict:
    return {
        "id": i,
        "name": f"f{i}.fits",
        "path": f"/raw/{night}/f{i}.fits",
        "frame_type": "light",
        "state": "aligned",
        "night": night,
        "object": "M42",
        "filter": "L",
        "stars": "[[1,2,3]]" if i != reference_id else f"[[{i},2,3]]",
        "transform": json.dumps(transform),
        "calibrated_path": f"/out/{night}/calibrated/f{i}.fits",
        "aligned_path": f"/out/{night}/aligned/f{i}.fits",
        "reference_id": reference_id,
        "bias_id": 1,
        "dark_id": 2,
        "flat_id": 3,
        "n_stars": n_stars,
        "fwhm": fwhm,
        "elongation": 1.1,
    }


def test_plan_resamples_what_changed_and_reuses_the_rest():
    eye = np.eye(3).tolist()
    shifted = [[1, 0, 2.5], [0, 1, -1.0], [0, 0, 1]]
    rows = [
        _row(1, "2026-11-20", 1, eye, n_stars=80, fwhm=2.8),  # the best: the deep reference
        _row(2, "2026-11-20", 1, shifted),
        _row(3, "2026-11-21", 3, eye),
        _row(4, "2026-11-21", 3, shifted),
    ]
    references = {r["id"]: r for r in rows if r["id"] == r["reference_id"]}
    assert deep_reference(rows)["id"] == 1
    first = plan_deep(rows, references, {})
    assert [r["id"] for r in first.stale] == [1, 2, 3, 4] and not first.fresh
    done = {i: {"source": s} for i, s in first.sources.items()}
    assert plan_deep(rows, references, done) == DeepPlan(first.reference, (), tuple(rows), first.sources)
    # calibrated again with another flat: that light only
    changed = [dict(rows[0]), dict(rows[1]), dict(rows[2]), dict(rows[3], flat_id=9)]
    assert [r["id"] for r in plan_deep(changed, references, done).stale] == [4]
    # a night aligned again (its reference's star list changed): that night's lights
    moved = {**references, 3: dict(references[3], stars="[[3,2.5,3]]")}
    assert [r["id"] for r in plan_deep(rows, moved, done).stale] == [3, 4]
    # a better light arrives: a new deep reference, every light again
    better = [*rows, _row(5, "2026-11-22", 5, eye, n_stars=90, fwhm=2.7)]
    again = plan_deep(better, {**references, 5: better[-1]}, done)
    assert again.reference["id"] == 5 and len(again.stale) == 5
    # a light whose night's reference row is unknown is left out, not stacked misaligned
    assert [r["id"] for r in plan_deep(rows, {1: references[1]}, done).orphans] == [3, 4]


def test_compose_goes_frame_to_night_reference_to_deep_reference():
    to_night = np.array([[0.0, -1.0, 300.0], [1.0, 0.0, 5.0], [0.0, 0.0, 1.0]])  # 90 deg and a shift
    to_deep = np.array([[-1.0, 0.0, 319.0], [0.0, -1.0, 319.0], [0.0, 0.0, 1.0]])  # a meridian flip
    point = np.array([10.0, 20.0, 1.0])
    np.testing.assert_allclose(compose(to_deep, to_night) @ point, to_deep @ (to_night @ point))


@pytest.mark.slow
def test_a_colour_target_gets_a_deep_cube_stacked_per_channel(tmp_path):
    """One-shot-colour lights of two nights (the second with a meridian flip): one R, G, B cube,
    each channel's sky at the deep reference's level in that channel; a refresh interrupted by a
    stopping daemon keeps what it resampled."""
    folders = []
    for k, (night, flip) in enumerate((("2026-11-20", False), ("2026-11-21", True))):
        spec = SimSpec(
            seed=60 + k,
            setup_seed=8,
            night=night,
            shape=(192, 224),
            bayer="RGGB",
            n_bias=3,
            n_dark=3,
            n_flat=3,
            targets=(TargetSpec("NGC7000", ("IRCUT",), n_lights=4, n_stars=120),),
            meridian_flip=flip,
            n_clouded=0,
            n_trailed=0,
        )
        write_night(tmp_path / "raw" / night, spec)
        folders.append(tmp_path / "raw" / night)
    config, catalog = ingest_into(tmp_path, folders, masters={"min_bias": 3, "min_dark": 3, "min_flat": 3})
    try:
        # the daemon stops after three lights: they are kept, and no stack is made without the others
        (interrupted,) = deep_stacks.refresh_deep(
            config, catalog, should_stop=lambda: len(catalog.deep_frames("NGC7000")) >= 3
        )
        assert interrupted.resampled == 3 and not interrupted.products and not catalog.products(deep=True)
        (refresh,) = deep_stacks.refresh_deep(config, catalog)
        (product,) = catalog.products(deep=True)
        reference = next(r for r in catalog.files(types=("light",)) if r["name"] == product["reference"])
    finally:
        catalog.close()
    assert (refresh.resampled, refresh.reused) == (5, 3)
    assert product["channels"] == "R,G,B" and product["n_combined"] == 8
    assert Path(product["path"]) == tmp_path / "out" / "deep" / "NGC7000" / "NGC7000_IRCUT_RGB.fits"
    cube = fits.getdata(product["path"]).astype(np.float64)
    assert cube.shape == (3, 192, 224)
    levels = json.loads(reference["channel_stats"])
    for plane, background, noise in zip(cube, levels["background"], levels["noise"]):
        _, sky, _ = sigma_clipped_stats(plane[16:-16, 16:-16], sigma=3.0, maxiters=10)
        print(f"channel sky {sky:.1f}, reference {background:.1f}, noise {noise:.1f}")
        assert abs(sky - background) < 0.2 * noise


def test_a_failed_deep_refresh_is_reported_and_the_night_stays_stacked(catalog, config_factory):
    config = config_factory(stack={"deep": True})
    calls = []

    def stack(c, cat, night):
        cat.mark_stacked(night, 0)
        return []

    def refresh(c, cat, night, stopping):
        calls.append(night)
        raise OSError("No space left on device")

    nightly = NightlyStacks(stack, Health(Notifier(), lambda: True), wake=lambda: None, finish=calls.append)
    nightly.request("2026-11-20")
    nightly.run_requests(config, catalog, Events(catalog, logging.getLogger("test")), lambda: False)
    assert calls == ["2026-11-20"]  # finished, no refresh wired: nothing more
    failing = NightlyStacks(stack, Health(Notifier(), lambda: True), lambda: None, calls.append, refresh_deep=refresh)
    failing.request("2026-11-21")
    failing.run_requests(config, catalog, Events(catalog, logging.getLogger("test")), lambda: False)
    assert calls == ["2026-11-20", "2026-11-21", "2026-11-21"]
    assert catalog.stacked_nights() == {"2026-11-20", "2026-11-21"}
    (error,) = catalog.events(level="error")
    assert error["event"] == "deep-stack" and "No space left on device" in error["message"]
    # [stack] deep = false: no refresh at all
    failing.request("2026-11-22")
    failing.run_requests(config_factory(), catalog, Events(catalog, logging.getLogger("test")), lambda: False)
    assert calls[-1] == "2026-11-22" and len(calls) == 4


def test_all_nights_with_one_night_is_a_usage_error(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f"[paths]\ndatabase = '{tmp_path / 'none.db'}'\n")
    assert main(["stack", "--all-nights", "--night", "2026-11-20", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--all-nights" in err
