"""The worker pool on a real store: leases renewed for as long as a worker holds its incident, a stop included,
and a storm's wake-ups capped at the number of workers."""
import threading

import pytest

from devstack.polling import wait_until
from tests.test_store_contract import GRACE, firing, ingest
from webhook_receiver.engine.worker_pool import WorkerPool
from webhook_receiver.receiver_metrics import ReceiverMetrics
from webhook_receiver.store import SqliteIncidentStore


@pytest.fixture
def store(tmp_path):
    opened = SqliteIncidentStore(tmp_path / "incidents.sqlite3", GRACE)
    yield opened
    opened.close()


class Renewals:
    def __init__(self, store):
        self.count, self.batches, self.renew_many = 0, [], store.renew_many

    def __call__(self, claims, lease_seconds):
        self.count += len(claims)
        self.batches.append(len(claims))
        return self.renew_many(claims, lease_seconds)


def test_a_worker_finishing_its_step_during_a_stop_keeps_its_lease_renewed_until_it_ends(store, monkeypatch):
    renewals = Renewals(store)
    monkeypatch.setattr(store, "renew_many", renewals)
    running, finish, ran = threading.Event(), threading.Event(), []

    def step(work):
        running.set()
        finish.wait(60)  # an action call the stop cannot interrupt
        ran.append(work.claim.incident_id)

    pool = WorkerPool(store, step, ReceiverMetrics(), lease_seconds=3, stopping=threading.Event())
    incident_id = ingest(store, firing()).opened[0]
    pool.start(1)
    wait_until(running.is_set, 30, "the worker to take the incident")
    stopper = threading.Thread(target=pool.stop, kwargs={"timeout": 60})
    stopper.start()
    wait_until(pool.stopping.is_set, 30, "the stop to begin")
    seen = renewals.count
    wait_until(lambda: renewals.count >= seen + 2, 30, "renewals after the stop began")
    assert store.leased_agents() == {"CMO"}  # still held: no other receiver may act on CMO now
    finish.set()
    stopper.join(60)
    assert not stopper.is_alive() and not pool.alive() and ran == [incident_id]
    assert store.leased_agents() == frozenset()


def test_a_storm_of_wake_ups_is_capped_at_the_number_of_workers(store):
    pool = WorkerPool(store, lambda work: None, ReceiverMetrics(), lease_seconds=30, stopping=threading.Event())
    pool.start(2)
    try:
        pool.wake(10_000)
        assert pool._signals <= 2  # idle workers do not spin through thousands of empty claims
        pool.wake_all()
        assert pool._signals <= 2
    finally:
        pool.stop()


def test_held_leases_are_renewed_a_batch_per_transaction(store, monkeypatch):
    from webhook_receiver.engine import worker_pool
    from webhook_receiver.engine.worker_pool import Work

    monkeypatch.setattr(worker_pool, "RENEW_BATCH", 2)
    renewals = Renewals(store)
    monkeypatch.setattr(store, "renew_many", renewals)
    pool = WorkerPool(store, lambda work: None, ReceiverMetrics(), lease_seconds=30, stopping=threading.Event())
    held = []
    for agent in ("CMO", "CRO", "COO"):
        ingest(store, firing(agent))
        work = Work(store.claim("w", 5))
        pool._held[work.claim.token] = work
        held.append(work)
    before = [w.claim.expires_at for w in held]
    pool.renew_all()
    assert renewals.batches == [2, 1]
    assert all(w.claim.expires_at > b and not w.lost for w, b in zip(held, before))
