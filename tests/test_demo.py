"""The README's first command: `observd demo` runs a whole simulated night through the real daemon."""

import io
import re
import shutil
import time

import pytest
from astropy.nddata import CCDData

from observd.cli.demo import run_demo


@pytest.mark.slow
def test_demo_reduces_a_night_into_five_stacks_one_in_colour_in_under_three_minutes():
    out = io.StringIO()
    started = time.monotonic()
    assert run_demo(size=256, out=out) == 0, out.getvalue()
    assert time.monotonic() - started < 180
    text = out.getvalue()
    assert "5 stacked product(s)" in text
    assert re.search(r"clouds\?", text) and re.search(r"trailing\?", text)  # the bad frames were caught
    paths = re.findall(r"frames: (\S+\.fits)", text)
    assert len(paths) == 5
    for path in paths:
        stack = CCDData.read(path)  # the printed paths exist after the demo ends
        assert stack.header["NCOMBINE"] >= 4 and stack.uncertainty is not None
    (colour,) = [CCDData.read(p) for p in paths if p.endswith("_RGB.fits")]  # the Seestar's M 57
    assert colour.shape == (3, 256, 256) and colour.header["CHANNELS"] == "R,G,B" and colour.mask.shape == colour.shape
    folder = re.search(r"remove it with: rm -rf (\S+)", text).group(1)
    shutil.rmtree(folder)
