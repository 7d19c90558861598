"""The embedded incident store: SQLite (WAL, synchronous=FULL), one connection serialised by a lock, one process
per file (the data directory's lock). Claims are rows, taken and renewed in BEGIN IMMEDIATE transactions."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from autonomy.vocabulary import IncidentState

from ..incident import Incident
from ..notification import (
    AgentNotification,
    Batch,
    apply_notification,
    changed,
    conflict_keys_touched,
    split_notification,
)
from ..rollout import Rollout, from_dict
from .contract import Claim, IncidentClosed, IngestResult, KillSwitch, LeaseLost, StoredNotification
from .sqlite_events import SqliteEvents
from .sqlite_leases import SqliteLeases, Transaction
from .sqlite_lineage import SqliteLineage
from .sqlite_retention import SqliteRetention
from .sqlite_rows import INSERT_CLAIMANT, INSERT_INCIDENT, INSERT_NOTIFICATION, UPDATE_INCIDENT, from_doc, to_row
from .sqlite_schema import KILL_SWITCH_FLAG, ROLLOUT_FLAG, connect, migrate


class SqliteIncidentStore(SqliteLeases, SqliteLineage, SqliteEvents, SqliteRetention):
    """IncidentStore on one SQLite file, with write-through caches of the open incidents for the hot path."""

    def __init__(self, path: Path, reopen_grace_seconds: float = 300.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.reopen_grace_seconds = reopen_grace_seconds
        self._clock = clock
        self._lock = threading.RLock()  # the connection, and every change
        # The caches of open incidents have their own lock (taken inside _lock by writers), so the webhook's
        # reads of them never wait for a worker's SQL statement.
        self._cache_lock = threading.Lock()
        self._db = connect(self.path)
        migrate(self._db, self.path)
        self._own: dict[str, Incident] = {}
        self._conflicts: dict[str, Incident] = {}
        self._claims: dict[str, set[str]] = {}  # agent -> keys of the open conflicts it claims
        for (doc,) in self._db.execute("SELECT doc FROM incidents WHERE state != 'closed'"):
            self._remember(from_doc(doc))

    def _remember(self, incident: Incident) -> None:
        with self._cache_lock:
            self._cache(incident)

    def _cache(self, incident: Incident) -> None:
        closed = incident.state == IncidentState.CLOSED
        if incident.conflict_key:
            key = incident.conflict_key
            for agent in incident.claimants:
                keys = self._claims.setdefault(agent, set())
                if closed:
                    keys.discard(key)
                    if not keys:
                        self._claims.pop(agent, None)
                else:
                    keys.add(key)
            if closed:
                if self._conflicts.get(key, incident).id == incident.id:
                    self._conflicts.pop(key, None)
            else:
                self._conflicts[key] = incident
        elif closed:
            if self._own.get(incident.agent, incident).id == incident.id:
                self._own.pop(incident.agent, None)
        else:
            self._own[incident.agent] = incident

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self):
        return Transaction(self._db)

    # -- notifications in ------------------------------------------------------------------------------------
    def ingest(self, source: str, body: str, per_agent: Iterable[AgentNotification], max_queued: int | None = None,
               keep_unchanged: bool = True) -> IngestResult:
        items = list(per_agent)
        now = self._clock()
        with self._lock:
            split = split_notification(items)
            keys = conflict_keys_touched(split, lambda agent: self._claims.get(agent, ()))
            batch = Batch({i.agent: self._own[i.agent] for i in items if i.agent in self._own},
                          {k: self._conflicts[k] for k in keys if k in self._conflicts}, now)
            apply_notification(batch, split, source, self.reopen_grace_seconds)
            if batch.to_run and max_queued is not None:
                queued = self.queued_count()
                # A batch larger than the whole queue still gets in once the queue is empty, never 503 forever.
                if queued and queued + len(batch.to_run) > max_queued:
                    return IngestResult(notification_id=0, refused=True)
            if batch.inserts or batch.updates:
                notification_id = self._commit(batch, source, body, now)
            elif not keep_unchanged:
                notification_id = 0
            else:
                # One statement in its own transaction: one commit, one fsync (synchronous=FULL).
                notification_id = self._db.execute(INSERT_NOTIFICATION, (now, source, body)).lastrowid
            for incident in batch.written:
                self._remember(incident)
        return IngestResult(notification_id, tuple(batch.to_run), tuple(batch.opened), tuple(batch.duplicates),
                            tuple(batch.closed))

    def _commit(self, batch: Batch, source: str, body: str, now: float) -> int:
        with self._transaction():
            notification_id = self._db.execute(INSERT_NOTIFICATION, (now, source, body)).lastrowid
            # Updates first: a closed incident must leave the unique index before its successor enters.
            self._db.executemany(UPDATE_INCIDENT, [(i.state, json.dumps(i.as_dict()), i.retry_at, i.id)
                                                    for i in batch.updates.values()])
            self._db.executemany(INSERT_INCIDENT, [to_row(i) for i in batch.inserts.values()])
            self._db.executemany(INSERT_CLAIMANT, [(a, i.id) for i in batch.written for a in i.claimants])
        return notification_id

    # -- reading -------------------------------------------------------------------------------------------------
    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return from_doc(row[0]) if row else None

    def open_for(self, agent: str) -> Incident | None:
        with self._cache_lock:
            return self._own.get(agent)

    def open_incidents(self) -> list[Incident]:
        with self._cache_lock:
            return [*self._own.values(), *self._conflicts.values()]

    def open_count(self) -> int:
        with self._cache_lock:
            return len(self._own)

    def conflicts_of(self, agent: str) -> list[Incident]:
        with self._cache_lock:
            return [self._conflicts[k] for k in sorted(self._claims.get(agent, ())) if k in self._conflicts]

    def open_conflict_keys(self) -> frozenset[str]:
        with self._cache_lock:
            return frozenset(self._conflicts)

    def list(self, agent: str | None = None, state: str | None = None, limit: int = 100,
             before: tuple[float, str] | None = None) -> list[Incident]:
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
        return [from_doc(r[0]) for r in rows]

    def notifications(self, after: int = 0, limit: int = 100) -> list[StoredNotification]:
        with self._lock:
            rows = self._db.execute("SELECT id, received_at, source, body FROM notifications WHERE id > ? "
                                    "ORDER BY id LIMIT ?", (after, limit)).fetchall()
        return [StoredNotification(*row) for row in rows]

    def notification_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]

    # -- changing an incident --------------------------------------------------------------------------------------
    def update(self, incident_id: str, lease: Claim | None = None, **changes: object) -> Incident:
        """Autocommit (synchronous=FULL flushes it) unless the claimants change too; a closed one stays closed."""
        with self._lock:
            row = self._db.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise KeyError(incident_id)
            current = from_doc(row[0])
            if current.state == IncidentState.CLOSED:
                raise IncidentClosed(incident_id)
            if lease is not None and not self._holds(lease):
                raise LeaseLost(f"incident {incident_id}: the lease of {lease.owner} was taken over")
            updated = changed(current, self._clock(), changes)
            with self._transaction():
                self._db.execute(UPDATE_INCIDENT, (updated.state, json.dumps(updated.as_dict()), updated.retry_at,
                                                    updated.id))
                if updated.claimants != current.claimants:
                    self._db.executemany(INSERT_CLAIMANT, [(a, updated.id) for a in updated.claimants])
            self._remember(updated)
            return updated

    # -- the kill switch -------------------------------------------------------------------------------------------
    def kill_switch(self) -> KillSwitch:
        with self._lock:
            row = self._db.execute("SELECT value FROM flags WHERE name = ?", (KILL_SWITCH_FLAG,)).fetchone()
        return KillSwitch(**json.loads(row[0])) if row else KillSwitch()

    def set_kill_switch(self, enabled: bool, reason: str | None) -> KillSwitch:
        switch = KillSwitch(enabled, None if enabled else reason, self._clock())
        self._set_flag(KILL_SWITCH_FLAG, switch.__dict__)
        return switch

    # -- the staged rollout ----------------------------------------------------------------------------------------
    def rollout(self) -> Rollout | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM flags WHERE name = ?", (ROLLOUT_FLAG,)).fetchone()
        return from_dict(json.loads(row[0])) if row else None

    def set_rollout(self, rollout: Rollout) -> Rollout:
        self._set_flag(ROLLOUT_FLAG, rollout.as_dict())
        return rollout

    def _set_flag(self, name: str, value: dict) -> None:
        with self._lock:
            self._db.execute("INSERT INTO flags (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                             "value = excluded.value", (name, json.dumps(value)))
