"""The shared incident store: PostgreSQL through a psycopg 3 connection pool, for any number of receivers. Nothing
is cached in process memory: every read asks the database, every change is one transaction, and the guarantees
(one open incident per agent and per conflict, one claim per agent) are the database's constraints."""
from __future__ import annotations

import json
import time
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
from .postgres_events import PostgresEvents
from .postgres_leases import PostgresLeases, lock_names
from .postgres_lineage import PostgresLineage
from .postgres_retention import PostgresRetention
from .postgres_schema import KILL_SWITCH_FLAG, ROLLOUT_FLAG, migrate, open_pool, redacted
from .sqlite_rows import from_doc, to_row

INSERT_NOTIFICATION = "INSERT INTO notifications (received_at, source, body) VALUES (%s, %s, %s) RETURNING id"
INSERT_INCIDENT = ("INSERT INTO incidents (id, agent, state, doc, opened_at, conflict_key, retry_at) "
                   "VALUES (%s, %s, %s, %s, %s, %s, %s)")
UPDATE_INCIDENT = "UPDATE incidents SET state = %s, doc = %s, retry_at = %s WHERE id = %s"
INSERT_CLAIMANT = "INSERT INTO incident_agents (agent, incident_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_OPEN = "state <> 'closed'"


class PostgresIncidentStore(PostgresLeases, PostgresLineage, PostgresEvents, PostgresRetention):
    """IncidentStore on one PostgreSQL database (AUTOREM_STORE_URL=postgresql://...), shared by every receiver."""

    def __init__(self, url: str, reopen_grace_seconds: float = 300.0, clock: Callable[[], float] = time.time,
                 pool_size: int = 8, connect_timeout: float = 10.0):
        self.url = url
        self.reopen_grace_seconds = reopen_grace_seconds
        self._clock = clock
        self._pool = open_pool(url, pool_size, connect_timeout)
        try:
            migrate(self._pool, redacted(url))
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    def _docs(self, query: str, args: Iterable = ()) -> list[Incident]:
        with self._pool.connection() as db:
            return [from_doc(r[0]) for r in db.execute(query, tuple(args)).fetchall()]

    # -- notifications in ------------------------------------------------------------------------------------
    def ingest(self, source: str, body: str, per_agent: Iterable[AgentNotification], max_queued: int | None = None,
               keep_unchanged: bool = True) -> IngestResult:
        items = list(per_agent)
        now = self._clock()
        split = split_notification(items)
        agents = sorted({i.agent for i in items})
        with self._pool.connection() as db, db.transaction():
            # Every receiver applies notifications of one agent (and of one conflict) one at a time: agents'
            # locks first, then conflicts', each in order, so two ingests never wait for each other in a cycle.
            lock_names(db, [f"agent:{a}" for a in agents])
            own = {i.agent: i for i in self._locked(db, f"agent = ANY(%s) AND conflict_key IS NULL AND {_OPEN}",
                                                      agents)}
            claims: dict[str, list[str]] = {}
            for agent, key in db.execute(
                    "SELECT ia.agent, c.conflict_key FROM incident_agents ia JOIN incidents c ON c.id = "
                    f"ia.incident_id WHERE ia.agent = ANY(%s) AND c.conflict_key IS NOT NULL AND c.{_OPEN}",
                    (agents,)):
                claims.setdefault(agent, []).append(key)
            keys = sorted(conflict_keys_touched(split, lambda agent: claims.get(agent, ())))
            lock_names(db, [f"conflict:{k}" for k in keys])
            conflicts = {i.conflict_key: i for i in self._locked(db, f"conflict_key = ANY(%s) AND {_OPEN}", keys)}
            batch = Batch(own, conflicts, now)
            apply_notification(batch, split, source, self.reopen_grace_seconds)
            if batch.to_run and max_queued is not None:
                queued = self._queued(db, now)
                # A batch larger than the whole queue still gets in once the queue is empty, never 503 forever.
                if queued and queued + len(batch.to_run) > max_queued:
                    return IngestResult(notification_id=0, refused=True)
            if batch.inserts or batch.updates or keep_unchanged:
                notification_id = db.execute(INSERT_NOTIFICATION, (now, source, body)).fetchone()[0]
            else:
                notification_id = 0
            if batch.inserts or batch.updates:
                self._write(db, batch)
        return IngestResult(notification_id, tuple(batch.to_run), tuple(batch.opened), tuple(batch.duplicates),
                            tuple(batch.closed))

    @staticmethod
    def _locked(db, where: str, values: list[str]) -> list[Incident]:
        if not values:
            return []
        rows = db.execute(f"SELECT doc FROM incidents WHERE {where} ORDER BY id FOR UPDATE", (values,)).fetchall()
        return [from_doc(r[0]) for r in rows]

    @staticmethod
    def _write(db, batch: Batch) -> None:
        with db.cursor() as cur:
            # Updates first: a closed incident must leave the unique index before its successor enters.
            cur.executemany(UPDATE_INCIDENT, [(i.state, json.dumps(i.as_dict()), i.retry_at, i.id)
                                              for i in batch.updates.values()])
            cur.executemany(INSERT_INCIDENT, [to_row(i) for i in batch.inserts.values()])
            cur.executemany(INSERT_CLAIMANT, [(a, i.id) for i in batch.written for a in i.claimants])

    # -- reading -------------------------------------------------------------------------------------------------
    def get(self, incident_id: str) -> Incident | None:
        found = self._docs("SELECT doc FROM incidents WHERE id = %s", (incident_id,))
        return found[0] if found else None

    def open_for(self, agent: str) -> Incident | None:
        found = self._docs(f"SELECT doc FROM incidents WHERE agent = %s AND conflict_key IS NULL AND {_OPEN}",
                           (agent,))
        return found[0] if found else None

    def open_incidents(self) -> list[Incident]:
        return self._docs(f"SELECT doc FROM incidents WHERE {_OPEN} ORDER BY conflict_key NULLS FIRST, opened_at, id")

    def open_count(self) -> int:
        with self._pool.connection() as db:
            return db.execute(f"SELECT COUNT(*) FROM incidents WHERE conflict_key IS NULL AND {_OPEN}").fetchone()[0]

    def conflicts_of(self, agent: str) -> list[Incident]:
        return self._docs("SELECT c.doc FROM incident_agents ia JOIN incidents c ON c.id = ia.incident_id "
                          f"WHERE ia.agent = %s AND c.conflict_key IS NOT NULL AND c.{_OPEN} ORDER BY c.conflict_key",
                          (agent,))

    def open_conflict_keys(self) -> frozenset[str]:
        with self._pool.connection() as db:
            rows = db.execute(f"SELECT conflict_key FROM incidents WHERE conflict_key IS NOT NULL AND {_OPEN}")
            return frozenset(r[0] for r in rows)

    def list(self, agent: str | None = None, state: str | None = None, limit: int = 100,
             before: tuple[float, str] | None = None) -> list[Incident]:
        query, args = "SELECT doc FROM incidents WHERE TRUE", []
        if before is not None:
            query += " AND (opened_at, id) < (%s, %s)"
            args += [before[0], before[1]]
        if agent:
            query += " AND (agent = %s OR id IN (SELECT incident_id FROM incident_agents WHERE agent = %s))"
            args += [agent, agent]
        if state:
            query += " AND state = %s"
            args.append(state)
        query += " ORDER BY opened_at DESC, id DESC LIMIT %s"
        args.append(limit)
        return self._docs(query, args)

    def notifications(self, after: int = 0, limit: int = 100) -> list[StoredNotification]:
        with self._pool.connection() as db:
            rows = db.execute("SELECT id, received_at, source, body FROM notifications WHERE id > %s "
                              "ORDER BY id LIMIT %s", (after, limit)).fetchall()
        return [StoredNotification(*row) for row in rows]

    def notification_count(self) -> int:
        with self._pool.connection() as db:
            return db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]

    # -- changing an incident --------------------------------------------------------------------------------------
    def update(self, incident_id: str, lease: Claim | None = None, **changes: object) -> Incident:
        """One transaction, the incident's row locked: a takeover waits for it, and it sees a takeover's lease."""
        with self._pool.connection() as db, db.transaction():
            row = db.execute("SELECT doc FROM incidents WHERE id = %s FOR UPDATE", (incident_id,)).fetchone()
            if row is None:
                raise KeyError(incident_id)
            current = from_doc(row[0])
            if current.state == IncidentState.CLOSED:
                raise IncidentClosed(incident_id)
            if lease is not None and not self._holds(db, lease):
                raise LeaseLost(f"incident {incident_id}: the lease of {lease.owner} was taken over")
            updated = changed(current, self._clock(), changes)
            db.execute(UPDATE_INCIDENT, (updated.state, json.dumps(updated.as_dict()), updated.retry_at, updated.id))
            if updated.claimants != current.claimants:
                with db.cursor() as cur:
                    cur.executemany(INSERT_CLAIMANT, [(a, updated.id) for a in updated.claimants])
            return updated

    # -- the kill switch and the staged rollout: flags every receiver reads from the database ------------------------
    def _flag(self, name: str) -> dict | None:
        with self._pool.connection() as db:
            row = db.execute("SELECT value FROM flags WHERE name = %s", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set_flag(self, name: str, value: dict) -> None:
        with self._pool.connection() as db:
            db.execute("INSERT INTO flags (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET "
                       "value = excluded.value", (name, json.dumps(value)))

    def kill_switch(self) -> KillSwitch:
        value = self._flag(KILL_SWITCH_FLAG)
        return KillSwitch(**value) if value else KillSwitch()

    def set_kill_switch(self, enabled: bool, reason: str | None) -> KillSwitch:
        switch = KillSwitch(enabled, None if enabled else reason, self._clock())
        self._set_flag(KILL_SWITCH_FLAG, switch.__dict__)
        return switch

    def rollout(self) -> Rollout | None:
        value = self._flag(ROLLOUT_FLAG)
        return from_dict(value) if value else None

    def set_rollout(self, rollout: Rollout) -> Rollout:
        self._set_flag(ROLLOUT_FLAG, rollout.as_dict())
        return rollout
