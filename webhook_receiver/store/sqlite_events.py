"""The operator console's event log in the SQLite store: append-only rows read oldest first by id (the SSE event ids),
AUTOINCREMENT so that an id is never handed out twice, even after the newest events were trimmed."""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .contract import StoredEvent, StoreError, check_events
from .sqlite_leases import Transaction

INSERT_EVENT = "INSERT INTO events (ts, kind, agent, body) VALUES (?, ?, ?, ?)"
_EVENTS_AFTER = "SELECT id, ts, kind, agent, body FROM events WHERE id > ? ORDER BY id LIMIT ?"


class SqliteEvents:
    """The event-log half of SqliteIncidentStore, on its connection (`_db`), lock and clock."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _clock: Callable[[], float]
    path: Path

    @contextmanager
    def _events(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a failure as a StoreError naming the ledger and WHAT failed."""
        try:
            with self._lock:
                yield self._db
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot {what} ({exc})") from None

    def append_events(self, events: Sequence[tuple[str, str | None, str]]) -> list[int]:
        rows = check_events(events)
        if not rows:
            return []
        with self._events("store the console events") as db, Transaction(db):
            now = self._clock()
            return [db.execute(INSERT_EVENT, (now, *row)).lastrowid for row in rows]

    def events_after(self, after: int = 0, limit: int = 500) -> list[StoredEvent]:
        with self._events("read the console events") as db:
            rows = db.execute(_EVENTS_AFTER, (after, limit)).fetchall()
        return [StoredEvent(*row) for row in rows]

    def last_event_id(self) -> int:
        with self._events("read the console events") as db:
            return db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
