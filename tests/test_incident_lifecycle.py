"""What a notification does to an incident (the ledger's state machine), as a table; and the KPI outcome an
incident closes with."""
import pytest

from webhook_receiver.incident import AlertRef, Incident, on_alerts
from webhook_receiver.outcomes import closing_outcome

NOW, GRACE = 10_000.0, 300.0
FIRING = (AlertRef("fp", "firing", {"alertname": "AgentTransientError", "agent": "CMO"}, "2025-08-18T15:02:11Z"),)
RESOLVED = (AlertRef("fp", "resolved", {"alertname": "AgentTransientError", "agent": "CMO"}, "2025-08-18T15:02:11Z"),)
OTHER = (AlertRef("fp2", "firing", {"alertname": "AgentStatusError", "agent": "CMO"}, "2025-08-18T15:02:12Z"),)


def incident(state, **fields) -> Incident:
    base = dict(id="i", agent="CMO", state=state, source="alertmanager", opened_at=1.0, updated_at=1.0,
                alerts=FIRING)
    base.update(fields)
    return Incident(**base)


# (current incident, alerts, source, action, changes it must include)
TRANSITIONS = [
    (None, FIRING, "alertmanager", "open", {}),
    (None, RESOLVED, "alertmanager", "ignore", {}),
    (incident("open"), FIRING, "alertmanager", "duplicate", {}),
    (incident("remediating"), FIRING, "alertmanager", "duplicate", {}),
    (incident("escalated"), FIRING, "alertmanager", "duplicate", {}),
    (incident("open"), OTHER, "alertmanager", "update", {"alerts": OTHER}),
    (incident("open"), RESOLVED, "alertmanager", "mark_resolved", {"resolved_at": NOW}),
    (incident("remediating"), (), "alertmanager", "mark_resolved", {"resolved_at": NOW}),
    (incident("escalated", outcome="escalated"), RESOLVED, "alertmanager", "close",
     {"state": "closed", "outcome": "escalated"}),
    (incident("skipped", outcome="skipped", state_reason="kill_switch"), RESOLVED, "alertmanager", "close",
     {"state": "closed", "outcome": "skipped"}),
    (incident("recovered", outcome="self_resolved", attempts=1), RESOLVED, "alertmanager", "close",
     {"outcome": "self_resolved_after_failure"}),
    (incident("recovered", recovered_at=NOW - GRACE + 1, outcome="auto_resolved"), FIRING, "alertmanager",
     "duplicate", {}),  # the alert catching up with a verified recovery
    (incident("recovered", recovered_at=NOW - GRACE - 1, outcome="auto_resolved", attempts=2), FIRING,
     "alertmanager", "reopen", {"state": "open", "attempts": 0, "outcome": None, "gate_changed_at": None}),
    (incident("skipped", state_reason="silenced"), FIRING, "alertmanager", "reopen",
     {"state": "open", "gate_changed_at": NOW}),  # a silence lifted: act only on samples newer than now
    (incident("skipped", state_reason="alertmanager_unreachable"), FIRING, "alertmanager", "reopen",
     {"gate_changed_at": NOW}),
    (incident("skipped", state_reason="stale_evidence"), FIRING, "alertmanager", "reopen", {"gate_changed_at": NOW}),
    (incident("skipped", state_reason="kill_switch"), FIRING, "alertmanager", "duplicate", {}),
    (incident("skipped", state_reason="not_in_canary"), FIRING, "alertmanager", "duplicate", {}),
    (incident("skipped", state_reason="dry_run"), FIRING, "alertmanager", "duplicate", {}),
    (incident("recovered", source="signal"), RESOLVED, "alertmanager", "duplicate", {}),  # the other path's
]


@pytest.mark.parametrize("current, alerts, source, action, changes", TRANSITIONS,
                         ids=[f"{c.state if c else 'none'}-{a}-{i}" for i, (c, _, _, a, _) in enumerate(TRANSITIONS)])
def test_what_a_notification_does_to_an_incident(current, alerts, source, action, changes):
    step = on_alerts(current, alerts, None, source, NOW, GRACE)
    assert step.action == action
    for key, value in changes.items():
        assert step.changes[key] == value, key


@pytest.mark.parametrize("outcome, attempts, expected", [
    ("auto_resolved", 1, "auto_resolved"),
    ("escalated", 2, "escalated"),
    ("skipped", 0, "skipped"),
    ("skipped", 1, "skipped"),
    (None, 0, "self_resolved"),  # healed before any attempt: not part of the auto-resolve share
    ("self_resolved", 0, "self_resolved"),
    (None, 1, "self_resolved_after_failure"),  # an attempt failed, then it healed: counts against the layer
    ("self_resolved", 2, "self_resolved_after_failure"),
])
def test_the_outcome_an_incident_closes_with(outcome, attempts, expected):
    assert closing_outcome(incident("recovered", outcome=outcome, attempts=attempts)) == expected
