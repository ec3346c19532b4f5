"""Nightly stacked products: per night, target and filter, one deep image of the good aligned lights.

Which frames: the night's lights in state 'aligned' (frames judged 'bad' — clouds, trailing —
and 'unaligned' ones never get there), grouped by (object, filter); a group with fewer than
``[stack] min_frames`` makes no product.

Background: the sky level changes through the night (moon, twilight, light pollution), so each
frame is shifted *additively* to a common level before combining: its measured background
(catalog ``background``, SEP's global sky of the calibrated frame) is subtracted and the
group's reference level added — the background of the night's alignment reference when it is
in the group, else the median of the group's backgrounds (the reference may have been taken in
another filter). Without this, a pixel's values spread by the sky differences and sigma
clipping rejects whole frames at the bright/faint end. Multiplicative (transparency) scaling is
deliberately not done: the additive shift leaves star fluxes as measured, so the stack's fluxes
are the weighted mean of the inputs' — thin-cloud frames are judged bad before they get here.

Weights (``[stack] weighting``), from each frame's measurements in the catalog:
- ``noise`` (default): inverse variance of the background, ``w = 1 / noise²`` (SEP's global
  RMS). For sky-limited data this minimises the stack's noise, which is what faint extended
  targets (nebulae, galaxies) need.
- ``noise_fwhm``: ``w = 1 / (noise · FWHM)²``. A faint star's peak is ∝ flux/FWHM², so this is
  ``peak / noise²``, the weighting that maximises the peak signal-to-noise of faint point
  sources: sharp frames count more, at the price of some background noise (a spread of seeing
  of ±10 % costs ~2 % of it). A frame whose FWHM was not measured (too few isolated stars) gets
  the group's median FWHM.
- ``equal``: every frame the same.
Frames with very bad seeing or trails are judged bad upstream and never reach a stack.

Rejection: sigma clipping (``[stack] rejection``, ``sigma``) with the median as centre; in small
stacks it becomes winsorized clipping — up to ``[stack] small_n`` frames, and at least up to the
size below which one outlier inflates the plain std so much that it can never stand `sigma` out
(11 frames at 3σ; `rejection_for`). Pixels flagged MASK_BAD in a frame (bad pixels, outside the
aligned footprint) and NaN are ignored; saturated pixels are kept, so star cores stay filled.
Combination runs band by band in bounded memory.

Outputs, written atomically: ``<output>/<night>/stacks/<object>_<filter>.fits`` (float32 data,
UNCERT std-dev, MASK = no frame contributed) with provenance cards, ``<stem>.png`` (labelled
preview) and ``<stem>_thumb.png``. Each is recorded in the catalog as the current product of
its (night, object, filter); rebuilding replaces the files and the current row.

Plate solving (`observd.pipeline.astrometry`, ``[astrometry]``): after each stack is written, the
stars measured on it are solved by astrometry.net's solve-field; a solved stack is rewritten with
its WCS, and the solution (or why there is none) goes into the product's row. It never fails a stack.
Then the night's light curves of the ``[photometry] targets`` (`observd.pipeline.light_curves`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from observd import __version__
from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import write_image
from observd.adapters.fits_rows import FitsSource, MaskedOffset, mask_hdu
from observd.core.bayer import luminance
from observd.core.calibrate import MASK_BAD
from observd.core.config import Config
from observd.core.layout import deep_stack_stem, stack_stem
from observd.core.measure import Stars, measure
from observd.core.memory import stack_need
from observd.core.stack_plan import (
    WEIGHTINGS,
    StackGroup,
    format_exposure,
    frame_weights,
    plan_stacks,
    rejection_for,
    typical_noise,
)
from observd.jobs.cluster import Cluster
from observd.jobs.pool import call, offload, outcome, worker_count
from observd.jobs.shares import combine_in_pool, shared, with_shared
from observd.pipeline.astrometry import input_header, solve_stack, wcs_to_lights
from observd.pipeline.composites import build_composites, picture_gains

__all__ = [
    "StackProduct",
    "StackError",
    "build_and_record",
    "build_groups",
    "build_stack",
    "stack_frames",
    "stack_header",
    "stack_night",
    "stack_nights",
]


class StackError(Exception):
    """Some products of a night could not be built; the night is not marked stacked."""


@dataclass(frozen=True)
class StackProduct:
    night: str
    object: str | None
    filter: str | None
    path: Path
    preview_path: Path
    thumbnail_path: Path
    n_combined: int
    total_exptime: float
    reference: str | None
    noise: float
    input_ids: tuple[int, ...]
    channels: str | None = None  # 'R,G,B' for a colour cube
    stars: Stars | None = field(default=None, compare=False, repr=False)  # measured on the stack (luminance)
    nights: tuple[str, ...] = ()  # a deep stack's nights (`observd.pipeline.deep_stacks`); () for a nightly one


def stack_header(
    group: StackGroup,
    *,
    rejection: str,
    sigma: float,
    weighting: str,
    weights: np.ndarray,
    noise: float,
    fwhm: float | None,
) -> fits.Header:
    """Provenance of a product: inputs, exposure, reference, how it was combined."""
    first = group.rows[0]
    h = fits.Header()
    h["BUNIT"] = "adu"
    h["OBJECT"] = group.object or ""
    h["FILTER"] = group.filter or ""
    for key, column in (("INSTRUME", "instrument"), ("TELESCOP", "telescope")):
        if first.get(column):
            h[key] = first[column]
    h["DATE-OBS"] = (first["date_obs"] or "", "start of the first frame (UTC)")
    if group.nights:
        h["NIGHTS"] = (f"{group.nights[0]}..{group.nights[-1]}", f"deep stack of {len(group.nights)} observing nights")
    else:
        h["NIGHT"] = (group.night, "observing night (local date of the evening)")
    h["NCOMBINE"] = (len(group.rows), "frames combined")
    h["EXPTIME"] = (group.total_exptime, "[s] total exposure of the inputs")
    h["TOTEXP"] = (group.total_exptime, "[s] total exposure of the inputs")
    h["ALIGNREF"] = ((group.reference or {}).get("name") or "", "alignment reference frame")
    if group.nights:
        h.add_history(
            f"observd {__version__}: deep stack of {len(group.nights)} nights; each frame resampled once onto "
            "the target's deep reference, its night's masters applied"
        )
    h["SKYNOISE"] = (round(noise, 4), "[adu] background RMS of the stack")
    if fwhm is not None:
        h["FWHM"] = (round(fwhm, 3), "[px] median star FWHM of the stack")
    h["OBSERVD"] = (__version__, "observd version")
    for i, row in enumerate(group.rows[:999], start=1):
        h[f"IMCMB{i:03d}"] = row["name"]
    h.add_history(
        f"observd {__version__}: weighted mean of {len(group.rows)} aligned lights, "
        f"weights {WEIGHTINGS[weighting]} ({weights.min():.3f}..{weights.max():.3f} of total)"
    )
    h.add_history(
        f"observd {__version__}: each frame's background shifted to "
        f"{group.background_level():.2f} adu (additive normalisation)"
    )
    h.add_history(
        f"observd {__version__}: rejection {rejection} at {sigma:g} sigma (median centre); "
        "masked and out-of-footprint pixels ignored"
    )
    return h


def stack_frames(
    paths: Sequence[Path],
    *,
    weights: Sequence[float],
    rejection: str,
    sigma: float,
    memory_limit: int,
    workers: int | None,
    offsets: Sequence[float] | None = None,
    executor: Executor | None = None,
    plane: int = 0,
    noise_floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean of aligned frames with outlier rejection: (data, uncertainty, count).

    Each frame's MASK_BAD pixels and its NaN pixels are ignored; `offsets`
    (one per frame, default 0) are added to each frame first (background normalisation).
    `plane`: which plane of colour cubes (0, 1, 2: R, G, B). `noise_floor`: the frames'
    typical background noise, below which winsorized clipping does not believe its sigma.
    """
    offsets = [0.0] * len(paths) if offsets is None else list(offsets)
    if len(offsets) != len(paths):
        raise ValueError("one offset per frame expected")
    sources = []
    for path, offset in zip(map(Path, paths), offsets):
        mask_index = mask_hdu(path)
        mask = FitsSource(path, hdu=mask_index, plane=plane) if mask_index is not None else None
        sources.append(FitsSource(path, hdu=0, prepare=MaskedOffset(mask, MASK_BAD, float(offset)), plane=plane))
    result = combine_in_pool(
        sources,
        executor=executor,
        workers=workers,
        memory_limit=memory_limit,
        method="mean",
        rejection=rejection,
        sigma_low=sigma,
        sigma_high=sigma,
        weights=weights,
        noise_floor=noise_floor,
    )
    return result.data, result.uncertainty, result.count


