"""Re-ingesting already-catalogued files: the stat-only fast path.

Writes N small FITS lights (default 2,000) into a folder, ingests them once, then times
`observd ingest` on the same folder again (nothing changed: no file is hashed or opened).
Prints the median of the repeats, whole command (process start-up included) and the
in-process `ingest()` call alone.

    python benchmarks/bench_rescan.py [--files 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from observd.adapters.catalog import Catalog
from observd.adapters.config_file import load_config
from observd.pipeline.batch import ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        for i in range(args.files):
            hdu = fits.PrimaryHDU(np.zeros((16, 16), np.uint16))
            hdu.header.update(
                IMAGETYP="LIGHT",
                EXPTIME=60.0,
                OBJECT="M42",
                **{"DATE-OBS": f"2026-11-20T{20 + i // 3600 % 4:02d}:{i // 60 % 60:02d}:{i % 60:02d}"},
            )
            hdu.writeto(root / "in" / f"light_{i:05d}.fits")
        config_file = root / "c.toml"
        config_file.write_text("[paths]\noutput = 'out'\ndatabase = 'out/observd.db'\n")
        command = [sys.executable, "-m", "observd", "ingest", str(root / "in"), "-c", str(config_file)]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        first = time.perf_counter() - t0
        whole = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            whole.append(time.perf_counter() - t0)
        config = load_config(config_file)
        catalog = Catalog.open(config.paths.database)
        inner = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = ingest([root / "in"], catalog, config)
            inner.append(time.perf_counter() - t0)
            assert not any(s.new for s in result.seen)
        catalog.close()
    print(f"files: {args.files}; first ingest {first:.2f} s")
    print(
        f"re-ingest, whole `observd ingest` command: median {statistics.median(whole):.2f} s "
        f"(min {min(whole):.2f}, max {max(whole):.2f}, {args.repeats} runs)"
    )
    print(
        f"re-ingest, ingest() call alone:            median {statistics.median(inner):.2f} s "
        f"(min {min(inner):.2f}, max {max(inner):.2f})"
    )


if __name__ == "__main__":
    main()
