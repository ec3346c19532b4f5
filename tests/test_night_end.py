"""Live equals batch: a night's verdicts and references are final when it is stacked, whatever
order its frames came in (Reducer.finish_night, pipeline.alignment_stage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from support import make_config

from observd.adapters.catalog import Catalog
from observd.pipeline.batch import ingest
from observd.pipeline.intake import catalogue
from observd.pipeline.reducer import Reducer
from observd.pipeline.stacking import stack_night
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

NIGHT = "2026-11-20"
SECTIONS = {
    "site": {"timezone": "Europe/Berlin"},
    "masters": {"settle_seconds": 0.0},
    # strict enough that frames of a clear night differ in verdict against a smaller best
    "measure": {"min_star_fraction": 0.985},
    "align": {"reference_min_frames": 3},
}


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    folder = tmp_path_factory.mktemp("night")
    spec = SimSpec(
        shape=(256, 256),
        seed=11,
        n_bias=7,
        n_dark=5,
        n_flat=5,
        n_clouded=0,
        n_trailed=0,
        meridian_flip=False,
        truth=False,
        targets=(TargetSpec("M42", ("L",), n_lights=8, n_stars=160), TargetSpec("NGC7000", ("L",), n_lights=2)),
    )
    write_night(folder, spec)
    return folder


def _batch(root, night, **sections):
    config = make_config(root, **{**SECTIONS, **sections})
    catalog = Catalog.open(config.paths.database)
    assert not ingest([night], catalog, config).failed
    return config, catalog


def _live(root, night, order, **sections):
    """The daemon's way: one file at a time, a non-final pass after each, in `order`."""
    config = make_config(root, **{**SECTIONS, **sections})
    catalog = Catalog.open(config.paths.database)
    reducer = Reducer(config, catalog)
    for path in order:
        catalogue(path, catalog, config)
        reducer.advance(final=False)
    return config, catalog, reducer


def _verdicts(catalog) -> dict[str, tuple]:
    rows = catalog.files(types=("light",))
    names = {r["id"]: r["name"] for r in rows}
    return {r["name"]: (r["state"], r["reason"], names.get(r["reference_id"])) for r in rows}


def _same_stacks(config_b, batch, config_l, live) -> dict[tuple, tuple]:
    """Stack the night from both catalogs and check that the products are the same ones, with the
    same NCOMBINE and pixels; returns the batch's {(object, filter): (NCOMBINE, data)}."""
    stacks = {}
    for name, config, catalog in (("batch", config_b, batch), ("live", config_l, live)):
        stacks[name] = {}
        for product in stack_night(config, catalog, NIGHT):
            with fits.open(product.path) as hdul:
                stacks[name][(product.object, product.filter)] = (hdul[0].header["NCOMBINE"], hdul[0].data.copy())
    assert stacks["live"].keys() == stacks["batch"].keys()
    for key, (n, data) in stacks["batch"].items():
        n_live, data_live = stacks["live"][key]
        assert n_live == n
        np.testing.assert_allclose(data_live, data, rtol=1e-6, atol=1e-3, equal_nan=True)
    return stacks["batch"]


def test_the_daemon_ends_the_night_with_the_batchs_verdicts_references_and_stacks(tmp_path, night):
    config_b, batch = _batch(tmp_path / "batch", night)
    batch_reducer = Reducer(config_b, batch)
    batch_reducer.finish_night(NIGHT)
    expected = _verdicts(batch)
    lights = {r["name"]: r for r in batch.files(types=("light",))}
    paths = {p.name: p for p in night.rglob("*.fits")}
    # the camera delivers calibration frames, then the lights worst first: every later frame is
    # a better one, so judgements made with the night's best-so-far are as wrong as they can be
    calibration = sorted(p for name, p in paths.items() if name not in lights)
    worst_first = sorted(lights, key=lambda n: (lights[n]["n_stars"], -(lights[n]["fwhm"] or 0)))
    config_l, live, reducer = _live(tmp_path / "live", night, calibration + [paths[n] for n in worst_first])

    before = _verdicts(live)
    assert before != expected, "the scenario must be order-dependent (else it tests nothing)"
    # a target with fewer good lights than reference_min_frames is never aligned live...
    ngc = [n for n, row in lights.items() if row["object"] == "NGC7000"]
    assert {before[n][0] for n in ngc} == {"calibrated"}
    reducer.finish_night(NIGHT)
    assert _verdicts(live) == expected  # ...nor does any verdict depend on the order
    assert {expected[n][0] for n in ngc} == {"aligned"}
    assert any(state == "bad" for state, _, _ in expected.values())  # judged against the night's best

    stacks = _same_stacks(config_b, batch, config_l, live)
    assert stacks.keys() == {("M42", "L"), ("NGC7000", "L")}
    batch.close()
    live.close()


