"""The operator console in a real headless Chromium (Debian's chromium and chromium-driver, through Selenium)
against a receiver fed by the simulated fleet on the real Prometheus and Alertmanager: tiles, spinner and toasts
live, the remediation log, the kill switch's write token, 200 % zoom; and a stream that resumes across a restart."""
from __future__ import annotations

import pytest

from devstack.polling import wait_until
from tests.conftest import real_binary, real_browser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
EVIL = "<b>Evil</b>&<script>window.__pwned=1</script>"
# Installed before the tile changes: every state the tile shows, as the DOM had it (a remediation of the
# compressed demo can pass in well under a second, faster than anything could poll).
RECORD_TILE = """
const agent = arguments[0];
window.__seen = window.__seen || {};
const tile = [...document.querySelectorAll('li.tile')].find(t => t.getAttribute('data-agent') === agent);
const seen = window.__seen[agent] = [];
const note = () => {
  const spinner = tile.querySelector('.spinner');
  seen.push([tile.querySelector('.badge').textContent, !spinner.hidden && spinner.offsetParent !== null,
             tile.querySelector('.spinner-text').textContent]);
};
note();
new MutationObserver(note).observe(tile, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    real_binary("prometheus")
    real_binary("alertmanager")
    real_browser()
    from devstack.console_session import console_session

    with console_session(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def driver(session):
    from devstack.browser import headless_chromium

    with headless_chromium(width=1280, height=1000) as chromium:
        yield chromium


def by_css(driver, css):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, css)


def tile(driver, agent):
    return next((t for t in by_css(driver, "li.tile") if t.get_attribute("data-agent") == agent), None)


def text_of(driver, agent, part):
    found = tile(driver, agent)
    from selenium.webdriver.common.by import By
    return found.find_element(By.CSS_SELECTOR, part).text if found else None


def toasts(driver) -> list[str]:
    return [t.text for t in by_css(driver, "#toasts .toast")]


def on_console(driver, session, token):
    from devstack.console_session import log_in

    driver.delete_all_cookies()
    log_in(driver, session, token)
    wait_until(lambda: by_css(driver, "#live") and by_css(driver, "#live")[0].text == "Live", 30, "the live feed")


class TestConsoleAgainstTheSimulatedFleet:
    def test_a_reader_logs_in_and_sees_every_agent_healthy(self, session, driver):
        driver.delete_all_cookies()
        driver.get(session.console_url)
        assert "/console/login" in driver.current_url  # a read token is set: the form, not the page
        on_console(driver, session, session.read_token)
        agents = {t.get_attribute("data-agent") for t in by_css(driver, "li.tile")}
        assert set(session.fleet.agents) <= agents
        assert {text_of(driver, a, ".badge") for a in session.fleet.agents} == {"Healthy"}
        assert session.read_token not in driver.current_url
        cookie = driver.get_cookie("autonomy_console")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert driver.execute_script("return document.cookie") == ""  # not readable by any script
        from devstack.browser import browser_log
        assert browser_log(driver) == []  # no script error, no policy violation, nothing missing

    def test_a_timeout_goes_recovering_with_the_spinner_then_healthy_with_its_toast(self, session, driver):
        on_console(driver, session, session.read_token)
        driver.execute_script(RECORD_TILE, "CMO")
        session.fleet.inject("CMO", "timeout")
        wait_until(lambda: "Resolved by CoS: RestartAndRetryTransient" in toasts(driver), 120,
                   "the toast of CMO's recovery")
        wait_until(lambda: text_of(driver, "CMO", ".badge") == "Healthy", 60, "CMO's tile to be Healthy again")
        seen = driver.execute_script("return window.__seen['CMO']")
        states = [badge for badge, _, _ in seen]
        assert states[0] == "Healthy" and states[-1] == "Healthy" and "Recovering" in states, seen
        spinning = [text for badge, visible, text in seen if badge == "Recovering" and visible]
        assert any("RestartAndRetryTransient" in text for text in spinning), seen
        session.ctx.settle("CMO")

    def test_an_unfixable_fault_ends_escalated_with_its_toast(self, session, driver):
        on_console(driver, session, session.read_token)
        session.fleet.inject("Content", "missing-secret", fixable=False)
        wait_until(lambda: "Escalated to CEO (attempts exhausted)" in toasts(driver), 180,
                   "the toast of Content's escalation")
        wait_until(lambda: text_of(driver, "Content", ".badge") == "Escalated", 60, "Content's tile Escalated")
        assert text_of(driver, "Content", ".reason") == "Escalated to CEO (attempts exhausted)"
        assert by_css(driver, "#fleet-summary")[0].text.endswith(", 1 escalated")  # counted live too
        session.fleet.clear("Content")
        session.ctx.settle("Content")

    def test_the_remediation_log_lists_attempts_and_pages_to_older_ones(self, session, driver):
        on_console(driver, session, session.read_token)
        link = next(a for a in by_css(driver, "a.log") if "agent=Content" in a.get_attribute("href"))
        link.click()
        wait_until(lambda: by_css(driver, "article.entry"), 30, "the remediation log")
        assert driver.find_element("tag name", "h1").text == "Remediation log: Content"
        entries = [a.text for a in by_css(driver, "article.entry")]
        assert any("auto_remediation" in e and "FixConfig" in e for e in entries)
        assert any("escalation" in e for e in entries)
        assert all("Trace id" in e for e in entries)
        driver.get(session.stack.receiver.url + "/console/log?agent=Content&limit=1")
        first = by_css(driver, "article.entry")[0].text
        by_css(driver, "#older")[0].click()
        wait_until(lambda: by_css(driver, "article.entry") and by_css(driver, "article.entry")[0].text != first,
                   30, "the older page")

    def test_an_agent_name_with_html_in_it_is_text(self, session, driver):
        from urllib.parse import quote
        state = session.stack.receiver_app.extensions["autonomy_receiver"]
        state.lineage.append({"event": "remediation_refused", "agent": EVIL, "ok": False, "before": {}, "after": {},
                              "gate": "silenced", "reason": "a silence covers it"})
        on_console(driver, session, session.read_token)
        driver.get(session.stack.receiver.url + "/console/log?agent=" + quote(EVIL, safe=""))
        wait_until(lambda: by_css(driver, "article.entry"), 30, "the log of the agent with HTML in its name")
        assert driver.find_element("tag name", "h1").text == f"Remediation log: {EVIL}"
        assert by_css(driver, "article.entry .agent")[0].text == EVIL
        assert not by_css(driver, "main b") and driver.execute_script("return window.__pwned") is None

    def test_the_kill_switch_needs_the_write_token(self, session, driver):
        on_console(driver, session, session.read_token)
        by_css(driver, "#kill-switch-button")[0].click()
        wait_until(lambda: "needs the write token" in driver.page_source, 30, "the refusal")
        assert session.stack.receiver_call("GET", "/api/v1/remediation").json()["enabled"] is True
        on_console(driver, session, session.write_token)
        assert "Remediation: On" in by_css(driver, "#kill-switch-state")[0].text
        by_css(driver, "#kill-reason")[0].send_keys("console test")
        by_css(driver, "#kill-switch-button")[0].click()
        wait_until(lambda: "Remediation: Off" in by_css(driver, "#kill-switch-state")[0].text, 30, "Off")
        assert session.stack.receiver_call("GET", "/api/v1/remediation").json()["enabled"] is False
        by_css(driver, "#kill-switch-button")[0].click()
        wait_until(lambda: "Remediation: On" in by_css(driver, "#kill-switch-state")[0].text, 30, "On again")
        assert session.stack.receiver_call("GET", "/api/v1/remediation").json()["enabled"] is True

    def test_at_200_percent_zoom_the_page_reflows_and_is_usable_by_keyboard(self, session):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        from devstack.browser import headless_chromium

        with headless_chromium(width=640, height=900, zoom=2.0) as zoomed:
            on_console(zoomed, session, session.read_token)
            assert zoomed.execute_script("return window.devicePixelRatio") == 2
            overflow = zoomed.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1  # no sideways scrolling: the tiles wrap
            focused = []
            for _ in range(8):
                ActionChains(zoomed).send_keys(Keys.TAB).perform()
                focused.append(zoomed.switch_to.active_element.text)
            assert any(f.startswith("View Remediation Log") for f in focused), focused


class TestStreamAcrossARestart:
    def test_the_page_reconnects_after_a_restart_and_resumes_after_its_last_event(self, tmp_path, make_receiver):
        real_browser()
        from autonomy.http_edge import BackgroundServer
        from devstack.browser import headless_chromium
        from devstack.local_stack import free_port
        port, data = free_port(), tmp_path / "data"
        first = make_receiver(data_dir=data)
        server = BackgroundServer(first, "127.0.0.1", port, threads=16).start()
        try:
            with headless_chromium() as driver:
                driver.get(f"http://127.0.0.1:{port}/console")
                wait_until(lambda: by_css(driver, "#live")[0].text == "Live", 30, "the live feed")
                driver.execute_script("window.__same_page = true")
                first.extensions["autonomy_receiver"].events.outcome({
                    "event": "auto_remediation", "ok": True, "agent": "CMO", "playbook": "RestartAndRetryTransient"})
                wait_until(lambda: toasts(driver) == ["Resolved by CoS: RestartAndRetryTransient"], 30, "the toast")
                first.extensions["autonomy_receiver"].stop_feed()
                server.stop()
                make_receiver.close(first)
                wait_until(lambda: by_css(driver, "#live")[0].text != "Live", 30, "the page to see the receiver go")
                # While the page is away, the store gets an event (another receiver's, or this one's after restart).
                second = make_receiver(data_dir=data)
                second.extensions["autonomy_receiver"].events.outcome({
                    "event": "escalation", "ok": False, "agent": "Content", "reason": "AutoRemediationFailed"})
                server = BackgroundServer(second, "127.0.0.1", port, threads=16).start()
                wait_until(lambda: "Escalated to CEO (attempts exhausted)" in toasts(driver), 60,
                           "the event missed while the receiver was down")
                assert toasts(driver).count("Resolved by CoS: RestartAndRetryTransient") == 1  # not replayed
                assert driver.execute_script("return window.__same_page") is True  # resumed, not reloaded
                second.extensions["autonomy_receiver"].stop_feed()
        finally:
            server.stop()
