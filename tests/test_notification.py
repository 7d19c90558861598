"""What one notification does to the open incidents it touches, storage-free, as a table: the part every store
applies the same way (each agent's own alerts to its own incident, a conflict's to the conflict's one)."""
import itertools

import pytest

from webhook_receiver.incident import AlertRef, Incident
from webhook_receiver.notification import AgentNotification, Batch, apply_notification, split_alerts, split_notification

NOW, GRACE = 10_000.0, 300.0


def alert(agent, name="AgentTransientError", cls="TRANSIENT", status="firing", **labels) -> AlertRef:
    return AlertRef(f"fp-{agent}-{name}", status, {"alertname": name, "agent": agent, "autonomy_class": cls,
                                                   **labels}, "2025-08-18T15:02:11Z")


def claim(agent, directive="D-1", status="firing") -> AlertRef:
    return alert(agent, "DirectiveClaimedByMultipleAgents", "CONFLICT", status, directive_id=directive)


def own(agent, state="open", alerts=None, **fields) -> Incident:
    return Incident(id=f"own-{agent}", agent=agent, state=state, source="alertmanager", opened_at=1.0,
                    updated_at=1.0, alerts=alerts if alerts is not None else (alert(agent),), **fields)


def conflict(*claimants, key="directive:D-1", state="open") -> Incident:
    return Incident(id=f"conflict-{key}", agent=claimants[0], state=state, source="alertmanager", opened_at=1.0,
                    updated_at=1.0, alerts=tuple(claim(a) for a in claimants), conflict_key=key,
                    claimants=tuple(claimants))


# (open incidents, the notification's agents and alerts, expected: opened (agent, key), to_run ids or "new",
#  duplicates, closed ids, claimants of the conflict afterwards)
CASES = [
    ("a firing alert opens the agent's incident", [], [("CMO", [alert("CMO")])],
     {"opened": [("CMO", None)], "to_run": ["new"], "duplicates": [], "closed": []}),
    ("a resolved alert with nothing open opens nothing", [], [("CMO", [alert("CMO", status="resolved")])],
     {"opened": [], "to_run": [], "duplicates": [], "closed": []}),
    ("the same alerts again are a duplicate", [own("CMO")], [("CMO", [alert("CMO")])],
     {"opened": [], "to_run": [], "duplicates": ["own-CMO"], "closed": []}),
    ("two agents in one notification open two incidents", [], [("CMO", [alert("CMO")]), ("CRO", [alert("CRO")])],
     {"opened": [("CMO", None), ("CRO", None)], "to_run": ["new", "new"], "duplicates": [], "closed": []}),
    ("an escalated incident closes when its alerts resolve", [own("CMO", "escalated", outcome="escalated")],
     [("CMO", [alert("CMO", status="resolved")])],
     {"opened": [], "to_run": [], "duplicates": [], "closed": ["own-CMO"]}),
    ("a conflict's alert opens the conflict's incident, not the agent's", [], [("CMO", [claim("CMO")])],
     {"opened": [("CMO", "directive:D-1")], "to_run": ["new"], "duplicates": [], "closed": [],
      "claimants": ("CMO",)}),
    ("the second claimant joins the open conflict", [conflict("CMO")], [("CRO", [claim("CRO")])],
     {"opened": [], "to_run": [], "duplicates": ["conflict-directive:D-1"], "closed": [],
      "claimants": ("CMO", "CRO")}),
    ("a claimant's other alerts are its own incident", [], [("CRO", [claim("CRO"), alert("CRO", "AgentDegraded",
                                                                                      "CAPACITY")])],
     {"opened": [("CRO", "directive:D-1"), ("CRO", None)], "to_run": ["new", "new"], "duplicates": [],
      "closed": []}),
    ("the conflict stays while one claimant's alert still fires", [conflict("CMO", "CRO", state="recovered")],
     [("CMO", [claim("CMO", status="resolved")])],
     {"opened": [], "to_run": [], "duplicates": ["conflict-directive:D-1"], "closed": []}),
    ("the conflict closes once no claimant's alert fires", [conflict("CMO", "CRO", state="recovered")],
     [("CMO", [claim("CMO", status="resolved")]), ("CRO", [])],
     {"opened": [], "to_run": [], "duplicates": ["conflict-directive:D-1"], "closed": ["conflict-directive:D-1"]}),
]


@pytest.mark.parametrize("name, current, items, expected", CASES, ids=[c[0] for c in CASES])
def test_what_a_notification_does_to_the_open_incidents(name, current, items, expected):
    ids = (f"new-{n}" for n in itertools.count())
    batch = Batch({i.agent: i for i in current if not i.conflict_key},
                  {i.conflict_key: i for i in current if i.conflict_key}, NOW)
    notification = [AgentNotification(agent, tuple(alerts)) for agent, alerts in items]
    apply_notification(batch, split_notification(notification), "alertmanager", GRACE, new_id=lambda: next(ids))
    opened = [batch.inserts[i] for i in batch.opened]
    assert [(i.agent, i.conflict_key) for i in opened] == expected["opened"]
    assert all(i.state == "open" and i.opened_at == NOW for i in opened)
    assert [("new" if i.startswith("new-") else i) for i in batch.to_run] == expected["to_run"]
    assert batch.duplicates == expected["duplicates"]
    assert [i.id for i in batch.closed] == expected["closed"]
    assert all(i.state == "closed" and i.closed_at == NOW for i in batch.closed)
    if "claimants" in expected:
        assert next(iter(batch.conflicts.values())).claimants == expected["claimants"]


def test_an_agents_alerts_split_into_its_own_and_each_conflicts():
    mine, by_key = split_alerts((alert("CRO"), claim("CRO", "D-1"), claim("CRO", "D-2")))
    assert [a.labels["alertname"] for a in mine] == ["AgentTransientError"]
    assert {k: len(v) for k, v in by_key.items()} == {"directive:D-1": 1, "directive:D-2": 1}
    plain = (alert("CMO"),)
    assert split_alerts(plain) == (plain, {})
