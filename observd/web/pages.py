"""What each page shows, gathered from read-only catalog queries into plain dicts for the templates.

The Tonight page is the night's `status --json` and `frames --json` documents
(`observd.service.reports`): the page, the JSON endpoints and the CLI agree by construction.
Times are shown in the site's time zone, as observers read their clocks.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from statistics import median
from zoneinfo import ZoneInfo

from markupsafe import Markup

from observd.adapters.catalog import STATES, Catalog
from observd.core.config import Config
from observd.core.frames import CALIBRATION_TYPES
from observd.core.layout import light_paths
from observd.core.stack_plan import format_exposure
from observd.service.reports import (
    FAILURE_STATES,
    frame_entry,
    frames_report,
    master_entry,
    night_counts,
    product_entry,
    status_for,
)
from observd.web.charts import Point, series_chart, timeline_chart
from observd.web.output_files import OutputFiles

__all__ = ["frame", "masters", "nights", "products", "quality", "state_kind", "tonight"]

TYPE_ORDER = ("light", *CALIBRATION_TYPES, "unknown", "none")
QUANTITIES = (  # the Quality page's charts: catalog column, title, unit
    ("fwhm", "FWHM", "px"),
    ("n_stars", "stars", ""),
    ("background", "background", "ADU"),
    ("elongation", "elongation", "a/b"),
    ("ccd_temp", "CCD-TEMP", "°C"),
)
HEADER_FIELDS = (  # the Frame page's header cards, from the catalog's normalised header
    ("frame_type", "type"),
    ("type_source", "type from"),
    ("object", "object"),
    ("filter", "filter"),
    ("exptime", "exposure (s)"),
    ("date_obs", "DATE-OBS (UTC)"),
    ("night", "night"),
    ("ccd_temp", "CCD-TEMP (°C)"),
    ("set_temp", "SET-TEMP (°C)"),
    ("instrument", "instrument"),
    ("telescope", "telescope"),
    ("naxis1", "width (px)"),
    ("naxis2", "height (px)"),
    ("xbin", "binning x"),
    ("ybin", "binning y"),
    ("gain_setting", "gain setting"),
    ("offset", "offset"),
    ("readout_mode", "readout mode"),
    ("egain", "gain (e-/ADU)"),
    ("rdnoise", "read noise (e-)"),
)
METRICS = (
    ("background", "background (ADU)"),
    ("noise", "sky noise (ADU)"),
    ("n_stars", "stars"),
    ("fwhm", "FWHM (px)"),
    ("elongation", "elongation (a/b)"),
    ("n_saturated", "saturated stars"),
    ("align_rms", "alignment rms (px)"),
    ("n_matches", "stars matched"),
)


def state_kind(state: str | None) -> str:
    """How a state looks on the page: ok, bad, wait, fail or other."""
    if state in ("aligned", "calibrated", "combined", "classified"):
        return "ok"
    if state == "bad":
        return "bad"
    if state in ("waiting", "pending"):
        return "wait"
    if state in FAILURE_STATES:
        return "fail"
    return "other"


def tonight(catalog: Catalog, config: Config, files: OutputFiles, night: str | None) -> dict:
    """Counts by type and state, the timeline, lights waiting and why, failures, bad frames."""
    status = status_for(catalog, config, night=night)
    night, nights = status["night"], catalog.nights()
    frames = frames_report(catalog, night=night) if night else []
    counts = status["nights"][0]["counts"] if night and status["nights"] else {}
    types = [t for t in TYPE_ORDER if t in counts] + sorted(set(counts) - set(TYPE_ORDER))
    states = [s for s in STATES if any(s in counts[t] for t in types)]
    lanes: dict[str, list[Point]] = defaultdict(list)
    tz = ZoneInfo(config.site.timezone)
    for e in frames:
        if e["date_obs"]:
            lane = f"{e['object'] or '?'} {e['filter'] or ''}".strip() if e["type"] == "light" else e["type"] or "?"
            label = f"{e['name']}: {e['state']}" + (f" ({e['reason']})" if e["reason"] else "")
            lanes[lane].append(Point(_posix(e["date_obs"]), 0.0, label, state_kind(e["state"]), f"/frame/{e['id']}"))
    return {
        "night": night,
        "nights": nights,
        "status": status,
        "types": types,
        "states": states,
        "counts": counts,
        "total": sum(sum(c.values()) for c in counts.values()),
        "stacks": [dict(p, thumb=files.url(p["thumbnail_path"])) for p in status["products"]],
        "waiting_reasons": Counter(e["reason"] for e in status["waiting"]).most_common(),
        "timeline": Markup(timeline_chart(dict(sorted(lanes.items())), title="frames through the night", tz=tz)),
        "frames": frames[::-1],  # the latest first: what arrived last is what an observer looks for
        # files with no night (unreadable, or no time in the header) most likely came tonight
        "undated": [frame_entry(r) for r in catalog.undated_files()] if nights and night == nights[-1] else [],
    }


def quality(catalog: Catalog, config: Config, night: str | None) -> dict:
    """Per target and filter, each measured quantity over the night, bad frames marked."""
    nights = catalog.nights()
    night = night or (nights[-1] if nights else None)
    tz = ZoneInfo(config.site.timezone)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in catalog.files(night=night, types=("light",)) if night else []:
        if row["date_obs"]:
            groups[(row["object"] or "?", row["filter"] or "?")].append(row)
    out = []
    for (target, filt), rows in sorted(groups.items()):
        limits = {"elongation": config.measure.max_elongation}
        set_temps = {r["set_temp"] for r in rows if r["set_temp"] is not None}
        if len(set_temps) == 1:  # one set point: draw it; several would be a clutter of lines
            limits["ccd_temp"] = set_temps.pop()
        charts = []
        for column, title, unit in QUANTITIES:
            points = [
                Point(
                    _posix(r["date_obs"]),
                    float(r[column]),
                    f"{r['name']}: {r[column]:.4g} {unit} ({r['state']})",
                    state_kind(r["state"]),
                    f"/frame/{r['id']}",
                )
                for r in rows
                if r[column] is not None
            ]
            charts.append(Markup(series_chart(points, title=title, unit=unit, tz=tz, limit=limits.get(column))))
        fwhms = [r["fwhm"] for r in rows if r["fwhm"] is not None]
        out.append(
            {
                "object": target,
                "filter": filt,
                "n": len(rows),
                "bad": [r for r in rows if r["state"] == "bad"],
                "fwhm_median": median(fwhms) if fwhms else None,
                "charts": charts,
            }
        )
    return {"night": night, "nights": nights, "groups": out}


def masters(catalog: Catalog, files: OutputFiles) -> dict:
    """Every master, current and superseded, with its preview."""
    entries = []
    for row in catalog.masters():
        entry = master_entry(row)
        url = files.url(row["path"])
        entries.append(dict(entry, url=url, preview=f"/masters/{row['id']}/preview.png" if url else None))
    superseded = sorted((e for e in entries if not e["current"]), key=lambda e: e["created"], reverse=True)
    return {"current": [e for e in entries if e["current"]], "superseded": superseded}


def products(catalog: Catalog, files: OutputFiles, night: str | None) -> dict:
    """The night's stacks (default: the latest night that has some): preview, N, exposure, inputs."""
    stacked = sorted({p["night"] for p in catalog.products()})
    night = night or (stacked[-1] if stacked else None)
    items = [
        dict(
            product_entry(row),
            thumb=files.url(row["thumbnail_path"]),
            preview=files.url(row["preview_path"]),
            fits=files.url(row["path"]),
            exposure=format_exposure(row["total_exptime"] or 0.0),
            inputs=catalog.product_inputs(row["id"]),
        )
        for row in (catalog.products(night=night) if night else [])
    ]
    return {"night": night, "nights": stacked, "products": items}


