"""The closed loop on the real Prometheus and Alertmanager: alert -> playbook -> fresh verification -> resolution."""
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests
from flask import Flask, jsonify, request
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.drills import every_page
from devstack.fleet import fleet_heartbeat
from devstack.layer_stack import LayerStack
from devstack.local_stack import ServedApp
from devstack.polling import wait_until
from tests.conftest import real_binary
from tests.integration.small_agents import SmallAgents

pytestmark = pytest.mark.integration
AGENTS = {"CEO": "Executive", "CRO": "Revenue", "CMO": "Marketing", "COO": "Operations", "Content": "Content"}


class EscalationInbox:
    """Stands in for the CEO agent: records every escalation payload it receives."""

    def __init__(self):
        self.payloads: list[dict] = []
        self.headers: list[dict] = []
        self.app = Flask("escalation-inbox")
        self.app.add_url_rule("/escalations", view_func=self.receive, methods=["POST"])

    def receive(self):
        self.payloads.append(request.get_json())
        self.headers.append(dict(request.headers))
        return jsonify({"ok": True})


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    real_binary("prometheus")
    real_binary("alertmanager")
    agents = SmallAgents(AGENTS)
    inbox = EscalationInbox()
    spans = InMemorySpanExporter()
    with ServedApp(agents.app) as agents_server, ServedApp(inbox.app) as inbox_server:
        env = {"AUTOREM_ESCALATION_URL": inbox_server.url + "/escalations", "AUTOREM_VERIFY_TIMEOUT_SECONDS": "3",
               "AUTOREM_ESCALATION_TOKEN": "escalation-secret-value", "AUTOREM_AGENT_TOKEN": agents.token}
        with LayerStack(tmp_path_factory.mktemp("layer"), agents_server.url, env=env, span_exporter=spans) as stack:
            beat = fleet_heartbeat(agents, stack.push_url, stack.push_token, interval=0.3).start()
            try:
                yield stack, agents, inbox, spans
            finally:
                beat.stop()


def incidents(stack, agent):
    return stack.receiver_call("GET", f"/api/v1/incidents?agent={agent}").json()["incidents"]


def lineage(stack, agent):
    return every_page(lambda params: stack.receiver_call("GET", "/api/v1/lineage", params=params), "entries",
                      agent=agent)["entries"]


def am_alerts(stack, agent):
    reply = requests.get(stack.alertmanager.url + "/api/v2/alerts", params={"filter": f'agent="{agent}"'}, timeout=10)
    return reply.json()


def test_an_alert_runs_its_playbook_verifies_on_fresh_samples_and_resolves(loop):
    stack, agents, inbox, spans = loop
    agents.set("CMO", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)

    closed = wait_until(lambda: [i for i in incidents(stack, "CMO") if i["state"] == "closed"], 90,
                        "CMO's incident to be remediated and closed")
    incident = closed[0]
    assert incident["outcome"] == "auto_resolved"
    assert (incident["classification"], incident["playbook"]) == ("TRANSIENT", "RestartAndRetryTransient")
    assert incident["attempts"] == 1
    assert agents.calls[("CMO", "restartAgent")] == 1 and agents.calls[("CMO", "retryLastTask")] == 1

    [line] = [e for e in lineage(stack, "CMO") if e["event"] == "auto_remediation"]
    assert list(line)[:10] == ["ts", "actor", "event", "agent", "classification", "playbook", "attempt", "ok",
                               "before", "after"]
    assert line["ok"] is True and line["actor"] == "ChiefOfStaff"
    assert line["verification"]["checks"] == {"lastTaskSucceeded": True}
    assert set(line["before"]) >= {"successRate", "alignment", "backlogAgeMinutes"}
    assert set(line["after"]) >= {"successRate", "alignment", "backlogAgeMinutes"}
    assert [s["action"] for s in line["steps"]] == ["restartAgent", "retryLastTask"]
    # The agents refuse an action without their token: none came without it, and each step had its own key.
    assert agents.refused == []
    keys = [key for agent, _, key in agents.keys if agent == "CMO"]
    assert keys == [f"{incident['id']}:1:0", f"{incident['id']}:1:1"] == [s["idempotency_key"] for s in line["steps"]]
    assert agents.token not in json.dumps(lineage(stack, "CMO"))

    trace_spans = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == line["trace_id"]]
    by_name = {s.name: s for s in trace_spans}
    assert {"incident", "attempt", "step", "verify"} <= set(by_name)
    assert by_name["attempt"].parent.span_id == by_name["incident"].context.span_id
    assert by_name["verify"].parent.span_id == by_name["attempt"].context.span_id
    assert all(s.parent.span_id == by_name["attempt"].context.span_id for s in trace_spans if s.name == "step")


