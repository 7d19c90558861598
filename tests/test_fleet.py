"""The simulated fleet: valid signals, faults, and action primitives with realistic effects."""
import json

import pytest

from autonomy.signal_contract import load_signals
from devstack.fleet import FAULTS, SimulatedFleet


@pytest.fixture
def fleet():
    return SimulatedFleet()


@pytest.fixture
def web(fleet):
    """A client that presents the fleet's action token, as the receiver does."""
    client = fleet.app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {fleet.action_token.reveal()}"
    return client


def signal(fleet, agent):
    return {s.agent: s for s in load_signals(json.dumps(fleet.signals()))}[agent]


def act(web, agent, action, **body):
    return web.post(f"/agents/{agent}/actions/{action}", json=body)


def test_the_fleets_actions_refuse_a_caller_without_the_receivers_token(fleet):
    anonymous = fleet.app.test_client()
    reply = anonymous.post("/agents/CMO/actions/restartAgent", json={"mode": "soft"})
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    wrong = anonymous.post("/agents/CMO/actions/restartAgent", json={"mode": "soft"},
                           headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert fleet.calls == [] and fleet.answers[("restartAgent", 401)] == 2


def test_the_fleets_actions_check_each_body_against_the_contract_and_replay_a_repeated_key(fleet, web):
    bad = web.post("/agents/CMO/actions/throttleAgent", json={"maxConcurrent": "one", "minutes": 5})
    assert bad.status_code == 422 and bad.get_json()["field"] == "maxConcurrent"
    fleet.inject("CMO", "timeout")
    key = {"Idempotency-Key": "inc-1:1:0"}
    first = web.post("/agents/CMO/actions/restartAgent", json={"mode": "soft"}, headers=key)
    again = web.post("/agents/CMO/actions/restartAgent", json={"mode": "soft"}, headers=key)
    assert first.get_json() == again.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert [action for _, _, action, _ in fleet.calls] == ["restartAgent"]


def test_every_signal_of_the_fleet_is_valid_under_every_fault(fleet):
    for fault in FAULTS:
        fleet.inject({"source-down": "MarketIntel", "silent": "CEO"}.get(fault, "CMO"), fault)
    fleet.tick()
    assert {s.agent for s in load_signals(json.dumps(fleet.signals()))} == {
        "CRO", "CMO", "COO", "Content", "MarketIntel"}, "a silent agent (CEO) sends nothing"


def test_each_agent_has_its_domain(fleet):
    assert {a: signal(fleet, a).domain for a in fleet.agents} == {
        "CEO": "Executive", "CRO": "Revenue", "CMO": "Marketing", "COO": "Operations", "Content": "Content",
        "MarketIntel": "Data"}


def test_a_soft_restart_clears_a_timeout_and_the_retried_task_succeeds(fleet, web):
    fleet.inject("CMO", "timeout")
    assert (signal(fleet, "CMO").error_code, signal(fleet, "CMO").last_task_succeeded) == ("TIMEOUT", False)
    assert act(web, "CMO", "retryLastTask").status_code == 503  # still timing out
    assert act(web, "CMO", "restartAgent", mode="soft").status_code == 200
    assert act(web, "CMO", "retryLastTask", backoffMs=1500, max=2).status_code == 200
    s = signal(fleet, "CMO")
    assert (s.status, s.error_code, s.last_task_succeeded) == ("healthy", None, True)


def test_priority_rules_and_overlap_reassignment_clear_a_conflict_and_restore_alignment(fleet, web):
    fleet.inject("CMO", "overlap")
    assert signal(fleet, "CMO").directive_id == signal(fleet, "CRO").directive_id == "D-REV-1"
    assert signal(fleet, "CRO").alignment_ratio < 0.95
    act(web, "CMO", "applyPriorityRules", order=["Revenue", "Marketing"])
    assert act(web, "CMO", "reassignOverlaps", policy="revenue_first", directiveId="D-REV-1",
               winner="CRO").get_json()["reassigned"] == ["CMO"]
    act(web, "CMO", "throttleAgent", maxConcurrent=1, minutes=20)
    assert signal(fleet, "CRO").directive_id == "D-REV-1" and signal(fleet, "CMO").directive_id != "D-REV-1"
    assert signal(fleet, "CRO").alignment_ratio >= 0.95 and fleet.snapshot()["CMO"]["throttled"]


def test_slot_reallocation_and_a_split_drain_a_backlog_over_the_next_heartbeats(fleet, web):
    fleet.inject("COO", "backlog")
    assert signal(fleet, "COO").backlog_age_seconds == 45 * 60
    act(web, "COO", "reallocateSlots", **{"from": "Content", "to": "COO", "slots": 2})
    act(web, "COO", "splitDirective", directiveId="D-OPS-1", ratio=[0.6, 0.4])
    ages = []
    for _ in range(3):
        fleet.tick()
        ages.append(signal(fleet, "COO").backlog_age_seconds / 60)
    assert ages[0] < 45 and ages[-1] <= 15 and ages == sorted(ages, reverse=True)


def test_cache_refresh_and_refetch_restore_inputs_only_once_the_source_is_back(fleet, web):
    fleet.inject("MarketIntel", "source-down")
    fleet.tick()
    assert signal(fleet, "Content").inputs_valid is False
    assert act(web, "Content", "refetchSource", source="MarketIntel").status_code == 503
    fleet.clear("MarketIntel")
    fleet.tick()
    assert signal(fleet, "Content").inputs_valid is False  # stale until refetched
    act(web, "Content", "refreshCache")
    assert act(web, "Content", "refetchSource", source="MarketIntel").status_code == 200
    assert signal(fleet, "Content").inputs_valid is True


def test_a_secret_check_fails_while_the_secret_is_missing_and_names_it_only(fleet, web):
    fleet.inject("Content", "missing-secret", fixable=False)
    reply = act(web, "Content", "checkSecrets", required=["GOOGLE_PROJECT_ID", "SERVICE_ACCOUNT", "API_BASE"])
    assert reply.status_code == 409 and reply.get_json() == {"missing": ["API_BASE"]}
    assert signal(fleet, "Content").config_healthy is False
    fleet.clear("Content")
    assert signal(fleet, "Content").config_healthy is True


def test_a_restorable_secret_is_restored_by_the_check(fleet, web):
    fleet.inject("Content", "missing-secret", fixable=True)
    assert act(web, "Content", "checkSecrets").status_code == 200
    assert signal(fleet, "Content").config_healthy is True


def test_a_cost_spike_is_tamed_by_throttling(fleet, web):
    fleet.inject("Content", "cost-spike")
    assert signal(fleet, "Content").cost_burn_dollars_per_hour == pytest.approx(2.0)
    act(web, "Content", "throttleAgent", maxConcurrent=1, minutes=60)
    assert signal(fleet, "Content").cost_burn_dollars_per_hour == pytest.approx(0.2)


def test_faults_no_action_can_fix_stay(fleet, web):
    fleet.inject("CMO", "timeout", fixable=False)
    act(web, "CMO", "restartAgent")
    assert signal(fleet, "CMO").error_code == "TIMEOUT"


def test_the_fault_endpoint_validates_and_heals(web):
    assert web.post("/fleet/faults", json={"agent": "Nobody", "fault": "timeout"}).status_code == 422
    assert "fault:" in web.post("/fleet/faults", json={"agent": "CMO", "fault": "gremlins"}).get_json()["error"]
    assert web.post("/fleet/faults", json={"agent": "CMO", "fault": "timeout"}).get_json()["faults"] == {
        "timeout": True}
    assert web.delete("/fleet/faults/CMO").get_json()["faults"] == {}
    assert web.post("/agents/CMO/actions/formatDisk", json={}).status_code == 404
    assert web.post("/agents/Nobody/actions/restartAgent", json={}).status_code == 404


def test_a_higher_ranked_agent_that_took_a_directive_keeps_it_and_the_other_gets_a_new_one(fleet, web):
    fleet.inject("CEO", "overlap")  # CEO (Executive) takes CRO's D-REV-1; the priority order makes CEO the winner
    assert act(web, "CEO", "reassignOverlaps", directiveId="D-REV-1", winner="CEO").status_code == 200
    state = fleet.snapshot()
    assert (state["CEO"]["directive"], state["CRO"]["directive"]) == ("D-REV-1", "D-CRO-2")
    assert "overlap" not in state["CEO"]["faults"] and fleet.agents["CRO"].alignment == 0.98
    fleet.inject("CEO", "overlap", fixable=False)
    assert act(web, "CEO", "reassignOverlaps", directiveId="D-CRO-2", winner="CEO").status_code == 409


def test_a_second_overlap_on_the_winner_is_resolved_to_a_directive_nobody_holds(fleet, web):
    for _ in range(3):  # CEO keeps taking CRO's current directive and keeps it each time (it ranks higher)
        fleet.inject("CEO", "overlap")
        directive = fleet.agents["CEO"].directive
        assert act(web, "CEO", "reassignOverlaps", directiveId=directive, winner="CEO").status_code == 200
        held = [a.directive for a in fleet.agents.values() if a.directive]
        assert len(held) == len(set(held)), held
    assert all(i["end"] is not None for i in fleet.truth_intervals()), "the truth sees nothing shared any more"


def test_the_truth_sees_a_directive_two_agents_hold_as_an_overlap_even_without_the_fault():
    fleet = SimulatedFleet()
    fleet.agents["CMO"].directive = "D-REV-1"
    fleet.tick()
    assert {(i["agent"], i["kind"]) for i in fleet.truth_intervals() if i["end"] is None} == {
        ("CMO", "overlap"), ("CRO", "overlap")}
