"""The reducer's light half: calibrate, measure and align lights, and record every outcome.

One pass sends the ready lights to be calibrated (and aligned in the same job when their
target's reference is known) and the calibrated ones to be aligned (`alignment_stage`), through
the pool together: the alignments of a target's first frames then fill the workers beside the
other lights instead of running alone. Lights whose masters do not exist yet wait, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from observd.adapters.catalog import dumps
from observd.core.frames import MasterFile
from observd.core.layout import light_paths
from observd.core.master_choice import Selection, select_masters
from observd.core.references import best_stars, held_for_reference, target_key
from observd.jobs.cluster import Cluster
from observd.jobs.light_job import (
    LightJob,
    LightResult,
    Reference,
    align_calibrated,
    footprint,
    reduce_light,
)
from observd.pipeline.alignment_stage import AlignmentStage, align_fields
from observd.pipeline.dispatch import Failure, Stage, run_jobs

Progress = Callable[[int, int, str], None]


class LightStage(Stage):
    """Builds, runs and records light jobs, the alignments among them; `step()` is one pass."""

    def __init__(self, context):
        super().__init__(context)
        self.alignment = AlignmentStage(context)

    def step(self, *, final: bool, progress: Progress | None = None) -> int:
        """One pass over the catalog's lights; returns the number of jobs run."""
        rows = self.catalog.files(types=("light",))
        references = self.alignment.references(rows)
        align_jobs = self.alignment.jobs(rows, references, final)  # may choose new references
        tasks = [(reduce_light, job) for job in self._light_jobs(rows, references, final)]
        tasks += [(align_calibrated, job) for job in align_jobs]
        outcomes = run_jobs(
            self.pool,
            tasks,
            window=self.config.daemon.queue_size,
            should_stop=self.context.should_stop,
            budget=self.budget,
            footprint=footprint,
        )
        for n, (job, outcome) in enumerate(outcomes, start=1):
            if isinstance(job, LightJob):
                self._record_light(job, outcome)
                label = f"calibrated {Path(job.path).name}"
            else:
                self.alignment.record(job, outcome)
                label = f"aligned {Path(job.calibrated_path).name}"
            if progress:
                progress(n, len(tasks), label)
        return len(tasks)

    def calibrate_again(self, night: str) -> set[tuple]:
        """The night's measured lights whose masters are not those they would get now, from the
        masters there are at the night's end (a master of their own night that came later — dawn
        flats —, a later version of a group), go back to 'classified' to be calibrated again.
        Which masters a light gets must not depend on when it arrived. Returns their targets."""
        masters = self.catalog.masters(current_only=True)
        targets = set()
        for row in self.catalog.files(night=night, types=("light",)):
            if row["state"] not in CALIBRATED_STATES:
                continue
            selection = select_masters(row, masters, self.config.masters, self.config.calibrate)
            if selection.missing or _masters_used(row) == _masters_chosen(selection):
                continue
            self.catalog.update_file(row["id"], state="classified", reason=None)
            self.events.tell("info", "calibrated again at the night's end with its night's final masters", row["path"])
            targets.add(target_key(row))
        return targets

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
            thumbnail_path=str(paths.thumbnail),
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
            bayer=row["bayer"],
            debayer=cc.debayer,
            planes_on_host=isinstance(self.pool, Cluster),
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
            "channel_stats": result.channels.to_json() if result.channels else None,
        }
        if result.bad_reason:
            fields.update(state="bad", reason=result.bad_reason)
            self.events.emit("warning", "bad", f"judged bad: {result.bad_reason}", job.path)
        else:
            fields.update(state="calibrated", reason=None)
            if result.aligned is not None:
                fields.update(align_fields(result.aligned, job.reference))
        for note in job.notes:
            if note.startswith("WARNING"):
                self.events.emit("warning", "calibration", note, job.path)
        self.catalog.update_file(job.file_id, **fields)
        if result.aligned is not None and result.aligned.error:
            self.events.emit("warning", "unaligned", f"cannot align: {result.aligned.error}", job.path)


CALIBRATED_STATES = ("calibrated", "aligned", "unaligned", "bad")


def _masters_used(row: dict) -> tuple:
    return (row["bias_id"], row["dark_id"], row["flat_id"], round(row["dark_scale"] or 1.0, 6))


def _masters_chosen(selection: Selection) -> tuple:
    ids = tuple(None if m is None else m["id"] for m in (selection.bias, selection.dark, selection.flat))
    return (*ids, round(selection.dark_scale or 1.0, 6))
