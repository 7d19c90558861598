"""The SQLite ledger's file: opened only if usable (every problem in one line), its schema versioned and migrated."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .contract import StoreError

TABLES = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    opened_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_state ON incidents(state);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
MIGRATIONS = {
    # 1: conflicts are incidents of their own (one open incident per conflict key), listed under each of their
    # claimants; an agent still has at most one open incident of its own.
    1: """
ALTER TABLE incidents ADD COLUMN conflict_key TEXT;
DROP INDEX IF EXISTS one_open_incident_per_agent;
CREATE UNIQUE INDEX one_open_incident_per_agent ON incidents(agent) WHERE state != 'closed' AND conflict_key IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS one_open_incident_per_conflict ON incidents(conflict_key)
    WHERE state != 'closed' AND conflict_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS incident_agents (
    agent TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (agent, incident_id)
);
""",
    # 2: incidents are listed a page at a time, newest first, by (opened_at, id).
    2: """
CREATE INDEX IF NOT EXISTS incidents_by_opening ON incidents(opened_at, id);
""",
    # 3: work is claimed with leases in the store (an incident, and each of its agents, held by one claim until
    # its lease expires); an incident may wait for a retry time; the kill switch keeps its reason.
    3: """
ALTER TABLE incidents ADD COLUMN retry_at REAL;
UPDATE incidents SET retry_at = json_extract(doc, '$.retry_at') WHERE state != 'closed';
CREATE TABLE IF NOT EXISTS leases (
    incident_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_agents (
    agent TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lease_agents_by_incident ON lease_agents(incident_id);
""",
    # 4: the decision lineage is kept in the store too (the JSONL file stays as the export): each entry's line
    # as written, with what it is read by (agent, incident, time) beside it, paged newest first by id.
    4: """
CREATE TABLE IF NOT EXISTS lineage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    agent TEXT,
    incident_id TEXT,
    event TEXT,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lineage_by_agent ON lineage(agent, id);
CREATE INDEX IF NOT EXISTS lineage_by_incident ON lineage(incident_id, id);
CREATE INDEX IF NOT EXISTS lineage_by_time ON lineage(ts);
""",
    # 5: retention (sqlite_retention.py) trims the oldest first without scanning: notifications by arrival,
    # closed incidents by when they closed (in their document; updated_at for one closed without closed_at), and
    # an incident's agents' rows by incident.
    5: """
CREATE INDEX IF NOT EXISTS notifications_by_arrival ON notifications(received_at);
CREATE INDEX IF NOT EXISTS incidents_by_closing ON incidents(
    COALESCE(json_extract(doc, '$.closed_at'), json_extract(doc, '$.updated_at'))) WHERE state = 'closed';
CREATE INDEX IF NOT EXISTS incident_agents_by_incident ON incident_agents(incident_id);
""",
    # 6: the operator console's event log (sqlite_events.py): append-only, read oldest first by id (the SSE event
    # ids), trimmed by time.
    6: """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    agent TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(ts);
""",
}
SCHEMA_VERSION = max(MIGRATIONS)
WAL_SIZE_LIMIT = 8 * 1024 * 1024  # bytes: twice what the 1,000 pages of an automatic checkpoint fill
KILL_SWITCH_FLAG = "kill_switch"
ROLLOUT_FLAG = "rollout"  # webhook_receiver.rollout's value as a JSON document; absent until first set
_OLD_KILL_SWITCH_FLAG = "remediation_enabled"  # schema 2 and before: "true" or "false", no reason


def connect(path: Path) -> sqlite3.Connection:
    """Connect, and refuse a file that is not a usable ledger: every problem in one line, nothing half-done."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: cannot create the data directory ({exc.strerror})") from None
    db = None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # A checkpoint makes the WAL restart from its beginning but never shrinks the file: truncate it to this
        # after each checkpoint, so a burst (or a large trim) does not leave a large WAL behind for good.
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            found = "; ".join(line.strip() for text in problems for line in text.splitlines()
                              if line.strip() and not line.startswith("***"))
            raise StoreError(f"{path}: the ledger fails its integrity check ({found[:300]}); restore it "
                             "from a backup, or move it aside to start with an empty one")
        db.execute("BEGIN IMMEDIATE")  # can it be written? (a read-only file or directory fails here)
        db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        text = str(exc)
        what = ("not an SQLite ledger" if "not a database" in text else
                "read-only: the receiver must be able to write it" if "readonly" in text or "read-only" in text
                else "cannot be opened")
        raise StoreError(f"{path}: {what} ({text}); fix it, or move it aside to start with an empty "
                         "ledger") from None
    except StoreError:
        db.close()
        raise
    return db


def _run(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; refuse a file a newer receiver wrote."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        db.close()
        raise StoreError(f"{path}: written by a newer receiver (ledger schema {version}; this receiver "
                         f"knows up to {SCHEMA_VERSION}): run that version, or move the file aside")
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        _run(db, TABLES)
        columns = {row[1] for row in db.execute("PRAGMA table_info(incidents)")}
        for number in sorted(MIGRATIONS):
            if version < number:
                script = MIGRATIONS[number]
                if number == 1 and "conflict_key" in columns:  # a file from before versioning that has it
                    script = script.replace("ALTER TABLE incidents ADD COLUMN conflict_key TEXT;", "")
                _run(db, script)
        if version < 3:
            _move_kill_switch(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _move_kill_switch(db: sqlite3.Connection) -> None:
    row = db.execute("SELECT value FROM flags WHERE name = ?", (_OLD_KILL_SWITCH_FLAG,)).fetchone()
    if row is None:
        return
    enabled = row[0] != "false"
    value = {"enabled": enabled, "reason": None if enabled else "disabled before the last restart",
             "changed_at": None}
    db.execute("INSERT OR REPLACE INTO flags (name, value) VALUES (?, ?)", (KILL_SWITCH_FLAG, json.dumps(value)))
    db.execute("DELETE FROM flags WHERE name = ?", (_OLD_KILL_SWITCH_FLAG,))
