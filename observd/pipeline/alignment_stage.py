"""The reducer's alignment half: each night's targets get a reference frame, their lights are
aligned to it, and before the night is stacked its judgements are made final.

A target (night, object) is aligned to one of its own frames, whatever the filter. While the
night runs, the daemon takes its reference from the best of its first good frames, so lights are
aligned as they come; a batch measures every light first and takes the best of all. Two verdicts
depend on the whole night: whether a frame is clouded (fewer stars than a fraction of the night's
best frame) and which frame is the best. `finish_night` makes both final before the night's stacks
are built, whatever order the frames came in: frames are judged again against the night's best,
and a target whose reference is not its best frame is aligned again to that frame — so the daemon
and a batch over the same folder give the same products.
"""

from __future__ import annotations

import json
from pathlib import Path

from observd.adapters.catalog import dumps
from observd.adapters.fits_files import image_shape
from observd.core.config import Config
from observd.core.layout import light_paths
from observd.core.measure import judge
from observd.core.references import best_stars, choose_reference, measurement, target_key
from observd.jobs.light_job import AlignJob, AlignResult, Reference, align_calibrated, footprint
from observd.pipeline.dispatch import Failure, Stage, run_jobs

ALIGNABLE = ("calibrated", "aligned", "unaligned")  # measured, not judged bad


class AlignmentStage(Stage):
    """Chooses references, builds and records alignment jobs, finishes nights."""

    def references(self, rows: list[dict]) -> dict[tuple, Reference]:
        """The reference already chosen for each target, from its lights aligned to it (a light
        judged bad at the night's end keeps the id of the reference it had, which may be an older
        one)."""
        refs = {}
        for row in rows:
            if row["reference_id"] and row["state"] in ("aligned", "unaligned") and target_key(row) not in refs:
                ref_row = self.catalog.file(row["reference_id"])
                if ref_row and ref_row["stars"] and ref_row["calibrated_path"]:
                    refs[target_key(row)] = reference_of(ref_row)
        return refs

    def jobs(self, rows: list[dict], references: dict[tuple, Reference], final: bool) -> list[AlignJob]:
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
                ref = references[key] = reference_of(chosen)
                self.events.emit(
                    "info",
                    "reference",
                    f"reference for {key[1]} on {key[0]}: {chosen['name']} "
                    f"({chosen['n_stars']} stars, FWHM {chosen['fwhm'] or 0:.2f} px)",
                    chosen["path"],
                )
            jobs += [align_job(self.config, row, ref) for row in pending]
        return jobs

    def _judged_bad(self, row: dict, best_n: int) -> bool:
        """Judge a calibrated light against its target's best frame; record and say it when bad."""
        bad = self._verdict(row, best_n)
        if bad:
            self.catalog.update_file(row["id"], state="bad", reason=bad)
            self.events.emit("warning", "bad", f"judged bad: {bad}", row["path"])
        return bool(bad)

    def _verdict(self, row: dict, best_n: int) -> str | None:
        mc = self.config.measure
        return judge(measurement(row), best_n, min_star_fraction=mc.min_star_fraction, max_elongation=mc.max_elongation)

    def _judge_again(self, row: dict, best_n: int) -> None:
        """A measured light judged again against the night's best frame: the verdict, and its
        reason, become what they would have been had the whole night been there at once."""
        bad = self._verdict(row, best_n)
        if bad and (row["state"], row["reason"]) != ("bad", bad):
            self.catalog.update_file(row["id"], state="bad", reason=bad)
            self.events.emit("warning", "bad", f"judged again at the night's end: {bad}", row["path"])
        elif not bad and row["state"] == "bad":
            self.catalog.update_file(row["id"], state="calibrated", reason=None)
            self.events.emit("info", "bad", "judged again at the night's end: good after all", row["path"])

    def record(self, job: AlignJob, outcome) -> None:
        if isinstance(outcome, Failure):
            self.fail(job.file_id, job.calibrated_path, outcome.message, outcome.tb)
            return
        self.catalog.update_file(job.file_id, **align_fields(outcome, job.reference))
        if outcome.error:
            self.events.emit(
                "warning", "unaligned", f"cannot align: {outcome.error}", self.catalog.file(job.file_id)["path"]
            )

    def finish_night(self, night: str, realign: set[tuple] = frozenset()) -> int:
        """Make the night's verdicts and references final (module docstring); `realign`: targets
        whose lights are all aligned again (some were calibrated again: the reference's star list
        may have changed). Returns the number of lights aligned again."""
        rows = self.catalog.files(night=night, types=("light",))
        best = best_stars(rows)
        for row in rows:
            if row["state"] in (*ALIGNABLE, "bad") and row["n_stars"] is not None:
                self._judge_again(row, best[target_key(row)])
        by_target: dict[tuple, list[dict]] = {}
        for row in self.catalog.files(night=night, types=("light",)):
            if row["state"] in ALIGNABLE and row["n_stars"] is not None:
                by_target.setdefault(target_key(row), []).append(row)
        jobs = []
        for key, group in by_target.items():
            chosen = choose_reference(group, final=True, fixed=self.config.align.reference, states=ALIGNABLE)
            if chosen is None:
                continue
            stale = [
                r for r in group if key in realign or r["reference_id"] != chosen["id"] or r["state"] == "calibrated"
            ]
            if stale:
                ref = reference_of(chosen)
                self.events.emit(
                    "info",
                    "reference",
                    f"final reference for {key[1]} on {key[0]}: {chosen['name']}; "
                    f"{len(stale)} light(s) aligned again to it",
                    chosen["path"],
                )
                jobs += [align_job(self.config, row, ref) for row in stale]
        tasks = [(align_calibrated, job) for job in jobs]
        window = self.config.daemon.queue_size
        outcomes = run_jobs(
            self.pool,
            tasks,
            window=window,
            should_stop=self.context.should_stop,
            budget=self.budget,
            footprint=footprint,
        )
        for job, outcome in outcomes:
            self.record(job, outcome)
        return len(jobs)


def align_job(config: Config, row: dict, ref: Reference) -> AlignJob:
    """The job that aligns a calibrated light (its catalog row) to `ref`."""
    return AlignJob(
        row["id"],
        row["calibrated_path"],
        str(light_paths(config.paths.output, row).aligned),
        tuple(tuple(s) for s in json.loads(row["stars"])),
        ref,
        config.align.max_control_points,
        config.align.min_matches,
        row["bayer"],
    )


def align_fields(result: AlignResult, reference: Reference) -> dict:
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


def reference_of(row: dict) -> Reference:
    """A reference's star list (from its catalog row) and its calibrated frame's shape."""
    stars = json.loads(row["stars"])
    x, y, flux = (tuple(c) for c in zip(*stars)) if stars else ((), (), ())
    return Reference(row["id"], row["name"], image_shape(Path(row["calibrated_path"])), x, y, flux)
