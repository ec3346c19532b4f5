"""Advancing the night's reduction: the one loop shared by `observd ingest` and the daemon.

`Reducer.advance()` looks at the catalog, decides what can be done now (pure planners in
`masters_plan` and `select`), runs the work (`masters.build_master`, `lights.reduce_light`,
`lights.align_calibrated`, in a worker pool when one is given) and records every outcome,
repeating until nothing more can move: biases, then darks and flats that need them, then
lights whose masters now exist, then alignment. A failure of one frame is recorded with
its traceback and never stops the others.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

from astropy.io import fits

from observd.adapters.catalog import Catalog, dumps
from observd.core.config import Config
from observd.jobs.light_job import AlignJob, AlignResult, LightJob, LightResult, MasterUse, Reference, align_calibrated, \
    reduce_light
from observd.jobs.master_job import FrameRef, MasterJob, MasterRef, MasterSettings, build_master, change_flag, combine_master, \
    finish_master
from observd.core.master_plan import CALIBRATION_TYPES, GroupPlan, min_frames, plan_masters
from observd.core.measure import Measurement, judge
from observd.jobs.pool import warm_up, worker_count
from observd.core.master_choice import compatible_setup, hours_apart, select_masters

log = logging.getLogger("observd.pipeline.reducer")

Progress = Callable[[int, int, str], None]


def slug(text: str | None, default: str) -> str:
    """A safe path component for an object or filter name."""
    cleaned = re.sub(r"[^A-Za-z0-9+\-.]+", "_", (text or "").strip()).strip("_.")
    return cleaned or default


class Reducer:
    """Moves catalogued frames through masters, calibration and alignment."""

    def __init__(self, config: Config, catalog: Catalog, *, pool: Executor | None = None,
                 clock: Callable[[], float] = time.time, on_event: Callable[[str, str, str | None], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False):
        self.config = config
        self.catalog = catalog
        self.pool = pool
        self.clock = clock
        self.on_event = on_event or (lambda level, message, path: None)
        self.should_stop = should_stop
        self._warmed = False

    def warm_up(self) -> None:
        """Start the pool's workers now, in the background (a no-op without a pool or once started)."""
        if self.pool is not None and not self._warmed:
            self._warmed = True
            warm_up(self.pool, worker_count(self.config))

    def _event(self, level: str, event: str, message: str, path: str | None = None) -> None:
        self.catalog.event(level, event, message, path)
        self.on_event(level, message, path)
        getattr(log, "warning" if level == "warning" else "error" if level == "error" else "info")(
            "%s%s", f"{Path(path).name}: " if path else "", message)

    def advance(self, *, final: bool, progress: Progress | None = None) -> int:
        """Do everything that can be done now; returns the number of actions taken."""
        total = 0
        while True:
            done = self.masters_step(final=final)
            done += self.lights_step(final=final, progress=progress)
            total += done
            if done == 0 or self.should_stop():
                return total

    def _map(self, tasks: list[tuple[Callable, object]]) -> Iterable:
        """(job, result) pairs of (function, job) tasks; in the pool, at most `daemon.queue_size`
        jobs are in flight at once, and no new job starts once `should_stop()` is true (in-flight
        jobs finish)."""
        if self.pool is None or len(tasks) < 2:
            for func, job in tasks:
                if self.should_stop():
                    return
                yield job, _call(func, job)
            return
        window = max(1, self.config.daemon.queue_size)
        pending = iter(tasks)
        in_flight: dict = {}
        while True:
            while len(in_flight) < window and not self.should_stop():
                task = next(pending, None)
                if task is None:
                    break
                in_flight[self.pool.submit(_call, *task)] = task[1]
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                job = in_flight.pop(future)
                try:
                    outcome = future.result()
                except BrokenExecutor as exc:
                    # the job counts as an attempt, so a frame that kills its worker every time
                    # ends up failed; the next submit raises and the daemon replaces the pool
                    outcome = _Failure(WorkerDied(f"the worker process reducing it died ({exc}): "
                                                  "out of memory, or a crash in a library"))
                yield job, outcome

    def _fail(self, file_id: int, path: str, error: BaseException | str, tb: str = "") -> None:
        row = self.catalog.file(file_id) or {}
        attempts = (row.get("attempts") or 0) + 1
        backoff = self.config.daemon.retry_backoff * 2 ** (attempts - 1)
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.catalog.update_file(file_id, state="failed", reason=f"processing failed: {reason}", traceback=tb,
                                 attempts=attempts, next_attempt=self.clock() + backoff)
        self._event("error", "failed", f"processing failed (attempt {attempts}): {reason}", path)

    def retry_failed(self) -> int:
        """Failed frames whose back-off has expired go back to 'classified' (up to max_retries attempts)."""
        n = 0
        for row in self.catalog.files(state="failed"):
            if (row["attempts"] or 0) < self.config.daemon.max_retries and (row["next_attempt"] or 0) <= self.clock():
                self.catalog.update_file(row["id"], state="classified", reason=None)
                n += 1
        return n

    # -- masters ------------------------------------------------------------------------------

    def rebuild_masters(self) -> int:
        """`observd masters --rebuild`: a new version of every group's master, then what follows from it."""
        return self.masters_step(final=True, force=True) + self.advance(final=True)

    def masters_step(self, *, final: bool, force: bool = False) -> int:
        """Build the masters whose groups are ready: biases first, since darks and flats subtract
        them. A ready dark group is combined in the background meanwhile: its bias is only
        subtracted from the result (`masters` module docstring), so the two combinations share
        the pool instead of waiting for each other's checks and writes."""
        built = 0
        early: dict[str, tuple[tuple, Future]] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="darks") as background:
            for kind in CALIBRATION_TYPES:
                frames = self.catalog.files(types=CALIBRATION_TYPES)
                masters = self.catalog.masters()
                inputs = {m["id"]: set(self.catalog.master_input_ids(m["id"])) for m in masters if m["current"]}
                plan = partial(plan_masters, frames, masters, inputs, self.config, now=self.clock(), final=final,
                               force=force)
                if kind == "bias":
                    for dark in plan(kinds=("dark",)):
                        if dark.ready:
                            job = self._frames_job(dark)
                            early[dark.group_key] = (job.frames, background.submit(combine_master, job, self.pool))
                for group in plan(kinds=(kind,)):
                    self._record_eligibility(group)
                    if group.ready:
                        built += self._build(group, masters, early.pop(group.group_key, None))
        return built

    def _record_eligibility(self, plan: GroupPlan) -> None:
        for file_id, reason in plan.excluded.items():
            row = self.catalog.file(file_id)
            if row["state"] != "excluded" or row["reason"] != reason:
                self.catalog.update_file(file_id, state="excluded", reason=reason)
        for row in plan.eligible:
            if row["state"] == "excluded":     # back within tolerance of a moved group median
                self.catalog.update_file(row["id"], state="classified", reason=None)

    def _build(self, plan: GroupPlan, masters: list[dict], early: tuple[tuple, Future] | None = None) -> int:
        """Build one master (from `early`, the frames and combination started in the background,
        when the job has the same frames) and record it."""
        job, wait = self._master_job(plan, masters)
        if job is None:
            log.debug("%s: %s", plan.group_key, wait)
            return 0
        try:
            if early is not None and early[0] == job.frames:
                result = finish_master(job, early[1].result())
            else:
                result = build_master(job, executor=self.pool)
        except Exception as exc:
            tb = traceback.format_exc()
            for frame in job.frames:
                self._fail(frame.id, frame.path, exc, tb)
            return 1
        for file_id, reason in result.excluded.items():
            self.catalog.update_file(file_id, state="excluded", reason=reason)
        if result.path is None:
            self._event("warning", "master-skipped", f"no master {plan.kind} for {plan.group_key}: {result.message}")
            return 1
        previous = next((m for m in masters if m["group_key"] == plan.group_key and m["current"]), None)
        flag = None
        if previous and Path(previous["path"]).exists():
            flag = change_flag(Path(result.path), Path(previous["path"]), sigma=self.config.masters.change_sigma,
                               fraction=self.config.masters.change_fraction)
        used = [r for r in plan.eligible if r["id"] in set(result.used)]
        master_id = self.catalog.add_master(self._master_record(plan, job, used, result, flag), result.used)
        for row in used:
            self.catalog.update_file(row["id"], state="combined", reason=None)
        temps = [r["ccd_temp"] for r in used if r["ccd_temp"] is not None]
        self._event("warning" if flag else "info", "master",
                    f"master {plan.kind} v{job.version} (id {master_id}) from {len(used)} frames"
                    + (f", CCD-TEMP {min(temps):+.1f}..{max(temps):+.1f} °C" if temps else "")
                    + f": {result.path}" + (f" — FLAGGED: {flag}" if flag else ""))
        return 1

    def _master_job(self, plan: GroupPlan, masters: list[dict]) -> tuple[MasterJob | None, str]:
        c = self.config.masters
        rows = list(plan.eligible)
        ref = rows[-1]
        bias = dark = None
        includes_bias = False
        if plan.kind in ("dark", "flat"):
            bias = _nearest(ref, [m for m in masters if m["type"] == "bias" and m["current"]], c.ignore_keys)
            if plan.kind == "dark" and c.dark_includes_bias:
                bias, includes_bias = None, True
            elif bias is None:
                pending = [f for f in self.catalog.files(types=("bias",)) if f["state"] == "classified"
                           and compatible_setup(f, ref, c.ignore_keys)]
                if len(pending) >= c.min_bias:    # a master bias is about to be built: wait for it
                    return None, "waiting for the master bias to be built"
                if plan.kind == "dark":
                    includes_bias = True      # no biases at all: a dark that includes the bias
        if plan.kind == "flat":
            darks = [m for m in masters if m["type"] == "dark" and m["current"]
                     and compatible_setup(m, ref, c.ignore_keys)]
            exact = [m for m in darks if m["includes_bias"] and m["exptime"] == ref["exptime"]]
            scalable = [m for m in darks if not m["includes_bias"]]
            dark = exact[0] if exact else (max(scalable, key=lambda m: m["exptime"] or 0) if scalable else None)
            if dark is not None and dark["includes_bias"]:
                bias = None
            elif bias is None:
                return None, "flats wait for a master bias (or a dark-flat of their exposure)"
        version = self.catalog.next_master_version(plan.group_key)
        night = max((r["night"] for r in rows if r["night"]), default="undated")
        output = (self.config.paths.output / night / "masters" /
                  f"{plan.kind}_{slug(plan.group_key.split('|', 1)[1], 'group')}_v{version}.fits")
        header = {"INSTRUME": ref["instrument"], "FILTER": ref["filter"] if plan.kind == "flat" else None,
                  "XBINNING": ref["xbin"], "YBINNING": ref["ybin"], "GAIN": ref["gain_setting"],
                  "OFFSET": ref["offset"], "READOUTM": ref["readout_mode"]}
        return dataclasses.replace(self._frames_job(plan), version=version, output=str(output), header=header,
                                   bias=_master_ref(bias), dark=_master_ref(dark), includes_bias=includes_bias), ""

    def _frames_job(self, plan: GroupPlan) -> MasterJob:
        """A master job with the group's frames and settings only: enough to combine darks and
        biases (`combine_master`); `_master_job` completes it."""
        c = self.config.masters
        method = c.flat_method if plan.kind == "flat" else c.method
        settings = MasterSettings(method=method, rejection=c.rejection, sigma=c.sigma,
                                  memory_limit=c.memory_limit_mb << 20, saturation_fraction=c.saturation_fraction,
                                  flat_min_level=c.flat_min_level, flat_max_level=c.flat_max_level,
                                  hot_pixel_sigma=c.hot_pixel_sigma, weak_pixel_level=c.weak_pixel_level,
                                  min_frames=min_frames(plan.kind, self.config), workers=worker_count(self.config))
        frames = tuple(FrameRef(r["id"], r["path"], r["hdu_index"] or 0, r["exptime"], r["ccd_temp"],
                                r["saturation"], r["date_obs"], r["biassec"]) for r in plan.eligible)
        return MasterJob(plan.kind, plan.group_key, 0, frames, "", settings)

    def _master_record(self, plan: GroupPlan, job: MasterJob, used: list[dict], result, flag: str | None) -> dict:
        ref = used[-1]
        temps = [r["ccd_temp"] for r in used if r["ccd_temp"] is not None]
        times = sorted(r["date_obs"] for r in used if r["date_obs"])
        exps = sorted(r["exptime"] for r in used if r["exptime"] is not None)
        return {
            "type": plan.kind, "group_key": plan.group_key, "path": result.path,
            "night": max((r["night"] for r in used if r["night"]), default=None), "n_frames": len(used),
            "ccd_temp_mean": sum(temps) / len(temps) if temps else None,
            "ccd_temp_min": min(temps) if temps else None, "ccd_temp_max": max(temps) if temps else None,
            "exptime": exps[len(exps) // 2] if exps else None,
            "filter": ref["filter"] if plan.kind == "flat" else None, "instrument": ref["instrument"],
            "xbin": ref["xbin"], "ybin": ref["ybin"], "naxis1": ref["naxis1"], "naxis2": ref["naxis2"],
            "gain_setting": ref["gain_setting"], "offset": ref["offset"], "readout_mode": ref["readout_mode"],
            "includes_bias": int(job.includes_bias), "date_obs": times[len(times) // 2] if times else None,
            "median": result.median, "n_bad_pixels": result.n_bad_pixels, "flag": flag,
        }

    # -- lights: calibrate, measure and align -------------------------------------------------------

    def lights_step(self, *, final: bool, progress: Progress | None = None) -> int:
        """Calibrate (and align, when their target's reference is known) the ready lights, and
        align calibrated ones, in one pass through the pool: the alignments of a target's
        first frames then fill the workers beside the other lights instead of running alone."""
        rows = self.catalog.files(types=("light",))
        references = self._references(rows)
        align_jobs = self._align_jobs(rows, references, final)     # may choose new references
        tasks = [(reduce_light, job) for job in self._light_jobs(rows, references, final)]
        tasks += [(align_calibrated, job) for job in align_jobs]
        for n, (job, outcome) in enumerate(self._map(tasks), start=1):
            if isinstance(job, LightJob):
                self._record_light(job, outcome)
                label = f"calibrated {Path(job.path).name}"
            else:
                self._record_alignment(job, outcome)
                label = f"aligned {Path(job.calibrated_path).name}"
            if progress:
                progress(n, len(tasks), label)
        return len(tasks)

    def _light_jobs(self, rows: list[dict], references: dict[tuple, Reference], final: bool) -> list[LightJob]:
        lights = [r for r in rows if r["state"] in ("classified", "waiting")]
        if not lights:
            return []
        masters = self.catalog.masters(current_only=True)
        best = _best_stars(rows)
        ready = []
        for row in lights:
            sel = select_masters(row, masters, self.config.masters, self.config.calibrate)
            if sel.missing:
                reason = f"waiting: {sel.missing}"
                if row["state"] != "waiting" or row["reason"] != reason:
                    self.catalog.update_file(row["id"], state="waiting", reason=reason)
                    self._event("info", "waiting", reason, row["path"])
                continue
            ready.append((row, sel))
        held = self._held_for_reference([row for row, _ in ready], rows, references, final)
        return [self._light_job(row, sel, best.get((row["night"], row["object"]), 0),
                                references.get((row["night"], row["object"])))
                for row, sel in ready if row["id"] not in held]

    def _held_for_reference(self, ready: list[dict], rows: list[dict], references: dict[tuple, Reference],
                            final: bool) -> set[int]:
        """Ids of ready lights that wait in 'classified' until their target's reference is chosen.

        The automatic reference is the best of `reference_min_frames` good frames of the
        target: in the daemon its first ones (it cannot wait for the night), in a batch
        (`final`) frames spread evenly over the target's sequence, so that a cloudy start does
        not make a poor reference. A batch takes more candidates when that fills the pool's
        last round (3 candidates on 2 workers: 4): a worker would otherwise idle through it.
        The other lights wait for the reference, then are aligned in the job that calibrates
        them instead of being read back for a second pass: in a batch, most of them. A fixed
        reference (`[align] reference`) holds nothing back: it may come last.
        """
        if self.config.align.reference:
            return set()
        first = max(1, self.config.align.reference_min_frames)
        started: dict[tuple, int] = defaultdict(int)
        for row in rows:
            if row["state"] in ("calibrated", "aligned"):
                started[(row["night"], row["object"])] += 1
        candidates: dict[tuple, list[dict]] = defaultdict(list)
        for row in ready:
            if (key := (row["night"], row["object"])) not in references:
                candidates[key].append(row)
        wanted = {key: min(max(first - started[key], 0), len(group)) for key, group in candidates.items()}
        if final and self.pool is not None:
            spare = -sum(wanted.values()) % worker_count(self.config)
            for key in sorted(candidates, key=lambda k: len(candidates[k]) - wanted[k], reverse=True):
                extra = min(spare, len(candidates[key]) - wanted[key])
                if wanted[key] and extra:
                    wanted[key] += extra
                    spare -= extra
        held = set()
        for key, group in candidates.items():
            n = wanted[key]
            if final:
                group = sorted(group, key=lambda r: (r["date_obs"] or "", r["path"]))
                chosen = {round(i * (len(group) - 1) / (n - 1)) for i in range(n)} if n > 1 else set(range(n))
            else:
                chosen = set(range(n))
            held |= {r["id"] for i, r in enumerate(group) if i not in chosen}
        return held

    def _light_job(self, row: dict, sel, best_n: int, reference: Reference | None) -> LightJob:
        cc, mc = self.config.calibrate, self.config.measure
        night, obj, filt = row["night"] or "undated", slug(row["object"], "unknown"), slug(row["filter"], "nofilter")
        stem = fits_stem(row["name"]) + (f"_v{row['version']}" if row["version"] > 1 else "")
        out = self.config.paths.output / night
        gain = cc.gain or row["egain"]
        read_noise = cc.read_noise if cc.read_noise is not None else row["rdnoise"]
        return LightJob(
            file_id=row["id"], path=row["path"], hdu=row["hdu_index"] or 0,
            calibrated_path=str(out / "calibrated" / obj / filt / f"{stem}.fits"),
            aligned_path=str(out / "aligned" / obj / filt / f"{stem}.fits"),
            bias=_use(sel.bias), dark=_use(sel.dark), flat=_use(sel.flat), dark_scale=sel.dark_scale,
            gain=gain, read_noise=read_noise if gain else None, saturation=row["saturation"],
            biassec=row["biassec"], trimsec=row["trimsec"], threshold=mc.threshold,
            min_star_fraction=mc.min_star_fraction, max_elongation=mc.max_elongation, best_n_stars=best_n,
            reference=reference, max_control_points=self.config.align.max_control_points,
            min_matches=self.config.align.min_matches, notes=sel.notes)

    def _record_light(self, job: LightJob, outcome) -> None:
        if isinstance(outcome, _Failure):
            self._fail(job.file_id, job.path, outcome.message, outcome.tb)
            return
        result: LightResult = outcome
        m = result.measurement
        fields = {"calibrated_path": result.calibrated_path, "background": m.background, "noise": m.noise,
                  "n_stars": m.n_stars, "fwhm": m.fwhm, "elongation": m.elongation, "n_saturated": m.n_saturated,
                  "stars": dumps(result.stars), "bias_id": job.bias.id if job.bias else None,
                  "dark_id": job.dark.id if job.dark else None, "flat_id": job.flat.id if job.flat else None,
                  "dark_scale": job.dark_scale, "calibration_note": "; ".join(job.notes) or None}
        if result.bad_reason:
            fields.update(state="bad", reason=result.bad_reason)
            self._event("warning", "bad", f"judged bad: {result.bad_reason}", job.path)
        else:
            fields.update(state="calibrated", reason=None)
            if result.aligned is not None:
                fields.update(self._align_fields(result.aligned, job.reference))
        for note in job.notes:
            if note.startswith("WARNING"):
                self._event("warning", "calibration", note, job.path)
        self.catalog.update_file(job.file_id, **fields)
        if result.aligned is not None and result.aligned.error:
            self._event("warning", "unaligned", f"cannot align: {result.aligned.error}", job.path)

    # -- alignment ------------------------------------------------------------------------------

    def _references(self, rows: list[dict]) -> dict[tuple, Reference]:
        """The reference already chosen for each (night, object), from the light rows."""
        refs = {}
        for row in rows:
            if row["reference_id"] and (row["night"], row["object"]) not in refs:
                ref_row = self.catalog.file(row["reference_id"])
                if ref_row and ref_row["stars"] and ref_row["calibrated_path"]:
                    refs[(row["night"], row["object"])] = _reference(ref_row)
        return refs

    def _choose_reference(self, rows: list[dict], final: bool) -> dict | None:
        fixed = self.config.align.reference
        good = [r for r in rows if r["state"] in ("calibrated", "aligned")]
        if fixed:
            return next((r for r in good if r["name"] == fixed), None)
        if not good or (not final and len(good) < self.config.align.reference_min_frames):
            return None
        return max(good, key=lambda r: (r["n_stars"] or 0, -(r["fwhm"] or 99.0)))

    def _align_jobs(self, rows: list[dict], references: dict[tuple, Reference], final: bool) -> list[AlignJob]:
        """Alignment jobs for calibrated lights not judged bad (judging them now against their
        target's best frame); a target without a reference gets one chosen here, added to
        `references`."""
        by_target: dict[tuple, list[dict]] = defaultdict(list)
        for row in rows:
            if row["n_stars"] is not None:
                by_target[(row["night"], row["object"])].append(row)
        mc = self.config.measure
        best = _best_stars(rows)
        jobs = []
        for key, group in by_target.items():
            pending = []
            for row in group:
                if row["state"] != "calibrated":
                    continue
                bad = judge(_measurement(row), best[key], min_star_fraction=mc.min_star_fraction,
                            max_elongation=mc.max_elongation)
                if bad:
                    self.catalog.update_file(row["id"], state="bad", reason=bad)
                    self._event("warning", "bad", f"judged bad: {bad}", row["path"])
                else:
                    pending.append(row)
            if not pending:
                continue
            ref = references.get(key)
            if ref is None:
                chosen = self._choose_reference(pending, final)
                if chosen is None:
                    continue
                ref = references[key] = _reference(chosen)
                self._event("info", "reference", f"reference for {key[1]} on {key[0]}: {chosen['name']} "
                            f"({chosen['n_stars']} stars, FWHM {chosen['fwhm'] or 0:.2f} px)", chosen["path"])
            for row in pending:
                jobs.append(AlignJob(row["id"], row["calibrated_path"], _aligned_path(row["calibrated_path"]),
                                     tuple(tuple(s) for s in json.loads(row["stars"])), ref,
                                     self.config.align.max_control_points, self.config.align.min_matches))
        return jobs

    def _record_alignment(self, job: AlignJob, outcome) -> None:
        if isinstance(outcome, _Failure):
            self._fail(job.file_id, job.calibrated_path, outcome.message, outcome.tb)
            return
        self.catalog.update_file(job.file_id, **self._align_fields(outcome, job.reference))
        if outcome.error:
            self._event("warning", "unaligned", f"cannot align: {outcome.error}",
                        self.catalog.file(job.file_id)["path"])

    @staticmethod
    def _align_fields(result: AlignResult, reference: Reference) -> dict:
        if result.error:
            return {"state": "unaligned", "reason": result.error, "reference_id": reference.file_id}
        return {"state": "aligned", "reason": None, "reference_id": reference.file_id,
                "transform": dumps(result.matrix), "align_rms": result.rms, "n_matches": result.n_matches,
                "aligned_path": result.aligned_path}


class WorkerDied(Exception):
    """A worker process ended abruptly while running a job (killed by the OOM killer, a segfault)."""


class _Failure:
    """A job that raised: carried back from the worker instead of the exception, with its traceback."""

    def __init__(self, exc: BaseException):
        self.message = f"{type(exc).__name__}: {exc}"
        self.tb = traceback.format_exc()


def _call(func, job):
    try:
        return func(job)
    except Exception as exc:
        return _Failure(exc)


def fits_stem(name: str) -> str:
    """'M42.001.fits.gz' -> 'M42.001': only FITS and compression suffixes are removed."""
    return re.sub(r"(\.(fits|fit|fts))?(\.(gz|fz))?$", "", name, flags=re.IGNORECASE)


def _aligned_path(calibrated_path: str) -> str:
    parts = list(Path(calibrated_path).parts)
    index = len(parts) - 1 - parts[::-1].index("calibrated")
    parts[index] = "aligned"
    return str(Path(*parts))


def _nearest(row: dict, masters: list[dict], ignore: tuple[str, ...]) -> dict | None:
    compatible = [m for m in masters if compatible_setup(row, m, ignore)]
    return min(compatible, key=lambda m: hours_apart(row, m), default=None)


def _master_ref(row: dict | None) -> MasterRef | None:
    return None if row is None else MasterRef(row["id"], row["path"], row["exptime"], bool(row["includes_bias"]))


def _use(row: dict | None) -> MasterUse | None:
    return None if row is None else MasterUse(row["id"], row["path"], row["version"], row["type"])


def _best_stars(rows: list[dict]) -> dict[tuple, int]:
    """The most stars measured on any light of each (night, object): what 'clouds?' is judged against."""
    best: dict[tuple, int] = defaultdict(int)
    for row in rows:
        if row["n_stars"] is not None:
            key = (row["night"], row["object"])
            best[key] = max(best[key], row["n_stars"])
    return best


def _measurement(row: dict) -> Measurement:
    return Measurement(row["background"], row["noise"], row["n_stars"], row["fwhm"], row["elongation"],
                       row["n_saturated"] or 0)


def _reference(row: dict) -> Reference:
    stars = json.loads(row["stars"])
    header = fits.getheader(row["calibrated_path"])
    x, y, flux = (tuple(c) for c in zip(*stars)) if stars else ((), (), ())
    return Reference(row["id"], row["name"], (header["NAXIS2"], header["NAXIS1"]), x, y, flux)
