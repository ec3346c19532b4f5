"""The `observd` command line: the only place that parses argv, sets up logging and picks exit codes.

Exit codes: 0 success; 1 something failed (a real processing failure, not bad input);
2 usage or configuration error. Library errors become one-line messages here; a traceback
reaches the console only with --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from observd import __version__
from observd.adapters.config_file import load_config
from observd.core.align import prepare_astroalign
from observd.core.config import Config, ConfigError, to_toml
from observd.jobs.pool import reuse_freed_memory

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
    from observd.jobs.pool import start_fork_server, worker_pool

    config = _load(args)
    start_fork_server()  # its imports overlap this process's next ones
    from observd.pipeline.batch import batch_nights, ingest, summary_table
    from observd.pipeline.reducer import Reducer

    catalog = _open_catalog(config)
    try:
        with worker_pool(config, warm=False) as pool:  # warmed when the batch has new files
            reducer = Reducer(config, catalog, pool=pool)
            result = ingest([Path(p) for p in args.paths], catalog, config, progress=Progress(), reducer=reducer)
            print(summary_table(catalog, result))
            stack_failed = args.stack and _stack_nights(config, catalog, batch_nights(catalog, result), reducer)
    finally:
        catalog.close()
    return 1 if result.failed or stack_failed else 0


def cmd_masters(args) -> int:
    from observd.cli.reports import format_masters, master_entry
    from observd.jobs.pool import worker_pool
    from observd.pipeline.reducer import Reducer

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
    from observd.cli.reports import format_frames, frames_report

    config = _load(args)
    with _reading(config) as catalog:
        entries = frames_report(catalog, night=args.night, state=args.state)
    print(json.dumps(entries, indent=2) if args.json else format_frames(entries))
    return 0


def cmd_status(args) -> int:
    from observd.cli.reports import format_status, pending_groups, status_report

    config = _load(args)
    if not config.paths.database.exists():
        raise UsageError(f"no catalog at {config.paths.database} yet: start `observd run` or `observd ingest`")
    with _reading(config) as catalog:
        nights = catalog.nights()
        night = None if args.all else (args.night or (nights[-1] if nights else None))
        report = status_report(
            catalog,
            night=night,
            status_log=str(config.paths.status_log),
            pending_groups=pending_groups(catalog, config, now=time.time()),
        )
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def cmd_stack(args) -> int:
    from observd.jobs.pool import worker_pool
    from observd.pipeline.reducer import Reducer

    config = _load(args)
    catalog = _open_catalog(config)
    try:
        nights = [args.night] if args.night else catalog.nights_with_lights()
        if not nights:
            print("no lights catalogued yet: nothing to stack")
            return 0
        with worker_pool(config) as pool:
            reducer = Reducer(config, catalog, pool=pool)
            failed = _stack_nights(config, catalog, nights, reducer, object=args.object, filter=args.filter)
        return 1 if failed else 0
    finally:
        catalog.close()


def _stack_nights(
    config: Config, catalog, nights: list[str], reducer, *, object: str | None = None, filter: str | None = None
) -> bool:
    """Finish the nights (`Reducer.finish_night`), build (or rebuild) their stacks and print them;
    True if a product failed."""
    from observd.pipeline.stacking import StackError, stack_night

    failed = False
    for night in nights:
        reducer.finish_night(night)
        try:
            products = stack_night(config, catalog, night, object=object, filter=filter, pool=reducer.pool)
        except StackError as exc:
            print(f"{night}: {exc}", file=sys.stderr)
            failed = True
            continue
        if not products:
            print(f"{night}: no target/filter with at least {config.stack.min_frames} good aligned lights")
        for p in products:
            print(
                f"{night} {p.object} [{p.filter}]: {p.n_combined} frames, {p.total_exptime:g} s\n"
                f"  {p.path}\n  {p.preview_path}"
            )
    return failed


def cmd_run(args) -> int:
    from observd.service.daemon import Daemon
    from observd.service.status_log import journal_stderr

    config = _load(args)
    with journal_stderr():  # priority prefixes for journald on the daemon's log lines
        return Daemon(config, Path(args.config) if args.config else None).run()


def cmd_simulate(args) -> int:
    from observd.sim.writer import write_night

    spec = simulation_spec(args)
    out = Path(args.outdir)
    truth = write_night(out, spec, on_file=(lambda p: print(p)) if args.verbose else None)
    print(f"wrote {len(truth.get('files', []))} files to {out} ({spec.dialect} dialect)")
    return 0


def simulation_spec(args):
    """Map `observd simulate` options onto a SimSpec."""
    from observd.sim.spec import SimSpec, TargetSpec

    targets = []
    for item in args.target or ["M42:L:6"]:
        parts = item.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise UsageError(f"--target {item!r}: expected NAME:FILTER[,FILTER...]:N, e.g. M42:L,R:6")
        targets.append(
            TargetSpec(name=parts[0], filters=tuple(parts[1].split(",")), n_lights=int(parts[2]), exptime=args.exptime)
        )
    return SimSpec(
        seed=args.seed,
        shape=(args.size, args.size),
        dialect=args.dialect,
        night=args.night,
        timezone=args.timezone,
        n_bias=args.n_bias,
        n_dark=args.n_dark,
        n_flat=args.n_flat,
        flats_at=args.flats,
        targets=tuple(targets),
        pace=args.pace,
        chunked=args.chunked,
        temp_names=args.temp_names,
        truth=not args.no_truth,
    )


def cmd_demo(args) -> int:
    from observd.cli.demo import run_demo

    return run_demo(size=args.size)


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

    p = command("frames", cmd_frames, "list catalogued files with their type, state and reason")
    p.add_argument("--night", metavar="YYYY-MM-DD")
    p.add_argument("--state", metavar="STATE")
    p.add_argument("--json", action="store_true")

    p = command("status", cmd_status, "what happened tonight: counts, masters, waiting, failures, products")
    p.add_argument("--night", metavar="YYYY-MM-DD", help="default: the latest night in the catalog")
    p.add_argument("--all", action="store_true", help="every night")
    p.add_argument("--json", action="store_true")

    command("run", cmd_run, "the daemon: watch the camera folder, reduce, stack nightly (foreground)")

    p = command("stack", cmd_stack, "build the nightly stacks now (rebuilds existing ones)")
    p.add_argument("--night", metavar="YYYY-MM-DD", help="default: every night with lights")
    p.add_argument("--object", metavar="NAME")
    p.add_argument("--filter", metavar="NAME")

    p = command("masters", cmd_masters, "list master calibrations; --rebuild forces a new version of each")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--all", action="store_true", help="include superseded versions")
    p.add_argument("--json", action="store_true")

    p = command("simulate", cmd_simulate, "write a simulated night of FITS files into OUTDIR", config=False)
    p.add_argument("outdir")
    p.add_argument("--dialect", default="nina", help="maxim, nina, iraf, theskyx or asiair")
    p.add_argument("--size", type=int, default=512, help="frame size in pixels (square)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--night", default="2026-11-20", help="local date of the evening")
    p.add_argument("--timezone", default="Europe/Berlin")
    p.add_argument(
        "--target",
        action="append",
        metavar="NAME:FILTERS:N",
        help="a target, e.g. M42:L,R:6 (repeatable; default M42:L:6)",
    )
    p.add_argument("--exptime", type=float, default=60.0)
    p.add_argument("--n-bias", type=int, default=9)
    p.add_argument("--n-dark", type=int, default=7)
    p.add_argument("--n-flat", type=int, default=7)
    p.add_argument("--flats", choices=("dawn", "dusk"), default="dawn")
    p.add_argument("--pace", type=float, default=0.0, help="seconds between files")
    p.add_argument("--chunked", action="store_true", help="write each file slowly in chunks")
    p.add_argument("--temp-names", action="store_true", help="write NAME.tmp then rename")
    p.add_argument("--no-truth", action="store_true", help="do not write truth.json/truth.npz")
    p.add_argument("-v", "--verbose", action="store_true", help="print each file as it is written")

    p = command("demo", cmd_demo, "simulate a night and reduce it on embedded defaults", config=False)
    p.add_argument("--size", type=int, default=512)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    reuse_freed_memory()  # masters and stacks are built in this process
    prepare_astroalign()  # and lights aligned, without a pool
    try:
        return args.func(args)
    except (ConfigError, UsageError) as exc:
        print(f"observd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("observd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: a one-line message, traceback only on request
        if args.debug:
            raise
        print(f"observd: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
