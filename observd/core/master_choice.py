"""Choosing the masters that calibrate one light — pure logic over catalog rows.

Same instrument, shape, binning and camera settings; bias nearest in time; dark with
CCD-TEMP within tolerance of the light's, exact exposure preferred (a "dark includes bias"
master then removes the bias too), else a bias-subtracted dark scaled by exposure; flat of
the same filter nearest in time; nothing older than `max_age_days`. When something required
is missing, `Selection.missing` says what, in words an observer can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from observd.core.config import CalibrateConfig, MastersConfig
from observd.core.frames import CALIBRATION_TYPES
from observd.core.grouping import COMMON_CRITERIA, colour_site, criterion

_EXACT = 1e-3  # seconds: exposures closer than this are "the same"


@dataclass(frozen=True)
class Selection:
    bias: dict | None = None
    dark: dict | None = None
    flat: dict | None = None
    dark_scale: float = 1.0
    notes: tuple[str, ...] = ()  # warnings worth recording (fallback dark, uncalibrated steps)
    missing: str | None = None  # why the light must wait; None when it can be calibrated


def compatible_setup(light: dict, master: dict, ignore: tuple[str, ...] = ()) -> bool:
    """Same instrument, shape, binning and camera settings (the criteria every group shares),
    except those `[masters] ignore_keys` disregards; and always the same colour sites."""
    return colour_site(light) == colour_site(master) and all(
        criterion(light, name) == criterion(master, name) for name in COMMON_CRITERIA if name not in ignore
    )


def hours_apart(light: dict, master: dict) -> float:
    if not light.get("date_obs") or not master.get("date_obs"):
        return 0.0
    return (
        abs((datetime.fromisoformat(light["date_obs"]) - datetime.fromisoformat(master["date_obs"])).total_seconds())
        / 3600
    )


def nearest(row: dict, masters: list[dict], ignore: tuple[str, ...] = ()) -> dict | None:
    """The master of `masters` with `row`'s setup that is nearest to it in time."""
    compatible = [m for m in masters if compatible_setup(row, m, ignore)]
    return min(compatible, key=lambda m: hours_apart(row, m), default=None)


@dataclass(frozen=True)
class GroupMasters:
    """What a new dark or flat master subtracts: a bias, a dark (flats), or why it must wait."""

    bias: dict | None = None
    dark: dict | None = None
    includes_bias: bool = False  # a dark master built without a bias: it keeps the bias level
    wait: str | None = None


def masters_for_group(
    kind: str, ref: dict, masters: list[dict], mc: MastersConfig, biases_coming: Callable[[], bool] = lambda: False
) -> GroupMasters:
    """The masters a new `kind` master of `ref`'s group subtracts.

    `masters`: current master rows. `biases_coming()`: enough bias frames of this setup are
    catalogued for a master bias that is not built yet: darks and flats then wait for it (asked
    only when there is no master bias).
    A dark with no bias at all to subtract keeps its bias (exact-exposure matching only). A flat
    takes a "dark includes bias" master of its own exposure (a dark-flat), else the longest
    bias-subtracted dark, scaled by exposure.
    """
    if kind not in ("dark", "flat"):
        return GroupMasters()
    bias = nearest(ref, [m for m in masters if m["type"] == "bias"], mc.ignore_keys)
    if kind == "dark" and mc.dark_includes_bias:
        return GroupMasters(includes_bias=True)
    if bias is None and biases_coming():
        return GroupMasters(wait="waiting for the master bias to be built")
    if kind == "dark":
        return GroupMasters(bias=bias, includes_bias=bias is None)
    darks = [m for m in masters if m["type"] == "dark" and compatible_setup(m, ref, mc.ignore_keys)]
    exact = [m for m in darks if m["includes_bias"] and m["exptime"] == ref["exptime"]]
    scalable = [m for m in darks if not m["includes_bias"]]
    dark = exact[0] if exact else (max(scalable, key=lambda m: m["exptime"] or 0) if scalable else None)
    if dark is not None and dark["includes_bias"]:
        return GroupMasters(dark=dark)
    if bias is None:
        return GroupMasters(wait="flats wait for a master bias (or a dark-flat of their exposure)")
    return GroupMasters(bias=bias, dark=dark)


