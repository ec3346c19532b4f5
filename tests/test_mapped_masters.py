"""Masters held once per host: workers calibrate from memory-mapped copies, written once beside the master."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits

from observd.adapters.fits_files import read_planes, write_image
from observd.core.calibrate import Plane, calibrate
from observd.jobs import mapped_masters
from observd.jobs.mapped_masters import PLANES_FOLDER, master_plane, save_atomic, store_normalised, unmap_masters

SHAPE = (128, 160)
SETTINGS = {"dark_scale": 1.5, "gain": 1.2, "read_noise": 4.0, "saturation": 60000.0}


def _masters(folder: Path) -> dict[str, str]:
    rng = np.random.default_rng(3)
    paths = {}
    for kind, level, noise in (("bias", 500.0, 3.0), ("dark", 20.0, 2.0), ("flat", 1.0, 0.01)):
        data = (level + noise * rng.standard_normal(SHAPE)).astype(np.float32)
        uncertainty = np.full(SHAPE, noise / 3, np.float32)
        mask = (rng.random(SHAPE) < 0.01).astype(np.uint8)
        path = folder / f"{kind}_v1.fits"
        write_image(path, data, fits.Header(), uncertainty=uncertainty, mask=mask)
        paths[kind] = str(path)
    return paths


def _light(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(600, 40000, SHAPE).astype(np.uint16)


def _read_per_worker(path: str) -> Plane:
    """How a worker held a master before: its own float32 copies, read from the FITS file."""
    planes = read_planes(Path(path))
    return Plane(planes.data, planes.uncertainty, planes.mask.astype(bool))


def _calibrated(raw: np.ndarray, masters: dict[str, str], barrier) -> tuple[np.ndarray, ...]:
    """A worker's calibration of `raw` with the mapped masters; the barrier makes both workers take one."""
    barrier.wait(timeout=60)
    planes = {kind: master_plane(path) for kind, path in masters.items()}
    assert all(isinstance(p.data, np.memmap) and isinstance(p.bad, np.memmap) for p in planes.values())
    out = calibrate(raw, **planes, **SETTINGS)
    assert isinstance(planes["flat"].inverse_square, np.memmap)  # derived once, then mapped too
    return out.data, out.uncertainty, out.mask


def _in_two_workers(raw: np.ndarray, masters: dict[str, str]) -> list[tuple[np.ndarray, ...]]:
    context = multiprocessing.get_context("spawn")  # fresh workers: nothing cached from another test
    with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
        barrier = manager.Barrier(2)
        return [f.result() for f in [pool.submit(_calibrated, raw, masters, barrier) for _ in range(2)]]


def _stored(masters: dict[str, str]) -> dict[Path, tuple[int, int]]:
    folder = Path(masters["bias"]).parent / PLANES_FOLDER
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_workers_calibrate_from_mapped_masters_as_from_their_own_copies_and_reuse_the_files(tmp_path):
    masters = _masters(tmp_path)
    for seed in (1, 2):
        raw = _light(seed)
        before = calibrate(raw, **{k: _read_per_worker(p) for k, p in masters.items()}, **SETTINGS)
        stored = _stored(masters) if seed == 2 else None
        for data, uncertainty, mask in _in_two_workers(raw, masters):
            np.testing.assert_array_equal(data, before.data)
            np.testing.assert_array_equal(uncertainty, before.uncertainty)
            np.testing.assert_array_equal(mask, before.mask)
        if stored is not None:
            assert _stored(masters) == stored  # the second light's workers mapped them, rewrote nothing
    names = {p.name for p in _stored(masters)}
    assert {"data.npy", "uncertainty.npy", "mask.npy", "normalised.npy", "inverse_square.npy"} <= names
    assert not [n for n in names if n.endswith(".tmp")]


def test_a_master_written_again_gets_new_copies(tmp_path):
    masters = _masters(tmp_path)
    first = master_plane(masters["bias"])
    data = np.full(SHAPE, 7.0, np.float32)
    write_image(Path(masters["bias"]), data, fits.Header(), uncertainty=data, mask=np.zeros(SHAPE, np.uint8))
    master_plane.cache_clear()  # a new worker
    again = master_plane(masters["bias"])
    assert again.folder != first.folder
    np.testing.assert_array_equal(again.data, data)


