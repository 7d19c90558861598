"""Debian's headless Chromium driven through its chromedriver by Selenium, with nothing downloaded at run time."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

INSTALL_HINT = "apt-get install chromium chromium-driver"
BROWSER_NAMES = ("chromium",)
DRIVER_NAMES = ("chromedriver",)
# Chromium's own background traffic (component and extension updates, sync, metrics, safe browsing, translate):
# off, so the browser fetches only what the page under test asks for.
QUIET_SWITCHES = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--safebrowsing-disable-auto-update",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication",
    "--metrics-recording-only",
    "--no-pings",
    "--no-first-run",
    "--no-default-browser-check",
    "--password-store=basic",
)


class MissingBrowser(RuntimeError):
    """Chromium or its chromedriver is not installed."""


def _find(names: tuple[str, ...]) -> str | None:
    """/usr/bin/NAME (where Debian's packages put it), else NAME on PATH."""
    for name in names:
        debian = f"/usr/bin/{name}"
        if os.access(debian, os.X_OK):
            return debian
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_paths() -> tuple[str, str]:
    """The Chromium binary and its chromedriver, or MissingBrowser naming the Debian packages to install."""
    browser, driver = _find(BROWSER_NAMES), _find(DRIVER_NAMES)
    missing = [what for what, path in (("chromium", browser), ("chromedriver", driver)) if path is None]
    if missing:
        raise MissingBrowser(f"{' and '.join(missing)} not found; install: {INSTALL_HINT}")
    return browser, driver  # type: ignore[return-value]


def chromium_options(browser: str, profile_dir: str, width: int, height: int, zoom: float) -> webdriver.ChromeOptions:
    """Headless, English, a WIDTHxHEIGHT window at ZOOM device pixels per CSS pixel, on a throwaway profile, quiet."""
    options = webdriver.ChromeOptions()
    options.binary_location = browser  # given, so Selenium Manager is never asked to find (or fetch) one
    for switch in ("--headless=new", "--disable-dev-shm-usage", "--disable-gpu", f"--user-data-dir={profile_dir}",
                   "--lang=en-US", f"--window-size={width},{height}", f"--force-device-scale-factor={zoom:g}",
                   *QUIET_SWITCHES):
        options.add_argument(switch)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to start as root
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900, zoom: float = 1.0) -> Iterator[webdriver.Chrome]:
    """A headless Chromium WebDriver showing pages WIDTHxHEIGHT CSS pixels at ZOOM (2.0: a 200 % zoom); quit, and
    its profile directory removed, when the block ends, also on error."""
    browser, driver_path = chromium_paths()
    profile_dir = tempfile.mkdtemp(prefix="autonomy-chromium-")
    try:
        service = Service(executable_path=driver_path)  # an explicit path: Selenium Manager is never run
        driver = webdriver.Chrome(service=service, options=chromium_options(browser, profile_dir, width, height,
                                                                            zoom))
        try:
            fit_viewport(driver, width, height)
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)


def fit_viewport(driver: webdriver.Chrome, width: int, height: int) -> None:
    """Resize the window so the page itself (not the window around it) is WIDTHxHEIGHT CSS pixels."""
    # --window-size sets the outer window; headless Chromium still draws a toolbar's height of it around the page.
    outer_w, outer_h, inner_w, inner_h = driver.execute_script(
        "return [window.outerWidth, window.outerHeight, window.innerWidth, window.innerHeight]")
    if (inner_w, inner_h) != (width, height):
        driver.set_window_size(width + outer_w - inner_w, height + outer_h - inner_h)


def browser_log(driver: webdriver.Chrome) -> list[dict]:
    """The console errors (level SEVERE: JS errors, CSP violations) logged since the last call; each call drains."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
