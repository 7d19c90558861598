"""The operator console without a browser: login and sessions, the write token and CSRF for switches, escaping, the
strict Content-Security-Policy, the toasts' words, the remediation log's pages, and the event stream's frames."""
from __future__ import annotations

import json
import re

import pytest

from autonomy.settings import Secret
from tests.receivers import WEBHOOK_TOKEN
from webhook_receiver import console_page
from webhook_receiver.console_auth import COOKIE
from webhook_receiver.console_events import toast_of

READ_TOKEN = "read-test-token-81c2f0"
HOST = "http://localhost"
EVIL_AGENT = "<img src=x onerror=alert(1)>&\"'"


@pytest.fixture
def console_app(make_receiver):
    return make_receiver(READ_TOKEN=Secret("AUTOREM_READ_TOKEN", READ_TOKEN))


def state_of(app):
    return app.extensions["autonomy_receiver"]


def log_in(client, token, origin=HOST):
    return client.post("/console/login", data={"token": token, "next": "/console"}, headers={"Origin": origin})


def csrf_of(page: str) -> str:
    return re.search(r"name='csrf' value='([^']*)'", page).group(1)


@pytest.mark.parametrize(("entry", "toast"), [
    ({"event": "auto_remediation", "ok": True, "playbook": "RestartAndRetryTransient"},
     "Resolved by CoS: RestartAndRetryTransient"),
    ({"event": "auto_remediation", "ok": False, "playbook": "RestartAndRetryTransient"}, None),
    ({"event": "auto_remediation", "ok": None, "playbook": "RestartAndRetryTransient"}, None),
    ({"event": "escalation", "ok": False, "reason": "AutoRemediationFailed"}, "Escalated to CEO (attempts exhausted)"),
    ({"event": "escalation", "ok": False, "reason": "NoPlaybook"}, "Escalated to CEO (no playbook matches)"),
    ({"event": "escalation", "ok": False, "reason": "SomethingNew"}, "Escalated to CEO (SomethingNew)"),
    ({"event": "remediation_refused", "ok": False, "gate": "silenced"}, None),
    ({"event": "no_action", "ok": True}, None),
])
def test_a_toast_says_resolved_only_for_a_verified_recovery_and_escalated_with_its_reason(entry, toast):
    assert toast_of(entry) == toast


