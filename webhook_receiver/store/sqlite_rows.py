"""Incidents as rows of the SQLite ledger: the statements that write them and the document they keep."""
from __future__ import annotations

import json

from ..incident import AlertRef, Incident

INSERT_NOTIFICATION = "INSERT INTO notifications (received_at, source, body) VALUES (?, ?, ?)"
INSERT_INCIDENT = ("INSERT INTO incidents (id, agent, state, doc, opened_at, conflict_key, retry_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)")
UPDATE_INCIDENT = "UPDATE incidents SET state = ?, doc = ?, retry_at = ? WHERE id = ?"
INSERT_CLAIMANT = "INSERT OR IGNORE INTO incident_agents (agent, incident_id) VALUES (?, ?)"


def to_row(incident: Incident) -> tuple:
    return (incident.id, incident.agent, incident.state, json.dumps(incident.as_dict()), incident.opened_at,
            incident.conflict_key, incident.retry_at)


def from_doc(doc: str) -> Incident:
    data = json.loads(doc)
    data["alerts"] = tuple(AlertRef(**a) for a in data.get("alerts", ()))
    data["playbooks_run"] = tuple(data.get("playbooks_run", ()))
    data["claimants"] = tuple(data.get("claimants", ()))
    return Incident(**data)
