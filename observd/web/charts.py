"""Small SVG charts drawn on the server: a quantity over the night, and the night's timeline.

SVG needs no chart library and no script, stays sharp on any screen and scales with its box
(`viewBox`). The figures are drawn at about a phone's width (`WIDTH`), so their text stays
readable there; on a desktop several sit side by side. Colours come from the page's style
sheet through classes, and each point carries a `<title>` (shown on hover or long press) and,
when it has one, a link to its frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape

__all__ = ["Point", "series_chart", "timeline_chart"]

WIDTH = 360
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 24, 26  # margins around the plot area
LANE_LEFT = 72  # a timeline's left margin holds its lane names
SERIES_HEIGHT = 170
LANE_HEIGHT = 20


@dataclass(frozen=True)
class Point:
    time: float  # POSIX seconds
    value: float  # the quantity (a series) or unused (a timeline)
    label: str  # what the point's tooltip says
    kind: str = "ok"  # CSS class suffix: ok, bad, wait, fail, other
    href: str | None = None


def series_chart(points: Sequence[Point], *, title: str, unit: str, tz: tzinfo, limit: float | None = None) -> str:
    """A quantity over time: the points joined in time order, each marked by its kind (bad
    frames stand out); `limit` is drawn as a dashed line (e.g. the elongation judged bad)."""
    points = sorted(points, key=lambda p: p.time)
    height = SERIES_HEIGHT
    if not points:
        return _figure(title, height, f'<text class="empty" x="{WIDTH / 2}" y="{height / 2}">no data</text>', LEFT)
    values = [p.value for p in points] + ([limit] if limit is not None else [])
    y_ticks = nice_ticks(min(values), max(values))
    x = _time_scale(points, tz, LEFT)
    bottom, top = y_ticks[0], y_ticks[-1]

    def y(value: float) -> float:
        return TOP + (height - TOP - BOTTOM) * (top - value) / (top - bottom)

    parts = [_time_axis(x, height)]
    for tick in y_ticks:
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="tick" x="{LEFT - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{_number(tick)}</text>'
        )
    if limit is not None:
        parts.append(f'<line class="limit" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}"/>')
    line = " ".join(f"{x.at(p.time):.1f},{y(p.value):.1f}" for p in points)
    parts.append(f'<polyline class="line" points="{line}"/>')
    parts.extend(_marker(p, x.at(p.time), y(p.value)) for p in points)
    caption = f"{title} ({unit})" if unit else title
    return _figure(caption, height, "".join(parts), LEFT)


def timeline_chart(lanes: dict[str, Sequence[Point]], *, title: str, tz: tzinfo) -> str:
    """Frames over time in lanes (one per kind of frame or target), each marked by its state."""
    everything = [p for lane in lanes.values() for p in lane]
    height = TOP + BOTTOM + LANE_HEIGHT * max(1, len(lanes))
    if not everything:
        return _figure(
            title, height, f'<text class="empty" x="{WIDTH / 2}" y="{height / 2}">no frames</text>', LANE_LEFT
        )
    x = _time_scale(everything, tz, LANE_LEFT)
    parts = [_time_axis(x, height)]
    for i, (name, lane) in enumerate(lanes.items()):
        middle = TOP + LANE_HEIGHT * (i + 0.5)
        parts.append(
            f'<line class="grid" x1="{LANE_LEFT}" x2="{WIDTH - RIGHT}" y1="{middle:.1f}" y2="{middle:.1f}"/>'
            f'<text class="lane" x="{LANE_LEFT - 4}" y="{middle + 4:.1f}" text-anchor="end">{escape(name[:12])}</text>'
        )
        parts.extend(_marker(p, x.at(p.time), middle) for p in lane)
    return _figure(title, height, "".join(parts), LANE_LEFT)


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) spanning [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"cannot scale non-finite values {low}..{high}")
    if high - low < 1e-9 * max(1.0, abs(high)):
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step)
    last = max(math.ceil(high / step), first + 1)
    return [round(i * step, 10) for i in range(first, last + 1)]


@dataclass(frozen=True)
class _TimeScale:
    left: float  # x of the plot area's left edge
    start: float
    end: float
    ticks: list[tuple[float, str]]  # (POSIX time, local HH:MM)

    def at(self, time: float) -> float:
        return self.left + (WIDTH - self.left - RIGHT) * (time - self.start) / (self.end - self.start)


_TIME_STEPS = (600, 900, 1800, 3600, 7200, 10800, 21600, 43200)  # s between time ticks


def _time_scale(points: Sequence[Point], tz: tzinfo, left: float) -> _TimeScale:
    start, end = min(p.time for p in points), max(p.time for p in points)
    pad = max((end - start) * 0.04, 300.0)
    start, end = start - pad, end + pad
    step = next((s for s in _TIME_STEPS if (end - start) / s <= 5), _TIME_STEPS[-1])
    # ticks at round local times: offset the grid by the zone's offset from UTC
    offset = datetime.fromtimestamp(start, tz).utcoffset().total_seconds()
    first = math.ceil((start + offset) / step) * step - offset
    ticks = []
    t = first
    while t <= end:
        ticks.append((t, datetime.fromtimestamp(t, tz).strftime("%H:%M")))
        t += step
    return _TimeScale(left, start, end, ticks)


def _time_axis(x: _TimeScale, height: int) -> str:
    base = height - BOTTOM
    parts = [f'<line class="axis" x1="{x.left}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}"/>']
    for t, label in x.ticks:
        parts.append(
            f'<line class="axis" x1="{x.at(t):.1f}" x2="{x.at(t):.1f}" y1="{base}" y2="{base + 4}"/>'
            f'<text class="tick" x="{x.at(t):.1f}" y="{base + 17}" text-anchor="middle">{label}</text>'
        )
    return "".join(parts)


def _marker(point: Point, x: float, y: float) -> str:
    shape = (
        f'<path class="pt pt-{point.kind}" d="M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}'
        f'M{x - 4:.1f},{y + 4:.1f}L{x + 4:.1f},{y - 4:.1f}"/>'
        if point.kind in ("bad", "fail")
        else f'<circle class="pt pt-{point.kind}" cx="{x:.1f}" cy="{y:.1f}" r="3.5"/>'
    )
    marker = f"<g><title>{escape(point.label)}</title>{shape}</g>"
    return f'<a href="{escape(point.href)}">{marker}</a>' if point.href else marker


def _figure(title: str, height: int, body: str, left: float) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><text class="title" x="{left}" y="15">{escape(title)}</text>'
        f"{body}</svg>"
    )


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.3g}"
