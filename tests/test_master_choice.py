"""Choosing the masters for one light (observd.core.master_choice.select_masters): setup, time,
temperature, exposure, filter, age, the [calibrate] policy, and what an observer is told."""

import pytest

from observd.core.config import CalibrateConfig, MastersConfig
from observd.core.master_choice import select_masters

BASE = {
    "current": 1,
    "instrument": "Cam",
    "naxis1": 100,
    "naxis2": 80,
    "xbin": 1,
    "ybin": 1,
    "gain_setting": None,
    "offset": None,
    "readout_mode": None,
    "date_obs": "2026-11-20T22:00:00+00:00",
    "filter": None,
    "includes_bias": 0,
}
LIGHT = dict(BASE, exptime=120.0, ccd_temp=-10.0, filter="L", version=1)
MC, CC = MastersConfig(), CalibrateConfig()


def master(id_, kind, **fields):
    defaults = {
        "bias": dict(exptime=0.0, ccd_temp_mean=-10.0),
        "dark": dict(exptime=60.0, ccd_temp_mean=-10.0),
        "flat": dict(exptime=1.0, ccd_temp_mean=-10.0, filter="L"),
    }[kind]
    return dict(BASE, id=id_, type=kind, **{**defaults, **fields})


# -- moved from test_lights.py --------------------------------------------------------------------


def test_select_prefers_exact_dark_then_scales_and_explains_what_is_missing():
    base = {
        "current": 1,
        "instrument": "Cam",
        "naxis1": 100,
        "naxis2": 80,
        "xbin": 1,
        "ybin": 1,
        "gain_setting": None,
        "offset": None,
        "readout_mode": None,
        "date_obs": "2026-11-20T22:00:00+00:00",
        "filter": None,
        "includes_bias": 0,
    }
    light = dict(base, exptime=120.0, ccd_temp=-10.0, filter="L", version=1)
    bias = dict(base, id=1, type="bias", exptime=0.0, ccd_temp_mean=-10.0)
    dark60 = dict(base, id=2, type="dark", exptime=60.0, ccd_temp_mean=-10.1)
    dark120 = dict(base, id=3, type="dark", exptime=120.0, ccd_temp_mean=-10.2, includes_bias=1)
    warm = dict(base, id=4, type="dark", exptime=120.0, ccd_temp_mean=-7.0)
    flat = dict(base, id=5, type="flat", filter="L", exptime=1.0, ccd_temp_mean=-10.0)
    mc, cc = MastersConfig(), CalibrateConfig()
    s = select_masters(light, [bias, dark60, dark120, flat], mc, cc)
    assert s.dark["id"] == 3 and s.bias is None and s.dark_scale == 1.0 and s.missing is None
    s = select_masters(light, [bias, dark60, flat], mc, cc)
    assert s.dark["id"] == 2 and s.bias["id"] == 1 and s.dark_scale == 2.0
    s = select_masters(light, [bias, warm], mc, cc)
    assert s.missing == "no dark within 0.5 °C of -10.0 °C; no flat for filter L, 100x80, binning 1x1 yet"
    s = select_masters(light, [bias, warm, flat], mc, CalibrateConfig(dark_fallback=True))
    assert s.dark["id"] == 4 and s.missing is None and "WARNING" in s.notes[0]
    s = select_masters(light, [dark60, flat], mc, cc)
    assert "no bias" in s.missing
    old = dict(flat, date_obs="2026-09-01T22:00:00+00:00")
    assert "no flat" in select_masters(light, [bias, dark60, old], mc, cc).missing  # older than 30 days
    other = dict(flat, naxis1=200)
    assert "no flat" in select_masters(light, [bias, dark60, other], mc, cc).missing  # another shape
    none = select_masters(light, [], mc, CalibrateConfig(require=()))
    assert none.missing is None and len(none.notes) == 3


# -- darks ----------------------------------------------------------------------------------------


