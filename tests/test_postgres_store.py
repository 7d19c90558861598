"""What only the PostgreSQL store does, on a real server (devstack/postgres_server.py): its constraints, its versioned
migrations, its connection errors, and several stores on one database (several receivers) never running an
incident twice nor holding one agent twice (the behaviour every store shares is in test_store_contract.py)."""
import inspect
import random
import threading
import time

import psycopg
import pytest

from devstack.local_stack import free_port
from tests.test_store_contract import GRACE, Clock, claim, firing, ingest
from webhook_receiver.store import IncidentClosed, IncidentStore, LeaseLost, StoreError
from webhook_receiver.store.postgres_schema import SCHEMA_VERSION
from webhook_receiver.store.postgres_store import PostgresIncidentStore


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def url(postgres_server):
    made = postgres_server.create_database()
    yield made
    postgres_server.drop_database(made)


@pytest.fixture
def open_store(url, clock):
    opened = []

    def make(**options):
        store = PostgresIncidentStore(url, GRACE, clock=clock, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def sql(url, query, args=()):
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(query, args)
        return cursor.fetchall() if cursor.description else None


def test_it_implements_every_method_of_the_protocol_with_the_same_parameters():
    wanted = [n for n, v in vars(IncidentStore).items() if callable(v) and not n.startswith("_")]
    assert len(wanted) > 20
    for name in wanted:
        expected = inspect.signature(getattr(IncidentStore, name)).parameters
        assert inspect.signature(getattr(PostgresIncidentStore, name)).parameters.keys() == expected.keys(), name


def test_the_database_holds_one_open_incident_per_agent_and_per_conflict_even_against_a_direct_insert(url, open_store):
    store = open_store()
    ingest(store, firing(), claim("CRO"))
    insert = "INSERT INTO incidents (id, agent, state, doc, opened_at, conflict_key) VALUES (%s, %s, %s, '{}', 1, %s)"
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(url, insert, ("another", "CMO", "escalated", None))  # any open state counts
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(url, insert, ("x", "COO", "open", "directive:D-REV-1"))
    sql(url, insert, ("old", "CMO", "closed", None))  # closed ones do not count: history may hold many


def test_the_database_holds_one_claim_per_agent_even_against_a_direct_insert(url, open_store):
    store = open_store()
    ingest(store, firing("CMO"))
    held = store.claim("w", 30)
    sql(url, "INSERT INTO leases VALUES ('other', 'x', 't', 1e12)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(url, "INSERT INTO lease_agents VALUES ('CMO', 'other')")
    store.release(held)
    assert sql(url, "SELECT agent FROM lease_agents") == []  # the lease's agents went with it


def test_the_schema_is_versioned_and_migrated_once_by_every_store_that_opens_it(url, open_store):
    stores, problems = [], []

    def opening():
        try:
            stores.append(open_store())
        except Exception as exc:  # noqa: BLE001 - reported below
            problems.append(exc)

    threads = [threading.Thread(target=opening) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not problems and len(stores) == 4
    assert sql(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_a_database_written_by_a_newer_receiver_is_refused_untouched(url, open_store):
    open_store().close()
    sql(url, "UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"newer receiver .*schema {SCHEMA_VERSION + 1}.*up to {SCHEMA_VERSION}"):
        open_store()
    assert sql(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]


def test_a_server_that_does_not_answer_is_one_clear_line_without_the_password():
    url = f"postgresql://autonomy:s3cret@127.0.0.1:{free_port()}/ledger"
    with pytest.raises(StoreError) as raised:
        PostgresIncidentStore(url, connect_timeout=2)
    text = str(raised.value)
    assert "cannot connect to the PostgreSQL ledger" in text and "AUTOREM_STORE_URL" in text
    assert "s3cret" not in text and "\n" not in text


def test_two_receivers_ingesting_one_agent_at_once_open_one_incident_and_keep_every_notification(open_store):
    first, second = open_store(), open_store()
    agents = [f"agent-{n}" for n in range(20)]
    barrier, opened = threading.Barrier(2), []

    def receiver(store):
        barrier.wait()
        for _ in range(5):
            opened.extend(ingest(store, *(firing(a) for a in agents)).opened)

    threads = [threading.Thread(target=receiver, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(opened) == len(set(opened)) == len(agents)
    assert sorted(i.agent for i in second.open_incidents()) == sorted(agents)
    assert first.notification_count() == 10


def test_claimers_of_two_receivers_never_hold_one_agent_twice_and_run_each_incident_once(open_store):
    first, second = open_store(), open_store()
    agents = [f"agent-{n}" for n in range(30)]
    expected = {i for agent in agents for i in ingest(first, firing(agent)).opened}
    expected |= set(ingest(first, claim("agent-0", "D-1"), claim("agent-1", "D-1")).opened)
    expected |= set(ingest(second, claim("agent-1", "D-2"), claim("agent-2", "D-2")).opened)
    held: dict[str, str] = {}
    lock, problems, ran = threading.Lock(), [], []

    def worker(store, name):
        idle = 0
        while idle < 200 and len(ran) < len(expected):
            got = store.claim(name, 30)
            if got is None:
                idle += 1
                continue
            idle = 0
            with lock:
                problems.extend(f"{a} held by {held[a]} and {name}" for a in got.agents if a in held)
                held.update({a: name for a in got.agents})
                ran.append(got.incident_id)
            store.get(got.incident_id)
            with lock:
                for agent in got.agents:
                    held.pop(agent, None)
            store.update(got.incident_id, got, state="recovered", recovered_at=1.0)
            store.release(got)

    threads = [threading.Thread(target=worker, args=(store, f"{store_name}-w{n}"))
               for store_name, store in (("r1", first), ("r2", second)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not problems
    assert sorted(ran) == sorted(expected)
    assert first.queued_count() == 0 and second.leased_agents() == frozenset()


def test_a_database_that_does_not_exist_is_said_at_once(postgres_server):
    with pytest.raises(StoreError, match='database "no_such_ledger" does not exist'):
        PostgresIncidentStore(postgres_server.url("no_such_ledger"), connect_timeout=2)


def test_three_receivers_ingesting_claiming_and_releasing_at_once_never_deadlock(url):
    """Real time and short leases, so leases expire and are taken over mid-flight: every operation either succeeds
    or is refused as the contract says (LeaseLost, IncidentClosed); no deadlock, no constraint error."""
    stores = [PostgresIncidentStore(url, GRACE, pool_size=6) for _ in range(3)]
    agents = [f"a{n}" for n in range(15)]
    unexpected, stop = [], time.monotonic() + 4

    def ingester(store, rng):
        while time.monotonic() < stop:
            picks = rng.sample(agents, 4)
            items = [firing(a) for a in picks]
            if rng.random() < 0.3:
                items += [claim(picks[0], f"D{rng.randint(0, 3)}"), claim(picks[1], f"D{rng.randint(0, 3)}")]
            try:
                ingest(store, *items)
            except Exception as exc:  # noqa: BLE001 - reported below
                unexpected.append(repr(exc))

    def worker(store, name, rng):
        while time.monotonic() < stop:
            try:
                got = store.claim(name, rng.choice([0.02, 0.2, 1.0]))
                if got is None:
                    time.sleep(0.001)
                    continue
                if rng.random() < 0.3:
                    got = store.extend(got, rng.sample(agents, 2)) or got
                if rng.random() < 0.5:
                    got = store.renew(got, 0.5) or got
                if rng.random() < 0.5:
                    store.update(got.incident_id, got, state=rng.choice(["recovered", "remediating"]),
                                 recovered_at=time.time())
                store.release(got, retry_at=time.time() + 0.01 if rng.random() < 0.3 else None)
            except (LeaseLost, IncidentClosed):
                pass
            except Exception as exc:  # noqa: BLE001 - reported below
                unexpected.append(repr(exc))

    threads = [threading.Thread(target=ingester, args=(s, random.Random(n))) for n, s in enumerate(stores)]
    threads += [threading.Thread(target=worker, args=(s, f"r{n}-w{k}", random.Random(10 * n + k)))
                for n, s in enumerate(stores) for k in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for store in stores:
            store.close()
    assert unexpected == []


@pytest.mark.parametrize("url", ["postgresql://autonomy:s3cret-pw@[::1/db", "postgresql://autonomy:s3cret-pw@host/db?x y"])
def test_a_malformed_url_is_refused_without_its_password(url):
    with pytest.raises(StoreError) as caught:
        PostgresIncidentStore(url, connect_timeout=1)
    assert "s3cret-pw" not in str(caught.value) and "AUTOREM_STORE_URL" in str(caught.value)
