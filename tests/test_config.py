"""Configuration: defaults, strict validation with useful messages, the documented example."""

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from observd.adapters.config_file import load_config
from observd.cli.main import main
from observd.core.config import Config, ConfigError, config_from_dict, to_toml

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "observd.toml"


def test_missing_and_empty_files_give_defaults(tmp_path):
    assert load_config(None) == Config()
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    config = load_config(empty)
    assert config.masters.min_bias == 7 and config.masters.temp_tolerance == 0.5
    assert config.paths.database == tmp_path / "observd-output" / "observd.db"  # relative to the file


@pytest.mark.parametrize(
    "text, words",
    [
        ("[masters]\nmin_bias = 'seven'\n", ["[masters] min_bias", "'seven'", "an integer"]),
        ("[masters]\nbogus = 1\n", ["unknown key [masters] bogus", "known keys"]),
        ("[nonsense]\nx = 1\n", ["unknown section [nonsense]"]),
        ("[site]\ntimezone = 'Mars/Olympus'\n", ["[site] timezone", "'Mars/Olympus'", "IANA"]),
        ("[stack]\nat = '25:99'\n", ["[stack] at", "HH:MM"]),
        ("[masters]\nrejection = 'magic'\n", ["[masters] rejection", "sigclip"]),
        ("[stack]\nweighting = 'fwhm'\n", ["[stack] weighting", "'fwhm'", "noise_fwhm"]),
        ("[calibrate]\nrequire = ['bias', 'sky']\n", ["require", "'sky'"]),
        ("[classify.values]\n'Science' = 'galaxy'\n", ["[classify.values]", "'galaxy'"]),
        ("[watch]\npolling = 'yes'\n", ["[watch] polling", "true or false"]),
        ("[masters\n", ["not valid TOML"]),
    ],
)
def test_errors_name_file_key_value_and_expectation(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_types_are_converted():
    config = config_from_dict(
        {"classify": {"keywords": ["MYTYPE"], "values": {"Sci": "light"}}, "masters": {"temp_tolerance": 1}}
    )
    assert config.classify.keywords == ("MYTYPE",)
    assert isinstance(config.masters.temp_tolerance, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.masters.min_bias = 3


def test_example_documents_every_key_with_its_default():
    raw = tomllib.loads(EXAMPLE.read_text())
    defaults = Config()
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        for field in dataclasses.fields(getattr(defaults, section.name)):
            value = getattr(getattr(defaults, section.name), field.name)
            text = EXAMPLE.read_text()
            assert field.name in text, f"[{section.name}] {field.name} is not documented"
            if value is not None and not isinstance(value, dict) and section.name != "paths":
                got = raw[section.name][field.name]
                assert (tuple(got) if isinstance(got, list) else got) == value, (section.name, field.name)
    # and every key line carries a comment saying what it does
    for line in EXAMPLE.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            assert "#" in line, f"undocumented: {line}"


def test_printed_configuration_round_trips(tmp_path):
    config = config_from_dict({"site": {"timezone": "Europe/Berlin"}, "classify": {"values": {"Sci": "light"}}})
    path = tmp_path / "printed.toml"
    path.write_text(to_toml(config))
    again = load_config(path)
    assert again.site == config.site and again.classify == config.classify and again.masters == config.masters


def test_config_command_exit_codes(tmp_path, capsys):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[site]\ntimezone = 'Europe/Berlin'\n")
    bad.write_text("[site]\ntimezone = 3\n")
    assert main(["config", "--check", "-c", str(good)]) == 0
    assert main(["config", "--check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "[site] timezone = 3" in err and "Traceback" not in err
    assert main(["config", "-c", str(good)]) == 0
    assert 'timezone = "Europe/Berlin"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("classify", {"bayer": {"ASI120MC": "RGBG"}}, "expected one of RGGB, GRBG, GBRG, BGGR"),
        ("calibrate", {"require_by_instrument": {"Seestar S50": ["flats"]}}, "expected bias, dark or flat"),
        ("calibrate", {"debayer": "vng"}, "expected one of malvar2004"),
        ("colour", {"palette": "SHX"}, "three letters of S, H, O"),
        ("colour", {"white_balance": "camera"}, "camera_gains = [red, green, blue]"),
        ("colour", {"camera_gains": [1.0, True, 2.0]}, "a list of numbers"),
    ],
)
def test_colour_settings_are_checked_with_a_message_that_names_them(section, values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({section: values}, source="t.toml")


def test_require_by_instrument_names_its_own_masters():
    config = config_from_dict({"calibrate": {"require_by_instrument": {"Seestar S50": []}}})
    assert (
        config.calibrate.required("Seestar S50") == ()
        and config.calibrate.required("Other") == config.calibrate.require
    )
