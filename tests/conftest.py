"""Fixtures shared by the tests (helpers live in support.py)."""

from __future__ import annotations

import pytest

from observd.catalog import Catalog
from support import make_config, require_real_data


@pytest.fixture
def real_data():
    return require_real_data()


@pytest.fixture
def config_factory(tmp_path):
    return lambda **sections: make_config(tmp_path, **sections)


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog.open(tmp_path / "out" / "observd.db")
    yield cat
    cat.close()
