"""The web page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver, over a night reduced by the real pipeline and served by uvicorn.

Every page at phone (390×844) and desktop (1440×900) size: it renders its key content, loads
every image, logs no console error (a failed request, a script error, a refused style) and, on
the phone, needs no horizontal scrolling; a full-page screenshot of each goes to a temporary
folder (or to $OBSERVD_SCREENSHOTS). The open page shows a new file without being reloaded.

Without chromium, chromedriver or selenium these tests skip, except on CI (CI=true), where
.ci/run installs them: there a missing browser fails the run rather than pass it untested.
"""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from web_night import NIGHT, reduce_night

from observd.adapters.catalog import Catalog
from observd.core.frames import FrameInfo
from observd.web.app import create_app
from observd.web.server import WebServer, listen

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE, DESKTOP = (390, 844), (1440, 900)
PAGES = {"tonight": "/", "quality": "/quality", "masters": "/masters", "products": "/products", "nights": "/nights"}


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver; pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    _require_browser()
    return reduce_night(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def base(config):
    server = WebServer(create_app(config, poll_seconds=1.0), listen("127.0.0.1", 0))
    server.start()
    yield server.address.rstrip("/")
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")  # pytest's: not left in /tmp by every run
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("OBSERVD_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load(browser, url: str, size: tuple[int, int]) -> None:
    """Open `url` in a viewport of exactly `size` CSS pixels (a phone's: a mobile viewport)."""
    width, height = size
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    browser.get(url)
    wait(browser, "return document.readyState === 'complete' && [...document.images].every(i => i.complete)")


def wait(browser, script: str, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(browser, path: Path) -> None:
    """The whole page, not only the viewport."""
    width, height = browser.execute_script(
        "return [window.innerWidth, Math.min(document.documentElement.scrollHeight, 8000)]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))


def broken_images(browser) -> list[str]:
    return browser.execute_script("return [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src)")


@pytest.mark.slow
@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_its_content_without_errors(browser, base, shots, page, size):
    load(browser, base + PAGES[page], size)
    assert console_errors(browser) == []
    assert broken_images(browser) == []
    main = browser.execute_script("return document.getElementById('live').innerText")
    assert len(main) > 40, f"{page} is blank"
    if size == PHONE:
        widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{page} scrolls sideways on a phone: {widths}"
    count = browser.execute_script
    if page == "tonight":
        assert f"Night {NIGHT}" in main and count("return document.querySelectorAll('[data-count]').length") >= 8
    if page == "quality":
        assert count("return document.querySelectorAll('svg.chart circle').length") > 20
        assert count("return document.querySelectorAll('svg.chart .pt-bad').length") >= 16
    if page in ("products", "masters"):
        assert count("return document.images.length") >= (3 if page == "products" else 4)
    assert browser.execute_script("return [window.innerWidth, window.innerHeight]") == list(size)
    screenshot(browser, shots / f"{page}-{'phone' if size == PHONE else 'desktop'}.png")


@pytest.mark.slow
def test_the_tonight_page_counts_what_the_catalog_holds(browser, base, config):
    load(browser, base + "/", DESKTOP)
    shown = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('li[data-count]')]"
        ".map(e => [e.dataset.count, +e.dataset.n]))"
    )
    catalog = Catalog.open(config.paths.database, readonly=True)
    try:
        expected = {f"{r['frame_type']}/{r['state']}": r["n"] for r in catalog.counts(NIGHT)}
    finally:
        catalog.close()
    assert shown == expected


@pytest.mark.slow
def test_a_stack_thumbnail_and_a_light_thumbnail_actually_load(browser, base):
    load(browser, base + "/products", DESKTOP)
    widths = browser.execute_script("return [...document.querySelectorAll('.product img')].map(i => i.naturalWidth)")
    assert len(widths) == 3 and all(w > 0 for w in widths)
    browser.find_element("css selector", ".product details summary").click()
    browser.find_element("css selector", ".product details a").click()  # an input frame of the stack
    wait(browser, "return document.readyState === 'complete' && document.querySelector('.frame img')?.complete")
    assert browser.execute_script("return document.querySelector('.frame img').naturalWidth") > 0
    assert console_errors(browser) == []


@pytest.mark.slow
def test_a_new_file_appears_on_the_open_page_without_a_reload(browser, base, config, shots):
    load(browser, base + "/", PHONE)
    browser.execute_script("window.observdMarker = 42")
    name = "M42_L_late_0099.fits"
    assert name not in browser.page_source
    writer = Catalog.open(config.paths.database)
    try:
        info = FrameInfo(
            frame_type="light",
            type_source="test",
            night=NIGHT,
            exptime=60.0,
            ccd_temp=-10.0,
            filter="L",
            object="M42",
            date_obs=datetime(2026, 11, 20, 23, 59, tzinfo=UTC),
        )
        writer.record_file(path=f"/camera/{name}", size=1, mtime_ns=1, sha256="late", state="classified", info=info)
    finally:
        writer.close()
    wait(browser, f"return document.getElementById('live').innerText.includes('{name}')")
    assert browser.execute_script("return window.observdMarker") == 42  # the same page: not reloaded
    assert "updated" in browser.find_element("id", "freshness").text
    assert console_errors(browser) == []
    screenshot(browser, shots / "tonight-phone-updated.png")
