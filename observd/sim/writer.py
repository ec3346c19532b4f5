"""From plan to disk: each frame's pixels, the files as camera software writes them, the truth.

`write_night(outdir, spec)` plans the night (`observd.sim.schedule`), synthesises the
pixels (`observd.sim.scene`), writes the files in acquisition order the way camera
software does (optionally paced, in chunks, or under a temporary name) and writes the
ground truth. `build_night` + `synthesize` expose the pixel synthesis alone (benchmarks,
custom writers). Each frame's noise has its own stream, so the files are byte-identical
for the same spec whatever is written around them.

All files: BITPIX 16, BZERO 32768 (uint16, as cameras write), primary HDU only. With
``overscan > 0`` every frame gets that many overscan columns on the right; all truth
coordinates refer to the data section, which starts at column 1 either way.

Image model (see `observd.sim.scene`)
-------------------------------------
raw = bias_level + bias pattern + Poisson(electrons) / gain + read noise (+ cosmic rays),
rounded and clipped to 0..65535, where electrons = (sky + stars) x flat x t + dark(T) x t.
`sky` is in e-/s/pixel; star fluxes are chosen per target from the sky noise so the
faintest are at the detection limit and a few saturate; PSF Moffat (beta 3), FWHM 2.5-3.5 px.
Cosmic rays: ``cosmic_rays`` hits of 1-3 pixels per 512x512 light (scaled by area); darks
get the same rate per second as a light of the targets' mean exposure; never multiplied by
the flat.

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
                         "stars": [[x_sky, y_sky, flux_adu], ...]}},  # brightest first
     "files": [{"name": relative posix path, "type", "target", "filter", "exptime",
                "ccd_temp", "set_temp", "date_obs": ISO-8601 UTC,
                "cosmic_rays": [[x, y], ...],            # lights and darks
                # lights only:
                "matrix": 3x3, "fwhm", "transparency", "sky_adu", "trail": [dx, dy],
                "clouded", "trailed", "flipped"}, ...]}

truth.npz (float32, data-section shape): ``bias`` = bias level + pattern (ADU, the mean of
infinitely many biases); ``dark_<i>`` = dark current in ADU/s at each temperature of
``arrays.dark`` (the dark temperatures and the light set point); ``flat_<i>`` = flat of
each filter normalised to mean 1.

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
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from observd.sim import scene
from observd.sim.schedule import PlannedFrame, plan_night, target_fwhm
from observd.sim.spec import CATALOG, FLAT, FRAME, OPTICS, SENSOR, SimSpec, seeded


@dataclass(frozen=True)
class Night:
    """Everything fixed for the night: sensor, flats per filter, catalogue per target."""

    sensor: scene.Sensor
    flats: dict[str, np.ndarray]  # filter -> flat normalised to mean 1
    catalogs: dict[str, np.ndarray]  # target -> (n, 3) x_sky, y_sky, flux ADU


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
        rng=seeded(spec.seed, SENSOR),
    )
    optics = scene.make_optics(shape, seeded(spec.seed, OPTICS))
    flats = {f: scene.make_flat(shape, optics, seeded(spec.seed, FLAT, i)) for i, f in enumerate(spec.filters)}
    catalogs = {}
    for k, target in enumerate(spec.targets):
        fwhm = target_fwhm(spec, k)
        sky_e = spec.sky * target.exptime
        noise_adu = math.sqrt(sky_e + spec.read_noise**2) / spec.gain
        headroom = scene.ADU_MAX - spec.bias_level - sky_e / spec.gain
        f_sat = max(headroom, 1000.0) / scene.psf_peak_fraction(fwhm)
        f_min = min(40.0 * noise_adu, f_sat / 10.0)
        catalogs[target.name] = scene.make_catalog(
            shape, target.n_stars, f_min=f_min, f_sat=f_sat, margin=20.0, rng=seeded(spec.seed, CATALOG, k)
        )
    return Night(sensor, flats, catalogs)


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
    if frame.frame_type == "flat":
        electrons += night.flats[frame.filter] * np.float32(frame.flat_level)
    elif frame.frame_type == "light":
        state = frame.light
        cat = night.catalogs[frame.target]
        m = np.array(state.matrix)
        xy = m[:2, :2] @ cat[:, :2].T + m[:2, 2:3]
        stars = scene.render_stars(
            spec.shape, xy[0], xy[1], cat[:, 2] * spec.gain * state.transparency, state.fwhm, state.trail
        )
        light = stars + np.float32(state.sky_rate * t)
        electrons += light * night.flats[frame.filter]
    pix, values = scene.cosmic_rays(spec.shape, _cosmic_count(spec, frame), spec.gain, rng)
    raw = scene.read_out(
        electrons, sensor, spec.read_noise, spec.gain, rng, extra_adu=(pix, values), overscan=spec.overscan
    )
    return raw, pix


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
    return rec


def _dark_temps(spec: SimSpec) -> tuple[float, ...]:
    return tuple(dict.fromkeys(float(t) for t in (*spec.dark_temps, spec.ccd_temp)))


def _truth(spec: SimSpec, night: Night, files: list[dict]) -> dict:
    fwhm = {t.name: target_fwhm(spec, k) for k, t in enumerate(spec.targets)}
    return {
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


def _write_truth(outdir: Path, spec: SimSpec, night: Night, truth: dict) -> None:
    """truth.json and truth.npz, each written under a temporary name then renamed."""
    arrays = {"bias": night.sensor.bias}
    for i, temp in enumerate(_dark_temps(spec)):
        arrays[f"dark_{i}"] = night.sensor.dark_rate(temp) / np.float32(spec.gain)
    for i, f in enumerate(spec.filters):
        arrays[f"flat_{i}"] = night.flats[f]
    tmp = outdir / "truth.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, outdir / "truth.npz")
    tmp = outdir / "truth.json.tmp"
    tmp.write_text(json.dumps(truth, indent=1))
    os.replace(tmp, outdir / "truth.json")
