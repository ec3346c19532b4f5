"""Which calibration frames belong together: the grouping criteria, as data.

Like BANZAI's CALIBRATION_SET_CRITERIA, the rules are a table rather than code, so a site
can see (and drop, through `[masters] ignore_keys`) exactly what makes two frames
combinable. Darks are keyed by their cooler set point; a camera that reports none is keyed by its
measured CCD-TEMP rounded to the degree. Within a group, `masters_plan` then applies the
CCD-TEMP tolerance frame by frame.
"""

from __future__ import annotations

from collections.abc import Iterable

from observd.core.frames import FrameInfo

COMMON_CRITERIA = ("instrument", "shape", "binning", "gain_setting", "offset", "readout_mode")

GROUP_CRITERIA: dict[str, tuple[str, ...]] = {
    "bias": COMMON_CRITERIA,
    "dark": COMMON_CRITERIA + ("exptime", "set_temp"),
    "flat": COMMON_CRITERIA + ("filter",),
}


def criterion(info, name: str) -> str:
    """Render one criterion of a FrameInfo or a catalog row (dict) for the key."""
    get = (lambda k: info.get(k)) if isinstance(info, dict) else (lambda k: getattr(info, k))
    if name == "shape":
        return f"{get('naxis1')}x{get('naxis2')}"
    if name == "binning":
        return f"bin{get('xbin') or 1}x{get('ybin') or 1}"
    value = get(name)
    if name == "set_temp" and value is None and get("ccd_temp") is not None:
        return f"T~{round(get('ccd_temp')):+d}C"  # no set point: the measured temperature, to the degree
    if value is None or value == "":
        return {"set_temp": "T?", "filter": "nofilter"}.get(name, "-")
    if name == "exptime":
        return f"{float(value):g}s"
    if name == "set_temp":
        return f"T{float(value):+.1f}C"
    if name in ("gain_setting", "offset"):
        return f"{name[0]}{float(value):g}"
    return str(value).strip().replace("|", "/")


def colour_site(info: FrameInfo | dict) -> str:
    """'' for a mono frame, '|CFA-RGGB' for a one-shot-colour one: appended to every group key and
    compared for every master a light uses, whatever `ignore_keys` says, so that mono and colour
    frames, or two Bayer phases, never meet in one master or one calibration."""
    bayer = info.get("bayer") if isinstance(info, dict) else info.bayer
    return f"|CFA-{bayer}" if bayer else ""


def group_key(info: FrameInfo | dict, ignore: Iterable[str] = ()) -> str | None:
    """'dark|SimCam|512x512|bin1x1|g100|o10|-|60s|T-10.0C' for calibration frames, else None."""
    kind = info["frame_type"] if isinstance(info, dict) else info.frame_type
    criteria = GROUP_CRITERIA.get(kind)
    if criteria is None:
        return None
    skip = set(ignore)
    return "|".join([kind] + [criterion(info, name) for name in criteria if name not in skip]) + colour_site(info)
