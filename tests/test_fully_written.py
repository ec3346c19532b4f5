"""check_fits_size: whole, truncated and foreign files, plain, gzip and tile-compressed."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from observd.adapters.fully_written import SizeCheck, check_fits_size

BLOCK = 2880
NOBODY = 65534


def padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def write_uint16(path: Path, shape=(512, 512)) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU(np.arange(np.prod(shape), dtype=np.uint16).reshape(shape))
    hdu.header["IMAGETYP"] = "Light Frame"
    hdu.writeto(path)
    return hdu


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def test_complete_uint16(tmp_path):
    path = tmp_path / "light.fits"
    write_uint16(path)
    header_bytes = len(fits.getheader(path).tostring())
    implied = header_bytes + padded(512 * 512 * 2)

    result = check_fits_size(path)

    assert result.complete and result.reason is None
    assert result.expected == implied == path.stat().st_size
    assert result.actual == path.stat().st_size


def test_multi_extension_complete_and_truncated_in_an_extension(tmp_path):
    path = tmp_path / "mef.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.arange(100.0))])
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.zeros((64, 80), np.float32), name="SCI"),
            fits.ImageHDU(np.ones((10, 10), np.int32), name="DQ"),
            table,
        ]
    )
    hdus.writeto(path)
    size = path.stat().st_size

    assert check_fits_size(path) == SizeCheck(True, size, size, None)

    # Cut inside the data of the second extension: what is known is the end of that HDU.
    with fits.open(path) as hdul:
        info = [hdu.fileinfo() for hdu in hdul]
    dq_data_start = info[2]["datLoc"]
    dq_end = dq_data_start + padded(10 * 10 * 4)
    truncate(path, dq_data_start + 100)
    result = check_fits_size(path)
    assert not result.complete
    assert result.expected == dq_end
    assert result.reason == f"data ends at byte {dq_data_start + 100:,} of {dq_end:,}"


def test_cut_inside_an_extension_header(tmp_path):
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((8, 8), np.int16))]).writeto(path)
    truncate(path, BLOCK + 300)  # primary complete; extension header cut before END

    result = check_fits_size(path)

    assert not result.complete and result.expected is None
    assert result.reason == "header of extension 1 incomplete: no END card in 300 bytes"


def test_partial_xtension_keyword_after_a_whole_primary_is_incomplete(tmp_path):
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((8, 8), np.int16))]).writeto(path)
    truncate(path, BLOCK + 3)  # b"XTE"

    assert not check_fits_size(path).complete


def test_truncated_data_reports_exact_bytes(tmp_path):
    path = tmp_path / "light.fits"
    write_uint16(path)
    header_bytes = len(fits.getheader(path).tostring())
    truncate(path, 300_000)

    result = check_fits_size(path)

    total = header_bytes + padded(512 * 512 * 2)
    assert not result.complete
    assert result.actual == 300_000
    assert result.expected == total
    assert result.reason == f"data ends at byte 300,000 of {total:,}"


def test_missing_final_padding_counts_as_complete_but_one_data_byte_less_does_not(tmp_path):
    path = tmp_path / "nopad.fits"
    write_uint16(path, shape=(100, 100))
    data_end = BLOCK + 100 * 100 * 2  # 20,000 data bytes: not a multiple of 2880
    truncate(path, data_end)

    result = check_fits_size(path)
    assert result.complete
    assert result.actual == data_end and result.expected == BLOCK + padded(20_000)

    truncate(path, data_end - 1)
    assert not check_fits_size(path).complete


def test_trailing_bytes_that_are_not_an_extension_are_ignored(tmp_path):
    path = tmp_path / "extra.fits"
    write_uint16(path, shape=(10, 10))
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0" * BLOCK)

    result = check_fits_size(path)

    assert result.complete and result.expected == size and result.actual == size + BLOCK


def test_truncated_header(tmp_path):
    path = tmp_path / "cut.fits"
    write_uint16(path, shape=(10, 10))
    truncate(path, 400)  # before the END card (card 10)
    assert check_fits_size(path).reason == "header incomplete: no END card in 400 bytes"
    assert check_fits_size(path).expected is None
    path.unlink()
    write_uint16(path, shape=(10, 10))
    truncate(path, 2000)  # END written, its block's padding not yet
    assert check_fits_size(path).reason == (
        "header incomplete: END card found but header padding missing (2,000 of 2,880 bytes)"
    )

    # A header longer than one block, cut exactly at a block boundary.
    long = tmp_path / "long.fits"
    hdu = fits.PrimaryHDU(np.zeros((10, 10), np.uint8))
    for i in range(60):
        hdu.header[f"KEY{i}"] = i
    hdu.writeto(long)
    truncate(long, BLOCK)
    assert check_fits_size(long).reason == "header incomplete: no END card in 2,880 bytes"


def test_a_few_bytes_of_simple_are_an_incomplete_header_not_a_foreign_file(tmp_path):
    path = tmp_path / "start.fits"
    path.write_bytes(b"SIMPL")
    assert check_fits_size(path).reason == "header incomplete: no END card in 5 bytes"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.fits"
    path.touch()
    assert check_fits_size(path) == SizeCheck(False, 0, None, "empty file (0 bytes)")


def test_html_renamed_fits(tmp_path):
    path = tmp_path / "page.fits"
    path.write_text("<!DOCTYPE html>\n<html><body>Not Found</body></html>\n")

    result = check_fits_size(path)

    assert not result.complete and result.expected is None
    assert result.reason == "not a FITS file: starts with '<!DOCTYPE html>'"


def test_directory(tmp_path):
    folder = tmp_path / "night.fits"
    folder.mkdir()
    assert check_fits_size(folder).reason == "is a directory"


def test_missing_file(tmp_path):
    assert check_fits_size(tmp_path / "gone.fits").reason == "file not found"


def test_no_read_permission(tmp_path):
    """chmod 000. Root reads anyway, so as root the check runs in a child as 'nobody'."""
    if os.geteuid() != 0:
        path = tmp_path / "locked.fits"
        write_uint16(path, shape=(10, 10))
        path.chmod(0)
        assert check_fits_size(path).reason == "permission denied"
        return
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)  # 'nobody' may enter the folder, not read the file
        path = Path(folder) / "locked.fits"
        write_uint16(path, shape=(10, 10))
        path.chmod(0)
        assert check_fits_size(path).complete  # root itself reads it
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: drop to nobody, report, exit
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                os.write(write_end, str(check_fits_size(path).reason).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end) as f:
            assert f.read() == "permission denied"


def gzip_file(src: Path, dst: Path) -> None:
    dst.write_bytes(gzip.compress(src.read_bytes()))


def test_gzip_complete_and_truncated(tmp_path):
    raw = tmp_path / "light.fits"
    write_uint16(raw)
    gz = tmp_path / "light.fits.gz"
    gzip_file(raw, gz)

    result = check_fits_size(gz)
    assert result.complete
    assert result.actual == result.expected == raw.stat().st_size  # decompressed bytes

    truncate(gz, gz.stat().st_size - 4)  # only the trailer's ISIZE is missing
    assert check_fits_size(gz).reason == "gzip stream truncated"
    truncate(gz, gz.stat().st_size // 2)
    result = check_fits_size(gz)
    assert not result.complete and result.reason == "gzip stream truncated"


def test_gzip_of_a_truncated_fits_applies_the_fits_rule(tmp_path):
    raw = tmp_path / "light.fits"
    write_uint16(raw)
    total = raw.stat().st_size
    truncate(raw, 100_000)
    gz = tmp_path / "light.fits.gz"
    gzip_file(raw, gz)

    assert check_fits_size(gz).reason == f"data ends at byte 100,000 of {total:,}"


def test_gzip_of_html_is_not_fits(tmp_path):
    gz = tmp_path / "page.fits.gz"
    gz.write_bytes(gzip.compress(b"<!DOCTYPE html>\n<html></html>"))
    assert check_fits_size(gz).reason == "not a FITS file: starts with '<!DOCTYPE html>'"


def test_tile_compressed_fz(tmp_path):
    path = tmp_path / "light.fits.fz"
    data = np.random.default_rng(1).integers(0, 60000, (256, 256)).astype(np.uint16)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(path)
    size = path.stat().st_size

    result = check_fits_size(path)
    assert result.complete and result.expected == size
    with fits.open(path, disable_image_compression=True) as hdul:
        assert hdul[1].header["PCOUNT"] > 0  # the heap is really there and counted

    truncate(path, size - BLOCK)  # lose the last block of the compressed heap
    result = check_fits_size(path)
    assert not result.complete and result.reason.startswith("data ends at byte")


def real_data_dir() -> Path:
    return Path(os.environ.get("OBSERVD_REAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "real")


def test_real_gzipped_frames_are_complete():
    files = sorted(real_data_dir().glob("*/*.fit*.gz"))
    if not files:
        pytest.skip("real sample data not available")
    for path in files[:12]:
        result = check_fits_size(path)
        assert result.complete, (path.name, result.reason)
        with gzip.open(path) as f:
            assert result.actual == len(f.read())
