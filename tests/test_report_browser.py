"""The report in headless Chromium, loaded over real HTTP from the real API on Postgres: what a
person sees agrees with the JSON API, the page needs nothing from any other host and logs no
error, and it reads at 1280 and 375 pixels wide and in print. Screenshots are written to
TEST_ARTIFACTS_DIR (default: .artifacts/ in the checkout)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from app.context import AppContext
from app.reports.content import MetricView, metric_views
from devtools.history import seed_history
from tests.clock import OffsetClock
from tests.factories import create_org, create_partner, expect

pytestmark = pytest.mark.xdist_group("browser")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).parent.parent / ".artifacts"))
DAYS = 14


def _install_chromium() -> None:
    """Debian's chromium and chromium-driver, installed once when absent (a lock keeps
    parallel test processes from installing together)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    lock_path = Path(tempfile.gettempdir()) / "senso-chromium-install.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if CHROMIUM.exists() and CHROMEDRIVER.exists():
            return
        apt = shutil.which("apt-get")
        if apt is None:
            pytest.fail("chromium is not installed and there is no apt-get to install it")
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            [apt, "update", "-q"],
            [apt, "install", "-y", "-q", "chromium", "chromium-driver"],
        ):
            subprocess.run(command, check=True, env=environment, capture_output=True, timeout=600)


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    _install_chromium()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        # Nothing but the page under test may make a request.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _requests(driver: webdriver.Chrome) -> list[str]:
    """URLs the page asked for since the last call (the performance log is drained)."""
    urls = []
    for entry in _log(driver, "performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@contextlib.contextmanager
def _width(driver: webdriver.Chrome, width: int) -> Iterator[None]:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    try:
        yield
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# Contrast of every element's own text against the first opaque background behind it (WCAG
# relative luminance); returns the failures.
_CONTRAST = """
function lum(c) {
  const v = c.match(/[\\d.]+/g).map(Number);
  const ch = v.slice(0, 3).map(x => {
    x /= 255;
    return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}
function background(el) {
  for (; el; el = el.parentElement) {
    const c = getComputedStyle(el).backgroundColor;
    const v = c.match(/[\\d.]+/g).map(Number);
    if (v.length < 4 || v[3] === 1) return c;
  }
  return 'rgb(255, 255, 255)';
}
const failures = [];
for (const el of document.body.querySelectorAll('*')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.closest('svg')) continue;
  const style = getComputedStyle(el);
  if (style.display === 'none' || style.visibility === 'hidden') continue;
  const a = lum(style.color), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.6 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) {
    failures.push(el.tagName + '.' + el.className + ': ' + ratio.toFixed(2));
  }
}
return failures;
"""


async def test_the_report_in_chromium_matches_the_api_and_needs_no_other_host(
    api: httpx.AsyncClient,
    context: AppContext,
    clock: OffsetClock,
    browser: webdriver.Chrome,
) -> None:
    setup = await create_org(
        api, await create_partner(api), questions=5, engines=("openai", "anthropic")
    )
    # Ten questions: with fewer, no day-on-day change can be called real at the family-wise
    # level the chart's ring needs.
    questions = [f"Which CRM suits a team of type {n}?" for n in range(10)]
    expect(await api.put(f"/orgs/{setup.org_id}/questions", json={"questions": questions}), 200)
    today = clock.today()
    days = [today - timedelta(days=i) for i in range(DAYS - 1, -1, -1)]
    # A week at 30%, then a week at 80%: the chart has a real change to mark.
    await seed_history(
        context,
        setup.org_id,
        days,
        rate=lambda day: 0.3 if day < today - timedelta(days=6) else 0.8,
        simulated=True,
    )
    link = expect(await api.post(f"/orgs/{setup.org_id}/report-links", json={"days": DAYS}), 201)
    changes = expect(await api.get(f"/orgs/{setup.org_id}/changes", params={"window": 7}), 200)
    start = str(today - timedelta(days=DAYS - 1))
    org = expect(await api.get(f"/orgs/{setup.org_id}"), 200)

    views = {v.metric.value: v for v in metric_views(bool(org["competitors"]))}
    trends = {
        metric: expect(
            await api.get(
                f"/orgs/{setup.org_id}/trends",
                params={"metric": metric, "from": start, "to": str(today)},
            ),
            200,
        )["points"]
        for metric in views
    }
    # The API is served by this test's event loop: the browser, which blocks, gets a thread.
    wide, narrow = await asyncio.to_thread(_look, browser, link["url"], changes, trends, views)
    assert wide.stat().st_size > 0
    assert narrow.stat().st_size > 0


def _look(
    browser: webdriver.Chrome,
    url: str,
    changes: dict[str, Any],
    trends: dict[str, list[dict[str, Any]]],
    views: dict[str, MetricView],
) -> tuple[Path, Path]:
    """Open the report and check what it shows; returns the two screenshots."""
    _requests(browser)
    _log(browser, "browser")
    with _width(browser, 1280):
        browser.get(url)
        assert browser.title.startswith("HubSpot")

        tiles = browser.find_elements(By.CSS_SELECTOR, "li.tile")
        assert len(tiles) == 5
        for tile in tiles:
            metric = str(tile.get_attribute("data-metric"))
            expected = changes["metrics"][metric]["overall"]
            shown = tile.find_element(By.CSS_SELECTOR, ".value").text
            assert shown == views[metric].fmt(expected["current"]), metric
            assert float(tile.get_attribute("data-value") or "nan") == expected["current"]
            assert tile.get_attribute("data-verdict") == expected["verdict"], metric
        visibility = browser.find_element(By.CSS_SELECTOR, 'li.tile[data-metric="visibility"]')
        assert changes["metrics"]["visibility"]["overall"]["verdict"] == "up"
        assert "Real rise" in visibility.text

        figures = browser.find_elements(By.CSS_SELECTOR, "figure[data-metric]")
        assert len(figures) == len(views)
        for figure in figures:
            metric = str(figure.get_attribute("data-metric"))
            points = trends[metric]
            assert len(points) == DAYS
            svg = figure.find_element(By.CSS_SELECTOR, "svg.trend")
            assert svg.get_attribute("data-periods") == str(len(points))
            measured = [p for p in points if p["value"] is not None]
            assert len(svg.find_elements(By.TAG_NAME, "circle")) == len(measured)
            assert svg.find_elements(By.CSS_SELECTOR, "path.band"), metric
            rows = figure.find_elements(By.CSS_SELECTOR, "table tbody tr")
            assert len(rows) == len(points)
            for row, point in zip(rows, points, strict=True):
                value = row.find_elements(By.TAG_NAME, "td")[0].text
                expected_text = "—" if point["value"] is None else views[metric].fmt(point["value"])
                assert value == expected_text, (metric, point)
        ringed = browser.find_elements(
            By.CSS_SELECTOR, 'svg.trend[data-metric="visibility"] path.marker'
        )
        assert ringed, "the week-on-week jump is a real change"
        assert browser.find_element(By.ID, "simulated").is_displayed()
        assert not browser.find_elements(By.TAG_NAME, "script")
        assert browser.execute_script(_CONTRAST) == []
        wide = _screenshot(browser, "report-1280.png")

    with _width(browser, 375):
        browser.refresh()
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 375px"
        narrow = _screenshot(browser, "report-375.png")

    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert not browser.find_element(By.CSS_SELECTOR, "nav.selector").is_displayed()
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})

    errors = [e for e in _log(browser, "browser") if e["level"] == "SEVERE"]
    assert errors == []
    hosts = {urlsplit(u).netloc for u in _requests(browser) if not u.startswith("data:")}
    assert hosts == {urlsplit(url).netloc}
    return wide, narrow


def _log(driver: webdriver.Chrome, kind: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries
