"""Plate solving with astrometry.net's `solve-field`, fed observd's own star list.

No second source extraction: the stars `observd.core.measure.measure` found on the stack are
written as an x/y/flux list (a FITS table, 1-based FITS pixel coordinates, brightest first) and
solved with the scale and position hints of `observd.core.wcs_hints`, a CPU-time bound, and a
TAN-SIP fit (`--tweak-order`) referenced to the image centre (`--crpix-center`). Everything
solve-field writes goes to a temporary folder that is removed afterwards; the result is a WCS
(astropy) and a few numbers for the catalog.

Never raises for a solving problem: a missing `solve-field` (one warning per process), a field
narrower than the installed index files, no solution within the CPU limit, a crash — each is a
`Solution` with `state` 'skipped' or 'failed' and a reason.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from observd.core.wcs_hints import SolveHints, solve_args, too_narrow

if TYPE_CHECKING:
    from astropy.wcs import WCS

log = logging.getLogger(__name__)

DEFAULT_INDEX_DIR = Path("/usr/share/astrometry")
MAX_STARS = 200  # the brightest this many stars are offered to the solver
TIMEOUT_MARGIN_S = 30.0  # wall-clock bound: twice the CPU limit plus this (2 shared cores, index loading)
_warned_missing = False


@dataclass(frozen=True)
class Solution:
    state: str  # 'solved' | 'skipped' | 'failed'
    reason: str | None = None
    wcs: WCS | None = None
    ra: float | None = None  # field centre, degrees
    dec: float | None = None
    scale: float | None = None  # "/px
    rotation: float | None = None  # degrees E of N of the image's +y axis (astrometry.net's "up")
    residual: float | None = None  # RMS of the matched stars' offsets, arcsec
    n_matched: int | None = None
    seconds: float | None = None  # wall time of solve-field

    def record(self) -> dict:
        """The catalog's `products` columns (migration 5)."""
        return {
            "solve_state": self.state,
            "solve_reason": self.reason,
            "solve_ra": self.ra,
            "solve_dec": self.dec,
            "solve_scale": self.scale,
            "solve_rotation": self.rotation,
            "solve_residual": self.residual,
            "solve_seconds": self.seconds,
        }


def solver_path() -> str | None:
    return shutil.which("solve-field")


@lru_cache(maxsize=8)
def index_quad_ranges(index_dir: Path = DEFAULT_INDEX_DIR) -> tuple[tuple[float, float], ...]:
    """(SCALE_L, SCALE_U) in arcminutes of each astrometry.net index file in `index_dir`."""
    ranges = []
    for path in sorted(Path(index_dir).glob("index-*.fits")):
        try:
            header = fits.getheader(path)
            lo, hi = float(header["SCALE_L"]), float(header["SCALE_U"])
        except (OSError, KeyError, ValueError):
            continue
        ranges.append((math.degrees(lo) * 60.0, math.degrees(hi) * 60.0))
    return tuple(ranges)


def write_xylist(path: Path, x: np.ndarray, y: np.ndarray, flux: np.ndarray, width: int, height: int) -> Path:
    """An xylist for solve-field: X, Y in 1-based FITS pixels (observd's 0-based centres + 1),
    FLUX, brightest first; IMAGEW/IMAGEH in the header."""
    x, y, flux = (np.asarray(a, dtype=np.float64) for a in (x, y, flux))
    order = np.argsort(-flux, kind="stable")
    columns = [
        fits.Column(name="X", format="D", array=x[order] + 1.0),
        fits.Column(name="Y", format="D", array=y[order] + 1.0),
        fits.Column(name="FLUX", format="D", array=flux[order]),
    ]
    table = fits.BinTableHDU.from_columns(columns)
    table.header["IMAGEW"] = width
    table.header["IMAGEH"] = height
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path, overwrite=True)
    return path


def command(
    xylist: Path,
    workdir: Path,
    width: int,
    height: int,
    hints: SolveHints,
    *,
    cpu_limit: float,
    radius_deg: float,
    tweak_order: int,
    index_dir: Path | None = None,
) -> list[str]:
    args = [
        solver_path() or "solve-field",
        str(xylist),
        "--x-column", "X", "--y-column", "Y", "--sort-column", "FLUX",
        "--width", str(width), "--height", str(height),
        "--cpulimit", str(max(1, math.ceil(cpu_limit))),
        "--no-plots", "--overwrite", "--dir", str(workdir),
        "--crpix-center", "--tweak-order", str(tweak_order),
        "--new-fits", "none", "--index-xyls", "none", "--rdls", "none", "--solved", "none",
        "--corr", str(workdir / "field.corr"), "--wcs", str(workdir / "field.wcs"),
    ]  # fmt: skip
    if index_dir is not None:  # an index folder other than /etc/astrometry.cfg's
        config = workdir / "astrometry.cfg"
        config.write_text(f"add_path {index_dir}\nautoindex\ninparallel\n")
        args += ["--config", str(config)]
    return args + solve_args(hints, radius_deg=radius_deg)


