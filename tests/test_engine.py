"""RemediationEngine, built by create_app/init_app, with fake Prometheus and Alertmanager and real loopback agents
(tests/engine_harness.py). The engine runs synchronously: engine.process(incident_id)."""
import json
import re
import time

import pytest

from autonomy.signal_contract import Signal
from devstack.local_stack import free_port
from tests.engine_harness import ESCALATION_TOKEN, PUBLIC_URL, WEBHOOK_TOKEN, healthy_doc, iso
from webhook_receiver.lineage import LINEAGE_FILE, PACK_FIELDS


def failing_cmo(h, **changes):
    """CMO reports a TIMEOUT and a failed last task: TRANSIENT."""
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5,
               **changes)


# ------------------------------------------------------------------ a successful attempt

def test_a_successful_attempt_writes_one_auto_remediation_line_with_before_after_steps_and_trace_id(h):
    h.build()
    failing_cmo(h)
    incident = h.run(h.fire())
    assert incident.state == "recovered" and incident.outcome == "auto_resolved"
    assert incident.reason == "Resolved by CoS: RestartAndRetryTransient"
    assert incident.attempts == 1 and incident.playbooks_run == ("RestartAndRetryTransient",)
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]
    assert [(a, body) for a, _, body in h.agents.calls] == [("CMO", {"mode": "soft"}),
                                                           ("CMO", {"backoffMs": 1500, "max": 2})]

    [line] = h.lineage()
    assert list(line)[:len(PACK_FIELDS)] == list(PACK_FIELDS)
    assert (line["actor"], line["event"], line["agent"], line["classification"], line["playbook"], line["attempt"],
            line["ok"]) == ("ChiefOfStaff", "auto_remediation", "CMO", "TRANSIENT", "RestartAndRetryTransient", 1, True)
    assert line["before"] == {"successRate": 0.5, "alignment": 0.99, "backlogAgeMinutes": 1.0,
                              "costBurnRatePerHour": 0.1}
    assert line["after"] == {"successRate": 0.98, "alignment": 0.99, "backlogAgeMinutes": 1.0,
                             "costBurnRatePerHour": 0.1}
    assert [(s["action"], s["target"], s["ok"], s["status"]) for s in line["steps"]] == [
        ("restartAgent", "CMO", True, 200), ("retryLastTask", "CMO", True, 200)]
    assert line["steps"][0]["url"] == f"{h.agents.url}/agents/CMO/actions/restartAgent"
    assert line["verification"]["ok"] is True and line["verification"]["checks"] == {"lastTaskSucceeded": True}
    assert line["incident_id"] == incident.id
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]) and line["trace_id"] == incident.trace_id
    assert "errorCode TIMEOUT" in line["reasons"]
    assert h.prom.unanswered == []
    assert h.agents.escalations == [] and h.am.posted == []
    assert h.metric("autonomy_incident_outcomes_total", classification="TRANSIENT", outcome="auto_resolved") == 1
    assert h.metric("autonomy_remediation_attempts_total", agent="CMO", classification="TRANSIENT",
                    playbook="RestartAndRetryTransient", result="ok") == 1


def test_the_spans_nest_incident_then_attempt_then_steps_and_verify(h):
    h.build()
    failing_cmo(h)
    incident = h.run(h.fire())
    spans = h.spans_by_name()
    assert sorted(spans) == ["attempt", "incident", "step", "verify"]
    [root], [attempt], steps, [verify] = spans["incident"], spans["attempt"], spans["step"], spans["verify"]
    assert root.parent is None
    assert attempt.parent.span_id == root.context.span_id
    assert [s.attributes["autonomy.action"] for s in steps] == ["restartAgent", "retryLastTask"]
    assert all(s.parent.span_id == attempt.context.span_id for s in steps)
    assert verify.parent.span_id == attempt.context.span_id
    assert {s.context.trace_id for s in [root, attempt, verify, *steps]} == {int(incident.trace_id, 16)}
    assert root.attributes["autonomy.incident_id"] == incident.id
    assert attempt.attributes["autonomy.playbook"] == "RestartAndRetryTransient"
    assert verify.attributes["autonomy.ok"] is True


def test_a_resolved_notification_during_remediation_closes_the_incident_on_recovery(h):
    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    h.notify(status="resolved")
    incident = h.run(incident_id)
    assert incident.state == "closed" and incident.outcome == "auto_resolved"


