"""Rows of FITS image HDUs, read band by band for `observd.core.combine`, and the other
partial reads of the master and stack jobs (a row sample, the MASK extension's index).

An uncompressed HDU is read band by band straight from the file (``os.pread`` at the data
offset, then BSCALE/BZERO and BLANK applied as astropy does): far cheaper than astropy's
``section`` with the file opened per band, and astropy refuses memmap with BZERO.
Compressed data (a gzip / bzip2 / zip *file*, or a tile-compressed HDU) is decoded whole
once and kept in the source (frame size × native dtype per source, outside the
combination's ``memory_limit``): a gzip stream cannot be read partially, and astropy's tile
``section`` decodes narrow bands much more slowly than one whole read.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

__all__ = ["FitsSource", "MaskedOffset", "mask_hdu", "sample_rows"]

# First bytes of gzip, bzip2 and zip files, which astropy opens but cannot seek in.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZ", b"PK")


@dataclass(frozen=True)
class _Layout:
    """Where and how an HDU's pixels are stored; ``kind`` says how rows are read."""

    kind: str  # 'raw' (uncompressed) or 'whole' (compressed)
    shape: tuple[int, int]
    offset: int = 0  # byte offset of the data (raw)
    dtype: np.dtype | None = None  # on-disk dtype, big-endian (raw)
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None


@dataclass(frozen=True)
class FitsSource:
    """One 2-D image of a FITS file — an HDU, or one plane of a colour cube — read only as far
    as the requested rows (a `observd.core.combine.FrameSource`).

    ``prepare(rows, y0, y1)`` is applied to every band read (e.g. subtract the same rows
    of a master bias, scale a dark, divide a flat by its normalisation constant); it must
    return float32-compatible rows of the same shape.
    """

    path: Path
    hdu: int = 0
    prepare: Callable[[np.ndarray, int, int], np.ndarray] | None = None
    plane: int = 0  # which plane of a 3-D HDU (NAXIS3 = 3: R, G, B)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __reduce__(self):
        """Pickled without its lock and caches: a worker process opens the file itself."""
        return (FitsSource, (self.path, self.hdu, self.prepare, self.plane))

    @cached_property
    def _layout(self) -> _Layout:
        with open(self.path, "rb") as f:
            compressed_file = f.read(3)[:2] in _COMPRESSED_MAGIC
        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[self.hdu]
            header = hdu.header
            naxis = header.get("NAXIS", 0)
            planes = int(header["NAXIS3"]) if naxis == 3 else 1
            if naxis not in (2, 3) or not 0 <= self.plane < planes:
                raise ValueError(f"{self.path}[{self.hdu}] has no 2-D image plane {self.plane}")
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
            if compressed_file or isinstance(hdu, fits.CompImageHDU):
                return _Layout("whole", shape)
            bitpix = int(header["BITPIX"])
            dtype = np.dtype({8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[bitpix])
            blank = header.get("BLANK") if bitpix > 0 else None
            return _Layout(
                "raw",
                shape,
                offset=hdul.fileinfo(self.hdu)["datLoc"] + self.plane * shape[0] * shape[1] * abs(bitpix) // 8,
                dtype=dtype,
                bscale=float(header.get("BSCALE", 1.0)),
                bzero=float(header.get("BZERO", 0.0)),
                blank=blank,
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self._layout.shape

    @cached_property
    def _whole(self) -> np.ndarray:
        """The whole decoded HDU, for compressed data (read once, kept with the source)."""
        with fits.open(self.path, memmap=False) as hdul:
            data = hdul[self.hdu].data
            return data if data.ndim == 2 else data[self.plane]

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        layout = self._layout
        if layout.kind == "raw":
            rows = self._read_raw(layout, y0, y1)
        else:
            with self._lock:  # decompress once even when bands run in parallel
                whole = self._whole
            rows = whole[y0:y1].astype(np.float32)
        if self.prepare is not None:
            rows = np.asarray(self.prepare(rows, y0, y1), dtype=np.float32)
        return rows

    def read_stored(self, y0: int, y1: int) -> np.ndarray:
        """Rows as stored, without scaling or conversion (integer masks), for an uncompressed
        HDU; others are read as `read_rows` reads them."""
        layout = self._layout
        if layout.kind != "raw":
            return self.read_rows(y0, y1)
        return self._pread(layout, y0, y1)

    def _pread(self, layout: _Layout, y0: int, y1: int) -> np.ndarray:
        ncols = layout.shape[1]
        with open(self.path, "rb") as f:
            buf = os.pread(
                f.fileno(),
                (y1 - y0) * ncols * layout.dtype.itemsize,
                layout.offset + y0 * ncols * layout.dtype.itemsize,
            )
        return np.frombuffer(buf, dtype=layout.dtype).reshape(y1 - y0, ncols)

    def _read_raw(self, layout: _Layout, y0: int, y1: int) -> np.ndarray:
        raw = self._pread(layout, y0, y1)
        # astropy scales 8/16-bit integers in float32 and wider ones in float64.
        work = np.float32 if layout.dtype.itemsize <= 2 or raw.dtype.kind == "f" else np.float64
        rows = raw.astype(work)
        if layout.bscale != 1.0:
            rows *= work(layout.bscale)
        if layout.bzero != 0.0:
            rows += work(layout.bzero)
        if layout.blank is not None:
            rows[raw == layout.blank] = np.nan
        return rows.astype(np.float32, copy=False)


@dataclass(frozen=True)
class MaskedOffset:
    """A `FitsSource.prepare` for aligned frames: pixels whose `mask` rows have any of `bits`
    set become NaN (ignored), and `offset` is added (background normalisation). Saturated
    pixels, say, are left out of `bits`, so star cores stay filled. Defined here rather than
    with the stacks so that a worker process can unpickle it without the pipeline's imports."""

    mask: FitsSource | None
    bits: int
    offset: float

    def __call__(self, rows: np.ndarray, y0: int, y1: int) -> np.ndarray:
        rows = rows + np.float32(self.offset)
        if self.mask is not None:
            rows[(self.mask.read_stored(y0, y1).astype(np.uint8, copy=False) & self.bits) != 0] = np.nan
        return rows


def mask_hdu(path: Path) -> int | None:
    """The index of the file's MASK extension, or None when it has none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            for index, hdu in enumerate(hdul):
                if index and hdu.name == "MASK":
                    return index
    return None


def sample_rows(path: Path, hdu: int, step: int) -> tuple[np.ndarray, bool]:
    """Every `step`-th row of an image HDU, scaled to physical values (float32), and whether
    the stored data are floating point.
    A memory map reads only those rows of an uncompressed file; compressed ones are decoded whole."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, memmap=True, do_not_scale_image_data=True) as hdul:
            h = hdul[hdu]
            stored = h.data
            floating = stored.dtype.kind == "f"
            sample = np.asarray(stored[::step], dtype=np.float32)
            scale, zero = h.header.get("BSCALE", 1.0), h.header.get("BZERO", 0.0)
            if scale != 1.0 or zero != 0.0:
                sample = sample * np.float32(scale) + np.float32(zero)
            del stored
    return sample, floating