def test_an_exact_exposure_dark_is_preferred_to_a_scaled_one_even_when_slightly_warmer():
    exact = master(2, "dark", exptime=120.0, ccd_temp_mean=-10.4)
    scaled = master(3, "dark", exptime=300.0, ccd_temp_mean=-10.0)
    s = select_masters(LIGHT, [master(1, "bias"), scaled, exact, master(4, "flat")], MC, CC)
    assert s.dark["id"] == 2 and s.dark_scale == 1.0
    assert s.bias["id"] == 1  # a bias-subtracted exact dark still needs the bias
    assert s.missing is None and s.notes == ()


@pytest.mark.parametrize("light_exp, dark_exp", [(300.0, 120.0), (45.0, 180.0), (0.5, 60.0)])
def test_the_scale_factor_is_light_exposure_over_dark_exposure(light_exp, dark_exp):
    light = dict(LIGHT, exptime=light_exp)
    s = select_masters(light, [master(1, "bias"), master(2, "dark", exptime=dark_exp), master(3, "flat")], MC, CC)
    assert s.dark["id"] == 2 and s.dark_scale == pytest.approx(light_exp / dark_exp)


def test_the_longest_dark_within_tolerance_is_the_one_scaled():
    darks = [master(2, "dark", exptime=30.0), master(3, "dark", exptime=600.0), master(4, "dark", exptime=60.0)]
    s = select_masters(LIGHT, [master(1, "bias"), *darks, master(5, "flat")], MC, CC)
    assert s.dark["id"] == 3 and s.dark_scale == pytest.approx(120.0 / 600.0)


def test_a_dark_that_includes_the_bias_is_never_scaled():
    with_bias = master(2, "dark", exptime=60.0, includes_bias=1)
    s = select_masters(LIGHT, [master(1, "bias"), with_bias, master(3, "flat")], MC, CC)
    assert s.dark is None and s.missing.startswith("no dark within 0.5 °C of -10.0 °C")


def test_a_dark_outside_the_temperature_tolerance_is_not_used_and_the_reason_names_the_temperature():
    light = dict(LIGHT, ccd_temp=-15.0)
    warm = master(2, "dark", exptime=120.0, ccd_temp_mean=-14.4)  # 0.6 °C away
    s = select_masters(light, [master(1, "bias"), warm, master(3, "flat")], MC, CC)
    assert s.dark is None
    assert s.missing == "no dark within 0.5 °C of -15.0 °C"
    edge = master(4, "dark", exptime=120.0, ccd_temp_mean=-14.5)  # exactly at the tolerance
    assert select_masters(light, [master(1, "bias"), edge, master(3, "flat")], MC, CC).dark["id"] == 4


def test_the_tolerance_comes_from_the_configuration():
    light = dict(LIGHT, ccd_temp=-15.0)
    dark = master(2, "dark", exptime=120.0, ccd_temp_mean=-12.5)
    masters = [master(1, "bias"), dark, master(3, "flat")]
    assert select_masters(light, masters, MC, CC).missing == "no dark within 0.5 °C of -15.0 °C"
    s = select_masters(light, masters, MastersConfig(temp_tolerance=3.0), CC)
    assert s.dark["id"] == 2 and s.missing is None
    assert (
        select_masters(light, masters, MastersConfig(temp_tolerance=2.0), CC).missing
        == "no dark within 2 °C of -15.0 °C"
    )


def test_the_nearest_in_temperature_wins_among_exact_darks():
    darks = [
        master(2, "dark", exptime=120.0, ccd_temp_mean=-10.4),
        master(3, "dark", exptime=120.0, ccd_temp_mean=-9.9),
        master(4, "dark", exptime=120.0, ccd_temp_mean=-10.3),
    ]
    assert select_masters(LIGHT, [master(1, "bias"), *darks, master(5, "flat")], MC, CC).dark["id"] == 3


