"""Masters held once per host: native-endian `.npy` copies of their planes, memory-mapped by every worker.

Each worker used to read every master it applies into its own float32 arrays (data, uncertainty,
mask of bias, dark and flat: 28 bytes per pixel) and derive its own flat-fielding planes from them
(`Plane.normalised`, `inverse_square`, `relative_variance`, the variances: 20 bytes per pixel more),
so the host held one copy per worker. Now the first worker that needs a master writes its planes,
and the derived ones, once, as `.npy` files in a hidden folder beside it (atomically: a temporary
linked to its name, the first writer's copy kept); every worker then maps them read-only
(`np.load(mmap_mode="r")`), and the page cache holds one copy for all of them. Calibration only
reads masters, so the maps are never copied.

The folder's name carries the master file's size and mtime: a master written again under the
same name gets new copies, never stale ones. `MappedPlane` is a `Plane` whose derived planes come
from those files (computed by `Plane`'s own arithmetic, once per host), so the results are those of
the planes read from FITS, bit for bit.

On a cluster whose workers are on several hosts (`jobs.cluster`), each host stores its own copies
in its temporary folder instead (`host_planes_folder`): copies beside the master, on the shared
file system, would be written by the first worker of every host at once, and a rename by one
host over a file another host has mapped leaves that host's map on a deleted file (NFS: SIGBUS).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from observd.adapters.fits_files import read_planes
from observd.core.calibrate import Plane

PLANES_FOLDER = ".planes"
_LISTING = "planes.json"  # written last: which stored planes exist (a master may have no uncertainty)


_STORED = ("data", "uncertainty", "mask")


@lru_cache(maxsize=16)
def master_plane(path: str, on_host: bool = False) -> Plane:
    """The master at `path` as memory-mapped planes, written beside it (`on_host`: in this host's
    temporary folder) first by the first worker that needs it."""
    folder = host_planes_folder(Path(path)) if on_host else planes_folder(Path(path))
    if on_host and folder.exists():
        os.utime(folder)  # mapped by one more process: recently used (`_remove_unused`)
    if not (folder / _LISTING).exists():
        _store(Path(path), folder)
        if on_host:
            _remove_unused(folder)
    present = json.loads((folder / _LISTING).read_text())
    planes = {name: np.load(folder / f"{name}.npy", mmap_mode="r") if name in present else None for name in _STORED}
    return MappedPlane(planes["data"], planes["uncertainty"], planes["mask"], folder=folder)


def store_normalised(path: str) -> None:
    """Store the normalised plane of the flat at `path`, the plane lights divide by, as soon as the
    flat is written (by the process that wrote it). Otherwise the workers' first lights derive it,
    each reading the flat's data, whose pages then stay in every worker's memory (4 B/px each).
    Derived through a map of its own, not the cached one: the flat's data pages it reads leave
    this process with it, instead of staying in its memory while its next lights run."""
    master_plane.__wrapped__(path).normalised  # noqa: B018  (derived, stored and mapped on first access)


@lru_cache(maxsize=16)
def dark_offset(
    bias_path: str, dark_path: str, dark_scale: float, on_host: bool = False, flat_path: str | None = None
) -> Plane:
    """``bias + dark_scale · dark`` as one mapped plane, its mask the masters' masks combined (the
    flat's too, given `flat_path`): what a light without a noise model subtracts, stored once per
    host beside the dark's planes (as `master_plane`'s). Mapping the bias's and the dark's data
    and the three masks instead costs every light 11 bytes per pixel of the host's memory, this 5."""
    paths = [bias_path, dark_path] + ([flat_path] if flat_path else [])
    folders = [master_plane.__wrapped__(p, on_host).folder for p in paths]
    dark = folders[1]
    others = ":".join(folder.name for folder in folders[::2])  # the bias's and the flat's
    key = hashlib.sha256(f"{others}:{float(dark_scale)!r}".encode()).hexdigest()[:16]
    data, mask = dark / f"offset-{key}.npy", dark / f"offset-{key}-mask.npy"
    if not data.exists():
        dark.mkdir(parents=True, exist_ok=True)  # a host's copies removed meanwhile (unused)
        masks = [folder / "mask.npy" for folder in folders if (folder / "mask.npy").exists()]
        if masks:
            _write_once(mask, lambda f: _combine_stored(f, masks, lambda *blocks: np.logical_or.reduce(blocks)))
        scaled = np.float32(dark_scale)
        _write_once(  # last: its presence says both are stored
            data,
            lambda f: _combine_stored(f, [folders[0] / "data.npy", dark / "data.npy"], lambda a, b: a + scaled * b),
        )
    return MappedPlane(
        np.load(data, mmap_mode="r"), None, np.load(mask, mmap_mode="r") if mask.exists() else None, folder=dark
    )


