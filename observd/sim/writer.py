"""From plan to disk: each frame's pixels, the files as camera software writes them, the truth.

`write_night(outdir, spec)` plans the night (`observd.sim.schedule`), synthesises the
pixels (`observd.sim.scene`), writes the files in acquisition order the way camera
software does (optionally paced, in chunks, or under a temporary name) and writes the
ground truth. `build_night` + `synthesize` expose the pixel synthesis alone (benchmarks,
custom writers). Each frame's noise has its own stream, so the files are byte-identical
for the same spec whatever is written around them.

All files: BITPIX 16, BZERO 32768 (uint16, as cameras write), primary HDU only. With
``overscan > 0`` every frame gets that many overscan columns on the right, with
``prescan > 0`` that many prescan columns on the left; all truth coordinates refer to the
data section (TRIMSEC), in the stored numpy orientation: x = column from the data
section's first column, y = numpy row of the file.

Image model (see `observd.sim.scene`)
-------------------------------------
raw = bias_level + bias pattern + Poisson(electrons) / gain + read noise (+ cosmic rays),
rounded and clipped to 0..65535, where electrons = (sky + stars) x flat x t + dark(T) x t.
`sky` is in e-/s/pixel; star fluxes are chosen per target from the sky noise so the
faintest are at the detection limit and a few saturate; PSF Moffat (beta 3), FWHM 2.5-3.5 px.
Cosmic rays: ``cosmic_rays`` hits of 1-3 pixels per 512x512 light (scaled by area); darks
get the same rate per second as a light of the targets' mean exposure; never multiplied by
the flat. A CFA camera (``spec.bayer``): every pixel sees only the channel of its colour
site, electrons = (sky_c + stars_c) x flat_c x t + dark(T) x t, with sky_c = sky x
sky_colour_c x channel_qe_c, stars_c each star's flux in channel c (`stars_rgb`), flat_c the
per-channel flat; a flat frame's light is tinted by flat_colour x channel_qe (its four sites
differ by tens of %).

Ground truth (``truth=True``): OUTDIR/truth.json and OUTDIR/truth.npz
---------------------------------------------------------------------
truth.json::

    {"seed", "dialect", "shape": [rows, cols], "overscan",
     "gain": e-/ADU, "read_noise": e-, "read_noise_adu", "bias_level": ADU, "saturation": 65535,
     "dark_ref_temp": degC, "dark_doubling_temp": 6.0,
     "hot_pixels": [[x, y], ...],                       # 0-based pixel coordinates
     "arrays": {"bias": "bias",                         # npz keys, see below
                "dark": {"-10.0": "dark_0", ...},       # per temperature (str(float) keys)
                "flat": {"L": "flat_0", ...}},
     "targets": {"M42": {"exptime", "filters": [...], "fwhm",
                         "stars": [[x_sky, y_sky, flux_adu], ...],   # brightest first
                         # with spec.pixel_scale: the sky frame's TAN WCS (FITS cards, CRPIX 1-based)
                         "wcs": {"CTYPE1", "CRVAL1", "CRPIX1", "CD1_1", ...},
                         # with variable stars (observd.sim.variables), not in "stars":
                         "first_light": ISO-8601 UTC, the start of the target's first light,
                         "variables": [{"kind": "pulsating" | "transit", "x_sky", "y_sky",
                                        "flux": mean (out-of-transit) ADU, "ra", "dec" (with a WCS),
                                        pulsating: "period_s", "amplitude", "phase_s", "phase_utc";
                                        transit: "mid_s", "mid_utc", "duration_s", "depth",
                                        "radius_ratio", "impact", "limb_darkening": [u1, u2]}]}},
     "files": [{"name": relative posix path, "type", "target", "filter", "exptime",
                "ccd_temp", "set_temp", "date_obs": ISO-8601 UTC,
                "cosmic_rays": [[x, y], ...],            # lights and darks
                # lights only:
                "matrix": 3x3, "fwhm", "transparency", "sky_adu", "trail": [dx, dy],
                "clouded", "trailed", "flipped"}, ...]}

A colour (CFA) night (``spec.bayer`` set) adds::

    "bayer": {"header_pattern": BAYERPAT as written, "xoff", "yoff": XBAYROFF/YBAYROFF
                  as written (0 when the dialect writes none),
              "row_order": the ROWORDER written, or null when none is written (top-down),
              "stored_pattern": the colours of the stored data section at numpy
                  [0,0], [0,1], [1,0], [1,1] (after the row flip and the trim),
              "sensor_pattern": spec.bayer (physical, readout pixel (0, 0), sensor top),
              "prescan", "channels": "RGB",
              "channel_qe": [r, g, b], "sky_colour": [r, g, b], "flat_colour": [r, g, b],
              "flat_tint": [r, g, b]},          # flat level per channel / brightest channel
    "targets": {"M42": {..., "stars_rgb": [[x_sky, y_sky, flux_r, flux_g, flux_b], ...]}},
    "files": [{..., lights: "sky_adu_rgb": [r, g, b], flats: "flat_adu_rgb": [r, g, b]}]

``stars_rgb`` lists the same stars in the same order and the same (sky-frame, stored
orientation) coordinates as ``stars``; each flux is what that channel's full-resolution
image holds (ADU per light exposure at flat = 1, transparency = 1, the channel's response
included): flux_c = flux x colour_c x channel_qe_c with the star's colour_G = 1. The mosaic
samples these images: a pixel holds the channel of its colour site only. ``sky_adu_rgb`` is
each channel's sky per light (ADU at flat = 1) = sky_adu x sky_colour_c x channel_qe_c;
``flat_adu_rgb`` each channel's mean illumination of a flat (ADU, above bias).
For ROWORDER 'BOTTOM-UP' the file holds the sensor's rows bottom first, so a truth (or
stored numpy) row y is sensor row ``rows - 1 - y`` counted from the sensor's top, the row
BAYERPAT's convention counts; every truth coordinate stays in stored orientation.

truth.npz (float32, data-section shape): ``bias`` = bias level + pattern (ADU, the mean of
infinitely many biases); ``dark_<i>`` = dark current in ADU/s at each temperature of
``arrays.dark`` (the dark temperatures and the light set point); ``flat_<i>`` = flat of
each filter normalised to mean 1 (CFA: each channel's sites normalised to mean 1, the tint
of the light excluded); CFA nights add ``colours`` (int8, R = 0, G = 1, B = 2: the colour
site of each stored data-section pixel).

Star fluxes are in ADU for one light exposure of that target at flat = 1 and
transparency = 1. The matrix maps sky-frame pixels to frame pixels
(see `observd.sim.schedule`); flipped lights include the 180 deg rotation.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from observd.sim import dialects, mosaic, scene
from observd.sim.schedule import PlannedFrame, plan_night, target_fwhm
from observd.sim.spec import CATALOG, COLOUR, FLAT, FRAME, OPTICS, SENSOR, SimSpec, TargetSpec, seeded


@dataclass(frozen=True)
class Night:
    """Everything fixed for the night: sensor, flats per filter, catalogue per target."""

    sensor: scene.Sensor
    flats: dict[str, np.ndarray]  # filter -> flat normalised to mean 1 (CFA: per channel)
    catalogs: dict[str, np.ndarray]  # target -> (n, 3) x_sky, y_sky, flux ADU
    # CFA cameras only (None for mono):
    colours: np.ndarray | None = None  # stored data section's colour sites, int8 R=0 G=1 B=2
    star_rgb: dict[str, np.ndarray] | None = None  # target -> (n, 3) R, G, B flux ADU
    sky_weight: np.ndarray | None = None  # float32 per pixel: sky_colour x channel_qe of its site
    lamp_weight: np.ndarray | None = None  # float32 per pixel: a flat's level relative to its brightest channel
    # targets with variable stars only: (m, 3) x_sky, y_sky, mean flux ADU, and the first light's start
    variable_stars: dict[str, np.ndarray] | None = None
    first_light: dict[str, datetime] | None = None

    @property
    def stored_pattern(self) -> str | None:
        """The 4 colours of the stored data section at numpy [0,0], [0,1], [1,0], [1,1]."""
        return None if self.colours is None else mosaic.pattern_at(self.colours)


def _flat_tint(spec: SimSpec) -> np.ndarray:
    """A flat's level per channel relative to its brightest channel (lamp colour x response)."""
    tint = np.asarray(spec.flat_colour, np.float64) * np.asarray(spec.channel_qe, np.float64)
    return tint / tint.max()