class TestLogin:
    def test_the_console_sends_a_reader_without_a_session_to_the_login_form(self, console_app):
        client = console_app.test_client()
        answer = client.get("/console")
        assert answer.status_code == 303 and answer.headers["Location"].startswith("/console/login")
        form = client.get(answer.headers["Location"])
        assert form.status_code == 200 and "type='password'" in form.text

    def test_a_wrong_token_is_refused_and_sets_no_cookie(self, console_app):
        answer = log_in(console_app.test_client(), "wrong")
        assert answer.status_code == 401 and "neither the read token" in answer.text
        assert "Set-Cookie" not in answer.headers

    def test_the_read_token_gives_an_httponly_strict_cookie_not_a_token_in_the_url(self, console_app):
        client = console_app.test_client()
        answer = log_in(client, READ_TOKEN)
        assert answer.status_code == 303 and answer.headers["Location"] == "/console"
        cookie = answer.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert READ_TOKEN not in cookie
        page = client.get("/console")
        assert page.status_code == 200 and READ_TOKEN not in page.text and "Signed in to read" in page.text

    def test_a_login_posted_from_another_site_is_refused(self, console_app):
        answer = log_in(console_app.test_client(), READ_TOKEN, origin="https://evil.example")
        assert answer.status_code == 403 and "Set-Cookie" not in answer.headers

    @pytest.mark.parametrize(("headers", "status"), [
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, 303),  # a page that sends no referrer
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({}, 303),  # not a browser: it holds no cookie of ours to abuse
    ])
    def test_where_a_login_comes_from_is_the_browsers_word(self, console_app, headers, status):
        answer = console_app.test_client().post("/console/login", data={"token": READ_TOKEN}, headers=headers)
        assert answer.status_code == status

    def test_a_script_reads_the_stream_with_the_read_token_but_not_the_write_token(self, console_app):
        client = console_app.test_client()
        assert client.get("/console", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}).status_code == 303
        assert client.get("/console", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200

    def test_a_tampered_cookie_is_no_session(self, console_app):
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        value = client.get_cookie(COOKIE).value
        body, _, signature = value.partition(".")
        client.set_cookie(COOKIE, body.replace("A", "B", 1) + "." + signature)
        assert client.get("/console").status_code == 303

    def test_the_next_page_is_only_ever_a_console_path(self, console_app):
        answer = console_app.test_client().post("/console/login", data={
            "token": READ_TOKEN, "next": "//evil.example/console"}, headers={"Origin": HOST})
        assert answer.headers["Location"] == "/console"

    def test_the_event_stream_needs_a_session_or_the_read_token(self, console_app):
        answer = console_app.test_client().get("/api/v1/events")
        assert answer.status_code == 401 and answer.is_json


class TestSwitches:
    def test_a_reader_cannot_switch_the_kill_switch(self, console_app):
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        page = client.get("/console").text
        answer = client.post("/console/remediation", data={"enabled": "false", "csrf": csrf_of(page)},
                             headers={"Origin": HOST})
        assert answer.status_code == 403 and "needs the write token" in answer.text
        assert state_of(console_app).store.kill_switch().enabled

    def test_the_write_token_switches_it_with_the_sessions_csrf_token(self, console_app):
        client = console_app.test_client()
        log_in(client, WEBHOOK_TOKEN)
        page = client.get("/console").text
        assert "Signed in to switch" in page
        answer = client.post("/console/remediation", data={"enabled": "false", "reason": "maintenance <b>",
                                                            "csrf": csrf_of(page)}, headers={"Origin": HOST})
        assert answer.status_code == 303
        switch = state_of(console_app).store.kill_switch()
        assert (switch.enabled, switch.reason) == (False, "maintenance <b>")
        page = client.get(answer.headers["Location"]).text
        assert "Remediation: <strong>Off</strong>: maintenance &lt;b&gt;" in page
        state_of(console_app).events.flush()
        events = state_of(console_app).store.events_after(0, 10)
        assert [(e.kind, json.loads(e.body)["enabled"]) for e in events] == [("switches", False)]

    @pytest.mark.parametrize("csrf", [None, "", "forged"])
    def test_a_switch_without_the_sessions_csrf_token_is_refused(self, console_app, csrf):
        client = console_app.test_client()
        log_in(client, WEBHOOK_TOKEN)
        data = {"enabled": "false"} | ({"csrf": csrf} if csrf is not None else {})
        answer = client.post("/console/remediation", data=data, headers={"Origin": HOST})
        assert answer.status_code == 403 and "CSRF" in answer.text
        assert state_of(console_app).store.kill_switch().enabled

    def test_a_switch_from_another_origin_is_refused_even_with_the_token(self, console_app):
        client = console_app.test_client()
        log_in(client, WEBHOOK_TOKEN)
        csrf = csrf_of(client.get("/console").text)
        answer = client.post("/console/remediation", data={"enabled": "false", "csrf": csrf},
                             headers={"Origin": "https://evil.example"})
        assert answer.status_code == 403 and state_of(console_app).store.kill_switch().enabled

    def test_the_rollout_stage_is_set_and_a_bad_one_named_with_nothing_changed(self, console_app):
        client = console_app.test_client()
        log_in(client, WEBHOOK_TOKEN)
        csrf = csrf_of(client.get("/console").text)
        answer = client.post("/console/rollout", data={"agents": "CMO, Content", "classes": "TRANSIENT",
                                                       "csrf": csrf}, headers={"Origin": HOST})
        assert answer.status_code == 303
        rollout = state_of(console_app).engine.rollout()
        assert (rollout.agents, rollout.classes) == (("CMO", "Content"), ("TRANSIENT",))
        bad = client.post("/console/rollout", data={"agents": "*", "classes": "NOPE", "csrf": csrf},
                          headers={"Origin": HOST})
        assert bad.status_code == 422 and "NOPE" in bad.text
        assert state_of(console_app).engine.rollout().classes == ("TRANSIENT",)


def _open(app, agent: str) -> None:
    """An incident of AGENT, opened as Alertmanager would (the engine is not running: it stays queued)."""
    from tests.test_receiver_http import alert, payload
    answer = app.test_client().post("/api/v1/alerts", data=json.dumps(payload(alert(agent=agent))),
                                    headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                                    content_type="application/json")
    assert answer.status_code == 200, answer.text


class TestPages:
    def test_every_console_page_has_a_strict_policy_and_no_inline_script(self, console_app):
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        for path in ("/console", "/console/log", "/console/login"):
            answer = client.get(path)
            policy = answer.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
            assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", answer.text)), path
            assert " on" not in " ".join(re.findall(r"<[^>]+>", answer.text)).replace(" onerror", " XX"), path

    def test_an_agent_name_with_html_in_it_is_shown_as_text(self, console_app):
        # No edge of the layer accepts such a name (the webhook ignores it); a stored lineage line, or a label of
        # some exporter Prometheus scrapes, could still carry one.
        state = state_of(console_app)
        state.lineage.append({"event": "escalation", "agent": EVIL_AGENT, "ok": False, "before": {}, "after": {},
                              "reason": "AutoRemediationFailed", "trace_id": "ab" * 16})
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        escaped = "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#x27;"
        text = client.get("/console/log?agent=" + requests_quote(EVIL_AGENT)).text
        assert "<img src=x" not in text and text.count(escaped) >= 2  # the title and the entry
        from webhook_receiver.console_auth import Viewer
        from webhook_receiver.console_feed import tile
        shown = console_page.console([tile(EVIL_AGENT, ("escalated", "attempts_exhausted"), None, None)], {}, {},
                                     {}, [], Viewer("read"), None, None, True, 0)
        assert "<img src=x" not in shown and escaped in shown

    def test_the_remediation_log_pages_newest_first_to_older_entries(self, console_app):
        lineage = state_of(console_app).lineage
        for n in range(25):
            lineage.append({"event": "auto_remediation", "agent": "CMO", "ok": n % 2 == 0, "attempt": n,
                            "playbook": "RestartAndRetryTransient", "before": {"successRate": 0.5},
                            "after": {"successRate": 0.9}, "trace_id": f"{n:032x}",
                            "steps": [{"action": "restartAgent", "ok": True, "target": "http://agents/CMO"}],
                            "verification": {"ok": n % 2 == 0, "reason": "checks", "checks": {"lastTaskSucceeded":
                                                                                                True}}})
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        first = client.get("/console/log?agent=CMO").text
        attempts = [int(a) for a in re.findall(r"attempt (\d+)</h3>", first)]
        assert attempts == list(range(24, 4, -1))
        assert "restartAgent" in first and f"{24:032x}" in first and "successRate" in first
        older = re.search(r"id='older' href='([^']*)'", first).group(1).replace("&amp;", "&")
        second = client.get(older).text
        assert [int(a) for a in re.findall(r"attempt (\d+)</h3>", second)] == [4, 3, 2, 1, 0]
        assert "id='older'" not in second


def requests_quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe="")