def frame(catalog: Catalog, config: Config, files: OutputFiles, file_id: int) -> dict | None:
    """One file's story: header, metrics, masters used, reference, events, thumbnail, outputs."""
    row = catalog.file(file_id)
    if row is None:
        return None
    used = []
    for kind in CALIBRATION_TYPES:
        master = catalog.master(row[f"{kind}_id"]) if row[f"{kind}_id"] is not None else None
        if master is not None:
            scale = row["dark_scale"] if kind == "dark" else None
            used.append(dict(master_entry(master), scale=scale, url=files.url(master["path"])))
    thumbnail = None
    if row["frame_type"] == "light" and row["name"]:
        thumbnail = files.url(light_paths(config.paths.output, row).thumbnail)
    return {
        "row": row,
        "kind": state_kind(row["state"]),
        "header": [(label, row[key]) for key, label in HEADER_FIELDS if row.get(key) is not None],
        "metrics": [(label, row[key]) for key, label in METRICS if row.get(key) is not None],
        "masters": used,
        "reference": catalog.file(row["reference_id"]) if row["reference_id"] else None,
        "events": catalog.events_of(row["path"]),
        "thumbnail": thumbnail,
        "outputs": [
            (name, files.url(row[column]))
            for name, column in (("calibrated", "calibrated_path"), ("aligned", "aligned_path"))
            if files.url(row[column])
        ],
    }


def nights(catalog: Catalog, files: OutputFiles) -> dict:
    """The archive: every night, newest first, with its counts and its products."""
    stacks: dict[str, list[dict]] = defaultdict(list)
    for row in catalog.products():
        stacks[row["night"]].append(dict(product_entry(row), thumb=files.url(row["thumbnail_path"])))
    summaries = []
    for entry in reversed(night_counts(catalog)):
        lights = entry["counts"].get("light", {})
        summaries.append(dict(entry, lights=lights, n_lights=sum(lights.values()), products=stacks[entry["night"]]))
    return {"nights": summaries, "stacked": catalog.stacked_nights()}


def _posix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