def _sky_tint(spec: SimSpec) -> np.ndarray:
    """The sky per channel relative to ``spec.sky`` (sky colour x response)."""
    return np.asarray(spec.sky_colour, np.float64) * np.asarray(spec.channel_qe, np.float64)


def build_night(spec: SimSpec) -> Night:
    """The camera, optics and sky of `spec`'s night (independent of the plan).

    Star fluxes are scaled to this camera and sky: the faintest at ~40x the per-pixel sky
    noise (about the detection limit), the saturation flux from the headroom above the sky.
    """
    shape = spec.shape
    sensor = scene.make_sensor(
        shape,
        bias_level=spec.bias_level,
        dark_current=spec.dark_current,
        hot_pixel_fraction=spec.hot_pixel_fraction,
        ref_temp=spec.ccd_temp,
        rng=seeded(spec.setup_key, SENSOR),
    )
    optics = scene.make_optics(shape, seeded(spec.setup_key, OPTICS))
    flats = {f: scene.make_flat(shape, optics, seeded(spec.setup_key, FLAT, i)) for i, f in enumerate(spec.filters)}
    colours = None
    if spec.bayer is not None:  # the sensor's colour sites over its whole readout, then as stored
        readout = mosaic.sensor_colours(spec.bayer, shape[0], spec.prescan + shape[1] + spec.overscan)
        colours = mosaic.stored_colours(readout, spec.row_order, spec.prescan, shape[1])
        flats = {f: scene.colour_flat(flat, optics, colours) for f, flat in flats.items()}
    catalogs, variable_stars = {}, {}
    for k, target in enumerate(spec.targets):
        fwhm = target_fwhm(spec, k)
        sky_e = spec.sky * target.exptime
        noise_adu = math.sqrt(sky_e + spec.read_noise**2) / spec.gain
        headroom = scene.ADU_MAX - spec.bias_level - sky_e / spec.gain
        f_sat = max(headroom, 1000.0) / scene.psf_peak_fraction(fwhm)
        f_min = min(40.0 * noise_adu, f_sat / 10.0)
        catalogs[target.name] = scene.make_catalog(
            shape, target.n_stars, f_min=f_min, f_sat=f_sat, margin=20.0, rng=seeded(spec.setup_key, CATALOG, k)
        )
        if target.variables:
            centre = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
            variable_stars[target.name] = np.array(
                [(centre[0] + v.offset[0], centre[1] + v.offset[1], v.brightness * f_sat) for v in target.variables]
            )
    if variable_stars:
        first = {}
        for frame in plan_night(spec):  # the variables' clocks start at each target's first light
            if frame.frame_type == "light":
                first.setdefault(frame.target, frame.date_obs)
        return Night(sensor, flats, catalogs, variable_stars=variable_stars, first_light=first)
    if colours is None:
        return Night(sensor, flats, catalogs)
    qe = np.asarray(spec.channel_qe, np.float64)
    star_rgb = {
        t.name: catalogs[t.name][:, 2:3]
        * scene.star_colours(len(catalogs[t.name]), seeded(spec.setup_key, COLOUR, k))
        * qe
        for k, t in enumerate(spec.targets)
    }
    return Night(
        sensor,
        flats,
        catalogs,
        colours=colours,
        star_rgb=star_rgb,
        sky_weight=_sky_tint(spec).astype(np.float32)[colours],
        lamp_weight=_flat_tint(spec).astype(np.float32)[colours],
    )


