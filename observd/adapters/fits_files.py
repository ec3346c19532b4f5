"""FITS reading and atomic writing: the only module that opens image files.

Raw files are opened read-only and never written. Every output goes through
`write_atomic`: a temporary file in the destination folder, fsync, rename, fsync of the
folder, so a crash, SIGKILL or full disk never leaves a partial product under its final
name (the temporary is removed on failure, and a stale one is ignored by the watcher's
dotfile rule).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.utils.exceptions import AstropyWarning

from observd.core.cards import HeaderCards

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageHeader:
    cards: HeaderCards
    hdu_index: int


class FitsReadError(Exception):
    """A file that is FITS-shaped but cannot be used; the message is the reason for the catalog."""


def read_image_header(path: Path) -> ImageHeader:
    """The header cards of the first HDU holding a 2-D image (primary, or an extension /
    tile-compressed HDU), for `observd.core.classify`.

    For multi-extension files the primary header's cards (OBJECT, DATE-OBS...) are merged
    under the image header's, since many writers put them only in the primary HDU.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                for index, hdu in enumerate(hdul):
                    header = hdu.header
                    naxis = (
                        header.get("ZNAXIS", header.get("NAXIS", 0))
                        if isinstance(hdu, fits.CompImageHDU)
                        else header.get("NAXIS", 0)
                    )
                    if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and naxis >= 2:
                        merged = header.copy()
                        if index > 0:
                            for card in hdul[0].header.cards:
                                if card.keyword not in merged and card.keyword not in ("", "COMMENT", "HISTORY"):
                                    merged.append(card)
                        return ImageHeader(header_cards(merged), index)
        except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
            raise FitsReadError(f"not readable as FITS: {exc}") from exc
    raise FitsReadError("no 2-D image in any HDU")


_COMMENTARY = ("", "COMMENT", "HISTORY")
# what astropy raises, on lookup, for a card whose value it cannot parse
_UNREADABLE_CARD = (KeyError, IndexError, ValueError, TypeError, VerifyError)


def header_cards(header: fits.Header) -> HeaderCards:
    """`header` as plain values, read once, so the core never touches a live astropy header.

    astropy parses a card's value only when it is looked up, and raises then for a card it
    cannot parse (`SET-TEMP= -20 C`); here that happens once, and such a keyword is left
    out. Each keyword gets what `header.get` and `header.comments` give for it, so
    duplicates (the first card), HIERARCH and record-valued cards read as astropy reads
    them. COMMENT/HISTORY/blank cards are not values and are left out.
    """
    cards: dict[str, tuple[object, str]] = {}
    with warnings.catch_warnings():  # the unparsable cards are the ones left out
        warnings.simplefilter("ignore", AstropyWarning)
        for card in header.cards:
            keyword = (card.keyword.split(".", 1)[0] if card.field_specifier else card.keyword).upper()
            if keyword in cards or keyword in _COMMENTARY:
                continue
            try:
                value, comment = header.get(keyword), header.comments[keyword]
            except _UNREADABLE_CARD:
                continue
            cards[keyword] = (None if isinstance(value, fits.card.Undefined) else value, comment)
    return MappingProxyType(cards)


def read_image(path: Path, hdu_index: int = 0) -> np.ndarray:
    """Image data as float32 (BZERO/BSCALE applied)."""
    with _open_raw(path) as hdul:
        return _image_data(hdul, hdu_index)


def read_image_and_header(path: Path, hdu_index: int = 0) -> tuple[np.ndarray, fits.Header]:
    """`read_image` and that HDU's header, from one open of the file (a light needs both).

    The header is copied before the data is read: reading scaled data makes astropy drop
    BZERO/BSCALE/BLANK from the HDU's header, and the caller wants the file's header.
    """
    with _open_raw(path) as hdul:
        header = hdul[hdu_index].header.copy()
        return _image_data(hdul, hdu_index), header


