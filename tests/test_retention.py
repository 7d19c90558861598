"""Retention: the background trimmer (rounds of small batches until nothing is left, a store error never fatal,
counted), the SQLite file kept bounded (journal_size_limit, a TRUNCATE checkpoint after a trim), the trims reading
through indexes on both stores, and several receivers trimming one PostgreSQL store at once. What is trimmed and
what never is: the store contract suite (tests/test_store_contract.py, trim_history)."""
import threading
import time

import psycopg
import pytest

from devstack.polling import wait_until
from tests.test_store_contract import Clock, claim, firing, resolved
from webhook_receiver.engine.retention import DAY_SECONDS, RetentionTrimmer
from webhook_receiver.receiver_metrics import ReceiverMetrics
from webhook_receiver.store import SqliteIncidentStore, postgres_retention, sqlite_retention
from webhook_receiver.store.contract import TrimResult
from webhook_receiver.store.postgres_store import PostgresIncidentStore
from webhook_receiver.store.sqlite_schema import WAL_SIZE_LIMIT


class FakeStore:
    """trim_history answering from a backlog of rows per kind, BATCH at a time; or failing while `failing`."""

    def __init__(self, **backlog: int):
        self.backlog = {"incidents": 0, "notifications": 0, "lineage": 0, "events": 0, **backlog}
        self.calls: list[tuple[float, int]] = []
        self.failing = 0

    def trim_history(self, cutoff: float, batch: int = 500) -> TrimResult:
        self.calls.append((cutoff, batch))
        if self.failing:
            self.failing -= 1
            raise OSError("disk I/O error")
        taken = {kind: min(batch, left) for kind, left in self.backlog.items()}
        for kind, n in taken.items():
            self.backlog[kind] -= n
        return TrimResult(**taken)


def deleted(metrics: ReceiverMetrics, kind: str) -> float:
    return metrics.registry.get_sample_value("autonomy_retention_deleted_total", {"kind": kind})


def failures(metrics: ReceiverMetrics) -> float:
    return metrics.registry.get_sample_value("autonomy_retention_failures_total")


def test_a_round_trims_a_batch_at_a_time_until_nothing_is_left_and_counts_each_kind():
    store, metrics = FakeStore(incidents=5, notifications=1200, lineage=999, events=700), ReceiverMetrics()
    trimmer = RetentionTrimmer(store, 7, metrics, clock=lambda: 30 * DAY_SECONDS, batch=500, pause=0)
    done = trimmer.trim_round()
    assert done == TrimResult(notifications=1200, incidents=5, lineage=999, events=700)
    assert store.calls == [(23 * DAY_SECONDS, 500)] * 3  # 500, 500, 200: the last one is short, the round ends
    assert [deleted(metrics, k) for k in ("incidents", "notifications", "lineage", "events")] == [5, 1200, 999, 700]
    assert trimmer.trim_round() == TrimResult() and len(store.calls) == 4


def test_every_kind_starts_at_zero_so_the_first_deletion_is_an_increase():
    metrics = ReceiverMetrics()
    RetentionTrimmer(FakeStore(), 90, metrics)
    assert [deleted(metrics, k) for k in ("incidents", "notifications", "lineage", "events")] == [0, 0, 0, 0]
    assert failures(metrics) == 0


def test_a_store_error_ends_the_round_counted_and_logged_never_raised(caplog):
    store, metrics = FakeStore(lineage=10), ReceiverMetrics()
    store.failing = 1
    trimmer = RetentionTrimmer(store, 90, metrics, pause=0)
    assert trimmer.run_round() is None
    assert failures(metrics) == 1 and "retention round failed" in caplog.text and "disk I/O error" in caplog.text
    assert trimmer.run_round() == TrimResult(lineage=10)  # the next round tries again


def test_a_stop_ends_a_long_round_between_batches():
    store, stopping = FakeStore(notifications=10_000), threading.Event()
    trimmer = RetentionTrimmer(store, 90, ReceiverMetrics(), batch=100, pause=0.01)
    stopping.set()
    assert trimmer.trim_round(stopping) == TrimResult(notifications=100)


def test_the_thread_waits_for_its_first_round_survives_a_failure_and_stops_with_the_engine():
    store, metrics, stopping = FakeStore(incidents=3), ReceiverMetrics(), threading.Event()
    store.failing = 1
    trimmer = RetentionTrimmer(store, 90, metrics, pause=0, interval=0.01, first_round=0.01)
    trimmer.start(stopping)
    wait_until(lambda: deleted(metrics, "incidents") == 3, 10, "the round after the failed one")
    assert failures(metrics) == 1 and trimmer.alive()
    stopping.set()
    trimmer.join(10)
    assert not trimmer._thread.is_alive()


def test_the_engine_starts_and_stops_the_trimmer_with_its_setting(h):
    h.build({"AUTOREM_RETENTION_DAYS": "30"})
    assert h.engine.retention.retention_days == 30
    old = h.fire("CRO")
    h.store.update(old, state="closed", outcome="self_resolved", closed_at=time.time() - 31 * DAY_SECONDS)
    young = h.fire("Content")
    h.store.update(young, state="closed", outcome="self_resolved", closed_at=time.time() - 29 * DAY_SECONDS)
    h.engine.retention.first_round = 0.01  # instead of a minute after start
    h.engine.start(workers=1, sweeper=False)
    wait_until(lambda: h.store.get(old) is None, 30, "the first retention round")
    assert h.store.get(young).state == "closed"
    assert h.metric("autonomy_retention_deleted_total", kind="incidents") == 1
    h.engine.stop()
    assert not h.engine.retention._thread.is_alive()


