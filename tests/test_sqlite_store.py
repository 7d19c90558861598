"""What only the SQLite store does: its SQL constraints, its file checks and its schema migrations (the behaviour
every store shares is in test_store_contract.py)."""
import sqlite3

import pytest

from tests.test_store_contract import GRACE, Clock, claim, firing, ingest
from webhook_receiver.store import SqliteIncidentStore, StoreError, sqlite_store
from webhook_receiver.store.sqlite_schema import SCHEMA_VERSION


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    opened = SqliteIncidentStore(tmp_path / "incidents.sqlite3", GRACE, clock=clock)
    yield opened
    opened.close()


def test_the_unique_index_holds_one_open_incident_per_agent_even_against_a_direct_insert(store):
    incident = store.get(ingest(store, firing()).opened[0])
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at) VALUES (?, ?, ?, ?, ?)",
                           ("another-id", "CMO", "open", "{}", 1.0))
    with pytest.raises(sqlite3.IntegrityError):  # any open state counts, not only "open"
        store._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at) VALUES (?, ?, ?, ?, ?)",
                           ("another-id", "CMO", "escalated", "{}", 1.0))
    # closed incidents do not count: history may hold many
    store._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at) VALUES (?, ?, ?, ?, ?)",
                       ("old-id", "CMO", "closed", "{}", 1.0))
    assert store.open_for("CMO").id == incident.id


def test_the_database_holds_one_open_incident_per_conflict(store):
    ingest(store, claim("CMO"))
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at, conflict_key) "
                           "VALUES (?, ?, ?, ?, ?, ?)", ("x", "CRO", "open", "{}", 1.0, "directive:D-REV-1"))


def test_a_ledger_of_schema_0_is_migrated_in_place_keeping_its_incidents(tmp_path):
    path = tmp_path / "incidents.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE notifications (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL,
                                    source TEXT NOT NULL, body TEXT NOT NULL);
        CREATE TABLE incidents (id TEXT PRIMARY KEY, agent TEXT NOT NULL, state TEXT NOT NULL, doc TEXT NOT NULL,
                                opened_at REAL NOT NULL);
        CREATE UNIQUE INDEX one_open_incident_per_agent ON incidents(agent) WHERE state != 'closed';
        CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    old.execute("INSERT INTO incidents VALUES (?, ?, ?, ?, ?)", ("old-1", "CMO", "escalated", (
        '{"id": "old-1", "agent": "CMO", "state": "escalated", "source": "alertmanager", "opened_at": 1.0, '
        '"updated_at": 1.0, "reason": "AutoRemediationFailed"}'), 1.0))
    old.commit()
    old.close()
    store = SqliteIncidentStore(path)
    try:
        assert store.get("old-1").state == "escalated" and store.get("old-1").claimants == ()
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert ingest(store, claim("CRO")).opened  # the new columns and tables work
    finally:
        store.close()


def test_a_ledger_written_by_a_newer_receiver_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "incidents.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match=f"newer receiver.*schema {SCHEMA_VERSION + 1}.*knows up to {SCHEMA_VERSION}"):
        SqliteIncidentStore(path)


def test_a_schema_2_ledgers_kill_switch_and_retry_times_are_carried_into_schema_3(tmp_path):
    path = tmp_path / "incidents.sqlite3"
    first = SqliteIncidentStore(path)
    incident_id = ingest(first, firing()).opened[0]
    first.update(incident_id, retry_at=2_000_000_000.0)
    first.close()
    old = sqlite3.connect(path)  # back to how schema 2 kept them: no lease tables, the switch as "false"
    old.executescript("""
        DROP TABLE leases; DROP TABLE lease_agents; ALTER TABLE incidents DROP COLUMN retry_at;
        DELETE FROM flags; INSERT INTO flags VALUES ('remediation_enabled', 'false'); PRAGMA user_version = 2;
    """)
    old.close()
    again = SqliteIncidentStore(path)
    try:
        switch = again.kill_switch()
        assert (switch.enabled, switch.reason) == (False, "disabled before the last restart")
        assert again.claim("w", 30) is None  # its retry time (from the document) still holds it back
        assert again.get(incident_id).retry_at == 2_000_000_000.0
    finally:
        again.close()


def test_a_failure_inside_the_transaction_leaves_nothing_of_the_notification(store, monkeypatch):
    ingest(store, firing("CRO"))
    before = (store.notification_count(), [i.as_dict() for i in store.list()])
    # The notification row is written first in the same transaction; the incident's insert then fails.
    monkeypatch.setattr(sqlite_store, "INSERT_INCIDENT", "INSERT INTO no_such_table VALUES (?, ?, ?, ?, ?, ?, ?)")
    with pytest.raises(sqlite3.OperationalError):
        ingest(store, firing("CMO"))
    assert (store.notification_count(), [i.as_dict() for i in store.list()]) == before
    assert store.open_for("CMO") is None
    monkeypatch.undo()
    assert ingest(store, firing("CMO")).opened  # still usable


def test_the_store_refuses_an_update_under_a_lease_whose_row_another_claim_replaced(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    old = store.claim("a", 10)
    clock.now += 11
    new = store.claim("b", 10)
    rows = store._db.execute("SELECT owner, token FROM leases WHERE incident_id = ?", (incident_id,)).fetchall()
    assert rows == [("b", new.token)] and old.token != new.token  # one row per incident: the new holder's


def test_a_lease_transaction_that_cannot_begin_leaves_later_commits_fully_synced(store, tmp_path):
    # Lease writes commit without an fsync; if their BEGIN fails (another writer holds the file), the
    # connection must not stay that way for the notifications committed after it.
    store._db.execute("PRAGMA busy_timeout=0")
    ingest(store, firing())
    other = sqlite3.connect(tmp_path / "incidents.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.claim("w", 30)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.claim("w", 30) is not None
