"""The PostgreSQL ledger's database: a connection pool opened only if the server answers (every problem in one
line), its schema versioned and migrated at start, one receiver at a time (an advisory lock)."""
from __future__ import annotations

from psycopg import Connection, Error, conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from .contract import StoreError

SCHEMA_VERSION = 1
# The same guarantees as the SQLite ledger, held by the database for every receiver sharing it: one open incident
# per agent and per conflict (partial unique indexes), one claim per incident and per agent (primary keys).
MIGRATIONS = {
    1: """
CREATE TABLE notifications (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    opened_at DOUBLE PRECISION NOT NULL,
    conflict_key TEXT,
    retry_at DOUBLE PRECISION
);
CREATE INDEX incidents_by_state ON incidents(state);
CREATE INDEX incidents_by_opening ON incidents(opened_at, id);
CREATE UNIQUE INDEX one_open_incident_per_agent ON incidents(agent)
    WHERE state <> 'closed' AND conflict_key IS NULL;
CREATE UNIQUE INDEX one_open_incident_per_conflict ON incidents(conflict_key)
    WHERE state <> 'closed' AND conflict_key IS NOT NULL;
CREATE TABLE incident_agents (
    agent TEXT NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    PRIMARY KEY (agent, incident_id)
);
CREATE INDEX incident_agents_by_incident ON incident_agents(incident_id);
CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE leases (
    incident_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX leases_by_expiry ON leases(expires_at);
CREATE TABLE lease_agents (
    agent TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES leases(incident_id) ON DELETE CASCADE
);
CREATE INDEX lease_agents_by_incident ON lease_agents(incident_id);
""",
}
_MIGRATION_LOCK = 0x6175746f72656d  # pg_advisory_xact_lock key: one receiver migrates at a time
KILL_SWITCH_FLAG = "kill_switch"
ROLLOUT_FLAG = "rollout"


def redacted(url: str) -> str:
    """URL without its password, for messages."""
    try:
        parts = conninfo.conninfo_to_dict(url)
    except Error:
        return "the PostgreSQL URL (unparsable)"
    return " ".join(f"{k}={v}" for k, v in parts.items() if k != "password")


def open_pool(url: str, max_size: int = 8, timeout: float = 10.0) -> ConnectionPool:
    """A pool of autocommit connections to URL, or StoreError saying why the server cannot be used: one direct
    connection first, so that a wrong address, password or database name is said at once, not after the pool's
    retries."""
    try:
        Connection.connect(url, connect_timeout=max(1, round(timeout))).close()
    except Error as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise StoreError(f"{redacted(url)}: cannot connect to the PostgreSQL ledger ({text[:300]}); check "
                         "AUTOREM_STORE_URL and that the server is up") from None
    pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=timeout,
                          kwargs={"autocommit": True}, name="autonomy-store")
    try:
        pool.open(wait=True, timeout=timeout)
    except PoolTimeout:
        pool.close()
        raise StoreError(f"{redacted(url)}: the PostgreSQL ledger accepted a connection, then none within "
                         f"{timeout:g}s; check the server's max_connections and load") from None
    return pool


def migrate(pool: ConnectionPool, where: str) -> int:
    """Bring the schema to SCHEMA_VERSION in one transaction; refuse a database a newer receiver wrote."""
    with pool.connection() as db, db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] or 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{where}: written by a newer receiver (ledger schema {version}; this receiver "
                             f"knows up to {SCHEMA_VERSION}): run that version, or point AUTOREM_STORE_URL at "
                             "another database")
        for number in sorted(MIGRATIONS):
            if version < number:
                db.execute(MIGRATIONS[number])
        if version < SCHEMA_VERSION:
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
        return max(version, SCHEMA_VERSION)
