"""Nightly light curves of the `[photometry] targets`: differential aperture photometry per night,
target and stack.

Called by `observd.pipeline.stacking.stack_night` once the night's stacks are built and plate
solved. For each configured target and each stack (object, filter) of the night:

- **Where the target is.** A named target's RA/Dec goes through the stack's WCS (plate solved:
  `observd.pipeline.astrometry`) to a pixel of the stack, which is the pixel grid of the night's
  alignment reference. ``OBJECT`` is the stack's own pointing target: the lights' OBJCTRA/OBJCTDEC
  (N.I.N.A. and MaxIm DL write the object's catalogue coordinates there), else RA/DEC (the
  mount's pointing, which may be arcminutes off the star: MicroObservatory points 11' from
  HAT-P-32), else the solved centre of the stack. The position is moved to the nearest star
  detected on the reference within 1.5 FWHM; when there is none the aperture stays at the
  catalogue position (forced photometry) and the metadata says so. No WCS, no site, a target
  outside the field, too few good frames: no light curve, and the reason is recorded.
- **Which pixels are measured.** The *calibrated* lights, at the target's position carried from
  the reference through each light's stored alignment transform — not the aligned (resampled)
  lights. Resampling averages neighbouring pixels, which correlates their noise: the annulus's
  pixel scatter then understates the noise, and the errors with it; the calibrated frames keep
  independent pixels and their UNCERT plane, so the errors (and the expected noise the scatter is
  judged against) are honest, at the price of one matrix product per frame. A one-shot-colour
  light is measured on its green plane: closest to V, sampled by half the Bayer sites (twice red
  or blue), as AAVSO's DSLR photometry does (TG); the luminance would mix three bandpasses whose
  ratio changes with airmass.
- **Comparison stars**: among the stars detected on the reference (`observd.core.photometry`).
- **Per frame**: mid-exposure BJD_TDB and airmass (`observd.core.timing`; AIRMASS from the header
  when the capture program wrote it), relative flux and error, ensemble flux, FWHM, sky, and a
  flag for frames judged bad (saturated or bad pixel in the target's aperture, annulus off the
  frame, clouds: the ensemble below half its median).

Products: `<output>/<night>/lightcurves/<target>_<object>_<filter>.ecsv` and `.png`, recorded in
the catalog's `light_curves` table (shown by `observd status`). Nothing here raises: a light
curve that cannot be made is a row with its reason, never a failed stack.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from observd import __version__
from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import read_planes
from observd.adapters.light_curve_files import write_light_curve_plot, write_light_curve_table
from observd.core.config import POINTING_TARGET, Config, PhotometryConfig
from observd.core.layout import light_curve_stem
from observd.core.photometry import (
    CLOUD_FRACTION,
    FLAGS,
    OUTLIER_SIGMA,
    bin_series,
    choose_comparisons,
    comparison_outliers,
    ensemble,
    measure_stars,
    outliers,
    point_to_point,
    relative_flux,
)
from observd.core.timing import Site, bjd_tdb_and_airmass, site_from_header
from observd.core.wcs_hints import position, radec, sexagesimal

log = logging.getLogger(__name__)

__all__ = ["light_curves_of_night", "NoLightCurve"]

SNAP_FWHM = 1.5  # a detected star within this many FWHM of the predicted position is the target
GREEN = 1  # the plane of a colour cube (R, G, B) that is measured
CANDIDATES = 3  # comparison candidates measured per comparison wanted (the choice drops some)
FALLBACK_FWHM = 3.0  # px: the apertures of a frame whose FWHM was not measured (it is flagged)
GOOD = "ok"  # the flag column of a good frame (ECSV reads an empty string back as missing)


class NoLightCurve(Exception):
    """The light curve cannot be made; the message says why, for the status."""


class OutsideField(NoLightCurve):
    """The target is not in this stack's field (a named target may be in another stack's)."""


@dataclass(frozen=True)
class Target:
    name: str  # as configured
    ra: float | None  # degrees; None: the stack's pointing target (OBJECT)
    dec: float | None


def light_curves_of_night(config: Config, catalog: Catalog, night: str) -> list[dict]:
    """Make (or remake) the night's light curves; record each, or why it was not made."""
    p = config.photometry
    if not p.targets:
        return []
    stacks = [s for s in catalog.products(night=night) if _is_stack(catalog, s)]
    records = []
    for name, where in p.targets.items():
        target = Target(name, None, None) if name == POINTING_TARGET else Target(name, *radec(where))
        outcomes = [_record(config, catalog, night, target, stack) for stack in stacks]
        # a named target outside a stack's field is another target's night: only said when in no field
        kept = [r for r, outside in outcomes if not outside] if target.ra is not None else [r for r, _ in outcomes]
        if not kept:
            fields = "; ".join(r["reason"] for r, _ in outcomes) or "no stack this night"
            kept = [_skipped(night, target, None, f"not in the field of any stack of the night ({fields})")]
        records += kept
    catalog.replace_light_curves(night, records)
    for record in records:
        _tell(catalog, record)
    return records


