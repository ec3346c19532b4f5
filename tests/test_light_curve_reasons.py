"""Why a light curve is not made, before any pixel is read: no WCS, no pointing coordinates."""

from __future__ import annotations

import pytest
from astropy.io import fits

from observd.pipeline.light_curves import NoLightCurve, Target, _where, stack_wcs


def test_a_stack_without_a_plate_solution_gives_the_solvers_reason():
    no_radec = {"solve_state": "skipped", "solve_reason": "no RA/DEC or OBJCTRA/OBJCTDEC in the lights' headers"}
    with pytest.raises(NoLightCurve, match=r"^no WCS: plate solving skipped: no RA/DEC or OBJCTRA/OBJCTDEC"):
        stack_wcs(no_radec)
    with pytest.raises(NoLightCurve, match=r"^no WCS: plate solving failed: no solution"):
        stack_wcs({"solve_state": "failed", "solve_reason": "no solution within the CPU limit of 30 s"})
    with pytest.raises(NoLightCurve, match=r"not plate solved \(\[astrometry\] enabled = false\?\)"):
        stack_wcs({"solve_state": None})


def test_the_pointing_target_comes_from_the_object_cards_then_the_mount_then_the_stack():
    pointing = Target("OBJECT", None, None)
    header = fits.Header({"OBJCTRA": "02 04 10.26", "OBJCTDEC": "+46 41 16.3", "RA": 31.3121, "DEC": 46.7691})
    assert _where(pointing, header, {}) == (pytest.approx(31.04275), pytest.approx(46.687861), "OBJCTRA/OBJCTDEC")
    del header["OBJCTRA"]
    assert _where(pointing, header, {}) == (31.3121, 46.7691, "RA/DEC")
    solved = {"solve_ra": 31.2, "solve_dec": 46.7}
    assert _where(pointing, fits.Header(), solved) == (31.2, 46.7, "the stack's centre")
    with pytest.raises(NoLightCurve, match="no RA/DEC or OBJCTRA/OBJCTDEC in the lights' headers: where is OBJECT"):
        _where(pointing, fits.Header(), {"solve_ra": None})
    assert _where(Target("X", 10.0, 20.0), header, solved) == (10.0, 20.0, "[photometry.targets]")
