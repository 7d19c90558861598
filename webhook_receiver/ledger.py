"""The incident ledger: every notification recorded, one open incident per agent, durable in SQLite."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Protocol

OPEN_STATES = ("open", "remediating", "recovered", "escalated", "skipped")
STATES = OPEN_STATES + ("closed",)
RUNNABLE_STATES = ("open", "remediating")
# States in which a repeated firing notification changes nothing (recovered and skipped may reopen: _apply).
_QUIET_STATES = frozenset(("open", "remediating", "escalated"))
# Refusals a new notification may have lifted (a silence expired, Alertmanager came back). The kill
# switch resumes its own incidents when switched on; canary and dry run only change with a restart.
RECONSIDERED_REFUSALS = ("silenced", "alertmanager_unreachable", "not_firing", "agent_locked")


class AlertRef(NamedTuple):
    """One alert of a notification, as the ledger keeps it (a tuple: built and compared in C on the hot path)."""

    fingerprint: str
    status: str
    labels: dict
    starts_at: str = ""


@dataclass(frozen=True)
class Incident:
    """An agent's problem from its first alert (or signal) until it is closed."""

    id: str
    agent: str
    state: str
    source: str
    opened_at: float
    updated_at: float
    classification: str | None = None
    playbook: str | None = None
    attempts: int = 0
    recovered_at: float | None = None
    resolved_at: float | None = None
    closed_at: float | None = None
    context: dict | None = None
    outcome: str | None = None
    reason: str | None = None
    alerts: tuple[AlertRef, ...] = ()
    playbooks_run: tuple[str, ...] = ()
    signal: dict | None = field(default=None, repr=False)
    metrics: dict | None = None
    trace_id: str | None = None

    @property
    def labels(self) -> dict:
        """Labels shared by every firing alert (what playbook label matchers see)."""
        firing = [a.labels for a in self.alerts if a.status == "firing"]
        if not firing:
            return {}
        common = dict(firing[0])
        for labels in firing[1:]:
            common = {k: v for k, v in common.items() if labels.get(k) == v}
        return common

    @property
    def alert_classes(self) -> frozenset[str]:
        return frozenset(a.labels.get("autonomy_class", "") for a in self.alerts if a.status == "firing") - {""}

    def as_dict(self) -> dict:
        """A JSON-ready view (shallow: the caller serialises it, never mutates it)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["alerts"] = [{"fingerprint": a.fingerprint, "status": a.status, "labels": a.labels,
                          "starts_at": a.starts_at} for a in self.alerts]
        out["playbooks_run"] = list(self.playbooks_run)
        return out


class AgentNotification(NamedTuple):
    """The alerts of one agent in one webhook notification."""

    agent: str
    alerts: tuple[AlertRef, ...]
    signal: dict | None = None

    @property
    def firing(self) -> bool:
        for alert in self.alerts:  # a loop, not any(genexpr): this runs once per agent per notification
            if alert.status == "firing":
                return True
        return False


@dataclass(frozen=True)
class IngestResult:
    """What a notification did: incidents to run, duplicates absorbed, incidents closed."""

    notification_id: int
    to_run: tuple[str, ...] = ()
    opened: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    closed: tuple[Incident, ...] = ()
    refused: bool = False


class IncidentClosed(RuntimeError):
    """A change was asked of an incident that is already closed."""


class IncidentLedger(Protocol):
    """What the receiver needs from a ledger; SQLite here, a shared database could implement it later."""

    def ingest(self, source: str, body: str, per_agent: Iterable[AgentNotification],
               reserve: Callable[[int], bool]) -> IngestResult: ...

    def get(self, incident_id: str) -> Incident | None: ...

    def open_for(self, agent: str) -> Incident | None: ...

    def list(self, agent: str | None = None, state: str | None = None, limit: int = 500) -> list[Incident]: ...

    def update(self, incident_id: str, **changes: object) -> Incident: ...

    def runnable(self) -> list[Incident]: ...

    def flag(self, name: str) -> str | None: ...

    def set_flag(self, name: str, value: str) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    opened_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_incident_per_agent ON incidents(agent) WHERE state != 'closed';
CREATE INDEX IF NOT EXISTS incidents_by_state ON incidents(state);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_INSERT_NOTIFICATION = "INSERT INTO notifications (received_at, source, body) VALUES (?, ?, ?)"


def _to_row(incident: Incident) -> tuple:
    return (incident.id, incident.agent, incident.state, json.dumps(incident.as_dict()), incident.opened_at)


def _from_doc(doc: str) -> Incident:
    data = json.loads(doc)
    data["alerts"] = tuple(AlertRef(**a) for a in data.get("alerts", ()))
    data["playbooks_run"] = tuple(data.get("playbooks_run", ()))
    return Incident(**data)


def _changed(incident: Incident, now: float, changes: dict) -> Incident:
    unknown = set(changes) - set(Incident.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown incident fields {sorted(unknown)}")
    if "state" in changes and changes["state"] not in STATES:
        raise ValueError(f"unknown state {changes['state']!r}")
    return Incident(**{**incident.__dict__, **changes, "updated_at": now})


class _Batch:
    """The rows one notification writes, applied together; later items see earlier ones' effects."""

    def __init__(self, current: dict[str, Incident], now: float):
        self.current, self.now = current, now
        self.inserts: dict[str, Incident] = {}
        self.updates: dict[str, Incident] = {}
        self.to_run: list[str] = []
        self.opened: list[str] = []
        self.duplicates: list[str] = []
        self.closed: list[Incident] = []

    def add(self, incident: Incident) -> None:
        self.inserts[incident.id] = incident
        self.current[incident.agent] = incident

    def change(self, incident: Incident, **changes: object) -> Incident:
        updated = _changed(incident, self.now, changes)
        (self.inserts if updated.id in self.inserts else self.updates)[updated.id] = updated
        if updated.state == "closed":
            self.current.pop(updated.agent, None)
        else:
            self.current[updated.agent] = updated
        return updated


