"""Helpers shared by the tests: configurations in tmp_path, simulated nights, real data, hashes."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from observd.core.config import Config, config_from_dict
from observd.sim.spec import SimSpec
from observd.sim.writer import write_night


def real_data_root() -> Path:
    return Path(os.environ.get("OBSERVD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def require_real_data(name: str = "") -> Path:
    """The real-data folder (or one set in it); skips the test cleanly when it is absent."""
    root = real_data_root()
    target = root / name if name else root
    if not name:
        if not root.is_dir():
            pytest.skip(f"real data not available at {root} (set OBSERVD_REAL_DATA)")
        return root
    matches = sorted(root.glob(name)) if root.is_dir() else []
    if not matches:
        pytest.skip(f"real data set {name} not available under {root} (set OBSERVD_REAL_DATA)")
    return matches[0] if len(matches) == 1 else target


def gunzip_set(folder: Path, dest: Path) -> Path:
    """Decompress a real-data folder's FITS files into `dest` (the originals stay untouched)."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(folder.glob("*.gz")):
        if src.name.endswith((".txt.gz", ".json.gz")):
            continue
        with gzip.open(src, "rb") as fin, open(dest / src.name[:-3], "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return dest


MICROOBSERVATORY = {
    "site": {"timezone": "America/Phoenix"},  # Whipple Observatory, Amado AZ
    "classify": {"filename_patterns": {"HATP-*": "light"}},  # its lights say so only in their names
    "calibrate": {"require": []},  # the set has no calibration frames
}
"""The configuration sections that reduce ../shared/data/real/02_microobs_hatp32_lights."""


def make_config(tmp_path: Path, **sections) -> Config:
    """A Config whose paths live in tmp_path; `sections` are TOML-like dicts per section."""
    return config_from_dict(_raw_config(tmp_path, **sections), source="test")


def config_file(tmp_path: Path, **sections) -> Path:
    """`make_config`'s configuration as a file, for the command line: tmp_path/observd.toml
    (values of one level: strings, numbers, booleans and lists)."""
    path = tmp_path / "observd.toml"
    path.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
            for name, values in _raw_config(tmp_path, **sections).items()
        )
    )
    return path


def _raw_config(tmp_path: Path, **sections) -> dict:
    raw = {
        "paths": {
            "watch": str(tmp_path / "incoming"),
            "output": str(tmp_path / "out"),
            "database": str(tmp_path / "out" / "observd.db"),
            "status_log": str(tmp_path / "out" / "status.log"),
        }
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def ingest_into(tmp_path: Path, folders, **sections):
    """Ingest `folders` with a tmp_path config (Europe/Berlin unless given): (config, open catalog)."""
    from observd.adapters.catalog import Catalog
    from observd.pipeline.batch import ingest

    sections.setdefault("site", {"timezone": "Europe/Berlin"})
    config = make_config(tmp_path, **sections)
    catalog = Catalog.open(config.paths.database)
    result = ingest(folders, catalog, config)
    assert not result.failed, result.errors
    return config, catalog


def simulate(folder: Path, **spec) -> dict:
    return write_night(folder, SimSpec(**spec))


def single_frame_noise(paths, region) -> list[float]:
    """The sky noise of each aligned frame in `region` (a boolean mask of star-free pixels)."""
    from astropy.io import fits
    from astropy.stats import sigma_clipped_stats

    out = []
    for p in paths:
        _, _, std = sigma_clipped_stats(fits.getdata(p, 0)[region], sigma=3.0, maxiters=10)
        out.append(float(std))
    return out


def sha256_tree(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}
