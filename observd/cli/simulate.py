"""`observd simulate`: a simulated night written to a folder, as a camera program would."""

from __future__ import annotations

from pathlib import Path

from observd.cli.common import UsageError


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
