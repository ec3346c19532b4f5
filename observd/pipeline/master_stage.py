"""The reducer's master half: build the masters whose groups are ready, and record them.

Biases come first, since darks and flats subtract them. A ready dark group is combined in
the background meanwhile: its bias is only subtracted from the result (`jobs.master_job`), so
the two combinations share the pool instead of waiting for each other's checks and writes.
On a cluster (`jobs.cluster`), each master is built whole by one worker, the groups of a kind
side by side.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from observd.core.frames import CALIBRATION_TYPES, MasterFile
from observd.core.layout import master_path
from observd.core.master_choice import compatible_setup, masters_for_group
from observd.core.master_plan import UP_TO_DATE, GroupPlan, plan_masters
from observd.core.memory import master_need
from observd.jobs.cluster import Cluster
from observd.jobs.mapped_masters import unmap_masters
from observd.jobs.master_job import (
    FrameRef,
    MasterJob,
    MasterSettings,
    build_master,
    change_flag,
    combine_master,
    finish_master,
)
from observd.jobs.pool import worker_count
from observd.pipeline.dispatch import Stage


class MasterStage(Stage):
    """Plans, builds and records masters; `step()` is one pass."""

    def step(self, *, final: bool, force: bool = False) -> int:
        """Build every ready group's master; returns the number of groups acted on."""
        built = 0
        early: dict[str, tuple[tuple, Future]] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="darks") as background:
            for kind in CALIBRATION_TYPES:
                masters = self.catalog.masters()
                inputs = {m["id"]: set(self.catalog.master_input_ids(m["id"])) for m in masters if m["current"]}
                plan = partial(
                    plan_masters,
                    self.catalog.files(types=CALIBRATION_TYPES),
                    masters,
                    inputs,
                    self.config,
                    now=self.context.clock(),
                    final=final,
                    force=force,
                )
                if kind == "bias" and not isinstance(self.pool, Cluster):
                    for dark in plan(kinds=("dark",)):
                        if dark.ready:
                            job = self._frames_job(dark)
                            early[dark.group_key] = (job.frames, background.submit(combine_master, job, self.pool))
                current = [m for m in masters if m["current"]]
                ready = []
                for group in plan(kinds=(kind,)):
                    self._record_eligibility(group)
                    if group.ready or self._stale(group, current):
                        ready.append((group, *self._master_job(group, current)))
                whole = self._start_whole(ready)
                for group, job, wait in ready:
                    if job is None:
                        self.events.log.debug("%s: %s", group.group_key, wait)
                        continue
                    built += self._build(group, job, current, early.pop(group.group_key, None), whole.get(job.output))
        unmap_masters()  # this process subtracted them; the lights map them in the workers
        return built

    def _start_whole(self, ready: list[tuple[GroupPlan, MasterJob | None, str]]) -> dict[str, Future]:
        """On a cluster, every ready group's whole build at once (by output path), each on one
        worker with room for it: a master's combination cannot be shared out among workers on
        other hosts (`jobs.cluster`), but the groups of a kind can be built side by side.
        Nothing here."""
        if not isinstance(self.pool, Cluster):
            return {}
        started = {}
        for plan, job, _ in ready:
            if job is not None:
                ref = plan.eligible[-1]
                need = master_need((ref["naxis2"], ref["naxis1"]), self.config.masters.memory_limit_mb)
                started[job.output] = self.pool.submit_sized(need, build_master, job)
        return started

    def _stale(self, plan: GroupPlan, current: list[dict]) -> bool:
        """An up-to-date group's master subtracted another bias or dark than the one it would get
        now (a new version of the bias came): it is built again, so that no master depends on
        which versions of the others existed when it was made. Masters built before observd
        recorded what they subtracted are left as they are."""
        if plan.kind == "bias" or plan.message != UP_TO_DATE or not plan.eligible:
            return False
        master = next((m for m in current if m["group_key"] == plan.group_key), None)
        if master is None or master["subtracted"] is None:
            return False
        chosen = masters_for_group(plan.kind, plan.eligible[-1], current, self.config.masters)
        if chosen.wait:
            return False
        now = subtracted(MasterFile.from_row(chosen.bias), MasterFile.from_row(chosen.dark))
        return json.loads(master["subtracted"]) != now

    def _record_eligibility(self, plan: GroupPlan) -> None:
        for file_id, reason in plan.excluded.items():
            row = self.catalog.file(file_id)
            if row["state"] != "excluded" or row["reason"] != reason:
                self.catalog.update_file(file_id, state="excluded", reason=reason)
        for row in plan.eligible:
            if row["state"] == "excluded":  # back within tolerance of a moved group median
                self.catalog.update_file(row["id"], state="classified", reason=None)

    def _build(
        self,
        plan: GroupPlan,
        job: MasterJob,
        current: list[dict],
        early: tuple[tuple, Future] | None,
        whole: Future | None,
    ) -> int:
        """Build one master (from `early`, the frames and combination started in the background,
        when the job has the same frames; from `whole`, its build started on a cluster) and record it."""
        try:
            if whole is not None:
                result = whole.result()
            elif early is not None and early[0] == job.frames:
                result = finish_master(job, early[1].result())
            else:
                result = build_master(job, executor=self.pool)
        except Exception as exc:
            tb = traceback.format_exc()
            for frame in job.frames:
                self.fail(frame.id, frame.path, exc, tb)
            return 1
        for file_id, reason in result.excluded.items():
            self.catalog.update_file(file_id, state="excluded", reason=reason)
        if result.path is None:
            self.events.emit(
                "warning", "master-skipped", f"no master {plan.kind} for {plan.group_key}: {result.message}"
            )
            return 1
        self._record(plan, job, result, current)
        return 1

    def _record(self, plan: GroupPlan, job: MasterJob, result, current: list[dict]) -> None:
        previous = next((m for m in current if m["group_key"] == plan.group_key), None)
        flag = None
        if previous and Path(previous["path"]).exists():
            flag = change_flag(
                Path(result.path),
                Path(previous["path"]),
                sigma=self.config.masters.change_sigma,
                fraction=self.config.masters.change_fraction,
            )
        used = [r for r in plan.eligible if r["id"] in set(result.used)]
        master_id = self.catalog.add_master(master_record(plan, job, used, result, flag), result.used)
        for row in used:
            self.catalog.update_file(row["id"], state="combined", reason=None)
        temps = [r["ccd_temp"] for r in used if r["ccd_temp"] is not None]
        self.events.emit(
            "warning" if flag else "info",
            "master",
            f"master {plan.kind} v{job.version} (id {master_id}) from {len(used)} frames"
            + (f", CCD-TEMP {min(temps):+.1f}..{max(temps):+.1f} °C" if temps else "")
            + f": {result.path}"
            + (f" — FLAGGED: {flag}" if flag else ""),
        )

    def _master_job(self, plan: GroupPlan, current: list[dict]) -> tuple[MasterJob | None, str]:
        """The whole job of a ready group, or None and why it waits."""
        c = self.config.masters
        ref = plan.eligible[-1]
        chosen = masters_for_group(plan.kind, ref, current, c, biases_coming=lambda: self._biases_coming(ref))
        if chosen.wait:
            return None, chosen.wait
        version = self.catalog.next_master_version(plan.group_key)
        night = max((r["night"] for r in plan.eligible if r["night"]), default=None)
        header = {
            "INSTRUME": ref["instrument"],
            "FILTER": ref["filter"] if plan.kind == "flat" else None,
            "XBINNING": ref["xbin"],
            "YBINNING": ref["ybin"],
            "GAIN": ref["gain_setting"],
            "OFFSET": ref["offset"],
            "READOUTM": ref["readout_mode"],
        }
        output = master_path(self.config.paths.output, night, plan.kind, plan.group_key, version)
        return dataclasses.replace(
            self._frames_job(plan),
            version=version,
            output=str(output),
            header=header,
            bias=MasterFile.from_row(chosen.bias),
            dark=MasterFile.from_row(chosen.dark),
            includes_bias=chosen.includes_bias,
            bayer=ref["bayer"],
        ), ""

    def _biases_coming(self, ref: dict) -> bool:
        """Enough bias frames of `ref`'s setup are catalogued for a master bias not built yet."""
        c = self.config.masters
        pending = [
            f
            for f in self.catalog.files(types=("bias",))
            if f["state"] == "classified" and compatible_setup(f, ref, c.ignore_keys)
        ]
        return len(pending) >= c.min_bias

    def _frames_job(self, plan: GroupPlan) -> MasterJob:
        """A master job with the group's frames and settings only: enough to combine darks and
        biases (`combine_master`); `_master_job` completes it."""
        settings = MasterSettings.for_kind(plan.kind, self.config.masters, worker_count(self.config))
        frames = tuple(
            FrameRef(
                r["id"],
                r["path"],
                r["hdu_index"] or 0,
                r["exptime"],
                r["ccd_temp"],
                r["saturation"],
                r["date_obs"],
                r["biassec"],
            )
            for r in plan.eligible
        )
        return MasterJob(plan.kind, plan.group_key, 0, frames, "", settings)