class SqliteIncidentLedger:
    """The embedded ledger: WAL, synchronous=FULL, one connection serialised by a lock."""

    def __init__(self, path: Path, reopen_grace_seconds: float = 300.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.reopen_grace_seconds = reopen_grace_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        # Write-through cache of the open incidents: the hot path never re-reads them from disk.
        self._open = {i.agent: i for i in (_from_doc(doc) for (doc,) in self._db.execute(
            "SELECT doc FROM incidents WHERE state != 'closed'"))}

    def _remember(self, incident: Incident) -> None:
        if incident.state == "closed":
            if self._open.get(incident.agent, incident).id == incident.id:
                self._open.pop(incident.agent, None)
        else:
            self._open[incident.agent] = incident

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ingest(self, source: str, body: str, per_agent: Iterable[AgentNotification],
               reserve: Callable[[int], bool]) -> IngestResult:
        """Record a notification and open, update or close incidents in one transaction.

        RESERVE(n) must grant n work-queue slots for the incidents to run; if it refuses, nothing is
        stored and the result says `refused` (the caller answers 503).
        """
        items = list(per_agent)
        now = self._clock()
        with self._lock:
            batch = _Batch(self._open_many([item.agent for item in items]), now)
            for item in items:
                self._apply(item, source, now, batch)
            if batch.to_run and not reserve(len(batch.to_run)):
                return IngestResult(notification_id=0, refused=True)
            if batch.inserts or batch.updates:
                notification_id = self._commit(batch, source, body, now)
            else:
                # One statement in its own transaction: one commit, one fsync (synchronous=FULL).
                notification_id = self._db.execute(_INSERT_NOTIFICATION, (now, source, body)).lastrowid
            for incident in [*batch.updates.values(), *batch.inserts.values()]:
                self._remember(incident)
        return IngestResult(notification_id, tuple(batch.to_run), tuple(batch.opened), tuple(batch.duplicates),
                            tuple(batch.closed))

    def _commit(self, batch: "_Batch", source: str, body: str, now: float) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            notification_id = self._db.execute(_INSERT_NOTIFICATION, (now, source, body)).lastrowid
            # Updates first: a closed incident must leave the unique index before its successor enters.
            self._db.executemany("UPDATE incidents SET state = ?, doc = ? WHERE id = ?",
                                 [(i.state, json.dumps(i.as_dict()), i.id) for i in batch.updates.values()])
            self._db.executemany("INSERT INTO incidents (id, agent, state, doc, opened_at) VALUES (?, ?, ?, ?, ?)",
                                 [_to_row(i) for i in batch.inserts.values()])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return notification_id

    def _apply(self, item: AgentNotification, source: str, now: float, batch: "_Batch") -> None:
        current = batch.current.get(item.agent)
        signal = item.signal
        if (current is not None and current.state in _QUIET_STATES and current.source == source
                and signal is None and item.alerts == current.alerts and item.firing):
            # First, as the cheapest test: the common case of a storm, Alertmanager repeating itself.
            batch.duplicates.append(current.id)
            return
        if current is not None and current.source != source:
            # The other path owns this agent's incident; its own notifications decide its fate.
            batch.duplicates.append(current.id)
            return
        if not item.firing:
            if current is not None and current.state in RUNNABLE_STATES:
                # A worker holds it: it closes the incident when its attempt ends.
                batch.change(current, alerts=item.alerts, resolved_at=now)
                batch.duplicates.append(current.id)
            elif current is not None:
                batch.closed.append(batch.change(current, state="closed", closed_at=now, alerts=item.alerts,
                                                 outcome=current.outcome or "self_resolved",
                                                 reason=current.reason or "alert resolved"))
            return
        if current is None:
            incident = Incident(id=uuid.uuid4().hex, agent=item.agent, state="open", source=source,
                                opened_at=now, updated_at=now, alerts=item.alerts, signal=signal)
            batch.add(incident)
            batch.to_run.append(incident.id)
            batch.opened.append(incident.id)
            return
        relapsed = current.state == "recovered" and now - (current.recovered_at or now) > self.reopen_grace_seconds
        reconsider = current.state == "skipped" and (current.reason or "").split(":")[0] in RECONSIDERED_REFUSALS
        if reconsider or relapsed:
            batch.change(current, state="open", alerts=item.alerts, signal=signal or current.signal,
                         attempts=0 if relapsed else current.attempts, outcome=None, reason=None,
                         resolved_at=None, recovered_at=None if relapsed else current.recovered_at)
            batch.to_run.append(current.id)
            return
        if item.alerts != current.alerts or (signal and signal != current.signal):
            batch.change(current, alerts=item.alerts, signal=signal or current.signal)
        batch.duplicates.append(current.id)  # a repeat changes nothing; the notification row records it

    def _open_for(self, agent: str) -> Incident | None:
        return self._open.get(agent)

    def _open_many(self, agents: list[str]) -> dict[str, Incident]:
        return {agent: self._open[agent] for agent in agents if agent in self._open}

    def _write(self, incident: Incident, **changes: object) -> Incident:
        updated = _changed(incident, self._clock(), changes)
        self._db.execute("UPDATE incidents SET state = ?, doc = ? WHERE id = ?",
                         (updated.state, json.dumps(updated.as_dict()), updated.id))
        self._remember(updated)
        return updated

    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _from_doc(row[0]) if row else None

    def open_for(self, agent: str) -> Incident | None:
        with self._lock:
            return self._open_for(agent)

    def list(self, agent: str | None = None, state: str | None = None, limit: int = 500) -> list[Incident]:
        query, args = "SELECT doc FROM incidents WHERE 1=1", []
        if agent:
            query += " AND agent = ?"
            args.append(agent)
        if state:
            query += " AND state = ?"
            args.append(state)
        query += " ORDER BY opened_at DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [_from_doc(r[0]) for r in rows]

    def update(self, incident_id: str, **changes: object) -> Incident:
        """Change an incident durably (autocommit: synchronous=FULL flushes it); a closed one stays closed."""
        with self._lock:
            row = self._db.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise KeyError(incident_id)
            current = _from_doc(row[0])
            if current.state == "closed":
                raise IncidentClosed(incident_id)
            return self._write(current, **changes)

    def runnable(self) -> list[Incident]:
        """Incidents acknowledged but not finished: resumed after a restart."""
        with self._lock:
            rows = self._db.execute("SELECT doc FROM incidents WHERE state IN ('open', 'remediating') "
                                    "ORDER BY opened_at").fetchall()
        return [_from_doc(r[0]) for r in rows]

    def notification_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]

    def flag(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_flag(self, name: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO flags (name, value) VALUES (?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))
