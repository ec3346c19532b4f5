"""PNG previews: size, levels an observer can read, NaN, orientation, atomic writes."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from observd.adapters import previews
from observd.adapters.previews import block_average, stretch, write_preview, write_thumbnail

SKY, NOISE = 1000.0, 10.0


def sky(shape=(512, 512), seed=0) -> np.ndarray:
    return SKY + np.random.default_rng(seed).normal(0, NOISE, shape).astype(np.float32)


def add_star(img: np.ndarray, y: float, x: float, peak: float, sigma: float = 2.0) -> None:
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    img += peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def read_png(path: Path) -> np.ndarray:
    """Pixels as stored, top row first (how any viewer shows them)."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode == "L"
        return np.asarray(im).copy()


def test_preview_is_a_png_shrunk_by_an_integer_block_factor(tmp_path):
    path = write_preview(sky((300, 500)), tmp_path / "p.png", title="M 1", max_size=200)
    # longest side 500 -> factor ceil(500/200) = 3 -> 100 rows x ceil(500/3) = 167 columns
    assert path == tmp_path / "p.png"
    assert read_png(path).shape == (100, 167)
    small = write_preview(sky((120, 80)), tmp_path / "small.png", title="x")
    assert read_png(small).shape == (120, 80)  # never enlarged


def test_thumbnail_longest_side_is_at_most_size(tmp_path):
    thumb = write_thumbnail(sky((300, 512)), tmp_path / "t.png", size=256)
    assert read_png(thumb).shape == (150, 256)


def test_block_average_means_finite_pixels_and_keeps_empty_blocks_nan():
    data = np.arange(30, dtype=np.float32).reshape(5, 6)
    data[0, 0] = np.nan
    data[4, :] = np.nan  # the last, partial row of blocks is empty
    out = block_average(data, max_size=3)  # factor ceil(6/3) = 2
    assert out.shape == (3, 3)
    assert out[0, 0] == pytest.approx((1 + 6 + 7) / 3)
    assert out[1, 2] == pytest.approx((16 + 17 + 22 + 23) / 4)
    assert np.isnan(out[2]).all()


def test_block_average_works_band_by_band_in_bounded_memory_with_the_same_result(monkeypatch):
    data = sky((512, 500))
    data[:37] = np.nan  # an edge of the footprint, across bands
    data[300, 17] = np.nan
    whole = block_average(data, max_size=64)  # one band: the default band covers this frame
    monkeypatch.setattr(previews, "_BAND_BYTES", 64 << 10)  # now 16 bands of 4 block rows
    tracemalloc.start()
    banded = block_average(data, max_size=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(banded, whole)
    # a band's temporaries (~10 bytes per pixel of 64 KiB of it) and the 64x63 result, not the
    # whole frame's (~2.5 MiB here)
    assert peak < 1 << 20


def test_single_pixel_sources_survive_downsampling(tmp_path):
    """Block averaging keeps light that nearest-neighbour sampling would skip."""
    img = sky((512, 512))
    # never on a block's first pixel, which is all that [::4] sampling would see
    spots = [(r, c) for r in range(33, 512, 64) for c in range(65, 512, 64)]
    for r, c in spots:
        img[r, c] += 40 * NOISE
    png = read_png(write_thumbnail(img, tmp_path / "t.png", size=128))[::-1]  # row 0 = FITS row 0
    sky_level = np.median(png)
    assert all(png[r // 4, c // 4] > sky_level + 10 for r, c in spots)


def test_star_field_dark_sky_graded_stars_and_faint_nebulosity(tmp_path):
    img = sky()
    yy, xx = np.mgrid[0:512, 0:512]
    img += 1.0 * NOISE * np.exp(-(((xx - 380) / 50.0) ** 2 + ((yy - 380) / 50.0) ** 2))  # 1 sigma
    add_star(img, 100, 100, peak=30 * NOISE)
    add_star(img, 100, 300, peak=300 * NOISE)
    add_star(img, 250, 250, peak=3000 * NOISE)
    png = read_png(write_thumbnail(img, tmp_path / "t.png", size=512))[::-1].astype(int)

    sky_level = np.median(png[150:250, 20:120])
    assert 5 < sky_level < 0.25 * 255  # dark grey: not black, not washed out
    faint, medium, bright = png[100, 100], png[100, 300], png[250, 250]
    assert sky_level + 20 < faint < medium < bright  # brighter stars look brighter ...
    assert medium < 235  # ... and are not burnt to white
    assert bright > 0.75 * 255
    # a nebula one sky-sigma bright is visible: its mean is several grey levels above the sky
    assert png[350:410, 350:410].mean() > png[150:250, 20:120].mean() + 4


def test_label_is_drawn_in_a_corner_and_only_there(tmp_path):
    img = sky()
    plain = read_png(write_thumbnail(img, tmp_path / "plain.png", size=512)).astype(int)
    labelled = read_png(
        write_preview(
            img,
            tmp_path / "lab.png",
            title="NGC 7000",
            lines=["Filter Ha", "12 frames, 3600 s", "night 2026-03-28"],
            max_size=512,
        )
    ).astype(int)
    corner = labelled[:60, :150]
    assert (corner > 200).sum() > 100  # white glyphs on the dimmed box
    assert np.abs(corner - plain[:60, :150]).mean() > 10
    assert np.array_equal(labelled[200:, 200:], plain[200:, 200:])


def test_nan_outside_the_footprint_is_black_and_does_not_spoil_the_rest(tmp_path):
    img = sky()
    img[:, :100] = np.nan
    add_star(img, 300, 300, peak=100 * NOISE)
    png = read_png(write_thumbnail(img, tmp_path / "t.png", size=512)).astype(int)
    assert (png[:, :100] == 0).all()
    assert np.median(png[:, 150:250]) > 5  # sky brighter than the void
    assert png[511 - 300, 300] > 150  # star still bright


def test_all_nan_and_flat_images_do_not_crash():
    assert not stretch(np.full((20, 30), np.nan)).any()
    flat = stretch(np.full((20, 30), 5.0))
    assert flat.shape == (20, 30) and np.isfinite(flat).all()


def test_stretch_is_in_unit_interval_and_monotonic():
    img = sky((128, 128))
    add_star(img, 64, 64, peak=5000 * NOISE)
    img[0, 0] = np.inf
    out = stretch(img)
    assert out.min() >= 0 and out.max() <= 1 and out[0, 0] == 0
    order = np.argsort(img[1:].ravel())
    assert np.all(np.diff(out[1:].ravel()[order]) >= 0)


def test_fits_row_zero_is_at_the_bottom_of_the_png(tmp_path):
    img = sky((200, 300))
    img[:6, :] += 500 * NOISE
    png = read_png(write_thumbnail(img, tmp_path / "t.png", size=300)).astype(int)
    assert png[-6:].mean() > 200
    assert png[:6].mean() < 60


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "stack.png"
    write_preview(sky((64, 64)), target, title="first")
    before = target.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["stack.png"]

    def broken_save(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_preview(sky((64, 64), seed=1), target, title="second")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["stack.png"]


@pytest.mark.slow
def test_a_2048_square_preview_takes_under_a_second(tmp_path):
    img = sky((2048, 2048))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        write_preview(img, tmp_path / "big.png", title="speed", lines=["3 frames"])
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 1.0
    assert read_png(tmp_path / "big.png").shape == (1024, 1024)
