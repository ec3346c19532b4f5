"""Serving the page from the command line (observd.web.server, observd.cli): `observd web` in the
foreground, `observd run` with `[web] enabled` beside the daemon, `observd demo --web`; each
stops cleanly (exit 0) on SIGTERM or Ctrl-C, the daemon within its 30 s."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import make_config

DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_toml(tmp_path: Path, extra: str = "") -> Path:
    config = make_config(tmp_path)
    config.paths.watch.mkdir(parents=True, exist_ok=True)
    paths = "\n".join(f'{k} = "{getattr(config.paths, k)}"' for k in ("watch", "output", "database", "status_log"))
    path = tmp_path / "observd.toml"
    path.write_text(f"[paths]\n{paths}\n{extra}")
    return path


def start(tmp_path: Path, *argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    log = tmp_path / f"{argv[0]}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "observd", *argv], env=env, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True
    )
    proc.log = log
    return proc


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(url: str, proc: subprocess.Popen, status: int = 200, timeout: float = DEADLINE) -> bytes:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.log.read_text()}")
        try:
            code, body = get(url)
            if code == status:
                return body
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}")


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_observd_run_serves_the_page_and_both_stop_on_sigterm(tmp_path):
    port = free_port()
    toml = write_toml(tmp_path, f"[web]\nenabled = true\nport = {port}\n")
    proc = start(tmp_path, "run", "-c", str(toml))
    try:
        document = json.loads(wait_for(f"http://127.0.0.1:{port}/api/status", proc))
        assert document["nights"] == [] and "status_log" in document
        assert b'<main id="live"' in wait_for(f"http://127.0.0.1:{port}/", proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.log.read_text()
    assert f"web page at http://127.0.0.1:{port}/" in log and "observd stopped" in log
    assert refused(port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_observd_web_prints_its_address_and_stops_cleanly(tmp_path, sig):
    port = free_port()
    proc = start(tmp_path, "web", "-c", str(write_toml(tmp_path)), "--port", str(port))
    try:
        assert proc.stdout.readline().startswith(f"observd web: http://127.0.0.1:{port}/")
        assert b"no catalog" in wait_for(f"http://127.0.0.1:{port}/", proc, status=503)
        proc.send_signal(sig)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert refused(port)


@pytest.mark.slow
def test_demo_web_serves_the_demo_night_and_prints_its_address(tmp_path):
    proc = start(tmp_path, "demo", "--size", "256", "--web")
    output = []
    try:
        end = time.monotonic() + 200
        address = None
        while address is None and time.monotonic() < end:
            line = proc.stdout.readline()
            assert line, f"the demo ended: {''.join(output)}{proc.log.read_text()}"
            output.append(line)
            found = re.search(r"The night's web page: (http://127\.0\.0\.1:\d+/)", line)
            address = found and found.group(1)
        assert address, "".join(output)
        status = json.loads(wait_for(address + "api/status", proc))
        assert status["products"]
        page = get(address + "products")[1].decode()
        assert page.count('class="product"') == len(status["products"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) in (0, 1)  # the demo's own verdict; Ctrl-C stops the page cleanly either way
    finally:
        if proc.poll() is None:
            proc.kill()
        folder = re.search(r"remove it with: rm -rf (\S+)", "".join(output))
        if folder:
            shutil.rmtree(folder.group(1), ignore_errors=True)
