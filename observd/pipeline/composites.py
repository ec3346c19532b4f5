"""Colour composites of a night's mono stacks: RGB, LRGB, or a narrowband palette (SHO...).

A target's stacks of one night are aligned to the same reference frame (the night's reference
of that target), so their pixels already coincide and the composite is plane by plane: no
resampling. Which filters make which plane is `observd.core.colour.composite_plan`; the cube
(R, G, B planes, linear) and its colour picture (balanced on the stars, one stretch) are
written next to the stacks and recorded as products with `channels = 'R,G,B'` and the
composite's kind as their filter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from observd import __version__
from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import read_planes, write_image
from observd.core.colour import Composite, composite_plan, lrgb, signal_gains
from observd.core.config import Config
from observd.core.layout import composite_stem
from observd.core.stack_plan import format_exposure
from observd.pipeline.astrometry import celestial_cards


def build_composites(config: Config, catalog: Catalog, night: str) -> list[dict]:
    """The composites the night's current mono stacks allow (`[colour] composites`); returns the
    product records written."""
    if not config.colour.composites:
        return []
    stacks: dict[str | None, dict[str, dict]] = {}
    for row in catalog.products(night=night):
        if not row.get("channels") and row["filter"]:
            stacks.setdefault(row["object"], {})[row["filter"]] = row
    written = []
    for obj, by_filter in sorted(stacks.items(), key=lambda kv: kv[0] or ""):
        plan = composite_plan(sorted(by_filter), config.colour.palette)
        if plan is None:
            continue
        try:
            record = _write(config, night, obj, plan, by_filter)
        except (OSError, ValueError) as exc:
            catalog.event("error", "composite-failed", f"{plan.kind} composite of {obj} on {night}: {exc}")
            continue
        inputs = {f for row in by_filter.values() for f in (r["id"] for r in catalog.product_inputs(row["id"]))}
        catalog.add_product(record, sorted(inputs))
        catalog.event("info", "stack", f"{plan.kind} composite {obj} of {night}: {plan.describe()}", record["path"])
        written.append(record)
    return written


def _write(config: Config, night: str, obj: str | None, plan: Composite, by_filter: dict[str, dict]) -> dict:
    planes = [read_planes(Path(by_filter[f]["path"])) for f in plan.planes]
    lum = read_planes(Path(by_filter[plan.luminance]["path"])) if plan.luminance else None
    shapes = {p.data.shape for p in planes + ([lum] if lum else [])}
    if len(shapes) != 1:
        raise ValueError(f"the stacks differ in size ({', '.join(f'{s[1]}x{s[0]}' for s in shapes)})")
    rgb = np.stack([p.data for p in planes])
    if lum is not None:
        rgb = lrgb(rgb, lum.data)
    mask = np.zeros(rgb.shape[1:], bool)
    for p in planes + ([lum] if lum else []):
        if p.mask is not None:
            mask |= p.mask != 0
    used = [by_filter[f] for f in dict.fromkeys((*plan.planes, *([plan.luminance] if plan.luminance else ())))]
    exposure = float(sum(r["total_exptime"] or 0.0 for r in used))
    header = fits.Header()
    header["BUNIT"] = "adu"
    header["OBJECT"] = obj or ""
    header["NIGHT"] = (night, "observing night (local date of the evening)")
    header["COMPOSIT"] = (plan.kind, "colour composite of mono stacks")
    header["CHANNELS"] = ("R,G,B", "planes of this cube: red, green, blue")
    header["CMAPPING"] = (plan.describe(), "filter of each plane (L: luminance)")
    header["EXPTIME"] = (exposure, "[s] total exposure of the stacks used")
    header["OBSERVD"] = (__version__, "observd version")
    for i, row in enumerate(used, start=1):
        header[f"IMCMB{i:03d}"] = Path(row["path"]).name
    header.add_history(f"observd {__version__}: {plan.kind} composite, {plan.describe()}, planes as stacked")
    if lum is not None:
        header.add_history(f"observd {__version__}: luminance from {plan.luminance}, colour differences from R, G, B")
    solved = _solved_on_same_grid(used)
    if solved is not None:
        header.update(celestial_cards(fits.getheader(solved["path"])))
        header.add_history(f"observd: WCS of the {solved['filter']} stack (same reference, same pixel grid)")
    stem = composite_stem(config.paths.output, night, obj, plan.kind)
    path = write_image(stem.with_name(f"{stem.name}.fits"), rgb, header, mask=mask, cache=False)
    title = f"{obj or 'unknown'} — {plan.kind}"
    lines = [plan.describe(), f"{format_exposure(exposure)}, night {night}"]
    from observd.adapters.previews import write_pictures  # here: only a night with a composite needs matplotlib

    preview, thumb = write_pictures(rgb, stem, title, lines, _gains(config, plan, rgb))
    return {
        "night": night,
        "object": obj,
        "filter": plan.kind,
        "path": str(path),
        "preview_path": str(preview),
        "thumbnail_path": str(thumb),
        "n_combined": int(sum(r["n_combined"] or 0 for r in used)),
        "total_exptime": exposure,
        "reference": used[0]["reference"],
        "noise": None,
        "channels": "R,G,B",
        **(_carried_solution(solved) if solved is not None else {}),
    }


def _carried_solution(stack: dict) -> dict:
    """The catalog's solve_* columns of a composite that took `stack`'s WCS: its solution, no
    solve time of its own."""
    record = {key: stack[key] for key in stack if key.startswith("solve_")}
    record.update(solve_reason=f"WCS of the {stack['filter']} stack", solve_seconds=0.0)
    return record


def _solved_on_same_grid(stacks: list[dict]) -> dict | None:
    """A plate-solved stack among `stacks`, when they were all aligned to one reference (so one
    pixel grid, and its WCS is the composite's); None otherwise."""
    if len({row["reference"] for row in stacks}) != 1:
        return None
    return next((row for row in stacks if row.get("solve_state") == "solved"), None)


def _gains(config: Config, plan: Composite, rgb: np.ndarray) -> tuple[float, ...] | None:
    """Broadband composites are balanced like colour stacks; a narrowband palette is false colour
    by design, balanced on its nebula (`signal_gains`): stars are faint in Ha, OIII and SII."""
    if plan.kind not in ("RGB", "LRGB"):
        return signal_gains(rgb)
    return picture_gains(config)


def picture_gains(config: Config) -> tuple[float, ...] | None:
    """The white balance of colour pictures (`[colour] white_balance`): None = from the stars."""
    wb = config.colour
    return {"stars": None, "camera": tuple(wb.camera_gains), "none": (1.0, 1.0, 1.0)}[wb.white_balance]
