"""Verdicts that are true, on the real Prometheus and Alertmanager with the receiver as a real process
(tests/integration/receiver_process.py): a fix whose criterion holds while the SLO stays breached escalates,
a section 2-only agent's TIMEOUT resolves, a conflict is one incident with its loser throttled once, a
restarted receiver exports Escalated from its first scrape, a silence lifted after a manual fix leads to
self-resolved without action. No sleeps: every wait is a deadline on an observable condition."""
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from devstack.polling import wait_until
from tests.conftest import real_binary
from tests.integration.receiver_process import ProcessLayer, ScriptedAgents, webhook_notification

pytestmark = pytest.mark.integration
# Agents outside playbooks.yaml take the domain their signal declares.
AGENTS = {"CEO": "Executive", "CRO": "Revenue", "CMO": "Marketing", "COO": "Operations", "Content": "Content",
          "Support": "Operations"}
SETTLE = 120.0  # a ceiling: each wait takes seconds on an idle machine


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    real_binary("prometheus")
    real_binary("alertmanager")
    agents = ScriptedAgents(AGENTS)
    # A failed verification waits this long; healthy ones end in a second or two.
    env = {"AUTOREM_VERIFY_TIMEOUT_SECONDS": "8",
           # The receiver judges an agent silent only after 30 s here, so a stalled heartbeat in the silence
           # test is a late sample, not a silent agent.
           "AUTOREM_AGENT_SILENT_SECONDS": "30"}
    with ProcessLayer(tmp_path_factory.mktemp("verdicts"), agents, receiver_env=env) as running:
        yield running


def ended(rec, agent, *states):
    return next((i for i in rec.incidents(agent) if i["state"] in states), None)


def events(rec, agent, event):
    return [e for e in rec.lineage(agent)["entries"] if e["event"] == event]


def test_a_capacity_fix_that_leaves_the_success_slo_breached_escalates_and_is_never_resolved(layer):
    rec, agents = layer.receiver, layer.agents
    agents.set("COO", successRate=0.70, backlogAgeMinutes=41)
    incident = wait_until(lambda: ended(rec, "COO", "escalated"), SETTLE, "COO to be escalated")
    attempts = events(rec, "COO", "auto_remediation")
    assert [(e["attempt"], e["playbook"], e["ok"]) for e in attempts] == [
        (1, "RebalanceCapacity", False), (2, "RebalanceCapacity", False)]
    for attempt in attempts:
        assert attempt["verification"]["checks"] == {"backlogAgeMaxMinutes": True}
        assert "criteria held but" in attempt["verification"]["reason"]
        assert "AgentSuccessRatioBelowSLO" in attempt["verification"]["still_true"]
    assert attempts[1]["backoff_s"] > 0  # spaced, not back to back
    assert incident["outcome"] == "escalated" and incident["state_reason"] == "attempts_exhausted"
    assert all(i["outcome"] != "auto_resolved" for i in rec.incidents("COO"))
    assert agents.calls[("COO", "reallocateSlots")] == 2
    wait_until(lambda: layer.inbox.for_agent("COO"), SETTLE, "COO's escalation payload")


def test_a_section_2_only_agents_timeout_is_verified_and_resolved(layer):
    rec, agents = layer.receiver, layer.agents
    agents.set("CEO", plain=True)
    agents.set("CEO", status="error", errorCode="TIMEOUT")
    incident = wait_until(lambda: ended(rec, "CEO", "recovered", "closed"), SETTLE, "CEO's TIMEOUT to be resolved")
    assert incident["outcome"] == "auto_resolved"
    [line] = events(rec, "CEO", "auto_remediation")
    assert line["ok"] and line["verification"]["checks"] == {"lastTaskSucceeded": True}
    assert line["after_fresh"] is True


def test_a_conflict_between_cmo_and_cro_is_one_incident_and_the_loser_is_throttled_once(layer):
    rec, agents = layer.receiver, layer.agents
    agents.set("CRO", directiveId="D-REV-1", alignment=0.85)
    agents.set("CMO", directiveId="D-REV-1", alignment=0.85)
    conflict = wait_until(lambda: next((i for i in rec.incidents("CMO") if i["conflict_key"] == "directive:D-REV-1"
                                        and i["outcome"] == "auto_resolved"), None), SETTLE,
                          "the conflict to be resolved")
    assert sorted(conflict["claimants"]) == ["CMO", "CRO"]
    assert [i["id"] for i in rec.incidents("CRO") if i["conflict_key"]] == [conflict["id"]]
    throttled = [(agent, body) for agent, action, body in agents.call_log if action == "throttleAgent"]
    assert throttled == [("CMO", {"agent": "CMO", "maxConcurrent": 1, "minutes": 20})]
    assert agents.calls[("CMO", "reassignOverlaps")] + agents.calls[("CRO", "reassignOverlaps")] == 1
    [line] = [e for e in rec.call("GET", "/api/v1/lineage", params={"incident": conflict["id"]}).json()["entries"]
              if e["event"] == "auto_remediation"]
    assert (line["arbitration"]["winner"], line["arbitration"]["loser"]) == ("CRO", "CMO")
    # The claimants' alignment was the conflict's doing: no capacity playbook ran on either.
    assert not [c for c in agents.call_log if c[0] in ("CMO", "CRO") and c[1] == "reallocateSlots"]


