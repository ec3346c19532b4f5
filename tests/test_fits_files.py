"""FITS files (observd.adapters.fits_files): atomic writes that never leave a partial or temporary
file, the write_image/read_planes layout, raw reads, content hashes."""

import errno
import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

import observd.adapters.fits_files
from observd.adapters.fits_files import (
    FitsReadError,
    read_image,
    read_image_header,
    read_planes,
    sha256_file,
    write_atomic,
    write_image,
    write_with,
)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- moved from test_lights.py --------------------------------------------------------------------


def test_an_output_is_written_whole_where_the_file_system_refuses_cache_advice(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(observd.adapters.fits_files.os, "posix_fadvise", refuse)
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_image(tmp_path / "x.fits", data, fits.Header(), cache=False)
    np.testing.assert_array_equal(read_planes(path).data, data)
    assert [p.name for p in tmp_path.iterdir()] == ["x.fits"]


# -- atomic writes --------------------------------------------------------------------------------


def astropy_layout(data, header, uncertainty=None, mask=None) -> fits.HDUList:
    """`write_image`'s layout built with astropy alone, the reference it must match byte for byte."""
    hdus = [fits.PrimaryHDU(np.asarray(data, dtype=">f4"), header=header)]
    if uncertainty is not None:
        h = fits.Header()
        h["UTYPE"] = ("StdDevUncertainty", "astropy.nddata uncertainty class")
        hdus.append(fits.ImageHDU(np.asarray(uncertainty, dtype=">f4"), header=h, name="UNCERT"))
    if mask is not None:
        mask = np.broadcast_to(mask, np.shape(data))  # a colour cube's one mask, once per plane
        hdus.append(fits.ImageHDU(np.asarray(mask, dtype=np.uint8), name="MASK"))
    return fits.HDUList(hdus)


@pytest.mark.parametrize("kind", ["mono", "colour", "plain"])
def test_write_image_writes_what_astropy_writes_byte_for_byte(tmp_path, kind):
    """Mono planes with uncertainty and mask, a colour cube with its one 2-D mask, data alone; a
    header with a comment too long for its card (astropy's silent fix truncates it)."""
    rng = np.random.default_rng(3)
    shape = {"mono": (301, 517), "colour": (3, 67, 45), "plain": (20, 20)}[kind]
    data = rng.normal(size=shape).astype(np.float32)
    uncertainty = np.abs(data) if kind != "plain" else None
    mask = (rng.random(shape[-2:]) < 0.1).astype(np.uint8) if kind != "plain" else None
    header = fits.Header()
    header["OBJECT"] = "M42"
    header["NOTE"] = ("x" * 50, "a comment far too long to fit on its card beside the value " * 2)
    header.add_history("calibrated")
    expected = write_atomic(tmp_path / "a.fits", astropy_layout(data, header, uncertainty, mask))
    consumed = []
    path = write_image(
        tmp_path / "b.fits", data, header, uncertainty=uncertainty, mask=mask, consumed=lambda: consumed.append(1)
    )
    assert path.read_bytes() == expected.read_bytes()
    assert consumed == [1]
    assert CCDData.read(path, unit="adu").data.shape == shape


def test_read_planes_allocates_the_planes_once(tmp_path):
    """Each plane read straight into its native array: the peak is the planes themselves (36 MiB
    at 2048² with uncertainty and mask), not a big-endian buffer beside a native copy."""
    import tracemalloc

    data = np.random.default_rng(4).normal(size=(2048, 2048)).astype(np.float32)
    mask = (data > 2).astype(np.uint8)
    path = write_image(tmp_path / "x.fits", data, fits.Header(), uncertainty=np.abs(data), mask=mask)
    tracemalloc.start()
    planes = read_planes(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < (36 << 20) + (2 << 20)
    np.testing.assert_array_equal(planes.data, data)
    np.testing.assert_array_equal(planes.uncertainty, np.abs(data))
    np.testing.assert_array_equal(planes.mask, mask)
    assert planes.data.dtype.isnative and planes.data.flags.writeable


def test_write_image_holds_no_copy_of_the_planes(tmp_path):
    """Writing a 16 MiB frame (float32 data and uncertainty, a mask) allocates a few MiB (blocks
    of rows, astropy's header work), where whole big-endian copies would take 36 MiB."""
    import tracemalloc

    data = np.ones((2048, 2048), np.float32)
    write_image(tmp_path / "warm.fits", data[:8], fits.Header())  # astropy's first-use allocations
    tracemalloc.start()
    write_image(tmp_path / "x.fits", data, fits.Header(), uncertainty=data, mask=np.zeros(data.shape, np.uint8))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20
    assert read_planes(tmp_path / "x.fits").uncertainty.sum() == data.size


def test_a_failing_writer_leaves_the_previous_file_intact_and_no_temporary(tmp_path):
    path = tmp_path / "master.fits"
    write_atomic(path, fits.HDUList([fits.PrimaryHDU(np.ones((4, 4), np.float32))]))
    before = path.read_bytes()

    def half_then_disk_full(fh):
        fh.write(b"SIMPLE  =                    T" + b" " * 3000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_with(path, half_then_disk_full)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["master.fits"]


def test_a_failing_first_write_leaves_nothing_under_the_final_name(tmp_path):
    class Interrupted(BaseException):
        pass

    def interrupted(fh):
        fh.write(b"x" * 10000)
        raise Interrupted  # e.g. KeyboardInterrupt / SystemExit mid-write

    with pytest.raises(Interrupted):
        write_with(tmp_path / "night" / "a.fits", interrupted)
    assert _listing(tmp_path / "night") == []


def test_a_fits_write_that_runs_out_of_space_leaves_no_temporary(tmp_path):
    hdul = fits.HDUList([fits.PrimaryHDU(np.zeros((64, 64), np.float32))])

    def disk_full(fh, **kwargs):
        fh.write(b"SIMPLE  =                    T" + b" " * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")

    hdul.writeto = disk_full  # astropy's own write, failing half-way
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "cal.fits", hdul)
    assert _listing(tmp_path) == []


def test_the_temporary_is_a_dotfile_in_the_destination_folder(tmp_path):
    seen = []

    def write(fh):
        seen.append(Path(os.readlink(f"/proc/self/fd/{fh.fileno()}")))
        fh.write(b"payload")

    final = write_with(tmp_path / "deep" / "er" / "p.png", write)
    assert final == tmp_path / "deep" / "er" / "p.png" and final.read_bytes() == b"payload"
    (tmp,) = seen
    assert tmp.parent == final.parent and tmp.name.startswith(".p.png.") and tmp.name.endswith(".tmp")
    assert not tmp.exists()


def test_the_data_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    path = tmp_path / "c.fits"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        return real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_with(path, lambda fh: fh.write(b"png bytes"))
    assert events == ["fsync file", "rename", "fsync folder"]
    assert path.read_bytes() == b"png bytes"


def test_a_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "x.fits"
    write_image(path, np.zeros((64, 64), np.float32), fits.Header(), uncertainty=np.ones((64, 64)))
    write_image(path, np.full((8, 8), 3.0, np.float32), fits.Header())
    planes = read_planes(path)
    assert planes.data.shape == (8, 8) and planes.uncertainty is None
    assert _listing(tmp_path) == ["x.fits"]


@pytest.mark.parametrize("cache", [True, False])
def test_cache_advice_is_given_only_when_asked_and_on_the_temporary(tmp_path, monkeypatch, cache):
    advised = []
    real = observd.adapters.fits_files.os.posix_fadvise

    def recording(fd, offset, length, advice):
        advised.append((Path(os.readlink(f"/proc/self/fd/{fd}")).name, advice))
        return real(fd, offset, length, advice)

    monkeypatch.setattr(observd.adapters.fits_files.os, "posix_fadvise", recording)
    write_atomic(tmp_path / "a.fits", fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4), np.float32))]), cache=cache)
    if cache:
        assert advised == []
    else:
        ((name, advice),) = advised
        assert advice == os.POSIX_FADV_DONTNEED
        assert name.startswith(".a.fits.") and name.endswith(".tmp")