# ------------------------------------------------------------------ SQLite: bounded, indexed

def old_history(store, clock, agents=4):
    """Closed incidents (one a conflict of two agents) with notifications, lineage and console events, then 10 days
    pass."""
    for n in range(agents):
        incident = store.ingest("alertmanager", "{}", [firing(f"agent-{n}")]).opened[0]
        store.append_lineage({"ts": "1970-01-12T13:46:40Z", "incident_id": incident}, '{"old": true}')
        store.ingest("alertmanager", "{}", [resolved(f"agent-{n}")])
        store.update(incident, state="closed", closed_at=clock.now, outcome="self_resolved")
        store.append_events([("closed", f"agent-{n}", "{}")])
    conflict = store.ingest("alertmanager", "{}", [claim("CMO"), claim("CRO")]).opened[0]
    store.update(conflict, state="closed", closed_at=clock.now, outcome="self_resolved")
    clock.now += 10 * DAY_SECONDS


def test_sqlite_trims_the_agents_rows_of_its_incidents_and_truncates_the_wal(tmp_path):
    clock = Clock()
    store = SqliteIncidentStore(tmp_path / "incidents.sqlite3", clock=clock)
    assert store._db.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
    old_history(store, clock)
    assert store._db.execute("SELECT COUNT(*) FROM incident_agents").fetchone()[0] == 2  # the conflict's two
    wal = tmp_path / "incidents.sqlite3-wal"
    assert wal.stat().st_size > 0
    done = RetentionTrimmer(store, 7, ReceiverMetrics(), clock=clock, pause=0).trim_round()
    assert done == TrimResult(notifications=9, incidents=5, lineage=4, events=4)
    assert store._db.execute("SELECT COUNT(*) FROM incident_agents").fetchone()[0] == 0
    assert wal.stat().st_size == 0  # checkpointed into the file and truncated
    store.close()


@pytest.mark.parametrize("query", ["_CLOSED_BEFORE", "_NOTIFICATIONS_BEFORE", "_LINEAGE_BEFORE", "_EVENTS_BEFORE"])
def test_sqlite_trims_read_through_indexes_never_a_whole_table(tmp_path, query):
    store = SqliteIncidentStore(tmp_path / "incidents.sqlite3")
    plan = [row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + getattr(sqlite_retention, query), (1.0, 5))]
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert any("USING INDEX incidents_by_closing" in s or "USING COVERING INDEX notifications_by_arrival" in s
               or "USING INDEX lineage_by_time" in s or "USING COVERING INDEX events_by_time" in s for s in plan), plan
    ids = store._db.execute("EXPLAIN QUERY PLAN DELETE FROM incident_agents WHERE incident_id IN (?)", ("x",))
    assert "incident_agents_by_incident" in [row[3] for row in ids][0]
    store.close()


# ------------------------------------------------------------------ PostgreSQL: indexed, several trimmers at once

@pytest.fixture
def pg_url(postgres_server):
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.mark.parametrize("query, index", [("_CLOSED_BEFORE", "incidents_by_closing"),
                                          ("_NOTIFICATIONS_BEFORE", "notifications_by_arrival"),
                                          ("_LINEAGE_BEFORE", "lineage_by_time"),
                                          ("_EVENTS_BEFORE", "events_by_time")])
def test_postgres_trims_can_read_through_their_index(pg_url, query, index):
    PostgresIncidentStore(pg_url, pool_size=2).close()  # the schema
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("SET enable_seqscan = off")  # tables this small are read whole otherwise: is the index usable?
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + getattr(postgres_retention, query), (1.0, 5)))
    assert f"Index Scan using {index}" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_several_receivers_trim_one_postgres_store_at_once_each_row_once_no_deadlock(pg_url):
    clock = Clock()
    stores = [PostgresIncidentStore(pg_url, clock=clock, pool_size=2) for _ in range(3)]
    try:
        old_history(stores[0], clock, agents=40)
        metrics = [ReceiverMetrics() for _ in stores]
        trimmers = [RetentionTrimmer(s, 7, m, clock=clock, batch=7, pause=0) for s, m in zip(stores, metrics)]
        results: list = []
        threads = [threading.Thread(target=lambda t=t: results.append(t.run_round())) for t in trimmers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert None not in results and len(results) == 3  # no round failed (a deadlock would have)
        # Each row went once; a round may end early on rows another trimmer held, so one more round mops up.
        total = sum(results, TrimResult()) + trimmers[0].trim_round()
        assert total == TrimResult(notifications=81, incidents=41, lineage=40, events=40)
        assert sum(deleted(m, "incidents") for m in metrics) == 41  # each counted by the one that deleted it
        assert stores[1].list() == [] and stores[2].notification_count() == 0
    finally:
        for store in stores:
            store.close()
