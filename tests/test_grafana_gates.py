"""Grafana-managed alerts made actionable, truthfully (issue 16, deliverable 8): a Grafana notification opens an
incident of `source: grafana`, whose state and silences are asked of Grafana's Alertmanager API before acting
and by the sweeper; held with a true reason when Grafana is not configured or not reachable; verified by the
Prometheus rule of the same name, and a rule of Grafana's alone said to be one. Engine on fakes
(tests/engine_harness.py); Grafana's API itself over loopback HTTP."""
import json
import time

import pytest
from flask import Flask, jsonify, request

from autonomy.settings import Secret, Settings, SettingsError
from devstack.local_stack import ServedApp
from tests.engine_harness import ALERT_OF_CLASS, WEBHOOK_TOKEN, FakeAlertmanager, iso
from webhook_receiver.upstreams import UpstreamError, grafana_alertmanager

GRAFANA_TOKEN = "glsa_SECRET_5e1d0c"


class FakeGrafana(FakeAlertmanager):
    """Grafana's Alertmanager API for its own alerts: what it holds per agent, its silences; `down` refuses."""

    def __init__(self):
        super().__init__()
        self.asked: list[str] = []  # agent_alerts per agent

    def agent_alerts(self, agent: str) -> list[dict]:
        self.asked.append(agent)
        if self.down:
            raise UpstreamError("http://grafana.test/api/alertmanager/grafana/api/v2/alerts: ConnectionError")
        return super().agent_alerts(agent)


def with_grafana(h) -> FakeGrafana:
    """AUTOREM_GRAFANA_URL set: the engine's upstreams carry Grafana's API."""
    h.engine.up.grafana = FakeGrafana()
    return h.engine.up.grafana


def grafana_notify(h, agent="CMO", cls="TRANSIENT", status="firing", alertname=None) -> dict:
    """Grafana Alerting's webhook (version 1) for one alert of AGENT's."""
    alert = {"status": status, "labels": {"alertname": alertname or ALERT_OF_CLASS[cls], "agent": agent,
                                          "autonomy_class": cls, "severity": "warning",
                                          "grafana_folder": "Autonomy layer", "__alert_rule_uid__": f"uid-{agent}"},
             "annotations": {}, "startsAt": iso(time.time()), "endsAt": "0001-01-01T00:00:00Z",
             "fingerprint": f"grafana-{agent}-{cls}", "values": {"B": 1}, "valueString": "[ var='B' value=1 ]"}
    body = {"version": "1", "status": status, "orgId": 1, "receiver": "autonomy-receiver", "alerts": [alert],
            "title": f"[{status.upper()}:1] {agent}", "state": "alerting" if status == "firing" else "ok",
            "message": ""}
    reply = h.web.post("/api/v1/alerts", data=json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()


def grafana_fire(h, agent="CMO", cls="TRANSIENT", **kwargs) -> str:
    answer = grafana_notify(h, agent, cls, **kwargs)
    return (answer["opened"] or answer["queued"] or answer["duplicates"])[0]


def failing_cmo(h):
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5)


def reasons(h, agent: str) -> set[str]:
    return {dict(k)["reason"] for k, v in h.samples("autonomy_agent_state_reason").items() if dict(k)["agent"] == agent}


# ------------------------------------------------------------------ the gate asks Grafana

def test_a_grafana_incident_on_a_mirrored_rule_is_remediated_when_grafana_says_active_and_unsilenced(h):
    h.build()
    failing_cmo(h)
    grafana = with_grafana(h)
    grafana.fire("CMO", "TRANSIENT")
    incident_id = grafana_fire(h)
    # Alertmanager holds nothing: asked, it would say "no longer firing". Grafana holds the alert.
    incident = h.run(incident_id)
    assert incident.source == "grafana"
    assert incident.state == "recovered" and incident.outcome == "auto_resolved"
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]
    assert grafana.asked == ["CMO"]
    [line] = h.lineage()
    # Verified on Prometheus's samples, by the layer's rule of the same name.
    assert line["ok"] and line["verification"]["reason"] == ("criteria held and the incident's conditions cleared "
                                                              "on fresh samples")
    assert h.metric("autonomy_incidents_total", source="grafana") == 1


def test_without_grafanas_url_a_grafana_incident_is_held_saying_so_and_a_later_notification_reconsiders_it(h):
    h.build()
    failing_cmo(h)
    incident = h.run(grafana_fire(h))
    assert h.agents.calls == []
    assert (incident.state, incident.state_reason) == ("skipped", "grafana_unconfigured")
    assert "AUTOREM_GRAFANA_URL" in incident.reason and "no longer firing" not in incident.reason
    [line] = h.lineage()
    assert (line["event"], line["gate"]) == ("remediation_refused", "grafana_unconfigured")
    assert "its state and silences are Grafana's" in line["reason"]
    assert reasons(h, "CMO") == {"grafana_unconfigured"}
    # Configured since (a restart): Grafana's repeat notification reopens it, and Grafana is asked.
    with_grafana(h).fire("CMO", "TRANSIENT")
    assert grafana_notify(h)["queued"] == [incident.id]
    assert h.run(incident.id).state == "recovered"
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]


