"""Building one master calibration from a planned group of raw frames.

`build_master(job)` checks each frame's pixels (non-finite values, saturation, flat
level), subtracts the bias and scaled dark from flats band by band while combining with the
fast engine in `combine`, derives the bad-pixel mask (hot pixels from darks, weak pixels
from flats) and writes the master atomically with its uncertainty plane and provenance. It
touches no database: the caller records the returned `MasterResult`.

It runs in two parts, `combine_master` and `finish_master`. Darks are combined raw and the
master bias is subtracted from the result: every rejection and both combinations here
commute with subtracting the same value from all of a pixel's values (medians, means,
clipping bounds and deviations all shift with it), so the result is the same, and a dark's
combination need not wait for the bias being built beside it (`reduce` overlaps them).
Flats cannot do this: each is divided by its own level after the subtraction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from observd import __version__
from observd.adapters.fits_files import read_image, read_planes, write_image
from observd.adapters.fits_rows import FitsSource, sample_rows
from observd.core.bayer import divide_sites, site_levels
from observd.core.calibrate import overscan_model
from observd.core.combine import Combined
from observd.core.config import MastersConfig
from observd.core.frames import MasterFile
from observd.core.master_plan import DATA_EXCLUSION_PREFIX, min_frames
from observd.jobs.mapped_masters import master_plane, store_normalised
from observd.jobs.pool import offload, outcome
from observd.jobs.shares import combine_in_pool


@dataclass(frozen=True)
class FrameRef:
    id: int
    path: str
    hdu: int
    exptime: float | None
    ccd_temp: float | None
    saturation: float | None
    date_obs: str | None
    biassec: str | None = None  # overscan strip: subtracted before combining


@dataclass(frozen=True)
class MasterSettings:
    """A group's `[masters]` settings as its job needs them (`for_kind`); the defaults live in
    `MastersConfig` only."""

    method: str
    rejection: str
    sigma: float
    memory_limit: int  # bytes
    saturation_fraction: float
    flat_min_level: float
    flat_max_level: float
    hot_pixel_sigma: float
    weak_pixel_level: float
    min_frames: int
    workers: int | None
    flat_normalisation: str = "per_site"  # colour flats only: per_site | frame

    @classmethod
    def for_kind(cls, kind: str, masters: MastersConfig, workers: int | None) -> MasterSettings:
        """The settings of a `kind` master: flats have their own combination method."""
        return cls(
            method=masters.flat_method if kind == "flat" else masters.method,
            rejection=masters.rejection,
            sigma=masters.sigma,
            memory_limit=masters.memory_limit_mb << 20,
            saturation_fraction=masters.saturation_fraction,
            flat_min_level=masters.flat_min_level,
            flat_max_level=masters.flat_max_level,
            hot_pixel_sigma=masters.hot_pixel_sigma,
            weak_pixel_level=masters.weak_pixel_level,
            min_frames=min_frames(kind, masters),
            workers=workers,
            flat_normalisation=masters.flat_normalisation,
        )


@dataclass(frozen=True)
class MasterJob:
    kind: str  # bias | dark | flat
    group_key: str
    version: int
    frames: tuple[FrameRef, ...]
    output: str
    settings: MasterSettings
    header: dict = field(default_factory=dict)  # provenance cards: INSTRUME, FILTER, XBINNING...
    bias: MasterFile | None = None  # subtracted from darks and flats
    dark: MasterFile | None = None  # subtracted (scaled) from flats
    includes_bias: bool = False  # a dark master built without bias subtraction
    bayer: str | None = None  # the frames' stored Bayer pattern (colour camera), None = mono


@dataclass(frozen=True)
class MasterResult:
    path: str | None
    used: tuple[int, ...]
    excluded: dict[int, str]  # file id -> reason (pixel-level)
    median: float | None = None
    n_bad_pixels: int = 0
    message: str = ""


SAMPLE_STRIDE = 4
"""Pixel checks read every 4th row; a flat's own median (its normalisation) and a master's
median (a master flat's normalisation) are taken on every 4th row and column: 1/16 of the
full median's cost, on a sample still large enough to give nearly the same median."""


@dataclass(frozen=True)
class MasterDraft:
    """A master before it is finished (`combine_master`'s result): the frames used, those excluded
    (id -> reason), and their combination (None, with `message`, when too few frames passed the
    pixel checks)."""

    used: tuple[FrameRef, ...]
    excluded: dict[int, str]
    combined: Combined | None
    message: str = ""


def _sample_problem(frame: FrameRef, kind: str, s: MasterSettings, sample: np.ndarray, floating: bool) -> str | None:
    """Why a raw calibration frame's pixels make it unusable, or None, judged on its row sample
    (every SAMPLE_STRIDE-th row). Integer data cannot hold NaN, so for it the sample is enough to
    judge saturation and flat level; float data is scanned whole for NaN/inf."""
    full_scale = frame.saturation or 65535.0
    if floating:
        bad = np.count_nonzero(~np.isfinite(read_image(Path(frame.path), frame.hdu)))
        if bad:
            return f"{DATA_EXCLUSION_PREFIX}{bad:,} NaN/inf pixel(s)"
    saturated = np.count_nonzero(sample >= full_scale) / sample.size
    if saturated > s.saturation_fraction:
        return (
            f"{DATA_EXCLUSION_PREFIX}{saturated:.1%} of pixels at full scale ({full_scale:.0f} ADU), "
            f"limit {s.saturation_fraction:.0%}"
        )
    if kind == "flat":
        level = float(np.median(sample[:, ::SAMPLE_STRIDE])) / full_scale
        if level < s.flat_min_level:
            return (
                f"{DATA_EXCLUSION_PREFIX}flat level {level:.1%} of full scale is below "
                f"{s.flat_min_level:.0%}: too faint"
            )
        if level > s.flat_max_level:
            return (
                f"{DATA_EXCLUSION_PREFIX}flat level {level:.1%} of full scale is above "
                f"{s.flat_max_level:.0%}: near saturation, non-linear"
            )
    return None


def _load_master(ref: MasterFile | None) -> np.ndarray | None:
    return None if ref is None else _master_data(ref.path)


def _master_data(path: str) -> np.ndarray:
    """A master's data plane, read-only: its memory-mapped copy (`mapped_masters`), shared
    through the page cache by this process and every worker, as the lights will use it. The
    flats' calibration travels to the combination's worker processes as master paths, instead
    of as two frame-sized arrays pickled to every share; a private copy cached in each process
    (as before) held the bias and the dark twice over for the process's life (32 MiB per process at 2048²)."""
    return master_plane(path).data


def _dark_scale(job: MasterJob, frame: FrameRef) -> float:
    if job.dark is None or job.dark.includes_bias or not job.dark.exptime or frame.exptime is None:
        return 1.0
    return frame.exptime / job.dark.exptime


def _sources(
    job: MasterJob, frames: list[FrameRef], bias: str | None, dark: str | None, grids: dict[int, np.ndarray]
) -> list[FitsSource]:
    """One FitsSource per frame, with the per-band calibration (a flat's `bias` and `dark`,
    master paths; the overscan of any frame) applied as it is read.

    Frames with an overscan strip are read once whole to model it (a per-row or per-column
    level); a flat's own median is taken on its SAMPLE_STRIDE grid (`grids`, by frame id, cut
    from the row sample the pixel checks read). Everything else streams by band."""
    sources = []
    for frame in frames:
        scale = _dark_scale(job, frame)
        overscan = None
        if frame.biassec:
            overscan = overscan_model(read_image(Path(frame.path), frame.hdu), frame.biassec)
        prepare = _Prepare(bias, dark, scale, 1.0, overscan)
        if job.kind == "flat":
            norm = float(np.median(prepare.on_grid(grids[frame.id], SAMPLE_STRIDE)))
            prepare = dataclasses.replace(prepare, norm=norm if np.isfinite(norm) and norm > 0 else np.nan)
        sources.append(FitsSource(Path(frame.path), frame.hdu, prepare=prepare))
    return sources


@dataclass(frozen=True)
class _Prepare:
    """Picklable per-band calibration: (rows - overscan - bias - scale*dark) / norm, with the
    bias and dark given as master paths (`_master_data`)."""

    bias: str | None
    dark: str | None
    scale: float
    norm: float
    overscan: np.ndarray | None = None  # (rows, 1) or (1, cols) levels

    def _planes(self) -> tuple[tuple[np.ndarray | None, float], ...]:
        return (
            (self.overscan, 1.0),
            (None if self.bias is None else _master_data(self.bias), 1.0),
            (None if self.dark is None else _master_data(self.dark), self.scale),
        )

    def on_grid(self, grid: np.ndarray, step: int) -> np.ndarray:
        """The same calibration of every `step`-th row and column (`grid` = raw[::step, ::step])."""
        out = grid.astype(np.float32, copy=True)
        for plane, factor in self._planes():
            if plane is not None:
                out -= np.float32(factor) * plane[::step, ::step]
        return out / np.float32(self.norm) if self.norm != 1.0 else out

    def __call__(self, rows: np.ndarray, y0: int, y1: int) -> np.ndarray:
        out = rows.astype(np.float32, copy=True)
        for plane, factor in self._planes():
            if plane is not None:
                band = plane if plane.shape[0] == 1 else plane[y0:y1]  # a (1, cols) overscan: every row
                out -= band if factor == 1.0 else np.float32(factor) * band
        if self.norm != 1.0:
            out /= np.float32(self.norm)
        return out


def build_master(job: MasterJob, executor: Executor | None = None) -> MasterResult:
    """Check, calibrate and combine the job's frames; write the master. `executor`: a process
    pool that runs the pixel checks and shares out the combination (`combine_in_pool`)."""
    return finish_master(job, combine_master(job, executor))


def combine_master(job: MasterJob, executor: Executor | None = None) -> MasterDraft:
    """The pixel checks, then the combination of the usable frames: flats bias- and
    dark-subtracted and normalised, darks and biases as they are (module docstring)."""
    s = job.settings
    excluded, grids = check_frames(job.frames, job.kind, s, executor)
    usable = [f for f in job.frames if f.id not in excluded]
    if len(usable) < s.min_frames:
        return MasterDraft(
            (), excluded, None, message=f"only {len(usable)} usable frame(s) after pixel checks, needs {s.min_frames}"
        )
    bias = dark = None
    if job.kind == "flat":
        dark = None if job.dark is None else job.dark.path
        bias = job.bias.path if _subtracts_bias(job) else None
    sources = _sources(job, usable, bias, dark, grids)
    combined = combine_in_pool(
        sources,
        executor=executor,
        workers=s.workers,
        memory_limit=s.memory_limit,
        method=s.method,
        rejection=s.rejection,
        sigma_low=s.sigma,
        sigma_high=s.sigma,
    )
    return MasterDraft(tuple(usable), excluded, combined)


def finish_master(job: MasterJob, combination: MasterDraft) -> MasterResult:
    """Subtract the bias from a dark, normalise a flat to 1, derive the bad-pixel mask, write."""
    if combination.combined is None:
        return MasterResult(None, (), combination.excluded, message=combination.message)
    result, usable = combination.combined, list(combination.used)
    data, uncertainty = result.data, result.uncertainty  # the combination's own: changed in place
    if job.kind == "dark" and _subtracts_bias(job):
        data -= _load_master(job.bias)
    median = float(np.nanmedian(data[::SAMPLE_STRIDE, ::SAMPLE_STRIDE]))
    if job.kind == "flat" and job.bayer and job.settings.flat_normalisation == "per_site":
        levels = site_levels(data, SAMPLE_STRIDE // 2)  # each colour site to 1: the flat adds no tint
        divide_sites(data, levels)
        divide_sites(uncertainty, levels)
        median = 1.0
    elif job.kind == "flat":  # normalised to 1
        data /= np.float32(median)
        uncertainty /= np.float32(median)
        median = 1.0
    mask = bad_pixel_mask(job.kind, data, result, job.settings, median)
    header = master_header(
        job, usable, bias_used=_subtracts_bias(job), dark_used=job.kind == "flat" and job.dark is not None
    )
    header["NBADPIX"] = (int(mask.sum()), "pixels flagged in the MASK extension")
    write_image(Path(job.output), data, header, uncertainty=uncertainty, mask=mask)
    if job.kind == "flat":
        store_normalised(job.output)
    return MasterResult(
        job.output, tuple(f.id for f in usable), combination.excluded, median=median, n_bad_pixels=int(mask.sum())
    )


def _subtracts_bias(job: MasterJob) -> bool:
    """Whether the job's master bias is subtracted: not from a dark that keeps its bias, nor
    from flats whose dark includes it."""
    if job.bias is None or job.includes_bias:
        return False
    return not (job.kind == "flat" and job.dark is not None and job.dark.includes_bias)


def check_frames(
    frames: Sequence[FrameRef], kind: str, s: MasterSettings, executor: Executor | None = None
) -> tuple[dict[int, str], dict[int, np.ndarray]]:
    """Every frame's pixel problem (id -> reason, for the excluded ones) and, for usable flats,
    the SAMPLE_STRIDE grid their normalisation is taken on (cut from the same row sample, read
    once). In the pool when one is given: the checks are I/O and astropy, one core's worth of
    work that would otherwise leave the workers idle between two combinations. A check the
    pool cannot take, or whose worker died, is made here."""
    pool = executor if len(frames) > 1 else None
    started = [offload(pool, _check_frame, frame, kind, s) for frame in frames]
    checks = [outcome(future, _check_frame, frame, kind, s) for future, frame in zip(started, frames)]
    excluded = {f.id: problem for f, (problem, _) in zip(frames, checks) if problem}
    grids = {f.id: grid for f, (_, grid) in zip(frames, checks) if grid is not None}
    return excluded, grids


def _check_frame(frame: FrameRef, kind: str, s: MasterSettings) -> tuple[str | None, np.ndarray | None]:
    sample, floating = sample_rows(Path(frame.path), frame.hdu, SAMPLE_STRIDE)
    problem = _sample_problem(frame, kind, s, sample, floating)
    grid = sample[:, ::SAMPLE_STRIDE].copy() if kind == "flat" and problem is None else None
    return problem, grid


def bad_pixel_mask(kind: str, data: np.ndarray, result: Combined, s: MasterSettings, median: float) -> np.ndarray:
    """Hot pixels (darks), weak/dead pixels (flats), and pixels no frame contributed to;
    `median` is the master's (nan)median on the SAMPLE_STRIDE grid."""
    mask = result.count == 0
    if kind == "dark":
        mad = float(np.nanmedian(np.abs(data[::4, ::4] - median))) * 1.4826
        mask |= data > median + s.hot_pixel_sigma * max(mad, 1e-6)
    elif kind == "flat":
        mask |= ~(data >= s.weak_pixel_level)  # also catches NaN
    return mask


def master_header(job: MasterJob, frames: list[FrameRef], *, bias_used: bool, dark_used: bool) -> fits.Header:
    h = fits.Header()
    h["IMAGETYP"] = (f"MASTER {job.kind.upper()}", "observd master calibration")
    h["BUNIT"] = ("adu" if job.kind != "flat" else "", "flat normalised to 1" if job.kind == "flat" else "")
    for key, value in job.header.items():
        if value is not None:
            h[key] = value
    temps = [f.ccd_temp for f in frames if f.ccd_temp is not None]
    if temps:
        h["CCD-TEMP"] = (round(float(np.mean(temps)), 3), "[C] mean of the input frames")
        h["CCDTMIN"] = (min(temps), "[C] coldest input frame")
        h["CCDTMAX"] = (max(temps), "[C] warmest input frame")
    exptimes = [f.exptime for f in frames if f.exptime is not None]
    if exptimes:
        h["EXPTIME"] = (float(np.median(exptimes)), "[s] exposure of the input frames")
    h["NCOMBINE"] = (len(frames), "frames combined")
    h["MVERSION"] = (job.version, "version of this master within its group")
    h["GROUPKEY"] = job.group_key
    h["DARKBIAS"] = (bool(job.includes_bias), "dark still includes the bias level")
    h["OBSERVD"] = (__version__, "observd version")
    for i, frame in enumerate(frames, start=1):
        h[f"IMCMB{i:03d}"] = Path(frame.path).name
    s = job.settings
    h.add_history(f"observd {__version__}: master {job.kind} v{job.version} from {len(frames)} frames")
    if bias_used and job.bias is not None:
        h.add_history(f"bias subtracted: {Path(job.bias.path).name}")
    if dark_used and job.dark is not None:
        h.add_history(f"dark subtracted, scaled by exposure: {Path(job.dark.path).name}")
    if job.kind == "flat":
        h.add_history(
            f"each flat divided by its own median (every {SAMPLE_STRIDE}th pixel of each axis) "
            "before combining; master divided by "
            + (
                f"the median of each Bayer site ({job.bayer}): the flat adds no colour"
                if job.bayer and s.flat_normalisation == "per_site"
                else "its median (the same grid)"
            )
        )
    if job.bayer:
        h["BAYERPAT"] = (job.bayer, "colour sites of the stored pixels, from row 0")
        h["ROWORDER"] = ("TOP-DOWN", "BAYERPAT starts at the first stored row")
    h.add_history(f"combined: {s.method}, rejection {s.rejection} {s.sigma:g} sigma")
    return h


def change_flag(new_path: Path, old_path: Path, *, sigma: float, fraction: float) -> str | None:
    """A new master that differs wildly from the previous version of its group is flagged.

    Pixels differing by more than `sigma` combined standard errors are counted; more than
    `fraction` of them (a moved dust donut, a light leak, a bias jump) raises the flag.
    """
    try:
        new, old = read_planes(new_path), read_planes(old_path)
    except (OSError, KeyError) as exc:
        return f"previous version unreadable for comparison: {exc}"
    a, b = new.data, old.data
    if a.shape != b.shape:
        return f"shape changed from {b.shape} to {a.shape}"
    ua = new.uncertainty if new.uncertainty is not None else np.zeros_like(a)
    ub = old.uncertainty if old.uncertainty is not None else np.zeros_like(b)
    err = np.sqrt(ua**2 + ub**2)
    diff = np.abs(a - b)
    floor = float(np.nanmedian(err)) or 1e-6
    outliers = np.count_nonzero(diff > sigma * np.maximum(err, floor)) / a.size
    if outliers > fraction:
        return (
            f"differs from v-previous by > {sigma:g} sigma in {outliers:.1%} of pixels "
            f"(limit {fraction:.0%}): check the camera or the calibration frames"
        )
    return None