def test_on_a_cluster_each_host_keeps_its_own_copies_and_only_the_latest(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "host-tmp"))  # this host's temporary folder
    (tmp_path / "host-tmp").mkdir()
    masters = _masters(tmp_path / "shared")
    raw = _light(1)
    beside = calibrate(raw, **{k: master_plane(p) for k, p in masters.items()}, **SETTINGS)
    master_plane.cache_clear()
    on_host = {k: master_plane(p, True) for k, p in masters.items()}
    here = calibrate(raw, **on_host, **SETTINGS)
    np.testing.assert_array_equal(here.data, beside.data)
    np.testing.assert_array_equal(here.uncertainty, beside.uncertainty)
    assert all(p.folder.parent == tmp_path / "host-tmp" / f"observd-planes-{os.getuid()}" for p in on_host.values())
    assert isinstance(on_host["flat"].inverse_square, np.memmap)  # derived planes kept there too
    # the bias written again: its new copies replace the old ones on this host, the others stay
    data = np.full(SHAPE, 7.0, np.float32)
    write_image(Path(masters["bias"]), data, fits.Header(), uncertainty=data, mask=np.zeros(SHAPE, np.uint8))
    master_plane.cache_clear()
    again = master_plane(masters["bias"], True)
    np.testing.assert_array_equal(again.data, data)
    kept = sorted(p.name for p in again.folder.parent.iterdir())
    assert again.folder.name in kept and on_host["bias"].folder.name not in kept and len(kept) == 3


def test_a_host_keeps_the_most_recently_mapped_masters_and_those_mapped_lately(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "host-tmp"))
    (tmp_path / "host-tmp").mkdir()
    monkeypatch.setattr(mapped_masters, "HOST_KEEP", 2)
    masters = _masters(tmp_path / "shared")
    first = master_plane(masters["bias"], True).folder
    os.utime(first, (1, 1))  # last mapped long ago
    second = master_plane(masters["dark"], True).folder
    third = master_plane(masters["flat"], True).folder  # the oldest beyond two goes
    assert not first.exists() and second.exists() and third.exists()
    master_plane.cache_clear()
    again = master_plane(masters["bias"], True)  # needed again: stored again
    np.testing.assert_array_equal(again.data, read_planes(Path(masters["bias"])).data)
    assert second.exists() and third.exists()  # mapped lately: kept beyond two


def _mapped_files() -> set[str]:
    """The files this process maps (/proc/self/maps: the path is the sixth field, when there is one)."""
    rows = (line.split(maxsplit=5) for line in Path("/proc/self/maps").read_text().splitlines())
    return {row[5] for row in rows if len(row) == 6}


def test_unmapping_the_masters_lets_go_of_every_mapped_plane(tmp_path):
    masters = _masters(tmp_path)
    master_plane.cache_clear()
    planes = {kind: master_plane(path) for kind, path in masters.items()}
    calibrate(_light(1), **planes, **SETTINGS)  # maps the stored planes and the derived ones
    folder = str(tmp_path / PLANES_FOLDER)
    assert len([f for f in _mapped_files() if f.startswith(folder)]) >= 9
    del planes
    unmap_masters()  # a worker about to combine a stack
    assert not [f for f in _mapped_files() if f.startswith(folder)]
    again = master_plane(masters["bias"])  # and a later light maps them again
    np.testing.assert_array_equal(again.data, read_planes(Path(masters["bias"])).data)


def test_a_plane_stored_again_keeps_the_first_file_that_others_map(tmp_path):
    path = tmp_path / "normalised.npy"
    save_atomic(path, np.ones(SHAPE, np.float32))
    mapped = np.load(path, mmap_mode="r")  # a worker that stored it first, and maps it
    first = path.stat().st_ino
    save_atomic(path, np.ones(SHAPE, np.float32))  # a second worker, which started at the same moment
    assert path.stat().st_ino == first  # one file, one copy in the page cache, for both
    assert str(path) in _mapped_files()  # not a replaced ("deleted") file under the first worker
    assert [p.name for p in tmp_path.iterdir()] == ["normalised.npy"]  # no temporary left
    del mapped