def test_an_unreachable_grafana_holds_the_incident_as_an_unreachable_alertmanager_does(h):
    h.build()
    failing_cmo(h)
    grafana = with_grafana(h)
    grafana.fire("CMO", "TRANSIENT")
    grafana.down = True
    incident = h.run(grafana_fire(h))
    assert h.agents.calls == []
    assert (incident.state, incident.state_reason) == ("skipped", "grafana_unreachable")
    assert "cannot check the alert and its silences in Grafana" in incident.reason
    assert reasons(h, "CMO") == {"grafana_unreachable"}
    grafana.down = False  # back: the next notification reconsiders it
    assert grafana_notify(h)["queued"] == [incident.id]
    assert h.run(incident.id).state == "recovered"


def test_a_silence_in_grafana_refuses_the_grafana_incident_as_silenced(h):
    h.build()
    failing_cmo(h)
    with_grafana(h).fire("CMO", "TRANSIENT", silenced_by=["grafana-silence-7"])
    incident = h.run(grafana_fire(h))
    assert h.agents.calls == []
    assert (incident.state, incident.state_reason) == ("skipped", "silenced")
    [line] = h.lineage()
    assert line["gate"] == "silenced" and "silenced in Grafana (grafana-silence-7)" in line["reason"]


def test_an_alert_grafana_does_not_show_is_held_never_closed_by_its_absence(h):
    # A token that cannot see the rule's organization or folder gets the same empty answer as a resolved alert.
    h.build()
    failing_cmo(h)
    with_grafana(h)
    incident = h.run(grafana_fire(h))
    assert h.agents.calls == []
    assert incident.state == "skipped" and "Grafana shows no active alert of the agent" in incident.reason
    grafana_notify(h, status="resolved")  # Grafana's own word closes it
    assert h.store.get(incident.id).state == "closed"


def test_the_alertmanager_path_is_still_asked_of_alertmanager_and_never_of_grafana(h):
    h.build()
    failing_cmo(h)
    grafana = with_grafana(h)
    incident = h.run(h.fire())
    assert incident.source == "alertmanager" and incident.state == "recovered"
    assert grafana.asked == []


# ------------------------------------------------------------------ verification

