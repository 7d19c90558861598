"""`autonomy store migrate`: a SQLite ledger copied into an empty PostgreSQL ledger (a real server), all or nothing;
the PostgreSQL store then answers as the SQLite one did, and carries on from where it stopped."""
import sqlite3

import psycopg
import pytest

from autonomy_cli import main
from devstack.local_stack import free_port
from tests.test_store_contract import GRACE, Clock, claim, firing, resolved
from webhook_receiver.data_dir import DataDirLock
from webhook_receiver.rollout import Rollout
from webhook_receiver.store import SqliteIncidentStore, StoreError
from webhook_receiver.store import store_copy as migration
from webhook_receiver.store.postgres_store import PostgresIncidentStore
from webhook_receiver.store.store_copy import copy_ledger, ledger_path, target_url

LINEAGE = "SELECT id, ts, agent, incident_id, event, entry FROM lineage ORDER BY id"
TABLES = ("incidents", "incident_agents", "flags", "notifications", "lineage", "leases")
PASSWORD = "hunter2-s3cret"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def target(postgres_server):
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def add_lineage(path, *rows):
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO lineage (ts, agent, incident_id, event, entry) VALUES (?, ?, ?, ?, ?)", rows)
    db.close()


@pytest.fixture
def ledger(tmp_path, clock):
    """A receiver's ledger, stopped: an open incident with a retry time, a closed one, an open conflict of two
    agents, the kill switch off with a reason, a rollout, lineage lines."""
    path = tmp_path / "data" / "incidents.sqlite3"
    store = SqliteIncidentStore(path, GRACE, clock=clock)
    cmo = store.ingest("alertmanager", '{"n": 1}', [firing("CMO")]).opened[0]
    held = store.claim("worker", 30, cmo)
    store.release(held, retry_at=clock.now + 60)
    closed = store.ingest("alertmanager", '{"n": 2}', [firing("CFO")]).opened[0]
    store.update(closed, state="escalated", outcome="escalated", reason="AutoRemediationFailed")
    clock.now += 10
    store.ingest("alertmanager", '{"n": 3}', [resolved("CFO")])
    store.ingest("grafana", '{"n": 4}', [claim("CRO"), claim("CTO")])
    store.set_kill_switch(False, "bad deploy of the billing agents")
    store.set_rollout(Rollout(("CMO", "CRO"), ("CONFLICT", "TRANSIENT"), "pack section 11", clock.now))
    store.close()
    add_lineage(path, *[(1_000_000.0 + n, "CMO" if n % 2 else "CRO", cmo if n % 2 else None, "attempt",
                         f'{{"n": {n}, "event": "attempt"}}') for n in range(5)])
    with sqlite3.connect(path) as db:  # ids with a gap, as after retention: kept as they are
        db.execute("DELETE FROM lineage WHERE id = 2")
    db.close()
    return path


def sqlite_rows(path, query):
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def pg_rows(url, query):
    with psycopg.connect(url) as db:
        return db.execute(query).fetchall()


def pg_counts(url):
    with psycopg.connect(url) as db:
        present = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES if t in present}


def answers(store):
    """Everything the store Protocol answers about a ledger, in a comparable form."""
    everything = store.list(limit=1000)
    return {
        "get": {i.id: store.get(i.id) for i in everything},
        "list": everything,
        "list_cro": store.list(agent="CRO"),
        "list_closed": store.list(state="closed"),
        "page_after_first": store.list(limit=10, before=(everything[0].opened_at, everything[0].id)),
        "open_for": {a: store.open_for(a) for a in ("CMO", "CFO", "CRO", "CTO")},
        "open_incidents": sorted(store.open_incidents(), key=lambda i: i.id),
        "conflicts_of": {a: store.conflicts_of(a) for a in ("CRO", "CTO")},
        "open_conflict_keys": store.open_conflict_keys(),
        "open_count": store.open_count(),
        "kill_switch": store.kill_switch(),
        "rollout": store.rollout(),
        "notifications": store.notifications(limit=1000),
        "notification_count": store.notification_count(),
        "queued": store.queued_count(),
    }


def test_the_postgresql_store_answers_as_the_sqlite_one_after_a_migration(ledger, target, clock, monkeypatch):
    monkeypatch.setattr(migration, "PAGE_ROWS", 2)  # every table read in several pages
    source = SqliteIncidentStore(ledger, GRACE, clock=clock)
    before = answers(source)
    source.close()
    report = copy_ledger(ledger, target, now=clock.now)
    assert report.counts == {"incidents": 3, "incident_agents": 2, "flags": 2, "notifications": 4, "lineage": 4}
    assert report.open_incidents == 2
    assert PASSWORD not in report.summary() and "3 incidents (2 open)" in report.summary()
    moved = PostgresIncidentStore(target, GRACE, clock=clock)
    try:
        assert answers(moved) == before
    finally:
        moved.close()
    assert before["kill_switch"].reason == "bad deploy of the billing agents"  # what was compared is the ledger
    assert before["open_for"]["CMO"].retry_at == 1_000_060.0 and before["list_closed"][0].agent == "CFO"
    assert pg_rows(target, LINEAGE) == sqlite_rows(ledger, LINEAGE)  # ids (gap included), order, lines
    assert [r[0] for r in pg_rows(target, LINEAGE)] == [1, 3, 4, 5]