def test_a_restarted_receiver_exports_escalated_from_its_first_scrape(layer):
    rec, agents, prometheus = layer.receiver, layer.agents, layer.prometheus
    agents.unfixable.add("Content")
    agents.set("Content", status="error", errorCode="CONFIG_MISSING", configHealthy=False)
    wait_until(lambda: ended(rec, "Content", "escalated"), SETTLE, "Content to be escalated")
    rec.stop()
    rec.start()
    started = time.time()
    # The new process's own exposition, before it has done anything: the state comes from the ledger.
    text = requests.get(rec.url + "/metrics", timeout=10).text
    assert 'autonomy_agent_state{agent="Content",autonomy_agent_state="escalated"} 1.0' in text
    assert 'autonomy_agent_state_reason{agent="Content",reason="attempts_exhausted"} 1.0' in text

    def scraped_since_restart():
        rows = prometheus.query(
            'autonomy_agent_state{agent="Content",autonomy_agent_state="escalated"}[1m]')
        values = [(float(t), v) for row in rows for t, v in row.get("values", []) if float(t) > started]
        return values or None
    samples = wait_until(scraped_since_restart, SETTLE, "Prometheus to scrape the restarted receiver")
    assert samples and all(v == "1" for _, v in samples), samples
    first_scrape = min(t for t, _ in samples)

    # A rule evaluation stamped just after the scrape's timestamp may run before that scrape was ingested (and
    # see no state, so 0): from two evaluation intervals on, every evaluation has seen it.
    settled = first_scrape + 2 * 15 * layer.time_factor

    def tile_since_first_scrape():
        rows = prometheus.query('agent:autonomy_agent_state:code{agent="Content"}[1m]')
        values = [v for row in rows for t, v in row.get("values", []) if float(t) >= settled]
        return values or None
    assert set(wait_until(tile_since_first_scrape, SETTLE, "the tile recording after the restart")) == {"2"}


def test_a_silence_lifted_after_a_manual_fix_leads_to_self_resolved_and_no_action(layer):
    rec, agents, am = layer.receiver, layer.agents, layer.alertmanager
    now = datetime.now(timezone.utc)
    silence = {"matchers": [{"name": "agent", "value": "Support", "isRegex": False, "isEqual": True}],
               "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
               "createdBy": "sre@example.invalid", "comment": "working on Support by hand"}
    silence_id = requests.post(am.url + "/api/v2/silences", json=silence, timeout=10).json()["silenceID"]
    agents.set("Support", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
    wait_until(lambda: [a for a in layer.am_alerts("Support") if silence_id in a["status"]["silencedBy"]], SETTLE,
               "Support's alert silenced in Alertmanager")
    # A notification Alertmanager sent just before the silence existed: held by the silence.
    assert rec.call("POST", "/api/v1/alerts", json=webhook_notification("Support")).status_code == 200
    held = wait_until(lambda: ended(rec, "Support", "skipped"), SETTLE, "Support's incident to be held")
    assert held["state_reason"] == "silenced"

    # The SRE fixes Support by hand; its next heartbeat has not reached Prometheus yet when the silence goes.
    agents.freeze("Support")
    agents.set("Support", status="healthy", errorCode=None, lastTaskSucceeded=True)
    requests.delete(f"{am.url}/api/v2/silence/{silence_id}", timeout=10).raise_for_status()
    assert rec.call("POST", "/api/v1/alerts", json=webhook_notification("Support")).status_code == 200
    wait_until(lambda: ended(rec, "Support", "open", "remediating", "recovered"), SETTLE,
               "the incident to be taken up again")
    agents.thaw("Support")  # the fresh, healthy sample arrives

    done = wait_until(lambda: ended(rec, "Support", "recovered", "closed"), SETTLE, "Support's incident to end")
    assert done["outcome"] == "self_resolved" and done["id"] == held["id"]
    assert not [c for c in agents.call_log if c[0] == "Support"]  # nothing ran on the healed agent
    assert [e["incident_id"] for e in events(rec, "Support", "no_action")] == [held["id"]]
