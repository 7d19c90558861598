"""Verdicts that are true, on the engine with fakes (tests/engine_harness.py): "resolved" only when the agent
really recovered, section 2-only agents verifiable, one incident per conflict, states from the ledger, KPIs
counted once by what really happened, complete lineage, spaced attempts, fresh evidence after a hold."""
import time

import pytest

from autonomy.signal_contract import Signal
from tests.engine_harness import Harness, iso

HISTOGRAM = "autonomy_recovery_seconds"


def outcomes(h) -> dict[tuple[str, str], float]:
    return {(dict(k)["classification"], dict(k)["outcome"]): v
            for k, v in h.samples("autonomy_incident_outcomes_total").items() if v}


def tile(h, agent) -> tuple[str | None, set[str]]:
    states = [dict(k)["autonomy_agent_state"] for k, v in h.samples("autonomy_agent_state").items()
              if v == 1 and dict(k)["agent"] == agent]
    reasons = {dict(k)["reason"] for k, v in h.samples("autonomy_agent_state_reason").items()
               if dict(k)["agent"] == agent}
    return (states[0] if states else None), reasons


# ------------------------------------------------------------------ criteria held, condition persists

def test_a_capacity_fix_whose_criterion_holds_while_the_success_slo_stays_breached_is_never_resolved(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "2"})
    h.prom.add("CMO", "Marketing", backlogAgeMinutes=41, successRate=0.70)
    incident = h.run(h.fire(cls="CAPACITY"))  # AgentBacklogAgeAboveSLO
    attempts = h.lineage("auto_remediation")
    assert [(e["attempt"], e["playbook"], e["ok"]) for e in attempts] == [
        (1, "RebalanceCapacity", False), (2, "RebalanceCapacity", False)]
    assert attempts[0]["verification"]["checks"] == {"backlogAgeMaxMinutes": True}
    assert attempts[0]["verification"]["reason"] == "criteria held but AgentSuccessRatioBelowSLO still true"
    assert attempts[0]["after"]["backlogAgeMinutes"] == 5 and attempts[0]["after"]["successRate"] == 0.70
    assert incident.state == "escalated" and incident.outcome == "escalated"
    assert incident.state_reason == "attempts_exhausted"
    assert outcomes(h) == {("CAPACITY", "escalated"): 1}
    assert h.samples(HISTOGRAM + "_count")[(("classification", "CAPACITY"),)] == 0
    assert tile(h, "CMO") == ("escalated", {"attempts_exhausted"})