def test_after_a_migration_new_notifications_lineage_and_claims_carry_on(ledger, target, clock):
    copy_ledger(ledger, target, now=clock.now)
    store = PostgresIncidentStore(target, GRACE, clock=clock)
    try:
        result = store.ingest("alertmanager", "{}", [firing("CEO")])
        assert result.notification_id == 5 and store.notification_count() == 5
        with psycopg.connect(target) as db:
            new = db.execute("INSERT INTO lineage (ts, entry) VALUES (1.0, '{}') RETURNING id").fetchone()[0]
        assert new == 6
        clock.now += 120  # CMO's retry time has come
        taken = [store.claim(f"w{n}", 30) for n in range(4)]
        assert sorted(c.incident.agents[0] for c in taken if c) == ["CEO", "CMO", "CRO"]
        assert taken[-1] is None
    finally:
        store.close()


def test_a_second_migration_into_the_filled_target_is_refused_and_changes_nothing(ledger, target, clock):
    copy_ledger(ledger, target, now=clock.now)
    counts, lineage = pg_counts(target), pg_rows(target, LINEAGE)
    with pytest.raises(StoreError) as refused:
        copy_ledger(ledger, target, now=clock.now)
    message = str(refused.value)
    assert "not empty (3 incidents, 2 conflict claimants, 2 flags, 4 notifications, 4 lineage entries)" in message
    assert "only fills an empty ledger" in message and "\n" not in message
    assert pg_counts(target) == counts and pg_rows(target, LINEAGE) == lineage


def test_a_live_lease_is_refused_and_the_target_is_left_alone(ledger, target, clock):
    store = SqliteIncidentStore(ledger, GRACE, clock=clock)
    clock.now += 120
    assert store.claim("still-running", 30) is not None
    store.close()
    with pytest.raises(StoreError, match=r"1 live lease \(a receiver is remediating from this ledger\): stop the "
                                         "receiver first"):
        copy_ledger(ledger, target, now=clock.now)
    assert pg_counts(target) == {}  # not even the schema
    clock.now += 31  # the lease expired: the holder is gone, and leases are not copied
    copy_ledger(ledger, target, now=clock.now)
    assert pg_counts(target)["leases"] == 0 and pg_counts(target)["incidents"] == 3


def test_a_running_receiver_holding_the_data_directory_is_refused(ledger, target, clock):
    held = DataDirLock(ledger.parent).acquire()
    try:
        with pytest.raises(StoreError, match="already in use by another receiver .*: stop the receiver first"):
            copy_ledger(ledger, target, now=clock.now)
    finally:
        held.release()
    assert pg_counts(target) == {}


def test_a_row_the_target_refuses_rolls_the_whole_copy_back(ledger, target, clock):
    with sqlite3.connect(ledger) as db:  # SQLite keeps text in a REAL column; PostgreSQL does not
        db.execute("UPDATE notifications SET received_at = 'yesterday' WHERE id = 4")
    db.close()
    with pytest.raises(StoreError, match="the copy failed and nothing was written .*double precision"):
        copy_ledger(ledger, target, now=clock.now)
    assert set(pg_counts(target).values()) == {0}  # the incidents copied before it are gone too


def test_claimant_rows_of_no_incident_are_refused(ledger, target, clock):
    with sqlite3.connect(ledger) as db:
        db.execute("INSERT INTO incident_agents (agent, incident_id) VALUES ('CMO', 'no-such-incident')")
    db.close()
    with pytest.raises(StoreError, match="1 incident_agents rows name no incident"):
        copy_ledger(ledger, target, now=clock.now)


@pytest.mark.parametrize("url, said", [
    (f"postgresql://autonomy:{PASSWORD}@[::1/db", "cannot be parsed"),
    (f"postgresql://autonomy:{PASSWORD} x@127.0.0.1/db", "cannot be parsed"),
    (f"mysql://autonomy:{PASSWORD}@127.0.0.1/db", "not scheme 'mysql'"),
    (f"autonomy:{PASSWORD}@127.0.0.1/db", "not scheme 'autonomy'"),
    (f"postgresql://autonomy:{PASSWORD}@127.0.0.1:{{down}}/db", "cannot connect .*Connection refused"),
    (f"postgresql://autonomy:{PASSWORD}@127.0.0.1:{{up}}/no_such_db", 'database "no_such_db" does not exist'),
])
def test_a_bad_target_is_one_line_that_never_shows_the_password(ledger, postgres_server, url, said):
    url = url.replace("{down}", str(free_port())).replace("{up}", str(postgres_server.port))
    with pytest.raises(StoreError, match=said) as refused:
        copy_ledger(ledger, url)
    assert PASSWORD not in str(refused.value) and "\n" not in str(refused.value)


