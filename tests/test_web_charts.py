"""The web page's SVG charts (observd.web.charts): well-formed, scaled, bad frames marked."""

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from observd.web.charts import Point, nice_ticks, series_chart, timeline_chart

SVG = "{http://www.w3.org/2000/svg}"
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 20, 19, 0, tzinfo=UTC).timestamp()  # 20:00 in Berlin


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 11, [0, 5, 10, 15]),
        (1.0, 1.6, [1.0, 1.2, 1.4, 1.6]),
        (-10.2, -9.8, [-10.2, -10.1, -10.0, -9.9, -9.8]),
        (5, 5, [4.5, 5.0, 5.5]),
    ],
)
def test_ticks_are_round_and_span_the_values(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_a_series_is_a_line_through_its_points_with_bad_frames_crossed_and_the_limit_dashed():
    points = [Point(T0 + 600 * i, 1.1 + 0.01 * i, f"L{i}: {1.1 + 0.01 * i}", "ok", f"/frame/{i}") for i in range(5)] + [
        Point(T0 + 3000, 2.8, "L5: trailed", "bad", "/frame/5")
    ]
    svg = parse(series_chart(points, title="elongation", unit="a/b", tz=BERLIN, limit=1.6))
    assert svg.get("viewBox").startswith("0 0 ")
    assert len(svg.findall(f".//{SVG}polyline")) == 1
    assert len(svg.findall(f".//{SVG}polyline")[0].get("points").split()) == 6
    assert len(svg.findall(f".//{SVG}circle")) == 5
    crosses = [p for p in svg.iter(f"{SVG}path") if "pt-bad" in p.get("class")]
    assert len(crosses) == 1
    assert [line for line in svg.iter(f"{SVG}line") if line.get("class") == "limit"]
    titles = [t.text for t in svg.iter(f"{SVG}title")]
    assert "L5: trailed" in titles
    links = [a.get("href") for a in svg.iter(f"{SVG}a")]
    assert links == [f"/frame/{i}" for i in range(6)]
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert "20:00" in ticks and "20:30" in ticks  # local time of the site
    assert "elongation (a/b)" in [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "title"]


def test_points_above_and_below_stay_inside_the_figure():
    points = [Point(T0, -10.4, "a"), Point(T0 + 60, -9.1, "b")]
    svg = parse(series_chart(points, title="CCD-TEMP", unit="°C", tz=BERLIN))
    height = float(svg.get("viewBox").split()[3])
    for circle in svg.iter(f"{SVG}circle"):
        assert 0 < float(circle.get("cy")) < height and 0 < float(circle.get("cx")) < 360


def test_labels_are_escaped():
    svg = series_chart([Point(T0, 1.0, "<script>alert(1)</script>")], title="<b>", unit="", tz=BERLIN)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    parse(svg)


def test_no_points_gives_an_empty_figure_not_an_error():
    assert "no data" in series_chart([], title="FWHM", unit="px", tz=BERLIN)
    assert "no frames" in timeline_chart({}, title="frames", tz=BERLIN)


def test_a_timeline_has_one_lane_per_kind_and_marks_each_frame_by_state():
    lanes = {
        "bias": [Point(T0 - 3600, 0, "b1"), Point(T0 - 3500, 0, "b2")],
        "M42 L": [Point(T0, 0, "l1", "ok"), Point(T0 + 300, 0, "l2", "bad"), Point(T0 + 600, 0, "l3", "wait")],
    }
    svg = parse(timeline_chart(lanes, title="frames", tz=BERLIN))
    names = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "lane"]
    assert names == ["bias", "M42 L"]
    kinds = sorted(el.get("class") for el in svg.iter() if (el.get("class") or "").startswith("pt "))
    assert kinds == ["pt pt-bad", "pt pt-ok", "pt pt-ok", "pt pt-ok", "pt pt-wait"]
