"""The `observd` command line: the only place that parses argv, sets up logging and picks exit codes.

Exit codes: 0 success; 1 something failed (a real processing failure, not bad input);
2 usage or configuration error. Library errors become one-line messages here; a traceback
reaches the console only with --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from observd import __version__
from observd.adapters.config_file import load_config
from observd.core.align import prepare_astroalign
from observd.core.config import Config, ConfigError, to_toml
from observd.core.memory import MemoryBudgetError
from observd.jobs.cluster import ClusterError, ClusterLost
from observd.jobs.pool import memory_budget, return_freed_frames, total_memory_mb

log = logging.getLogger("observd")


class UsageError(Exception):
    """A problem with what the user asked for; exit code 2."""


def _load(args) -> Config:
    return load_config(Path(args.config) if getattr(args, "config", None) else None)


@contextmanager
def _reading(config: Config):
    """A read-only catalog for the reporting commands (never blocks, never blocks the daemon)."""
    catalog = _open_catalog(config, readonly=True)
    try:
        yield catalog
    finally:
        catalog.close()


def _open_catalog(config: Config, *, readonly: bool = False):
    from observd.adapters.catalog import Catalog

    try:
        return Catalog.open(config.paths.database, readonly=readonly)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


# -- commands ------------------------------------------------------------------------------------


def cmd_config(args) -> int:
    config = _load(args)
    if args.check:
        print(f"{config.source}: OK")
    else:
        sys.stdout.write(to_toml(config))
        budget = memory_budget(config).limit_mb
        print(f"# [daemon] memory_limit_mb here: {budget} MiB of this machine's {total_memory_mb()} MiB")
    return 0


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

    config = _load(args)
    address = args.cluster or config.cluster.scheduler
    if not address:
        start_fork_server()  # its imports overlap this process's next ones
    from observd.pipeline.batch import batch_nights, ingest, summary_table
    from observd.pipeline.reducer import Reducer

    paths = [Path(p) for p in args.paths]
    catalog = _open_catalog(config)
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


def cmd_masters(args) -> int:
    from observd.jobs.pool import worker_pool
    from observd.pipeline.reducer import Reducer
    from observd.service.reports import format_masters, master_entry

    config = _load(args)
    if args.rebuild:
        catalog = _open_catalog(config)
        try:
            with worker_pool(config) as pool:
                built = Reducer(config, catalog, pool=pool).rebuild_masters()
            print(f"rebuilt: {built} action(s)")
        finally:
            catalog.close()
    with _reading(config) as catalog:
        entries = [master_entry(m) for m in catalog.masters(current_only=not args.all)]
    print(json.dumps(entries, indent=2) if args.json else format_masters(entries))
    return 0


def cmd_frames(args) -> int:
    from observd.service.reports import format_frames, frames_report

    config = _load(args)
    with _reading(config) as catalog:
        entries = frames_report(catalog, night=args.night, state=args.state)
    print(json.dumps(entries, indent=2) if args.json else format_frames(entries))
    return 0


def cmd_status(args) -> int:
    from observd.service.reports import format_status, status_for

    config = _load(args)
    if not config.paths.database.exists():
        raise UsageError(f"no catalog at {config.paths.database} yet: start `observd run` or `observd ingest`")
    with _reading(config) as catalog:
        report = status_for(catalog, config, night=args.night, all_nights=args.all)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def cmd_stack(args) -> int:
    from observd.jobs.pool import worker_pool
    from observd.pipeline.reducer import Reducer

    config = _load(args)
    if args.all_nights and args.night:
        raise UsageError("--all-nights stacks every night of a target together: give --night or --all-nights")
    catalog = _open_catalog(config)
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


def cmd_run(args) -> int:
    from observd.service.daemon import Daemon
    from observd.service.status_log import journal_stderr

    config = _load(args)
    page = _web_server(config, config.web.host, config.web.port) if config.web.enabled else None
    with journal_stderr():  # priority prefixes for journald on the daemon's log lines
        if page is not None:
            page.start()  # beside the daemon; it stops when the daemon has stopped
            log.info("web page at %s", page.address)
        try:
            return Daemon(config, Path(args.config) if args.config else None).run()
        finally:
            if page is not None:
                page.stop()


def cmd_web(args) -> int:
    config = _load(args)
    page = _web_server(config, args.host or config.web.host, config.web.port if args.port is None else args.port)
    print(f"observd web: {page.address} (catalog {config.paths.database}; Ctrl-C stops)", flush=True)
    page.serve()
    return 0


def _web_server(config: Config, host: str, port: int):
    """The web page's server, its socket bound now: an exposed address without a token, or an
    address that cannot be used, is a usage error (exit 2) before anything else starts."""
    from observd.web.app import create_app
    from observd.web.server import ExposureError, WebServer, check_exposure, listen

    token = config.web.token or os.environ.get("OBSERVD_WEB_TOKEN") or None
    try:
        check_exposure(host, token)
        sock = listen(host, port)
    except ExposureError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot serve the web page on {host}:{port}: {reason}") from None
    return WebServer(create_app(config, token=token), sock)


def cmd_simulate(args) -> int:
    from observd.sim.writer import write_night

    spec = simulation_spec(args)
    out = Path(args.outdir)
    truth = write_night(out, spec, on_file=(lambda p: print(p)) if args.verbose else None)
    print(f"wrote {len(truth.get('files', []))} files to {out} ({spec.dialect} dialect)")
    return 0


def simulation_spec(args):
    """Map `observd simulate` options onto a SimSpec.

    ``--dialect seestar`` is a Seestar S50 night unless told otherwise: lights only (no bias,
    dark or flat), 10 s, the IRCUT filter, an uncooled sensor at 25 degC, a GRBG mosaic.
    """
    from observd.sim.spec import SimSpec, TargetSpec

    seestar = args.dialect == "seestar"

    def default(value, mono, s50):
        return value if value is not None else (s50 if seestar else mono)

    exptime = default(args.exptime, 60.0, 10.0)
    targets = []
    for item in args.target or [default(None, "M42:L:6", "M 42:IRCUT:6")]:
        parts = item.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise UsageError(f"--target {item!r}: expected NAME:FILTER[,FILTER...]:N, e.g. M42:L,R:6")
        targets.append(
            TargetSpec(name=parts[0], filters=tuple(parts[1].split(",")), n_lights=int(parts[2]), exptime=exptime)
        )
    row_order = {None: None if seestar else "TOP-DOWN", "none": None}.get(args.row_order, args.row_order)
    sensor = {"ccd_temp": 25.0, "dark_temps": (25.0,)} if seestar else {}
    try:
        return SimSpec(
            seed=args.seed,
            setup_seed=args.setup_seed,
            shape=(args.size, args.size),
            dialect=args.dialect,
            night=args.night,
            timezone=args.timezone,
            n_bias=default(args.n_bias, 9, 0),
            n_dark=default(args.n_dark, 7, 0),
            n_flat=default(args.n_flat, 7, 0),
            flats_at=args.flats,
            targets=tuple(targets),
            pace=args.pace,
            chunked=args.chunked,
            temp_names=args.temp_names,
            truth=not args.no_truth,
            bayer=args.bayer,
            row_order=row_order,
            bayer_offset=tuple(args.bayer_offset),
            prescan=args.prescan,
            **sensor,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_demo(args) -> int:
    from observd.cli.demo import run_demo

    return run_demo(size=args.size, then=_serve_demo if args.web else None)


def _serve_demo(config: Config) -> None:
    """`observd demo --web`: the demo night's page, on the default port or, when that is taken, any."""
    try:
        page = _web_server(config, "127.0.0.1", config.web.port)
    except UsageError:
        page = _web_server(config, "127.0.0.1", 0)
    print(f"\nThe night's web page: {page.address} (Ctrl-C stops)", flush=True)
    page.serve()


