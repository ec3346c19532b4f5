"""The reducer's light half: calibrate, measure and align lights, and record every outcome.

One pass sends the ready lights to be calibrated (and aligned in the same job when their
target's reference is known) and the calibrated ones to be aligned, through the pool
together: the alignments of a target's first frames then fill the workers beside the other
lights instead of running alone. Lights whose masters do not exist yet wait, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from observd.adapters.catalog import dumps
from observd.adapters.fits_files import image_shape
from observd.core.frames import MasterFile
from observd.core.layout import light_paths
from observd.core.master_choice import Selection, select_masters
from observd.core.measure import judge
from observd.core.references import best_stars, choose_reference, held_for_reference, measurement, target_key
from observd.jobs.light_job import (
    AlignJob,
    AlignResult,
    LightJob,
    LightResult,
    Reference,
    align_calibrated,
    reduce_light,
)
from observd.jobs.pool import worker_count
from observd.pipeline.dispatch import Failure, Stage, run_jobs

Progress = Callable[[int, int, str], None]


class LightStage(Stage):
    """Builds, runs and records light jobs; `step()` is one pass."""

    def step(self, *, final: bool, progress: Progress | None = None) -> int:
        """One pass over the catalog's lights; returns the number of jobs run."""
        rows = self.catalog.files(types=("light",))
        references = self._references(rows)
        align_jobs = self._align_jobs(rows, references, final)  # may choose new references
        tasks = [(reduce_light, job) for job in self._light_jobs(rows, references, final)]
        tasks += [(align_calibrated, job) for job in align_jobs]
        outcomes = run_jobs(
            self.pool, tasks, window=self.config.daemon.queue_size, should_stop=self.context.should_stop
        )
        for n, (job, outcome) in enumerate(outcomes, start=1):
            if isinstance(job, LightJob):
                self._record_light(job, outcome)
                label = f"calibrated {Path(job.path).name}"
            else:
                self._record_alignment(job, outcome)
                label = f"aligned {Path(job.calibrated_path).name}"
            if progress:
                progress(n, len(tasks), label)
        return len(tasks)

    # -- calibration ------------------------------------------------------------------------------

    def _light_jobs(self, rows: list[dict], references: dict[tuple, Reference], final: bool) -> list[LightJob]:
        lights = [r for r in rows if r["state"] in ("classified", "waiting")]
        if not lights:
            return []
        masters = self.catalog.masters(current_only=True)
        best = best_stars(rows)
        ready = []
        for row in lights:
            selection = select_masters(row, masters, self.config.masters, self.config.calibrate)
            if selection.missing:
                reason = f"waiting: {selection.missing}"
                if row["state"] != "waiting" or row["reason"] != reason:
                    self.catalog.update_file(row["id"], state="waiting", reason=reason)
                    self.events.emit("info", "waiting", reason, row["path"])
                continue
            ready.append((row, selection))
        held = held_for_reference(
            [row for row, _ in ready],
            rows,
            references,
            final=final,
            min_frames=self.config.align.reference_min_frames,
            pool_workers=worker_count(self.config) if self.pool is not None else 0,
            fixed=bool(self.config.align.reference),
        )
        return [
            self._light_job(row, selection, best.get(target_key(row), 0), references.get(target_key(row)))
            for row, selection in ready
            if row["id"] not in held
        ]

    def _light_job(self, row: dict, selection: Selection, best_n: int, reference: Reference | None) -> LightJob:
        cc, mc, ac = self.config.calibrate, self.config.measure, self.config.align
        paths = light_paths(self.config.paths.output, row)
        gain = cc.gain or row["egain"]
        read_noise = cc.read_noise if cc.read_noise is not None else row["rdnoise"]
        return LightJob(
            file_id=row["id"],
            path=row["path"],
            hdu=row["hdu_index"] or 0,
            calibrated_path=str(paths.calibrated),
            aligned_path=str(paths.aligned),
            bias=MasterFile.from_row(selection.bias),
            dark=MasterFile.from_row(selection.dark),
            flat=MasterFile.from_row(selection.flat),
            dark_scale=selection.dark_scale,
            gain=gain,
            read_noise=read_noise if gain else None,
            saturation=row["saturation"],
            biassec=row["biassec"],
            trimsec=row["trimsec"],
            threshold=mc.threshold,
            min_star_fraction=mc.min_star_fraction,
            max_elongation=mc.max_elongation,
            best_n_stars=best_n,
            reference=reference,
            max_control_points=ac.max_control_points,
            min_matches=ac.min_matches,
            notes=selection.notes,
        )

    def _record_light(self, job: LightJob, outcome) -> None:
        if isinstance(outcome, Failure):
            self.fail(job.file_id, job.path, outcome.message, outcome.tb)
            return
        result: LightResult = outcome
        m = result.measurement
        fields = {
            "calibrated_path": result.calibrated_path,
            "background": m.background,
            "noise": m.noise,
            "n_stars": m.n_stars,
            "fwhm": m.fwhm,
            "elongation": m.elongation,
            "n_saturated": m.n_saturated,
            "stars": dumps(result.stars),
            "bias_id": job.bias.id if job.bias else None,
            "dark_id": job.dark.id if job.dark else None,
            "flat_id": job.flat.id if job.flat else None,
            "dark_scale": job.dark_scale,
            "calibration_note": "; ".join(job.notes) or None,
        }
        if result.bad_reason:
            fields.update(state="bad", reason=result.bad_reason)
            self.events.emit("warning", "bad", f"judged bad: {result.bad_reason}", job.path)
        else:
            fields.update(state="calibrated", reason=None)
            if result.aligned is not None:
                fields.update(_align_fields(result.aligned, job.reference))
        for note in job.notes:
            if note.startswith("WARNING"):
                self.events.emit("warning", "calibration", note, job.path)
        self.catalog.update_file(job.file_id, **fields)
        if result.aligned is not None and result.aligned.error:
            self.events.emit("warning", "unaligned", f"cannot align: {result.aligned.error}", job.path)

    # -- alignment --------------------------------------------------------------------------------

    def _references(self, rows: list[dict]) -> dict[tuple, Reference]:
        """The reference already chosen for each target, from the light rows."""
        refs = {}
        for row in rows:
            if row["reference_id"] and target_key(row) not in refs:
                ref_row = self.catalog.file(row["reference_id"])
                if ref_row and ref_row["stars"] and ref_row["calibrated_path"]:
                    refs[target_key(row)] = _reference(ref_row)
        return refs

    def _align_jobs(self, rows: list[dict], references: dict[tuple, Reference], final: bool) -> list[AlignJob]:
        """Alignment jobs for calibrated lights not judged bad (judging them now against their
        target's best frame); a target without a reference gets one chosen here, added to
        `references`."""
        by_target: dict[tuple, list[dict]] = {}
        for row in rows:
            if row["n_stars"] is not None:
                by_target.setdefault(target_key(row), []).append(row)
        best = best_stars(rows)
        jobs = []
        for key, group in by_target.items():
            pending = [row for row in group if row["state"] == "calibrated" and not self._judged_bad(row, best[key])]
            if not pending:
                continue
            ref = references.get(key)
            if ref is None:
                chosen = choose_reference(
                    pending,
                    final=final,
                    fixed=self.config.align.reference,
                    min_frames=self.config.align.reference_min_frames,
                )
                if chosen is None:
                    continue
                ref = references[key] = _reference(chosen)
                self.events.emit(
                    "info",
                    "reference",
                    f"reference for {key[1]} on {key[0]}: {chosen['name']} "
                    f"({chosen['n_stars']} stars, FWHM {chosen['fwhm'] or 0:.2f} px)",
                    chosen["path"],
                )
            for row in pending:
                jobs.append(
                    AlignJob(
                        row["id"],
                        row["calibrated_path"],
                        str(light_paths(self.config.paths.output, row).aligned),
                        tuple(tuple(s) for s in json.loads(row["stars"])),
                        ref,
                        self.config.align.max_control_points,
                        self.config.align.min_matches,
                    )
                )
        return jobs

    def _judged_bad(self, row: dict, best_n: int) -> bool:
        """Judge a calibrated light against its target's best frame; record and say it when bad."""
        mc = self.config.measure
        bad = judge(measurement(row), best_n, min_star_fraction=mc.min_star_fraction, max_elongation=mc.max_elongation)
        if bad:
            self.catalog.update_file(row["id"], state="bad", reason=bad)
            self.events.emit("warning", "bad", f"judged bad: {bad}", row["path"])
        return bool(bad)

    def _record_alignment(self, job: AlignJob, outcome) -> None:
        if isinstance(outcome, Failure):
            self.fail(job.file_id, job.calibrated_path, outcome.message, outcome.tb)
            return
        self.catalog.update_file(job.file_id, **_align_fields(outcome, job.reference))
        if outcome.error:
            self.events.emit(
                "warning", "unaligned", f"cannot align: {outcome.error}", self.catalog.file(job.file_id)["path"]
            )


def _align_fields(result: AlignResult, reference: Reference) -> dict:
    if result.error:
        return {"state": "unaligned", "reason": result.error, "reference_id": reference.file_id}
    return {
        "state": "aligned",
        "reason": None,
        "reference_id": reference.file_id,
        "transform": dumps(result.matrix),
        "align_rms": result.rms,
        "n_matches": result.n_matches,
        "aligned_path": result.aligned_path,
    }


def _reference(row: dict) -> Reference:
    """A reference's star list (from its catalog row) and its calibrated frame's shape."""
    stars = json.loads(row["stars"])
    x, y, flux = (tuple(c) for c in zip(*stars)) if stars else ((), (), ())
    return Reference(row["id"], row["name"], image_shape(Path(row["calibrated_path"])), x, y, flux)
