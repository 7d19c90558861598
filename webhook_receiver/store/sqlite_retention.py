"""Retention on the SQLite store: the oldest closed history deleted a batch at a time, the file kept bounded."""
from __future__ import annotations

import sqlite3
import threading
from typing import Callable

from ..incident import Incident
from .contract import TrimResult, check_trim
from .sqlite_leases import Transaction

# The expression incidents_by_closing indexes (sqlite_schema.py, migration 5): the query must say it the same way.
CLOSED_AT = "COALESCE(json_extract(doc, '$.closed_at'), json_extract(doc, '$.updated_at'))"
# INDEXED BY: the planner would rather read every closed incident by state and sort them (and says so if it cannot).
_CLOSED_BEFORE = (f"SELECT id FROM incidents INDEXED BY incidents_by_closing WHERE state = 'closed' AND {CLOSED_AT} < ? "
                  f"ORDER BY {CLOSED_AT} LIMIT ?")
_NOTIFICATIONS_BEFORE = ("DELETE FROM notifications WHERE id IN (SELECT id FROM notifications WHERE received_at < ? "
                         "ORDER BY received_at LIMIT ?)")
_LINEAGE_BEFORE = (
    "DELETE FROM lineage WHERE id IN (SELECT l.id FROM lineage l WHERE l.ts < ? AND (l.incident_id IS NULL OR "
    "NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = l.incident_id AND i.state != 'closed')) "
    "ORDER BY l.ts LIMIT ?)")
_EVENTS_BEFORE = "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? ORDER BY ts LIMIT ?)"


class SqliteRetention:
    """The retention half of SqliteIncidentStore, on its connection (`_db`), lock and cache of open incidents."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    open_incidents: Callable[[], list[Incident]]

    def trim_history(self, cutoff: float, batch: int = 500) -> TrimResult:
        check_trim(cutoff, batch)
        incidents = self._trim_incidents(cutoff, batch)
        with self._lock:  # each DELETE below is one statement: a transaction of its own
            # Every open incident is in the cache, kept under this lock: none of their notifications goes.
            oldest_open = min((i.opened_at for i in self.open_incidents()), default=cutoff)
            notifications = self._db.execute(_NOTIFICATIONS_BEFORE, (min(cutoff, oldest_open), batch)).rowcount
        with self._lock:
            lineage = self._db.execute(_LINEAGE_BEFORE, (cutoff, batch)).rowcount
        with self._lock:
            events = self._db.execute(_EVENTS_BEFORE, (cutoff, batch)).rowcount
        done = TrimResult(notifications, incidents, lineage, events)
        if notifications or incidents or lineage or events:
            self._checkpoint()
        return done

    def _trim_incidents(self, cutoff: float, batch: int) -> int:
        with self._lock, Transaction(self._db):
            ids = [row[0] for row in self._db.execute(_CLOSED_BEFORE, (cutoff, batch))]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            self._db.execute(f"DELETE FROM incident_agents WHERE incident_id IN ({marks})", ids)
            return self._db.execute(f"DELETE FROM incidents WHERE id IN ({marks})", ids).rowcount

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it to nothing: what was trimmed stops taking room twice.

        The main file needs no VACUUM: the pages the deletes emptied go to SQLite's freelist and the next inserts
        take them before the file grows, so under steady load it stops growing once retention trims as much as
        arrives (bench/sqlite_retention.py measures it). A VACUUM would rewrite the whole file, holding the lock
        for as long, and need as much room again."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
