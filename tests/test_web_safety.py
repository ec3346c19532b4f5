"""The web page's safety, against a real server (uvicorn on loopback) and raw requests: files only
from under the output folder (observd.web.output_files), read-only methods and the access token
(observd.web.guard), no exposed address without a token (observd.web.server, the CLI)."""

from __future__ import annotations

import http.client
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from support import make_config

import observd.web.guard
from observd.adapters.catalog import Catalog
from observd.adapters.previews import write_thumbnail
from observd.cli.main import main
from observd.web.app import create_app
from observd.web.server import ExposureError, WebServer, check_exposure, is_loopback, listen

TOKEN = "Zx9-long-enough-token"
SECRET = b"outside the output folder"


@pytest.fixture
def site(tmp_path):
    """An output folder with a stack (PNG, FITS) and a catalog; secrets beside it; links out and in."""
    config = make_config(tmp_path)
    out = config.paths.output
    stacks = out / "2026-11-20" / "stacks"
    stacks.mkdir(parents=True)
    write_thumbnail(np.random.default_rng(1).normal(100, 5, (64, 64)), stacks / "M42_L.png")
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(stacks / "M42_L.fits")
    Catalog.open(config.paths.database).close()
    config.paths.status_log.write_text("a log line\n")
    (tmp_path / "secret.png").write_bytes(SECRET)
    (tmp_path / "secret.fits").write_bytes(SECRET)
    (out / "link.png").symlink_to(tmp_path / "secret.png")
    (out / "outside").symlink_to(tmp_path, target_is_directory=True)
    (out / "alias.png").symlink_to(stacks / "M42_L.png")
    return config


@contextmanager
def serving(config, token=None):
    server = WebServer(create_app(config, token=token), listen("127.0.0.1", 0))
    server.start()
    try:
        yield server.sock.getsockname()[1]
    finally:
        server.stop()