def _is_stack(catalog: Catalog, product: dict) -> bool:
    """A stack of one filter's lights (a composite's inputs span several filters)."""
    inputs = catalog.product_inputs(product["id"])
    return bool(inputs) and all(r["filter"] == product["filter"] for r in inputs)


def _tell(catalog: Catalog, record: dict) -> None:
    stack = f" on {record['object']} [{record['filter']}]" if record["object"] else ""
    what = f"light curve of {record['target']}{stack} of {record['night']}"
    if record["state"] == "written":
        text = (
            f"{what}: {record['n_good']}/{record['n_frames']} good frames, {record['n_comparisons']} comparison "
            f"stars, scatter {record['scatter']:.4f} (expected {record['expected']:.4f})"
        )
        catalog.event("info", "light-curve", text, record["path"])
    else:
        catalog.event("warning", "light-curve", f"{what}: {record['state']} — {record['reason']}")


def _skipped(night: str, target: Target, stack: dict | None, why: str, state: str = "skipped") -> dict:
    return {
        "night": night,
        "target": target.name,
        "object": stack["object"] if stack else None,
        "filter": stack["filter"] if stack else None,
        "state": state,
        "reason": why,
        "ra": target.ra,
        "dec": target.dec,
    }


def _record(config: Config, catalog: Catalog, night: str, target: Target, stack: dict) -> tuple[dict, bool]:
    """The light curve's record, and whether the target is outside the stack's field."""
    try:
        return _light_curve(config, catalog, night, target, stack), False
    except NoLightCurve as exc:
        return _skipped(night, target, stack, str(exc)), isinstance(exc, OutsideField)
    except Exception as exc:  # a light curve never fails the night's stacks
        log.warning("light curve of %s on %s failed", target.name, stack["path"], exc_info=True)
        return _skipped(night, target, stack, f"{type(exc).__name__}: {exc}", state="failed"), False


def stack_wcs(stack: dict) -> WCS:
    """The stack's plate solution; NoLightCurve with the solver's reason when it has none."""
    if stack.get("solve_state") != "solved":
        if stack.get("solve_state") is None:
            raise NoLightCurve("no WCS: the stack was not plate solved ([astrometry] enabled = false?)")
        raise NoLightCurve(f"no WCS: plate solving {stack['solve_state']}: {stack['solve_reason']}")
    return WCS(fits.getheader(stack["path"]), naxis=2)


