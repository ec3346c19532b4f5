"""What observers ask: the `status` and `frames` reports, as stable JSON-ready dicts and as text.

Read-only over the catalog. One function builds each document, for every reader: `observd
status --json` / `frames --json`, the web page's JSON endpoints and pages, and the morning
report. The JSON layout is documented in README.md ("JSON formats") and is a public interface:
add keys, never rename or remove them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime

from observd.adapters.catalog import Catalog
from observd.core.config import Config
from observd.core.frames import CALIBRATION_TYPES
from observd.core.master_plan import calibration_groups

FAILURE_STATES = ("failed", "rejected", "unknown", "unaligned")
_FRAME_KEYS = (
    "id",
    "name",
    "path",
    "version",
    "frame_type",
    "night",
    "date_obs",
    "object",
    "filter",
    "exptime",
    "ccd_temp",
    "state",
    "reason",
    "bayer",  # the stored Bayer pattern of a one-shot-colour frame; null for mono
)


def frame_entry(row: dict) -> dict:
    entry = {k: row.get(k) for k in _FRAME_KEYS}
    entry["type"] = entry.pop("frame_type")
    return entry


def frames_report(catalog: Catalog, *, night: str | None = None, state: str | None = None) -> list[dict]:
    return [frame_entry(r) for r in catalog.files(night=night, state=state)]


def master_entry(row: dict, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    created = datetime.fromisoformat(row["created"])
    return {
        "id": row["id"],
        "type": row["type"],
        "group": row["group_key"],
        "version": row["version"],
        "current": bool(row["current"]),
        "n_frames": row["n_frames"],
        "ccd_temp": {"mean": row["ccd_temp_mean"], "min": row["ccd_temp_min"], "max": row["ccd_temp_max"]},
        "exptime": row["exptime"],
        "filter": row["filter"],
        "night": row["night"],
        "path": row["path"],
        "created": row["created"],
        "age_hours": round((now - created).total_seconds() / 3600, 1),
        "includes_bias": bool(row["includes_bias"]),
        "flag": row["flag"],
    }


def product_entry(row: dict) -> dict:
    entry = {
        k: row.get(k)
        for k in (
            "night",
            "object",
            "filter",
            "n_combined",
            "total_exptime",
            "path",
            "preview_path",
            "thumbnail_path",
            "reference",
            "noise",
            "created",
            "channels",  # 'R,G,B' for a colour cube (one-shot-colour stack or composite), null for mono
        )
    }
    entry["astrometry"] = astrometry_entry(row)
    return entry


def deep_product_entry(row: dict) -> dict:
    """A deep stack (all nights of a target): a product entry (its `night` null) and its `nights`."""
    return dict(product_entry(row), nights=row["nights"].split(","))


def astrometry_entry(row: dict) -> dict | None:
    """A product's plate solution (`products.solve_*`), or null when solving was not attempted."""
    if not row.get("solve_state"):
        return None
    return {
        "state": row["solve_state"],  # solved | skipped | failed
        "reason": row.get("solve_reason"),
        "ra": row.get("solve_ra"),
        "dec": row.get("solve_dec"),
        "scale": row.get("solve_scale"),
        "rotation": row.get("solve_rotation"),
        "residual": row.get("solve_residual"),
        "seconds": row.get("solve_seconds"),
    }


def _sexagesimal(value: float) -> str:
    """0 <= value: 'dd:mm:ss.s', rounded once (59.96 s carries into the minute)."""
    tenths = round(value * 36000)
    whole, tenth = divmod(tenths, 10)
    minutes, seconds = divmod(whole, 60)
    degrees, minutes = divmod(minutes, 60)
    return f"{degrees:02d}:{minutes:02d}:{seconds:02d}.{tenth}"


def format_astrometry(solution: dict | None) -> str | None:
    """A product's plate solution in one line (None when not attempted)."""
    if not solution:
        return None
    if solution["state"] != "solved":
        return f"WCS: {solution['state']} — {solution['reason']}"
    ra, dec = solution["ra"], solution["dec"]
    sexa = f"{_sexagesimal(ra / 15.0)} {'-' if dec < 0 else '+'}{_sexagesimal(abs(dec))}"
    residual = f', residual {solution["residual"]:.2f}"' if solution["residual"] is not None else ""
    return (
        f'WCS: centre {sexa} ({ra:.4f} {dec:+.4f}), {solution["scale"]:.3f}"/px, '
        f"rotation {solution['rotation']:.1f}°{residual}, solved in {solution['seconds']:.1f} s"
    )


