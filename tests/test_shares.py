"""observd.jobs.shares: a combination shared out among worker processes gives the threaded result."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits
from test_combine import bias_stack, sources

from observd.adapters.fits_rows import FitsSource
from observd.core.combine import combine
from observd.jobs.shares import combine_in_pool


def _offset_prepare(rows, y0, y1):
    """A picklable per-band calibration that depends on the absolute rows (as a master's does)."""
    return rows - np.arange(y0, y1, dtype=np.float32)[:, None]


@pytest.mark.parametrize(
    "kwargs", [{}, {"method": "mean", "weights": np.arange(1.0, 12.0)}, {"rejection": "winsorized"}]
)
def test_process_pool_shares_give_the_threaded_result(tmp_path, kwargs):
    from concurrent.futures import ProcessPoolExecutor

    stack = bias_stack(11, shape=(67, 64), seed=13, nan_fraction=0.05)
    paths = []
    for i, frame in enumerate(stack):
        paths.append(tmp_path / f"f{i}.fits")
        fits.PrimaryHDU(frame).writeto(paths[-1])
    files = [FitsSource(p, prepare=_offset_prepare) for p in paths]
    for src in files:
        src.read_rows(0, 1)  # caches and a lock that must not travel to the workers
    local = combine(files, workers=1, **kwargs)
    with ProcessPoolExecutor(2) as pool:
        shared = combine_in_pool(files, workers=2, executor=pool, **kwargs)
    expected = combine(sources(stack - np.arange(67, dtype=np.float32)[None, :, None]), workers=1, **kwargs)
    for got in (local, shared):
        np.testing.assert_array_equal(got.data, expected.data)
        np.testing.assert_array_equal(got.uncertainty, expected.uncertainty)
        np.testing.assert_array_equal(got.count, expected.count)


def test_shares_leave_no_shared_file_and_clear_a_dead_process_one(tmp_path, monkeypatch):
    from concurrent.futures import ProcessPoolExecutor

    from observd.jobs import shares as shares_module

    monkeypatch.setattr(shares_module.os, "access", lambda path, mode: False)  # no /dev/shm: the temp folder
    monkeypatch.setattr(shares_module.tempfile, "tempdir", str(tmp_path))
    orphan = tmp_path / "observd-combine-999999999-abc"  # no such process
    orphan.write_bytes(b"x")
    living = tmp_path / f"observd-combine-{os.getppid()}-abc"  # a running process's
    living.write_bytes(b"x")
    stack = bias_stack(6, shape=(40, 32), seed=4)
    with ProcessPoolExecutor(2) as pool:
        got = combine_in_pool(sources(stack), workers=2, executor=pool)
    np.testing.assert_array_equal(got.data, combine(sources(stack), workers=1).data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [living.name]


def test_no_shared_planes_means_combining_here(monkeypatch):
    from concurrent.futures import ProcessPoolExecutor

    from observd.jobs import shares as shares_module

    def full(shape):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shares_module._SharedPlanes, "create", staticmethod(full))
    stack = bias_stack(5, shape=(40, 32), seed=2)
    with ProcessPoolExecutor(2) as pool:
        got = combine_in_pool(sources(stack), workers=2, executor=pool)
    np.testing.assert_array_equal(got.data, combine(sources(stack), workers=1).data)


def test_a_broken_pool_falls_back_to_threads():
    from concurrent.futures import ProcessPoolExecutor

    stack = bias_stack(5, shape=(40, 32), seed=2)
    pool = ProcessPoolExecutor(2)
    pool.shutdown()  # submit now raises RuntimeError
    got = combine_in_pool(sources(stack), workers=2, executor=pool)
    np.testing.assert_array_equal(got.data, combine(sources(stack), workers=1).data)


def _described(plane):
    """What a worker sees of a plane given to it (`with_shared`): its type, flags and content."""
    return type(plane).__name__, plane.flags.writeable, plane.shape, float(plane.sum())


def test_a_shared_plane_reaches_a_worker_as_a_read_only_map_of_one_file(monkeypatch):
    from concurrent.futures import ProcessPoolExecutor

    from observd.jobs import shares
    from observd.jobs.shares import SharedPlane, shared, with_shared

    plane = np.random.default_rng(2).normal(size=(3, 40, 50)).astype(np.float32)
    with shared(plane) as handle, ProcessPoolExecutor(1) as pool:
        assert isinstance(handle, SharedPlane) and os.path.getsize(handle.path) == plane.nbytes
        seen = pool.submit(with_shared, _described, handle).result()
        path = handle.path
    # a map of the file, not a pickled copy; the very same values
    assert seen == ("memmap", False, plane.shape, float(plane.sum()))
    assert not os.path.exists(path)  # removed after the block
    # no room in shared memory: the array itself, pickled as any argument
    monkeypatch.setattr(shares, "_shared_file", lambda size: (_ for _ in ()).throw(OSError(28, "No space")))
    with shared(plane) as handle:
        assert handle is plane
        assert with_shared(_described, handle)[0] == "ndarray"