def test_nothing_to_fix_on_the_latest_metrics_records_no_action(h):
    h.build()
    h.prom.add("CMO", "Marketing")  # healthy again by the time a worker looks
    incident = h.run(h.fire())
    assert incident.state == "recovered" and h.agents.calls == []
    [line] = h.lineage()
    assert line["event"] == "no_action" and line["ok"] is True


def test_an_alert_no_longer_held_by_alertmanager_closes_the_incident_without_acting(h):
    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    h.am.alerts.clear()
    incident = h.run(incident_id)
    assert incident.state == "closed" and incident.outcome == "self_resolved"
    assert h.agents.calls == []
    assert h.lineage()[0]["gate"] == "not_firing"


# ------------------------------------------------------------------ failing and escalating

def test_failed_verification_escalates_after_exactly_max_attempts_with_the_section_7_payload(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "2"})
    failing_cmo(h, directiveId="D-1234")

    def restart(agent, body):  # the restart clears the error but the backlog piles up: CAPACITY next
        h.prom.set(agent, status="degraded", errorCode=None, lastTaskSucceeded=None, backlogAgeMinutes=41)

    h.agents.handlers.update(restartAgent=restart, retryLastTask=lambda a, b: None,
                             reallocateSlots=lambda a, b: None, splitDirective=lambda a, b: None)
    incident = h.run(h.fire(directive_id="D-1234"))

    attempts = h.lineage("auto_remediation")
    assert [(e["attempt"], e["playbook"], e["ok"]) for e in attempts] == [
        (1, "RestartAndRetryTransient", False), (2, "RebalanceCapacity", False)]
    # The restart cleared the TIMEOUT (lastTaskSucceeded, inferred from the plain signal, holds) but the agent
    # is still not well: a success criterion alone is not recovery.
    assert attempts[0]["verification"]["reason"] == (
        "criteria held but AgentBacklogAgeAboveSLO, AgentDegraded, AgentSuccessRatioBelowSLO still true")
    assert attempts[1]["verification"]["reason"] == (
        "criteria not met on fresh samples: backlogAgeMaxMinutes; "
        "AgentBacklogAgeAboveSLO, AgentDegraded, AgentSuccessRatioBelowSLO still true")
    assert h.agents.actions() == ["restartAgent", "retryLastTask", "reallocateSlots", "splitDirective"]
    assert incident.state == "escalated" and incident.outcome == "escalated" and incident.attempts == 2

    [(auth, payload)] = h.agents.escalations
    assert auth == f"Bearer {ESCALATION_TOKEN}"
    assert payload["to"] == "CEO"
    assert payload["reason"] == "AutoRemediationFailed"
    assert payload["agent"] == "CMO"
    assert payload["context"] == {"directiveId": "D-1234"}
    assert payload["lastTwoAttempts"] == ["RestartAndRetryTransient", "RebalanceCapacity"]
    assert payload["recommendedOptions"] == [
        {"name": "ReassignToCOO", "why": "capacity + higher ROI path"},
        {"name": "ReduceScopeAndRetry", "why": "keeps SLA, lowers risk"}]
    [escalation] = h.lineage("escalation")
    assert payload["lineageRef"] == f"{LINEAGE_FILE}#{escalation['ts']}"
    assert escalation["payload"] == payload

    [alert] = h.am.posted
    assert alert["labels"] == {"alertname": "AutonomyEscalated", "agent": "CMO", "severity": "critical",
                               "escalated_class": "CAPACITY"}
    assert alert["annotations"]["summary"] == "Escalated to CEO (attempts exhausted)"
    assert alert["annotations"]["lineage_url"] == f"{PUBLIC_URL}/lineage?agent=CMO"
    assert alert["annotations"]["incident_id"] == incident.id
    assert h.metric("autonomy_escalations_total", reason="AutoRemediationFailed") == 1
    assert h.lineage("escalation_delivery") == []


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_the_number_of_attempts_before_escalating_is_autorem_max_attempts(h, max_attempts):
    h.build({"AUTOREM_MAX_ATTEMPTS": str(max_attempts)})
    failing_cmo(h)
    h.agents.unfixable.add("CMO")
    incident = h.run(h.fire())
    assert [e["attempt"] for e in h.lineage("auto_remediation")] == list(range(1, max_attempts + 1))
    assert h.agents.actions() == ["restartAgent", "retryLastTask"] * max_attempts
    assert incident.state == "escalated" and incident.attempts == max_attempts
    [(_, payload)] = h.agents.escalations
    assert payload["lastTwoAttempts"] == ["RestartAndRetryTransient"] * min(2, max_attempts)