def test_a_rule_of_grafanas_alone_cannot_be_re_checked_the_verdict_says_so_and_it_escalates(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    failing_cmo(h)
    with_grafana(h).fire("CMO", "TRANSIENT")
    incident = h.run(grafana_fire(h, alertname="CMOErrorsInGrafana"))
    [line] = h.lineage("auto_remediation")
    assert not line["ok"]
    assert "cannot re-check CMOErrorsInGrafana: Grafana's rule (Prometheus has no alerting rule of that name): its " \
           "condition cannot be re-evaluated on fresh samples" in line["verification"]["reason"]
    assert (incident.state, incident.state_reason) == ("escalated", "attempts_exhausted")


# ------------------------------------------------------------------ the sweeper

def escalated(h, incident_id: str) -> None:
    h.store.update(incident_id, state="escalated", outcome="escalated", reason="AutoRemediationFailed")


def test_the_sweeper_closes_alertmanagers_incidents_by_prometheus_and_never_grafanas_by_absence(h):
    h.build()
    grafana = with_grafana(h)
    grafana.fire("CMO", "TRANSIENT")
    from_grafana = {agent: grafana_fire(h, agent) for agent in ("CMO", "Content")}
    from_alertmanager = h.fire("CRO")
    for incident_id in (*from_grafana.values(), from_alertmanager):
        escalated(h, incident_id)
    grafana.asked.clear()
    h.prom.firing_alerts = {"CRO"}  # Prometheus knows nothing of Grafana's alerts: that must close nothing of theirs
    h.engine.sweep()
    assert {a: h.store.get(i).state for a, i in from_grafana.items()} == {"CMO": "escalated", "Content": "escalated"}
    assert h.store.get(from_alertmanager).state == "escalated"
    grafana.alerts.clear()
    h.prom.firing_alerts = set()
    h.engine.sweep()
    assert h.store.get(from_alertmanager).state == "closed"
    assert {h.store.get(i).state for i in from_grafana.values()} == {"escalated"}  # Grafana's resolved closes them


def test_without_grafana_the_sweeper_leaves_grafanas_incidents_to_grafanas_resolved_notification(h):
    h.build()
    incident_id = grafana_fire(h)
    escalated(h, incident_id)
    posted = len(h.am.posted)
    h.engine.sweep()  # Prometheus has no firing alert for CMO: not a reason to close a Grafana incident
    assert h.store.get(incident_id).state == "escalated"
    assert len(h.am.posted) == posted + 1  # its AutonomyEscalated kept alive in Alertmanager all the same
    grafana_notify(h, status="resolved")
    assert h.store.get(incident_id).state == "closed"


def test_the_sweeper_changes_nothing_of_grafanas_incidents_while_grafana_is_down(h):
    h.build()
    grafana = with_grafana(h)
    incident_id = grafana_fire(h)
    escalated(h, incident_id)
    grafana.down = True
    h.engine.sweep()
    assert h.store.get(incident_id).state == "escalated"


# ------------------------------------------------------------------ one agent, alerted by both

def test_an_agent_alerted_by_alertmanager_and_grafana_is_one_incident_owned_by_the_first_sender(h):
    h.build()
    first = h.fire("CMO")
    answer = grafana_notify(h)
    assert answer["opened"] == [] and answer["duplicates"] == [first]
    grafana_notify(h, status="resolved")  # Grafana's word does not close Alertmanager's incident
    incident = h.store.get(first)
    assert (incident.source, incident.state) == ("alertmanager", "open")
    h.notify(status="resolved")  # Alertmanager's does: marked resolved, closed once a worker's attempt ends
    assert h.store.get(first).resolved_at is not None


def test_an_agent_alerted_by_grafana_first_keeps_grafana_as_its_source(h):
    h.build()
    first = grafana_fire(h)
    answer = h.notify()
    assert answer["opened"] == [] and answer["duplicates"] == [first]
    h.notify(status="resolved")
    incident = h.store.get(first)
    assert (incident.source, incident.resolved_at) == ("grafana", None)


# ------------------------------------------------------------------ Grafana's API and the settings

@pytest.fixture
def grafana_http():
    """A loopback stand-in for Grafana's Alertmanager API, requiring the service-account token."""
    app, seen = Flask("grafana"), []

    def authorised():
        seen.append((request.path, request.headers.get("Authorization"), request.args.to_dict(flat=False)))
        return request.headers.get("Authorization") == f"Bearer {GRAFANA_TOKEN}"

    @app.get("/api/alertmanager/grafana/api/v2/alerts")
    def alerts():
        if not authorised():
            return jsonify({"message": "invalid API key"}), 401
        return jsonify([{"labels": {"alertname": "AgentTransientError", "agent": "CMO", "autonomy_class": "TRANSIENT"},
                         "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}}])

    @app.get("/api/alertmanager/grafana/api/v2/status")
    def status():
        return (jsonify({"cluster": {"status": "ready"}}), 200) if authorised() else (jsonify({}), 401)

    served = ServedApp(app).start()
    yield served.url, seen
    served.stop()


def test_grafanas_alertmanager_api_is_asked_at_its_path_with_the_bearer_token(grafana_http):
    url, seen = grafana_http
    api = grafana_alertmanager(url, Secret("AUTOREM_GRAFANA_TOKEN", GRAFANA_TOKEN))
    assert api.base_url == f"{url}/api/alertmanager/grafana"
    [alert] = api.agent_alerts("CMO")
    assert alert["status"]["state"] == "active"
    path, authorization, args = seen[-1]
    assert path == "/api/alertmanager/grafana/api/v2/alerts" and authorization == f"Bearer {GRAFANA_TOKEN}"
    assert args["filter"] == ['agent="CMO"'] and args["silenced"] == ["true"]
    assert api.ready()


def test_a_wrong_grafana_token_is_an_upstream_error_naming_the_url_and_never_the_token(grafana_http):
    url, _ = grafana_http
    api = grafana_alertmanager(url, Secret("AUTOREM_GRAFANA_TOKEN", "glsa_wrong"))
    with pytest.raises(UpstreamError) as caught:
        api.agent_alerts("CMO")
    assert str(caught.value) == f"{url}/api/alertmanager/grafana/api/v2/alerts: HTTP 401"
    assert not api.ready()


def test_grafanas_settings_refuse_credentials_in_the_url_and_read_the_token_from_a_file(tmp_path):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTOREM_GRAFANA_URL": "http://admin:hunter2@grafana:3000"})
    assert "AUTOREM_GRAFANA_URL: must not carry credentials" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    token = tmp_path / "grafana_token"
    token.write_text(GRAFANA_TOKEN + "\n")
    settings = Settings.from_env({"AUTOREM_GRAFANA_URL": "http://grafana:3000/",
                                  "AUTOREM_GRAFANA_TOKEN_FILE": str(token)})
    assert settings.grafana_url == "http://grafana:3000"
    assert settings.grafana_token.reveal() == GRAFANA_TOKEN and GRAFANA_TOKEN not in repr(settings)
    assert Settings.from_env({}).grafana_url == "" and Settings.from_env({}).grafana_token is None


def test_readiness_names_grafana(h):
    h.build()
    assert h.web.get("/readyz").get_json()["checks"]["grafana"] == "not configured"
    with_grafana(h)
    assert h.web.get("/readyz").get_json()["checks"]["grafana"] is True
