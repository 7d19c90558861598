"""The incident ledger: every notification recorded, one open incident per agent (and per conflict), durable
in SQLite."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Protocol

from .conflicts import conflict_key
from .data_dir import DataDirError
from .incident import QUIET_STATES, STATES, AlertRef, Incident, alert_onset, on_alerts


class AgentNotification(NamedTuple):
    """The alerts of one agent in one webhook notification."""

    agent: str
    alerts: tuple[AlertRef, ...]
    signal: dict | None = None

    @property
    def firing(self) -> bool:
        return _firing(self.alerts)


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


class LedgerError(DataDirError):
    """The ledger file cannot be used (newer schema, not a ledger, corrupt, read-only); the message says what
    and what to do."""


class IncidentLedger(Protocol):
    """What the receiver needs from a ledger; SQLite here, a shared database could implement it later."""

    def ingest(self, source: str, body: str, per_agent: Iterable[AgentNotification],
               reserve: Callable[[int], bool], release: Callable[[int], None] | None = None,
               keep_unchanged: bool = True) -> IngestResult: ...

    def get(self, incident_id: str) -> Incident | None: ...

    def open_for(self, agent: str) -> Incident | None: ...

    def open_incidents(self) -> list[Incident]: ...

    def conflicts_of(self, agent: str) -> list[Incident]: ...

    def open_count(self) -> int: ...

    def open_conflict_keys(self) -> frozenset[str]: ...

    def list(self, agent: str | None = None, state: str | None = None, limit: int = 500,
             before: tuple[float, str] | None = None) -> list[Incident]: ...

    def update(self, incident_id: str, **changes: object) -> Incident: ...

    def runnable(self) -> list[Incident]: ...

    def flag(self, name: str) -> str | None: ...

    def set_flag(self, name: str, value: str) -> None: ...


SCHEMA_VERSION = 2
TABLES = """
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
CREATE INDEX IF NOT EXISTS incidents_by_state ON incidents(state);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Schema 1: conflicts are incidents of their own (one open incident per conflict key), listed under each of
# their claimants; an agent still has at most one open incident of its own.
MIGRATION_1 = """
DROP INDEX IF EXISTS one_open_incident_per_agent;
CREATE UNIQUE INDEX one_open_incident_per_agent ON incidents(agent) WHERE state != 'closed' AND conflict_key IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS one_open_incident_per_conflict ON incidents(conflict_key)
    WHERE state != 'closed' AND conflict_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS incident_agents (
    agent TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (agent, incident_id)
);
"""
# Schema 2: incidents are listed a page at a time, newest first, by (opened_at, id).
MIGRATION_2 = """
CREATE INDEX IF NOT EXISTS incidents_by_opening ON incidents(opened_at, id);
"""


_INSERT_NOTIFICATION = "INSERT INTO notifications (received_at, source, body) VALUES (?, ?, ?)"
_INSERT_INCIDENT = "INSERT INTO incidents (id, agent, state, doc, opened_at, conflict_key) VALUES (?, ?, ?, ?, ?, ?)"
_UPDATE_INCIDENT = "UPDATE incidents SET state = ?, doc = ? WHERE id = ?"
_INSERT_CLAIMANT = "INSERT OR IGNORE INTO incident_agents (agent, incident_id) VALUES (?, ?)"


def _to_row(incident: Incident) -> tuple:
    return (incident.id, incident.agent, incident.state, json.dumps(incident.as_dict()), incident.opened_at,
            incident.conflict_key)


def _from_doc(doc: str) -> Incident:
    data = json.loads(doc)
    data["alerts"] = tuple(AlertRef(**a) for a in data.get("alerts", ()))
    data["playbooks_run"] = tuple(data.get("playbooks_run", ()))
    data["claimants"] = tuple(data.get("claimants", ()))
    return Incident(**data)


