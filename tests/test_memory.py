"""`[daemon] memory_limit_mb`: the footprint model, fewer jobs at once within it, refusals with the numbers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from support import make_config

from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import write_image
from observd.cli.main import main
from observd.core.memory import TREE_MB, WORKER_MB, Budget, Need, light_need, master_need, stack_need
from observd.jobs.light_job import AlignJob, LightJob, Reference, footprint
from observd.pipeline import light_stage
from observd.pipeline.batch import ingest
from observd.pipeline.dispatch import Failure, run_jobs
from observd.pipeline.intake import catalogue
from observd.pipeline.reducer import Reducer
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

SMALL = {"masters": {"memory_limit_mb": 32}, "stack": {"memory_limit_mb": 32}}  # below any budget tried here


def test_a_jobs_footprint_grows_with_its_frame_and_colour_takes_more():
    mono_2k = light_need((2048, 2048), colour=False)
    assert mono_2k.job_mb < light_need((2048, 2048), colour=True).job_mb < light_need((6388, 9576), colour=True).job_mb
    assert light_need((6388, 9576), colour=False).shared_mb > 14 * light_need((2048, 2048), colour=False).shared_mb
    assert light_need((2048, 2048), colour=True).shared_mb == mono_2k.shared_mb  # masters are mosaics
    assert master_need((2048, 2048), 1024).job_mb > 1024  # the band-by-band combination plus the master's planes


def test_a_stack_is_counted_as_a_master_is_and_a_colour_one_with_three_sets_of_planes():
    mono, colour = (stack_need((2048, 2048), 1024, colour=c).job_mb for c in (False, True))
    assert mono == master_need((2048, 2048), 1024).job_mb
    assert colour - WORKER_MB - 1024 == 3 * (mono - WORKER_MB - 1024) > 0  # the planes, three times


def test_lights_without_a_noise_model_need_less_and_big_frames_then_run_two_at_once_in_6_gib():
    plain, noisy = light_need((6388, 9576), colour=False, noise=False), light_need((6388, 9576), colour=False)
    assert plain.job_mb < noisy.job_mb and plain.shared_mb < noisy.shared_mb  # no uncertainty planes to read or write
    assert light_need((6388, 9576), colour=True, noise=False).job_mb == light_need((6388, 9576), colour=True).job_mb
    budget = Budget(6144, workers=2)  # the 61 MP sensor on a small PC
    assert (budget.jobs_at_once(plain), budget.jobs_at_once(noisy)) == (2, 1)


def test_a_lights_footprint_has_a_noise_model_when_gain_and_read_noise_are_known(tmp_path):
    path = tmp_path / "light.fits"
    fits.PrimaryHDU(np.zeros((40, 60), np.uint16)).writeto(path)
    for gain, read_noise, noise in ((1.5, 3.0, True), (1.5, 0.0, True), (None, 3.0, False), (1.5, None, False)):
        job = LightJob(1, str(path), 0, "c.fits", "a.fits", gain=gain, read_noise=read_noise)
        assert footprint(job) == light_need((40, 60), colour=False, noise=noise)


def test_the_budget_decides_how_many_jobs_run_at_once():
    need = Need(job_mb=500, shared_mb=200, shape=(2048, 4096))
    assert Budget(TREE_MB + 200 + 3 * 500, workers=8).jobs_at_once(need) == 3  # the masters counted once
    assert Budget(TREE_MB + 200 + 3 * 500, workers=2).jobs_at_once(need) == 2  # never more than the workers
    assert Budget(TREE_MB + 200 + 500, workers=8).jobs_at_once(need) == 1
    assert Budget(need.one_job_mb, workers=8).refusal(need) is None
    reason = Budget(need.one_job_mb - 1, workers=8).refusal(need)
    assert f"4096x2048 frame needs {TREE_MB + 700} MiB" in reason and f"budget of {TREE_MB + 699} MiB" in reason


def test_a_job_too_big_for_the_budget_is_refused_without_running_and_the_others_run():
    ran = []
    tasks = [(ran.append, "big"), (ran.append, "small")]
    needs = {"big": Need(1000, 0, (100, 200)), "small": Need(10, 0, (100, 200))}
    out = dict(
        run_jobs(
            None,
            tasks,
            window=4,
            should_stop=lambda: False,
            budget=Budget(TREE_MB + 500, workers=2),
            footprint=needs.get,
        )
    )
    assert ran == ["small"]
    assert isinstance(out["big"], Failure) and f"needs {TREE_MB + 1000} MiB" in out["big"].message


def _night(folder: Path, n_lights: int = 6) -> list[Path]:
    spec = SimSpec(
        shape=(256, 256),
        seed=5,
        n_bias=7,
        n_dark=5,
        n_flat=5,
        n_clouded=0,
        n_trailed=0,
        meridian_flip=False,
        truth=False,
        targets=(TargetSpec("M42", ("L",), n_lights=n_lights, n_stars=150),),
    )
    return [folder / f["name"] for f in write_night(folder, spec)["files"]]


class Intervals:
    """Records when each light job ran (the pool's threads run them truly at once)."""

    def __init__(self, monkeypatch):
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        real = light_stage.reduce_light

        def timed(job):
            start = time.monotonic()
            try:
                return real(job)
            finally:
                with self._lock:
                    self.spans.append((start, time.monotonic()))

        monkeypatch.setattr(light_stage, "reduce_light", timed)

    def taken(self) -> list[tuple[float, float]]:
        """The spans recorded so far; the next run starts a new list."""
        spans, self.spans = self.spans, []
        return spans


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _reduce(tmp_path: Path, night: Path, limit_mb: int) -> tuple[Catalog, object]:
    config = make_config(tmp_path, daemon={"workers": 2, "memory_limit_mb": limit_mb}, **SMALL)
    catalog = Catalog.open(config.paths.database)
    with ThreadPoolExecutor(max_workers=2) as pool:
        ingest([night], catalog, config, reducer=Reducer(config, catalog, pool=pool))
    return catalog, config


def _state(catalog: Catalog) -> dict:
    return {
        r["name"]: (r["state"], r["n_stars"], r["reference_id"] is not None, r["bias_id"], r["flat_id"])
        for r in catalog.files()
    }


def test_a_small_budget_runs_one_light_at_a_time_with_the_same_results(tmp_path, monkeypatch):
    night = tmp_path / "raw"
    _night(night)
    # room for the night's biggest job (a master) but not for two lights at once
    light = light_need((256, 256), colour=False, noise=False)  # the simulated camera gives no read noise
    tight_mb = master_need((256, 256), 32).one_job_mb
    assert light.one_job_mb <= tight_mb < light.one_job_mb + light.job_mb
    intervals = Intervals(monkeypatch)
    free, free_config = _reduce(tmp_path / "free", night, 0)
    free_spans = intervals.taken()
    tight, tight_config = _reduce(tmp_path / "tight", night, tight_mb)
    tight_spans = intervals.taken()
    assert most_at_once(free_spans) == 2  # unconstrained: both workers busy
    assert most_at_once(tight_spans) == 1
    assert len(tight_spans) == len(free_spans) >= 6
    assert _state(tight) == _state(free)
    # the same pixels in every calibrated and aligned light: what the night's stacks are made of
    # (stacking itself is left out: it runs after the reduction, one stack at a time)
    products = sorted(p.relative_to(tmp_path / "free") for p in (tmp_path / "free").rglob("*.fits"))
    assert sum("aligned" in p.parts for p in products) >= 5
    for product in products:
        with fits.open(tmp_path / "free" / product) as a, fits.open(tmp_path / "tight" / product) as b:
            for hdu_a, hdu_b in zip(a, b, strict=True):
                np.testing.assert_array_equal(hdu_b.data, hdu_a.data, err_msg=str(product))
    free.close()
    tight.close()


def test_ingest_exits_2_before_processing_when_one_job_cannot_fit(tmp_path, capsys):
    night = tmp_path / "raw"
    _night(night, n_lights=2)
    need = master_need((256, 256), 32).one_job_mb  # the biggest job of this night: a master
    toml = tmp_path / "observd.toml"
    toml.write_text(
        f'[paths]\nwatch = "{night}"\noutput = "{tmp_path / "out"}"\n'
        "[daemon]\nmemory_limit_mb = 200\n[masters]\nmemory_limit_mb = 32\n[stack]\nmemory_limit_mb = 32\n"
    )
    assert main(["ingest", "-c", str(toml), str(night)]) == 2
    err = capsys.readouterr().err
    assert "256x256 frame needs" in err and f"{need} MiB" in err and "budget of 200 MiB" in err
    assert not list((tmp_path / "out").rglob("*.fits"))  # nothing was processed


def test_the_daemon_refuses_a_light_too_big_for_the_budget_with_the_numbers(tmp_path):
    night = tmp_path / "raw"
    lights = [p for p in _night(night, n_lights=2) if "_L_" in p.name]
    config = make_config(tmp_path, daemon={"memory_limit_mb": 300}, calibrate={"require": []}, **SMALL)
    catalog = Catalog.open(config.paths.database)
    for path in lights:
        catalogue(path, catalog, config)
    Reducer(config, catalog).advance(final=False)
    need = light_need((256, 256), colour=False, noise=False).one_job_mb  # the simulated camera gives no read noise
    rows = catalog.files(types=("light",))
    assert rows and all(r["state"] == "failed" for r in rows)
    assert all(f"needs {need} MiB" in r["reason"] and "budget of 300 MiB" in r["reason"] for r in rows)
    errors = [e for e in catalog.events() if e["level"] == "error"]
    assert len(errors) == len(rows)
    catalog.close()


def test_the_budget_is_reported_by_observd_config(tmp_path, capsys):
    toml = tmp_path / "observd.toml"
    toml.write_text("[daemon]\nmemory_limit_mb = 4096\n")
    assert main(["config", "-c", str(toml)]) == 0
    assert "memory_limit_mb here: 4096 MiB" in capsys.readouterr().out


@pytest.mark.parametrize("section", ["masters", "stack"])
def test_a_combination_cap_must_fit_in_the_whole_budget(tmp_path, capsys, section):
    toml = tmp_path / "observd.toml"
    toml.write_text(f"[daemon]\nmemory_limit_mb = 2000\n[{section}]\nmemory_limit_mb = 2000\n")
    assert main(["config", "--check", "-c", str(toml)]) == 2
    assert f"[{section}] memory_limit_mb = 2000 must be below" in capsys.readouterr().err


def test_an_alignment_counts_as_a_mono_or_colour_light_by_its_frames_bayer_pattern(tmp_path):
    for planes, bayer in ((1, None), (3, "RGGB")):
        path = tmp_path / f"calibrated_{planes}.fits"
        data = np.zeros((planes, 40, 60) if bayer else (40, 60), np.float32)
        write_image(path, data, fits.Header())
        ref = Reference(1, "ref", (40, 60), (), (), ())
        job = AlignJob(1, str(path), str(tmp_path / "aligned.fits"), (), ref, bayer=bayer)
        assert footprint(job) == light_need((40, 60), colour=bayer is not None)