def _light_curve(config: Config, catalog: Catalog, night: str, target: Target, stack: dict) -> dict:
    p = config.photometry
    rows = [r for r in catalog.product_inputs(stack["id"]) if r["calibrated_path"] and r["transform"]]
    reference = catalog.file(rows[0]["reference_id"]) if rows and rows[0]["reference_id"] else None
    if reference is None or len(rows) < p.min_frames:
        raise NoLightCurve(f"only {len(rows)} aligned lights (needs {p.min_frames}, [photometry] min_frames)")
    wcs = stack_wcs(stack)
    ref_header = fits.getheader(reference["calibrated_path"])
    ra, dec, source = _where(target, ref_header, stack)
    site = site_from_header(ref_header, config.site.latitude, config.site.longitude, config.site.elevation)
    if site is None:
        raise NoLightCurve(
            "no site: the lights have no SITELAT/SITELONG and [site] latitude/longitude are not set "
            "(needed for BJD_TDB and airmass)"
        )
    shape = (int(ref_header["NAXIS2"]), int(ref_header["NAXIS1"]))
    ref_fwhm = reference["fwhm"] or float(np.median([r["fwhm"] for r in rows if r["fwhm"]] or [FALLBACK_FWHM]))
    margin = p.annulus_fwhm[1] * ref_fwhm
    x0, y0, why = _pixel(wcs, ra, dec, shape)
    if why is None and not (margin <= x0 <= shape[1] - 1 - margin and margin <= y0 <= shape[0] - 1 - margin):
        why = f"pixel ({x0:.0f}, {y0:.0f}) of {shape[1]}x{shape[0]}, the annulus needs {margin:.0f} px of margin"
    if why is not None:
        field = f"{stack['object']} [{stack['filter']}]"
        raise OutsideField(f"{target.name} ({_radec_text(ra, dec)}) is outside the field of {field}: {why}")
    stars = np.array(json.loads(reference["stars"]) or np.empty((0, 3)), np.float64).reshape(-1, 3)
    x0, y0, detected = _snap(x0, y0, stars, SNAP_FWHM * ref_fwhm)
    others = _candidates(stars, x0, y0, ref_fwhm, detected, CANDIDATES * p.max_comparisons)
    positions = np.vstack([[x0, y0], others[:, :2]])  # the target first, then the candidates
    frames = [_measure_frame(config, row, positions) for row in rows]
    return _assemble(config, night, target, stack, rows, frames, positions, site, (ra, dec, source), detected, wcs)


