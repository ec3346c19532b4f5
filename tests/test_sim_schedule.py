"""The plan of a simulated night: pure, in acquisition order, on the local clock, lights that flip."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np

from observd.sim.schedule import plan_night
from observd.sim.spec import SimSpec, TargetSpec


def test_plan_is_pure_ordered_and_complete():
    spec = SimSpec(
        dark_temps=(-10.0, -20.0),
        dark_exptimes=(30.0, 60.0),
        targets=(TargetSpec("M42", ("L", "R"), 3, 60.0), TargetSpec("M31", ("L",), 4, 120.0)),
    )
    plan = plan_night(spec)
    assert plan == plan_night(spec)
    times = [f.date_obs for f in plan]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert len({f.name for f in plan}) == len(plan)
    kinds = [f.frame_type for f in plan]
    assert kinds.count("bias") == 9
    assert kinds.count("dark") == 7 * 2 * 2
    assert kinds.count("flat") == 7 * 2  # one set per filter used (L, R)
    assert kinds.count("light") == 3 * 2 + 4
    # dawn flats come last, after every light
    assert kinds[-14:] == ["flat"] * 14
    assert {(f.exptime, f.set_temp) for f in plan if f.frame_type == "dark"} == {
        (30.0, -10.0),
        (60.0, -10.0),
        (30.0, -20.0),
        (60.0, -20.0),
    }
    for f in plan:  # the sensor sits within 0.1 degC of its set point
        assert abs(f.ccd_temp - f.set_temp) <= 0.1


def test_night_times_follow_local_clock_across_a_dst_change():
    # Berlin leaves summer time at 03:00 on 2026-10-25: evening is UTC+2, dawn UTC+1.
    spec = SimSpec(night="2026-10-24", flats_at="dawn")
    tz = ZoneInfo("Europe/Berlin")
    plan = plan_night(spec)
    assert all(f.date_obs.tzinfo is not None and f.date_obs.utcoffset() == timedelta(0) for f in plan)
    local = {f.frame_type: [] for f in plan}
    for f in plan:
        local[f.frame_type].append(f.date_obs.astimezone(tz))
    assert local["light"][0].date().isoformat() == "2026-10-24" and 20 <= local["light"][0].hour <= 21
    assert local["bias"][0].hour == 18
    dawn = local["flat"][0]
    assert dawn.date().isoformat() == "2026-10-25" and (dawn.hour, dawn.minute // 10) == (6, 3)
    assert dawn.utcoffset() == timedelta(hours=1) and local["light"][0].utcoffset() == timedelta(hours=2)

    dusk = plan_night(SimSpec(flats_at="dusk"))
    assert dusk[0].frame_type == "flat" and dusk[-1].frame_type == "light"
    assert dusk[0].date_obs.astimezone(tz).hour == 18


def test_meridian_flip_rotates_the_second_half_by_180_degrees():
    spec = SimSpec(targets=(TargetSpec(n_lights=8),), field_rotation=0.05)
    lights = [f for f in plan_night(spec) if f.frame_type == "light"]
    flipped = [f.light.flipped for f in lights]
    assert flipped == [False] * 4 + [True] * 4
    for f in lights:
        m = np.array(f.light.matrix)
        angle = np.degrees(np.arctan2(m[1, 0], m[0, 0])) % 360
        assert np.isclose(np.linalg.det(m[:2, :2]), 1.0)  # rotation, no mirror/scale
        expected = 180.0 if f.light.flipped else 0.0
        assert abs((angle - expected + 180) % 360 - 180) < 1.0
        centre = np.array([255.5, 255.5, 1.0])  # the flip is about the frame centre
        assert np.hypot(*(m @ centre - centre)[:2]) < 25
    assert not any(f.light.flipped for f in plan_night(SimSpec(meridian_flip=False)) if f.frame_type == "light")
