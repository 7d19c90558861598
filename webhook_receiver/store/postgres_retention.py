"""Retention on the PostgreSQL store: the oldest closed history deleted a batch at a time, by any number of
receivers at once. Each batch locks its rows with FOR UPDATE SKIP LOCKED: two trimmers take different rows and
never wait for each other (no deadlock, whatever their order), and rows another transaction holds are left to it."""
from __future__ import annotations

from psycopg_pool import ConnectionPool

from .contract import TrimResult, check_trim

# The expression incidents_by_closing indexes (postgres_schema.py, migration 3): the query must say it the same way.
CLOSED_AT = ("COALESCE((doc::json ->> 'closed_at')::double precision, "
             "(doc::json ->> 'updated_at')::double precision)")
_CLOSED_BEFORE = (f"SELECT id FROM incidents WHERE state = 'closed' AND {CLOSED_AT} < %s ORDER BY {CLOSED_AT} "
                  "LIMIT %s FOR UPDATE SKIP LOCKED")
# The oldest open incident's opening, each half read through its partial unique index (the open ones only). OFFSET 0
# keeps the planner from answering min() by walking incidents_by_opening from the oldest incident, which reads every
# closed one before it meets an open one.
_OPENINGS = "SELECT opened_at FROM incidents WHERE state <> 'closed' AND conflict_key IS {} NULL OFFSET 0"
_OLDEST_OPEN = (f"LEAST((SELECT min(opened_at) FROM ({_OPENINGS.format('')}) AS own), "
                f"(SELECT min(opened_at) FROM ({_OPENINGS.format('NOT')}) AS conflicts))")
_NOTIFICATIONS_BEFORE = (
    "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications "
    f"WHERE received_at < LEAST(%s, {_OLDEST_OPEN}) ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)")
_LINEAGE_BEFORE = (
    "DELETE FROM lineage WHERE id IN (SELECT l.id FROM lineage l WHERE l.ts < %s AND (l.incident_id IS NULL OR "
    "NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = l.incident_id AND i.state <> 'closed')) "
    "ORDER BY l.ts LIMIT %s FOR UPDATE OF l SKIP LOCKED)")
_EVENTS_BEFORE = ("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < %s ORDER BY ts LIMIT %s "
                  "FOR UPDATE SKIP LOCKED)")


class PostgresRetention:
    """The retention half of PostgresIncidentStore, on its pool (`_pool`)."""

    _pool: ConnectionPool

    def trim_history(self, cutoff: float, batch: int = 500) -> TrimResult:
        check_trim(cutoff, batch)
        with self._pool.connection() as db:
            with db.transaction():
                ids = [row[0] for row in db.execute(_CLOSED_BEFORE, (cutoff, batch))]
                incidents = 0
                if ids:
                    db.execute("DELETE FROM incident_agents WHERE incident_id = ANY(%s)", (ids,))
                    incidents = db.execute("DELETE FROM incidents WHERE id = ANY(%s)", (ids,)).rowcount
            # Autocommit: each statement below is a transaction of its own.
            notifications = db.execute(_NOTIFICATIONS_BEFORE, (cutoff, batch)).rowcount
            lineage = db.execute(_LINEAGE_BEFORE, (cutoff, batch)).rowcount
            events = db.execute(_EVENTS_BEFORE, (cutoff, batch)).rowcount
        return TrimResult(notifications, incidents, lineage, events)