def master_record(plan: GroupPlan, job: MasterJob, used: list[dict], result, flag: str | None) -> dict:
    """The catalog row of a new master: its group's setup and its inputs' temperatures and times."""
    ref = used[-1]
    temps = [r["ccd_temp"] for r in used if r["ccd_temp"] is not None]
    times = sorted(r["date_obs"] for r in used if r["date_obs"])
    exps = sorted(r["exptime"] for r in used if r["exptime"] is not None)
    return {
        "type": plan.kind,
        "group_key": plan.group_key,
        "path": result.path,
        "night": max((r["night"] for r in used if r["night"]), default=None),
        "n_frames": len(used),
        "ccd_temp_mean": sum(temps) / len(temps) if temps else None,
        "ccd_temp_min": min(temps) if temps else None,
        "ccd_temp_max": max(temps) if temps else None,
        "exptime": exps[len(exps) // 2] if exps else None,
        "filter": ref["filter"] if plan.kind == "flat" else None,
        "instrument": ref["instrument"],
        "xbin": ref["xbin"],
        "ybin": ref["ybin"],
        "naxis1": ref["naxis1"],
        "naxis2": ref["naxis2"],
        "gain_setting": ref["gain_setting"],
        "offset": ref["offset"],
        "readout_mode": ref["readout_mode"],
        "includes_bias": int(job.includes_bias),
        "date_obs": times[len(times) // 2] if times else None,
        "subtracted": json.dumps(subtracted(job.bias, job.dark)),
        "median": result.median,
        "n_bad_pixels": result.n_bad_pixels,
        "flag": flag,
        "bayer": ref["bayer"],
    }


def subtracted(bias: MasterFile | None, dark: MasterFile | None) -> dict:
    """What a master subtracts, by id (None: nothing), as `masters.subtracted` records it."""
    return {"bias": None if bias is None else bias.id, "dark": None if dark is None else dark.id}
