"""Headless Chromium for the browser tests, from Debian's ``chromium`` and ``chromium-driver`` packages.

Tests marked ``browser`` skip with a reason when the browser, its driver or ``selenium`` is missing,
except under CI (``.ci/run`` installs the packages), where that is a failure. Selenium is given both
paths, so Selenium Manager never runs and nothing is downloaded.
"""

import base64
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = settings.BASE_DIR / "var" / "test-artifacts" / "browser"
_saved: list[Path] = []


def _missing() -> str:
    missing = [
        name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not Path(path).is_file()
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    return ", ".join(missing)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser") and (missing := _missing()):
        if settings.SPENDGUARD_REQUIRE_SERVICES:
            pytest.fail(f"The browser tests are required under CI but these are missing: {missing}.")
        pytest.skip(f"needs {missing} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def chrome() -> Iterator:
    """A headless Chromium that may reach localhost only, logging the console at every level."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI and this container run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        # Any host but the live server's fails to resolve: every resource a page needs must be local.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshot() -> Callable:
    """``screenshot(driver, name)`` saves the whole page (not just the viewport) to
    ``var/test-artifacts/browser/<name>.png`` and returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def _save(driver, name: str) -> Path:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        _saved.append(path)
        return path

    return _save


def pytest_terminal_summary(terminalreporter) -> None:
    if _saved:
        terminalreporter.write_sep("-", "browser screenshots")
        for path in _saved:
            terminalreporter.write_line(str(path.relative_to(settings.BASE_DIR)))
