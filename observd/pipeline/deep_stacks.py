"""Deep stacks: every good light of a target and filter over all its nights, refreshed as nights come.

`refresh_deep` (``observd stack --all-nights``, and after each night's stacks with ``[stack] deep =
true``) does, per target:

1. takes the target's *deep reference*, the best of its aligned lights over all nights
   (`observd.core.deep_plan`: the planning and the reasons behind it);
2. matches each night's reference to it, once per night, on their stored star lists, and composes
   that transform with each light's stored transform to its night's reference;
3. resamples each light once, from its calibrated frame (its own night's masters applied), onto the
   deep reference's grid, in the worker pool (`observd.jobs.light_job.align_calibrated` with the
   composed matrix) — only the lights never resampled, or whose source changed: a new night costs
   its own lights, not the archive's;
4. stacks them per filter (and per channel for one-shot-colour lights) with the nightly weighting
   and rejection — the same code as the nightly stacks (`observd.pipeline.stacking.build_stack`),
   every frame's sky shifted to the deep reference's.

Outputs (`observd.core.layout`), each written atomically (temporary file, fsync, rename), so a crash
leaves the previous version or the new one, never a partial file:

    <output>/deep/<object>/<object>_<filter>[_RGB].fits, .png, _thumb.png
    <output>/deep/<object>/aligned/<filter>/<night>/<raw stem>.fits

A resampled light is recorded in the catalog's `deep_frames` (its transform, its source, its file)
only after its file is written; a product is recorded with its inputs and its nights, as the
current deep product of its target and filter (`observd status` lists them). The resampled file
of a light no longer stacked (judged bad since) stays on disk, unused: nothing is deleted. A night whose
reference cannot be matched to the deep reference (another field) is left out of the deep stack,
with the reason in the event log, and tried again at the next refresh. A refresh interrupted (the
daemon stops) keeps the lights it resampled and builds no stack: a stack without the others would be
a step back; the next refresh makes it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from observd.adapters.catalog import Catalog, dumps
from observd.core.align import AlignError, find_transform
from observd.core.config import Config
from observd.core.deep_plan import DeepPlan, compose, deep_candidates, deep_groups, plan_deep
from observd.core.layout import deep_aligned_path
from observd.jobs.light_job import AlignJob, Reference, align_calibrated, footprint
from observd.jobs.pool import memory_budget
from observd.pipeline.alignment_stage import reference_of
from observd.pipeline.dispatch import Failure, run_jobs
from observd.pipeline.stacking import StackProduct, build_groups

__all__ = ["DeepRefresh", "DeepStackError", "refresh_after_night", "refresh_deep"]


class DeepStackError(Exception):
    """Some deep products could not be built (each failure is in the event log)."""


@dataclass(frozen=True)
class DeepRefresh:
    """What a refresh did for one target."""

    object: str | None
    reference: str | None  # the deep reference's file name
    resampled: int  # lights resampled onto the deep reference by this refresh
    reused: int  # lights resampled before, from the same source
    left_out: tuple[str, ...]  # lights (or nights) not in the stack, and why
    products: tuple[StackProduct, ...]


def refresh_deep(
    config: Config,
    catalog: Catalog,
    objects: Iterable[str | None] | None = None,
    *,
    filter: str | None = None,
    pool: Executor | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[DeepRefresh]:
    """Build (or refresh) the deep stacks of `objects` (default: every target with aligned lights),
    of `filter` only when given. Each target is done whatever happens to the others; then
    DeepStackError is raised if a product failed."""
    by_object: dict[str | None, list[dict]] = defaultdict(list)
    for row in catalog.files(types=("light",), state="aligned"):
        by_object[row["object"]].append(row)
    wanted = sorted(by_object, key=lambda o: o or "") if objects is None else list(dict.fromkeys(objects))
    refreshes, failures = [], []
    for obj in wanted:
        if should_stop():
            break
        refresh, failed = _refresh_target(config, catalog, obj, by_object.get(obj, []), filter, pool, should_stop)
        refreshes.append(refresh)
        failures += failed
    if failures:
        raise DeepStackError(f"{len(failures)} deep product(s) failed: " + "; ".join(failures))
    return refreshes


def refresh_after_night(
    config: Config,
    catalog: Catalog,
    night: str,
    *,
    pool: Executor | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[DeepRefresh]:
    """``[stack] deep = true``: once `night` is stacked, the deep stacks of its targets."""
    objects = {r["object"] for r in catalog.files(night=night, types=("light",), state="aligned")}
    return refresh_deep(config, catalog, sorted(objects, key=lambda o: o or ""), pool=pool, should_stop=should_stop)


def _refresh_target(
    config: Config,
    catalog: Catalog,
    obj: str | None,
    rows: list[dict],
    filter: str | None,
    pool: Executor | None,
    should_stop: Callable[[], bool],
) -> tuple[DeepRefresh, list[str]]:
    candidates = deep_candidates(rows)
    if not candidates:
        catalog.event("info", "deep-stack", f"deep stack of {obj}: no aligned lights")
        return DeepRefresh(obj, None, 0, 0, (), ()), []
    night_references = {i: row for i in {r["reference_id"] for r in candidates} if (row := catalog.file(i))}
    done = {i: row for i, row in catalog.deep_frames(obj).items() if Path(row["path"]).exists()}
    plan = plan_deep(candidates, night_references, done)
    left_out = [f"{r['name']}: its night's reference (file id {r['reference_id']}) is unknown" for r in plan.orphans]
    stale = [r for r in plan.stale if filter is None or r["filter"] == filter]
    resampled, why = _resample(config, catalog, obj, plan, stale, night_references, pool, should_stop)
    left_out += why
    if should_stop():  # a stack without the lights not resampled yet would be a step back: next time
        catalog.event(
            "warning",
            "deep-stack",
            f"deep stack of {obj} interrupted (stopping): {len(resampled)} light(s) resampled and kept; "
            "the stack is built at the next refresh",
        )
        return DeepRefresh(obj, plan.reference["name"], len(resampled), len(plan.fresh), tuple(left_out), ()), []
    # each light with its resampled frame in place of its night's aligned one
    fresh = {r["id"] for r in plan.fresh}
    usable = [
        dict(row, aligned_path=path)
        for row in candidates
        if (filter is None or row["filter"] == filter)
        and (path := resampled.get(row["id"]) or (done[row["id"]]["path"] if row["id"] in fresh else None))
    ]
    groups = deep_groups(usable, plan.reference, min_frames=config.stack.min_frames)
    products, failures = build_groups(config, catalog, groups, pool)
    refresh = DeepRefresh(
        obj, plan.reference["name"], len(resampled), len(plan.fresh), tuple(left_out), tuple(products)
    )
    catalog.event(
        "info",
        "deep-stack",
        f"deep stack of {obj}: reference {refresh.reference}; {refresh.resampled} light(s) resampled, "
        f"{refresh.reused} reused, {len(left_out)} left out; {len(products)} product(s)",
    )
    return refresh, failures


def _resample(
    config: Config,
    catalog: Catalog,
    obj: str | None,
    plan: DeepPlan,
    stale: list[dict],
    night_references: dict[int, dict],
    pool: Executor | None,
    should_stop: Callable[[], bool],
) -> tuple[dict[int, str], list[str]]:
    """Resample `stale` lights onto the deep reference; record each. Returns (file id -> resampled
    file, reasons for the lights left out)."""
    reference = reference_of(plan.reference)
    jobs, left_out = [], []
    for night_reference_id, lights in _by_night_reference(stale).items():
        try:
            bridge = _bridge(config, night_references[night_reference_id], reference)
        except AlignError as exc:
            night_reference = night_references[night_reference_id]
            reason = f"night reference {night_reference['name']} does not match deep reference {reference.name}: {exc}"
            catalog.event("warning", "deep-stack", f"deep stack of {obj}: {len(lights)} light(s) left out: {reason}")
            left_out += [f"{r['name']}: {reason}" for r in lights]
            continue
        for row in lights:
            matrix = compose(bridge, np.asarray(json.loads(row["transform"])))
            jobs.append(
                AlignJob(
                    row["id"],
                    row["calibrated_path"],
                    str(deep_aligned_path(config.paths.output, row)),
                    (),
                    reference,
                    bayer=row["bayer"],
                    matrix=tuple(map(tuple, matrix.tolist())),
                )
            )
    names = {r["id"]: r["name"] for r in stale}
    resampled = {}
    outcomes = run_jobs(
        pool,
        [(align_calibrated, job) for job in jobs],
        window=config.daemon.queue_size,
        should_stop=should_stop,
        budget=memory_budget(config),
        footprint=footprint,
    )
    for job, outcome in outcomes:
        error = outcome.message if isinstance(outcome, Failure) else outcome.error
        if error:
            catalog.event(
                "warning", "deep-stack", f"deep stack of {obj}: cannot resample: {error}", job.calibrated_path
            )
            left_out.append(f"{names[job.file_id]}: {error}")
            continue
        catalog.record_deep_frame(
            {
                "file_id": job.file_id,
                "object": obj,
                "reference_id": reference.file_id,
                "matrix": dumps(job.matrix),
                "source": plan.sources[job.file_id],
                "path": outcome.aligned_path,
            }
        )
        resampled[job.file_id] = outcome.aligned_path
    return resampled, left_out


def _by_night_reference(rows: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["reference_id"]].append(row)
    return groups


def _bridge(config: Config, night_reference: dict, deep_reference: Reference) -> np.ndarray:
    """The transform from a night reference's pixels to the deep reference's, from their star lists."""
    if night_reference["id"] == deep_reference.file_id:
        return np.eye(3)
    transform = find_transform(
        reference_of(night_reference).stars(),
        deep_reference.stars(),
        max_control_points=config.align.max_control_points,
        min_matches=config.align.min_matches,
    )
    return transform.matrix
