"""The decision lineage in the SQLite store: one row per entry, its line as written, paged newest first by id through
the indexes (agent, id), (incident_id, id) and the primary key."""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from .contract import StoredLineage, StoredLineagePage, StoreError
from .lineage_rows import SINCE_SLACK_SECONDS, after_query, floor_query, lineage_row, page_query, to_page

INSERT_LINEAGE = "INSERT INTO lineage (ts, agent, incident_id, event, entry) VALUES (?, ?, ?, ?, ?)"


class SqliteGuarded:
    """What the lineage and the event log share: the store's connection (`_db`) under its lock."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    path: Path

    @contextmanager
    def _guarded(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a failure as a StoreError naming the ledger and WHAT failed."""
        try:
            with self._lock:
                yield self._db
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot {what} ({exc})") from None


class SqliteLineage(SqliteGuarded):
    """The lineage half of SqliteIncidentStore, on its connection and lock."""

    def append_lineage(self, entry: Mapping[str, object], line: str) -> int:
        row = lineage_row(entry, line)
        with self._guarded("store the lineage entry") as db:
            # One statement in its own transaction: committed and fsync'd (synchronous=FULL) when it returns.
            return db.execute(INSERT_LINEAGE, row).lastrowid

    def lineage_page(self, limit: int, before: int | None = None, agent: str | None = None,
                     incident_id: str | None = None, since: float | None = None) -> StoredLineagePage:
        with self._guarded("read the lineage") as db:
            floor = None
            if since is not None:
                found = db.execute(floor_query("?"), (since - SINCE_SLACK_SECONDS,)).fetchone()
                floor = found[0] if found else None
            query, args = page_query("?", limit, before, agent, incident_id, since, floor)
            rows = db.execute(query, args).fetchall()
        return to_page(rows, limit)

    def lineage_after(self, after: int = 0, limit: int = 1000) -> list[StoredLineage]:
        with self._guarded("read the lineage") as db:
            rows = db.execute(after_query("?"), (after, limit)).fetchall()
        return [StoredLineage(*row) for row in rows]