def test_dark_scaling_exact_waits_for_an_exact_dark_and_scale_never_uses_one_that_includes_bias():
    masters = [master(1, "bias"), master(2, "dark", exptime=60.0), master(3, "flat")]
    s = select_masters(LIGHT, masters, MC, CalibrateConfig(dark_scaling="exact"))
    assert s.dark is None and "no dark" in s.missing
    exact_with_bias = master(4, "dark", exptime=120.0, includes_bias=1)
    s = select_masters(LIGHT, masters + [exact_with_bias], MC, CalibrateConfig(dark_scaling="scale"))
    assert s.dark["id"] == 2 and s.dark_scale == pytest.approx(2.0) and s.bias["id"] == 1


def test_dark_fallback_takes_the_nearest_out_of_tolerance_dark_and_says_how_far():
    light = dict(LIGHT, ccd_temp=-15.0)
    darks = [
        master(2, "dark", exptime=120.0, ccd_temp_mean=-5.0),
        master(3, "dark", exptime=120.0, ccd_temp_mean=-12.0),
    ]
    s = select_masters(light, [master(1, "bias"), *darks, master(4, "flat")], MC, CalibrateConfig(dark_fallback=True))
    assert s.dark["id"] == 3 and s.missing is None
    assert "3.0 °C away" in s.notes[0] and "dark_fallback" in s.notes[0]


# -- bias and flat --------------------------------------------------------------------------------


def test_bias_and_flat_nearest_in_time_are_chosen():
    masters = [
        master(1, "bias", date_obs="2026-11-18T12:00:00+00:00"),
        master(2, "bias", date_obs="2026-11-21T06:00:00+00:00"),
        master(3, "dark"),
        master(4, "flat", date_obs="2026-11-21T07:00:00+00:00"),
        master(5, "flat", date_obs="2026-11-20T17:00:00+00:00"),
    ]
    s = select_masters(LIGHT, masters, MC, CC)
    assert s.bias["id"] == 2 and s.flat["id"] == 5


def test_a_flat_of_another_filter_is_never_chosen():
    red = master(2, "flat", filter="R", date_obs=LIGHT["date_obs"])  # nearer in time, wrong filter
    lum = master(3, "flat", filter="L", date_obs="2026-11-25T06:00:00+00:00")
    masters = [master(1, "bias"), master(4, "dark")]
    assert select_masters(LIGHT, masters + [red, lum], MC, CC).flat["id"] == 3
    s = select_masters(LIGHT, masters + [red], MC, CC)
    assert s.flat is None and s.missing == "no flat for filter L, 100x80, binning 1x1 yet"
    unfiltered = dict(LIGHT, filter=None)
    nofilter = master(5, "flat", filter=None)
    assert select_masters(unfiltered, masters + [red, nofilter], MC, CC).flat["id"] == 5
    assert "no flat for filter (none)" in select_masters(unfiltered, masters + [red], MC, CC).missing


def test_masters_older_than_max_age_days_are_ignored_on_either_side_of_the_light():
    mc = MastersConfig(max_age_days=1)
    before = master(1, "bias", date_obs="2026-11-19T16:00:00+00:00")  # 30 h before
    after = master(2, "bias", date_obs="2026-11-22T00:00:00+00:00")  # 26 h after
    near = master(3, "bias", date_obs="2026-11-21T18:00:00+00:00")  # 20 h after
    rest = [master(4, "dark"), master(5, "flat")]
    assert "no bias for 100x80, binning 1x1 yet" in select_masters(LIGHT, [before, after] + rest, mc, CC).missing
    assert select_masters(LIGHT, [before, after, near] + rest, mc, CC).bias["id"] == 3
    assert select_masters(LIGHT, [before, after] + rest, MC, CC).bias["id"] == 2  # the default 30 days


