"""Which master groups are ready (observd.core.master_plan): CCD-TEMP eligibility with reasons,
the minimum number of frames, the settle time, 'up to date', and the status report's groups."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from observd.core.config import Config, MastersConfig
from observd.core.master_plan import DATA_EXCLUSION_PREFIX, calibration_groups, plan_group, plan_masters

NOW = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)
KEY = "dark|Cam|100x80|bin1x1|-|-|-|60s|T-10.0C"


def config(**masters) -> Config:
    return replace(Config(), masters=MastersConfig(**masters))


def frame(
    id_, ccd_temp=-10.0, set_temp=-10.0, *, age=600.0, state="classified", reason=None, frame_type="dark", group_key=KEY
) -> dict:
    """A catalog row that arrived `age` seconds before NOW."""
    return {
        "id": id_,
        "frame_type": frame_type,
        "group_key": group_key,
        "state": state,
        "reason": reason,
        "ccd_temp": ccd_temp,
        "set_temp": set_temp,
        "first_seen": (NOW - timedelta(seconds=age)).isoformat(timespec="seconds"),
    }


def plan(rows, current=None, cfg=None, *, final=False, kind="dark", now=NOW):
    return plan_group(kind, KEY, rows, current, cfg or config(), now=now.timestamp(), final=final)


# -- eligibility ----------------------------------------------------------------------------------


def test_a_frame_outside_the_tolerance_is_excluded_with_a_reason_naming_the_set_point():
    rows = [frame(i) for i in range(1, 6)] + [frame(6, ccd_temp=-8.0)]
    p = plan(rows)
    assert [r["id"] for r in p.eligible] == [1, 2, 3, 4, 5]
    assert set(p.excluded) == {6}
    assert "CCD-TEMP -8.00 °C is 2.00 °C from the set point -10.00 °C (tolerance 0.5 °C)" == p.excluded[6]
    assert p.ready


def test_the_tolerance_bound_is_inclusive_and_configurable():
    rows = [frame(1, ccd_temp=-9.5), frame(2, ccd_temp=-10.5), frame(3, ccd_temp=-9.4), frame(4, ccd_temp=-11.2)]
    assert set(plan(rows).excluded) == {3, 4}
    assert plan(rows, cfg=config(temp_tolerance=1.5)).excluded == {}
    assert "(tolerance 1.5 °C)" in plan(rows + [frame(5, ccd_temp=-12.0)], cfg=config(temp_tolerance=1.5)).excluded[5]


def test_without_a_set_point_the_group_median_is_the_reference():
    temps = [-10.0, -10.1, -9.9, -10.0, -12.0]
    rows = [frame(i, ccd_temp=t, set_temp=None) for i, t in enumerate(temps, 1)]
    p = plan(rows)
    assert set(p.excluded) == {5}
    assert "from the group median -10.00 °C" in p.excluded[5] and "set point" not in p.excluded[5]


def test_a_frame_without_ccd_temp_is_excluded_when_the_group_has_a_temperature():
    p = plan([frame(1), frame(2, ccd_temp=None)])
    assert list(p.excluded) == [2] and "no CCD-TEMP" in p.excluded[2]


def test_a_group_without_any_temperature_keeps_every_frame():
    rows = [frame(i, ccd_temp=None, set_temp=None) for i in range(1, 6)]
    p = plan(rows)
    assert len(p.eligible) == 5 and p.excluded == {} and p.ready


def test_pixel_exclusions_are_final_but_temperature_exclusions_are_reconsidered():
    rows = [frame(i) for i in range(1, 5)]
    pixels = frame(5, state="excluded", reason=DATA_EXCLUSION_PREFIX + "12.5% of pixels at full scale")
    header = frame(6, ccd_temp=-10.8, state="excluded", reason="CCD-TEMP -10.80 °C is 0.80 °C from the set point")
    p = plan(rows + [pixels, header], cfg=config(temp_tolerance=1.0))
    assert [r["id"] for r in p.eligible] == [1, 2, 3, 4, 6]
    assert 5 not in p.excluded and p.ready


# -- readiness ------------------------------------------------------------------------------------


def test_too_few_eligible_frames_wait_and_say_how_many_are_needed():
    rows = [frame(i) for i in range(1, 5)] + [frame(5, ccd_temp=-7.0)]  # 5 frames, 4 eligible
    p = plan(rows, final=True)
    assert not p.ready and p.message == "4 eligible frame(s), needs 5"
    assert plan(rows, cfg=config(min_dark=4)).ready
    bias_rows = [frame(i, frame_type="bias") for i in range(1, 7)]
    assert plan(bias_rows, kind="bias").message == "6 eligible frame(s), needs 7"
    assert plan(bias_rows, kind="bias", cfg=config(min_bias=6)).ready
    assert plan([frame(i, frame_type="flat") for i in range(1, 4)], kind="flat", cfg=config(min_flat=3)).ready


def test_a_group_is_not_ready_before_the_settle_time_unless_final():
    rows = [frame(i, age=600.0) for i in range(1, 5)] + [frame(5, age=30.0)]  # the newest came 30 s ago
    p = plan(rows)
    assert not p.ready and "waiting 90 s for the set to settle" in p.message
    assert plan(rows, final=True).ready  # the end of a batch does not wait
    assert plan(rows, now=NOW + timedelta(seconds=91)).ready
    assert plan(rows, cfg=config(settle_seconds=20.0)).ready


def test_a_group_whose_master_has_all_the_eligible_frames_is_up_to_date():
    rows = [frame(i) for i in range(1, 6)]
    for final in (False, True):
        p = plan(rows, current={1, 2, 3, 4, 5}, final=final)
        assert not p.ready and p.message == "master up to date"
    assert plan(rows, current={1, 2, 3, 4, 5, 9}).message == "master up to date"  # a frame since re-excluded
    p = plan(rows + [frame(6)], current={1, 2, 3, 4, 5})  # a new frame: a new version
    assert p.ready and len(p.eligible) == 6


def test_a_newly_excluded_frame_does_not_trigger_a_new_version():
    rows = [frame(i) for i in range(1, 6)] + [frame(6, ccd_temp=-5.0, age=1.0)]
    p = plan(rows, current={1, 2, 3, 4, 5})
    assert p.message == "master up to date" and 6 in p.excluded


# -- plan_masters ---------------------------------------------------------------------------------


def test_plan_masters_groups_by_type_and_key_and_skips_what_is_not_a_candidate():
    bias_key, flat_key = "bias|Cam|100x80", "flat|Cam|100x80|L"
    frames = (
        [frame(i, frame_type="bias", group_key=bias_key) for i in range(1, 8)]
        + [frame(i, frame_type="flat", group_key=flat_key) for i in range(10, 13)]
        + [
            frame(20, frame_type="bias", group_key=bias_key, state="pending"),
            frame(21, frame_type="bias", group_key=bias_key, state="rejected"),
            frame(22, frame_type="bias", group_key=bias_key, state="superseded"),
            frame(23, frame_type="bias", group_key=None),
            frame(24, frame_type="light", group_key="light|x"),
            frame(25, frame_type="bias", group_key=bias_key, state="combined"),
            frame(26, frame_type="bias", group_key=bias_key, state="excluded", reason="CCD-TEMP ..."),
        ]
    )
    plans = plan_masters(frames, [], {}, config(), now=NOW.timestamp(), final=False)
    assert [(p.kind, p.group_key) for p in plans] == [("bias", bias_key), ("flat", flat_key)]
    bias, flat = plans
    assert sorted(r["id"] for r in bias.eligible) == [1, 2, 3, 4, 5, 6, 7, 25, 26] and bias.ready
    assert not flat.ready and flat.message == "3 eligible frame(s), needs 5"
    only_flats = plan_masters(frames, [], {}, config(), now=NOW.timestamp(), final=False, kinds=("flat",))
    assert [p.kind for p in only_flats] == ["flat"]


def test_plan_masters_compares_with_the_current_master_of_the_group_and_force_rebuilds():
    key = "bias|Cam|100x80"
    frames = [frame(i, frame_type="bias", group_key=key) for i in range(1, 8)]
    masters = [{"id": 1, "group_key": key, "current": 0}, {"id": 2, "group_key": key, "current": 1}]
    inputs = {1: {1, 2, 3, 4, 5, 6, 7}, 2: {1, 2, 3, 4, 5}}
    (p,) = plan_masters(frames, masters, inputs, config(), now=NOW.timestamp(), final=False)
    assert p.ready  # the current master (v2) lacks frames 6 and 7
    masters[1]["id"], inputs[3] = 3, set(range(1, 8))
    (p,) = plan_masters(frames, masters, inputs, config(), now=NOW.timestamp(), final=False)
    assert p.message == "master up to date" and not p.ready
    (p,) = plan_masters(frames, masters, inputs, config(), now=NOW.timestamp(), final=False, force=True)
    assert p.ready


# -- calibration_groups: what the status report lists -------------------------------------------------


def test_calibration_groups_lists_only_groups_without_a_current_master_and_why():
    frames = (
        [frame(i, frame_type="bias", group_key="bias|A") for i in range(1, 4)]
        + [frame(i, frame_type="dark", group_key="dark|A") for i in range(10, 16)]
        + [frame(i, frame_type="flat", group_key="flat|A", ccd_temp=-7.0) for i in range(20, 25)]
    )
    masters = [{"id": 1, "group_key": "dark|A", "current": 1}]
    groups = calibration_groups(frames, masters, {1: set(range(10, 16))}, config(), now=NOW.timestamp())
    assert groups == [
        {"type": "bias", "group": "bias|A", "eligible": 3, "needed": 7, "message": "3 eligible frame(s), needs 7"},
        {"type": "flat", "group": "flat|A", "eligible": 0, "needed": 5, "message": "0 eligible frame(s), needs 5"},
    ]  # every flat out of tolerance
    settling = [frame(i, frame_type="bias", group_key="bias|A", age=10.0) for i in range(1, 8)]
    (group,) = calibration_groups(settling, [], {}, config(), now=NOW.timestamp())
    assert (group["eligible"], group["needed"]) == (7, 7) and "waiting 110 s" in group["message"]


@pytest.mark.parametrize("kind", ["bias", "dark", "flat"])
def test_min_frames_per_type_come_from_the_configuration(kind):
    rows = [frame(i, frame_type=kind) for i in range(1, 4)]
    cfg = config(**{f"min_{kind}": 3})
    assert plan(rows, cfg=cfg, kind=kind).ready
    assert not plan(rows, cfg=config(**{f"min_{kind}": 4}), kind=kind).ready
