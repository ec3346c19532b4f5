"""Fixtures shared by the tests (helpers live in support.py)."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
from support import make_config, require_real_data

from observd.adapters.catalog import Catalog
from observd.core.align import prepare_astroalign

prepare_astroalign()  # as every observd process does when it starts


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


@pytest.fixture
def fake_systemd(tmp_path):
    """A bound datagram socket standing in for systemd's NOTIFY_SOCKET: (socket, path).
    Its path must fit sockaddr_un (108 bytes), hence a short folder when tmp_path is long."""
    folder = tmp_path if len(str(tmp_path)) < 80 else Path(tempfile.mkdtemp(prefix="sdn"))
    path = folder / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    yield sock, str(path)
    sock.close()
