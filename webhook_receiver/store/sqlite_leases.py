"""Claims on the SQLite store: an incident and each of its agents held by one lease, taken, renewed and given back
in BEGIN IMMEDIATE transactions; an expired lease is taken over."""
from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Iterable, Sequence

from autonomy.vocabulary import RUNNABLE_STATES, IncidentState

from ..incident import Incident
from ..notification import changed
from .contract import Claim, LeaseLost
from .sqlite_rows import UPDATE_INCIDENT, from_doc

_RUNNABLE = "state IN ({})".format(", ".join(f"'{s}'" for s in RUNNABLE_STATES))
_LIVE_LEASE = "SELECT incident_id FROM leases WHERE expires_at > ?"
_HELD_AGENTS = ("SELECT la.agent FROM lease_agents la JOIN leases l ON l.incident_id = la.incident_id "
                "WHERE l.expires_at > ? AND la.incident_id != ? AND la.agent IN ({})")
# A runnable incident no live lease holds, whose retry time has come; an agent's own incident also needs its
# agent free of live claims and of runnable conflicts (a conflict goes first: the incident may be its symptom).
# A conflict's claimants are checked one by one (its agents are in its document).
_CLAIMABLE = (
    "SELECT i.id, i.conflict_key IS NOT NULL FROM incidents i "
    f"WHERE i.{_RUNNABLE} AND (i.retry_at IS NULL OR i.retry_at <= ?) "
    "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.incident_id = i.id AND l.expires_at > ?) "
    "AND (i.conflict_key IS NOT NULL OR ("
    "  NOT EXISTS (SELECT 1 FROM lease_agents la JOIN leases l ON l.incident_id = la.incident_id "
    "              WHERE la.agent = i.agent AND l.expires_at > ?) "
    "  AND NOT EXISTS (SELECT 1 FROM incident_agents ia JOIN incidents c ON c.id = ia.incident_id "
    f"                 WHERE ia.agent = i.agent AND c.conflict_key IS NOT NULL AND c.{_RUNNABLE})))")
_CANDIDATES = 32
_PARAMETERS = 500  # bound parameters per statement, well under SQLite's limit


