"""A simulated night's spec: refused at construction, with the reason, when it cannot be simulated."""

from __future__ import annotations

import pytest

from observd.sim.spec import SimSpec


def test_invalid_spec_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="dialect"):
        SimSpec(dialect="sgp")
    with pytest.raises(ValueError, match="flats_at"):
        SimSpec(flats_at="noon")