def _cosmic_count(spec: SimSpec, frame: PlannedFrame) -> int:
    """Lights: ``cosmic_rays`` per 512^2; darks: the same rate per second as a mean light."""
    area = spec.shape[0] * spec.shape[1] / 512.0**2
    if frame.frame_type == "light":
        return int(round(spec.cosmic_rays * area))
    if frame.frame_type == "dark":
        mean_light = float(np.mean([t.exptime for t in spec.targets]))
        return int(round(spec.cosmic_rays * area * frame.exptime / mean_light))
    return 0


def synthesize(frame: PlannedFrame, spec: SimSpec, night: Night) -> tuple[np.ndarray, np.ndarray]:
    """The raw uint16 image of one planned frame and its cosmic-ray pixels ([x, y])."""
    rng = seeded(spec.seed, FRAME, frame.index)
    sensor, t = night.sensor, frame.exptime
    electrons = sensor.dark_rate(frame.ccd_temp) * np.float32(t)
    if night.colours is not None:
        _colour_light(frame, spec, night, electrons)
    elif frame.frame_type == "flat":
        electrons += night.flats[frame.filter] * np.float32(frame.flat_level)
    elif frame.frame_type == "light":
        state = frame.light
        cat = _sky_now(frame, spec, night)
        m = np.array(state.matrix)
        xy = m[:2, :2] @ cat[:, :2].T + m[:2, 2:3]
        stars = scene.render_stars(
            spec.shape, xy[0], xy[1], cat[:, 2] * spec.gain * state.transparency, state.fwhm, state.trail
        )
        light = stars + np.float32(state.sky_rate * t)
        electrons += light * night.flats[frame.filter]
    pix, values = scene.cosmic_rays(spec.shape, _cosmic_count(spec, frame), spec.gain, rng)
    raw = scene.read_out(
        electrons,
        sensor,
        spec.read_noise,
        spec.gain,
        rng,
        extra_adu=(pix, values),
        overscan=spec.overscan,
        prescan=spec.prescan,
    )
    return raw, pix


