"""Is a FITS file completely written? Answered from its structure, never from its data.

Camera software writes a frame in pieces (header, then data in chunks) and some close and
reopen the file on the way, so neither "the file exists" nor "a close event arrived" proves
it is whole. A FITS file says how long it must be: each HDU is a header of 2880-byte blocks
ending with an END card, followed by |BITPIX|/8 x GCOUNT x (PCOUNT + NAXIS1 x ... x NAXISn)
data bytes padded to a multiple of 2880. `check_fits_size` walks those headers with plain
block reads (a handful of 2880-byte reads per HDU, data is skipped by seeking) and compares
the implied length with the real one, so it is cheap enough to run on every file event.

Decisions:
- The standard pads the last HDU to 2880 bytes, but some writers omit that final padding.
  A file whose data is all present but whose final padding is missing counts as *complete*
  (astropy reads it, with a "may have been truncated" warning); `expected` still reports the
  padded length. Padding *between* HDUs is required, because the next header starts there.
- Bytes after the last HDU that do not start an ``XTENSION`` header are ignored (some writers
  append zero blocks); bytes that are a start of ``XTENSION`` mean an extension header is
  still being written, so the file is incomplete.
- gzip files (recognised by their magic bytes, whatever their name) are decompressed as a
  stream, which is the only way to know the gzip trailer is there; `actual` and `expected`
  then count *decompressed* bytes, and the FITS structure inside is checked by the same rule.
  A stream cut short gives reason "gzip stream truncated". Cost: roughly one decompression
  pass (tens of ms for a few MB).
- Tile-compressed ``.fz`` files are ordinary FITS (BINTABLE extensions with a heap counted
  by PCOUNT) and need nothing special.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

__all__ = ["SizeCheck", "check_fits_size", "BLOCK"]

BLOCK = 2880  # FITS logical record: headers and data are padded to this
_CARD = 80
_GZIP_MAGIC = b"\x1f\x8b"
_SKIP_CHUNK = 1 << 20  # decompression chunk when skipping gzip data


@dataclass(frozen=True)
class SizeCheck:
    complete: bool
    actual: int  # bytes present (decompressed bytes for gzip files)
    expected: int | None  # bytes the FITS structure implies (padded), as far as it could be
    # read; None when a header could not be parsed
    reason: str | None  # None when complete; otherwise exact and meant for humans


class _Incomplete(Exception):
    """Internal: the structure walk stopped; carries the `SizeCheck` fields."""

    def __init__(self, reason: str, expected: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.expected = expected


def check_fits_size(path: Path) -> SizeCheck:
    """Say whether `path` holds a whole FITS file (plain, gzip or tile-compressed).

    Never raises for a file-system or format problem: those come back as an incomplete
    `SizeCheck` with the reason ("is a directory", "permission denied", "file not found",
    "empty file (0 bytes)", "not a FITS file: starts with ...", ...).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
            f.seek(0)
            if magic == _GZIP_MAGIC:
                return _check_gzip(f)
            size = os.fstat(f.fileno()).st_size
            return _walk(_PlainStream(f, size))
    except IsADirectoryError:
        return SizeCheck(False, 0, None, "is a directory")
    except PermissionError:
        return SizeCheck(False, 0, None, "permission denied")
    except FileNotFoundError:
        return SizeCheck(False, 0, None, "file not found")
    except OSError as exc:
        return SizeCheck(False, 0, None, f"cannot read: {exc.strerror or exc}")


def _check_gzip(f: BinaryIO) -> SizeCheck:
    stream = _GzipStream(gzip.GzipFile(fileobj=f, mode="rb"))
    try:
        result = _walk(stream)
        stream.drain()  # the trailer (CRC, length) is only verified at the very end
    except EOFError:
        return SizeCheck(False, stream.position, None, "gzip stream truncated")
    except (gzip.BadGzipFile, zlib.error) as exc:
        return SizeCheck(False, stream.position, None, f"gzip stream corrupt: {exc}")
    # Bytes after where the walk stopped were only read by drain(): report the whole length.
    return replace(result, actual=stream.position)


class _PlainStream:
    """Sequential reads over a regular file whose size is known; skipping is a seek."""

    def __init__(self, f: BinaryIO, size: int):
        self._f = f
        self.size = size
        self.position = 0

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        self.position += len(data)
        return data

    def skip(self, n: int) -> None:
        self.position = min(self.position + n, self.size)
        self._f.seek(self.position)

    def total(self) -> int:
        return self.size


class _GzipStream:
    """Sequential reads over a gzip stream; skipping decompresses and discards."""

    def __init__(self, gz: gzip.GzipFile):
        self._gz = gz
        self.position = 0

    def read(self, n: int) -> bytes:
        data = self._gz.read(n)
        self.position += len(data)
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            got = len(self._gz.read(min(n, _SKIP_CHUNK)))
            if not got:
                return
            self.position += got
            n -= got

    def drain(self) -> None:
        while data := self._gz.read(_SKIP_CHUNK):
            self.position += len(data)

    def total(self) -> int:
        # Only called once the walk reached the end of the data it needed; whatever is
        # left is trailing bytes, which are read (and the trailer checked) by drain().
        return self.position


