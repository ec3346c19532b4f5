"""Nightly stack planning, pure: which frames make which product, their weights, the rejection.

The reasons behind each rule (background normalisation, the weightings, winsorized clipping for
small stacks) are in `observd.pipeline.stacking`'s docstring, which builds the products.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StackGroup:
    """The frames of one product, in time order, and how they are combined."""

    night: str
    object: str | None
    filter: str | None
    rows: tuple[dict, ...]  # catalog rows of the aligned lights
    reference: dict | None  # the night/target alignment reference row (maybe another filter)
    colour: bool = False  # one-shot-colour lights: an R, G, B cube, each channel stacked on its own
    # A deep stack's nights, in order (`observd.core.deep_plan`): its frames come from all of them and
    # `night` is the last; () for a nightly stack.
    nights: tuple[str, ...] = ()

    @property
    def span(self) -> str:
        """The nights it covers, as its picture and its events say it."""
        if not self.nights:
            return f"night {self.night}"
        return f"{len(self.nights)} nights, {self.nights[0]} to {self.nights[-1]}"

    @property
    def paths(self) -> list[Path]:
        return [Path(r["aligned_path"]) for r in self.rows]

    @property
    def total_exptime(self) -> float:
        return float(sum(r["exptime"] or 0.0 for r in self.rows))

    def background_level(self, channel: int | None = None) -> float:
        """The level every frame's background (of one channel of a colour group) is shifted to
        (module docstring)."""
        if self.reference is not None and any(r["id"] == self.reference["id"] for r in self.rows):
            return channel_level(self.reference, "background", channel)
        return float(np.median([channel_level(r, "background", channel) for r in self.rows]))

    def offsets(self, channel: int | None = None) -> list[float]:
        level = self.background_level(channel)
        return [level - channel_level(r, "background", channel) for r in self.rows]

    def noises(self, channel: int | None = None) -> list[float | None]:
        return [channel_level(r, "noise", channel) for r in self.rows]


def channel_level(row: dict, key: str, channel: int | None) -> float:
    """A light's measured 'background' or 'noise': of its luminance (channel None), or of one
    channel of a colour light (catalog `channel_stats`)."""
    if channel is None:
        return float(row[key]) if row[key] is not None else float("nan")
    return float(json.loads(row["channel_stats"])[key][channel])


def plan_stacks(
    rows: Sequence[dict],
    references: dict[int, dict],
    *,
    night: str,
    min_frames: int,
    object: str | None = None,
    filter: str | None = None,
) -> list[StackGroup]:
    """Group a night's light rows into products: aligned frames only, ≥ `min_frames` per group.

    `references` maps file id -> row for the alignment references the rows point at.
    """
    wanted = [
        row
        for row in rows
        if row["night"] == night
        and (object is None or row["object"] == object)
        and (filter is None or row["filter"] == filter)
    ]
    return [
        StackGroup(night, obj, filt, members, references.get(members[0]["reference_id"]), colour)
        for (obj, filt, colour), members in product_members(wanted, min_frames)
    ]


def product_members(rows: Sequence[dict], min_frames: int) -> list[tuple[tuple, tuple[dict, ...]]]:
    """The aligned lights of `rows` by product, ((object, filter, colour), lights in time order), for
    products of at least `min_frames` lights: a nightly stack's, or a deep stack's over all nights."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["frame_type"] != "light" or row["state"] != "aligned" or not row["aligned_path"]:
            continue
        colour = bool(row.get("bayer") and row.get("channel_stats"))
        groups.setdefault((row["object"], row["filter"], colour), []).append(row)
    members = []
    for key, group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "", kv[0][2])):
        if len(group) >= max(1, min_frames):
            members.append((key, tuple(sorted(group, key=lambda r: (r["date_obs"] or "", r["path"])))))
    return members


WEIGHTINGS = {"noise": "1/noise^2", "noise_fwhm": "1/(noise*FWHM)^2", "equal": "equal"}
"""Each `[stack] weighting` and the formula the product's HISTORY gives for it."""


def frame_weights(
    noises: Sequence[float | None], fwhms: Sequence[float | None] | None = None, *, weighting: str = "noise"
) -> np.ndarray:
    """The frames' weights, normalised to sum 1 (module docstring: ``[stack] weighting``).

    "noise": 1/noise²; "noise_fwhm": 1/(noise·FWHM)² (`fwhms` needed); "equal": 1. A frame
    whose noise or FWHM is unmeasured gets the median of the others'."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
    w = np.ones(len(noises))
    if weighting != "equal":
        w /= _filled(noises) ** 2
    if weighting == "noise_fwhm":
        if fwhms is None or len(fwhms) != len(noises):
            raise ValueError("noise_fwhm weighting needs one FWHM per frame")
        w /= _filled(fwhms) ** 2
    return w / w.sum()


def typical_noise(noises: Sequence[float | None]) -> float:
    """The frames' median measured background noise (0 when none is measured): the floor of
    winsorized clipping's sigma (`observd.core.rejection`)."""
    v, usable = _measured(noises)
    return float(np.median(v[usable])) if usable.any() else 0.0


def _filled(values: Sequence[float | None]) -> np.ndarray:
    """`values` as floats, the unmeasured (None, NaN, ≤ 0) replaced by the median of the rest."""
    v, usable = _measured(values)
    return np.where(usable, v, float(np.median(v[usable])) if usable.any() else 1.0)


def _measured(values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """`values` as floats, and which of them are measured (not None, NaN or ≤ 0)."""
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
    return v, np.isfinite(v) & (v > 0)


SIGCLIP_MARGIN = 1.2
"""Sigma clipping is only trusted when a lone outlier would stand this many times `sigma` out."""


def rejection_for(configured: str, n_frames: int, small_n: int, sigma: float = 3.0) -> str:
    """Sigma clipping becomes winsorized clipping for small stacks.

    A single outlier D above N-1 equal values has a population std of D·sqrt(N-1)/N, so it
    lies only N/sqrt(N-1) std from the median: with sigma = 3 plain clipping cannot reject a
    cosmic ray in fewer than 9 frames and does so reliably (with noise) only from about 12.
    Winsorized clipping is therefore used up to max(`small_n`, that limit).
    """
    if configured != "sigclip":
        return configured
    n_min = next(n for n in range(3, 10_000) if n / np.sqrt(n - 1) >= SIGCLIP_MARGIN * sigma)
    return "winsorized" if n_frames <= max(small_n, n_min - 1) else "sigclip"


def format_exposure(seconds: float) -> str:
    """'45 s', '12.5 min', '2 h 05 min': what an observer says about integration time."""
    if seconds < 120:
        return f"{seconds:g} s"
    minutes = seconds / 60.0
    if minutes < 120:
        return f"{minutes:.1f} min".replace(".0 min", " min")
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest:02d} min"
