"""The batch commands: `observd ingest` (a folder, an archive, on this host's pool or a Dask
cluster) and `observd stack` (a night's stacks again, or a target's deep stack of all nights)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from observd.cli.common import UsageError, load, open_catalog
from observd.core.config import Config

log = logging.getLogger("observd")


class Progress:
    """The batch's progress on stderr as tqdm bars, shown only on a terminal: one while files are
    catalogued, then one per reduction pass (each pass reports its own count of jobs)."""

    def __init__(self):
        self._bar = None

    def __call__(self, done: int, total: int, label: str) -> None:
        from tqdm import tqdm

        if self._bar is None or done == 1 or self._bar.total != total:
            self.close()
            self._bar = tqdm(total=total, unit="frame", disable=None, dynamic_ncols=True)
        self._bar.set_postfix_str(label[:40], refresh=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def cmd_ingest(args) -> int:
    from observd.jobs.pool import start_fork_server

    config = load(args)
    address = args.cluster or config.cluster.scheduler
    if not address:
        start_fork_server()  # its imports overlap this process's next ones
    from observd.pipeline.batch import batch_nights, ingest, summary_table
    from observd.pipeline.reducer import Reducer

    paths = [Path(p) for p in args.paths]
    catalog = open_catalog(config)
    try:
        with _job_pool(config, address, paths) as pool:
            reducer = Reducer(config, catalog, pool=pool)
            result = ingest(paths, catalog, config, progress=Progress(), reducer=reducer)
            print(summary_table(catalog, result))
            stack_failed = args.stack and _stack_nights(config, catalog, batch_nights(catalog, result), reducer)
    finally:
        catalog.close()
    return 1 if result.failed or stack_failed else 0


def _job_pool(config: Config, address: str, paths: list[Path]):
    """Where `observd ingest` runs its jobs: this host's worker pool (warmed when the batch has
    new files), or the Dask cluster at `address`, once every worker is known to see `paths` and
    the output folder; its dashboard's address is printed."""
    if not address:
        from observd.jobs.pool import worker_pool

        return worker_pool(config, warm=False)
    from observd.jobs.dask_cluster import open_cluster

    if not log.isEnabledFor(logging.DEBUG):  # the scheduler's own chatter: the dashboard shows it
        logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = open_cluster(address, config)
    try:
        cluster.check_visible([p for p in paths if p.exists()], config.paths.output)
    except BaseException:
        cluster.shutdown()
        raise
    if cluster.dashboard:
        print(f"observd: Dask dashboard at {cluster.dashboard}", file=sys.stderr, flush=True)
    return cluster


def cmd_stack(args) -> int:
    from observd.jobs.pool import worker_pool
    from observd.pipeline.reducer import Reducer

    config = load(args)
    if args.all_nights and args.night:
        raise UsageError("--all-nights stacks every night of a target together: give --night or --all-nights")
    catalog = open_catalog(config)
    try:
        nights = [args.night] if args.night else catalog.nights_with_lights()
        if not nights:
            print("no lights catalogued yet: nothing to stack")
            return 0
        with worker_pool(config) as pool:
            reducer = Reducer(config, catalog, pool=pool)
            if args.all_nights:
                # nights not stacked yet are finished first; stacked ones stay as their stacks saw them
                # (finishing again would calibrate their lights again with today's masters)
                stacked = catalog.stacked_nights()
                for night in nights:
                    if night not in stacked:
                        reducer.finish_night(night)
                objects = None if args.object is None else [args.object]
                failed = _stack_deep(config, catalog, objects, pool, filter=args.filter)
            else:
                failed = _stack_nights(config, catalog, nights, reducer, object=args.object, filter=args.filter)
        return 1 if failed else 0
    finally:
        catalog.close()


def _stack_nights(
    config: Config, catalog, nights: list[str], reducer, *, object: str | None = None, filter: str | None = None
) -> bool:
    """Finish the nights (`Reducer.finish_night`), build (or rebuild) their stacks and print them,
    then with `[stack] deep` the deep stacks of their targets; True if a product failed."""
    from observd.pipeline.stacking import StackError, stack_nights

    failed = False
    objects = set()
    stacked = stack_nights(
        config, catalog, nights, reducer.finish_night, object=object, filter=filter, pool=reducer.pool
    )
    for night, products in stacked:
        if isinstance(products, StackError):
            print(f"{night}: {products}", file=sys.stderr)
            failed = True
            continue
        if not products:
            print(f"{night}: no target/filter with at least {config.stack.min_frames} good aligned lights")
        for p in products:
            print(
                f"{night} {p.object} [{p.filter}]: {p.n_combined} frames, {p.total_exptime:g} s\n"
                f"  {p.path}\n  {p.preview_path}"
            )
            objects.add(p.object)
    if config.stack.deep and objects:
        failed |= _stack_deep(config, catalog, sorted(objects, key=lambda o: o or ""), reducer.pool, filter=filter)
    return failed


def _stack_deep(config: Config, catalog, objects: list[str | None] | None, pool, *, filter: str | None) -> bool:
    """Build (or refresh) the deep stacks of `objects` (None: every target) and print them; True if one failed."""
    from observd.pipeline.deep_stacks import DeepStackError, refresh_deep

    try:
        refreshes = refresh_deep(config, catalog, objects, filter=filter, pool=pool)
    except DeepStackError as exc:
        print(f"deep stacks: {exc}", file=sys.stderr)
        return True
    for r in refreshes:
        if r.reference is None:
            print(f"deep {r.object}: no aligned lights")
            continue
        print(f"deep {r.object}: reference {r.reference}; {r.resampled} light(s) resampled, {r.reused} reused")
        for reason in r.left_out:
            print(f"  left out: {reason}")
        if not r.products:
            print(f"  no filter with at least {config.stack.min_frames} good aligned lights")
        for p in r.products:
            print(
                f"  {p.object} [{p.filter}]: {p.n_combined} frames of {len(p.nights)} nights, {p.total_exptime:g} s\n"
                f"    {p.path}\n    {p.preview_path}"
            )
    return False