def stack_night(
    config: Config,
    catalog: Catalog,
    night: str,
    *,
    object: str | None = None,
    filter: str | None = None,
    pool: Executor | None = None,
) -> list[StackProduct]:
    """Build (or rebuild) the night's products; record them; mark the night stacked.

    `pool`: worker processes that share out the combination (threads are used without one); a
    cluster's workers (`jobs.cluster`) build each product whole instead, from the aligned frames'
    paths, and this process records them.

    A product that fails is logged and the others are still built; then StackError is raised
    and the night is not marked stacked, so the scheduler tries it again.
    """
    groups = _plan(config, catalog, night, object, filter)
    return _record(config, catalog, night, groups, _start(config, groups, pool), pool, object, filter)


def stack_nights(
    config: Config,
    catalog: Catalog,
    nights: Sequence[str],
    finish: Callable[[str], object],
    *,
    object: str | None = None,
    filter: str | None = None,
    pool: Executor | None = None,
) -> Iterator[tuple[str, list[StackProduct] | StackError]]:
    """`stack_night` of each of `nights` once `finish(night)` has made it final: (night, its
    products or its StackError), night by night. On a cluster, every night is finished first and
    all their products are started at once, so that the workers build the products of many
    nights side by side; this process records them night by night as they come."""

    def start(night: str) -> tuple[list[StackGroup], list[Future] | None]:
        groups = _plan(config, catalog, night, object, filter)
        return groups, _start(config, groups, pool)

    ahead = {}
    if isinstance(pool, Cluster):
        for night in nights:
            finish(night)
        ahead = {night: start(night) for night in nights}
    for night in nights:
        if night not in ahead:
            finish(night)
        groups, whole = ahead.pop(night, None) or start(night)
        try:
            yield night, _record(config, catalog, night, groups, whole, pool, object, filter)
        except StackError as exc:
            yield night, exc


