"""Real data: the 12 MicroObservatory frames of HAT-P-32 (2017-12-20, 33 min, out of transit) give a
short light curve; and the bad inputs on real frames — no site, a target outside the field, no
WCS — each give their reason instead of a light curve.

The frames carry no SITELAT/SITELONG (MicroObservatory writes LATITUDE/LONGITUD, its longitude
west-positive, which observd does not read), so the site comes from [site]: the Fred Lawrence
Whipple Observatory. They carry no gain either: the errors then hold sky and read noise only,
and the scatter is printed against that lower bound."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from support import MICROOBSERVATORY, make_config, require_real_data
from test_plate_solve_real import require_solver

from observd.adapters import plate_solver
from observd.adapters.catalog import Catalog
from observd.core.timing import airmass_from_altitude
from observd.pipeline.batch import ingest
from observd.pipeline.light_curves import light_curves_of_night
from observd.pipeline.stacking import stack_night
from observd.service.reports import format_status, status_report

pytestmark = pytest.mark.slow

WHIPPLE = {"timezone": "America/Phoenix", "latitude": 31.681, "longitude": -110.878, "elevation": 2320.0}
SECTIONS = {**MICROOBSERVATORY, "site": WHIPPLE, "photometry": {"targets": {"HAT-P-32": "02:04:10.26 +46:41:16.3"}}}


def test_hat_p_32_light_curve_and_bad_inputs(tmp_path, monkeypatch):
    folder = require_real_data("02_microobs_hatp32_lights")
    require_solver()
    config = make_config(tmp_path, **SECTIONS)
    catalog = Catalog.open(config.paths.database)
    ingest([folder], catalog, config)
    (night,) = catalog.nights_with_lights()
    stack_night(config, catalog, night)
    (record,) = catalog.light_curves()
    assert record["state"] == "written", record["reason"]
    table = Table.read(record["path"])
    good = np.asarray(table["flag"]) == "ok"
    print(
        f"\nHAT-P-32: {int(good.sum())}/{len(table)} good frames, {record['n_comparisons']} comparison stars, "
        f"point-to-point scatter {record['scatter'] * 1e3:.2f} ppt; expected (sky + read noise only, gain unknown) "
        f"{record['expected'] * 1e3:.2f} ppt; plot {record['plot_path']}"
    )
    assert len(table) == 12 and good.sum() >= 10 and record["n_comparisons"] >= 3
    assert "gain is unknown" in table.meta["errors"]
    # the aperture sits on HAT-P-32, found on the reference where the plate solution put it
    assert table.meta["target_detected_on_reference"] and table.meta["position_from"] == "[photometry.targets]"
    # the frames drift by a few pixels; the target's aperture follows (the first frame is not the reference)
    assert np.ptp(np.asarray(table["x"])) > 1.0 and np.all(np.abs(np.diff(np.asarray(table["x"]))) < 5.0)
    # the first frame: mid-exposure 01:34:13.3 UTC; its header's TELALT 62.592 deg (airmass 1.126)
    first = datetime(2017, 12, 20, 1, 33, 43, 317000) + timedelta(seconds=30)
    assert table["time_utc"][0].startswith(first.isoformat(timespec="milliseconds"))
    assert table["airmass"][0] == pytest.approx(float(airmass_from_altitude(np.array([62.592]))[0]), abs=0.01)
    jd_utc = 2440587.5 + (first - datetime(1970, 1, 1)).total_seconds() / 86400
    barycentric = (table["bjd_tdb"][0] - jd_utc) * 86400 - 69.184  # TDB - UTC in 2017
    assert 60 < abs(barycentric) < 500
    assert Path(record["plot_path"]).exists()
    assert "Light curves:\n  2017-12-19 HAT-P-32 on HATP-32 [Clear]: " in format_status(status_report(catalog))

    # no site: the frames have no SITELAT/SITELONG and [site] has no latitude/longitude
    nowhere = make_config(tmp_path, **{**SECTIONS, "site": MICROOBSERVATORY["site"]})
    (record,) = light_curves_of_night(nowhere, catalog, night)
    assert record["state"] == "skipped" and record["reason"].startswith(
        "no site: the lights have no SITELAT/SITELONG and [site] latitude/longitude are not set"
    )
    # a target outside the field
    m42 = {"photometry": {"targets": {"M 42": "05:35:17 -05:23:28"}}}
    elsewhere = make_config(tmp_path, **{**SECTIONS, **m42})
    (record,) = light_curves_of_night(elsewhere, catalog, night)
    assert record["state"] == "skipped" and record["object"] is None
    assert record["reason"] == (
        "not in the field of any stack of the night (M 42 (RA 83.82083 Dec -5.39111) is outside the field of "
        "HATP-32 [Clear]: 69.77° from its centre, whose corners are 0.59° away)"
    )
    # no WCS: the stack is built again without solve-field
    monkeypatch.setattr(plate_solver, "solver_path", lambda: None)
    stack_night(config, catalog, night)
    (record,) = catalog.light_curves()
    assert record["state"] == "skipped" and record["reason"].startswith(
        "no WCS: plate solving skipped: astrometry.net's solve-field is not installed"
    )
    text = format_status(status_report(catalog))
    assert "2017-12-19 HAT-P-32 on HATP-32 [Clear]: skipped — no WCS: plate solving skipped" in text
    catalog.close()
