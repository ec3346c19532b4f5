"""Reducing one light in a worker: calibrate, measure, write; align and write when a reference is known.

Jobs and results are plain picklable dataclasses so they cross a process pool; nothing
here touches the catalog. Masters are memory-mapped, one copy per host for all the workers
(`mapped_masters`), since every light of a night uses the same few.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from observd import __version__
from observd.adapters.fits_files import image_shape, read_image_and_header, read_planes, write_image
from observd.core.align import AlignError, Transform, apply_transform, find_transform
from observd.core.bayer import develop, luminance, shifted
from observd.core.calibrate import MASK_BAD, MASK_SATURATED, Plane, calibrate, lowest, trim_origin
from observd.core.frames import MasterFile
from observd.core.measure import Measurement, Stars, judge, measure, sky
from observd.core.memory import Need, light_need
from observd.jobs.mapped_masters import dark_offset, master_plane, without_mask


@dataclass(frozen=True)
class Reference:
    """The night/target reference frame's star list (cached in the catalog) and shape."""

    file_id: int
    name: str
    shape: tuple[int, int]
    x: tuple[float, ...]
    y: tuple[float, ...]
    flux: tuple[float, ...]

    def stars(self) -> Stars:
        return Stars(np.asarray(self.x), np.asarray(self.y), np.asarray(self.flux))


@dataclass(frozen=True)
class LightJob:
    file_id: int
    path: str
    hdu: int
    calibrated_path: str
    aligned_path: str
    thumbnail_path: str | None = None  # a small PNG for the web page, written once here
    bias: MasterFile | None = None
    dark: MasterFile | None = None
    flat: MasterFile | None = None
    dark_scale: float = 1.0
    gain: float | None = None
    read_noise: float | None = None
    saturation: float | None = None
    biassec: str | None = None
    trimsec: str | None = None
    threshold: float = 5.0
    min_star_fraction: float = 0.5
    max_elongation: float = 1.6
    best_n_stars: int = 0  # the night's best so far for this target (before this frame)
    reference: Reference | None = None  # align now when known
    max_control_points: int = 50
    min_matches: int = 4
    notes: tuple[str, ...] = ()
    bayer: str | None = None  # stored Bayer pattern of a one-shot-colour raw frame; None = mono
    debayer: str = "malvar2004"  # `[calibrate] debayer`
    planes_on_host: bool = False  # masters mapped from the worker's own host, not beside them (`mapped_masters`)


@dataclass(frozen=True)
class LightResult:
    file_id: int
    calibrated_path: str
    measurement: Measurement
    stars: tuple[tuple[float, float, float], ...]
    bad_reason: str | None
    aligned: AlignResult | None = None
    channels: ChannelLevels | None = None  # a colour light's sky per channel


@dataclass(frozen=True)
class ChannelLevels:
    """Sky level and RMS of each channel of a colour light (R, G, B): what its stack shifts and weighs."""

    background: tuple[float, float, float]
    noise: tuple[float, float, float]

    def to_json(self) -> str:
        return json.dumps({"background": list(self.background), "noise": list(self.noise)})


@dataclass(frozen=True)
class AlignJob:
    file_id: int
    calibrated_path: str
    aligned_path: str
    stars: tuple[tuple[float, float, float], ...]
    reference: Reference
    max_control_points: int = 50
    min_matches: int = 4
    bayer: str | None = None  # the raw frame's Bayer pattern: its calibrated frame is an R, G, B cube
    # A transform already known (frame -> reference, 3x3): the frame is resampled with it, its stars
    # are not matched (a deep stack's composed transform; `observd.pipeline.deep_stacks`).
    matrix: tuple[tuple[float, ...], ...] | None = None


@dataclass(frozen=True)
class AlignResult:
    file_id: int
    aligned_path: str | None
    matrix: tuple[tuple[float, ...], ...] | None = None
    rms: float | None = None
    n_matches: int | None = None
    rotation_deg: float | None = None
    error: str | None = None