def _sky_now(frame: PlannedFrame, spec: SimSpec, night: Night) -> np.ndarray:
    """The target's stars as this light saw them: the catalogue, plus its variable stars at their
    flux of the light's mid-exposure."""
    cat = night.catalogs[frame.target]
    if not night.variable_stars or frame.target not in night.variable_stars:
        return cat
    target = next(t for t in spec.targets if t.name == frame.target)
    mid = frame.date_obs + timedelta(seconds=frame.exptime / 2.0)
    t = (mid - night.first_light[frame.target]).total_seconds()
    variables = night.variable_stars[frame.target].copy()
    variables[:, 2] *= [float(v.relative_flux(np.array([t]))[0]) for v in target.variables]
    return np.vstack([cat, variables])


def sky_wcs(spec: SimSpec, target: str) -> dict | None:
    """The TAN WCS (FITS cards) of a target's sky frame: its RA/Dec at the frame centre, north up
    (+y), east left (-x), `spec.pixel_scale`; None when the spec puts no target on the sky."""
    if spec.pixel_scale is None:
        return None
    ra, dec = dialects.target_radec(spec, target)
    rows, cols = spec.shape
    degrees = spec.pixel_scale / 3600.0
    return {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRVAL1": ra,
        "CRVAL2": dec,
        "CRPIX1": (cols - 1) / 2.0 + 1.0,  # FITS pixels are 1-based
        "CRPIX2": (rows - 1) / 2.0 + 1.0,
        "CD1_1": -degrees,
        "CD1_2": 0.0,
        "CD2_1": 0.0,
        "CD2_2": degrees,
    }


def _variables_truth(spec: SimSpec, night: Night, target: TargetSpec) -> list[dict]:
    """Each variable star of `target`: where (sky frame, and RA/Dec when on the sky), how bright, how it varies."""
    stars = night.variable_stars[target.name]
    start = night.first_light[target.name]
    cards = sky_wcs(spec, target.name)
    out = []
    for v, (x, y, flux) in zip(target.variables, stars):
        rec = {"x_sky": float(x), "y_sky": float(y), "flux": float(flux), **v.truth()}
        for key in ("mid_s", "phase_s"):
            if key in rec:
                rec[key.replace("_s", "_utc")] = (start + timedelta(seconds=rec[key])).isoformat()
        if cards is not None:
            ra, dec = WCS(cards).all_pix2world([[x, y]], 0)[0]
            rec["ra"], rec["dec"] = float(ra), float(dec)
        out.append(rec)
    return out