# -- write_image / read_planes --------------------------------------------------------------------


def test_read_planes_round_trips_write_image(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(1000, 30, (40, 50)).astype(np.float32)
    unc = rng.uniform(1, 5, (40, 50)).astype(np.float32)
    mask = (rng.uniform(size=(40, 50)) < 0.05).astype(np.uint8) * 3
    header = fits.Header()
    header["OBJECT"] = "M42"
    header["HISTORY"] = "bias subtracted"
    path = write_image(tmp_path / "cal.fits", data, header, uncertainty=unc, mask=mask)
    planes = read_planes(path)
    np.testing.assert_array_equal(planes.data, data)
    np.testing.assert_array_equal(planes.uncertainty, unc)
    np.testing.assert_array_equal(planes.mask, mask)
    assert planes.data.dtype == np.float32 and planes.data.dtype.isnative
    assert planes.uncertainty.dtype == np.float32 and planes.uncertainty.dtype.isnative
    assert planes.mask.dtype == np.uint8
    assert planes.header["OBJECT"] == "M42" and "bias subtracted" in str(planes.header["HISTORY"])
    planes.data[0, 0] = -1  # a private copy, not a view of the file
    assert read_planes(path).data[0, 0] == data[0, 0]


def test_absent_extensions_read_as_none(tmp_path):
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    only_mask = read_planes(write_image(tmp_path / "m.fits", data, fits.Header(), mask=np.ones((4, 5), np.uint8)))
    assert only_mask.uncertainty is None and only_mask.mask.sum() == 20
    bare = read_planes(write_image(tmp_path / "b.fits", data, fits.Header()))
    assert bare.uncertainty is None and bare.mask is None


def test_write_image_writes_float32_in_the_layout_ccddata_reads(tmp_path):
    data = np.linspace(0, 1, 30).reshape(5, 6)  # float64 in: float32 on disk
    unc = np.full((5, 6), 0.1)
    mask = np.zeros((5, 6), bool)
    mask[2, 3] = True
    header = fits.Header()
    header["BUNIT"] = "adu"
    path = write_image(tmp_path / "ccd.fits", data, header, uncertainty=unc, mask=mask)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT", "MASK"]
        assert hdul[0].header["BITPIX"] == -32 and hdul["UNCERT"].header["BITPIX"] == -32
        assert hdul["UNCERT"].header["UTYPE"] == "StdDevUncertainty"
    ccd = CCDData.read(path)
    np.testing.assert_allclose(ccd.data, data, rtol=1e-7)
    np.testing.assert_allclose(ccd.uncertainty.array, unc, rtol=1e-7)
    assert ccd.mask[2, 3] and ccd.mask.sum() == 1


def test_write_image_leaves_the_callers_arrays_as_they_were(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    unc = np.ones((3, 4), np.float32)
    copies = data.copy(), unc.copy()
    write_image(tmp_path / "x.fits", data, fits.Header(), uncertainty=unc)
    assert data.dtype.isnative and unc.dtype.isnative
    np.testing.assert_array_equal(data, copies[0])
    np.testing.assert_array_equal(unc, copies[1])


# -- raw frames -----------------------------------------------------------------------------------


def test_read_image_applies_bzero_to_unsigned_data_and_flattens_single_plane_cubes(tmp_path):
    raw = np.array([[0, 1, 32768], [40000, 65000, 65535]], dtype=np.uint16)
    fits.PrimaryHDU(raw).writeto(tmp_path / "u16.fits")
    with fits.open(tmp_path / "u16.fits") as hdul:
        assert hdul[0].header["BZERO"] == 32768  # stored as signed integers plus an offset
    got = read_image(tmp_path / "u16.fits")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, raw.astype(np.float32))
    fits.PrimaryHDU(raw[None, :, :]).writeto(tmp_path / "cube.fits")
    np.testing.assert_array_equal(read_image(tmp_path / "cube.fits"), raw.astype(np.float32))


def test_read_image_of_an_hdu_without_an_image_raises(tmp_path):
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3), np.float32))]).writeto(tmp_path / "mef.fits")
    with pytest.raises(FitsReadError, match="no 2-D image"):
        read_image(tmp_path / "mef.fits", 0)
    assert read_image(tmp_path / "mef.fits", 1).shape == (3, 3)