def footprint(job: LightJob | AlignJob) -> Need:
    """The memory a job needs (`observd.core.memory`), from its frame's header alone. An alignment
    holds less than a light's reduction (no raw frame, no calibration), and is counted as one, a
    colour light's when its frame is one-shot-colour (the catalog's Bayer pattern, as for a light),
    with a noise model (its calibrated frame may carry uncertainty planes)."""
    if isinstance(job, LightJob):
        return light_need(image_shape(Path(job.path), job.hdu), colour=job.bayer is not None, noise=_noise_model(job))
    return light_need(image_shape(Path(job.calibrated_path)), colour=job.bayer is not None)


def _noise_model(job: LightJob) -> bool:
    """Whether the light gets uncertainty planes: gain and read noise known, as `calibrate` decides."""
    return bool(job.gain) and job.read_noise is not None


def _plane(use: MasterFile | None, on_host: bool) -> Plane | None:
    return None if use is None else master_plane(use.path, on_host)


def _masters(job: LightJob) -> tuple[Plane | None, Plane | None, float, Plane | None]:
    """What a light is calibrated with: (bias, dark, dark scale, flat). Without a noise model,
    which needs bias and dark apart, one plane for both (`dark_offset`) — the same subtraction,
    in one step — carrying the three masters' masks combined, so the flat's own goes unread."""
    on_host, flat = job.planes_on_host, job.flat
    if job.bias is not None and job.dark is not None and not _noise_model(job):
        offset = dark_offset(job.bias.path, job.dark.path, job.dark_scale, on_host, flat and flat.path)
        return offset, None, 1.0, None if flat is None else without_mask(flat.path, on_host)
    return _plane(job.bias, on_host), _plane(job.dark, on_host), job.dark_scale, _plane(flat, on_host)


def reduce_light(job: LightJob) -> LightResult:
    raw, header = read_image_and_header(Path(job.path), job.hdu)
    bias, dark, dark_scale, flat = _masters(job)
    cal = calibrate(
        raw,
        bias=bias,
        dark=dark,
        dark_scale=dark_scale,
        flat=flat,
        gain=job.gain,
        read_noise=job.read_noise,
        saturation=job.saturation,
        biassec=job.biassec,
        trimsec=job.trimsec,
        overwrite_raw=True,  # read as float32 for this job alone
    )
    raw_shape = raw.shape
    del raw  # the calibrated data now, or (trimmed) a frame-sized copy the rest does not need
    image, uncertainty, bits, saturation = cal.data, cal.uncertainty, cal.bitmask(), cal.saturation_level
    channels = None
    if job.bayer:
        colour = develop(cal, shifted(job.bayer, *trim_origin(job.trimsec, raw_shape)), job.debayer)
        image, uncertainty, bits = colour.rgb, colour.uncertainty, colour.bits
        channels = _channel_levels(image, bits)
    del cal  # its masks are in `bits` now (and a colour light's mosaic in `image`)
    # stars are detected, measured and matched on one plane: a colour light's luminance
    plane = luminance(image) if job.bayer else image
    if job.bayer:
        saturation = lowest(plane, (bits & MASK_SATURATED) != 0)
    # saturated pixels stay visible to detection (they are star cores) but mark their stars
    m, stars = measure(
        plane,
        mask=(bits & MASK_BAD) != 0,
        saturation=saturation,
        threshold=job.threshold,
        max_stars=200,
        overwrite_mask=True,
    )
    bad = judge(
        m, max(job.best_n_stars, m.n_stars), min_star_fraction=job.min_star_fraction, max_elongation=job.max_elongation
    )
    out_header = provenance_header(header, job, m)
    star_list = tuple(zip(stars.x.tolist(), stars.y.tolist(), stars.flux.tolist()))
    aligned = None
    # The calibrated frame is written (and fsynced, which releases the GIL) while the frame is
    # aligned; alignment changes the data's bad pixels only once the writer has had them.
    written_planes = threading.Event()

    def write_calibrated() -> Path:
        try:  # aligned now, it is not read again: its pages leave the cache (`write_with`)
            return write_image(
                Path(job.calibrated_path),
                image,
                out_header,
                uncertainty=uncertainty,
                mask=bits,
                cache=job.reference is None or bad is not None,
                consumed=written_planes.set,
            )
        finally:  # a failed write is raised by `written.result()`, not waited for forever
            written_planes.set()

    with ThreadPoolExecutor(max_workers=1) as io:
        written = io.submit(write_calibrated)
        if job.thumbnail_path:
            # the page shows it instead of decoding FITS per request (imported here: the fork
            # server preloads the previews for the workers; the command's process that imports
            # this module to plan jobs goes without matplotlib, ~19 MiB)
            from observd.adapters.previews import write_thumbnail

            write_thumbnail(image, Path(job.thumbnail_path))
        if job.reference is not None and bad is None:
            aligned = _align(
                job.file_id,
                image,  # given up, once the writer has written it (the thumbnail is drawn)
                uncertainty,
                bits,
                out_header,
                stars,
                job.reference,
                job.aligned_path,
                job.max_control_points,
                job.min_matches,
                data_free=written_planes.wait,
            )
        written.result()
    return LightResult(job.file_id, job.calibrated_path, m, star_list, bad, aligned, channels)