def test_the_escalation_context_carries_the_agents_reported_context_on_the_alertmanager_path(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    failing_cmo(h, directiveId="D-1234")
    h.agents.unfixable.add("CMO")
    h.run(h.fire())  # the alert itself carries no directive_id label
    [(_, payload)] = h.agents.escalations
    assert payload["context"].get("directiveId") == "D-1234"


def test_an_action_endpoint_answering_500_is_retried_then_recorded_as_failed(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    failing_cmo(h)
    h.agents.handlers["restartAgent"] = lambda agent, body: 500
    incident = h.run(h.fire())
    assert h.agents.actions() == ["restartAgent"] * 3  # actions.retry.attempts, then the playbook stops
    [line] = h.lineage("auto_remediation")
    [step] = line["steps"]
    assert (step["action"], step["ok"], step["status"], step["attempts"], step["error"]) == (
        "restartAgent", False, 500, 3, "HTTP 500")
    assert line["ok"] is False
    assert line["verification"]["reason"] == "step restartAgent failed: HTTP 500"
    assert incident.state == "escalated"


def test_an_action_endpoint_refusing_with_4xx_is_not_retried(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    failing_cmo(h)
    h.agents.handlers["restartAgent"] = lambda agent, body: 409
    h.run(h.fire())
    assert h.agents.actions() == ["restartAgent"]
    assert h.lineage("auto_remediation")[0]["steps"][0]["error"] == "HTTP 409"


def test_a_hanging_action_endpoint_times_out(h):
    def short(doc):
        doc["actions"].update(timeoutSeconds=0.3, retry={"attempts": 1, "backoffSeconds": 0, "maxBackoffSeconds": 0})

    h.build({"AUTOREM_MAX_ATTEMPTS": "1"}, playbooks=short)
    failing_cmo(h)
    h.agents.handlers["restartAgent"] = lambda agent, body: h.agents.release.wait(10) and None
    started = time.monotonic()
    incident = h.run(h.fire())
    assert time.monotonic() - started < 5
    [step] = h.lineage("auto_remediation")[0]["steps"]
    assert step["ok"] is False and step["status"] is None
    assert step["error"] == "timed out after 0.3s"
    assert h.agents.actions() == ["restartAgent"]
    assert incident.state == "escalated"


def test_an_unreachable_prometheus_during_verification_fails_the_attempt_without_crashing(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    failing_cmo(h)

    def retry(agent, body):
        h.prom.down = True

    h.agents.handlers["retryLastTask"] = retry
    incident = h.run(h.fire())
    [line] = h.lineage("auto_remediation")
    assert line["ok"] is False
    assert line["verification"]["reason"].startswith("prometheus unreachable")
    assert line["after"] == {}
    assert incident.state == "escalated"


def test_prometheus_unreachable_before_an_attempt_falls_back_to_the_alert_class(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    failing_cmo(h)
    h.prom.down = True
    h.run(h.fire())
    [line] = h.lineage("auto_remediation")
    assert (line["classification"], line["playbook"]) == ("TRANSIENT", "RestartAndRetryTransient")
    assert line["before"] == {}
    assert "firing alert classed TRANSIENT" in line["reasons"]


# ------------------------------------------------------------------ gates

def test_the_kill_switch_refuses_and_runs_nothing(h):
    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    h.engine.set_enabled(False, "incident review")
    incident = h.run(incident_id)
    assert h.agents.calls == []
    assert incident.state == "skipped" and incident.reason.startswith("kill_switch:")
    [line] = h.lineage()
    assert (line["event"], line["gate"], line["ok"]) == ("remediation_refused", "kill_switch", False)
    assert h.metric("autonomy_remediation_refusals_total", gate="kill_switch") == 1
    # A skip is an outcome only once the incident ends as skipped (it may still be resumed and remediated).
    assert h.metric("autonomy_incident_outcomes_total", classification="TRANSIENT", outcome="skipped") == 0
    h.notify(status="resolved")
    assert h.metric("autonomy_incident_outcomes_total", classification="TRANSIENT", outcome="skipped") == 1


def test_switching_remediation_back_on_resumes_the_incidents_the_kill_switch_held_back(h):
    h.build({"AUTOREM_CANARY_AGENTS": "CMO,CRO"})
    failing_cmo(h)
    held = h.fire()
    h.prom.set("Content", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
    observed = h.fire("Content")  # skipped by the canary gate, not by the kill switch
    h.run(observed)
    h.engine.set_enabled(False, "incident review")
    h.run(held)
    assert h.store.get(held).state == "skipped"
    h.engine.set_enabled(True, "")
    assert h.store.get(held).state == "open"
    assert h.store.get(observed).state == "skipped"
    assert h.run(held).state == "recovered"
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]


def test_the_canary_gate_refuses_agents_outside_the_canary(h):
    h.build({"AUTOREM_CANARY_AGENTS": "Content"})
    failing_cmo(h)
    incident = h.run(h.fire())
    assert h.agents.calls == []
    assert incident.state == "skipped"
    assert h.lineage()[0]["gate"] == "canary"


def test_a_canary_agent_is_remediated(h):
    h.build({"AUTOREM_CANARY_AGENTS": "Content,CMO"})
    failing_cmo(h)
    assert h.run(h.fire()).state == "recovered"


def test_dry_run_records_what_would_run_and_calls_no_action_endpoint(h):
    h.build({"AUTOREM_DRY_RUN": "true"})
    failing_cmo(h)
    incident = h.run(h.fire())
    assert h.agents.calls == []
    [line] = h.lineage()
    assert (line["event"], line["gate"]) == ("remediation_refused", "dry_run")
    assert line["would_run"] == [
        {"action": "restartAgent", "target": "CMO", "url": f"{h.agents.url}/agents/CMO/actions/restartAgent",
         "body": {"mode": "soft"}},
        {"action": "retryLastTask", "target": "CMO", "url": f"{h.agents.url}/agents/CMO/actions/retryLastTask",
         "body": {"backoffMs": 1500, "max": 2}}]
    assert incident.state == "skipped"


def test_a_silenced_alert_is_not_remediated(h):
    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    h.am.alerts.clear()
    h.am.fire("CMO", "TRANSIENT", silenced_by=["silence-42"])
    incident = h.run(incident_id)
    assert h.agents.calls == []
    assert incident.state == "skipped"
    [line] = h.lineage()
    assert line["gate"] == "silenced" and "silence-42" in line["reason"]


def test_a_high_risk_step_escalates_with_high_risk_step_and_runs_nothing(h):
    def risky(doc):
        fix_config = next(p for p in doc["playbooks"] if p["name"] == "FixConfig")
        fix_config["steps"][1]["highRisk"] = True

    h.build(playbooks=risky)
    h.prom.add("CMO", "Marketing", status="error", errorCode="CONFIG_MISSING", configHealthy=False)
    incident = h.run(h.fire(cls="CONFIG"))
    assert h.agents.calls == []
    assert incident.state == "escalated" and incident.reason == "HighRiskStep"
    refused, escalation = h.lineage()
    assert (refused["gate"], refused["playbook"]) == ("high_risk", "FixConfig")
    assert "schemaMigrateIfNeeded" in refused["reason"]
    [(_, payload)] = h.agents.escalations
    assert payload["reason"] == "HighRiskStep" and payload["lastTwoAttempts"] == []
    assert escalation["payload"] == payload
    [alert] = h.am.posted
    assert alert["annotations"]["summary"] == "Escalated to CEO (a high-risk step needs a human)"
    assert h.metric("autonomy_escalations_total", reason="HighRiskStep") == 1


def test_the_budget_cap_refuses_a_playbook_that_increases_spend(h):
    h.build({"AUTOREM_BUDGET_CAP_DAILY_USD": "25"})
    h.prom.add("CMO", "Marketing", status="degraded", backlogAgeMinutes=41, costBurnRatePerHour=2.0)
    incident = h.run(h.fire(cls="CAPACITY"))
    assert h.agents.calls == []
    refused, _ = h.lineage()
    assert (refused["gate"], refused["playbook"]) == ("budget_cap", "RebalanceCapacity")
    assert "over the 25 cap" in refused["reason"]
    assert incident.state == "escalated" and incident.reason == "BudgetCap"
    assert h.agents.escalations[0][1]["reason"] == "BudgetCap"


def test_under_the_budget_cap_a_spend_increasing_playbook_runs(h):
    h.build({"AUTOREM_BUDGET_CAP_DAILY_USD": "25"})
    h.prom.add("CMO", "Marketing", status="degraded", backlogAgeMinutes=41, costBurnRatePerHour=0.5,
               directiveId="D-7")
    incident = h.run(h.fire(cls="CAPACITY"))
    assert h.agents.actions() == ["reallocateSlots", "splitDirective"]
    assert h.agents.calls[0][2] == {"from": "Content", "to": "CMO", "slots": 2}  # lowest-priority healthy donor
    assert incident.state == "recovered"


def test_the_kill_switch_flipped_during_a_playbook_stops_before_the_next_step(h):
    h.build()
    failing_cmo(h)

    def restart(agent, body):
        h.engine.set_enabled(False, "operator pulled the switch")

    h.agents.handlers["restartAgent"] = restart
    incident = h.run(h.fire())
    assert h.agents.actions() == ["restartAgent"]
    [line] = h.lineage()
    assert (line["event"], line["gate"], line["attempt"]) == ("remediation_refused", "kill_switch", 1)
    assert "stopped before step retryLastTask" in line["reason"]
    assert [s["action"] for s in line["steps"]] == ["restartAgent"]
    assert incident.state == "skipped"
    assert h.lineage("auto_remediation") == []


# ------------------------------------------------------------------ secrets

def test_no_secret_value_appears_in_the_lineage_or_the_escalation_payload(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    failing_cmo(h)
    h.agents.unfixable.add("CMO")
    incident = h.run(h.fire())
    assert incident.state == "escalated"
    [(auth, payload)] = h.agents.escalations
    assert auth == f"Bearer {ESCALATION_TOKEN}"  # the token was in use...
    lineage_text = (h.tmp_path / "data" / LINEAGE_FILE).read_text()
    for secret in (WEBHOOK_TOKEN, ESCALATION_TOKEN):
        assert secret not in lineage_text  # ...but is written nowhere
        assert secret not in json.dumps(payload)
        assert secret not in json.dumps(h.am.posted)
        assert secret not in json.dumps(h.web.get(f"/api/v1/incidents/{incident.id}").get_json())
    assert "SECRET" not in lineage_text


def test_an_unreachable_escalation_endpoint_is_recorded_without_leaking_the_token(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1", "AUTOREM_ESCALATION_URL": f"http://127.0.0.1:{free_port()}/x"})
    failing_cmo(h)
    h.agents.unfixable.add("CMO")
    incident = h.run(h.fire())
    [delivery] = h.lineage("escalation_delivery")
    assert delivery["reason"].startswith("escalation endpoint unreachable")
    assert ESCALATION_TOKEN not in json.dumps(delivery)
    assert incident.state == "escalated" and "delivery:" in incident.reason
    assert len(h.am.posted) == 1  # Alertmanager still gets the AutonomyEscalated alert


# ------------------------------------------------------------------ the direct signal path

def test_a_signal_incident_is_verified_on_the_next_reported_signal_and_closed(h):
    h.build()
    h.prom.add("CMO", "Marketing")  # unused on this path

    def doc(ts=None, **changes):
        d = healthy_doc("CMO", "Marketing")
        d.update(changes.pop("top", {}))
        d["checks"].update(changes)
        d["ts"] = iso(ts or time.time())
        return d

    failing = doc(top={"status": "error", "context": {"errorCode": "TIMEOUT"}}, lastTaskSucceeded=False)
    reply = h.web.post("/api/v1/signals", data=json.dumps(failing), content_type="application/json",
                       headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    [incident_id] = reply.get_json()["opened"]

    def retry(agent, body):  # the agent's next heartbeat, stamped after the action ends
        h.state.signals.put(Signal.from_document(doc(ts=time.time() + 1)))

    h.agents.handlers["retryLastTask"] = retry
    incident = h.run(incident_id)
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]
    assert incident.state == "closed" and incident.outcome == "auto_resolved"
    [line] = h.lineage("auto_remediation")
    assert line["ok"] is True
    assert line["verification"]["reason"] == "criteria held and the incident's conditions cleared on fresh samples"


# ------------------------------------------------------------------ reopening (see the ledger bug)

def test_an_incident_reopened_after_a_skip_ends_recovered_while_its_alert_still_fires(h):
    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    h.notify(status="resolved")  # the alert flapped while the incident was queued: resolved_at is set
    h.am.alerts.clear()
    h.am.fire("CMO", "TRANSIENT", silenced_by=["silence-1"])
    assert h.run(incident_id).state == "skipped"  # held back by the silence
    h.am.alerts.clear()
    h.am.fire("CMO", "TRANSIENT")  # the silence expired; the alert fires again
    assert h.notify()["queued"] == [incident_id]  # reopened
    assert h.run(incident_id).state == "recovered"  # fails: closed, because resolved_at is stale
    assert h.notify()["opened"] == []  # the alert catching up is absorbed by the reopen grace


def test_a_step_whose_data_is_absent_is_skipped_and_verification_still_judges(h):
    h.build({"AUTOREM_BUDGET_CAP_DAILY_USD": "25"})
    h.prom.add("CMO", "Marketing", status="degraded", backlogAgeMinutes=41, costBurnRatePerHour=0.5)
    incident = h.run(h.fire(cls="CAPACITY"))
    assert h.agents.actions() == ["reallocateSlots"]  # no directive to split
    [line] = h.lineage("auto_remediation")
    split = line["steps"][1]
    assert split["action"] == "splitDirective" and split["skipped"] is True
    assert "context.directiveId" in split["error"]
    assert line["ok"] is True and incident.state == "recovered"


def test_an_incident_for_an_agent_being_remediated_waits_for_its_turn(h):
    h.build()
    failing_cmo(h)
    first = h.fire()
    held = h.store.claim("another-worker", 60)  # as if another worker held CMO's incident right now
    assert held.agents == ("CMO",)
    assert h.engine.process(first) is False and h.work() is None  # nothing can take it meanwhile
    assert h.agents.calls == [] and h.store.get(first).state == "open"
    h.store.release(held)
    assert h.work() == first  # its turn, once the other worker let CMO go


def test_an_attempt_interrupted_by_a_crash_is_run_again_after_a_restart(h):
    from devstack.polling import wait_until

    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    # As a crash would leave it: attempt 1 started (state remediating), no lineage line written.
    h.store.update(incident_id, state="remediating", attempts=1, playbooks_run=("RestartAndRetryTransient",))
    h.engine.start(workers=1, sweeper=False)
    done = wait_until(lambda: (i := h.store.get(incident_id)).state == "recovered" and i, 30, "the resumed attempt")
    assert done.attempts == 1 and done.playbooks_run == ("RestartAndRetryTransient",)
    assert [(e["attempt"], e["ok"]) for e in h.lineage("auto_remediation")] == [(1, True)]


def test_the_sweeper_asks_prometheus_once_and_closes_only_incidents_whose_alerts_are_gone(h):
    h.build()
    ids = {agent: h.fire(agent) for agent in ("CMO", "CRO", "Content", "COO")}
    h.store.update(ids["CMO"], state="escalated", outcome="escalated", reason="verification failed")
    h.store.update(ids["CRO"], state="skipped", outcome="skipped", reason="canary: not in the canary")
    h.store.update(ids["Content"], state="recovered", outcome="auto_resolved", recovered_at=time.time())
    # COO stays open: a worker owns it, the sweeper never touches it.
    h.prom.firing_alerts = {"CMO", "Content"}
    posted = len(h.am.posted)
    h.engine.sweep()
    assert [q for q in h.prom.queries if q.startswith("ALERTS")] == [
        'ALERTS{alertstate="firing", autonomy_class=~"CONFLICT|CONFIG|DATA_DEP|TRANSIENT|CAPACITY"}']
    assert {agent: h.store.get(i).state for agent, i in ids.items()} == {
        "CMO": "escalated", "CRO": "closed", "Content": "recovered", "COO": "open"}
    assert len(h.am.posted) == posted + 1  # the still-escalated CMO's AutonomyEscalated alert, re-posted
    h.prom.firing_alerts = set()
    h.engine.sweep()
    assert {agent: h.store.get(i).state for agent, i in ids.items()} == {
        "CMO": "closed", "CRO": "closed", "Content": "closed", "COO": "open"}


def test_the_sweeper_changes_nothing_while_prometheus_is_down(h):
    h.build()
    incident_id = h.fire("CMO")
    h.store.update(incident_id, state="escalated", outcome="escalated", reason="verification failed")
    h.prom.down = True
    h.engine.sweep()
    assert h.store.get(incident_id).state == "escalated"