def _walk(stream) -> SizeCheck:
    """Walk every HDU of `stream`; the shared rule for plain and decompressed files."""
    first = stream.read(BLOCK)
    if not first:
        return SizeCheck(False, 0, None, "empty file (0 bytes)")
    if first[:9] != b"SIMPLE  =" and not (len(first) < 9 and b"SIMPLE  =".startswith(first)):
        return SizeCheck(False, stream.total(), None, f"not a FITS file: starts with {_snippet(first)}")
    end = 0  # padded end of the last complete-looking HDU
    hdu = 0
    block = first
    try:
        while True:
            header_bytes, cards = _read_header(stream, block, hdu)
            data_size = _data_size(cards, hdu)
            data_start = end + header_bytes
            data_end = data_start + data_size
            padded_end = data_start + _pad(data_size)
            stream.skip(data_size)
            if stream.position < data_end:
                raise _Incomplete(f"data ends at byte {stream.position:,} of {padded_end:,}", padded_end)
            stream.skip(padded_end - data_end)
            end = padded_end
            if stream.position < end:  # final padding missing: accepted, see module doc
                break
            block = stream.read(BLOCK)
            if not block or not b"XTENSION".startswith(block[:8]):
                break  # no more HDUs; trailing bytes ignored
            hdu += 1
    except _Incomplete as inc:
        return SizeCheck(False, stream.total(), inc.expected, inc.reason)
    return SizeCheck(True, stream.total(), end, None)


def _read_header(stream, block: bytes, hdu: int) -> tuple[int, dict[str, str]]:
    """Read header blocks (the first already in `block`) up to END; return (bytes, cards)."""
    cards: dict[str, str] = {}
    consumed = 0
    where = "header" if hdu == 0 else f"header of extension {hdu}"
    while True:
        consumed += len(block)
        for i in range(0, len(block) - _CARD + 1, _CARD):
            card = block[i : i + _CARD]
            key = card[:8].decode("ascii", "replace").rstrip()
            if key == "END":
                if len(block) < BLOCK:
                    # END is there but the block's padding is not: the data would start at
                    # the next block boundary, which does not exist yet.
                    raise _Incomplete(
                        f"{where} incomplete: END card found but header padding "
                        f"missing ({consumed:,} of {_pad(consumed):,} bytes)"
                    )
                return consumed, cards
            if card[8:10] == b"= " and key not in cards:
                cards[key] = card[10:].decode("ascii", "replace")
        if len(block) < BLOCK:
            raise _Incomplete(f"{where} incomplete: no END card in {consumed:,} bytes")
        block = stream.read(BLOCK)
        if not block:
            raise _Incomplete(f"{where} incomplete: no END card in {consumed:,} bytes")


def _data_size(cards: dict[str, str], hdu: int) -> int:
    """Data bytes (unpadded) implied by one header: |BITPIX|/8 * GCOUNT * (PCOUNT + prod NAXISi)."""
    where = "primary header" if hdu == 0 else f"header of extension {hdu}"
    bitpix = _int_card(cards, "BITPIX", where)
    naxis = _int_card(cards, "NAXIS", where)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise _Incomplete(f"{where} invalid: BITPIX = {bitpix} is not a FITS value")
    if naxis < 0 or naxis > 999:
        raise _Incomplete(f"{where} invalid: NAXIS = {naxis}")
    if naxis == 0:
        return 0
    axes = [_int_card(cards, f"NAXIS{i}", where) for i in range(1, naxis + 1)]
    if any(n < 0 for n in axes):
        raise _Incomplete(f"{where} invalid: negative axis length in {axes}")
    pcount = _int_card(cards, "PCOUNT", where, default=0)
    gcount = _int_card(cards, "GCOUNT", where, default=1)
    if hdu == 0 and axes[0] == 0 and cards.get("GROUPS", "").strip().startswith("T"):
        axes = axes[1:]  # random groups: NAXIS1 = 0 is a marker, not an axis
    product = 1
    for n in axes:
        product *= n
    return abs(bitpix) // 8 * gcount * (pcount + product)


def _int_card(cards: dict[str, str], key: str, where: str, default: int | None = None) -> int:
    raw = cards.get(key)
    if raw is None:
        if default is None:
            raise _Incomplete(f"{where} invalid: {key} missing")
        return default
    value = raw.split("/", 1)[0].strip()
    try:
        return int(value)
    except ValueError:
        raise _Incomplete(f"{where} invalid: {key} = {value!r} is not an integer") from None


def _pad(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _snippet(first: bytes) -> str:
    """The start of a non-FITS file as a quoted, printable string (first line, 40 bytes max)."""
    line = first.lstrip()[:40].split(b"\n", 1)[0].split(b"\r", 1)[0]
    return repr(line.decode("latin-1"))
