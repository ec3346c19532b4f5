"""Plate solving of a written stack: its WCS into its FITS header, its solution for the catalog.

Called by stacking after each stack is written, with the stars measured on it (the luminance of a
colour cube) and the header of one of its input lights (the hints: pixel scale from
FOCALLEN/XPIXSZ or the header's scale, position from RA/DEC or OBJCTRA/OBJCTDEC). A solved stack is
rewritten atomically with the TAN-SIP WCS cards; a stack that is not solved is left as it is, and
the reason is returned. Nothing here raises: plate solving never fails a stack.
"""

from __future__ import annotations

import logging
from pathlib import Path

from astropy.io import fits

from observd.adapters import plate_solver
from observd.adapters.fits_files import write_atomic
from observd.adapters.plate_solver import Solution
from observd.core.config import Config
from observd.core.measure import Stars
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


def _write_wcs(path: Path, solution: Solution) -> None:
    cards = plate_solver.wcs_cards(solution)
    # memory-mapped: the pixels stream from the old file into the new one (the old inode stays
    # readable until closed, after the rename), so a big stack is not held in memory twice
    with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
        header = hdul[0].header
        for key in ("CTYPE1", "CTYPE2", "CDELT1", "CDELT2", "CROTA1", "CROTA2"):  # capture-program placeholders
            header.remove(key, ignore_missing=True, remove_all=True)
        header.update(cards)
        header.add_history(
            f"observd: plate solved by astrometry.net in {solution.seconds:.1f} s, "
            f'{solution.scale:.3f}"/px, residual {solution.residual}"'
        )
        write_atomic(path, hdul, cache=False)
