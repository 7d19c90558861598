"""Claims on the PostgreSQL store: the oldest claimable incident taken with SELECT ... FOR UPDATE SKIP LOCKED,
its lease a row (one per incident: the primary key) and each of its agents a row (one claim per agent: the primary
key), so two receivers never hold one agent, whatever their timing. An expired lease is taken over.

Unlike SQLite's lease transactions these commit synchronously: the database may outlive a crash the receiver
survives, and a lost claim would let a second receiver run the same incident. Lease times come from the store's
clock (the receiver's): receivers on several hosts need clocks in step well within a lease."""
from __future__ import annotations

import json
import uuid
from typing import Iterable, Sequence

from psycopg import Connection
from psycopg_pool import ConnectionPool

from autonomy.vocabulary import RUNNABLE_STATES, IncidentState

from ..notification import changed
from .contract import Claim, LeaseLost
from .sqlite_rows import from_doc

_RUNNABLE = "state IN ({})".format(", ".join(f"'{s}'" for s in RUNNABLE_STATES))
# As on SQLite: a runnable incident no live lease holds, whose retry time has come; an agent's own incident also
# needs its agent free of live claims and of runnable conflicts (a conflict goes first: it may be the cause).
_CLAIMABLE = (
    "SELECT i.id, i.doc, i.conflict_key IS NOT NULL FROM incidents i "
    f"WHERE i.{_RUNNABLE} AND (i.retry_at IS NULL OR i.retry_at <= %(now)s) "
    "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.incident_id = i.id AND l.expires_at > %(now)s) "
    "AND (i.conflict_key IS NOT NULL OR ("
    "  NOT EXISTS (SELECT 1 FROM lease_agents la JOIN leases l ON l.incident_id = la.incident_id "
    "              WHERE la.agent = i.agent AND l.expires_at > %(now)s) "
    "  AND NOT EXISTS (SELECT 1 FROM incident_agents ia JOIN incidents c ON c.id = ia.incident_id "
    f"                 WHERE ia.agent = i.agent AND c.conflict_key IS NOT NULL AND c.{_RUNNABLE}))) "
    "AND i.id <> ALL(%(passed)s) {only}"
    "ORDER BY i.opened_at, i.id LIMIT 1 FOR UPDATE OF i SKIP LOCKED")
_HELD_AGENTS = ("SELECT la.agent FROM lease_agents la JOIN leases l ON l.incident_id = la.incident_id "
                "WHERE l.expires_at > %s AND la.incident_id <> %s AND la.agent = ANY(%s)")
# In the agents' order, so two claims racing for overlapping agents wait for each other, never in a cycle.
_TAKE_AGENTS = ("INSERT INTO lease_agents (agent, incident_id) SELECT a, %s FROM unnest(%s::text[]) AS a "
                "ORDER BY a ON CONFLICT (agent) DO NOTHING")


def lock_names(db: Connection, names: list[str]) -> None:
    """Transaction-scoped advisory locks on NAMES, taken in one order by everyone (a collision only serialises)."""
    if names:
        db.execute("SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(n, 0) AS h "
                   "FROM unnest(%s::text[]) AS n ORDER BY h) AS ordered", (names,))


