"""The command line: every command documented in the README, one-line errors, exit codes."""

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from observd.cli.main import build_parser, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)


def test_every_command_is_documented_in_the_readme():
    for name in _commands():
        assert f"`observd {name}" in README, f"observd {name} is not in README.md's command table"


def test_readme_starts_with_the_two_commands():
    block = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2 and block[0].endswith("observd demo") and "pytest" in block[1]


@pytest.mark.parametrize("name", _commands())
def test_help_works_for_every_command(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0 and "usage: observd" in capsys.readouterr().out


def test_status_without_a_catalog_is_a_one_line_usage_error(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f"[paths]\ndatabase = '{tmp_path / 'none.db'}'\n")
    assert main(["status", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no catalog" in err


def test_status_json_is_the_documented_document(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f"[paths]\noutput = '{tmp_path / 'out'}'\ndatabase = '{tmp_path / 'out' / 'c.db'}'\n")
    import numpy as np
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.zeros((16, 16), np.uint16))
    hdu.header.update(IMAGETYP="BIAS", EXPTIME=0.0, **{"DATE-OBS": "2026-11-20T22:00:00"})
    hdu.writeto(tmp_path / "in" / "b1.fits")
    assert main(["ingest", str(tmp_path / "in"), "-c", str(config)]) == 0
    capsys.readouterr()
    assert main(["status", "--json", "-c", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "generated",
        "night",
        "status_log",
        "nights",
        "masters",
        "calibration_groups",
        "waiting",
        "failures",
        "bad",
        "products",
        "quality",
    ):
        assert key in report
    assert report["night"] == "2026-11-20"
    assert report["nights"][0]["counts"] == {"bias": {"classified": 1}}
    assert report["calibration_groups"][0]["needed"] == 7


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "observd", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("observd ")


def test_ingest_with_stack_builds_the_batch_nights_products(tmp_path, capsys):
    from observd.adapters.catalog import Catalog
    from observd.sim.spec import SimSpec, TargetSpec
    from observd.sim.writer import write_night

    write_night(
        tmp_path / "night",
        SimSpec(
            shape=(128, 128),
            seed=8,
            n_bias=7,
            n_dark=5,
            n_flat=5,
            n_clouded=0,
            n_trailed=0,
            targets=(TargetSpec(n_lights=4, n_stars=80),),
        ),
    )
    config = tmp_path / "c.toml"
    config.write_text(
        f"[paths]\noutput = '{tmp_path / 'out'}'\ndatabase = '{tmp_path / 'out' / 'c.db'}'\n"
        "[site]\ntimezone = 'Europe/Berlin'\n"
    )
    assert main(["ingest", str(tmp_path / "night"), "--stack", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    catalog = Catalog.open(tmp_path / "out" / "c.db", readonly=True)
    try:
        products = catalog.products()
        nights = {r["night"] for r in catalog.files(types=("light",))}
    finally:
        catalog.close()
    assert len(products) == 1 and products[0]["n_combined"] == 4 and {products[0]["night"]} == nights
    assert Path(products[0]["path"]).exists() and products[0]["path"] in out


def test_a_batch_command_loads_no_more_than_it_needs():
    """The command's own process plans, records and writes: it goes without matplotlib and
    astropy.wcs until it draws or a stack is solved (memory, #18), and without photutils (and
    ~0.7 s of imports) unless [photometry] targets are set."""
    code = (
        "import sys, observd.cli.main, observd.cli.batch, observd.pipeline.batch, observd.pipeline.stacking, "
        "observd.pipeline.deep_stacks; "
        "print(sorted(m for m in ('matplotlib', 'astropy.wcs', 'photutils', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_simulate_can_put_a_transit_and_a_pulsating_star_in_the_field(tmp_path, capsys):
    """`observd simulate --variables`: both variables in the first target's field, timed to its
    lights (mid-transit half-way, contact to contact a third of them, four periods in all), with
    their truth; on the sky with `--pixel-scale`; refused for a colour camera (mono only)."""
    out = tmp_path / "night"
    argv = ["simulate", str(out), "--size", "128", "--n-bias", "0", "--n-dark", "0", "--n-flat", "0"]
    assert main([*argv, "--target", "KELT:V:12", "--exptime", "30", "--variables", "--pixel-scale", "1.5"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    lights = sorted(f["date_obs"] for f in truth["files"] if f["type"] == "light")
    target = truth["targets"]["KELT"]
    first = datetime.fromisoformat(lights[0])
    span = (datetime.fromisoformat(lights[-1]) - first).total_seconds() + 30.0
    transit, pulsating = sorted(target["variables"], key=lambda v: v["kind"], reverse=True)
    assert (transit["kind"], pulsating["kind"]) == ("transit", "pulsating")
    assert transit["mid_s"] == pytest.approx(span / 2) and transit["duration_s"] == pytest.approx(span / 3)
    assert lights[0] < transit["mid_utc"] < lights[-1] and 0.005 < transit["depth"] < 0.05
    assert pulsating["period_s"] == pytest.approx(span / 4)
    assert "ra" in transit and "CRVAL1" in target["wcs"]
    assert main([*argv, "--target", "KELT:V:12", "--variables", "--bayer", "RGGB"]) == 2
    assert "mono cameras only" in capsys.readouterr().err