def test_a_bad_source_is_one_line_naming_it(tmp_path):
    url = "postgresql://autonomy@127.0.0.1:1/db"  # never reached: the source is checked first
    missing = tmp_path / "nowhere" / "incidents.sqlite3"
    with pytest.raises(StoreError, match="no such file"):
        copy_ledger(missing, url)
    assert not missing.parent.exists()  # nothing created for a typo
    (tmp_path / "empty.sqlite3").write_bytes(b"")
    (tmp_path / "junk.sqlite3").write_bytes(b"this is not a database, just text" * 100)
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE songs (title TEXT)").connection.close()
    newer = tmp_path / "newer" / "incidents.sqlite3"
    SqliteIncidentStore(newer).close()
    sqlite3.connect(newer).execute("PRAGMA user_version = 999").connection.close()
    for path, said in [(tmp_path / "empty.sqlite3", "empty, not an SQLite ledger"),
                       (tmp_path / "junk.sqlite3", "not an SQLite ledger"),
                       (other, "not a receiver's ledger .it has no incidents table"),
                       (newer, "written by a newer receiver .ledger schema 999"),
                       (tmp_path, "no such file")]:  # a directory: its incidents.sqlite3
        with pytest.raises(StoreError, match=said) as refused:
            copy_ledger(ledger_path(f"sqlite:{path}"), url)
        assert "\n" not in str(refused.value)
    assert sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone() == ("delete",)  # left as it was


@pytest.mark.parametrize("spec, path", [("sqlite:data/incidents.sqlite3", "data/incidents.sqlite3"),
                                        ("sqlite:/var/lib/a.sqlite3", "/var/lib/a.sqlite3"),
                                        ("sqlite:///var/lib/a.sqlite3", "/var/lib/a.sqlite3")])
def test_the_source_is_sqlite_colon_a_path(spec, path):
    assert str(ledger_path(spec)) == path


@pytest.mark.parametrize("spec, said", [("postgresql://u@h/db", "not scheme 'postgresql'"),
                                        ("/var/lib/a.sqlite3", "not scheme none"),
                                        ("sqlite://relative/a.sqlite3", "sqlite:// takes an absolute path"),
                                        ("sqlite:", "names no file")])
def test_another_source_is_refused_naming_its_scheme(spec, said):
    with pytest.raises(StoreError, match=said):
        ledger_path(spec)


def test_a_target_url_is_only_checked_not_changed():
    url = "postgresql://autonomy@127.0.0.1:5432/ledger?sslmode=disable"
    assert target_url(f"  {url}\n") == url


# ------------------------------------------------------------------ the command

def test_the_command_migrates_with_the_url_in_a_file(ledger, target, tmp_path, capsys):
    url_file = tmp_path / "store-url"
    url_file.write_text(target + "\n")
    assert main(["store", "migrate", "--from", f"sqlite://{ledger}", "--to-file", str(url_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("copied 3 incidents (2 open), 4 notifications, 2 flags and 4 lineage entries from sqlite ")
    assert out.strip().endswith("the target's counts match")
    assert pg_counts(target)["lineage"] == 4
    assert main(["store", "migrate", "--from", f"sqlite:{ledger.parent}", "--to", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autonomy store migrate: ") and "not empty" in err and err.count("\n") == 1


def test_the_command_reads_the_target_from_the_store_url_settings(ledger, target, monkeypatch):
    monkeypatch.setenv("AUTOREM_STORE_URL", target)
    assert main(["store", "migrate", "--from", f"sqlite:{ledger}"]) == 0
    assert pg_counts(target)["incidents"] == 3


@pytest.mark.parametrize("argv, said", [
    (["--from", "postgresql://u@h/db", "--to", "postgresql://u@h/db"], "the source must be sqlite:PATH"),
    (["--from", "sqlite:x.sqlite3", "--to", f"mysql://u:{PASSWORD}@h/db"], "not scheme 'mysql'"),
    (["--from", "sqlite:x.sqlite3"], "name the target: --to postgresql://..., --to-file FILE"),
    (["--from", "sqlite:x.sqlite3", "--to-file", "/no/such/file"], "--to-file /no/such/file: cannot read"),
])
def test_the_command_refuses_bad_input_with_one_line_and_exit_2(argv, said, capsys, monkeypatch):
    monkeypatch.delenv("AUTOREM_STORE_URL", raising=False)
    monkeypatch.delenv("AUTOREM_STORE_URL_FILE", raising=False)
    assert main(["store", "migrate", *argv]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1 and PASSWORD not in err
