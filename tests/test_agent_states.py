"""Tile states derived from the ledger: a table over every incident state and reason, and the exposition after a
restart (a new receiver on the same data directory exports them from its first scrape)."""
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from autonomy.vocabulary import ESCALATION_REASONS, GATE_REASONS, REASON_TEXT
from webhook_receiver.agent_states import AGENT_STATES, AgentStateCollector, derive_state, fleet_states, reason_of
from webhook_receiver.incident import STATES, AlertRef, Incident
from webhook_receiver.notification import AgentNotification
from webhook_receiver.store import SqliteIncidentStore

# (incident state, state reason, running) -> (tile state, reason)
STATE_TABLE = [
    (None, None, False, ("healthy", None)),
    ("open", None, False, ("recovering", "queued")),
    ("open", None, True, ("recovering", "running")),
    ("remediating", None, True, ("recovering", "running")),
    ("remediating", None, False, ("recovering", "queued")),  # interrupted by a restart: queued to run again
    ("recovered", None, False, ("healthy", None)),
    ("closed", None, False, ("healthy", None)),
    *[("escalated", reason, False, ("escalated", reason)) for reason in ESCALATION_REASONS.values()],
    ("escalated", None, False, ("escalated", "attempts_exhausted")),
    *[("skipped", reason, False, ("escalated", reason)) for reason in GATE_REASONS.values()],
]


@pytest.mark.parametrize("state, reason, running, expected", STATE_TABLE,
                         ids=[f"{s}-{r}-{'running' if x else 'idle'}" for s, r, x, _ in STATE_TABLE])
def test_the_tile_state_of_every_ledger_state_and_reason(state, reason, running, expected):
    assert derive_state(state, reason, running) == expected


def test_the_table_covers_every_ledger_state_and_every_reason_has_a_text():
    assert {row[0] for row in STATE_TABLE} - {None} == set(STATES)
    for reason in [*ESCALATION_REASONS.values(), *GATE_REASONS.values(), "queued", "running"]:
        assert reason in REASON_TEXT
    # The pack's toast text is used only where it is true.
    assert [r for r, text in REASON_TEXT.items() if "attempts exhausted" in text] == ["attempts_exhausted"]


def incident(agent, state, **fields) -> Incident:
    return Incident(id=f"{agent}-{state}", agent=agent, state=state, source="alertmanager", opened_at=1.0,
                    updated_at=1.0, **fields)


@pytest.mark.parametrize("state, reason, expected", [
    ("escalated", "HighRiskStep; delivery: escalation endpoint unreachable", "high_risk_step"),
    ("escalated", "AutoRemediationFailed", "attempts_exhausted"),
    ("skipped", "silenced: the agent's alerts are silenced", "silenced"),
    ("skipped", "canary: CMO not in AUTOREM_CANARY_AGENTS", "not_in_canary"),
    ("skipped", "kill_switch: remediation is disabled", "kill_switch"),
])
def test_incidents_written_before_reasons_were_kept_get_theirs_from_the_text(state, reason, expected):
    assert reason_of(incident("CMO", state, reason=reason)) == expected


def test_a_conflicts_claimants_share_its_state_and_the_worst_state_of_an_agent_wins():
    states = fleet_states([
        incident("CMO", "open", conflict_key="directive:D-1", claimants=("CMO", "CRO")),
        incident("CRO", "escalated", state_reason="budget_cap"),
        incident("COO", "recovered"),
    ], running={"CMO", "CRO"})
    assert states == {"CMO": ("recovering", "running"), "CRO": ("escalated", "budget_cap"), "COO": ("healthy", None)}


def exposition(collector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_exposition_is_a_state_set_with_a_reason_series_and_the_spinner():
    collector = AgentStateCollector(lambda: [incident("CMO", "skipped", state_reason="silenced"),
                                             incident("CRO", "remediating")], lambda: {"CRO"})
    text = exposition(collector)
    assert 'autonomy_agent_state{agent="CMO",autonomy_agent_state="escalated"} 1.0' in text
    assert 'autonomy_agent_state{agent="CMO",autonomy_agent_state="recovering"} 0.0' in text
    assert 'autonomy_agent_state_reason{agent="CMO",reason="silenced"} 1.0' in text
    assert 'autonomy_agent_state{agent="CRO",autonomy_agent_state="recovering"} 1.0' in text
    assert 'autonomy_agent_state_reason{agent="CRO",reason="running"} 1.0' in text
    assert 'autonomy_remediation_in_progress{agent="CRO"} 1.0' in text
    assert 'autonomy_remediation_in_progress{agent="CMO"} 0.0' in text
    assert set(AGENT_STATES) == {"healthy", "recovering", "escalated"}


def test_after_a_restart_the_states_come_from_the_ledger_on_the_first_scrape(tmp_path):
    path = tmp_path / "incidents.sqlite3"
    first = SqliteIncidentStore(path)
    labels = {"alertname": "AgentConfigError", "agent": "Content", "autonomy_class": "CONFIG"}
    [escalated] = first.ingest("alertmanager", "{}", [AgentNotification("Content", (
        AlertRef("fp", "firing", labels, "2025-08-18T15:02:11Z"),))]).opened
    first.update(escalated, state="escalated", outcome="escalated", reason="AutoRemediationFailed",
                 state_reason="attempts_exhausted")
    first.close()

    again = SqliteIncidentStore(path)  # as a restarted receiver opens it: nothing has run yet
    try:
        text = exposition(AgentStateCollector(again.open_incidents, set))
    finally:
        again.close()
    assert 'autonomy_agent_state{agent="Content",autonomy_agent_state="escalated"} 1.0' in text
    assert 'autonomy_agent_state_reason{agent="Content",reason="attempts_exhausted"} 1.0' in text


@pytest.mark.parametrize("incidents, running", [
    ([], set()),
    ([incident("CMO", "skipped", state_reason="silenced"), incident("CRO", "remediating")], {"CRO"}),
    ([incident('we"ird\\name\nx', "escalated", state_reason="attempts_exhausted"), incident("COO", "open")],
     {"idle-runner"}),
    ([incident(f"agent-{n:03d}", ("open", "escalated", "recovered", "skipped")[n % 4]) for n in range(40)],
     {"agent-001", "agent-005"}),
])
def test_the_text_rendering_is_exactly_what_prometheus_client_writes(incidents, running):
    collector = AgentStateCollector(lambda: incidents, lambda: running)
    assert collector.render() == exposition(collector)
