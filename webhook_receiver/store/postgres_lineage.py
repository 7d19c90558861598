"""The decision lineage in the PostgreSQL store, every receiver's entries in one table: one row per entry, its line
as written, paged newest first by id through the indexes (agent, id), (incident_id, id) and the primary key.

Ids are handed out at insert and committed in any order by several receivers: a page read while another receiver
commits may miss an entry with a lower id committed after it was read (the next read shows it)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

from psycopg import Connection, Error
from psycopg_pool import ConnectionPool

from .contract import StoredLineage, StoredLineagePage, StoreError
from .lineage_rows import SINCE_SLACK_SECONDS, after_query, floor_query, lineage_row, page_query, to_page
from .postgres_schema import redacted

INSERT_LINEAGE = ("INSERT INTO lineage (ts, agent, incident_id, event, entry) VALUES (%s, %s, %s, %s, %s) "
                  "RETURNING id")


class PostgresGuarded:
    """What the lineage and the event log share: a connection of the store's pool (`_pool`)."""

    _pool: ConnectionPool
    url: str

    @contextmanager
    def _guarded(self, what: str) -> Iterator[Connection]:
        """A pooled connection (autocommit); a failure as a StoreError naming the database and WHAT failed."""
        try:
            with self._pool.connection() as db:
                yield db
        except Error as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(f"{redacted(self.url)}: cannot {what} ({text[:300]})") from None


class PostgresLineage(PostgresGuarded):
    """The lineage half of PostgresIncidentStore, on its pool."""

    def append_lineage(self, entry: Mapping[str, object], line: str) -> int:
        row = lineage_row(entry, line)
        with self._guarded("store the lineage entry") as db:
            return db.execute(INSERT_LINEAGE, row).fetchone()[0]  # committed (synchronous_commit) when it returns

    def lineage_page(self, limit: int, before: int | None = None, agent: str | None = None,
                     incident_id: str | None = None, since: float | None = None) -> StoredLineagePage:
        with self._guarded("read the lineage") as db:
            floor = None
            if since is not None:
                found = db.execute(floor_query("%s"), (since - SINCE_SLACK_SECONDS,)).fetchone()
                floor = found[0] if found else None
            query, args = page_query("%s", limit, before, agent, incident_id, since, floor, pinned=True)
            rows = db.execute(query, args).fetchall()
        return to_page(rows, limit)

    def lineage_after(self, after: int = 0, limit: int = 1000) -> list[StoredLineage]:
        with self._guarded("read the lineage") as db:
            rows = db.execute(after_query("%s"), (after, limit)).fetchall()
        return [StoredLineage(*row) for row in rows]
