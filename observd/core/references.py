"""Which light of a night and target is the alignment reference, and which lights wait for it.

Pure logic over catalog rows (dicts). A target is keyed by (night, object): each night's frames
of a target are aligned to one of that night's frames, whatever their filter, so that the
night's stacks in several filters are aligned to each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from observd.core.measure import Measurement

GOOD_STATES = ("calibrated", "aligned")  # measured and not judged bad


def target_key(row: dict) -> tuple:
    """(night, object): the lights that share one reference."""
    return (row["night"], row["object"])


def best_stars(rows: Iterable[dict]) -> dict[tuple, int]:
    """The most stars measured on any light of each target: what 'clouds?' is judged against."""
    best: dict[tuple, int] = defaultdict(int)
    for row in rows:
        if row["n_stars"] is not None:
            key = target_key(row)
            best[key] = max(best[key], row["n_stars"])
    return best


def measurement(row: dict) -> Measurement:
    """A light's measurement as the catalog holds it."""
    return Measurement(
        row["background"], row["noise"], row["n_stars"], row["fwhm"], row["elongation"], row["n_saturated"] or 0
    )


def choose_reference(
    rows: Iterable[dict], *, final: bool, fixed: str = "", min_frames: int = 3, states: tuple = GOOD_STATES
) -> dict | None:
    """The reference among a target's measured good lights, or None when it cannot be chosen yet.

    `fixed` (`[align] reference`): that file name, once it is measured. Otherwise the best frame
    (`quality_rank`), once `min_frames` good frames are measured — or, at the end of a batch or
    of the night (`final`), among whatever there is.
    """
    good = [r for r in rows if r["state"] in states]
    if fixed:
        return next((r for r in good if r["name"] == fixed), None)
    if not good or (not final and len(good) < min_frames):
        return None
    return max(good, key=quality_rank)


def quality_rank(row: dict) -> tuple:
    """How good a light is as a reference; larger is better: a measured FWHM first (a frame whose
    stars could not be measured — trailed, defocused — is not known to be sharp, so it ranks below
    every measured one), then the most stars, then the smallest FWHM, then the roundest stars.
    Ties are broken by the file's path, so the choice never depends on the order rows come in."""
    fwhm, elongation = row["fwhm"], row.get("elongation")
    return (
        fwhm is not None,
        row["n_stars"] or 0,
        -(fwhm if fwhm is not None else 0.0),
        -(elongation if elongation is not None else 99.0),
        row["path"],
    )


def held_for_reference(
    ready: list[dict],
    rows: list[dict],
    references: Mapping[tuple, object],
    *,
    final: bool,
    min_frames: int,
    fixed: bool = False,
) -> set[int]:
    """Ids of ready lights that wait in 'classified' until their target's reference is chosen.

    The daemon cannot wait for the night: its provisional reference is the best of the first
    `min_frames` good frames of a target, and the other lights wait for it, then are aligned in
    the job that calibrates them. A batch (`final`) holds nothing back: it measures every light,
    then takes the best of all — the reference a night ends with either way (`finish_night`). A
    `fixed` reference holds nothing back either: it may come last.
    """
    if fixed or final:
        return set()
    first = max(1, min_frames)
    started: dict[tuple, int] = defaultdict(int)
    for row in rows:
        if row["state"] in GOOD_STATES:
            started[target_key(row)] += 1
    candidates: dict[tuple, list[dict]] = defaultdict(list)
    for row in ready:
        if (key := target_key(row)) not in references:
            candidates[key].append(row)
    held = set()
    for key, group in candidates.items():
        wanted = min(max(first - started[key], 0), len(group))
        held |= {r["id"] for r in group[wanted:]}
    return held