def _channel_levels(rgb: np.ndarray, bits: np.ndarray) -> ChannelLevels:
    levels = [sky(channel, (bits & MASK_BAD) != 0) for channel in rgb]
    return ChannelLevels(tuple(b for b, _ in levels), tuple(n for _, n in levels))


def align_calibrated(job: AlignJob) -> AlignResult:
    planes = read_planes(Path(job.calibrated_path))
    bits = planes.mask if planes.mask is not None else np.zeros(planes.data.shape[-2:], np.uint8)
    stars = (
        Stars(*(np.asarray(c, dtype=float) for c in zip(*job.stars)))
        if job.stars
        else Stars(np.empty(0), np.empty(0), np.empty(0))
    )
    return _align(
        job.file_id,
        planes.data,
        planes.uncertainty,
        bits,
        planes.header,
        stars,
        job.reference,
        job.aligned_path,
        job.max_control_points,
        job.min_matches,
        job.matrix,
    )


def _align(
    file_id: int,
    data,
    unc,
    bits,
    header: fits.Header,
    stars: Stars,
    ref: Reference,
    out_path: str,
    max_control_points: int,
    min_matches: int,
    matrix: tuple[tuple[float, ...], ...] | None = None,
    data_free: Callable[[], object] | None = None,
) -> AlignResult:
    """Align a calibrated frame to `ref` and write it. `data` is changed (its bad pixels become
    NaN): the callers pass a frame they need no more, which spares a frame-sized copy at the
    job's peak; `data_free` returns once nothing else reads it."""
    try:
        if matrix is not None:
            transform = Transform.from_matrix(np.asarray(matrix, dtype=np.float64), 0.0, 0)
        elif file_id == ref.file_id:
            transform = Transform.from_matrix(np.eye(3), 0.0, len(stars))
        else:
            transform = find_transform(
                stars, ref.stars(), max_control_points=max_control_points, min_matches=min_matches
            )
    except AlignError as exc:
        return AlignResult(file_id, None, error=str(exc))
    shape = tuple(ref.shape)
    # the mask first, so that its temporaries are gone before the data's resampled plane exists;
    # one flag at a time, set in place (a bad pixel's flag wins over saturation)
    aligned_mask = np.zeros(shape, np.uint8)
    aligned_mask[apply_transform((bits & MASK_SATURATED) != 0, transform, shape, kind="mask")] = MASK_SATURATED
    bad = (bits & MASK_BAD) != 0
    aligned_mask[apply_transform(bad, transform, shape, kind="mask")] = MASK_BAD
    # bad pixels become NaN first, so a hot pixel cannot spill into its resampled neighbours; in
    # `data` itself, which the callers give up, rather than in a frame-sized copy
    if data_free is not None:
        data_free()
    data[..., bad] = np.nan
    del bad
    aligned = _planewise(data, transform, shape, "data")
    aligned_unc = _planewise(unc, transform, shape, "uncertainty") if unc is not None else None
    h = header.copy()
    if matrix is not None:
        h["ALIGNREF"] = (ref.name, "deep reference of this target (all nights)")
        h["ALIGNROT"] = (round(transform.rotation_deg, 4), "[deg] rotation frame -> reference")
        h.add_history(
            f"observd {__version__}: resampled once onto {ref.name}, the target's deep reference, with its "
            f"night's transform composed with the night reference's to it (rotation {transform.rotation_deg:.2f} deg)"
        )
    else:
        h["ALIGNREF"] = (ref.name, "reference frame of this night and target")
        h["ALIGNRMS"] = (round(transform.rms, 4), "[px] residual RMS of matched stars")
        h["ALIGNNM"] = (transform.n_matches, "stars matched")
        h["ALIGNROT"] = (round(transform.rotation_deg, 4), "[deg] rotation frame -> reference")
        h.add_history(
            f"observd {__version__}: aligned to {ref.name} ({transform.n_matches} stars, "
            f"rms {transform.rms:.3f} px, rotation {transform.rotation_deg:.2f} deg)"
        )
    # The stack reads it again, but from disk: keeping every aligned frame of the night in the
    # page cache costs more (new pages for each output) than reading them back once (A/B)
    write_image(Path(out_path), aligned, h, uncertainty=aligned_unc, mask=aligned_mask, cache=False)
    return AlignResult(
        file_id,
        out_path,
        tuple(map(tuple, np.asarray(transform.matrix).tolist())),
        transform.rms,
        transform.n_matches,
        transform.rotation_deg,
    )


