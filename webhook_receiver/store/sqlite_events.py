"""The operator console's event log in the SQLite store: append-only rows read oldest first by id (the SSE event ids),
AUTOINCREMENT so that an id is never handed out twice, even after the newest events were trimmed."""
from __future__ import annotations

from typing import Callable, Sequence

from .contract import StoredEvent, check_events
from .sqlite_leases import Transaction
from .sqlite_lineage import SqliteGuarded

INSERT_EVENT = "INSERT INTO events (ts, kind, agent, body) VALUES (?, ?, ?, ?)"
_EVENTS_AFTER = "SELECT id, ts, kind, agent, body FROM events WHERE id > ? ORDER BY id LIMIT ?"


class SqliteEvents(SqliteGuarded):
    """The event-log half of SqliteIncidentStore, on its connection, lock and clock."""

    _clock: Callable[[], float]

    def append_events(self, events: Sequence[tuple[str, str | None, str]]) -> list[int]:
        rows = check_events(events)
        if not rows:
            return []
        with self._guarded("store the console events") as db, Transaction(db):
            now = self._clock()
            return [db.execute(INSERT_EVENT, (now, *row)).lastrowid for row in rows]

    def events_after(self, after: int = 0, limit: int = 500) -> list[StoredEvent]:
        with self._guarded("read the console events") as db:
            rows = db.execute(_EVENTS_AFTER, (after, limit)).fetchall()
        return [StoredEvent(*row) for row in rows]

    def last_event_id(self) -> int:
        with self._guarded("read the console events") as db:
            return db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