def pending_groups(catalog: Catalog, config: Config, *, now: float) -> list[dict]:
    """Calibration groups with no master yet, and why (`calibration_groups` over the catalog: the
    frames of groups that have a master, and the masters' inputs, play no part in it)."""
    frames = catalog.frames_of_groups_without_master(CALIBRATION_TYPES)
    return calibration_groups(frames, catalog.masters(current_only=True), {}, config, now=now)


def status_for(
    catalog: Catalog, config: Config, *, night: str | None = None, all_nights: bool = False, now: float | None = None
) -> dict:
    """The `observd status --json` document of `night` (default: the latest night in the catalog;
    `all_nights`: every night), with the calibration groups still short of a master."""
    if not all_nights and night is None:
        nights = catalog.nights()
        night = nights[-1] if nights else None
    return status_report(
        catalog,
        night=None if all_nights else night,
        status_log=str(config.paths.status_log),
        pending_groups=pending_groups(catalog, config, now=time.time() if now is None else now),
    )


def night_counts(catalog: Catalog, night: str | None = None) -> list[dict]:
    """Files by night, type and state (the status document's `nights`): `night` alone, or every night."""
    per_night: dict[str, dict] = defaultdict(lambda: defaultdict(dict))
    for row in catalog.counts(night):
        per_night[row["night"] or "undated"][row["frame_type"] or "none"][row["state"]] = row["n"]
    return [
        {
            "night": n,
            "counts": {t: dict(s) for t, s in types.items()},
            "total": sum(sum(s.values()) for s in types.values()),
        }
        for n, types in sorted(per_night.items())
    ]


def status_report(
    catalog: Catalog,
    *,
    night: str | None = None,
    status_log: str | None = None,
    pending_groups: list[dict] | None = None,
) -> dict:
    """The `observd status --json` document. `night=None` covers every night in the catalog."""
    files = catalog.files(night=night)
    lights = [r for r in files if r["frame_type"] == "light" and r["fwhm"] is not None]
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "night": night,
        "status_log": status_log,
        "nights": night_counts(catalog, night),
        "masters": [master_entry(m) for m in catalog.masters(current_only=True)],
        "calibration_groups": pending_groups or [],
        "waiting": [frame_entry(r) for r in files if r["state"] == "waiting"],
        "failures": [frame_entry(r) for r in files if r["state"] in FAILURE_STATES],
        "bad": [frame_entry(r) for r in files if r["state"] == "bad"],
        "products": [product_entry(p) for p in catalog.products(night=night)],
        "deep_products": [deep_product_entry(p) for p in catalog.products(deep=True)],
        "light_curves": [light_curve_entry(c) for c in catalog.light_curves(night=night)],
        "quality": _quality(files, lights),
    }


def light_curve_entry(row: dict) -> dict:
    """A light curve (`light_curves` row): its files and figures, or why it was not made."""
    return {
        k: row.get(k)
        for k in (
            "night",
            "target",  # as configured ('OBJECT': the stack's pointing target)
            "object",
            "filter",
            "state",  # written | skipped | failed
            "reason",
            "path",  # ECSV
            "plot_path",  # PNG
            "ra",
            "dec",
            "n_frames",
            "n_good",
            "n_comparisons",
            "scatter",  # point-to-point scatter of the relative flux (good frames)
            "expected",  # median expected error of the relative flux
            "created",
        )
    }


def format_light_curve(c: dict) -> str:
    where = f"{c['night']} {c['target']}" + (f" on {c['object']} [{c['filter']}]" if c["object"] else "")
    if c["state"] != "written":
        return f"  {where}: {c['state']} — {c['reason']}"
    return (
        f"  {where}: {c['n_good']}/{c['n_frames']} good frames, {c['n_comparisons']} comparison stars, "
        f"scatter {c['scatter'] * 1e3:.2f} ppt (expected {c['expected'] * 1e3:.2f})"
        f"\n    {c['path']}\n    {c['plot_path']}"
    )


