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
from pathlib import Path

from observd import __version__
from observd.cli.batch import cmd_ingest, cmd_stack
from observd.cli.common import UsageError, load, open_catalog, reading
from observd.cli.simulate import cmd_simulate
from observd.core.align import prepare_astroalign
from observd.core.config import Config, ConfigError, to_toml
from observd.core.memory import MemoryBudgetError
from observd.jobs.cluster import ClusterError, ClusterLost
from observd.jobs.pool import memory_budget, return_freed_frames, total_memory_mb

log = logging.getLogger("observd")


# -- commands ------------------------------------------------------------------------------------


def cmd_config(args) -> int:
    config = load(args)
    if args.check:
        print(f"{config.source}: OK")
    else:
        sys.stdout.write(to_toml(config))
        budget = memory_budget(config).limit_mb
        print(f"# [daemon] memory_limit_mb here: {budget} MiB of this machine's {total_memory_mb()} MiB")
    return 0


def cmd_masters(args) -> int:
    from observd.jobs.pool import worker_pool
    from observd.pipeline.reducer import Reducer
    from observd.service.reports import format_masters, master_entry

    config = load(args)
    if args.rebuild:
        catalog = open_catalog(config)
        try:
            with worker_pool(config) as pool:
                built = Reducer(config, catalog, pool=pool).rebuild_masters()
            print(f"rebuilt: {built} action(s)")
        finally:
            catalog.close()
    with reading(config) as catalog:
        entries = [master_entry(m) for m in catalog.masters(current_only=not args.all)]
    print(json.dumps(entries, indent=2) if args.json else format_masters(entries))
    return 0


def cmd_frames(args) -> int:
    from observd.service.reports import format_frames, frames_report

    config = load(args)
    with reading(config) as catalog:
        entries = frames_report(catalog, night=args.night, state=args.state)
    print(json.dumps(entries, indent=2) if args.json else format_frames(entries))
    return 0


def cmd_status(args) -> int:
    from observd.service.reports import format_status, status_for

    config = load(args)
    if not config.paths.database.exists():
        raise UsageError(f"no catalog at {config.paths.database} yet: start `observd run` or `observd ingest`")
    with reading(config) as catalog:
        report = status_for(catalog, config, night=args.night, all_nights=args.all)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def cmd_run(args) -> int:
    from observd.service.daemon import Daemon
    from observd.service.status_log import journal_stderr

    config = load(args)
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
    config = load(args)
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
    p.add_argument(
        "--variables",
        action="store_true",
        help="a transiting planet at the first target's centre and a pulsating star beside it, timed to its "
        "lights (mono only; their truth in truth.json)",
    )
    p.add_argument(
        "--pixel-scale",
        type=float,
        metavar="ARCSEC",
        help='put the targets on the sky at this many "/px: RA/DEC, OBJCTRA/OBJCTDEC, site cards (nina)',
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