@contextmanager
def _open_raw(path: Path) -> Iterator[fits.HDUList]:
    """A raw file, read into memory (not mapped: the camera may still rewrite it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, memmap=False) as hdul:
            yield hdul


def _image_data(hdul: fits.HDUList, hdu_index: int) -> np.ndarray:
    data = hdul[hdu_index].data
    if data is None or data.ndim < 2:
        raise FitsReadError(f"HDU {hdu_index} holds no 2-D image")
    if data.ndim > 2:  # e.g. (1, ny, nx) cubes written by some programs
        data = data.reshape(data.shape[-2:]) if np.prod(data.shape[:-2]) == 1 else data[0]
    return np.ascontiguousarray(data, dtype=np.float32)


def write_atomic(path: Path, hdul: fits.HDUList, *, cache: bool = True) -> Path:
    """Write `hdul` to `path` so that `path` is either absent, the old file, or complete
    (`cache`: see `write_with`)."""

    def write(fh):
        with warnings.catch_warnings():  # long comments are truncated by design; say nothing
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdul.writeto(fh, output_verify="silentfix")

    return write_with(path, write, cache=cache)


def write_with(path: Path, write: Callable[[BinaryIO], object], *, cache: bool = True) -> Path:
    """Temp file in the destination folder (a dotfile, so watchers ignore it), fsync, rename.

    `cache=False`: a file that observd will not read again soon leaves the page cache once it
    is on disk, so its pages serve the next output and other data stays cached. Measured on an
    ext4 virtual disk: a new 36 MB file took ~120 ms to write while earlier outputs stayed
    cached, 10-17 ms when each was dropped after its fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            if not cache and hasattr(os, "posix_fadvise"):
                try:
                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                except OSError:  # advice only: a file system that refuses it keeps the file cached
                    pass
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ImagePlanes:
    """A file in `write_image`'s layout, read back: float32 data and uncertainty, uint8 mask."""

    data: np.ndarray
    header: fits.Header
    uncertainty: np.ndarray | None
    mask: np.ndarray | None


def read_planes(path: Path) -> ImagePlanes:
    """Read what `write_image` wrote (masters, calibrated lights); absent extensions are None.

    Each plane is read from the file straight into its own native array and byte-swapped there:
    one frame-sized allocation per plane, and no map of the file (whose pages would count in
    this process's memory while it converts them), rather than a big-endian buffer and then a
    native copy. Safe here, and only here: these are observd's own outputs, float32 and uint8
    planes without scaling, written atomically and never truncated in place (a raw file may be
    scaled, or rewritten by the camera: `read_image` reads those)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, memmap=True) as hdul:  # headers only: no plane is touched
            header = hdul[0].header.copy()
            locations = {
                _extension_name(hdu, i): (hdul.fileinfo(i)["datLoc"], hdu.header) for i, hdu in enumerate(hdul)
            }
    with open(path, "rb") as fh:
        data, uncertainty, mask = (
            _read_native(fh, *locations[name]) if name in locations else None for name in ("PRIMARY", "UNCERT", "MASK")
        )
    return ImagePlanes(
        data.astype(np.float32, copy=False),
        header,
        None if uncertainty is None else uncertainty.astype(np.float32, copy=False),
        None if mask is None else _one_mask(mask),
    )


def _extension_name(hdu, index: int) -> str:
    return "PRIMARY" if index == 0 else str(hdu.header.get("EXTNAME", "")).upper()


def _read_native(fh: BinaryIO, offset: int, header: fits.Header) -> np.ndarray:
    """An unscaled image HDU's data, read at `offset` into a native-endian array."""
    if header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0:
        raise ValueError(f"{fh.name}: scaled data (BSCALE/BZERO) is not an observd output plane")
    dtype = np.dtype({8: "u1", 16: ">i2", 32: ">i4", -32: ">f4", -64: ">f8"}[header["BITPIX"]])
    shape = tuple(header[f"NAXIS{k}"] for k in range(header["NAXIS"], 0, -1))
    out = np.empty(shape, dtype.newbyteorder("="))
    fh.seek(offset)
    if fh.readinto(memoryview(out).cast("B")) != out.nbytes:
        raise OSError(f"{fh.name}: truncated plane")
    if dtype.itemsize > 1 and dtype.byteorder != "=" and np.little_endian:
        out.byteswap(inplace=True)
    return out


