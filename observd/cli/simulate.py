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
        spec = SimSpec(
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
            pixel_scale=args.pixel_scale,
            **sensor,
        )
        return with_variables(spec) if args.variables else spec
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def with_variables(spec):
    """`spec` with a transiting planet at its first target's centre and a pulsating star beside
    it, timed to its lights: mid-transit half-way through them, first to last contact over a third
    of them, and four pulsation periods over the whole span, so that one night shows both."""
    from dataclasses import replace

    from observd.sim.schedule import plan_night
    from observd.sim.variables import Pulsator, Transit

    first = spec.targets[0]
    lights = [f for f in plan_night(spec) if f.frame_type == "light" and f.target == first.name]
    span = (lights[-1].date_obs - lights[0].date_obs).total_seconds() + lights[-1].exptime
    transit = Transit(mid_s=span / 2, duration_s=span / 3)
    pulsator = Pulsator(offset=(0.15 * spec.shape[1], -0.12 * spec.shape[0]), period_s=span / 4)
    return replace(spec, targets=(replace(first, variables=(transit, pulsator)), *spec.targets[1:]))
