"""Deciding which master calibrations to build now — pure logic over catalog rows.

For each calibration group (see `grouping.GROUP_CRITERIA`) it decides which frames are
eligible by header (CCD-TEMP within tolerance of the set point, or of the group's median
when the camera reports none; the right shape), whether the group is ready (at least
`min_frames` eligible, nothing new for `settle_seconds`, or the end of a batch), and
whether the eligible set differs from what the current master was built from (then a new
version is due). Pixel-level checks (NaN, saturation, flat level) happen when the master is
built, because they need the data.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from observd.core.config import Config, MastersConfig
from observd.core.frames import CALIBRATION_TYPES

# states of calibration frames that are (re)considered for a master; 'excluded' frames are
# reconsidered too when their exclusion came from the header (temperature), not the pixels.
_CANDIDATE_STATES = ("classified", "combined", "excluded")
DATA_EXCLUSION_PREFIX = "pixels: "


@dataclass(frozen=True)
class GroupPlan:
    kind: str
    group_key: str
    eligible: tuple[dict, ...]
    excluded: dict[int, str] = field(default_factory=dict)  # file id -> reason (header-level)
    ready: bool = False
    message: str = ""  # for status: why there is no (new) master yet


UP_TO_DATE = "master up to date"  # a group's message when its current master has every eligible frame


def min_frames(kind: str, masters: MastersConfig) -> int:
    """How many eligible frames a `kind` master needs."""
    return {"bias": masters.min_bias, "dark": masters.min_dark, "flat": masters.min_flat}[kind]


def _set_point(rows: list[dict]) -> tuple[float | None, str]:
    set_temps = [r["set_temp"] for r in rows if r["set_temp"] is not None]
    if set_temps:
        return statistics.median(set_temps), "set point"
    temps = [r["ccd_temp"] for r in rows if r["ccd_temp"] is not None]
    if temps:
        return statistics.median(temps), "group median"
    return None, ""


def plan_group(
    kind: str,
    group_key: str,
    rows: list[dict],
    current_inputs: set[int] | None,
    config: Config,
    *,
    now: float,
    final: bool,
) -> GroupPlan:
    """Eligibility and readiness of one group. `current_inputs`: file ids of the current master."""
    tol = config.masters.temp_tolerance
    target, basis = _set_point(rows)
    eligible, excluded = [], {}
    for row in rows:
        if row["state"] == "excluded" and (row["reason"] or "").startswith(DATA_EXCLUSION_PREFIX):
            continue  # pixel-level exclusions are final for this content version
        temp = row["ccd_temp"]
        if target is not None and temp is None:
            excluded[row["id"]] = "no CCD-TEMP in header while the group has a temperature"
        elif target is not None and abs(temp - target) > tol:
            excluded[row["id"]] = (
                f"CCD-TEMP {temp:+.2f} °C is {abs(temp - target):.2f} °C from the "
                f"{basis} {target:+.2f} °C (tolerance {tol} °C)"
            )
        else:
            eligible.append(row)
    need = min_frames(kind, config.masters)
    ids = {r["id"] for r in eligible}
    if len(eligible) < need:
        return GroupPlan(
            kind, group_key, tuple(eligible), excluded, False, f"{len(eligible)} eligible frame(s), needs {need}"
        )
    if current_inputs is not None and ids <= current_inputs:
        return GroupPlan(kind, group_key, tuple(eligible), excluded, False, UP_TO_DATE)
    newest = max(_arrival(r) for r in eligible)
    wait = config.masters.settle_seconds - (now - newest)
    if not final and wait > 0:
        return GroupPlan(
            kind,
            group_key,
            tuple(eligible),
            excluded,
            False,
            f"{len(eligible)} eligible frames; waiting {wait:.0f} s for the set to settle",
        )
    return GroupPlan(kind, group_key, tuple(eligible), excluded, True, "ready")


def _arrival(row: dict) -> float:
    return datetime.fromisoformat(row["first_seen"]).timestamp()


def plan_masters(
    frames: list[dict],
    masters: list[dict],
    master_inputs: dict[int, set[int]],
    config: Config,
    *,
    now: float,
    final: bool,
    kinds: tuple[str, ...] = CALIBRATION_TYPES,
    force: bool = False,
) -> list[GroupPlan]:
    """One GroupPlan per calibration group present in `frames` (current catalog rows).

    `force` (observd masters --rebuild) ignores whether the current master is up to date.
    """
    by_group: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in frames:
        if row["frame_type"] in kinds and row["state"] in _CANDIDATE_STATES and row["group_key"]:
            by_group[(row["frame_type"], row["group_key"])].append(row)
    current = {m["group_key"]: m["id"] for m in masters if m["current"]}
    plans = []
    for (kind, key), rows in sorted(by_group.items()):
        inputs = master_inputs.get(current[key]) if key in current and not force else None
        plans.append(plan_group(kind, key, rows, inputs, config, now=now, final=final))
    return plans


def calibration_groups(
    frames: list[dict], masters: list[dict], master_inputs: dict[int, set[int]], config: Config, *, now: float
) -> list[dict]:
    """Groups with no current master, and why: the status report's `calibration_groups`.
    `masters`: the current masters."""
    have = {m["group_key"] for m in masters}
    return [
        {
            "type": p.kind,
            "group": p.group_key,
            "eligible": len(p.eligible),
            "needed": min_frames(p.kind, config.masters),
            "message": p.message,
        }
        for p in plan_masters(frames, masters, master_inputs, config, now=now, final=False)
        if p.group_key not in have
    ]