def test_an_unfixable_fault_escalates_after_exactly_max_attempts_with_the_pack_payload(loop):
    stack, agents, inbox, _ = loop
    agents.unfixable.add("Content")
    agents.set("Content", status="error", errorCode="CONFIG_MISSING", configHealthy=False)

    escalated = wait_until(lambda: [i for i in incidents(stack, "Content") if i["state"] == "escalated"], 120,
                           "Content's incident to be escalated")
    assert escalated[0]["attempts"] == 2
    assert agents.calls[("Content", "checkSecrets")] == 2
    attempts = [e for e in lineage(stack, "Content") if e["event"] == "auto_remediation"]
    assert [(e["attempt"], e["ok"], e["playbook"]) for e in attempts] == [(1, False, "FixConfig"),
                                                                           (2, False, "FixConfig")]

    payload = wait_until(lambda: next((p for p in inbox.payloads if p["agent"] == "Content"), None), 30,
                         "the escalation payload")
    assert payload["to"] == "CEO" and payload["reason"] == "AutoRemediationFailed"
    assert payload["lastTwoAttempts"] == ["FixConfig", "FixConfig"]
    assert [o["name"] for o in payload["recommendedOptions"]] == ["ReassignToCOO", "ReduceScopeAndRetry"]
    assert all(o["why"] for o in payload["recommendedOptions"])
    assert payload["lineageRef"].startswith("decision_lineage.jsonl#")
    escalation_line = next(e for e in lineage(stack, "Content") if e["event"] == "escalation")
    assert payload["lineageRef"].endswith(escalation_line["ts"])
    assert "escalation-secret-value" not in str(payload)
    assert any(h.get("Authorization") == "Bearer escalation-secret-value" for h in inbox.headers)

    alert = wait_until(lambda: [a for a in am_alerts(stack, "Content")
                                if a["labels"]["alertname"] == "AutonomyEscalated"], 30,
                       "AutonomyEscalated in Alertmanager")
    assert alert[0]["labels"]["escalated_class"] == "CONFIG"
    lineage_file = (stack.workdir / "receiver" / "decision_lineage.jsonl").read_text()
    assert "escalation-secret-value" not in lineage_file
    assert stack.webhook_token.reveal() not in lineage_file


def _notification(agent: str) -> dict:
    labels = {"alertname": "AgentTransientError", "agent": agent, "autonomy_class": "TRANSIENT",
              "code": "TIMEOUT", "severity": "warning"}
    return {"version": "4", "status": "firing", "receiver": "autonomy-receiver", "groupKey": f'{{}}:{{agent="{agent}"}}',
            "groupLabels": {"agent": agent}, "commonLabels": labels, "commonAnnotations": {},
            "externalURL": "http://alertmanager", "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": labels, "annotations": {}, "fingerprint": f"fp-{agent}",
                        "startsAt": datetime.now(timezone.utc).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prometheus/graph"}]}


def test_the_same_notification_delivered_three_times_runs_one_remediation(loop):
    stack, agents, _, _ = loop
    agents.set("COO", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
    wait_until(lambda: [a for a in am_alerts(stack, "COO") if a["labels"]["alertname"] == "AgentTransientError"],
               60, "COO's alert in Alertmanager")
    body = _notification("COO")
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(stack.receiver_call("POST", "/api/v1/alerts", json=body)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in replies] == [200, 200, 200]

    wait_until(lambda: [i for i in incidents(stack, "COO") if i["state"] == "closed"], 90, "COO's recovery")
    assert len(incidents(stack, "COO")) == 1
    assert agents.calls[("COO", "restartAgent")] == 1
    assert len([e for e in lineage(stack, "COO") if e["event"] == "auto_remediation"]) == 1


def test_a_silence_created_through_alertmanager_stops_a_remediation(loop):
    stack, agents, _, _ = loop
    now = datetime.now(timezone.utc)
    silence = {"matchers": [{"name": "agent", "value": "CEO", "isRegex": False, "isEqual": True}],
               "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
               "createdBy": "sre@example.invalid", "comment": "maintenance"}
    reply = requests.post(stack.alertmanager.url + "/api/v2/silences", json=silence, timeout=10)
    assert reply.status_code == 200, reply.text
    silence_id = reply.json()["silenceID"]

    agents.set("CEO", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
    wait_until(lambda: [a for a in am_alerts(stack, "CEO") if silence_id in a["status"]["silencedBy"]], 60,
               "CEO's alert silenced in Alertmanager")
    # A notification Alertmanager sent just before the silence existed arrives now.
    assert stack.receiver_call("POST", "/api/v1/alerts", json=_notification("CEO")).status_code == 200

    skipped = wait_until(lambda: [i for i in incidents(stack, "CEO") if i["state"] == "skipped"], 60,
                         "the remediation to be refused")
    assert "silenced" in skipped[0]["reason"]
    refusal = next(e for e in lineage(stack, "CEO") if e["event"] == "remediation_refused")
    assert refusal["gate"] == "silenced" and silence_id in refusal["reason"]
    assert not [call for call in agents.calls if call[0] == "CEO"]
