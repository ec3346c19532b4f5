"""Deep stacks, pure: a target's reference across nights, each light's transform to it, and which
lights must be resampled (again).

A deep stack combines every good aligned light of a target and filter over all its nights. Its
frames must share one pixel grid: the target's *deep reference*, the best of all its aligned
lights (`quality_rank`, whatever the filter and the night, as a night's reference is chosen among
the night's lights).

Each light already knows its transform to its night's reference (catalog ``transform``, fitted on
its stored star list when the night was aligned), and each night's reference is matched once to
the deep reference (``bridge``). The light's transform to the deep reference is the product of the
two; the light is then resampled once, from its calibrated frame (its own night's masters applied).
Resampling the night's aligned frame instead would interpolate twice, and each cubic interpolation
widens a 3 px star by a few per cent and smooths the noise unevenly.

A resampled light is kept (`deep_frames` in the catalog) with the `source` it was made from: its
calibrated frame and masters, its night's reference and transform, the deep reference, and the
star lists the bridge was matched on. While the source is unchanged, it is not made again: a new
night resamples only its own lights. A new deep reference (a better frame arrived), a light
calibrated again, or a night aligned again to another reference changes the source of exactly the
lights concerned.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from observd.core.references import choose_reference
from observd.core.stack_plan import StackGroup, product_members


def deep_candidates(rows: Iterable[dict]) -> list[dict]:
    """The lights a deep stack can use: aligned to their night's reference, with the star list,
    transform and calibrated frame its resampling needs."""
    return [
        r
        for r in rows
        if r["frame_type"] == "light"
        and r["state"] == "aligned"
        and r["stars"]
        and r["transform"]
        and r["calibrated_path"]
        and r["reference_id"] is not None
    ]


def deep_reference(candidates: Sequence[dict]) -> dict | None:
    """The target's deep reference: its best aligned light over all nights (module docstring)."""
    return choose_reference(candidates, final=True, states=("aligned",))


def frame_source(row: dict, reference: dict, night_reference: dict) -> str:
    """What a light's resampled frame is made from (module docstring), as a canonical string."""
    return json.dumps(
        {
            "calibrated": row["calibrated_path"],
            "masters": [row["bias_id"], row["dark_id"], row["flat_id"]],
            "night_reference": row["reference_id"],
            "transform": row["transform"],
            "deep_reference": reference["id"],
            "stars": [_digest(night_reference["stars"]), _digest(reference["stars"])],
        },
        sort_keys=True,
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DeepPlan:
    """Which lights of a target are resampled for its deep stacks, and which are reused."""

    reference: dict  # the deep reference's catalog row
    stale: tuple[dict, ...]  # to resample: never done, or made from another source
    fresh: tuple[dict, ...]  # resampled before from the same source: reused as they are
    sources: Mapping[int, str]  # file id -> its source now
    orphans: tuple[dict, ...] = ()  # lights whose night's reference row is unknown: left out


def plan_deep(candidates: Sequence[dict], night_references: Mapping[int, dict], done: Mapping[int, dict]) -> DeepPlan:
    """Compare each candidate's source now with the `done` one (`deep_frames` rows by file id,
    whose resampled file exists). `night_references`: file id -> row of the nights' references."""
    reference = deep_reference(candidates)
    if reference is None:
        raise ValueError("no aligned light to take a deep reference from")
    stale, fresh, orphans, sources = [], [], [], {}
    for row in candidates:
        night_reference = night_references.get(row["reference_id"])
        if night_reference is None or not night_reference["stars"]:
            orphans.append(row)
            continue
        sources[row["id"]] = source = frame_source(row, reference, night_reference)
        previous = done.get(row["id"])
        (fresh if previous is not None and previous["source"] == source else stale).append(row)
    return DeepPlan(reference, tuple(stale), tuple(fresh), sources, tuple(orphans))


def compose(bridge: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """frame -> deep reference: the light's transform to its night's reference, then the night
    reference's to the deep reference (3x3 matrices on (x, y, 1) columns)."""
    return np.asarray(bridge, dtype=np.float64) @ np.asarray(transform, dtype=np.float64)


def deep_groups(rows: Sequence[dict], reference: dict, *, min_frames: int) -> list[StackGroup]:
    """The deep stacks of a target: its resampled lights (rows whose ``aligned_path`` is their
    resampled frame) by filter, and colour, with at least `min_frames` lights. Every frame's sky is
    shifted to the deep reference's when it is in the group (`StackGroup.background_level`)."""
    groups = []
    for (obj, filt, colour), members in product_members(rows, min_frames):
        nights = tuple(sorted({r["night"] or "" for r in members}))
        groups.append(StackGroup(nights[-1], obj, filt, members, reference, colour, nights))
    return groups