@lru_cache(maxsize=16)
def without_mask(path: str, on_host: bool = False) -> Plane:
    """`master_plane(path)` with no mask: a flat applied to lights whose `dark_offset` carries
    its mask. Kept, like the master's own planes, so that every light maps the same planes."""
    return dataclasses.replace(master_plane(path, on_host), mask=None)


def _combine_stored(out: BinaryIO, paths: list[Path], combine: Callable) -> None:
    """``combine`` of stored planes (`.npy`, the same shape and type) written to `out` as a `.npy`,
    a block of rows at a time, read with plain reads: no map of theirs holds their pages in this
    process (two frames at once in every worker that derives it, the first lights of a night)."""
    with contextlib.ExitStack() as files:
        handles = [files.enter_context(open(p, "rb")) for p in paths]
        layouts = []
        for fh in handles:
            np.lib.format.read_magic(fh)
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            layouts.append((shape, dtype))
        shape, dtype = layouts[0]

        def combined(blocks: list[np.ndarray]) -> np.ndarray:
            return blocks[0] if len(blocks) == 1 else combine(*blocks)

        probe = combined([np.zeros(0, d) for _, d in layouts])  # the result's type
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(probe.dtype), "fortran_order": False, "shape": tuple(shape)}
        )
        row = int(np.prod(shape[1:], dtype=np.int64))
        step = max(1, (1 << 22) // max(1, row * dtype.itemsize))
        for y in range(0, shape[0], step):
            count = min(step, shape[0] - y) * row
            blocks = [np.fromfile(fh, dtype=d, count=count) for fh, (_, d) in zip(handles, layouts)]
            out.write(np.ascontiguousarray(combined(blocks)).data)


def unmap_masters() -> None:
    """Let go of this process's maps of masters (they come back, mapped again, at the next
    `master_plane`). Mapped pages count in every mapping process's memory (PSS) as long as they
    are mapped: a worker that goes on to combine a stack no longer needs the masters its lights
    used (10-56 bytes per pixel in all, for bias, dark and flat)."""
    master_plane.cache_clear()
    dark_offset.cache_clear()
    without_mask.cache_clear()


def planes_folder(master: Path) -> Path:
    """Where the mapped copies of `master` (as it is now) live."""
    stat = master.stat()
    return master.parent / PLANES_FOLDER / f"{master.name}-{stat.st_size}-{stat.st_mtime_ns}"


def host_planes_folder(master: Path) -> Path:
    """Where this host keeps its own mapped copies of `master` (as it is now): its temporary
    folder, under a name that tells masters of the same name in different folders apart."""
    stat = master.stat()
    key = hashlib.sha256(str(master.absolute()).encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"observd-planes-{os.getuid()}"
    return root / f"{key}-{master.name}-{stat.st_size}-{stat.st_mtime_ns}"


HOST_KEEP = 32
"""How many masters' copies a host keeps at least: the most recently mapped."""

HOST_IDLE_S = 600
"""A host's copies of a master mapped this recently are kept, however many there are."""


def _remove_unused(folder: Path) -> None:
    """What a host's temporary folder need not keep, now that `folder` is stored: the copies of
    earlier contents of the same master (written again since), and beyond the `HOST_KEEP` most
    recently mapped masters, those not mapped for `HOST_IDLE_S`. An archive's years of nights
    would otherwise leave every master of every night there. A worker still holding a map keeps
    its pages until it lets go (a local file system), and a master needed again is stored again."""
    prefix = folder.name.rsplit("-", 2)[0] + "-"  # the same key: the same master path
    others = [f for f in folder.parent.iterdir() if f != folder]
    stale = [f for f in others if f.name.startswith(prefix)]
    idle_since = time.time() - HOST_IDLE_S
    by_use = sorted((f for f in others if f not in stale), key=_last_used, reverse=True)
    unused = [f for f in by_use[HOST_KEEP - 1 :] if _last_used(f) < idle_since]
    for old in stale + unused:
        shutil.rmtree(old, ignore_errors=True)


def _last_used(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:  # removed meanwhile by another worker
        return float("inf")


def _store(master: Path, folder: Path) -> None:
    planes = read_planes(master)
    mask = None if planes.mask is None else planes.mask.astype(bool)
    present = {n: p for n, p in zip(_STORED, (planes.data, planes.uncertainty, mask)) if p is not None}
    folder.mkdir(parents=True, exist_ok=True)
    for name, plane in present.items():
        if not (folder / f"{name}.npy").exists():  # another process is storing the same master
            save_atomic(folder / f"{name}.npy", plane)
    _write_once(folder / _LISTING, lambda f: f.write(json.dumps(list(present)).encode()))


def save_atomic(path: Path, array: np.ndarray) -> None:
    """`array` as a native-endian .npy file at `path`, whole or not at all, written once (`_write_once`)."""
    _write_once(path, lambda f: np.save(f, np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))))


def _write_once(path: Path, write: Callable) -> None:
    """A temporary of its own for each writer (process or thread), named `path` once whole and on
    disk: a crash must not leave a truncated copy that every later light would map.

    The first writer names it; a later one (a worker that stored the same master at the same
    moment: two lights started together) drops its copy, the same bytes, and maps the first.
    Had each renamed its own over `path`, a worker would keep mapping the file replaced under it,
    and the page cache would hold one copy per worker instead of one per host (measured: the
    flat's planes, 9 bytes per pixel, twice at 2048²). Where the file system has no hard links,
    the last rename wins, as before."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(f.name, path)
    except FileExistsError:
        pass
    except OSError:
        os.replace(f.name, path)
    finally:
        Path(f.name).unlink(missing_ok=True)


@dataclass(frozen=True)
class MappedPlane(Plane):
    """A master's mapped planes; each derived plane is computed by `Plane` once per host, then mapped."""

    folder: Path | None = None

    def _mapped(self, name: str, compute: Callable[[Plane], np.ndarray | None]) -> np.ndarray | None:
        path = self.folder / f"{name}.npy"
        if not path.exists():
            plane = compute(self)
            if plane is None:
                return None
            self.folder.mkdir(parents=True, exist_ok=True)  # a host's copies removed meanwhile (unused)
            save_atomic(path, plane)
        return np.load(path, mmap_mode="r")

    @cached_property
    def normalised(self) -> np.ndarray:
        return self._mapped("normalised", Plane.normalised.func)

    @cached_property
    def inverse_square(self) -> np.ndarray:
        return self._mapped("inverse_square", Plane.inverse_square.func)

    @cached_property
    def relative_variance(self) -> np.ndarray | None:
        return self._mapped("relative_variance", Plane.relative_variance.func)

    @cached_property
    def variance(self) -> np.ndarray | None:
        return self._mapped("variance", Plane.variance.func)

    @cached_property
    def bad(self) -> np.ndarray | None:
        """The stored mask is already boolean: the map itself, not a copy."""
        return self.mask