def _colour_light(frame: PlannedFrame, spec: SimSpec, night: Night, electrons: np.ndarray) -> None:
    """Add a CFA frame's light to `electrons` (in place): each pixel sees its site's channel.

    Flats: the tinted lamp/twilight (`lamp_weight`) through the per-channel flat; lights: the
    stars (rendered once, per-site channel flux) plus the coloured sky, through the flat.
    """
    flat = night.flats.get(frame.filter) if frame.filter is not None else None
    if frame.frame_type == "flat":
        electrons += flat * night.lamp_weight * np.float32(frame.flat_level)
    elif frame.frame_type == "light":
        state = frame.light
        cat = night.catalogs[frame.target]
        m = np.array(state.matrix)
        xy = m[:2, :2] @ cat[:, :2].T + m[:2, 2:3]
        flux = night.star_rgb[frame.target] * (spec.gain * state.transparency)
        light = scene.render_stars(spec.shape, xy[0], xy[1], flux, state.fwhm, state.trail, colours=night.colours)
        light += night.sky_weight * np.float32(state.sky_rate * frame.exptime)
        light *= flat
        electrons += light


def _fits_bytes(frame: PlannedFrame, data: np.ndarray) -> bytes:
    """The whole file in memory, so that it can be written in chunks as cameras do."""
    header = fits.Header([fits.Card(k, v, c) for k, v, c in frame.header])
    buf = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buf)
    return buf.getvalue()


