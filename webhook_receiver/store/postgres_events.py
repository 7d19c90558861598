"""The operator console's event log in the PostgreSQL store, every receiver's events in one table read oldest first
by id (the SSE event ids).

Appends are serialised by an advisory lock held until they commit: ids are handed out, and become visible, in one
order, so a reader that has seen an id never misses a lower one committed after it (unlike the lineage's)."""
from __future__ import annotations

from typing import Callable, Sequence

from .contract import StoredEvent, check_events
from .postgres_lineage import PostgresGuarded

INSERT_EVENT = "INSERT INTO events (ts, kind, agent, body) VALUES (%s, %s, %s, %s) RETURNING id"
_EVENTS_AFTER = "SELECT id, ts, kind, agent, body FROM events WHERE id > %s ORDER BY id LIMIT %s"
_APPEND_LOCK = 0x6576656e7473  # pg_advisory_xact_lock key ("events"): one append commits at a time


class PostgresEvents(PostgresGuarded):
    """The event-log half of PostgresIncidentStore, on its pool and clock."""

    _clock: Callable[[], float]

    def append_events(self, events: Sequence[tuple[str, str | None, str]]) -> list[int]:
        rows = check_events(events)
        if not rows:
            return []
        with self._guarded("store the console events") as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
            now = self._clock()
            return [db.execute(INSERT_EVENT, (now, *row)).fetchone()[0] for row in rows]

    def events_after(self, after: int = 0, limit: int = 500) -> list[StoredEvent]:
        with self._guarded("read the console events") as db:
            rows = db.execute(_EVENTS_AFTER, (after, limit)).fetchall()
        return [StoredEvent(int(i), ts, kind, agent, body) for i, ts, kind, agent, body in rows]

    def last_event_id(self) -> int:
        with self._guarded("read the console events") as db:
            return db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
