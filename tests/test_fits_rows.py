"""observd.adapters.fits_rows: FITS rows read band by band as astropy reads them, and combined."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from test_combine import astropy_clip

from observd.adapters.fits_rows import FitsSource
from observd.core.combine import combine

REAL_DATA = Path(os.environ.get("OBSERVD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def write_uint16(path, data, header=None):
    fits.PrimaryHDU(data.astype(np.uint16), header=header).writeto(path)
    assert fits.getheader(path)["BZERO"] == 32768  # stored as int16 + BZERO


def test_fits_source_reads_bzero_uint16_rows(tmp_path):
    rng = np.random.default_rng(10)
    data = rng.integers(0, 65536, (40, 30)).astype(np.uint16)
    data[0, 0], data[1, 1] = 0, 65535
    write_uint16(tmp_path / "a.fits", data)
    src = FitsSource(tmp_path / "a.fits")
    assert src.shape == (40, 30)
    rows = src.read_rows(3, 17)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, data[3:17].astype(np.float32))
    np.testing.assert_array_equal(src.read_rows(0, 2), data[:2].astype(np.float32))


def test_fits_source_scaled_int32_blank_and_float(tmp_path):
    raw = np.arange(-600, 600, dtype=np.int32).reshape(30, 40)
    raw[4, 5] = -999
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.5, 100.0, -999
    hdu.writeto(tmp_path / "s.fits")
    expected = fits.getdata(tmp_path / "s.fits").astype(np.float32)  # astropy's scaling
    assert np.isnan(expected[4, 5])
    got = FitsSource(tmp_path / "s.fits").read_rows(0, 30)
    np.testing.assert_array_equal(got, expected)

    floats = np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(floats)]).writeto(tmp_path / "f.fits")
    np.testing.assert_array_equal(FitsSource(tmp_path / "f.fits", hdu=1).read_rows(5, 9), floats[5:9])


def test_fits_source_compressed_and_gzipped(tmp_path):
    rng = np.random.default_rng(11)
    data = rng.integers(900, 1100, (50, 20)).astype(np.uint16)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(tmp_path / "c.fits")
    write_uint16(tmp_path / "g.fits", data)
    with gzip.open(tmp_path / "g.fits.gz", "wb") as out:
        out.write((tmp_path / "g.fits").read_bytes())
    for src in (FitsSource(tmp_path / "c.fits", hdu=1), FitsSource(tmp_path / "g.fits.gz")):
        assert src.shape == (50, 20)
        np.testing.assert_array_equal(src.read_rows(10, 25), data[10:25].astype(np.float32))
        np.testing.assert_array_equal(src.read_rows(45, 50), data[45:50].astype(np.float32))


def test_fits_sources_with_prepare_combine_like_prepared_arrays(tmp_path):
    rng = np.random.default_rng(12)
    bias = rng.normal(1000, 3, (36, 24)).astype(np.float32)
    level = np.array([1.0, 1.2, 0.9, 1.1, 1.05])
    frames = [np.rint(bias + 20000 * lv + rng.normal(0, 30, bias.shape)) for lv in level]
    paths = []
    for i, frame in enumerate(frames):
        paths.append(tmp_path / f"flat{i}.fits")
        write_uint16(paths[-1], frame)

    def flat_source(path, norm):
        def prepare(rows, y0, y1):
            return (rows - bias[y0:y1]) / np.float32(norm)

        return FitsSource(path, prepare=prepare)

    res = combine([flat_source(p, 20000 * lv) for p, lv in zip(paths, level)], memory_limit=1, workers=2)
    prepared = np.stack([(f.astype(np.float32) - bias) / np.float32(20000 * lv) for f, lv in zip(frames, level)])
    ref = astropy_clip(prepared)
    np.testing.assert_allclose(res.data, np.ma.median(ref, axis=0).filled(np.nan), rtol=1e-5)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    assert abs(np.median(res.data) - 1.0) < 0.01


def test_real_gzipped_bias_frames():
    folder = REAL_DATA / "01_umd_sbig_st8_maximdl"
    paths = [folder / "calib-001-bi.fit.gz", folder / "calib-002-bi.fit.gz"]
    if not all(p.exists() for p in paths):
        pytest.skip("real sample data not available")
    res = combine([FitsSource(p) for p in paths], method="mean", rejection="none")
    frames = [fits.getdata(p).astype(np.float64) for p in paths]
    np.testing.assert_allclose(res.data, (frames[0] + frames[1]) / 2, rtol=1e-6)
    assert np.all(res.count == 2)