def test_superseded_masters_and_other_setups_are_not_used():
    rest = [master(4, "dark"), master(5, "flat")]
    assert select_masters(LIGHT, [master(1, "bias", current=0)] + rest, MC, CC).bias is None
    for field, value in (
        ("instrument", "OtherCam"),
        ("xbin", 2),
        ("naxis2", 40),
        ("gain_setting", 120.0),
        ("readout_mode", "HighSpeed"),
    ):
        assert select_masters(LIGHT, [master(1, "bias", **{field: value})] + rest, MC, CC).bias is None, field


def test_ignore_keys_lets_a_master_of_another_instrument_name_serve():
    renamed = [
        master(1, "bias", instrument="Cam Pro"),
        master(2, "dark", instrument="Cam Pro"),
        master(3, "flat", instrument="Cam Pro"),
    ]
    assert select_masters(LIGHT, renamed, MC, CC).missing is not None
    s = select_masters(LIGHT, renamed, MastersConfig(ignore_keys=("instrument",)), CC)
    assert (s.bias["id"], s.dark["id"], s.flat["id"], s.missing) == (1, 2, 3, None)


# -- the [calibrate] require policy -----------------------------------------------------------------


def test_require_nothing_gives_notes_instead_of_waiting():
    s = select_masters(LIGHT, [master(1, "bias")], MC, CalibrateConfig(require=()))
    assert s.missing is None and s.bias["id"] == 1 and s.dark is None and s.flat is None
    assert len(s.notes) == 2
    assert any("no dark" in n for n in s.notes) and any("not flat-fielded" in n for n in s.notes)


def test_require_flat_only_waits_for_the_flat_alone():
    cc = CalibrateConfig(require=("flat",))
    s = select_masters(LIGHT, [master(3, "flat")], MC, cc)
    assert s.missing is None and s.flat["id"] == 3
    assert any("no bias" in n for n in s.notes) and any("no dark" in n for n in s.notes)
    s = select_masters(LIGHT, [master(1, "bias"), master(2, "dark")], MC, cc)
    assert s.missing == "no flat for filter L, 100x80, binning 1x1 yet"


def test_everything_missing_is_named_once():
    s = select_masters(LIGHT, [], MC, CC)
    assert sorted(s.missing.split("; ")) == [
        "no bias for 100x80, binning 1x1 yet",
        "no dark within 0.5 °C of -10.0 °C",
        "no flat for filter L, 100x80, binning 1x1 yet",
    ]
    assert s.notes == ()
    s = select_masters(LIGHT, [master(2, "dark"), master(3, "flat")], MC, CC)
    assert s.missing.count("no bias") == 1 and "the dark 60 s is bias-subtracted" in s.missing


# -- colour cameras --------------------------------------------------------------------------------


def test_a_colour_master_never_serves_a_mono_light_nor_another_bayer_phase_whatever_ignore_keys_says():
    everything = MastersConfig(ignore_keys=("instrument", "shape", "binning", "gain_setting", "offset", "readout_mode"))
    colour = [master(1, "bias", bayer="RGGB"), master(2, "dark", bayer="RGGB"), master(3, "flat", bayer="RGGB")]
    for light in (LIGHT, dict(LIGHT, bayer="GRBG")):
        s = select_masters(light, colour, everything, CC)
        assert (s.bias, s.dark, s.flat) == (None, None, None) and s.missing
    s = select_masters(dict(LIGHT, bayer="RGGB"), colour, MC, CC)
    assert (s.bias["id"], s.dark["id"], s.flat["id"], s.missing) == (1, 2, 3, None)
    mono = [master(4, "bias"), master(5, "dark"), master(6, "flat")]
    assert select_masters(dict(LIGHT, bayer="RGGB"), mono, everything, CC).flat is None


def test_require_by_instrument_lets_a_smart_telescope_through_and_keeps_the_rule_for_the_others():
    cc = CalibrateConfig(require_by_instrument={"Seestar S50": ()})
    s = select_masters(dict(LIGHT, instrument="Seestar S50"), [], MC, cc)
    assert s.missing is None and any("require_by_instrument" in n for n in s.notes)
    assert select_masters(LIGHT, [], MC, cc).missing is not None