def _plan(config: Config, catalog: Catalog, night: str, object: str | None, filter: str | None) -> list[StackGroup]:
    rows = catalog.files(night=night, types=("light",))
    ref_ids = {r["reference_id"] for r in rows if r["reference_id"] is not None}
    references = {i: row for i in ref_ids if (row := catalog.file(i)) is not None}
    return plan_stacks(rows, references, night=night, min_frames=config.stack.min_frames, object=object, filter=filter)


def _start(config: Config, groups: list[StackGroup], pool: Executor | None) -> list[Future] | None:
    """On a cluster, each product's whole build from its frames' paths, on a worker with room
    for it; None elsewhere (`_record` builds them)."""
    if not isinstance(pool, Cluster):
        return None
    needs = (
        stack_need((g.rows[0]["naxis2"], g.rows[0]["naxis1"]), config.stack.memory_limit_mb, colour=g.colour)
        for g in groups
    )
    return [pool.submit_sized(need, build_stack, config, group, None) for need, group in zip(needs, groups)]


def _record(
    config: Config,
    catalog: Catalog,
    night: str,
    groups: list[StackGroup],
    whole: list[Future] | None,
    pool: Executor | None,
    object: str | None,
    filter: str | None,
) -> list[StackProduct]:
    """Build (or take from `whole`) each product of the night, record it, mark the night stacked."""
    products, failures = build_groups(config, catalog, groups, pool, whole)
    build_composites(config, catalog, night)
    if config.photometry.targets:  # photutils and astropy.coordinates (~0.7 s to import) only when needed
        from observd.pipeline.light_curves import light_curves_of_night

        light_curves_of_night(config, catalog, night)  # on the solved stacks; never raises
    if failures:
        raise StackError(f"night {night}: {len(failures)} product(s) failed: " + "; ".join(failures))
    if object is None and filter is None:
        catalog.mark_stacked(night, len(products))
    elif not groups:
        catalog.event("info", "stack", f"nothing to stack for {object or '*'} {filter or '*'} on {night}")
    return products


