"""Where every output lives under the output folder: the one home of the layout.

    <output>/<night>/masters/<type>_<group>_v<version>.fits
    <output>/<night>/calibrated/<object>/<filter>/<raw stem>[_v<version>].fits
    <output>/<night>/aligned/<object>/<filter>/<raw stem>[_v<version>].fits
    <output>/<night>/stacks/<object>_<filter>.fits (.png, _thumb.png)

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


def light_paths(output: Path, row: dict) -> LightPaths:
    """The calibrated and aligned files of one light (a catalog row: night, object, filter,
    name, version)."""
    folder = night_folder(output, row["night"])
    obj, filt = slug(row["object"], "unknown"), slug(row["filter"], "nofilter")
    stem = fits_stem(row["name"]) + (f"_v{row['version']}" if (row.get("version") or 1) > 1 else "")
    return LightPaths(
        folder / "calibrated" / obj / filt / f"{stem}.fits", folder / "aligned" / obj / filt / f"{stem}.fits"
    )


def stack_stem(output: Path, night: str, object: str | None, filter: str | None) -> Path:
    """The stack's path without suffix: `.fits`, `.png` and `_thumb.png` are added to it."""
    return night_folder(output, night) / "stacks" / f"{slug(object, 'unknown')}_{slug(filter, 'nofilter')}"
