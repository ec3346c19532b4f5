"""`observd ingest`: run existing files and folders once through the daemon's pipeline.

The batch is catalogued file by file (the same `intake.catalogue` the daemon uses), its frames'
memory needs are checked against `[daemon] memory_limit_mb`, then the reduction is advanced with
`final=True`: settle times do not apply, because nothing more of this batch is coming.
"""

from __future__ import annotations

import os
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from observd.adapters.catalog import Catalog
from observd.adapters.fits_files import sha256_file
from observd.adapters.watcher import is_candidate, scan
from observd.core.config import Config
from observd.core.memory import MemoryBudgetError, light_need, master_need
from observd.jobs.cluster import Cluster
from observd.jobs.pool import memory_budget
from observd.pipeline.intake import Seen, catalogue, classify_rules, known_unchanged
from observd.pipeline.reducer import Reducer


@dataclass
class BatchResult:
    seen: list[Seen] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # not FITS by name (.txt, .tmp, dotfiles...)
    missing: list[str] = field(default_factory=list)  # command-line paths that do not exist
    errors: list[str] = field(default_factory=list)  # internal errors (bugs): make the exit code non-zero

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.missing)


def collect(paths: Iterable[Path], config: Config) -> tuple[list[Path], list[str], list[str]]:
    """Files to catalogue (recursively, sorted), names ignored, paths missing."""
    settings = config.watch
    files: list[Path] = []
    ignored: list[str] = []
    missing: list[str] = []
    for path in map(Path, paths):
        if path.is_dir() and is_candidate(path, settings):
            files.append(path)  # a folder named like a FITS file: recorded as rejected, with why
        elif path.is_dir():
            files.extend(scan(path, settings))
            files.extend(d for d in sorted(path.rglob("*")) if d.is_dir() and is_candidate(d, settings, root=path))
        elif path.exists() or path.is_symlink():
            if is_candidate(path, settings):
                files.append(path)
            else:
                ignored.append(str(path))
        else:
            missing.append(str(path))
    return files, ignored, missing


def ingest(
    paths: Iterable[Path],
    catalog: Catalog,
    config: Config,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    reducer: Reducer | None = None,
) -> BatchResult:
    files, ignored, missing = collect(paths, config)
    result = BatchResult(ignored=ignored, missing=missing)
    known = catalog.known_stats()
    rules = classify_rules(config)
    reducer = reducer or Reducer(config, catalog)
    with HashAhead(files, known) as hashes:
        for index, path in enumerate(files, start=1):
            try:
                result.seen.append(
                    catalogue(path, catalog, config, rules=rules, known=known, final=True, digest=hashes.digest)
                )
                if result.seen[-1].new:
                    reducer.warm_up()  # new content means work: start the workers while cataloguing goes on
            except Exception as exc:  # a bug must not stop the batch; it is reported and fails the exit code
                result.errors.append(f"{path}: {exc}")
                catalog.event("error", "internal-error", traceback.format_exc(), str(path))
            if progress:
                progress(index, len(files), path.name)
    check_budget(catalog, result, config, reducer.pool)
    try:
        reducer.advance(final=True, progress=progress)
    except Exception as exc:
        result.errors.append(f"reduction: {exc}")
        catalog.event("error", "internal-error", traceback.format_exc())
    return result


def check_budget(catalog: Catalog, result: BatchResult, config: Config, pool: Executor | None = None) -> None:
    """Before any frame of the batch is processed: one job of each of its frames fits in
    `[daemon] memory_limit_mb` (the biggest frames then run fewer at once, `dispatch.run_jobs`),
    or, on a cluster, in the worker that offers the most (`Cluster.refusal`).

    Raises:
        MemoryBudgetError: for the first frame whose job cannot fit even alone, with both numbers.
    """
    refusal = pool.refusal if isinstance(pool, Cluster) else memory_budget(config).refusal
    for row in filter(None, (catalog.file(s.file_id) for s in result.seen if s.file_id is not None)):
        if not (row["naxis1"] and row["naxis2"]):
            continue
        shape = (row["naxis2"], row["naxis1"])
        if row["frame_type"] == "light":
            need = light_need(shape, colour=bool(row["bayer"]))
        elif row["frame_type"] in ("bias", "dark", "flat"):
            need = master_need(shape, config.masters.memory_limit_mb)
        else:
            continue
        reason = refusal(need)
        if reason:
            raise MemoryBudgetError(reason)


class HashAhead:
    """The batch's next files hashed in threads while the current one is catalogued.

    sha256 was two thirds of cataloguing a new file (hashlib releases the GIL), and the
    header parsing and catalog writes around it are Python: on two cores the hashes now
    come nearly for free. Files the catalog knows unchanged (same size and mtime) are never
    read; at most `lookahead` files are hashed ahead.
    """

    def __init__(self, files: list[Path], known: dict[str, tuple], *, threads: int = 2, lookahead: int = 4):
        self._queue = [key for key in (str(Path(f).absolute()) for f in files) if not _unchanged(key, known)]
        self._queue.reverse()
        self._futures: dict[str, Future] = {}
        self._lookahead = lookahead
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hash")

    def __enter__(self) -> HashAhead:
        self._fill()
        return self

    def __exit__(self, *exc) -> None:
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=True)

    def digest(self, path: Path) -> str:
        future = self._futures.pop(str(path), None)
        self._fill()
        return future.result() if future is not None else sha256_file(path)

    def _fill(self) -> None:
        while self._queue and len(self._futures) < self._lookahead:
            key = self._queue.pop()
            self._futures[key] = self._pool.submit(sha256_file, Path(key))


def _unchanged(key: str, known: dict[str, tuple]) -> bool:
    try:
        return key in known and known_unchanged(key, os.stat(key), known)
    except OSError:
        return False


def batch_nights(catalog: Catalog, result: BatchResult) -> list[str]:
    """The nights of the batch's lights, in order: what `observd ingest --stack` stacks."""
    rows = (catalog.file(s.file_id) for s in result.seen if s.file_id is not None)
    return sorted({r["night"] for r in rows if r and r["frame_type"] == "light" and r["night"]})


def summary_table(catalog: Catalog, result: BatchResult) -> str:
    """Counts of this batch's files by type and final state."""
    ids = [s.file_id for s in result.seen if s.file_id is not None]
    rows = [catalog.file(i) for i in ids]
    counts = Counter((r["frame_type"] or "-", r["state"]) for r in rows if r)
    types = sorted({t for t, _ in counts})
    states = sorted({s for _, s in counts})
    width = max([8] + [len(s) for s in states])
    lines = [f"{'type':<8} " + " ".join(f"{s:>{width}}" for s in states) + f" {'total':>6}"]
    for t in types:
        lines.append(
            f"{t:<8} "
            + " ".join(f"{counts.get((t, s), 0):>{width}}" for s in states)
            + f" {sum(counts.get((t, s), 0) for s in states):>6}"
        )
    skipped = sum(1 for s in result.seen if not s.new)
    lines.append(
        f"{len(ids)} file(s) catalogued ({skipped} already known, unchanged)"
        + (f", {len(result.ignored)} ignored (not FITS by name)" if result.ignored else "")
    )
    for path in result.missing:
        lines.append(f"error: {path}: no such file or folder")
    for err in result.errors:
        lines.append(f"error: {err}")
    return "\n".join(lines)