def build_groups(
    config: Config,
    catalog: Catalog,
    groups: Sequence[StackGroup],
    pool: Executor | None,
    whole: list[Future] | None = None,
) -> tuple[list[StackProduct], list[str]]:
    """Each group's product built and recorded (`build_and_record`; on a cluster, all started at
    once — or already, `whole` — each built whole on a worker), and what failed, each a line."""
    if whole is None:
        whole = _start(config, list(groups), pool)
    products, failures = [], []
    for n, group in enumerate(groups):
        try:
            built = whole[n] if whole is not None else None
            products.append(build_and_record(config, catalog, group, pool, built=built))
        except Exception as exc:
            failures.append(f"{group.object}/{group.filter}: {type(exc).__name__}: {exc}")
    return products, failures


def build_and_record(
    config: Config, catalog: Catalog, group: StackGroup, pool: Executor | None, *, built: Future | None = None
) -> StackProduct:
    """Build one product (nightly, or deep: `group.nights`) — or take it from `built`, its build
    on a cluster's worker (`_start`) —, plate solve it, record it as the current product of its
    target and filter, and say so; a failure is said, then raised."""
    try:
        product = built.result() if built is not None else build_stack(config, group, pool)
    except Exception as exc:
        catalog.event(
            "error",
            "stack-failed",
            f"stack {group.object} {group.filter} of {group.span} failed: {type(exc).__name__}: {exc}",
        )
        raise
    # after the stack is written: its WCS (plate solving never fails a stack)
    solution = solve_stack(config, product.path, product.stars, input_header(group.rows[0]))
    if solution is not None and solution.state == "solved" and not group.nights:
        wcs_to_lights(config, catalog, product.path, group)
    catalog.add_product(
        {
            "night": None if product.nights else product.night,
            "nights": ",".join(product.nights) or None,
            "object": product.object,
            "filter": product.filter,
            "path": str(product.path),
            "preview_path": str(product.preview_path),
            "thumbnail_path": str(product.thumbnail_path),
            "n_combined": product.n_combined,
            "total_exptime": product.total_exptime,
            "reference": product.reference,
            "noise": product.noise,
            "channels": product.channels,
            **(solution.record() if solution is not None else {}),
        },
        product.input_ids,
    )
    if solution is not None:
        catalog.event(
            "info" if solution.state == "solved" else "warning",
            "plate-solve",
            f"stack {product.object} {product.filter} of {group.span}: " + _solution_text(solution),
            str(product.path),
        )
    catalog.event(
        "info",
        "stack",
        f"stack {product.object} {product.filter} of {group.span}: "
        f"{product.n_combined} frames, {format_exposure(product.total_exptime)}, "
        f"noise {product.noise:.3g} adu",
        str(product.path),
    )
    return product


def _solution_text(solution) -> str:
    if solution.state != "solved":
        return f"plate solving {solution.state}: {solution.reason}"
    return (
        f'plate solved, centre {solution.ra:.5f} {solution.dec:+.5f}, {solution.scale:.3f}"/px, '
        f"rotation {solution.rotation:.1f}°, residual {solution.residual} arcsec RMS, {solution.seconds:.1f} s"
    )


def _floor_uncertainty(unc: np.ndarray, count: np.ndarray, rows: Sequence[dict]) -> np.ndarray:
    """Where fewer than 3 values were kept (footprint edges), their scatter says nothing about
    the error (one value has std 0): use the frames' median background noise / sqrt(count).
    In place, on those few pixels only (the stack's `unc` is this function's to change)."""
    noise = float(np.median([r["noise"] for r in rows if r["noise"]] or [np.nan]))
    few = np.nonzero((count > 0) & (count < 3))
    unc[few] = noise / np.sqrt(count[few].astype(np.float64))
    return unc