def _pixel(wcs: WCS, ra: float, dec: float, shape: tuple[int, int]) -> tuple[float, float, str | None]:
    """(x, y) of (ra, dec) on the stack, or why it is not on it. A point far outside the field is
    judged by its distance from the centre first: a tangent-plane projection (and its SIP
    inversion) means nothing there, 90° away it is not even defined."""
    centre = wcs.pixel_to_world((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    corner = wcs.pixel_to_world(0.0, 0.0)
    distance = centre.separation(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"))
    radius = centre.separation(corner)
    if distance > 2.0 * radius:
        return np.nan, np.nan, f"{distance.deg:.2f}° from its centre, whose corners are {radius.deg:.2f}° away"
    x, y = wcs.all_world2pix([[ra, dec]], 0, quiet=True)[0]
    return float(x), float(y), None


def _where(target: Target, header: fits.Header, stack: dict) -> tuple[float, float, str]:
    """The target's (ra, dec, where it came from)."""
    if target.ra is not None:
        return target.ra, target.dec, "[photometry.targets]"
    ra, dec = sexagesimal(header.get("OBJCTRA")), sexagesimal(header.get("OBJCTDEC"))
    if ra is not None and dec is not None and 0 <= ra < 24 and -90 <= dec <= 90:
        return ra * 15.0, dec, "OBJCTRA/OBJCTDEC"
    ra, dec, source = position(header)
    if ra is not None:
        return ra, dec, source
    if stack.get("solve_ra") is not None:
        return stack["solve_ra"], stack["solve_dec"], "the stack's centre"
    raise NoLightCurve("no RA/DEC or OBJCTRA/OBJCTDEC in the lights' headers: where is OBJECT?")


def _candidates(stars: np.ndarray, x: float, y: float, fwhm: float, detected: bool, n: int) -> np.ndarray:
    """The reference's stars worth measuring as comparisons: not the target, and the `n` nearest
    to its brightness on the reference (all of them when the target was not detected there)."""
    distance = np.hypot(stars[:, 0] - x, stars[:, 1] - y)
    others = stars[distance > 2.0 * fwhm]
    if not detected or not len(others):
        return others
    target_flux = stars[int(np.argmin(distance)), 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(np.log(np.maximum(others[:, 2], 1e-9) / target_flux))
    return others[np.argsort(gap, kind="stable")[:n]]


def _snap(x: float, y: float, stars: np.ndarray, radius: float) -> tuple[float, float, bool]:
    if not len(stars):
        return x, y, False
    d = np.hypot(stars[:, 0] - x, stars[:, 1] - y)
    i = int(np.argmin(d))
    return (float(stars[i, 0]), float(stars[i, 1]), True) if d[i] <= radius else (x, y, False)


@dataclass(frozen=True)
class FrameMeasurement:
    flux: np.ndarray  # per star, target first
    error: np.ndarray
    unusable: np.ndarray  # per star: saturated, bad pixel or off the frame
    target_flags: tuple[str, ...]
    sky: float  # the target's annulus, ADU per pixel
    fwhm: float
    x: float  # the target's position in the calibrated frame
    y: float
    header: fits.Header
    errors: str  # what the flux errors include
    errors_complete: bool  # photon noise included (an UNCERT plane, or a known gain)


def _measure_frame(config: Config, row: dict, positions: np.ndarray) -> FrameMeasurement:
    p = config.photometry
    planes = read_planes(Path(row["calibrated_path"]))
    data, unc = planes.data, planes.uncertainty
    if data.ndim == 3:  # a one-shot-colour cube: its green plane
        data = data[GREEN]
        unc = unc[GREEN] if unc is not None else None
    # the stored transform maps this frame's pixels onto the reference's: invert it
    matrix = np.linalg.inv(np.asarray(json.loads(row["transform"]), np.float64))
    xy = matrix[:2, :2] @ positions.T + matrix[:2, 2:3]
    flags = [] if row["fwhm"] else ["no_fwhm"]
    fwhm = float(row["fwhm"] or FALLBACK_FWHM)
    gain = config.calibrate.gain or row["egain"]
    if unc is not None:
        errors = "the calibrated light's UNCERT plane (photon, sky, read noise, masters) and the sky level's"
    elif gain:
        errors = f"the annulus's pixel scatter (sky, read noise), photon noise at {gain:g} e-/ADU, the sky level's"
    else:
        errors = "the annulus's pixel scatter (sky, read noise) and the sky level's only: the gain is unknown"
    m = measure_stars(
        data,
        xy[0],
        xy[1],
        radius=p.aperture_fwhm * fwhm,
        annulus=(p.annulus_fwhm[0] * fwhm, p.annulus_fwhm[1] * fwhm),
        uncertainty=unc,
        mask=planes.mask,
        gain=gain,
    )
    flags += [
        name for name, hit in (("saturated", m.saturated[0]), ("bad_pixel", m.bad_pixel[0]), ("edge", m.edge[0])) if hit
    ]
    return FrameMeasurement(
        m.flux,
        m.error,
        m.saturated | m.bad_pixel | m.edge,
        tuple(flags),
        float(m.sky[0]),
        fwhm,
        float(xy[0, 0]),
        float(xy[1, 0]),
        planes.header,
        errors,
        unc is not None or bool(gain),
    )


def _assemble(
    config: Config,
    night: str,
    target: Target,
    stack: dict,
    rows: list[dict],
    frames: list[FrameMeasurement],
    positions: np.ndarray,
    site: Site,
    where: tuple[float, float, str],
    detected: bool,
    wcs: WCS,
) -> dict:
    p = config.photometry
    flux = np.array([f.flux for f in frames])
    error = np.array([f.error for f in frames])
    unusable = np.array([f.unusable for f in frames])
    flags = [list(f.target_flags) for f in frames]
    good = np.array([not f for f in flags])
    if good.sum() < p.min_frames:
        raise NoLightCurve(_too_few(flags, p))
    target_median = float(np.median(flux[good, 0]))
    if not target_median > 0:
        raise NoLightCurve(f"{target.name} is not detected: its median flux is {target_median:.3g} ADU")
    comps = choose_comparisons(
        flux[:, 1:],
        error[:, 1:],
        unusable[:, 1:],
        good,
        target_median,
        max_n=p.max_comparisons,
        brightness_ratio=p.brightness_ratio,
        max_scatter=p.max_comparison_scatter,
        errors_complete=all(f.errors_complete for f in frames),
    )
    if not comps.chosen:
        raise NoLightCurve(
            f"no comparison star: none of the {flux.shape[1] - 1} stars detected on the reference is unsaturated, "
            f"clear of bad pixels and within x{p.brightness_ratio:g} of {target.name}'s flux "
            "([photometry] brightness_ratio)"
        )
    use = [c + 1 for c in comps.chosen]
    rejected = comparison_outliers(flux[:, use], error[:, use], good, limit=OUTLIER_SIGMA)
    ens, ens_err = ensemble(flux[:, use], error[:, use], rejected=rejected)
    clouds = ens < CLOUD_FRACTION * np.median(ens[good])
    for i in np.nonzero(clouds & good)[0]:
        flags[i].append("clouds")
    good &= ~clouds
    if good.sum() < p.min_frames:
        raise NoLightCurve(_too_few(flags, p))
    rel, rel_err = relative_flux(flux[:, 0], error[:, 0], ens, ens_err, good)
    jumps = outliers(rel, rel_err, good)
    for i in np.nonzero(jumps)[0]:
        flags[i].append("outlier")
    good &= ~jumps
    if good.sum() < p.min_frames:
        raise NoLightCurve(_too_few(flags, p))
    rel, rel_err = relative_flux(flux[:, 0], error[:, 0], ens, ens_err, good)  # normalised without them
    mids = [_mid_exposure(r) for r in rows]
    bjd, airmass = bjd_tdb_and_airmass(mids, where[0], where[1], site)
    header_airmass = [_number(f.header.get("AIRMASS")) for f in frames]
    if all(a is not None for a in header_airmass):
        airmass, airmass_source = np.array(header_airmass), "AIRMASS (header)"
    else:
        airmass_source = "computed (Pickering 2002) from the site, time and target"
    scatter, expected = point_to_point(rel[good]), float(np.median(rel_err[good]))
    table = _table(rows, frames, flags, mids, bjd, airmass, rel, rel_err, flux, error, ens, ens_err)
    comp_xy = positions[use]
    comp_world = wcs.all_pix2world(comp_xy, 0)
    colour = bool(rows[0].get("bayer"))
    table.meta.update(
        {
            "observd": __version__,
            "night": night,
            "target": target.name,
            "ra_deg": where[0],
            "dec_deg": where[1],
            "position_from": where[2],
            "target_detected_on_reference": detected,
            "object": stack["object"],
            "filter": stack["filter"],
            "stack": stack["path"],
            "plane": "green (plane 2 of R,G,B)" if colour else "mono",
            "frames_measured": "calibrated lights, at the reference position through each light's alignment transform",
            "errors": frames[0].errors,
            "aperture_radius_fwhm": p.aperture_fwhm,
            "annulus_fwhm": list(p.annulus_fwhm),
            "comparisons": [
                {"x_ref": float(x), "y_ref": float(y), "ra_deg": float(r), "dec_deg": float(d), "median_flux": float(f)}
                for (x, y), (r, d), f in zip(comp_xy, comp_world, np.median(flux[good][:, use], axis=0))
            ],
            "comparison_points_rejected": int(rejected.sum()),  # cosmic rays on comparison stars
            "comparisons_dropped": {
                "variable": sum(1 for why in comps.dropped.values() if why.startswith("variable")),
                "other": sum(1 for why in comps.dropped.values() if not why.startswith("variable")),
            },
            "site": {
                "latitude": site.latitude,
                "longitude": site.longitude,
                "elevation_m": site.elevation,
                "from": site.source,
            },  # fmt: skip
            "time": "bjd_tdb: mid-exposure, barycentric dynamical time (astropy, offline IERS-B)",
            "airmass_from": airmass_source,
            "flags": {name: FLAGS[name] for name in sorted({f for fl in flags for f in fl})},
            "scatter_point_to_point": scatter,
            "expected_error_median": expected,
        }
    )
    stem = light_curve_stem(config.paths.output, night, target.name, stack["object"], stack["filter"])
    ecsv = write_light_curve_table(table, stem.with_name(stem.name + ".ecsv"))
    binned = bin_series(bjd[good], rel[good], rel_err[good], p.bin_minutes / 1440.0)[:3]
    png = write_light_curve_plot(
        table,
        stem.with_name(stem.name + ".png"),
        title=f"{target.name} — {stack['object']} [{stack['filter']}], night {night}",
        binned=binned,
        lines=[
            f"{int(good.sum())}/{len(rows)} good frames, {len(use)} comparison stars, "
            f"aperture {p.aperture_fwhm:g} FWHM, binned {p.bin_minutes:g} min",
            f"scatter {scatter * 1e3:.2f} ppt point-to-point, expected {expected * 1e3:.2f} ppt",
        ],
    )
    return {
        "night": night,
        "target": target.name,
        "object": stack["object"],
        "filter": stack["filter"],
        "state": "written",
        "reason": None,
        "path": str(ecsv),
        "plot_path": str(png),
        "ra": where[0],
        "dec": where[1],
        "n_frames": len(rows),
        "n_good": int(good.sum()),
        "n_comparisons": len(use),
        "scatter": scatter,
        "expected": expected,
    }


def _too_few(flags: list[list[str]], p: PhotometryConfig) -> str:
    counts: dict[str, int] = {}
    for fl in flags:
        for f in fl:
            counts[f] = counts.get(f, 0) + 1
    why = ", ".join(
        f"{FLAGS[k]} in {n} of {len(flags)} frames" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    return f"only {sum(1 for f in flags if not f)} good frames (needs {p.min_frames}): {why}"


def _mid_exposure(row: dict) -> datetime:
    start = datetime.fromisoformat(row["date_obs"])
    return start + timedelta(seconds=(row["exptime"] or 0.0) / 2.0)


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 1.0 else None


def _radec_text(ra: float, dec: float) -> str:
    return f"RA {ra:.5f} Dec {dec:+.5f}"


def _table(rows, frames, flags, mids, bjd, airmass, rel, rel_err, flux, error, ens, ens_err) -> Table:
    adu = u.adu
    return Table(
        {
            "frame": [r["name"] for r in rows],
            "time_utc": [m.isoformat(timespec="milliseconds") for m in mids],
            "bjd_tdb": bjd * u.day,
            "exptime": np.array([r["exptime"] or 0.0 for r in rows]) * u.s,
            "airmass": airmass,
            "rel_flux": rel,
            "rel_flux_err": rel_err,
            "flux": flux[:, 0] * adu,
            "flux_err": error[:, 0] * adu,
            "ensemble_flux": ens * adu,
            "ensemble_flux_err": ens_err * adu,
            "fwhm": np.array([f.fwhm for f in frames]) * u.pix,
            "sky": np.array([f.sky for f in frames]) * adu / u.pix,
            "x": np.array([f.x for f in frames]) * u.pix,
            "y": np.array([f.y for f in frames]) * u.pix,
            "flag": [",".join(f) or GOOD for f in flags],
        }
    )