def write_night(
    outdir: Path,
    spec: SimSpec,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_file: Callable[[Path], None] | None = None,
) -> dict:
    """Write the night's files into `outdir` in acquisition order; return the truth dict.

    `sleep` is injected so tests can observe the half-written states instead of waiting;
    `on_file(path)` is called once each file is complete under its final name.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    frames = plan_night(spec)
    night = build_night(spec)
    files = []
    for frame in frames:
        if frame.index and spec.pace > 0:
            sleep(spec.pace)
        raw, cosmic = synthesize(frame, spec, night)
        path = outdir / frame.name
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, _fits_bytes(frame, raw), spec, sleep)
        files.append(_file_truth(frame, spec, cosmic))
        if on_file is not None:
            on_file(path)
    truth = _truth(spec, night, files)
    if spec.truth:
        _write_truth(outdir, spec, night, truth)
    return truth


def _write_file(path: Path, data: bytes, spec: SimSpec, sleep: Callable[[float], None]) -> None:
    """Write like camera software: optionally in chunks with pauses, optionally as '.tmp'."""
    target = path.with_name(path.name + ".tmp") if spec.temp_names else path
    n_chunks = 4 if spec.chunked else 1
    bounds = np.linspace(0, len(data), n_chunks + 1).astype(int)
    with open(target, "wb") as fh:
        for i in range(n_chunks):
            fh.write(data[bounds[i] : bounds[i + 1]])
            fh.flush()
            if i < n_chunks - 1:
                sleep(spec.chunk_delay)
    if spec.temp_names:
        os.replace(target, path)


def _file_truth(frame: PlannedFrame, spec: SimSpec, cosmic: np.ndarray) -> dict:
    rec: dict[str, Any] = {
        "name": frame.name,
        "type": frame.frame_type,
        "target": frame.target,
        "filter": frame.filter,
        "exptime": frame.exptime,
        "ccd_temp": frame.ccd_temp,
        "set_temp": frame.set_temp,
        "date_obs": frame.date_obs.isoformat(),
        "cosmic_rays": cosmic.tolist(),
    }
    if frame.light is not None:
        s = frame.light
        rec.update(
            matrix=[list(r) for r in s.matrix],
            fwhm=s.fwhm,
            transparency=s.transparency,
            sky_adu=s.sky_rate * frame.exptime / spec.gain,
            trail=list(s.trail),
            clouded=s.clouded,
            trailed=s.trailed,
            flipped=s.flipped,
        )
        if spec.bayer is not None:
            rec["sky_adu_rgb"] = (rec["sky_adu"] * _sky_tint(spec)).tolist()
    if frame.frame_type == "flat" and spec.bayer is not None:
        rec["flat_adu_rgb"] = (frame.flat_level / spec.gain * _flat_tint(spec)).tolist()
    return rec


def _dark_temps(spec: SimSpec) -> tuple[float, ...]:
    return tuple(dict.fromkeys(float(t) for t in (*spec.dark_temps, spec.ccd_temp)))


def _truth(spec: SimSpec, night: Night, files: list[dict]) -> dict:
    fwhm = {t.name: target_fwhm(spec, k) for k, t in enumerate(spec.targets)}
    truth = {
        "seed": spec.seed,
        "dialect": spec.dialect,
        "shape": list(spec.shape),
        "overscan": spec.overscan,
        "gain": spec.gain,
        "read_noise": spec.read_noise,
        "read_noise_adu": spec.read_noise / spec.gain,
        "bias_level": spec.bias_level,
        "saturation": scene.ADU_MAX,
        "dark_ref_temp": spec.ccd_temp,
        "dark_doubling_temp": scene.DARK_DOUBLING_C,
        "hot_pixels": night.sensor.hot_pixels.tolist(),
        "arrays": {
            "bias": "bias",
            "dark": {str(t): f"dark_{i}" for i, t in enumerate(_dark_temps(spec))},
            "flat": {f: f"flat_{i}" for i, f in enumerate(spec.filters)},
        },
        "targets": {
            t.name: {
                "exptime": t.exptime,
                "filters": list(t.filters),
                "fwhm": fwhm[t.name],
                "stars": night.catalogs[t.name].tolist(),
            }
            for t in spec.targets
        },
        "files": files,
    }
    for t in spec.targets:
        if (cards := sky_wcs(spec, t.name)) is not None:
            truth["targets"][t.name]["wcs"] = cards
        if t.variables:
            truth["targets"][t.name]["first_light"] = night.first_light[t.name].isoformat()
            truth["targets"][t.name]["variables"] = _variables_truth(spec, night, t)
    if night.colours is not None:
        truth["bayer"] = _bayer_truth(spec, night)
        for name, target in truth["targets"].items():
            cat = night.catalogs[name]
            target["stars_rgb"] = np.column_stack([cat[:, :2], night.star_rgb[name]]).tolist()
    if spec.prescan:
        truth["prescan"] = spec.prescan
    return truth


def _bayer_truth(spec: SimSpec, night: Night) -> dict:
    """How the headers describe the CFA and what the stored data section holds."""
    written = dialects.bayer_cards(spec)
    return {
        "header_pattern": written["BAYERPAT"],
        "xoff": written.get("XBAYROFF", 0),
        "yoff": written.get("YBAYROFF", 0),
        "row_order": written.get("ROWORDER"),
        "stored_pattern": night.stored_pattern,
        "sensor_pattern": spec.bayer,
        "prescan": spec.prescan,
        "channels": mosaic.CHANNELS,
        "channel_qe": list(spec.channel_qe),
        "sky_colour": list(spec.sky_colour),
        "flat_colour": list(spec.flat_colour),
        "flat_tint": _flat_tint(spec).tolist(),
    }


def _write_truth(outdir: Path, spec: SimSpec, night: Night, truth: dict) -> None:
    """truth.json and truth.npz, each written under a temporary name then renamed."""
    arrays = {"bias": night.sensor.bias}
    for i, temp in enumerate(_dark_temps(spec)):
        arrays[f"dark_{i}"] = night.sensor.dark_rate(temp) / np.float32(spec.gain)
    for i, f in enumerate(spec.filters):
        arrays[f"flat_{i}"] = night.flats[f]
    if night.colours is not None:
        arrays["colours"] = night.colours
    tmp = outdir / "truth.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, outdir / "truth.npz")
    tmp = outdir / "truth.json.tmp"
    tmp.write_text(json.dumps(truth, indent=1))
    os.replace(tmp, outdir / "truth.json")