def request(port, path, method="GET", headers=None):
    """A raw request: the path goes out exactly as written (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": f"127.0.0.1:{port}", **(headers or {})}.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# -- files only from under the output folder ---------------------------------------------------------


def traversals(root: Path) -> list[str]:
    absolute = str(root / "secret.png")
    return [
        "/files/../secret.png",
        "/files/../../secret.png",
        "/files/2026-11-20/../../secret.png",
        "/files/%2e%2e/secret.png",
        "/files/%2E%2E/secret.fits",
        "/files/..%2fsecret.png",
        "/files/%2e%2e%2fsecret.png",
        "/files/2026-11-20%2f..%2f..%2fsecret.png",
        "/files/%252e%252e/secret.png",  # encoded twice: a folder named '%2e%2e', which does not exist
        "/files/" + absolute,
        "/files/" + absolute.replace("/", "%2f"),
        "/files//etc/passwd",
        "/files/link.png",  # a link leading out
        "/files/outside/secret.png",  # a linked folder leading out
        "/files/2026-11-20/stacks/M42_L.png%00.png",
        "/files/..\\secret.png",
    ]


def test_every_traversal_form_is_refused(site, tmp_path):
    with serving(site) as port:
        for path in traversals(tmp_path):
            status, _, body = request(port, path)
            assert status == 404, path
            assert SECRET not in body, path


def test_folders_are_never_listed_and_other_files_never_served(site):
    with serving(site) as port:
        for path in (
            "/files/",
            "/files/2026-11-20",
            "/files/2026-11-20/",
            "/files/2026-11-20/stacks/",
            "/files/observd.db",
            "/files/status.log",
            "/static/",
            "/static/../app.py",
        ):
            status, _, body = request(port, path)
            assert status == 404, path
            assert b"M42_L" not in body and b"SQLite" not in body, path


def test_files_under_the_output_folder_are_served_with_their_content_type(site):
    with serving(site) as port:
        status, headers, body = request(port, "/files/2026-11-20/stacks/M42_L.png")
        assert status == 200 and headers["content-type"] == "image/png" and body.startswith(b"\x89PNG")
        status, headers, body = request(port, "/files/2026-11-20/stacks/M42_L.fits")
        assert status == 200 and headers["content-type"] == "application/fits" and body.startswith(b"SIMPLE")
        assert "attachment" in headers["content-disposition"]
        assert request(port, "/files/alias.png")[0] == 200  # a link that stays inside is fine
        assert request(port, "/static/style.css")[1]["content-type"].startswith("text/css")


# -- read-only --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_every_method_but_get_and_head_is_405(site, method):
    with serving(site) as port:
        for path in ("/", "/api/status", "/files/2026-11-20/stacks/M42_L.png", "/static/style.css", "/nowhere"):
            status, headers, _ = request(port, path, method)
            assert status == 405, (method, path)
            assert headers["allow"] == "GET, HEAD"


def test_responses_carry_the_security_headers(site):
    with serving(site) as port:
        for path in ("/", "/api/status", "/files/2026-11-20/stacks/M42_L.png", "/files/nothing.png"):
            _, headers, _ = request(port, path)
            assert headers["x-content-type-options"] == "nosniff", path
            assert "default-src 'self'" in headers["content-security-policy"], path
            assert headers["referrer-policy"] == "no-referrer", path


# -- the token ---------------------------------------------------------------------------------------


def test_with_a_token_every_request_must_carry_it(site):
    with serving(site, token=TOKEN) as port:
        for path in ("/", "/api/status", "/files/2026-11-20/stacks/M42_L.png", "/static/live.js"):
            assert request(port, path)[0] == 401, path
            assert request(port, path, headers={"Authorization": "Bearer wrong"})[0] == 401, path
            assert request(port, path + "?token=wrong")[0] == 401, path
            assert request(port, path, headers={"Cookie": "observd_token=wrong"})[0] == 401, path
            assert request(port, path, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200, path
        assert request(port, "/", headers={"Authorization": f"Bearer {TOKEN[:-1]}"})[0] == 401  # a prefix is not it


def test_a_token_in_the_address_is_kept_in_a_cookie_for_the_next_requests(site):
    with serving(site, token=TOKEN) as port:
        status, headers, _ = request(port, f"/?token={TOKEN}")
        assert status == 200
        cookie = headers["set-cookie"]
        assert cookie.startswith("observd_token=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        value = cookie.split(";", 1)[0]
        assert request(port, "/api/frames", headers={"Cookie": value})[0] == 200
        assert request(port, "/", headers={"Authorization": f"Bearer {TOKEN}"})[1].get("set-cookie") is None


def test_tokens_are_compared_in_constant_time(site, monkeypatch):
    compared = []
    real = observd.web.guard.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(observd.web.guard.hmac, "compare_digest", spy)
    with serving(site, token=TOKEN) as port:
        assert request(port, "/", headers={"Authorization": "Bearer nope"})[0] == 401
    assert (b"nope", TOKEN.encode()) in compared


def test_without_a_token_a_request_naming_another_host_is_refused(site):
    with serving(site) as port:
        assert request(port, "/", headers={"Host": "attacker.example"})[0] == 403  # DNS rebinding
        assert request(port, "/", headers={"Host": f"192.168.1.5:{port}"})[0] == 403
        for host in (f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
            assert request(port, "/", headers={"Host": host})[0] == 200, host
    with serving(site, token=TOKEN) as port:  # with a token, any name will do
        assert request(port, "/", headers={"Host": "observatory.lan", "Authorization": f"Bearer {TOKEN}"})[0] == 200


# -- the address ---------------------------------------------------------------------------------------


def test_loopback_addresses():
    assert all(map(is_loopback, ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.5", "observatory.lan", "")))
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", TOKEN)
    with pytest.raises(ExposureError, match="token"):
        check_exposure("0.0.0.0", None)


def write_toml(tmp_path, config, extra="") -> Path:
    path = tmp_path / "observd.toml"
    paths = "\n".join(f'{k} = "{getattr(config.paths, k)}"' for k in ("watch", "output", "database", "status_log"))
    path.write_text(f"[paths]\n{paths}\n{extra}")
    return path


@pytest.mark.parametrize("argv", [["web", "--host", "0.0.0.0"], ["web", "--host", "192.168.1.5"], ["run"]])
def test_an_exposed_address_without_a_token_is_refused_at_start(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.delenv("OBSERVD_WEB_TOKEN", raising=False)
    config = make_config(tmp_path)
    toml = write_toml(tmp_path, config, '[web]\nenabled = true\nhost = "0.0.0.0"\n' if argv == ["run"] else "")
    assert main([*argv, "-c", str(toml)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without an access token" in err and "OBSERVD_WEB_TOKEN" in err
    assert not config.paths.database.exists()  # refused before the daemon started


def test_a_port_in_use_is_a_usage_error(tmp_path, capsys):
    busy = listen("127.0.0.1", 0)
    try:
        toml = write_toml(tmp_path, make_config(tmp_path))
        assert main(["web", "-c", str(toml), "--port", str(busy.getsockname()[1])]) == 2
        assert "cannot serve the web page on 127.0.0.1" in capsys.readouterr().err
    finally:
        busy.close()


def test_the_environment_token_is_used(tmp_path, monkeypatch):
    """OBSERVD_WEB_TOKEN reaches the guard (checked on loopback, where the token is optional)."""
    import observd.cli.main as cli

    monkeypatch.setenv("OBSERVD_WEB_TOKEN", TOKEN)
    served = {}
    config = make_config(tmp_path)
    page = cli._web_server(config, "127.0.0.1", 0)
    try:
        page.start()
        port = page.sock.getsockname()[1]
        served["no token"] = request(port, "/")[0]
        served["token"] = request(port, "/", headers={"Authorization": f"Bearer {TOKEN}"})[0]
    finally:
        page.stop()
    assert served == {"no token": 401, "token": 503}  # 503: no catalog in this folder yet