def test_read_image_header_finds_the_image_extension_and_merges_the_primary_cards(tmp_path):
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = "NGC 7000"
    primary.header["EXPTIME"] = 300.0
    ext = fits.ImageHDU(np.zeros((6, 8), np.uint16))
    ext.header["EXPTIME"] = 120.0  # the image header's own card wins
    fits.HDUList([primary, ext]).writeto(tmp_path / "mef.fits")
    image = read_image_header(tmp_path / "mef.fits")
    assert image.hdu_index == 1
    cards = image.cards if hasattr(image, "cards") else image.header
    assert "OBJECT" in cards and "EXPTIME" in cards
    value = cards["EXPTIME"]
    assert (value[0] if isinstance(value, tuple) else value) == 120.0


def test_read_image_header_rejects_files_without_an_image_or_not_fits(tmp_path):
    fits.PrimaryHDU().writeto(tmp_path / "empty.fits")
    with pytest.raises(FitsReadError, match="no 2-D image"):
        read_image_header(tmp_path / "empty.fits")
    (tmp_path / "page.fits").write_bytes(b"<html>" + b" " * 3000)
    with pytest.raises(FitsReadError):
        read_image_header(tmp_path / "page.fits")


# -- hashes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (5 << 20) // 2])
def test_sha256_file_is_the_hash_of_the_whole_content_across_chunks(tmp_path, size):
    payload = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()