def _quality(files: list[dict], lights: list[dict]) -> dict:
    temps = [r["ccd_temp"] for r in files if r["ccd_temp"] is not None]
    fwhms = sorted(r["fwhm"] for r in lights)
    return {
        "ccd_temp_min": min(temps) if temps else None,
        "ccd_temp_max": max(temps) if temps else None,
        "fwhm_median": fwhms[len(fwhms) // 2] if fwhms else None,
        "fwhm_best": fwhms[0] if fwhms else None,
        "lights_measured": len(lights),
        "lights_bad": sum(1 for r in files if r["state"] == "bad"),
    }


def format_status(report: dict) -> str:
    """The human-readable status: what an observer reads at the terminal in the morning."""
    out = []
    scope = f"night {report['night']}" if report["night"] else "all nights"
    out.append(f"observd status — {scope} (at {report['generated']})")
    if report.get("status_log"):
        out.append(f"status log: {report['status_log']}")
    if not report["nights"]:
        out.append("\nNo files catalogued yet.")
    for night in report["nights"]:
        out.append("")
        out.extend(format_counts(night))
    if report["quality"]["lights_measured"]:
        out.append("\n" + format_quality(report["quality"]))
    if report["masters"]:
        out.append("\nMasters in use:")
        out.extend("  " + line for line in format_masters(report["masters"]).splitlines()[1:])
    for group in report["calibration_groups"]:
        out.append(f"  (no master) {group['group']}: {group['message']}")
    _listing(out, "Lights waiting", report["waiting"])
    _listing(out, "Judged bad (kept, not stacked)", report["bad"])
    _listing(out, "Problems", report["failures"])
    if report["products"]:
        out.append("\nProducts:")
        for p in report["products"]:
            out.append(
                f"  {p['night']} {p['object']} [{p['filter']}] N={p['n_combined']} "
                f"{p['total_exptime']:.0f} s\n    {p['path']}\n    {p['preview_path']}"
            )
            if (wcs := format_astrometry(p.get("astrometry"))) is not None:
                out.append(f"    {wcs}")
    if report.get("deep_products"):
        out.append("\nDeep stacks (all nights):")
        for p in report["deep_products"]:
            nights = p["nights"]
            out.append(
                f"  {p['object']} [{p['filter']}] N={p['n_combined']} {p['total_exptime']:.0f} s, "
                f"{len(nights)} nights {nights[0]}..{nights[-1]}, reference {p['reference']}\n"
                f"    {p['path']}\n    {p['preview_path']}"
            )
    if report.get("light_curves"):
        out.append("\nLight curves:")
        out.extend(format_light_curve(c) for c in report["light_curves"])
    return "\n".join(out)


def format_counts(night: dict) -> list[str]:
    """A `nights` entry of the status document as lines: the total, then each type by state."""
    out = [f"Night {night['night']}: {night['total']} files"]
    for kind in ("light", *CALIBRATION_TYPES, "unknown", "none"):
        states = night["counts"].get(kind)
        if states:
            detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda x: -x[1]))
            out.append(f"  {kind:<8} {sum(states.values()):>5}  ({detail})")
    return out


def format_quality(quality: dict) -> str:
    """The status document's `quality`, in one line (when lights were measured)."""
    return (
        f"Quality: FWHM median {quality['fwhm_median']:.2f} px, best {quality['fwhm_best']:.2f} px; "
        f"CCD-TEMP {quality['ccd_temp_min']:+.1f}..{quality['ccd_temp_max']:+.1f} °C; "
        f"{quality['lights_bad']} light(s) judged bad"
    )


def format_masters(entries: list[dict]) -> str:
    lines = ["type  version  N    CCD-TEMP      age  group / path"]
    for m in entries:
        t = m["ccd_temp"]["mean"]
        temp = f"{t:+6.1f} °C" if t is not None else "  no temp"
        state = "" if m["current"] else " (superseded)"
        flag = f"  FLAGGED: {m['flag']}" if m["flag"] else ""
        lines.append(
            f"{m['type']:<5} v{m['version']:<7} {m['n_frames']:<4} {temp} {m['age_hours']:>6.1f} h  "
            f"{m['group']}{state}{flag}\n{'':>38}{m['path']}"
        )
    return "\n".join(lines)


def _listing(out: list[str], title: str, entries: list[dict], limit: int = 20) -> None:
    if not entries:
        return
    out.append(f"\n{title} ({len(entries)}):")
    for e in entries[:limit]:
        out.append(f"  {e['name']}: [{e['state']}] {e['reason'] or ''}")
    if len(entries) > limit:
        out.append(f"  … and {len(entries) - limit} more (observd frames --state …)")


def format_frames(entries: list[dict]) -> str:
    header = f"{'name':<40} {'type':<7} {'night':<10} {'exp':>7} {'filter':<7} {'temp':>6} {'state':<10} reason"
    lines = [header]
    for e in entries:
        exp = f"{e['exptime']:g}" if e["exptime"] is not None else "-"
        temp = f"{e['ccd_temp']:+.1f}" if e["ccd_temp"] is not None else "-"
        lines.append(
            f"{(e['name'] or '')[:40]:<40} {e['type'] or '-':<7} {e['night'] or '-':<10} {exp:>7} "
            f"{(e['filter'] or '-')[:7]:<7} {temp:>6} {e['state']:<10} {e['reason'] or ''}"
        )
    return "\n".join(lines)