def solve(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    width: int,
    height: int,
    hints: SolveHints,
    *,
    cpu_limit: float = 30.0,
    radius_deg: float = 2.0,
    tweak_order: int = 2,
    index_dir: Path | None = None,
) -> Solution:
    """Solve a star list (0-based pixel centres, as `measure` returns them)."""
    global _warned_missing
    if solver_path() is None:
        reason = "astrometry.net's solve-field is not installed (apt install astrometry.net astrometry-data-tycho2)"
        if not _warned_missing:
            log.warning("plate solving skipped: %s", reason)
            _warned_missing = True
        return Solution("skipped", reason)
    ranges = index_quad_ranges(Path(index_dir) if index_dir else DEFAULT_INDEX_DIR)
    if not ranges:
        return Solution("skipped", f"no astrometry.net index files in {index_dir or DEFAULT_INDEX_DIR}")
    if hints.scale is not None and (reason := too_narrow(width, height, hints.scale, ranges)):
        return Solution("skipped", reason)
    if hints.ra is None or hints.dec is None:
        return Solution("skipped", "no RA/DEC or OBJCTRA/OBJCTDEC in the lights' headers (no blind solving)")
    if len(x) < 5:
        return Solution("skipped", f"only {len(x)} stars detected: too few to solve")
    n = min(len(x), MAX_STARS)
    with tempfile.TemporaryDirectory(prefix="observd-solve-") as tmp:
        work = Path(tmp)
        xylist = write_xylist(work / "field.xyls", x[:n], y[:n], flux[:n], width, height)
        args = command(
            xylist,
            work,
            width,
            height,
            hints,
            cpu_limit=cpu_limit,
            radius_deg=radius_deg,
            tweak_order=tweak_order,
            index_dir=index_dir,
        )
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
        except OSError as exc:
            return Solution("failed", f"solve-field could not start: {exc}")
        try:
            out, _ = proc.communicate(timeout=cpu_limit * 2 + TIMEOUT_MARGIN_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            seconds = round(time.monotonic() - start, 2)
            return Solution(
                "failed",
                f"solve-field ran over {cpu_limit * 2 + TIMEOUT_MARGIN_S:.0f} s and was stopped",
                seconds=seconds,
            )
        seconds = time.monotonic() - start
        wcs_path = work / "field.wcs"
        if not wcs_path.exists():
            tail = " ".join((out or "").strip().splitlines()[-2:])[-300:]
            why = "no solution" + (f" within the CPU limit of {cpu_limit:g} s" if "cpu" in (out or "").lower() else "")
            if proc.returncode:
                why = f"solve-field exited with status {proc.returncode}"
            return Solution("failed", f"{why} ({tail})" if tail else why, seconds=round(seconds, 2))
        try:
            return _solution(wcs_path, work / "field.corr", width, height, seconds)
        except Exception as exc:  # an unreadable result is a failed solve, not a failed stack
            why = f"solve-field's result unreadable: {type(exc).__name__}: {exc}"
            return Solution("failed", why, seconds=round(seconds, 2))


def _solution(wcs_path: Path, corr_path: Path, width: int, height: int, seconds: float) -> Solution:
    # imported here: astropy.wcs (with coordinates and tables) is ~14 MiB of the process that
    # records stacks, needed only once a solver has answered
    from astropy.wcs import WCS, FITSFixedWarning

    header = fits.getheader(wcs_path)
    with warnings.catch_warnings():  # the .wcs file is a header without an image
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0  # 0-based centre
    (ra, dec), (ra_up, dec_up), (ra_right, dec_right) = wcs.all_pix2world([[cx, cy], [cx, cy + 1], [cx + 1, cy]], 0)
    scale = 3600.0 * math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))
    rotation = _position_angle(ra, dec, ra_up, dec_up)
    residual, n_matched = None, None
    if corr_path.exists():
        with fits.open(corr_path) as hdul:
            table = hdul[1].data
            if table is not None and len(table):
                dx = table["field_x"] - table["index_x"]
                dy = table["field_y"] - table["index_y"]
                residual = float(np.sqrt(np.mean(dx**2 + dy**2))) * scale
                n_matched = len(table)
    return Solution(
        "solved",
        None,
        wcs,
        float(ra),
        float(dec),
        round(float(scale), 4),
        round(float(rotation), 2),
        None if residual is None else round(residual, 3),
        n_matched,
        round(seconds, 2),
    )


def _position_angle(ra0: float, dec0: float, ra1: float, dec1: float) -> float:
    """Position angle (degrees E of N, 0..360) of point 1 seen from point 0."""
    r0, d0, r1, d1 = map(math.radians, (ra0, dec0, ra1, dec1))
    dra = r1 - r0
    north = math.cos(d0) * math.sin(d1) - math.sin(d0) * math.cos(d1) * math.cos(dra)
    angle = math.atan2(math.sin(dra) * math.cos(d1), north)
    return math.degrees(angle) % 360.0


def wcs_cards(solution: Solution) -> fits.Header:
    """The solution as header cards for a stack (TAN-SIP, 2 axes; also right for a colour cube)."""
    header = celestial_header(solution.wcs)
    header["PLTSOLVD"] = (True, "plate solved by astrometry.net (observd)")
    header["PLTSCALE"] = (solution.scale, '["/px] pixel scale of the solution')
    header["PLTROT"] = (solution.rotation, "[deg] position angle of +y (E of N)")
    if solution.residual is not None:
        header["PLTRESID"] = (solution.residual, "[arcsec] RMS of the matched stars")
    return header


def celestial_header(wcs) -> fits.Header:
    """`wcs` (an astropy WCS, SIP included) as the cards of an image's 2 celestial axes, without
    the solver's own dates (the image's DATE-OBS must stay the observation's)."""
    header = wcs.to_header(relax=True)
    header["WCSAXES"] = 2
    for key in ("DATE-OBS", "MJD-OBS", "DATE-BEG", "MJD-BEG", "DATEREF", "MJDREF"):
        header.remove(key, ignore_missing=True, remove_all=True)
    return header