def test_an_alert_prometheus_has_no_rule_for_cannot_be_verified_and_is_never_resolved(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.prom.missing_rules.add("AgentTransientError")
    incident = h.run(h.fire())
    [line] = h.lineage("auto_remediation")
    assert not line["ok"]
    assert "cannot re-check AgentTransientError: Prometheus has no alerting rule of that name" in \
        line["verification"]["reason"]
    assert incident.state == "escalated"


# ------------------------------------------------------------------ agents that send only the section 2 signal

def test_a_section_2_only_agents_timeout_is_verified_and_resolved_on_the_prometheus_path(h):
    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", plain=True)
    incident = h.run(h.fire())
    [line] = h.lineage("auto_remediation")
    assert line["ok"] and line["verification"]["checks"] == {"lastTaskSucceeded": True}
    assert incident.state == "recovered" and incident.outcome == "auto_resolved"


def test_a_section_2_only_agents_timeout_is_verified_and_resolved_on_the_direct_path(h):
    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", plain=True)
    doc = {**h.prom.docs["CMO"], "ts": iso(time.time())}
    [incident_id] = h.post_signal(doc)["opened"]

    def restart(agent, body):  # the agent's next heartbeat, healthy and still without checks
        h.prom.set(agent, status="healthy", errorCode=None)
        h.state.signals.put(Signal.from_document({**h.prom.docs[agent], "ts": iso(time.time() + 1)}))

    h.agents.handlers["restartAgent"] = restart
    incident = h.run(incident_id)
    [line] = h.lineage("auto_remediation")
    assert line["ok"] and line["verification"]["checks"] == {"lastTaskSucceeded": True}
    assert incident.state == "closed" and incident.outcome == "auto_resolved"


# ------------------------------------------------------------------ one incident per conflict

def overlap(h, loser="CMO", loser_domain="Marketing"):
    h.prom.add(loser, loser_domain, directiveId="D-REV-1", alignment=0.85, status="degraded")
    h.prom.set("CRO", directiveId="D-REV-1", alignment=0.85)


def test_a_conflict_between_cmo_and_cro_is_one_incident_remediated_once_and_the_loser_throttled_once(h):
    h.build({"AUTOREM_PRIORITY": "Revenue,Marketing,Content"})
    overlap(h)
    conflict = h.fire("CMO", "CONFLICT", alertname="DirectiveClaimedByMultipleAgents", directive_id="D-REV-1")
    assert h.fire("CRO", "CONFLICT", alertname="DirectiveClaimedByMultipleAgents",
                  directive_id="D-REV-1") == conflict  # the other claimant's alert joins it
    symptom = h.fire("CRO", "CAPACITY", alertname="AgentAlignmentBelowSLO")  # CRO's own incident
    h.engine.process(symptom)  # waits: the conflict goes first
    assert h.agents.calls == [] and h.store.get(symptom).state == "open"

    incident = h.run(conflict)
    assert incident.claimants == ("CMO", "CRO") and incident.outcome == "auto_resolved"
    assert h.agents.actions() == ["applyPriorityRules", "reassignOverlaps", "throttleAgent"]
    throttled = [(agent, body) for agent, action, body in h.agents.calls if action == "throttleAgent"]
    assert throttled == [("CMO", {"agent": "CMO", "maxConcurrent": 1, "minutes": 20})]
    [line] = h.lineage("auto_remediation")
    assert line["arbitration"] == {"claimants": ["CRO", "CMO"], "domains": {"CMO": "Marketing", "CRO": "Revenue"},
                                   "priority": ["Revenue", "Marketing", "Content"], "winner": "CRO", "loser": "CMO"}
    assert [s["body"] for s in line["steps"]] == [
        {"order": ["Revenue", "Marketing", "Content"]},
        {"policy": "revenue_first", "directiveId": "D-REV-1", "winner": "CRO"},
        {"agent": "CMO", "maxConcurrent": 1, "minutes": 20}]
    assert set(line["verification"]["checks"]) == {"conflictCleared[CMO]", "conflictCleared[CRO]",
                                                   "alignmentMin[CMO]", "alignmentMin[CRO]"}
    assert outcomes(h) == {("CONFLICT", "auto_resolved"): 1}  # counted once

    # CRO's own incident now runs: its alignment was the conflict's doing, there is nothing left to fix.
    assert h.run(symptom).state == "recovered"
    assert h.agents.actions() == ["applyPriorityRules", "reassignOverlaps", "throttleAgent"]
    assert h.lineage("no_action")[0]["incident_id"] == symptom


def test_a_symptom_of_a_conflict_a_person_owns_is_held_not_remediated_and_not_credited(h):
    # Found by the soak: the conflict escalated, CRO's own alignment incident ran RebalanceCapacity, and when the
    # person fixed the conflict its verdict read "resolved by the layer".
    h.build({"AUTOREM_PRIORITY": "Revenue,Marketing,Content", "AUTOREM_MAX_ATTEMPTS": "1"})
    overlap(h)
    h.agents.handlers["reassignOverlaps"] = lambda agent, body: 409
    conflict = h.fire("CMO", "CONFLICT", alertname="DirectiveClaimedByMultipleAgents", directive_id="D-REV-1")
    symptom = h.fire("CRO", "CAPACITY", alertname="AgentAlignmentBelowSLO")
    assert h.run(conflict).state == "escalated"
    calls = len(h.agents.calls)
    held = h.run(symptom)
    assert len(h.agents.calls) == calls, "nothing runs for the symptom"
    assert (held.state, held.outcome, held.state_reason) == ("skipped", "skipped", "conflict_escalated")
    [refused] = h.lineage("remediation_refused")
    assert refused["gate"] == "conflict_escalated" and "directive:D-REV-1" in refused["reason"]
    assert ("CAPACITY", "auto_resolved") not in outcomes(h)
    assert tile(h, "CRO")[0] == "escalated"  # a person owns it: the conflict, and with it this


def test_an_agents_own_problem_with_a_cause_still_runs_beside_its_escalated_conflict(h):
    h.build({"AUTOREM_PRIORITY": "Revenue,Marketing,Content", "AUTOREM_MAX_ATTEMPTS": "1"})
    overlap(h)
    h.agents.handlers["reassignOverlaps"] = lambda agent, body: 409
    conflict = h.fire("CMO", "CONFLICT", alertname="DirectiveClaimedByMultipleAgents", directive_id="D-REV-1")
    assert h.run(conflict).state == "escalated"
    h.prom.set("CRO", status="error", errorCode="TIMEOUT")
    incident = h.run(h.fire("CRO", "TRANSIENT"))
    assert incident.classification == "TRANSIENT" and incident.state_reason != "conflict_escalated"
    assert "restartAgent" in h.agents.actions()


def test_a_conflict_the_priority_order_does_not_rank_is_escalated_not_guessed(h):
    h.build()  # the pack's default order: Revenue, Marketing, Content
    h.prom.add("CEO", "Executive", directiveId="D-CNT-1", alignment=0.85)
    h.prom.set("Content", directiveId="D-CNT-1", alignment=0.85)
    incident = h.run(h.fire("CEO", "CONFLICT", alertname="DirectiveClaimedByMultipleAgents", directive_id="D-CNT-1"))
    assert h.agents.calls == []  # Content is not made the winner over an Executive-domain agent
    assert incident.state == "escalated" and incident.reason == "PriorityUnranked"
    assert incident.state_reason == "priority_unranked"
    refused = h.lineage("remediation_refused")[0]
    assert refused["gate"] == "priority_unranked" and "does not rank CEO (Executive)" in refused["reason"]
    assert h.agents.escalations[0][1]["reason"] == "PriorityUnranked"
    assert h.agents.escalations[0][1]["claimants"] == ["CEO", "Content"]
    [alert] = h.am.posted
    assert alert["annotations"]["summary"] == "Escalated to CEO (the priority order does not decide the conflict)"


def test_on_the_direct_path_two_claimants_signals_open_one_conflict_incident(h):
    h.build()
    overlap(h)
    now = iso(time.time())
    body = h.post_signal([{**h.prom.docs["CMO"], "ts": now}, {**h.prom.docs["CRO"], "ts": now}])
    conflicts = [i for i in h.store.open_incidents() if i.conflict_key]
    assert [i.conflict_key for i in conflicts] == ["directive:D-REV-1"]
    assert conflicts[0].claimants == ("CMO", "CRO") and conflicts[0].id in body["opened"]


# ------------------------------------------------------------------ spaced attempts

def test_the_second_attempt_waits_the_retry_policys_backoff_and_records_it(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "2", "AUTOREM_ATTEMPT_BACKOFF_SECONDS": "0.4"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.agents.unfixable.add("CMO")
    h.run(h.fire())
    first, second = h.lineage("auto_remediation")
    assert first["backoff_s"] == 0
    assert 0.36 <= second["backoff_s"] <= 0.44  # 0.4 s +/- the policy's 10 % jitter
    first_call_of_attempt_2 = h.agents.call_times[2]
    attempt_1_written = time.mktime(time.strptime(first["ts"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert first_call_of_attempt_2 - attempt_1_written >= 0.3  # not back to back (ts is to the second)


# ------------------------------------------------------------------ fresh evidence after a hold is lifted

def silenced_then_lifted(h):
    """CMO fails; its alert is silenced (skipped); a person heals it; the silence ends, the alert fires again."""
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    incident_id = h.fire()
    h.am.alerts.clear()
    h.am.fire("CMO", "TRANSIENT", silenced_by=["silence-7"])
    assert h.run(incident_id).state == "skipped"
    # Healed by hand, but Prometheus still holds the sample from before (the next heartbeat has not come yet).
    h.prom.frozen["CMO"] = time.time() - 30
    h.am.alerts.clear()
    h.am.fire("CMO", "TRANSIENT")
    assert h.notify()["queued"] == [incident_id]
    assert h.store.get(incident_id).gate_changed_at is not None
    return incident_id


def test_after_a_silence_is_lifted_the_layer_waits_for_a_fresh_sample_and_a_healed_agent_is_left_alone(h):
    h.build()
    incident_id = silenced_then_lifted(h)

    def next_heartbeat(promql):  # the fresh sample arrives while the receiver waits for it
        if "timestamp(autonomy_agent_last_signal_timestamp_seconds" in promql and "CMO" in promql:
            h.prom.set("CMO", status="healthy", errorCode=None)
            h.prom.frozen.pop("CMO", None)

    h.prom.on_query.append(next_heartbeat)
    incident = h.run(incident_id)
    assert h.agents.calls == []  # the stale sample said TIMEOUT: acting on it would have restarted a healthy agent
    assert incident.state == "recovered" and incident.outcome == "self_resolved"
    [line] = h.lineage("no_action")
    assert line["incident_id"] == incident_id
    h.notify(status="resolved")
    assert outcomes(h) == {("TRANSIENT", "self_resolved"): 1}


def test_without_a_fresh_sample_after_the_hold_nothing_runs_and_it_says_why(h):
    h.build()
    incident_id = silenced_then_lifted(h)
    incident = h.run(incident_id)  # the sample never moves past the silence's end
    assert h.agents.calls == []
    assert incident.state == "skipped" and incident.state_reason == "stale_evidence"
    refused = h.lineage("remediation_refused")[-1]
    assert refused["gate"] == "stale_evidence" and "no sample from CMO newer than the end of its hold" in \
        refused["reason"]
    assert tile(h, "CMO") == ("escalated", {"stale_evidence"})


def late(h, minutes_ago=10):
    """CMO's TIMEOUT reaches the receiver only now, its alert firing for minutes (a silence kept it back); a person
    fixed it just before lifting the silence, and Prometheus still holds the sample from before the fix."""
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.prom.frozen["CMO"] = time.time() - 30
    h.am.fire("CMO", "TRANSIENT")
    return h.notify(starts_at=time.time() - 60 * minutes_ago)["opened"][0]


def test_a_late_notification_waits_for_a_sample_newer_than_its_arrival_and_leaves_a_fixed_agent_alone(h):
    # Found by the soak: the layer restarted an agent a person had just fixed, and the verdict read "resolved".
    h.build()
    incident_id = late(h)

    def next_heartbeat(promql):
        if "timestamp(autonomy_agent_last_signal_timestamp_seconds" in promql and "CMO" in promql:
            h.prom.set("CMO", status="healthy", errorCode=None)
            h.prom.frozen.pop("CMO", None)

    h.prom.on_query.append(next_heartbeat)
    incident = h.run(incident_id)
    assert h.agents.calls == []
    assert incident.outcome == "self_resolved" and h.lineage("auto_remediation") == []


def test_a_late_notification_still_broken_on_a_fresh_sample_is_remediated(h):
    h.build()
    incident_id = late(h)
    h.prom.frozen.pop("CMO")  # the next heartbeat: still in TIMEOUT
    incident = h.run(incident_id)
    assert h.agents.actions()[:1] == ["restartAgent"] and incident.outcome == "auto_resolved"


def test_a_late_notification_without_a_fresh_sample_does_nothing_and_says_why(h):
    h.build()
    incident = h.run(late(h))
    assert h.agents.calls == [] and incident.state_reason == "stale_evidence"
    assert "newer than its late notification" in h.lineage("remediation_refused")[-1]["reason"]


def test_a_notification_on_time_acts_at_once(h):
    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.am.fire("CMO", "TRANSIENT")  # firing for 20 s: the route's group wait and interval, as usual
    incident = h.run(h.notify(starts_at=time.time() - 20)["opened"][0])
    assert h.agents.actions()[:1] == ["restartAgent"] and incident.outcome == "auto_resolved"


def test_switching_remediation_back_on_makes_the_held_incidents_wait_for_samples_newer_than_that(h):
    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    incident_id = h.fire()
    h.engine.set_enabled(False, "maintenance")
    h.run(incident_id)
    before = time.time()
    h.engine.set_enabled(True, "")
    assert h.store.get(incident_id).gate_changed_at >= before


# ------------------------------------------------------------------ tile states, and after a restart

def test_held_incidents_show_escalated_with_their_reason_never_recovering(h):
    h.build({"AUTOREM_CANARY_AGENTS": "CRO"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.run(h.fire())
    assert tile(h, "CMO") == ("escalated", {"not_in_canary"})


def test_a_restarted_receiver_exports_the_ledgers_states_from_its_first_scrape(h, tmp_path):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="CONFIG_MISSING", configHealthy=False)
    h.agents.unfixable.add("CMO")
    h.run(h.fire(cls="CONFIG"))
    queued = h.fire("CRO")  # acknowledged, not yet run
    h.close()

    again = Harness(tmp_path, h.agents).build({"AUTOREM_MAX_ATTEMPTS": "1"}, data_dir=tmp_path / "data")
    try:
        assert tile(again, "CMO") == ("escalated", {"attempts_exhausted"})  # nothing has run in this process
        assert tile(again, "CRO") == ("recovering", {"queued"})
        assert again.store.get(queued).state == "open"
    finally:
        again.close()


def test_with_auto_remediate_unset_incidents_are_held_and_shown_as_such(h):
    h.build({"AUTO_REMEDIATE": "false"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    incident = h.run(h.fire())
    assert h.agents.calls == [] and incident.state == "skipped" and incident.state_reason == "kill_switch"
    assert tile(h, "CMO") == ("escalated", {"kill_switch"})


# ------------------------------------------------------------------ KPIs: from onset, once, what really happened

def test_mttr_runs_from_the_conditions_onset_and_only_auto_resolved_incidents_count(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", costBurnRatePerHour=3.6)
    onset = time.time() - 100
    h.prom.active_at[("CMO", "AgentTransientError")] = onset  # Prometheus saw it hold 100 s ago (its `for:`)
    resolved = h.run(h.fire())
    assert resolved.onset_at == pytest.approx(onset)
    mttr = resolved.recovered_at - onset
    assert mttr >= 100
    # An escalated and a skipped incident of the same class change nothing of the MTTR.
    h.prom.add("COO", "Operations", status="error", errorCode="TIMEOUT")
    h.agents.unfixable.add("COO")
    assert h.run(h.fire("COO")).state == "escalated"
    h.engine.set_enabled(False, "review")
    h.prom.set("Content", status="error", errorCode="TIMEOUT")
    assert h.run(h.fire("Content")).state == "skipped"
    h.notify("Content", status="resolved")
    label = (("classification", "TRANSIENT"),)
    assert h.samples(HISTOGRAM + "_count")[label] == 1
    assert h.samples(HISTOGRAM + "_sum")[label] == pytest.approx(mttr, abs=0.01)
    assert h.samples("autonomy_incident_cost_dollars_total")[label] == pytest.approx(3.6 * mttr / 3600, rel=1e-3)
    assert outcomes(h) == {("TRANSIENT", "auto_resolved"): 1, ("TRANSIENT", "escalated"): 1,
                           ("TRANSIENT", "skipped"): 1}


def test_a_failed_attempt_followed_by_healing_counts_against_the_layer(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "2"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.agents.unfixable.add("CMO")
    reads = []

    def heal_before_attempt_2(promql):  # attempt 1 failed; the agent recovers by itself before attempt 2
        if promql.startswith('{__name__=~"autonomy_agent_.+"') and h.lineage("auto_remediation"):
            reads.append(promql)
            h.prom.set("CMO", status="healthy", errorCode=None)

    h.prom.on_query.append(heal_before_attempt_2)
    incident = h.run(h.fire())
    assert [e["ok"] for e in h.lineage("auto_remediation")] == [False]
    assert incident.outcome == "self_resolved_after_failure" and reads
    h.notify(status="resolved")
    assert outcomes(h) == {("TRANSIENT", "self_resolved_after_failure"): 1}


def test_every_decision_has_its_lineage_line_and_a_lost_line_shows_in_the_coverage(h, monkeypatch):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.agents.unfixable.add("CMO")
    h.run(h.fire())
    decisions, lines = h.samples("autonomy_decisions_total"), h.samples("autonomy_lineage_lines_total")
    assert decisions == lines and decisions[(("event", "auto_remediation"),)] == 1
    assert decisions[(("event", "escalation"),)] == 1

    def disk_full(entry):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h.state.lineage, "append", disk_full)
    h.prom.set("CRO", status="error", errorCode="TIMEOUT")
    cro = h.run(h.fire("CRO"))  # the actions ran; their line could not be written: the verdict waits for it
    assert cro.state == "remediating" and cro.verifying["verdict"]["ok"] is True
    decisions, lines = h.samples("autonomy_decisions_total"), h.samples("autonomy_lineage_lines_total")
    assert decisions[(("event", "auto_remediation"),)] == 2 and lines[(("event", "auto_remediation"),)] == 1


# ------------------------------------------------------------------ lineage complete

def test_an_attempt_whose_step_failed_still_records_the_agents_latest_metrics_and_says_they_are_not_fresh(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT", successRate=0.5)
    h.prom.frozen["CMO"] = time.time() - 5  # no heartbeat since before the action
    h.agents.handlers["restartAgent"] = lambda agent, body: 409
    h.run(h.fire())
    [line] = h.lineage("auto_remediation")
    assert line["after"] == {"successRate": 0.5, "alignment": 0.99, "backlogAgeMinutes": 1.0,
                             "costBurnRatePerHour": 0.1}
    assert line["after_fresh"] is False and line["after_note"] == "the latest samples, from before the action ended"
    assert line["steps"][0]["body"] == {"mode": "soft"}
    [escalation] = h.lineage("escalation")
    assert escalation["after"]["successRate"] == 0.5