class SqliteLeases:
    """The claim half of SqliteIncidentStore, on its connection (`_db`), lock, clock and caches."""

    _db: sqlite3.Connection

    def _holds(self, claim: Claim) -> bool:
        return self._db.execute("SELECT 1 FROM leases WHERE incident_id = ? AND token = ?",
                                (claim.incident_id, claim.token)).fetchone() is not None

    def _held_by_others(self, agents: Iterable[str], incident_id: str, now: float) -> list[str]:
        agents = list(agents)
        marks = ",".join("?" * len(agents))
        return [r[0] for r in self._db.execute(_HELD_AGENTS.format(marks), (now, incident_id, *agents))]

    def _expire(self, now: float) -> None:
        """Drop leases whose holder stopped renewing: their incidents and agents are free to take over."""
        if self._db.execute("DELETE FROM leases WHERE expires_at <= ?", (now,)).rowcount:
            self._db.execute("DELETE FROM lease_agents WHERE incident_id NOT IN (SELECT incident_id FROM leases)")

    def claim(self, owner: str, lease_seconds: float, incident_id: str | None = None) -> Claim | None:
        now = self._clock()
        query, args = _CLAIMABLE, [now, now, now]
        if incident_id is not None:
            query += " AND i.id = ?"
            args.append(incident_id)
        with self._lock, LeaseTransaction(self._db):
            self._expire(now)
            # Ids only, a page at a time: the whole queue is never read (nor decoded) to take one incident.
            for page in range(0, 1 << 30, _CANDIDATES):
                rows = self._db.execute(query + f" ORDER BY i.opened_at, i.id LIMIT {_CANDIDATES} OFFSET {page}",
                                        args).fetchall()
                for candidate, is_conflict in rows:
                    incident = from_doc(self._db.execute("SELECT doc FROM incidents WHERE id = ?",
                                                         (candidate,)).fetchone()[0])
                    if is_conflict and self._held_by_others(incident.agents, incident.id, now):
                        continue  # one of its claimants is being remediated: it waits
                    return self._take(incident, owner, lease_seconds, now)
                if len(rows) < _CANDIDATES:
                    return None
        return None

    def _take(self, incident: Incident, owner: str, lease_seconds: float, now: float) -> Claim:
        token = uuid.uuid4().hex
        self._db.execute("INSERT INTO leases (incident_id, owner, token, expires_at) VALUES (?, ?, ?, ?)",
                         (incident.id, owner, token, now + lease_seconds))
        self._db.executemany("INSERT OR REPLACE INTO lease_agents (agent, incident_id) VALUES (?, ?)",
                             [(a, incident.id) for a in incident.agents])
        return Claim(incident, owner, token, incident.agents, now + lease_seconds)

    def extend(self, claim: Claim, agents: Iterable[str]) -> Claim | None:
        new = [a for a in dict.fromkeys(agents) if a not in claim.agents]
        if not new:
            return claim
        now = self._clock()
        with self._lock, LeaseTransaction(self._db):
            self._expire(now)  # first: a lease that expired is not held, even if no one took it over yet
            if not self._holds(claim):
                raise LeaseLost(f"incident {claim.incident_id}: the lease of {claim.owner} expired or was taken over")
            if self._held_by_others(new, claim.incident_id, now):
                return None
            self._db.executemany("INSERT OR REPLACE INTO lease_agents (agent, incident_id) VALUES (?, ?)",
                                 [(a, claim.incident_id) for a in new])
        return Claim(claim.incident, claim.owner, claim.token, (*claim.agents, *new), claim.expires_at)

    def renew(self, claim: Claim, lease_seconds: float) -> Claim | None:
        return self.renew_many([claim], lease_seconds)[0]

    def renew_many(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim | None]:
        until = self._clock() + lease_seconds
        with self._lock, LeaseTransaction(self._db):
            self._db.executemany("UPDATE leases SET expires_at = ? WHERE incident_id = ? AND token = ?",
                                 [(until, c.incident_id, c.token) for c in claims])
            held: set[tuple[str, str]] = set()
            for start in range(0, len(claims), _PARAMETERS):
                ids = [c.incident_id for c in claims[start:start + _PARAMETERS]]
                held.update(self._db.execute(f"SELECT incident_id, token FROM leases WHERE incident_id IN "
                                             f"({','.join('?' * len(ids))})", ids).fetchall())
        return [Claim(c.incident, c.owner, c.token, c.agents, until) if (c.incident_id, c.token) in held else None
                for c in claims]

    def release(self, claim: Claim, retry_at: float | None = None) -> None:
        with self._lock, LeaseTransaction(self._db):
            if not self._db.execute("DELETE FROM leases WHERE incident_id = ? AND token = ?",
                                    (claim.incident_id, claim.token)).rowcount:
                return  # lost already: whoever holds it now keeps it
            self._db.execute("DELETE FROM lease_agents WHERE incident_id = ?", (claim.incident_id,))
            if retry_at is not None:
                row = self._db.execute("SELECT doc FROM incidents WHERE id = ?", (claim.incident_id,)).fetchone()
                current = from_doc(row[0]) if row else None
                if current is not None and current.state != IncidentState.CLOSED:
                    updated = changed(current, self._clock(), {"retry_at": retry_at})
                    self._db.execute(UPDATE_INCIDENT, (updated.state, json.dumps(updated.as_dict()), retry_at,
                                                        updated.id))
                    self._remember(updated)

    def queued_count(self) -> int:
        now = self._clock()
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM incidents WHERE {_RUNNABLE} "
                                    f"AND id NOT IN ({_LIVE_LEASE})", (now,)).fetchone()[0]

    def leased_agents(self) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            rows = self._db.execute("SELECT la.agent FROM lease_agents la JOIN leases l "
                                    "ON l.incident_id = la.incident_id WHERE l.expires_at > ?", (now,)).fetchall()
        return frozenset(r[0] for r in rows)


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; nested uses join the outer one."""

    def __init__(self, db: sqlite3.Connection):
        self.db, self.outer = db, False

    def __enter__(self) -> None:
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, trace) -> None:
        if not self.outer:
            return
        try:
            if kind is None:
                self.db.execute("COMMIT")
        finally:
            # On an error, or a COMMIT that failed (disk full). That COMMIT may have rolled back already: a second
            # ROLLBACK would raise "no transaction is active" and hide the real error.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")


class LeaseTransaction(Transaction):
    """A transaction on the lease tables, committed without an fsync (WAL, synchronous=NORMAL: atomic, and
    durable once the next FULL commit or checkpoint syncs the log). A lease lost to a power cut is harmless:
    its holder went down with the machine, and a lost release only makes the lease expire instead."""

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            super().__enter__()
        except BaseException:  # BEGIN failed (locked): every later commit on this connection must sync again
            if self.outer:
                self.db.execute("PRAGMA synchronous=FULL")
            raise

    def __exit__(self, kind, value, trace) -> None:
        try:
            super().__exit__(kind, value, trace)
        finally:
            if self.outer:
                self.db.execute("PRAGMA synchronous=FULL")