class PostgresLeases:
    """The claim half of PostgresIncidentStore, on its pool (`_pool`) and clock."""

    _pool: ConnectionPool

    @staticmethod
    def _holds(db: Connection, claim: Claim) -> bool:
        return db.execute("SELECT 1 FROM leases WHERE incident_id = %s AND token = %s",
                          (claim.incident_id, claim.token)).fetchone() is not None

    def _expire(self, now: float) -> None:
        """Drop leases whose holder stopped renewing (their agents go with them: ON DELETE CASCADE); those another
        transaction is dropping or renewing right now are left to it.

        A transaction of its own, committed before a claim begins: its deletes take agents' rows in no particular
        order, and inside a claim (which then inserts agents' rows in order) two claims could wait in a cycle."""
        with self._pool.connection() as db:
            db.execute("DELETE FROM leases WHERE incident_id IN (SELECT incident_id FROM leases WHERE expires_at <= %s "
                       "FOR UPDATE SKIP LOCKED)", (now,))

    def claim(self, owner: str, lease_seconds: float, incident_id: str | None = None) -> Claim | None:
        now = self._clock()
        query = _CLAIMABLE.format(only="AND i.id = %(only)s " if incident_id is not None else "")
        passed: list[str] = []
        self._expire(now)
        with self._pool.connection() as db, db.transaction():
            while True:
                try:
                    # One savepoint per candidate: one passed over is unlocked again at once (rolled back).
                    with db.transaction():
                        row = db.execute(query, {"now": now, "passed": passed, "only": incident_id}).fetchone()
                        if row is None:
                            return None
                        return self._take(db, row, owner, lease_seconds, now)
                except _Passed as skipped:
                    passed.append(skipped.incident_id)

    @staticmethod
    def _take(db: Connection, row: tuple, owner: str, lease_seconds: float, now: float) -> Claim:
        """The lease and its agents' rows, or _Passed if it must wait (one of a conflict's claimants is being
        remediated) or another claim got the incident or one of its agents first."""
        candidate, doc, is_conflict = row
        incident = from_doc(doc)
        token, agents = uuid.uuid4().hex, list(incident.agents)
        if is_conflict and db.execute(_HELD_AGENTS, (now, candidate, agents)).fetchone():
            raise _Passed(candidate)
        if db.execute("INSERT INTO leases (incident_id, owner, token, expires_at) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT (incident_id) DO NOTHING",
                      (incident.id, owner, token, now + lease_seconds)).rowcount != 1:
            raise _Passed(candidate)
        if db.execute(_TAKE_AGENTS, (incident.id, agents)).rowcount != len(agents):
            raise _Passed(candidate)
        return Claim(incident, owner, token, incident.agents, now + lease_seconds)

    def extend(self, claim: Claim, agents: Iterable[str]) -> Claim | None:
        new = [a for a in dict.fromkeys(agents) if a not in claim.agents]
        if not new:
            return claim
        now = self._clock()
        self._expire(now)  # others' expired leases give their agents back
        with self._pool.connection() as db, db.transaction():
            # A lease that expired is not held, even if no one took it over yet; a live one is locked until commit.
            if db.execute("SELECT 1 FROM leases WHERE incident_id = %s AND token = %s AND expires_at > %s FOR UPDATE",
                          (claim.incident_id, claim.token, now)).fetchone() is None:
                raise LeaseLost(f"incident {claim.incident_id}: the lease of {claim.owner} expired or was taken over")
            try:
                with db.transaction():
                    if db.execute(_TAKE_AGENTS, (claim.incident_id, new)).rowcount != len(new):
                        raise _Passed(claim.incident_id)
            except _Passed:
                return None
        return Claim(claim.incident, claim.owner, claim.token, (*claim.agents, *new), claim.expires_at)

    def renew(self, claim: Claim, lease_seconds: float) -> Claim | None:
        return self.renew_many([claim], lease_seconds)[0]

    def renew_many(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim | None]:
        if not claims:
            return []
        until = self._clock() + lease_seconds
        with self._pool.connection() as db:
            rows = db.execute("UPDATE leases l SET expires_at = %s FROM unnest(%s::text[], %s::text[]) AS c(id, token) "
                              "WHERE l.incident_id = c.id AND l.token = c.token RETURNING l.incident_id, l.token",
                              (until, [c.incident_id for c in claims], [c.token for c in claims])).fetchall()
        held = {(r[0], r[1]) for r in rows}
        return [Claim(c.incident, c.owner, c.token, c.agents, until) if (c.incident_id, c.token) in held else None
                for c in claims]

    def release(self, claim: Claim, retry_at: float | None = None) -> None:
        with self._pool.connection() as db, db.transaction():
            row = None
            if retry_at is not None:  # the incident's row first, then its lease's, as a claim locks them
                row = db.execute("SELECT doc FROM incidents WHERE id = %s FOR UPDATE", (claim.incident_id,)).fetchone()
            if not db.execute("DELETE FROM leases WHERE incident_id = %s AND token = %s",
                              (claim.incident_id, claim.token)).rowcount:
                return  # lost already: whoever holds it now keeps it
            if row is not None:
                current = from_doc(row[0])
                if current.state != IncidentState.CLOSED:
                    updated = changed(current, self._clock(), {"retry_at": retry_at})
                    db.execute("UPDATE incidents SET doc = %s, retry_at = %s WHERE id = %s",
                               (json.dumps(updated.as_dict()), retry_at, updated.id))

    @staticmethod
    def _queued(db: Connection, now: float) -> int:
        return db.execute(f"SELECT COUNT(*) FROM incidents i WHERE i.{_RUNNABLE} AND NOT EXISTS "
                          "(SELECT 1 FROM leases l WHERE l.incident_id = i.id AND l.expires_at > %s)",
                          (now,)).fetchone()[0]

    def queued_count(self) -> int:
        with self._pool.connection() as db:
            return self._queued(db, self._clock())

    def leased_agents(self) -> frozenset[str]:
        with self._pool.connection() as db:
            rows = db.execute("SELECT la.agent FROM lease_agents la JOIN leases l ON l.incident_id = la.incident_id "
                              "WHERE l.expires_at > %s", (self._clock(),)).fetchall()
        return frozenset(r[0] for r in rows)


class _Passed(Exception):
    """A candidate passed over (its savepoint rolled back, its row unlocked): it waits, or another claim won it."""

    def __init__(self, incident_id: str):
        super().__init__(incident_id)
        self.incident_id = incident_id