def build_stack(config: Config, group: StackGroup, pool: Executor | None) -> StackProduct:
    """Combine a group's frames and write the product and its pictures (a deep group's under
    `<output>/deep/`)."""
    c = config.stack
    n = len(group.rows)
    rejection = rejection_for(c.rejection, n, c.small_n, c.sigma)
    # a colour group: each channel with its own sky offsets and noise weights
    channels = (0, 1, 2) if group.colour else (None,)
    stacked, all_weights = [], []
    for channel in channels:
        noises = group.noises(channel)
        weights = frame_weights(noises, [r["fwhm"] for r in group.rows], weighting=c.weighting)
        stacked.append(
            stack_frames(
                group.paths,
                weights=weights,
                rejection=rejection,
                sigma=c.sigma,
                memory_limit=c.memory_limit_mb << 20,
                workers=worker_count(config),
                offsets=group.offsets(channel),
                executor=pool,
                plane=channel or 0,
                noise_floor=typical_noise(noises),
            )
        )
        all_weights.append(weights)
    if group.colour:
        data, unc = np.stack([s[0] for s in stacked]), np.stack([s[1] for s in stacked])
        count = np.min([s[2] for s in stacked], axis=0)
        weights = np.mean(all_weights, axis=0)
    else:
        (data, unc, count), weights = stacked[0], all_weights[0]
    kind = "RGB" if group.colour else ""
    if group.nights:
        stem = deep_stack_stem(config.paths.output, group.object, group.filter, kind)
    else:
        stem = stack_stem(config.paths.output, group.night, group.object, group.filter, kind)
    title = f"{group.object or 'unknown'} — {group.filter or 'no filter'}" + (" (colour)" if group.colour else "")
    lines = [f"{n} frames, {format_exposure(group.total_exptime)}", group.span]
    empty = count == 0
    # The pictures are drawn, and the stack measured, by the pool's workers (which have
    # matplotlib, SEP and scipy loaded: this process need not import them) while this process
    # writes; without a pool, the pictures are drawn in a thread (numpy, zlib and the writes
    # release the GIL). What a broken pool cannot do is done here.
    # The pool's workers map the planes (`shares.shared`) rather than each unpickling a copy.
    draw = (call, "observd.adapters.previews:write_pictures")
    picture_args = (stem, title, lines, picture_gains(config))
    plane = luminance(data) if group.colour else data
    share = shared if pool is not None else nullcontext
    with (
        ThreadPoolExecutor(max_workers=1) as drawing,
        share(data) as shared_data,
        share(plane) if group.colour else nullcontext(shared_data) as shared_plane,
    ):
        pictures = offload(pool or drawing, with_shared, *draw, shared_data, *picture_args)
        measured = offload(pool, with_shared, measure, shared_plane, mask=empty)
        for k in range(len(channels)):
            _floor_uncertainty(unc if unc.ndim == 2 else unc[k], count, group.rows)
        quality, stars = outcome(measured, measure, plane, mask=empty)
        header = stack_header(
            group,
            rejection=rejection,
            sigma=c.sigma,
            weighting=c.weighting,
            weights=weights,
            noise=quality.noise,
            fwhm=quality.fwhm,
        )
        if group.colour:
            header["CHANNELS"] = ("R,G,B", "planes of this cube: red, green, blue (linear, as the camera saw)")
            header.add_history(f"observd {__version__}: each channel stacked on its own (sky offsets, weights)")
        path = write_image(
            stem.with_name(f"{stem.name}.fits"), data, header, uncertainty=unc, mask=empty, cache=False
        )  # observd does not read it again
        preview, thumb = outcome(pictures, *draw, data, *picture_args)
    return StackProduct(
        group.night,
        group.object,
        group.filter,
        path,
        preview,
        thumb,
        n,
        group.total_exptime,
        (group.reference or {}).get("name"),
        float(quality.noise),
        tuple(r["id"] for r in group.rows),
        "R,G,B" if group.colour else None,
        stars,
        group.nights,
    )
