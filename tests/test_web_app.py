"""The web page's routes (observd.web.app) over a night reduced by the real pipeline: every page,
the JSON mirrors of `status --json` and `frames --json`, the self-update protocol, master
previews made once, and the catalog opened read-only."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.testclient import TestClient
from web_night import NIGHT, night_config, reduce_night

import observd.web.output_files
from observd.adapters.catalog import Catalog
from observd.cli.main import main
from observd.web.app import create_app


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return reduce_night(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def client(config):
    return TestClient(create_app(config), base_url="http://localhost")


@pytest.fixture(scope="module")
def toml(config, tmp_path_factory):
    path = tmp_path_factory.mktemp("toml") / "observd.toml"
    paths = "\n".join(f'{k} = "{getattr(config.paths, k)}"' for k in ("watch", "output", "database", "status_log"))
    path.write_text(f'[paths]\n{paths}\n[site]\ntimezone = "Europe/Berlin"\n')
    return path


def read(config, query):
    catalog = Catalog.open(config.paths.database, readonly=True)
    try:
        return query(catalog)
    finally:
        catalog.close()


def cli_json(capsys, *argv) -> object:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


# -- JSON: the CLI's documents ------------------------------------------------------------------


@pytest.mark.parametrize("query", [[], ["--night", NIGHT], ["--all"]])
def test_api_status_is_what_status_json_prints(client, toml, capsys, query):
    printed = cli_json(capsys, "status", "--json", "-c", str(toml), *query)
    params = {"--night": {"night": NIGHT}, "--all": {"all": "1"}}.get(query[0] if query else "", {})
    served = client.get("/api/status", params=params).json()
    for document in (printed, served):
        document.pop("generated")
        for master in document["masters"]:
            master.pop("age_hours")
    assert served == printed
    assert served["night"] == (None if query == ["--all"] else NIGHT)


@pytest.mark.parametrize("query", [{}, {"night": NIGHT}, {"state": "bad"}, {"night": NIGHT, "state": "waiting"}])
def test_api_frames_is_what_frames_json_prints(client, toml, capsys, query):
    argv = [arg for key, value in query.items() for arg in (f"--{key}", value)]
    printed = cli_json(capsys, "frames", "--json", "-c", str(toml), *argv)
    assert client.get("/api/frames", params=query).json() == printed
    assert printed  # every query finds frames in this night


# -- pages ----------------------------------------------------------------------------------------


def test_tonight_shows_counts_waiting_failures_and_bad_frames_of_the_latest_night(client, config):
    page = client.get("/").text
    assert f"Night {NIGHT}" in page
    counts = read(config, lambda c: c.counts(NIGHT))
    for row in counts:
        assert f'data-count="{row["frame_type"]}/{row["state"]}" data-n="{row["n"]}"' in page
    assert "waiting: no flat for filter Ha" in page and "NGC7000_Ha_0001.fits" in page
    bad = read(config, lambda c: c.files(night=NIGHT, state="bad"))
    assert len(bad) == 4 and all(r["name"] in page for r in bad)
    assert page.count('<svg class="chart"') == 1  # the timeline
    assert len(re.findall(r'<img src="/files/2026-11-20/stacks/[^"]+_thumb.png"', page)) == 3


def test_the_latest_night_lists_the_file_that_is_not_fits_among_the_files_without_a_night(client):
    page = client.get("/").text
    assert "Files without a night" in page and "notes.fits" in page and "not a FITS file" in page
    assert "notes.fits" not in client.get("/", params={"night": "2026-11-19"}).text


def test_quality_draws_five_charts_per_target_and_filter_with_bad_frames_marked(client):
    page = client.get("/quality").text
    assert page.count('<svg class="chart"') == 5 * 4  # M42 L, M42 R, NGC7000 L, NGC7000 Ha
    assert page.count('class="pt pt-bad"') >= 4 * 4  # each bad frame in (at least) four charts


def test_masters_lists_every_master_with_its_preview(client, config):
    page = client.get("/masters").text
    masters = read(config, lambda c: c.masters())
    assert len(masters) == 4  # bias, dark, flat L, flat R
    for m in masters:
        assert f'src="/masters/{m["id"]}/preview.png"' in page


def test_products_show_each_stack_with_preview_inputs_and_exposure(client, config):
    page = client.get("/products").text
    products = read(config, lambda c: c.products(night=NIGHT))
    for p in products:
        assert f"{p['n_combined']} frames" in page
        assert f'href="/files/2026-11-20/stacks/{p["object"]}_{p["filter"]}.png"' in page
        for row in read(config, lambda c, p=p: c.product_inputs(p["id"])):
            assert f'href="/frame/{row["id"]}"' in page
    assert client.get("/files/2026-11-20/stacks/M42_R_thumb.png").headers["content-type"] == "image/png"


def test_frame_shows_header_metrics_masters_events_and_thumbnail(client, config):
    light = read(config, lambda c: c.files(night=NIGHT, state="aligned"))[0]
    page = client.get(f"/frame/{light['id']}").text
    assert light["name"] in page and "CCD-TEMP (°C)" in page and "FWHM (px)" in page
    for kind in ("bias", "dark", "flat"):
        assert re.search(rf'href="/masters#master-{light[kind + "_id"]}">{kind} v1', page)
    thumb = re.search(r'<img src="(/files/2026-11-20/thumbs/[^"]+\.png)"', page).group(1)
    assert client.get(thumb).status_code == 200
    bad = read(config, lambda c: c.files(night=NIGHT, state="bad"))[0]
    assert "judged bad" in client.get(f"/frame/{bad['id']}").text  # its history: the event that judged it
    assert client.get("/frame/999999").status_code == 404


def test_nights_lists_the_archive(client):
    page = client.get("/nights").text
    assert f'href="/?night={NIGHT}"' in page and "without a night" in page and "stacked" in page


def test_every_page_says_the_same_through_head(client):
    for path in ("/", "/quality", "/masters", "/products", "/nights", "/api/status"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b""


# -- the open page's updates ------------------------------------------------------------------------


def test_partial_content_is_304_until_the_catalog_changes(client, config):
    first = client.get("/", params={"partial": "1"})
    assert first.status_code == 200 and "<html" not in first.text and f"Night {NIGHT}" in first.text
    etag = first.headers["etag"]
    assert client.get("/", params={"partial": "1"}, headers={"If-None-Match": etag}).status_code == 304
    writer = Catalog.open(config.paths.database)
    try:
        writer.event("info", "test", "a commit that changes nothing the page shows")
        unchanged = client.get("/", params={"partial": "1"}, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.headers["etag"] != etag  # same content, new stamp
        writer.record_file(path="/cam/new.fits", size=1, mtime_ns=1, sha256="new", state="pending")
        changed = client.get("/", params={"partial": "1"}, headers={"If-None-Match": unchanged.headers["etag"]})
    finally:
        writer.close()
    assert changed.status_code == 200


# -- master previews ----------------------------------------------------------------------------------


def test_a_master_preview_is_made_once_beside_the_master(client, config, monkeypatch):
    made = []
    real = observd.web.output_files.write_thumbnail
    gate = threading.Barrier(4)

    def counting(data, path, **kw):
        made.append(path)
        return real(data, path, **kw)

    monkeypatch.setattr(observd.web.output_files, "write_thumbnail", counting)
    master = read(config, lambda c: c.masters(kind="flat"))[0]

    def get(_):
        gate.wait()
        return client.get(f"/masters/{master['id']}/preview.png")

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(get, range(4)))
    assert {r.status_code for r in responses} == {200}
    assert {r.headers["content-type"] for r in responses} == {"image/png"}
    assert len({r.content for r in responses}) == 1 and responses[0].content.startswith(b"\x89PNG")
    assert client.get(f"/masters/{master['id']}/preview.png").status_code == 200
    assert len(made) <= 1  # the preview test of the masters page may have made it already
    preview = config.paths.output / NIGHT / "masters" / (master["path"].rsplit("/", 1)[1].replace(".fits", ".png"))
    assert preview.is_file()


# -- the catalog, read-only -----------------------------------------------------------------------------


def test_without_a_catalog_the_page_says_so_and_creates_none(tmp_path):
    config = night_config(tmp_path)
    client = TestClient(create_app(config), base_url="http://localhost")
    page = client.get("/")
    assert page.status_code == 503 and "no catalog" in page.text
    assert client.get("/api/status").status_code == 503
    assert not config.paths.database.exists() and not config.paths.database.parent.exists()


def test_pages_read_while_a_writer_holds_the_catalog_and_never_take_its_lock(client, config):
    writer = sqlite3.connect(config.paths.database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the daemon in the middle of a transaction
        writer.execute("INSERT INTO events (time, level, event, message) VALUES ('t', 'info', 'test', 'x')")
        assert client.get("/").status_code == 200
        assert client.get("/api/frames").status_code == 200
        writer.execute("COMMIT")
        writer.execute("BEGIN IMMEDIATE")  # and the page holds nothing between requests
        writer.execute("COMMIT")
    finally:
        writer.close()