class TestEventStream:
    def test_the_stream_resumes_after_the_last_event_id_with_each_agents_tile(self, console_app):
        state = state_of(console_app)
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        client.get("/console")  # starts the feed
        state.events.publish("step", "CMO", incident_id="i1", playbook="RestartAndRetryTransient", step="restartAgent")
        state.events.outcome({"event": "auto_remediation", "ok": True, "agent": "CMO",
                              "playbook": "RestartAndRetryTransient", "incident_id": "i1", "attempt": 1})
        state.events.flush()
        first, second = state.store.events_after(0, 10)[-2:]
        answer = client.get("/api/v1/events", headers={"Last-Event-ID": str(first.id)}, buffered=False)
        assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
        text = next(iter(answer.response)).decode()
        assert text.startswith("retry: 2000\n\n")
        frames = [f for f in text.split("\n\n") if f and not f.startswith(":")]
        assert frames[1].startswith(f"id: {second.id}\nevent: outcome\n") and len(frames) == 3
        snapshot = json.loads(frames[2].split("data: ", 1)[1])  # then every tile not Healthy: none here
        assert frames[2].startswith("event: tiles\n") and snapshot == {"tiles": [], "complete": True}
        data = json.loads(frames[1].split("data: ", 1)[1])
        assert data["toast"] == "Resolved by CoS: RestartAndRetryTransient"
        assert data["tile"]["label"] == "Healthy" and data["tile"]["agent"] == "CMO"
        answer.close()

    def test_a_stream_resuming_from_an_id_never_given_reloads(self, console_app):
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        answer = client.get("/api/v1/events?last_event_id=999999", buffered=False)
        frames = [frame.decode() for frame in answer.response]
        assert "\nevent: reset\n" in frames[-1] and len(frames) == 1

    def test_a_malformed_last_event_id_is_a_400(self, console_app):
        client = console_app.test_client()
        log_in(client, READ_TOKEN)
        assert client.get("/api/v1/events", headers={"Last-Event-ID": "1; drop"}).status_code == 400