def _resident_kib(path: Path) -> int:
    """How much of `path` this process's maps of it hold in memory (Rss in /proc/self/smaps)."""
    resident, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
            current = fields[5] if len(fields) >= 6 else None
        elif fields[0] == "Rss:" and current == str(path):
            resident += int(fields[1])
    return resident


def test_a_flat_stored_with_its_normalised_plane_serves_lights_without_reading_its_data(tmp_path):
    shape = (512, 512)  # 1 MiB planes: far more than the kernel maps around the header's page
    flat = (1.0 + 0.01 * np.random.default_rng(5).standard_normal(shape)).astype(np.float32)
    path = tmp_path / "flat_v1.fits"
    write_image(path, flat, fits.Header(), uncertainty=flat / 100, mask=np.zeros(shape, np.uint8))
    store_normalised(str(path))  # as the flat is written
    unmap_masters()  # a worker's first light
    normalised = np.array(master_plane(str(path)).normalised)
    np.testing.assert_array_equal(normalised, _read_per_worker(str(path)).normalised)
    folder = master_plane(str(path)).folder
    assert _resident_kib(folder / "normalised.npy") >= 1024
    assert _resident_kib(folder / "data.npy") < 256  # the flat's data stays out of the worker's memory
    unmap_masters()


def test_a_light_without_a_noise_model_subtracts_bias_and_dark_from_one_stored_plane(tmp_path):
    """The same calibration as from the bias and the dark apart (to float32 rounding), the two
    masks combined; stored once, mapped by every later light; the bias's and dark's data pages
    not held by the process that derived it."""
    masters = _masters(tmp_path)
    unmap_masters()
    plain = {k: v for k, v in SETTINGS.items() if k not in ("gain", "read_noise", "dark_scale")}
    apart = calibrate(
        _light(4),
        bias=_read_per_worker(masters["bias"]),
        dark=_read_per_worker(masters["dark"]),
        dark_scale=1.5,
        flat=_read_per_worker(masters["flat"]),
        **plain,
    )
    offset = mapped_masters.dark_offset(masters["bias"], masters["dark"], 1.5)
    assert isinstance(offset.data, np.memmap) and isinstance(offset.bad, np.memmap)
    for kind in ("bias", "dark"):  # read to derive it, and let go
        assert _resident_kib(mapped_masters.planes_folder(Path(masters[kind])) / "data.npy") == 0
    together = calibrate(_light(4), bias=offset, flat=master_plane(masters["flat"]), **plain)
    np.testing.assert_allclose(together.data, apart.data, rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(together.mask, apart.mask)
    bias_mask, dark_mask = (read_planes(Path(masters[k])).mask.astype(bool) for k in ("bias", "dark"))
    np.testing.assert_array_equal(offset.bad, bias_mask | dark_mask)
    stored = sorted(p.name for p in offset.folder.glob("offset-*.npy"))
    assert len(stored) == 2  # its data and mask, once
    unmap_masters()
    again = mapped_masters.dark_offset(masters["bias"], masters["dark"], 1.5)
    assert sorted(p.name for p in offset.folder.glob("offset-*.npy")) == stored
    assert again.data.filename == offset.data.filename
    other = mapped_masters.dark_offset(masters["bias"], masters["dark"], 0.5)  # another exposure
    assert other.data.filename != offset.data.filename
    # with the flat's mask folded in, the flat is applied without its own (as a light job does)
    folded = mapped_masters.dark_offset(masters["bias"], masters["dark"], 1.5, flat_path=masters["flat"])
    flat_mask = read_planes(Path(masters["flat"])).mask.astype(bool)
    np.testing.assert_array_equal(folded.bad, bias_mask | dark_mask | flat_mask)
    np.testing.assert_array_equal(folded.data, offset.data)
    unmasked_flat = mapped_masters.without_mask(masters["flat"])
    assert unmasked_flat.bad is None and unmasked_flat.data.filename == master_plane(masters["flat"]).data.filename
    np.testing.assert_array_equal(calibrate(_light(4), bias=folded, flat=unmasked_flat, **plain).mask, apart.mask)
    unmap_masters()
