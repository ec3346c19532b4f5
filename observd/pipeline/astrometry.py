"""Plate solving of a written stack: its WCS into its FITS header, its solution for the catalog.

Called by stacking after each stack is written, with the stars measured on it (the luminance of a
colour cube) and the header of one of its input lights (the hints: pixel scale from
FOCALLEN/XPIXSZ or the header's scale, position from RA/DEC or OBJCTRA/OBJCTDEC). A solved stack is
rewritten atomically with the TAN-SIP WCS cards; a stack that is not solved is left as it is, and
the reason is returned. Nothing here raises: plate solving never fails a stack.

One solve serves every image on the stack's pixel grid. Aligned lights are resampled onto their
night's reference for the target, and so is the stack made of them: the stack's WCS *is* theirs
(each light's stored transform was applied to its pixels when it was aligned), so with
`[astrometry] lights = true` it is copied into them instead of solving each light. Composites of
mono stacks aligned to the same reference take it the same way (`celestial_cards`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from astropy.io import fits

from observd.adapters import plate_solver
from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import write_atomic
from observd.adapters.plate_solver import Solution
from observd.core.config import Config
from observd.core.measure import Stars
from observd.core.stack_plan import StackGroup
from observd.core.wcs_hints import solve_hints

log = logging.getLogger(__name__)


def input_header(row: dict) -> fits.Header | None:
    """The header of an input light (the original file), for the hints; None when unreadable."""
    try:
        return fits.getheader(row["path"], ext=row.get("hdu_index") or 0)
    except (OSError, KeyError, TypeError, IndexError):
        return None


def solve_stack(config: Config, path: Path, stars: Stars | None, hint_header: fits.Header | None) -> Solution | None:
    """Solve the stack at `path`; write its WCS into it when solved. None when disabled."""
    c = config.astrometry
    if not c.enabled:
        return None
    try:
        if stars is None:
            return Solution("skipped", "no star list measured on the stack")
        with fits.open(path) as hdul:
            shape = hdul[0].header["NAXIS2"], hdul[0].header["NAXIS1"]
        hints = solve_hints(hint_header if hint_header is not None else {})
        solution = plate_solver.solve(
            stars.x,
            stars.y,
            stars.flux,
            shape[1],
            shape[0],
            hints,
            cpu_limit=c.cpu_limit_s,
            radius_deg=c.radius_deg,
            tweak_order=c.tweak_order,
            index_dir=Path(c.index_dir) if c.index_dir else None,
        )
        if solution.state == "solved":
            _write_wcs(path, solution)
        return solution
    except Exception as exc:  # plate solving must never fail a stack
        log.warning("plate solving of %s failed: %s: %s", path, type(exc).__name__, exc)
        return Solution("failed", f"{type(exc).__name__}: {exc}")


def wcs_to_lights(config: Config, catalog: Catalog, stack: Path, group: StackGroup) -> None:
    """With `[astrometry] lights`, the solved nightly `stack`'s WCS into every aligned light of its
    target and filter on the same reference grid (judged bad ones too: they are aligned all the
    same); one event says how many, and why any was left out."""
    if not config.astrometry.lights or group.reference is None:
        return
    lights = [
        Path(r["aligned_path"])
        for r in catalog.files(night=group.night, types=("light",))
        if r["aligned_path"]
        and r["reference_id"] == group.reference["id"]
        and (r["object"], r["filter"]) == (group.object, group.filter)
    ]
    written, problems = carry_wcs(stack, lights)
    level = "warning" if problems else "info"
    text = f"WCS of {stack.name} written into {written} of {len(lights)} aligned lights"
    catalog.event(level, "plate-solve", text + ("; " + "; ".join(problems[:3]) if problems else ""), str(stack))


def carry_wcs(stack: Path, lights: list[Path]) -> tuple[int, list[str]]:
    """Copy the solved `stack`'s WCS into the aligned `lights` on its pixel grid (module
    docstring); returns how many were written and why the others were not."""
    cards = celestial_cards(fits.getheader(stack))
    shape = _shape(stack)
    written, problems = 0, []
    for light in lights:
        try:
            if _shape(light) != shape:
                problems.append(f"{light.name}: {_shape(light)} is not the stack's pixel grid {shape}")
                continue
            _write_cards(light, cards, f"observd: WCS of the stack {stack.name}, same pixel grid")
            written += 1
        except (OSError, KeyError, ValueError) as exc:
            problems.append(f"{light.name}: {type(exc).__name__}: {exc}")
    return written, problems


def celestial_cards(header: fits.Header) -> fits.Header:
    """The WCS and plate-solving cards of a solved image's header (empty when it has none)."""
    if not header.get("PLTSOLVD"):
        return fits.Header()
    from astropy.wcs import WCS  # not at the top: the command's process goes without it until a stack is solved

    cards = plate_solver.celestial_header(WCS(header, naxis=2))
    for key in ("PLTSOLVD", "PLTSCALE", "PLTROT", "PLTRESID"):
        if key in header:
            cards[key] = (header[key], header.comments[key])
    return cards


def _shape(path: Path) -> tuple[int, int]:
    header = fits.getheader(path)
    return header["NAXIS2"], header["NAXIS1"]


def _write_wcs(path: Path, solution: Solution) -> None:
    _write_cards(
        path,
        plate_solver.wcs_cards(solution),
        f"observd: plate solved by astrometry.net in {solution.seconds:.1f} s, "
        f'{solution.scale:.3f}"/px, residual {solution.residual}"',
    )


def _write_cards(path: Path, cards: fits.Header, history: str) -> None:
    # memory-mapped: the pixels stream from the old file into the new one (the old inode stays
    # readable until closed, after the rename), so a big image is not held in memory twice
    with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
        header = hdul[0].header
        for key in ("CTYPE1", "CTYPE2", "CDELT1", "CDELT2", "CROTA1", "CROTA2"):  # capture-program placeholders
            header.remove(key, ignore_missing=True, remove_all=True)
        header.update(cards)
        header.add_history(history)
        write_atomic(path, hdul, cache=False)
