"""A light curve on disk: the ECSV table (astropy, with units and metadata) and its PNG plot.

Both are written atomically (`fits_files.write_with`: temporary file in the folder, fsync,
rename). The plot has four panels sharing the time axis (hours from the first frame, BJD_TDB
given in the axis label): relative flux — every good frame, the flagged ones as red crosses,
and the good frames binned —, airmass, FWHM and sky. Drawn with matplotlib's object API (no
pyplot state: safe in the daemon's threads).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from observd.adapters.fits_files import write_with

__all__ = ["write_light_curve_table", "write_light_curve_plot"]


def write_light_curve_table(table: Table, path: Path) -> Path:
    """`table` as ECSV (units and `table.meta` in its YAML header)."""
    text = io.StringIO()
    table.write(text, format="ascii.ecsv")
    data = text.getvalue().encode()
    return write_with(path, lambda fh: fh.write(data))


def write_light_curve_plot(
    table: Table, path: Path, *, title: str, binned: Sequence[np.ndarray], lines: Sequence[str] = ()
) -> Path:
    """The light curve's picture; `binned` = (BJD_TDB, relative flux, error) of the binned points."""
    bjd = np.asarray(table["bjd_tdb"], np.float64)
    t0 = float(np.floor(bjd.min() * 24.0) / 24.0)  # the hour before the first frame
    hours = (bjd - t0) * 24.0
    good = np.asarray(table["flag"]) == "ok"
    figure = Figure(figsize=(8.0, 8.5), dpi=100, layout="constrained")
    axes = figure.subplots(4, 1, sharex=True, height_ratios=(3.0, 1.0, 1.0, 1.0))
    rel, err = np.asarray(table["rel_flux"], np.float64), np.asarray(table["rel_flux_err"], np.float64)
    top = axes[0]
    top.errorbar(hours[good], rel[good], yerr=err[good], fmt=".", color="0.55", ms=4, lw=0.6, label="frames")
    if (~good).any():
        shown = ~good & np.isfinite(rel)
        top.plot(hours[shown], rel[shown], "x", color="tab:red", ms=5, label="flagged (bad)")
    b_time, b_flux, b_err = (np.asarray(a, np.float64) for a in binned)
    if len(b_time):
        top.errorbar((b_time - t0) * 24.0, b_flux, yerr=b_err, fmt="o", color="tab:blue", ms=5, label="binned")
    if good.any():  # the y range from the good frames: one flagged frame must not squash the curve
        low, high = np.nanpercentile(rel[good], [0.5, 99.5])
        pad = max(high - low, 1e-3) * 0.25
        top.set_ylim(low - pad, high + pad)
    top.set_ylabel("relative flux")
    top.set_title(title, fontsize=11, loc="left")
    top.legend(loc="best", fontsize=8)
    if lines:
        top.text(0.01, 0.02, "\n".join(lines), transform=top.transAxes, fontsize=8, va="bottom")
    for ax, column, label in zip(axes[1:], ("airmass", "fwhm", "sky"), ("airmass", "FWHM [px]", "sky [ADU/px]")):
        values = np.asarray(table[column], np.float64)
        ax.plot(hours[good], values[good], ".", color="k", ms=3)
        if (~good).any():
            ax.plot(hours[~good], values[~good], "x", color="tab:red", ms=4)
        ax.set_ylabel(label)
    axes[-1].set_xlabel(f"hours from BJD_TDB {t0:.5f}")
    for ax in axes:
        ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    data = buffer.getvalue()
    return write_with(path, lambda fh: fh.write(data))