def _one_mask(mask: np.ndarray) -> np.ndarray:
    """A MASK extension as one (rows, cols) plane: a colour cube's per-plane copies combined."""
    mask = mask.astype(np.uint8, copy=False)
    return np.bitwise_or.reduce(mask, axis=0) if mask.ndim == 3 else mask


def write_image(
    path: Path,
    data: np.ndarray,
    header: fits.Header,
    *,
    uncertainty: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    cache: bool = True,
    consumed: Callable[[], object] | None = None,
) -> Path:
    """float32 primary + UNCERT (std-dev) + MASK extensions, the layout `CCDData.read`
    understands, written atomically (`write_with`): the bytes astropy's `HDUList.writeto` writes
    of the same planes, without whole big-endian copies of them. Each plane is converted and
    written a few rows at a time, so writing a frame costs a MiB, not another frame (a 61 MP
    light's planes with uncertainty are ~0.6 GB); the callers' arrays are left as they are.
    `consumed` is called once every plane has been written, before the file is flushed to disk:
    from then on the caller may change the arrays (`cache`: see `write_with`)."""
    layout = _layout(data, uncertainty, mask)
    hdus = _headers(layout, header)

    def write(fh):
        with warnings.catch_warnings():  # long comments are truncated by design; say nothing
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdus.verify("silentfix")
        for hdu, (plane, dtype, _) in zip(hdus, layout):
            fh.write(hdu.header.tostring().encode("ascii"))
            for block in _row_blocks(plane, np.dtype(dtype).itemsize):
                fh.write(np.ascontiguousarray(block, dtype=dtype))
            fh.write(bytes(-plane.size * np.dtype(dtype).itemsize % 2880))
        if consumed is not None:
            consumed()

    return write_with(path, write, cache=cache)


def _layout(
    data: np.ndarray, uncertainty: np.ndarray | None, mask: np.ndarray | None
) -> list[tuple[np.ndarray, str, str | None]]:
    """The planes of `write_image`'s layout: (array, FITS dtype, EXTNAME) of each HDU."""
    layout = [(np.asarray(data), ">f4", None)]
    if uncertainty is not None:
        layout.append((np.asarray(uncertainty), ">f4", "UNCERT"))
    if mask is not None:
        # a colour cube's one mask is written once per plane: CCDData wants the data's shape
        mask = np.broadcast_to(mask, np.shape(data)) if np.ndim(mask) < np.ndim(data) else np.asarray(mask)
        layout.append((mask, "u1", "MASK"))
    return layout


def _headers(layout, header: fits.Header) -> fits.HDUList:
    """The HDUs of `layout` for their headers only: each plane's data a zero-strided stand-in of
    its shape and type, never read."""

    def stand_in(plane: np.ndarray, dtype: str) -> np.ndarray:
        return np.broadcast_to(np.zeros((), dtype), plane.shape)

    hdus = [fits.PrimaryHDU(stand_in(*layout[0][:2]), header=header)]
    for plane, dtype, name in layout[1:]:
        h = fits.Header()
        if name == "UNCERT":
            h["UTYPE"] = ("StdDevUncertainty", "astropy.nddata uncertainty class")
        hdus.append(fits.ImageHDU(stand_in(plane, dtype), header=h, name=name))
    return fits.HDUList(hdus)


def _row_blocks(plane: np.ndarray, itemsize: int) -> Iterator[np.ndarray]:
    """A plane (or each plane of a cube) in blocks of whole rows of about `_CHUNK` bytes."""
    for image in plane if plane.ndim > 2 else (plane,):
        step = max(1, _CHUNK // max(1, image.shape[-1] * itemsize))
        for y in range(0, image.shape[0], step):
            yield image[y : y + step]


def image_shape(path: Path, hdu_index: int = 0) -> tuple[int, int]:
    """(rows, columns) of an image HDU, from its header alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        header = fits.getheader(path, hdu_index)
    return (int(header["NAXIS2"]), int(header["NAXIS1"]))
