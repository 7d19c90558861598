"""The browser tooling (devstack/browser.py) on Debian's real headless Chromium: a strict CSP is enforced and its
violations reach the log, screenshots are the window's size, and a 200 % zoom is a device pixel ratio of 2."""
import struct

import pytest
from flask import Flask, Response, request

from devstack.browser import browser_log, headless_chromium
from devstack.local_stack import ServedApp
from devstack.polling import wait_until
from tests.conftest import real_browser

pytestmark = pytest.mark.integration
CSP = "default-src 'none'; script-src 'self'; img-src 'self'"
PAGE = """<!doctype html>
<html lang="en"><head><title>tooling</title></head><body>
<p id="inline"></p><p id="external"></p>
<script>document.getElementById("inline").textContent = "inline ran";</script>
<script src="/static/write.js"></script>
</body></html>"""
SCRIPT = 'document.getElementById("external").textContent = "external ran";'


def csp_page_app(asked: list[str]) -> Flask:
    """A page under a strict CSP with an inline script (refused) and a same-origin one (run); ASKED gets each path."""
    app = Flask("csp_page", static_folder=None)

    @app.before_request
    def note_the_path():
        asked.append(request.path)

    @app.after_request
    def strict_csp(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        return response

    app.add_url_rule("/", "page", lambda: Response(PAGE, mimetype="text/html"))
    app.add_url_rule("/static/write.js", "script", lambda: Response(SCRIPT, mimetype="text/javascript"))
    return app


@pytest.fixture(scope="module")
def page():
    """The served page's URL, and the paths the browser asked the server for."""
    asked: list[str] = []
    with ServedApp(csp_page_app(asked)) as served:
        yield served.url + "/", asked


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_a_strict_csp_runs_the_same_origin_script_refuses_the_inline_one_and_logs_the_violation(browser, page):
    url, asked = page
    browser_log(browser)  # drained: only this page's entries count
    browser.get(url)
    wait_until(lambda: text_of(browser, "external") == "external ran", 10,
               "the same-origin script to write into the page")
    assert text_of(browser, "inline") == ""  # it came first in the document, so it would have run by now
    violations = wait_until(lambda: [e for e in browser_log(browser) if "Content Security Policy" in e["message"]],
                            10, "the CSP violation in the browser log")
    assert any("inline script" in e["message"] for e in violations), violations
    assert set(asked) <= {"/", "/static/write.js", "/favicon.ico"}, asked  # the page's own requests, nothing else


def test_a_screenshot_is_a_png_of_the_window_size(browser, page, tmp_path):
    browser.get(page[0])
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    assert png_size(shot.read_bytes()) == (1280, 900)
    assert browser.execute_script("return [window.innerWidth, window.innerHeight, navigator.language]") == [
        1280, 900, "en-US"]


def test_at_200_percent_zoom_the_device_pixel_ratio_is_2_and_screenshots_twice_as_large(page):
    real_browser()
    with headless_chromium(width=640, height=480, zoom=2.0) as zoomed:
        zoomed.get(page[0])
        assert zoomed.execute_script("return window.devicePixelRatio") == 2
        assert zoomed.execute_script("return [window.innerWidth, window.innerHeight]") == [640, 480]
        assert png_size(zoomed.get_screenshot_as_png()) == (1280, 960)