def test_lights_calibrated_with_an_earlier_master_are_calibrated_again_with_the_nights_final_one(tmp_path):
    """Five flats make a master, the lights are calibrated with it, three more flats come and make
    a new version: at the night's end the lights get the version a batch of the whole night
    uses, and the stacks are the same."""
    night = tmp_path / "raw"
    spec = SimSpec(
        shape=(256, 256),
        seed=12,
        n_bias=7,
        n_dark=5,
        n_flat=8,
        n_clouded=0,
        n_trailed=0,
        meridian_flip=False,
        truth=False,
        targets=(TargetSpec("M42", ("L",), n_lights=5, n_stars=160),),
    )
    files = [night / f["name"] for f in write_night(night, spec)["files"]]
    usual = {"measure": {"min_star_fraction": 0.5}}  # no frame of this clear night is judged bad
    config_b, batch = _batch(tmp_path / "batch", night, **usual)
    Reducer(config_b, batch).finish_night(NIGHT)
    flats = [p for p in files if p.parent.name == "FLAT"]
    others = [p for p in files if p.parent.name != "FLAT"]
    config_l, live, reducer = _live(tmp_path / "live", night, flats[:5] + others + flats[5:], **usual)
    assert max(r["version"] for r in live.masters(kind="flat")) > 1  # each later flat made a new version
    used_before = {r["flat_id"] for r in live.files(types=("light",))}
    final_flat = next(m["id"] for m in live.masters(kind="flat") if m["current"])
    assert final_flat not in used_before  # the lights were calibrated before the last flats came

    reducer.finish_night(NIGHT)
    assert {r["flat_id"] for r in live.files(types=("light",))} == {final_flat}
    assert _verdicts(live) == _verdicts(batch)
    assert [n for n, _ in _same_stacks(config_b, batch, config_l, live).values()] == [5]
    batch.close()
    live.close()


def test_a_dark_built_with_an_earlier_bias_is_built_again_when_the_bias_changes(tmp_path):
    """Masters depend on masters: the dark subtracts the bias. Seven biases make a master, the
    darks are combined against it, two more biases make a new bias version: the dark gets a new
    version against it, so the night ends with the batch's masters and stacks."""
    night = tmp_path / "raw"
    spec = SimSpec(
        shape=(256, 256),
        seed=13,
        n_bias=9,
        n_dark=5,
        n_flat=5,
        n_clouded=0,
        n_trailed=0,
        meridian_flip=False,
        truth=False,
        targets=(TargetSpec("M42", ("L",), n_lights=4, n_stars=160),),
    )
    files = [night / f["name"] for f in write_night(night, spec)["files"]]
    usual = {"measure": {"min_star_fraction": 0.5}}
    config_b, batch = _batch(tmp_path / "batch", night, **usual)
    Reducer(config_b, batch).finish_night(NIGHT)
    biases = [p for p in files if p.parent.name == "BIAS"]
    others = [p for p in files if p.parent.name != "BIAS"]
    config_l, live, reducer = _live(tmp_path / "live", night, biases[:7] + others + biases[7:], **usual)
    reducer.finish_night(NIGHT)
    bias = next(m for m in live.masters(kind="bias") if m["current"])
    dark = next(m for m in live.masters(kind="dark") if m["current"])
    assert bias["version"] > 1 and dark["version"] > 1
    assert json.loads(dark["subtracted"]) == {"bias": bias["id"], "dark": None}
    for kind in ("bias", "dark", "flat"):
        (a,) = [m for m in live.masters(kind=kind) if m["current"]]
        (b,) = [m for m in batch.masters(kind=kind) if m["current"]]
        with fits.open(a["path"]) as ha, fits.open(b["path"]) as hb:
            np.testing.assert_allclose(ha[0].data, hb[0].data, rtol=1e-6, atol=1e-4, err_msg=kind)
    assert _verdicts(live) == _verdicts(batch)
    assert len(_same_stacks(config_b, batch, config_l, live)) == 1
    batch.close()
    live.close()
