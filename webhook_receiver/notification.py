"""What one notification does to the open incidents it touches: storage-free, every store applies it the same way."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, NamedTuple

from autonomy.vocabulary import IncidentClass, IncidentState

from .conflicts import conflict_key
from .incident import QUIET_STATES, STATES, AlertRef, Incident, alert_onset, on_alerts


class AgentNotification(NamedTuple):
    """The alerts of one agent in one webhook notification (and the signal, on the direct path)."""

    agent: str
    alerts: tuple[AlertRef, ...]
    signal: dict | None = None

    @property
    def firing(self) -> bool:
        return firing(self.alerts)


def firing(alerts: tuple[AlertRef, ...]) -> bool:
    for alert in alerts:  # a loop, not any(genexpr): this runs once per agent per notification
        if alert.status == "firing":
            return True
    return False


_CONFLICT = IncidentClass.CONFLICT.value  # a plain str: compared once per alert on the hot path
Split = tuple[AgentNotification, tuple[AlertRef, ...], dict[str, tuple[AlertRef, ...]]]


def split_alerts(alerts: tuple[AlertRef, ...]) -> tuple[tuple[AlertRef, ...], dict[str, tuple[AlertRef, ...]]]:
    """An agent's alerts: its own, and those about a conflict with other agents, by conflict key."""
    for alert in alerts:
        if alert.labels.get("autonomy_class") == _CONFLICT:
            break
    else:
        return alerts, {}  # the common case, without building anything
    own: list[AlertRef] = []
    by_key: dict[str, list[AlertRef]] = {}
    for alert in alerts:
        key = conflict_key(alert.labels) if alert.labels.get("autonomy_class") == _CONFLICT else None
        if key is None:
            own.append(alert)
        else:
            by_key.setdefault(key, []).append(alert)
    return tuple(own), {k: tuple(v) for k, v in by_key.items()}


def changed(incident: Incident, now: float, changes: Mapping[str, object]) -> Incident:
    """INCIDENT with CHANGES applied and `updated_at` NOW; unknown fields and states are refused."""
    unknown = set(changes) - set(Incident.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown incident fields {sorted(unknown)}")
    if "state" in changes and changes["state"] not in STATES:
        raise ValueError(f"unknown state {changes['state']!r}")
    return Incident(**{**incident.__dict__, **changes, "updated_at": now})


@dataclass
class Batch:
    """The incidents one notification inserts and updates, and what it says back; later items see earlier ones'
    effects. `own` and `conflicts` hold the open incidents it may touch, by agent and by conflict key."""

    own: dict[str, Incident]
    conflicts: dict[str, Incident]
    now: float
    inserts: dict[str, Incident] = field(default_factory=dict)
    updates: dict[str, Incident] = field(default_factory=dict)
    to_run: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    closed: list[Incident] = field(default_factory=list)

    @property
    def written(self) -> list[Incident]:
        """Updates first: a closed incident leaves the one-open-per-agent rule before its successor enters."""
        return [*self.updates.values(), *self.inserts.values()]

    def _place(self, incident: Incident) -> None:
        table = self.conflicts if incident.conflict_key else self.own
        key = incident.conflict_key or incident.agent
        if incident.state == IncidentState.CLOSED:
            table.pop(key, None)
        else:
            table[key] = incident

    def add(self, incident: Incident) -> None:
        self.inserts[incident.id] = incident
        self._place(incident)

    def change(self, incident: Incident, **changes: object) -> Incident:
        updated = changed(incident, self.now, changes)
        (self.inserts if updated.id in self.inserts else self.updates)[updated.id] = updated
        self._place(updated)
        return updated


def split_notification(items: Iterable[AgentNotification]) -> list[Split]:
    """Each agent of a notification with its own alerts and its alerts about conflicts (split once)."""
    return [(item, *split_alerts(item.alerts)) for item in items]


def conflict_keys_touched(split: list[Split], claims: Callable[[str], Iterable[str]]) -> set[str]:
    """The conflict keys a notification may change: those its alerts name, and those its agents claim."""
    keys: set[str] = set()
    for item, _, by_key in split:
        keys.update(by_key)
        keys.update(claims(item.agent))
    return keys


def apply_notification(batch: Batch, split: list[Split], source: str, reopen_grace: float,
                       new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> Batch:
    """Apply every agent's alerts of one notification (as split_notification splits it) to BATCH: each agent's own
    go to its own incident, those about a conflict with other agents to that conflict's incident (one per
    conflict, listing every claimant)."""
    for item, own, by_key in split:
        if by_key or batch.conflicts:
            claimed = {k for k, c in batch.conflicts.items() if item.agent in c.claimants}
            for key in sorted(set(by_key) | claimed):
                _notify(batch, item.agent, by_key.get(key, ()), None, source, key, reopen_grace, new_id)
        _notify(batch, item.agent, own, item.signal, source, None, reopen_grace, new_id)
    return batch


def _notify(batch: Batch, agent: str, alerts: tuple[AlertRef, ...], signal: dict | None, source: str,
            key: str | None, reopen_grace: float, new_id: Callable[[], str]) -> None:
    """Apply AGENT's latest ALERTS to its own incident (KEY None) or to the conflict KEY's incident."""
    current = batch.conflicts.get(key) if key else batch.own.get(agent)
    if (key is None and current is not None and signal is None and current.source == source
            and current.state in QUIET_STATES and alerts == current.alerts and firing(alerts)):
        # First, as the cheapest test: the common case of a storm, Alertmanager repeating itself.
        batch.duplicates.append(current.id)
        return
    extra: dict[str, object] = {}
    sender_firing = firing(alerts)
    if key and current is not None:
        # The conflict's alerts: every claimant's latest, this agent's replaced by what it sent now.
        alerts = tuple(a for a in current.alerts if a.labels.get("agent", current.agent) != agent) + alerts
        if agent not in current.claimants:
            extra["claimants"] = current.claimants + (agent,)
    step = on_alerts(current, alerts, signal, source, batch.now, reopen_grace, sender_firing)
    if step.action == "ignore":
        return
    if step.action == "open":
        incident = Incident(id=new_id(), agent=agent, state=IncidentState.OPEN, source=source, opened_at=batch.now,
                            updated_at=batch.now, alerts=alerts, signal=signal,
                            onset_at=alert_onset(alerts, batch.now), conflict_key=key,
                            claimants=(agent,) if key else ())
        batch.add(incident)
        batch.to_run.append(incident.id)
        batch.opened.append(incident.id)
        return
    changes = {**step.changes, **extra}
    if step.action == "close":
        batch.closed.append(batch.change(current, **changes))
        return
    if changes:
        current = batch.change(current, **changes)
    (batch.to_run if step.action == "reopen" else batch.duplicates).append(current.id)