class TestWeekKpis:
    def test_the_goals_are_the_thresholds_files(self):
        import yaml

        from devstack.checkout import REPO_ROOT as REPO
        from webhook_receiver.week_kpis import KPIS

        doc = yaml.safe_load((REPO / "alert_rules" / "thresholds.yaml").read_text())
        values = {k: v["value"] for section in doc.values() if isinstance(section, dict)
                  for k, v in section.items() if isinstance(v, dict) and "value" in v}
        named = [k for k in KPIS if k.threshold]
        assert len(named) == 4 and all(values[k.threshold] == k.limit for k in named)

    @pytest.mark.parametrize(("rows", "text", "met"), [
        ([{"metric": {}, "value": [0, "0.9"]}], "90.0 %", True),
        ([{"metric": {}, "value": [0, "0.5"]}], "50.0 %", False),
        ([{"metric": {}, "value": [0, "NaN"]}], "no data this week", None),
        ([], "no data this week", None),
    ])
    def test_a_kpi_is_judged_against_its_goal_only_on_a_value(self, rows, text, met):
        from webhook_receiver.week_kpis import read_kpis

        class Prometheus:
            def query(self, promql):
                return rows
        auto = read_kpis(Prometheus())[0]
        assert (auto["key"], auto["text"], auto["met"]) == ("auto_resolve", text, met)

    def test_unreachable_prometheus_makes_every_kpi_unknown_never_met(self):
        from webhook_receiver.upstreams import UpstreamError
        from webhook_receiver.week_kpis import read_kpis

        class Down:
            def query(self, promql):
                raise UpstreamError("http://prometheus: ConnectionError")
        kpis = read_kpis(Down())
        assert all(k["text"].startswith("unknown: ") and k["met"] is None for k in kpis)


class TestFeed:
    """The feed on a real SQLite store: one tail for every stream, tiles from the ledger, resumption by id."""

    @pytest.fixture
    def feed(self, app):
        from webhook_receiver.console_feed import ConsoleFeed

        state = state_of(app)
        made = ConsoleFeed(state.store, interval=0.05, reconcile=0.2)
        state.events.listeners.append(made.wake)
        made.start()
        yield made, state
        made.stop()

    def test_a_stream_waits_for_the_next_event_and_gets_it_with_the_agents_tile(self, feed):
        made, state = feed
        position = made.position()
        state.events.publish("step", "CMO", incident_id="x", playbook="RestartAndRetryTransient", step="restartAgent")
        batch = made.wait(position, 10)
        assert [(e.kind, e.data["agent"], e.data["step"]) for e in batch] == [("step", "CMO", "restartAgent")]
        assert batch[0].data["tile"]["state"] == "healthy" and batch[0].id == state.store.last_event_id()
        assert made.wait(batch[-1].seq, 0.05) == []  # nothing more: no busy loop

    def test_an_incident_that_opened_without_an_event_shows_when_the_tiles_are_reconciled(self, feed, app):
        made, _ = feed
        position = made.position()
        _open(app, "CMO")
        from devstack.polling import wait_until
        tiles = wait_until(lambda: [e for e in made.wait(position, 0.5) if e.kind == "tiles"], 10, "a tiles event")
        assert tiles[0].id is None and tiles[0].data["complete"] is False
        [shown] = tiles[0].data["tiles"]
        assert (shown["agent"], shown["label"], shown["reason"]) == ("CMO", "Recovering", "queued")
        assert made.snapshot().data["tiles"] == [shown]  # and a stream that starts now begins with it

    def test_resuming_replays_only_what_came_after_the_last_id_and_refuses_an_unknown_one(self, feed):
        made, state = feed
        for n in range(3):
            state.events.publish("step", "CMO", incident_id="x", step=f"s{n}")
        state.events.flush()
        from devstack.polling import wait_until
        wait_until(lambda: made.last_id == state.store.last_event_id(), 10, "the feed to read them")
        ids = [e.id for e in state.store.events_after(0, 10)]
        missed, _ = made.resume(ids[0])
        assert [e.id for e in missed] == ids[1:]
        assert made.resume(ids[-1])[0] == []
        assert made.resume(ids[-1] + 1000) is None


class TestEventWriter:
    def test_a_store_that_refuses_costs_the_decision_nothing_and_is_counted(self):
        from webhook_receiver.console_events import EventWriter
        from webhook_receiver.store import StoreError

        class Refusing:
            def append_events(self, rows):
                raise StoreError("ledger.sqlite3: cannot store the console events (disk I/O error)")
        writer = EventWriter(Refusing())
        writer.publish("step", "CMO", step="restartAgent")  # returns at once, whatever the store does
        writer.flush()
        assert writer.dropped == 1
        writer.close()

    def test_a_full_queue_drops_and_counts_instead_of_holding_the_caller(self):
        import threading

        from webhook_receiver.console_events import EventWriter

        writing, release = threading.Event(), threading.Event()

        class Slow:
            def append_events(self, rows):
                writing.set()
                release.wait(10)
                return list(range(len(rows)))
        writer = EventWriter(Slow(), capacity=2)
        writer.publish("step", "CMO", step="s0")
        # Once the writer holds s0 in the store, not before: it might otherwise take a batch of several.
        assert writing.wait(10)
        for n in range(1, 10):
            writer.publish("step", "CMO", step=f"s{n}")
        assert writer.dropped == 7  # one taken by the writer, two queued, the rest dropped
        release.set()
        writer.flush()
        writer.close()
