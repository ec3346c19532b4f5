"""Where every output lives under the output folder: the one home of the layout.

    <output>/<night>/masters/<type>_<group>_v<version>.fits
    <output>/<night>/calibrated/<object>/<filter>/<raw stem>[_v<version>].fits
    <output>/<night>/aligned/<object>/<filter>/<raw stem>[_v<version>].fits
    <output>/<night>/thumbs/<object>/<filter>/<raw stem>[_v<version>].png
    <output>/<night>/stacks/<object>_<filter>.fits (.png, _thumb.png)
    <output>/<night>/stacks/<object>_<filter>_RGB.fits (one-shot-colour cube)
    <output>/<night>/stacks/<object>_<RGB|LRGB|SHO...>.fits (composite of mono stacks)
    <output>/deep/<object>/<object>_<filter>[_RGB].fits (.png, _thumb.png: deep stack of all nights)
    <output>/deep/<object>/aligned/<filter>/<night>/<raw stem>[_v<version>].fits

The deep folder's name cannot be a night's (nights are dates, or `undated`). Its aligned frames
are the target's good lights resampled onto the target's deep reference (`observd.pipeline.deep_stacks`).

Paths are derived from catalog facts only (night, names, versions), never from another
output's path, so a rerun, a restart or a batch over the same files writes to the same
places and replaces instead of duplicating. A raw file rewritten with new content gets
`_v<version>` so the outputs of each content version stay apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

UNDATED = "undated"  # the night folder of frames whose header gives no time
DEEP = "deep"  # the folder of deep stacks (all nights of a target), beside the nights' folders


def slug(text: str | None, default: str) -> str:
    """A safe path component for an object, filter or group name."""
    cleaned = re.sub(r"[^A-Za-z0-9+\-.]+", "_", (text or "").strip()).strip("_.")
    return cleaned or default


def fits_stem(name: str) -> str:
    """'M42.001.fits.gz' -> 'M42.001': only FITS and compression suffixes are removed."""
    return re.sub(r"(\.(fits|fit|fts))?(\.(gz|fz))?$", "", name, flags=re.IGNORECASE)


def night_folder(output: Path, night: str | None) -> Path:
    return Path(output) / (night or UNDATED)


def master_path(output: Path, night: str | None, kind: str, group_key: str, version: int) -> Path:
    """A master's file: its type, its group key without the type, its version."""
    group = slug(group_key.split("|", 1)[1] if "|" in group_key else group_key, "group")
    return night_folder(output, night) / "masters" / f"{kind}_{group}_v{version}.fits"


@dataclass(frozen=True)
class LightPaths:
    calibrated: Path
    aligned: Path
    thumbnail: Path  # a small PNG of the calibrated light, written once by its worker


def _light_stem(row: dict) -> str:
    return fits_stem(row["name"]) + (f"_v{row['version']}" if (row.get("version") or 1) > 1 else "")


def light_paths(output: Path, row: dict) -> LightPaths:
    """The calibrated and aligned files and the thumbnail of one light (a catalog row: night,
    object, filter, name, version)."""
    folder = night_folder(output, row["night"])
    obj, filt = slug(row["object"], "unknown"), slug(row["filter"], "nofilter")
    stem = _light_stem(row)
    return LightPaths(
        folder / "calibrated" / obj / filt / f"{stem}.fits",
        folder / "aligned" / obj / filt / f"{stem}.fits",
        folder / "thumbs" / obj / filt / f"{stem}.png",
    )


def stack_stem(output: Path, night: str, object: str | None, filter: str | None, kind: str = "") -> Path:
    """The stack's path without suffix: `.fits`, `.png` and `_thumb.png` are added to it.
    `kind`: 'RGB' for a one-shot-colour cube (`<object>_<filter>_RGB`), so that it never takes
    the place of a mono stack of the same target and filter."""
    return night_folder(output, night) / "stacks" / _product_name(object, filter, kind)


def _product_name(object: str | None, filter: str | None, kind: str) -> str:
    return f"{slug(object, 'unknown')}_{slug(filter, 'nofilter')}" + (f"_{kind}" if kind else "")


def composite_stem(output: Path, night: str, object: str | None, kind: str) -> Path:
    """A colour composite of mono stacks: `<object>_<kind>` (kind RGB, LRGB, SHO...)."""
    return night_folder(output, night) / "stacks" / f"{slug(object, 'unknown')}_{kind}"


def deep_folder(output: Path, object: str | None) -> Path:
    """Everything of one target's deep stacks: the stacks, and its frames aligned to its deep reference."""
    return Path(output) / DEEP / slug(object, "unknown")


def deep_aligned_path(output: Path, row: dict) -> Path:
    """A light resampled onto its target's deep reference (a catalog row: night, object, filter,
    name, version); by night, so that frames of the same name on two nights stay apart."""
    folder = deep_folder(output, row["object"]) / "aligned" / slug(row["filter"], "nofilter")
    return folder / (row["night"] or UNDATED) / f"{_light_stem(row)}.fits"


def deep_stack_stem(output: Path, object: str | None, filter: str | None, kind: str = "") -> Path:
    """A deep stack's path without suffix (as `stack_stem`; `kind` 'RGB' for a colour cube)."""
    return deep_folder(output, object) / _product_name(object, filter, kind)


def light_curve_stem(output: Path, night: str, target: str, object: str | None, filter: str | None) -> Path:
    """A light curve's path without suffix (`.ecsv`, `.png`): `<target>_<object>_<filter>`, the
    target measured on the frames of one stack."""
    name = f"{slug(target, 'target')}_{slug(object, 'unknown')}_{slug(filter, 'nofilter')}"
    return night_folder(output, night) / "lightcurves" / name
