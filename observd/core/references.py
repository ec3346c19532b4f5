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


def choose_reference(rows: Iterable[dict], *, final: bool, fixed: str = "", min_frames: int = 3) -> dict | None:
    """The reference among a target's measured good lights, or None when it cannot be chosen yet.

    `fixed` (`[align] reference`): that file name, once it is measured. Otherwise the best frame
    (most stars, then smallest FWHM), once `min_frames` good frames are measured — or, at the
    end of a batch (`final`), among whatever there is.
    """
    good = [r for r in rows if r["state"] in GOOD_STATES]
    if fixed:
        return next((r for r in good if r["name"] == fixed), None)
    if not good or (not final and len(good) < min_frames):
        return None
    return max(good, key=lambda r: (r["n_stars"] or 0, -(r["fwhm"] or 99.0)))


def held_for_reference(
    ready: list[dict],
    rows: list[dict],
    references: Mapping[tuple, object],
    *,
    final: bool,
    min_frames: int,
    pool_workers: int = 0,
    fixed: bool = False,
) -> set[int]:
    """Ids of ready lights that wait in 'classified' until their target's reference is chosen.

    The automatic reference is the best of `min_frames` good frames of the target: in the daemon
    its first ones (it cannot wait for the night), in a batch (`final`) frames spread evenly over
    the target's sequence, so that a cloudy start does not make a poor reference. A batch with a
    pool of `pool_workers` takes more candidates when that fills the pool's last round (3
    candidates on 2 workers: 4): a worker would otherwise idle through it. The other lights wait
    for the reference, then are aligned in the job that calibrates them instead of being read
    back for a second pass: in a batch, most of them. A `fixed` reference holds nothing back: it
    may come last.
    """
    if fixed:
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
    wanted = {key: min(max(first - started[key], 0), len(group)) for key, group in candidates.items()}
    if final and pool_workers:
        _fill_last_round(wanted, candidates, pool_workers)
    held = set()
    for key, group in candidates.items():
        held |= {
            r["id"]
            for i, r in enumerate(_in_order(group, final))
            if i not in _picked(len(group), wanted[key], spread=final)
        }
    return held


def _fill_last_round(wanted: dict[tuple, int], candidates: dict[tuple, list[dict]], workers: int) -> None:
    """More candidates for the targets with the most frames, until the pool's round is full."""
    spare = -sum(wanted.values()) % workers
    for key in sorted(candidates, key=lambda k: len(candidates[k]) - wanted[k], reverse=True):
        extra = min(spare, len(candidates[key]) - wanted[key])
        if wanted[key] and extra:
            wanted[key] += extra
            spare -= extra


def _in_order(group: list[dict], final: bool) -> list[dict]:
    return sorted(group, key=lambda r: (r["date_obs"] or "", r["path"])) if final else group


def _picked(n_frames: int, n: int, *, spread: bool) -> set[int]:
    """Indices of the `n` candidates: spread evenly over the sequence, or its first ones."""
    if spread and n > 1:
        return {round(i * (n_frames - 1) / (n - 1)) for i in range(n)}
    return set(range(n))