def _planewise(image: np.ndarray, transform: Transform, shape: tuple[int, int], kind: str) -> np.ndarray:
    """`apply_transform` of a 2-D image, or of each plane of a colour cube with the same
    transform; `image` is given up (its NaN holes are filled in place)."""
    if image.ndim == 2:
        return apply_transform(image, transform, shape, kind=kind, overwrite=True)
    return np.stack([apply_transform(plane, transform, shape, kind=kind, overwrite=True) for plane in image])


_MOSAIC_CARDS = ("BAYERPAT", "CFAPAT", "BAYERPATN", "COLORTYP", "XBAYROFF", "YBAYROFF", "BAYOFFX", "BAYOFFY")
"""A colour light's raw cards that describe the mosaic, not the RGB cube observd writes: a
program that found them would demosaic the cube again."""


def provenance_header(raw_header: fits.Header, job: LightJob, m: Measurement) -> fits.Header:
    """The raw header's descriptive cards, plus what observd did (HISTORY) and measured."""
    h = fits.Header()
    for card in raw_header.cards:
        if (
            card.keyword
            in (
                "SIMPLE",
                "BITPIX",
                "NAXIS",
                "NAXIS1",
                "NAXIS2",
                "EXTEND",
                "BZERO",
                "BSCALE",
                "BIASSEC",
                "TRIMSEC",
                "DATASEC",
                "CHECKSUM",
                "DATASUM",
                "END",
                *(_MOSAIC_CARDS if job.bayer else ()),
            )
            or not card.keyword
        ):
            continue
        try:
            h.append(card)
        except (ValueError, KeyError):
            continue
    h["BUNIT"] = "adu"
    h["RAWFILE"] = (Path(job.path).name, "raw file this was made from")
    h["OBSERVD"] = (__version__, "observd version")
    steps = []
    if job.biassec:
        steps.append(f"overscan {job.biassec} subtracted")
    if job.trimsec:
        steps.append(f"trimmed to {job.trimsec}")
    for use, text in (
        (job.bias, "bias subtracted"),
        (job.dark, f"dark subtracted x{job.dark_scale:.4g}"),
        (job.flat, "flat-fielded"),
    ):
        if use is not None:
            h[f"{use.kind.upper()[:4]}MAST"] = (Path(use.path).name, f"master {use.kind} v{use.version}")
            steps.append(f"{text}: {Path(use.path).name} (v{use.version})")
    if job.bayer:
        steps.append(f"bad pixels repaired from same-colour neighbours, debayered ({job.debayer}) from {job.bayer}")
        h["CHANNELS"] = ("R,G,B", "planes of this cube: red, green, blue")
    steps.extend(job.notes)
    if job.bias is None and job.dark is None and job.flat is None:
        steps.append("UNCALIBRATED: no master applied")
    for step in steps:
        h.add_history(f"observd {__version__}: {step}")
    h["SKYLEVEL"] = (round(m.background, 3), "[adu] median background")
    h["SKYNOISE"] = (round(m.noise, 4), "[adu] background RMS")
    h["NSTARS"] = (m.n_stars, "stars detected")
    if m.fwhm is not None:
        h["FWHM"] = (round(m.fwhm, 3), "[px] median star FWHM")
    if m.elongation is not None:
        h["ELONG"] = (round(m.elongation, 3), "median star a/b")
    return h