# -- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="observd", description="Unattended observatory data reduction.")
    parser.add_argument("--version", action="version", version=f"observd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func, help_text: str, config: bool = True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("-c", "--config", metavar="FILE", help="TOML configuration (default: embedded defaults)")
        p.set_defaults(func=func)
        return p

    p = command("config", cmd_config, "print the effective configuration, or validate a file")
    p.add_argument("--check", action="store_true", help="only validate; exit 2 on error")

    p = command("ingest", cmd_ingest, "process existing files and folders once through the pipeline")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--stack", action="store_true", help="then build (or rebuild) the stacks of every night these files belong to"
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help='run the jobs on the Dask scheduler at ADDRESS (tcp://host:8786), or "local:N" for N workers '
        "here (default: [cluster] scheduler, else this host's worker pool)",
    )

    p = command("frames", cmd_frames, "list catalogued files with their type, state and reason")
    p.add_argument("--night", metavar="YYYY-MM-DD")
    p.add_argument("--state", metavar="STATE")
    p.add_argument("--json", action="store_true")

    p = command("status", cmd_status, "what happened tonight: counts, masters, waiting, failures, products")
    p.add_argument("--night", metavar="YYYY-MM-DD", help="default: the latest night in the catalog")
    p.add_argument("--all", action="store_true", help="every night")
    p.add_argument("--json", action="store_true")

    command("run", cmd_run, "the daemon: watch the camera folder, reduce, stack nightly (foreground)")

    p = command("web", cmd_web, "the observers' read-only web page (foreground; [web] in the configuration)")
    p.add_argument("--host", metavar="ADDRESS", help="interface to listen on (default [web] host, 127.0.0.1)")
    p.add_argument("--port", type=int, metavar="PORT", help="TCP port (default [web] port, 8750)")

    p = command("stack", cmd_stack, "build the nightly stacks now (rebuilds existing ones)")
    p.add_argument("--night", metavar="YYYY-MM-DD", help="default: every night with lights")
    p.add_argument("--object", metavar="NAME")
    p.add_argument("--filter", metavar="NAME")
    p.add_argument(
        "--all-nights",
        action="store_true",
        help="deep stacks instead: every good light of a target (default: every target) over all its nights",
    )

    p = command("masters", cmd_masters, "list master calibrations; --rebuild forces a new version of each")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--all", action="store_true", help="include superseded versions")
    p.add_argument("--json", action="store_true")

    p = command("simulate", cmd_simulate, "write a simulated night of FITS files into OUTDIR", config=False)
    p.add_argument("outdir")
    p.add_argument("--dialect", default="nina", help="maxim, nina, iraf, theskyx, asiair or seestar")
    p.add_argument("--size", type=int, default=512, help="frame size in pixels (square)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--setup-seed",
        type=int,
        metavar="N",
        help="seed of the camera, telescope and star fields (default: --seed); several nights with one "
        "--setup-seed and their own --seed are nights of one target, for deep stacks",
    )
    p.add_argument("--night", default="2026-11-20", help="local date of the evening")
    p.add_argument("--timezone", default="Europe/Berlin")
    p.add_argument(
        "--target",
        action="append",
        metavar="NAME:FILTERS:N",
        help="a target, e.g. M42:L,R:6 (repeatable; default M42:L:6)",
    )
    p.add_argument("--exptime", type=float, help="light exposure in s (default 60; seestar 10)")
    p.add_argument("--n-bias", type=int, help="default 9 (seestar 0)")
    p.add_argument("--n-dark", type=int, help="default 7 per exposure and temperature (seestar 0)")
    p.add_argument("--n-flat", type=int, help="default 7 per filter (seestar 0)")
    p.add_argument("--flats", choices=("dawn", "dusk"), default="dawn")
    p.add_argument("--pace", type=float, default=0.0, help="seconds between files")
    p.add_argument("--chunked", action="store_true", help="write each file slowly in chunks")
    p.add_argument("--temp-names", action="store_true", help="write NAME.tmp then rename")
    p.add_argument("--no-truth", action="store_true", help="do not write truth.json/truth.npz")
    p.add_argument(
        "--bayer",
        choices=("RGGB", "GRBG", "GBRG", "BGGR"),
        help="a one-shot-colour camera with this sensor pattern (default: mono; seestar GRBG)",
    )
    p.add_argument(
        "--row-order",
        choices=("TOP-DOWN", "BOTTOM-UP", "none"),
        help="rows stored top-down or bottom-up, 'none' = top-down without ROWORDER (default TOP-DOWN; seestar none)",
    )
    p.add_argument(
        "--bayer-offset",
        type=int,
        nargs=2,
        default=(0, 0),
        metavar=("X", "Y"),
        help="XBAYROFF YBAYROFF to describe the mosaic with (the BAYERPAT written follows)",
    )
    p.add_argument(
        "--prescan", type=int, default=0, metavar="N", help="prescan columns on the left (odd: a shifted mosaic)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print each file as it is written")

    p = command("demo", cmd_demo, "simulate a night and reduce it on embedded defaults", config=False)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--web", action="store_true", help="then serve the night's web page until Ctrl-C")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return_freed_frames()  # the workers keep theirs (`reuse_freed_memory`)
    prepare_astroalign()  # lights are aligned in this process without a pool
    try:
        return args.func(args)
    except (ConfigError, UsageError, MemoryBudgetError, ClusterError) as exc:
        print(f"observd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("observd: interrupted", file=sys.stderr)
        return 130
    except ClusterLost as exc:
        print(f"observd: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the boundary: a one-line message, traceback only on request
        if args.debug:
            raise
        print(f"observd: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
