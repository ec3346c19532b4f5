"""A demo-like night reduced by the real pipeline, for the web page's and the morning report's
tests: two targets (M42 in L and R, NGC7000 in L) with clouded and trailed frames, masters,
stacks with their previews, a light still waiting (an H-alpha frame without an H-alpha flat)
and a file that is not FITS (rejected). 256² pixels and few frames keep it at a few seconds.
"""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits
from support import make_config

from observd.adapters.catalog import Catalog
from observd.core.config import Config
from observd.pipeline.batch import ingest
from observd.pipeline.reducer import Reducer
from observd.pipeline.stacking import stack_night
from observd.sim.spec import SimSpec, TargetSpec
from observd.sim.writer import write_night

NIGHT = "2026-11-20"
SECTIONS = {"site": {"timezone": "Europe/Berlin"}, "masters": {"settle_seconds": 0.0}}


def night_config(root: Path, **sections) -> Config:
    return make_config(root, **{**SECTIONS, **sections})


def reduce_night(root: Path, *, stack: bool = True) -> Config:
    """Simulate the night under `root`/incoming and reduce it (and stack it, unless told not to)."""
    incoming = root / "incoming"
    spec = SimSpec(
        shape=(256, 256),
        seed=2026,
        n_bias=7,
        n_dark=5,
        n_flat=5,
        truth=False,
        targets=(
            TargetSpec("M42", ("L", "R"), n_lights=4, n_stars=150),
            TargetSpec("NGC7000", ("L",), n_lights=4, n_stars=150),
        ),
    )
    write_night(incoming, spec)
    config = night_config(root)
    catalog = Catalog.open(config.paths.database)
    try:
        ingest([incoming], catalog, config)
        if stack:
            Reducer(config, catalog).finish_night(NIGHT)
            stack_night(config, catalog, NIGHT)
        late = [_halpha_light(incoming), incoming / "notes.fits"]
        late[1].write_text("not a FITS file\n")
        ingest(late, catalog, config)
    finally:
        catalog.close()
    return config


def _halpha_light(incoming: Path) -> Path:
    """A copy of the night's last light, taken through an H-alpha filter (which has no flat)."""
    source = sorted(incoming.rglob("*NGC7000_L*.fits"))[-1]
    with fits.open(source) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.copy()
    header["FILTER"] = "Ha"
    header["DATE-OBS"] = header["DATE-OBS"].replace("T20:", "T21:")
    path = incoming / "LIGHT" / "NGC7000_Ha_0001.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    return path
