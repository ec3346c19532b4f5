"""Choosing the masters that calibrate one light — pure logic over catalog rows.

Same instrument, shape, binning and camera settings; bias nearest in time; dark with
CCD-TEMP within tolerance of the light's, exact exposure preferred (a "dark includes bias"
master then removes the bias too), else a bias-subtracted dark scaled by exposure; flat of
the same filter nearest in time; nothing older than `max_age_days`. When something required
is missing, `Selection.missing` says what, in words an observer can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from observd.core.config import CalibrateConfig, MastersConfig
from observd.core.grouping import COMMON_CRITERIA, criterion

_EXACT = 1e-3   # seconds: exposures closer than this are "the same"


@dataclass(frozen=True)
class Selection:
    bias: dict | None = None
    dark: dict | None = None
    flat: dict | None = None
    dark_scale: float = 1.0
    notes: tuple[str, ...] = ()     # warnings worth recording (fallback dark, uncalibrated steps)
    missing: str | None = None      # why the light must wait; None when it can be calibrated


def compatible_setup(light: dict, master: dict, ignore: tuple[str, ...] = ()) -> bool:
    """Same instrument, shape, binning and camera settings (the criteria every group shares),
    except those `[masters] ignore_keys` disregards."""
    return all(criterion(light, name) == criterion(master, name) for name in COMMON_CRITERIA
               if name not in ignore)


def hours_apart(light: dict, master: dict) -> float:
    if not light.get("date_obs") or not master.get("date_obs"):
        return 0.0
    return abs((datetime.fromisoformat(light["date_obs"]) - datetime.fromisoformat(master["date_obs"]))
               .total_seconds()) / 3600


def select_masters(light: dict, masters: list[dict], mc: MastersConfig, cc: CalibrateConfig) -> Selection:
    """`masters`: current master rows (any type). `light`: a catalog row."""
    usable = [m for m in masters if m["current"] and compatible_setup(light, m, mc.ignore_keys)
              and hours_apart(light, m) <= mc.max_age_days * 24]
    by_type = {k: [m for m in usable if m["type"] == k] for k in ("bias", "dark", "flat")}
    notes: list[str] = []
    missing: list[str] = []
    shape = f"{light['naxis1']}x{light['naxis2']}, binning {light['xbin']}x{light['ybin']}"

    dark, scale = _choose_dark(light, by_type["dark"], mc, cc, notes)
    bias = min(by_type["bias"], key=lambda m: hours_apart(light, m), default=None)
    if dark is not None and dark["includes_bias"]:
        bias = None             # exact-exposure dark that includes the bias removes both
    elif dark is not None and bias is None:
        missing.append(f"no bias for {shape} yet (the dark {dark['exptime']:g} s is bias-subtracted)")
    filt = light.get("filter")
    flats = [m for m in by_type["flat"] if (m["filter"] or None) == (filt or None)]
    flat = min(flats, key=lambda m: hours_apart(light, m), default=None)

    temp = light.get("ccd_temp")
    for kind in cc.require:
        chosen = {"bias": bias if bias is not None or (dark and dark["includes_bias"]) else None,
                  "dark": dark, "flat": flat}[kind]
        if chosen is not None or (kind == "bias" and dark is not None and dark["includes_bias"]):
            continue
        if kind == "flat":
            missing.append(f"no flat for filter {filt or '(none)'}, {shape} yet")
        elif kind == "dark":
            missing.append(f"no dark within {mc.temp_tolerance:g} °C of {temp:+.1f} °C" if temp is not None
                           else f"no dark for {shape} yet")
        elif kind == "bias" and not any("no bias" in m for m in missing):
            missing.append(f"no bias for {shape} yet")
    for kind, chosen in (("bias", bias), ("dark", dark), ("flat", flat)):
        if chosen is None and kind not in cc.require and not (kind == "bias" and dark and dark["includes_bias"]):
            notes.append(f"no {kind} subtracted/applied (not required by [calibrate] require)"
                         if kind != "flat" else "not flat-fielded (not required by [calibrate] require)")
    return Selection(bias, dark, flat, scale, tuple(notes), "; ".join(dict.fromkeys(missing)) or None)


def _choose_dark(light: dict, darks: list[dict], mc: MastersConfig, cc: CalibrateConfig,
                 notes: list[str]) -> tuple[dict | None, float]:
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
        notes.append(f"WARNING: no dark within {mc.temp_tolerance:g} °C; used the nearest, "
                     f"{temp_gap(nearest):.1f} °C away ([calibrate] dark_fallback)")
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