def _changed(incident: Incident, now: float, changes: dict) -> Incident:
    unknown = set(changes) - set(Incident.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown incident fields {sorted(unknown)}")
    if "state" in changes and changes["state"] not in STATES:
        raise ValueError(f"unknown state {changes['state']!r}")
    return Incident(**{**incident.__dict__, **changes, "updated_at": now})


def _firing(alerts: tuple[AlertRef, ...]) -> bool:
    for alert in alerts:  # a loop, not any(genexpr): this runs once per agent per notification
        if alert.status == "firing":
            return True
    return False


def split_alerts(alerts: tuple[AlertRef, ...]) -> tuple[tuple[AlertRef, ...], dict[str, tuple[AlertRef, ...]]]:
    """An agent's alerts: its own, and those about a conflict with other agents, by conflict key."""
    for alert in alerts:
        if alert.labels.get("autonomy_class") == "CONFLICT":
            break
    else:
        return alerts, {}  # the common case, without building anything
    own: list[AlertRef] = []
    by_key: dict[str, list[AlertRef]] = {}
    for alert in alerts:
        key = conflict_key(alert.labels) if alert.labels.get("autonomy_class") == "CONFLICT" else None
        if key is None:
            own.append(alert)
        else:
            by_key.setdefault(key, []).append(alert)
    return tuple(own), {k: tuple(v) for k, v in by_key.items()}


class _Batch:
    """The rows one notification writes, applied together; later items see earlier ones' effects."""

    def __init__(self, own: dict[str, Incident], conflicts: dict[str, Incident], now: float):
        self.own, self.conflicts, self.now = own, conflicts, now
        self.inserts: dict[str, Incident] = {}
        self.updates: dict[str, Incident] = {}
        self.to_run: list[str] = []
        self.opened: list[str] = []
        self.duplicates: list[str] = []
        self.closed: list[Incident] = []

    def _place(self, incident: Incident) -> None:
        table = self.conflicts if incident.conflict_key else self.own
        key = incident.conflict_key or incident.agent
        if incident.state == "closed":
            table.pop(key, None)
        else:
            table[key] = incident

    def add(self, incident: Incident) -> None:
        self.inserts[incident.id] = incident
        self._place(incident)

    def change(self, incident: Incident, **changes: object) -> Incident:
        updated = _changed(incident, self.now, changes)
        (self.inserts if updated.id in self.inserts else self.updates)[updated.id] = updated
        self._place(updated)
        return updated


class SqliteIncidentLedger:
    """The embedded ledger: WAL, synchronous=FULL, one connection serialised by a lock."""

    def __init__(self, path: Path, reopen_grace_seconds: float = 300.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.reopen_grace_seconds = reopen_grace_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self._db = self._open()
        self._migrate()
        # Write-through caches of the open incidents: the hot path never re-reads them from disk.
        self._open: dict[str, Incident] = {}
        self._conflicts: dict[str, Incident] = {}
        self._claims: dict[str, set[str]] = {}  # agent -> keys of the open conflicts it claims
        for (doc,) in self._db.execute("SELECT doc FROM incidents WHERE state != 'closed'"):
            self._remember(_from_doc(doc))

    def _open(self) -> sqlite3.Connection:
        """Connect, and refuse a file that is not a usable ledger: every problem in one line, nothing half-done."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"{self.path.parent}: cannot create the data directory ({exc.strerror})") from None
        db = None
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                found = "; ".join(line.strip() for text in problems for line in text.splitlines()
                                  if line.strip() and not line.startswith("***"))
                raise LedgerError(f"{self.path}: the ledger fails its integrity check ({found[:300]}); restore it "
                                  "from a backup, or move it aside to start with an empty one")
            db.execute("BEGIN IMMEDIATE")  # can it be written? (a read-only file or directory fails here)
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            text = str(exc)
            what = ("not an SQLite ledger" if "not a database" in text else
                    "read-only: the receiver must be able to write it" if "readonly" in text or "read-only" in text
                    else "cannot be opened")
            raise LedgerError(f"{self.path}: {what} ({text}); fix it, or move it aside to start with an empty "
                              "ledger") from None
        except LedgerError:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._db.close()
            raise LedgerError(f"{self.path}: written by a newer receiver (ledger schema {version}; this receiver "
                              f"knows up to {SCHEMA_VERSION}): run that version, or move the file aside")
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in TABLES.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if version < 1:
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(incidents)")}
                if "conflict_key" not in columns:
                    self._db.execute("ALTER TABLE incidents ADD COLUMN conflict_key TEXT")
            for number, script in ((1, MIGRATION_1), (2, MIGRATION_2)):
                if version < number:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _remember(self, incident: Incident) -> None:
        if incident.conflict_key:
            key = incident.conflict_key
            for agent in incident.claimants:
                keys = self._claims.setdefault(agent, set())
                if incident.state == "closed":
                    keys.discard(key)
                    if not keys:
                        self._claims.pop(agent, None)
                else:
                    keys.add(key)
            if incident.state == "closed":
                if self._conflicts.get(key, incident).id == incident.id:
                    self._conflicts.pop(key, None)
            else:
                self._conflicts[key] = incident
        elif incident.state == "closed":
            if self._open.get(incident.agent, incident).id == incident.id:
                self._open.pop(incident.agent, None)
        else:
            self._open[incident.agent] = incident

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ingest(self, source: str, body: str, per_agent: Iterable[AgentNotification],
               reserve: Callable[[int], bool], release: Callable[[int], None] | None = None,
               keep_unchanged: bool = True) -> IngestResult:
        """Record a notification and open, update or close incidents in one transaction.

        Each agent's alerts go to its own incident, except those about a conflict with other agents, which go
        to that conflict's incident (one per conflict, listing every claimant). RESERVE(n) must grant n
        work-queue slots for the incidents to run; if it refuses, nothing is stored and the result says
        `refused` (the caller answers 503). If the commit fails, RELEASE(n) gives the slots back and the
        error propagates: nothing was stored. Without KEEP_UNCHANGED a notification that changes no incident
        is not stored (notification_id 0): a healthy heartbeat of the direct path, say.
        """
        items = list(per_agent)
        now = self._clock()
        with self._lock:
            split = [(item, *split_alerts(item.alerts)) for item in items]
            keys = {k for _, _, by_key in split for k in by_key}
            if self._claims:
                keys.update(k for item in items for k in self._claims.get(item.agent, ()))
            batch = _Batch({item.agent: self._open[item.agent] for item in items if item.agent in self._open},
                           {k: self._conflicts[k] for k in keys if k in self._conflicts}, now)
            for item, own, by_key in split:
                if by_key or batch.conflicts:
                    claimed = {k for k, c in batch.conflicts.items() if item.agent in c.claimants}
                    for key in sorted(set(by_key) | claimed):
                        self._notify(batch, item.agent, by_key.get(key, ()), None, source, key)
                self._notify(batch, item.agent, own, item.signal, source, None)
            if batch.to_run and not reserve(len(batch.to_run)):
                return IngestResult(notification_id=0, refused=True)
            try:
                if batch.inserts or batch.updates:
                    notification_id = self._commit(batch, source, body, now)
                elif not keep_unchanged:
                    notification_id = 0
                else:
                    # One statement in its own transaction: one commit, one fsync (synchronous=FULL).
                    notification_id = self._db.execute(_INSERT_NOTIFICATION, (now, source, body)).lastrowid
            except BaseException:
                if batch.to_run and release is not None:
                    release(len(batch.to_run))
                raise
            for incident in [*batch.updates.values(), *batch.inserts.values()]:
                self._remember(incident)
        return IngestResult(notification_id, tuple(batch.to_run), tuple(batch.opened), tuple(batch.duplicates),
                            tuple(batch.closed))

    def _notify(self, batch: _Batch, agent: str, alerts: tuple[AlertRef, ...], signal: dict | None, source: str,
                key: str | None) -> None:
        """Apply AGENT's latest ALERTS to its own incident (KEY None) or to the conflict KEY's incident."""
        current = batch.conflicts.get(key) if key else batch.own.get(agent)
        if (key is None and current is not None and signal is None and current.source == source
                and current.state in QUIET_STATES and alerts == current.alerts and _firing(alerts)):
            # First, as the cheapest test: the common case of a storm, Alertmanager repeating itself.
            batch.duplicates.append(current.id)
            return
        extra: dict[str, object] = {}
        sender_firing = _firing(alerts)
        if key and current is not None:
            # The conflict's alerts: every claimant's latest, this agent's replaced by what it sent now.
            alerts = tuple(a for a in current.alerts if a.labels.get("agent", current.agent) != agent) + alerts
            if agent not in current.claimants:
                extra["claimants"] = current.claimants + (agent,)
        step = on_alerts(current, alerts, signal, source, batch.now, self.reopen_grace_seconds, sender_firing)
        if step.action == "ignore":
            return
        if step.action == "open":
            incident = Incident(id=uuid.uuid4().hex, agent=agent, state="open", source=source, opened_at=batch.now,
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

    def _commit(self, batch: _Batch, source: str, body: str, now: float) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            notification_id = self._db.execute(_INSERT_NOTIFICATION, (now, source, body)).lastrowid
            # Updates first: a closed incident must leave the unique index before its successor enters.
            self._db.executemany(_UPDATE_INCIDENT, [(i.state, json.dumps(i.as_dict()), i.id)
                                                    for i in batch.updates.values()])
            self._db.executemany(_INSERT_INCIDENT, [_to_row(i) for i in batch.inserts.values()])
            self._db.executemany(_INSERT_CLAIMANT, [(a, i.id) for i in [*batch.updates.values(),
                                                                        *batch.inserts.values()]
                                                    for a in i.claimants])
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return notification_id

    def _rollback(self) -> None:
        # A COMMIT that failed (disk full) may have rolled back already: a second ROLLBACK would raise
        # "no transaction is active" and hide the real error.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _write(self, incident: Incident, **changes: object) -> Incident:
        updated = _changed(incident, self._clock(), changes)
        if updated.claimants != incident.claimants:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(_UPDATE_INCIDENT, (updated.state, json.dumps(updated.as_dict()), updated.id))
                self._db.executemany(_INSERT_CLAIMANT, [(a, updated.id) for a in updated.claimants])
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._db.execute(_UPDATE_INCIDENT, (updated.state, json.dumps(updated.as_dict()), updated.id))
        self._remember(updated)
        return updated

    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _from_doc(row[0]) if row else None

    def open_for(self, agent: str) -> Incident | None:
        """The agent's own open incident (not the conflicts it is a claimant of)."""
        with self._lock:
            return self._open.get(agent)

    def open_incidents(self) -> list[Incident]:
        """Every incident not closed yet, from memory (the tile states read this on every scrape)."""
        with self._lock:
            return [*self._open.values(), *self._conflicts.values()]

    def open_count(self) -> int:
        """How many agents have an open incident of their own."""
        with self._lock:
            return len(self._open)

    def conflicts_of(self, agent: str) -> list[Incident]:
        """The open conflict incidents AGENT is a claimant of."""
        with self._lock:
            return [self._conflicts[k] for k in sorted(self._claims.get(agent, ())) if k in self._conflicts]

    def open_conflict_keys(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._conflicts)

    def list(self, agent: str | None = None, state: str | None = None, limit: int = 500,
             before: tuple[float, str] | None = None) -> list[Incident]:
        """Incidents newest first (ties by id), from before the (opened_at, id) cursor BEFORE; AGENT matches its
        own and the conflicts it claims."""
        query, args = "SELECT doc FROM incidents WHERE 1=1", []
        if before is not None:
            query += " AND (opened_at < ? OR (opened_at = ? AND id < ?))"
            args += [before[0], before[0], before[1]]
        if agent:
            query += " AND (agent = ? OR id IN (SELECT incident_id FROM incident_agents WHERE agent = ?))"
            args += [agent, agent]
        if state:
            query += " AND state = ?"
            args.append(state)
        query += " ORDER BY opened_at DESC, id DESC LIMIT ?"
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