def select_masters(light: dict, masters: list[dict], mc: MastersConfig, cc: CalibrateConfig) -> Selection:
    """`masters`: current master rows (any type). `light`: a catalog row."""
    usable = [
        m
        for m in masters
        if m["current"] and compatible_setup(light, m, mc.ignore_keys) and hours_apart(light, m) <= mc.max_age_days * 24
    ]
    by_type = {k: [m for m in usable if m["type"] == k] for k in CALIBRATION_TYPES}
    notes: list[str] = []
    missing: list[str] = []
    shape = f"{light['naxis1']}x{light['naxis2']}, binning {light['xbin']}x{light['ybin']}"

    dark, scale = _choose_dark(light, by_type["dark"], mc, cc, notes)
    bias = min(by_type["bias"], key=lambda m: hours_apart(light, m), default=None)
    if dark is not None and dark["includes_bias"]:
        bias = None  # exact-exposure dark that includes the bias removes both
    elif dark is not None and bias is None:
        missing.append(f"no bias for {shape} yet (the dark {dark['exptime']:g} s is bias-subtracted)")
    filt = light.get("filter")
    flats = [m for m in by_type["flat"] if (m["filter"] or None) == (filt or None)]
    flat = min(flats, key=lambda m: hours_apart(light, m), default=None)

    temp = light.get("ccd_temp")
    required = cc.required(light.get("instrument"))
    for kind in required:
        chosen = {
            "bias": bias if bias is not None or (dark and dark["includes_bias"]) else None,
            "dark": dark,
            "flat": flat,
        }[kind]
        if chosen is not None or (kind == "bias" and dark is not None and dark["includes_bias"]):
            continue
        if kind == "flat":
            missing.append(f"no flat for filter {filt or '(none)'}, {shape} yet")
        elif kind == "dark":
            missing.append(
                f"no dark within {mc.temp_tolerance:g} °C of {temp:+.1f} °C"
                if temp is not None
                else f"no dark for {shape} yet"
            )
        elif kind == "bias" and not any("no bias" in m for m in missing):
            missing.append(f"no bias for {shape} yet")
    for kind, chosen in (("bias", bias), ("dark", dark), ("flat", flat)):
        if chosen is None and kind not in required and not (kind == "bias" and dark and dark["includes_bias"]):
            rule = "[calibrate] require" + (
                "_by_instrument" if light.get("instrument") in cc.require_by_instrument else ""
            )
            notes.append(
                f"no {kind} subtracted/applied (not required by {rule})"
                if kind != "flat"
                else f"not flat-fielded (not required by {rule})"
            )
    return Selection(bias, dark, flat, scale, tuple(notes), "; ".join(dict.fromkeys(missing)) or None)


def _choose_dark(
    light: dict, darks: list[dict], mc: MastersConfig, cc: CalibrateConfig, notes: list[str]
) -> tuple[dict | None, float]:
    temp, exptime = light.get("ccd_temp"), light.get("exptime")

    def temp_gap(m: dict) -> float:
        if temp is None or m["ccd_temp_mean"] is None:
            return 0.0
        return abs(m["ccd_temp_mean"] - temp)

    def exact(m: dict) -> bool:
        return exptime is not None and m["exptime"] is not None and abs(m["exptime"] - exptime) < _EXACT

    in_tol = [m for m in darks if temp_gap(m) <= mc.temp_tolerance]
    if not in_tol and cc.dark_fallback and darks:
        nearest = min(darks, key=temp_gap)
        notes.append(
            f"WARNING: no dark within {mc.temp_tolerance:g} °C; used the nearest, "
            f"{temp_gap(nearest):.1f} °C away ([calibrate] dark_fallback)"
        )
        in_tol = [nearest]
    exact_darks = [m for m in in_tol if exact(m)]
    if exact_darks and cc.dark_scaling != "scale":
        return min(exact_darks, key=temp_gap), 1.0
    if cc.dark_scaling == "exact":
        return None, 1.0
    scalable = [m for m in in_tol if not m["includes_bias"] and m["exptime"]]
    if not scalable or exptime is None:
        return None, 1.0
    # scaling is most accurate from the longest dark (least noise per second)
    dark = max(scalable, key=lambda m: (-temp_gap(m), m["exptime"]))
    return dark, exptime / dark["exptime"]
