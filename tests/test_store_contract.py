"""The incident store's contract: one suite run against every store (SQLite here; the shared database of the next
step runs it too). Every notification recorded, one open incident per agent and per conflict, durable across a
reopen, work claimed with leases (taken over after a dead holder's lease), the kill switch and the staged rollout,
one claim per agent."""
import threading

import pytest

from webhook_receiver.incident import AlertRef
from webhook_receiver.notification import AgentNotification
from webhook_receiver.rollout import CLASSES, Rollout
from webhook_receiver.store import IncidentClosed, LeaseLost, SqliteIncidentStore
from webhook_receiver.store.postgres_store import PostgresIncidentStore

GRACE = 300.0


def firing(agent="CMO", cls="TRANSIENT", fingerprint=None) -> AgentNotification:
    labels = {"alertname": "AgentTaskFailing", "agent": agent, "autonomy_class": cls, "severity": "warning"}
    return AgentNotification(agent, (AlertRef(fingerprint or f"fp-{agent}-{cls}", "firing", labels,
                                              "2025-08-18T15:02:11Z"),))


def resolved(agent="CMO", cls="TRANSIENT") -> AgentNotification:
    labels = {"alertname": "AgentTaskFailing", "agent": agent, "autonomy_class": cls, "severity": "warning"}
    return AgentNotification(agent, (AlertRef(f"fp-{agent}-{cls}", "resolved", labels, "2025-08-18T15:02:11Z"),))


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class SqliteBackend:
    """A place where a SQLite store lives (a file on tmp_path); each open() is a store on it, as after a restart."""

    name = "sqlite"

    def __init__(self, tmp_path, clock):
        self.path, self.clock, self.opened = tmp_path / "incidents.sqlite3", clock, []

    def open(self):
        store = SqliteIncidentStore(self.path, GRACE, clock=self.clock)
        self.opened.append(store)
        return store

    def close(self):
        for store in self.opened:
            store.close()


class PostgresBackend:
    """A database of its own on the session's real PostgreSQL server; each open() is a store on it (a restart, or
    another receiver sharing it)."""

    name = "postgres"

    def __init__(self, tmp_path, clock, server):
        self.server, self.clock, self.opened = server, clock, []
        self.url = server.create_database()

    def open(self):
        store = PostgresIncidentStore(self.url, GRACE, clock=self.clock, pool_size=6)
        self.opened.append(store)
        return store

    def close(self):
        for store in self.opened:
            store.close()
        self.server.drop_database(self.url)


BACKENDS = [SqliteBackend, PostgresBackend]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request, tmp_path, clock):
    if request.param is PostgresBackend:
        made = request.param(tmp_path, clock, request.getfixturevalue("postgres_server"))
    else:
        made = request.param(tmp_path, clock)
    yield made
    made.close()


@pytest.fixture
def store(backend):
    return backend.open()


def ingest(store, *items, source="alertmanager", body="{}", max_queued=None):
    return store.ingest(source, body, list(items), max_queued=max_queued)


def test_a_firing_notification_opens_one_incident_and_queues_it(store):
    result = ingest(store, firing())
    assert not result.refused
    assert result.notification_id > 0
    assert len(result.opened) == 1 and result.to_run == result.opened
    incident = store.get(result.opened[0])
    assert (incident.agent, incident.state, incident.source, incident.attempts) == ("CMO", "open", "alertmanager", 0)
    assert incident.alert_classes == frozenset({"TRANSIENT"})
    assert incident.labels["autonomy_class"] == "TRANSIENT"
    assert store.open_for("CMO") == incident
    assert store.notification_count() == 1


def test_repeated_firing_notifications_are_duplicates_of_the_one_open_incident(store):
    first = ingest(store, firing())
    second = ingest(store, firing())
    third = ingest(store, firing(cls="CAPACITY"))  # another alert of the same agent: still the same incident
    assert second.opened == () and second.to_run == () and second.duplicates == first.opened
    assert third.opened == () and third.duplicates == first.opened
    assert [i.id for i in store.list()] == list(first.opened)
    assert store.get(first.opened[0]).alert_classes == {"CAPACITY"}  # the latest alerts are kept
    assert store.notification_count() == 3


def test_each_agent_gets_its_own_incident_from_one_notification(store):
    result = ingest(store, firing("CMO"), firing("CRO", "CAPACITY"))
    assert len(result.opened) == 2
    assert sorted(i.agent for i in store.list()) == ["CMO", "CRO"]
    assert store.notification_count() == 1


def test_a_resolved_notification_closes_an_incident_no_worker_holds(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="escalated", outcome="escalated", reason="AutoRemediationFailed")
    clock.now += 10
    result = ingest(store, resolved())
    assert [i.id for i in result.closed] == [incident_id]
    closed = store.get(incident_id)
    assert closed.state == "closed" and closed.closed_at == clock.now
    assert closed.outcome == "escalated"  # the outcome it had is kept
    assert store.open_for("CMO") is None


def test_a_resolved_notification_closes_a_skipped_incident_as_self_resolved(store):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="skipped")
    result = ingest(store, resolved())
    assert [i.id for i in result.closed] == [incident_id]
    assert store.get(incident_id).outcome == "self_resolved"
    assert store.get(incident_id).reason == "alert resolved"


@pytest.mark.parametrize("state", ["open", "remediating"])
def test_resolved_while_a_worker_holds_the_incident_only_marks_resolved_at(store, clock, state):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state=state)
    clock.now += 5
    result = ingest(store, resolved())
    assert result.closed == () and result.duplicates == (incident_id,)
    incident = store.get(incident_id)
    assert incident.state == state
    assert incident.resolved_at == clock.now and incident.closed_at is None


def test_a_closed_incident_refuses_updates(store):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="recovered", recovered_at=1.0)
    ingest(store, resolved())
    with pytest.raises(IncidentClosed):
        store.update(incident_id, state="open")
    with pytest.raises(IncidentClosed):
        store.update(incident_id, reason="late note")
    assert store.get(incident_id).state == "closed"


def test_update_rejects_unknown_fields_states_and_incidents(store):
    incident_id = ingest(store, firing()).opened[0]
    with pytest.raises(TypeError):
        store.update(incident_id, colour="red")
    with pytest.raises(ValueError):
        store.update(incident_id, state="sleeping")
    with pytest.raises(KeyError):
        store.update("no-such-incident", state="open")


def test_after_closing_a_new_firing_notification_opens_a_new_incident(store):
    first = ingest(store, firing()).opened[0]
    store.update(first, state="recovered", recovered_at=1.0)
    ingest(store, resolved())
    second = ingest(store, firing()).opened
    assert len(second) == 1 and second[0] != first
    assert {i.id: i.state for i in store.list(agent="CMO")} == {first: "closed", second[0]: "open"}


def test_a_skipped_incident_is_queued_again_by_a_new_firing_notification(store):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="skipped", attempts=1, outcome="skipped", reason="silenced: by an SRE")
    result = ingest(store, firing())
    assert result.to_run == (incident_id,) and result.opened == () and result.duplicates == ()
    incident = store.get(incident_id)
    assert incident.state == "open" and incident.outcome is None and incident.reason is None
    assert incident.attempts == 1  # a skip is not a relapse: attempts made so far still count


def test_reopening_an_incident_clears_the_resolved_at_of_the_previous_episode(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    clock.now += 1
    ingest(store, resolved())  # arrives while queued: only marks resolved_at
    store.update(incident_id, state="skipped", outcome="skipped", reason="silenced: by an SRE")
    clock.now += 60
    result = ingest(store, firing())  # the alert fires again
    assert result.to_run == (incident_id,)
    assert store.get(incident_id).resolved_at is None


def test_a_recovered_incident_absorbs_firing_notifications_within_the_reopen_grace(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="recovered", attempts=1, recovered_at=clock.now, outcome="auto_resolved")
    clock.now += GRACE - 1
    result = ingest(store, firing())
    assert result.to_run == () and result.duplicates == (incident_id,)
    assert store.get(incident_id).state == "recovered"


def test_a_firing_notification_after_the_reopen_grace_is_a_relapse_with_fresh_attempts(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="recovered", attempts=2, recovered_at=clock.now, outcome="auto_resolved",
                  reason="Resolved by CoS: RestartAndRetryTransient")
    clock.now += GRACE + 1
    result = ingest(store, firing())
    assert result.to_run == (incident_id,) and result.opened == ()
    incident = store.get(incident_id)
    assert (incident.state, incident.attempts, incident.outcome, incident.reason) == ("open", 0, None, None)


def test_an_escalated_incident_is_not_reopened_by_firing_notifications(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="escalated", attempts=2, outcome="escalated")
    clock.now += GRACE * 10
    result = ingest(store, firing())
    assert result.to_run == () and result.duplicates == (incident_id,)
    assert store.get(incident_id).state == "escalated"


def test_notifications_from_the_other_source_do_not_touch_an_incident(store):
    incident_id = ingest(store, firing(), source="signal").opened[0]
    store.update(incident_id, state="recovered", recovered_at=1.0)
    result = ingest(store, resolved(), source="alertmanager")
    assert result.closed == () and result.duplicates == (incident_id,)
    assert store.get(incident_id).state == "recovered"


def test_a_notification_that_would_overfill_the_queue_is_refused_whole_including_its_notification_row(store):
    kept = ingest(store, firing("CRO", "CAPACITY")).opened[0]
    store.update(kept, state="escalated", outcome="escalated")
    waiting = ingest(store, firing("COO")).opened[0]  # one incident waits for a worker
    before = ([i.as_dict() for i in store.list()], store.notification_count())
    # one new incident (needs room in the queue) and one closure in the same notification: all or nothing
    result = ingest(store, firing("CMO"), resolved("CRO", "CAPACITY"), max_queued=1)
    assert result.refused and result.notification_id == 0 and result.to_run == ()
    assert ([i.as_dict() for i in store.list()], store.notification_count()) == before
    assert store.open_for("CMO") is None and store.get(kept).state == "escalated"
    assert store.queued_count() == 1 and store.get(waiting).state == "open"


def test_a_notification_that_runs_nothing_is_never_refused_for_room(store):
    incident_id = ingest(store, firing()).opened[0]
    result = ingest(store, firing(), max_queued=1)  # the queue is full, but a duplicate needs no worker
    assert not result.refused and result.duplicates == (incident_id,)
    assert store.notification_count() == 2


def test_a_batch_larger_than_the_whole_queue_gets_in_when_nothing_waits(store):
    result = ingest(store, firing("CMO"), firing("CRO"), firing("COO"), max_queued=2)
    assert not result.refused and len(result.to_run) == 3
    assert ingest(store, firing("Content"), max_queued=2).refused  # now three wait: no more room


def test_runnable_incidents_and_every_field_survive_reopening_the_store(backend):
    first = backend.open()
    queued = ingest(first, firing("CMO")).opened[0]
    running = ingest(first, firing("CRO", "CAPACITY")).opened[0]
    first.update(running, state="remediating", attempts=1, playbooks_run=("RebalanceCapacity",))
    done = ingest(first, firing("Content", "CONFIG")).opened[0]
    first.update(done, state="escalated")
    first.close()

    again = backend.open()
    assert [i.id for i in again.list(state="open")] == [queued]
    resumed = again.get(running)
    assert resumed.state == "remediating" and resumed.attempts == 1
    assert resumed.playbooks_run == ("RebalanceCapacity",)
    assert resumed.alerts[0].labels["autonomy_class"] == "CAPACITY"
    assert again.notification_count() == 3
    assert {i.id for i in again.open_incidents()} == {queued, running, done}
    assert again.queued_count() == 2  # both runnable ones wait for a worker: no claim survives a reopen unexpired


def test_stored_notifications_are_paged_oldest_first_as_received(store, clock):
    for n in range(5):
        clock.now += 1
        store.ingest("alertmanager", f'{{"n": {n}}}', [firing(fingerprint=f"fp-{n}")])
    page = store.notifications(limit=2)
    assert [(x.body, x.source, x.received_at) for x in page] == [('{"n": 0}', "alertmanager", clock.now - 4),
                                                                 ('{"n": 1}', "alertmanager", clock.now - 3)]
    rest = store.notifications(after=page[-1].id, limit=10)
    assert [x.body for x in rest] == ['{"n": 2}', '{"n": 3}', '{"n": 4}']
    assert store.notifications(after=rest[-1].id) == []


def test_list_filters_by_agent_and_state_newest_first(store, clock):
    a = ingest(store, firing("CMO")).opened[0]
    clock.now += 1
    b = ingest(store, firing("CRO", "CAPACITY")).opened[0]
    store.update(b, state="escalated")
    assert [i.id for i in store.list()] == [b, a]
    assert [i.id for i in store.list(agent="CMO")] == [a]
    assert [i.id for i in store.list(state="escalated")] == [b]
    assert store.list(agent="CMO", state="escalated") == []
    assert [i.id for i in store.list(limit=1)] == [b]


def test_an_incident_round_trips_through_its_json_document(store):
    incident_id = ingest(store, firing(), source="signal").opened[0]
    store.update(incident_id, metrics={"successRate": 0.5}, playbooks_run=("A", "B"), trace_id="ab" * 16)
    incident = store.get(incident_id)
    assert incident.metrics == {"successRate": 0.5}
    assert incident.playbooks_run == ("A", "B")
    assert incident.as_dict()["alerts"][0]["fingerprint"] == "fp-CMO-TRANSIENT"


@pytest.mark.parametrize("gate", ["kill_switch", "canary", "dry_run"])
def test_a_repeat_notification_does_not_requeue_what_only_a_setting_can_lift(store, gate):
    incident_id = ingest(store, firing()).opened[0]
    store.update(incident_id, state="skipped", outcome="skipped", reason=f"{gate}: refused")
    result = ingest(store, firing())
    assert result.to_run == () and result.duplicates == (incident_id,)
    assert store.get(incident_id).state == "skipped"


# ------------------------------------------------------------------ conflicts: one incident per conflict

def claim(agent, directive="D-REV-1", status="firing", *others: AlertRef) -> AgentNotification:
    labels = {"alertname": "DirectiveClaimedByMultipleAgents", "agent": agent, "autonomy_class": "CONFLICT",
              "directive_id": directive, "severity": "warning"}
    return AgentNotification(agent, (AlertRef(f"fp-{agent}-claim", status, labels, "2025-08-18T15:02:11Z"),
                                     *others))


def symptom(agent) -> AlertRef:
    labels = {"alertname": "AgentAlignmentBelowSLO", "agent": agent, "autonomy_class": "CAPACITY"}
    return AlertRef(f"fp-{agent}-align", "firing", labels, "2025-08-18T15:02:15Z")


def test_a_conflict_between_two_agents_is_one_incident_listing_both_claimants(store):
    first = ingest(store, claim("CMO"))
    second = ingest(store, claim("CRO"))
    assert len(first.opened) == 1 and second.opened == () and second.to_run == ()
    [conflict] = store.list()
    assert conflict.conflict_key == "directive:D-REV-1" and conflict.claimants == ("CMO", "CRO")
    assert {a.labels["agent"] for a in conflict.alerts} == {"CMO", "CRO"}
    assert [i.id for i in store.list(agent="CRO")] == [conflict.id]  # listed under every claimant
    assert store.open_for("CRO") is None and store.conflicts_of("CRO") == [conflict]


def test_both_claimants_in_one_notification_open_one_conflict_incident(store):
    result = ingest(store, claim("CMO"), claim("CRO"))
    assert len(result.opened) == 1 and result.to_run == result.opened
    assert store.get(result.opened[0]).claimants == ("CMO", "CRO")


def test_a_claimants_other_alerts_are_its_own_incident(store):
    result = ingest(store, claim("CRO", "D-REV-1", "firing", symptom("CRO")))
    assert len(result.opened) == 2
    own, conflict = store.open_for("CRO"), store.conflicts_of("CRO")[0]
    assert [a.labels["alertname"] for a in own.alerts] == ["AgentAlignmentBelowSLO"]
    assert [a.labels["alertname"] for a in conflict.alerts] == ["DirectiveClaimedByMultipleAgents"]


def test_the_conflict_closes_only_when_no_claimant_has_its_alert_firing(store):
    conflict_id = ingest(store, claim("CMO"), claim("CRO")).opened[0]
    store.update(conflict_id, state="recovered", recovered_at=1.0, outcome="auto_resolved")
    assert ingest(store, claim("CMO", status="resolved")).closed == ()
    assert store.get(conflict_id).state == "recovered"
    # CRO's next notification no longer carries the alert at all (resolved and gone): the conflict is over.
    closed = ingest(store, AgentNotification("CRO", ())).closed
    assert [i.id for i in closed] == [conflict_id]
    assert store.get(conflict_id).outcome == "auto_resolved" and store.conflicts_of("CRO") == []


def test_the_onset_of_an_incident_is_its_earliest_firing_alert(store):
    incident = store.get(ingest(store, firing()).opened[0])
    assert incident.onset_at == 1755529331.0  # 2025-08-18T15:02:11Z




# ------------------------------------------------------------------ work claimed with leases

def test_a_claim_takes_the_oldest_runnable_incident_and_no_other_claim_gets_it(store, clock):
    first = ingest(store, firing("CMO")).opened[0]
    clock.now += 1
    second = ingest(store, firing("CRO")).opened[0]
    a = store.claim("worker-a", 30)
    b = store.claim("worker-b", 30)
    assert (a.incident_id, a.owner, a.agents) == (first, "worker-a", ("CMO",))
    assert (b.incident_id, b.agents) == (second, ("CRO",))
    assert store.claim("worker-c", 30) is None
    assert store.queued_count() == 0 and store.leased_agents() == {"CMO", "CRO"}
    store.release(a)
    assert store.queued_count() == 1 and store.leased_agents() == {"CRO"}
    assert store.claim("worker-c", 30).incident_id == first


def test_a_claim_by_id_takes_that_incident_or_nothing(store):
    first = ingest(store, firing("CMO")).opened[0]
    second = ingest(store, firing("CRO")).opened[0]
    assert store.claim("w", 30, second).incident_id == second
    assert store.claim("w", 30, second) is None  # already held
    assert store.claim("w", 30, "no-such-incident") is None
    store.update(first, state="escalated")
    assert store.claim("w", 30, first) is None  # not runnable


def test_a_claim_held_by_a_dead_worker_is_taken_over_after_its_lease(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    dead = store.claim("worker-that-died", 30)
    store.update(incident_id, dead, state="remediating", attempts=1)
    clock.now += 29
    assert store.claim("survivor", 30) is None  # still within the lease
    clock.now += 2
    assert store.leased_agents() == frozenset() and store.queued_count() == 1
    taken = store.claim("survivor", 30)
    assert taken.incident_id == incident_id and taken.incident.state == "remediating"
    # The dead worker's claim fences it out: it can neither renew, nor write, nor free the survivor's hold.
    assert store.renew(dead, 30) is None
    with pytest.raises(LeaseLost):
        store.update(incident_id, dead, reason="late write")
    store.release(dead)
    assert store.leased_agents() == {"CMO"} and store.claim("third", 30) is None
    assert store.update(incident_id, taken, state="open").state == "open"


def test_a_renewed_lease_keeps_the_claim(store, clock):
    ingest(store, firing())
    held = store.claim("w", 10)
    for _ in range(5):
        clock.now += 8
        held = store.renew(held, 10)
        assert held is not None and held.expires_at == clock.now + 10
        assert store.claim("other", 10) is None


def test_leases_are_renewed_together_and_a_lost_one_is_answered_none_in_its_place(store, clock):
    for agent in ("CMO", "CRO", "COO"):
        ingest(store, firing(agent))
    first, second, third = (store.claim(f"w{n}", 10) for n in range(3))
    clock.now += 8
    first, third = store.renew_many([first, third], 10)
    clock.now += 3  # only the second's lease has run out: a survivor takes it over
    taken = store.claim("survivor", 10)
    assert taken is not None and taken.incident_id == second.incident_id
    renewed = store.renew_many([first, second, third], 10)
    assert renewed[1] is None
    for old, new in ((first, renewed[0]), (third, renewed[2])):
        assert (new.token, new.agents, new.expires_at) == (old.token, old.agents, clock.now + 10)
    clock.now += 9
    assert store.claim("other", 10) is None  # the renewed ones still hold, and so does the survivor's
    assert store.renew_many([], 10) == []


def test_one_claim_per_agent_a_conflict_holds_each_of_its_claimants(store):
    conflict = ingest(store, claim("CMO"), claim("CRO")).opened[0]
    own = ingest(store, firing("COO")).opened[0]
    held = store.claim("w1", 30, conflict)
    assert set(held.agents) == {"CMO", "CRO"}
    cro_own = ingest(store, AgentNotification("CRO", (symptom("CRO"),))).opened[0]
    assert store.claim("w2", 30, cro_own) is None  # CRO is held by the conflict's claim
    assert store.claim("w2", 30).incident_id == own  # another agent's incident is free to take
    store.release(held)
    assert store.claim("w3", 30, cro_own) is None  # the conflict is still runnable: it goes first
    store.update(conflict, state="recovered", recovered_at=1.0)
    assert store.claim("w3", 30, cro_own).incident_id == cro_own


def test_a_claim_extends_to_more_agents_only_when_no_other_claim_holds_them(store):
    conflict = ingest(store, claim("CMO")).opened[0]
    busy = ingest(store, firing("COO")).opened[0]
    held = store.claim("w1", 30, conflict)
    other = store.claim("w2", 30, busy)
    wider = store.extend(held, ["CRO"])
    assert wider.agents == ("CMO", "CRO") and store.leased_agents() == {"CMO", "CRO", "COO"}
    assert store.extend(wider, ["COO"]) is None  # held by the other claim: nothing taken
    assert store.leased_agents() == {"CMO", "CRO", "COO"}
    store.release(other)
    assert store.extend(wider, ["COO"]).agents == ("CMO", "CRO", "COO")
    store.release(wider)
    assert store.leased_agents() == frozenset()


def test_a_released_claim_with_a_retry_time_is_not_claimed_before_it(store, clock):
    incident_id = ingest(store, firing()).opened[0]
    store.release(store.claim("w", 30), retry_at=clock.now + 5)
    assert store.get(incident_id).retry_at == clock.now + 5
    assert store.claim("w", 30) is None and store.queued_count() == 1
    clock.now += 5
    assert store.claim("w", 30).incident_id == incident_id


def test_concurrent_claimers_never_hold_one_agent_twice_and_run_each_incident_once(store):
    agents = [f"agent-{n}" for n in range(12)]
    expected = {i for agent in agents for i in ingest(store, firing(agent)).opened}
    # Two conflicts sharing agent-1, and claiming agents whose own incidents must wait for them.
    expected |= set(ingest(store, claim("agent-0", "D-1"), claim("agent-1", "D-1")).opened)
    expected |= set(ingest(store, claim("agent-1", "D-2"), claim("agent-2", "D-2")).opened)
    held: dict[str, str] = {}
    lock, problems, ran = threading.Lock(), [], []

    def worker(name: str) -> None:
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
            for _ in range(3):
                store.get(got.incident_id)  # some work while holding it
            with lock:
                for agent in got.agents:
                    held.pop(agent, None)
            store.update(got.incident_id, got, state="recovered", recovered_at=1.0)
            store.release(got)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not problems
    assert sorted(ran) == sorted(expected)  # every incident ran, none twice
    assert store.queued_count() == 0 and store.leased_agents() == frozenset()


# ------------------------------------------------------------------ the kill switch

def test_the_kill_switch_is_on_until_switched_off_and_keeps_its_reason_across_a_reopen(backend, clock):
    store = backend.open()
    switch = store.kill_switch()
    assert (switch.enabled, switch.reason, switch.changed_at) == (True, None, None)
    off = store.set_kill_switch(False, "bad deploy")
    assert (off.enabled, off.reason, off.changed_at) == (False, "bad deploy", clock.now)
    store.close()
    again = backend.open()
    assert again.kill_switch() == off
    clock.now += 10
    on = again.set_kill_switch(True, "ignored when switching on")
    assert (on.enabled, on.reason, on.changed_at) == (True, None, clock.now) and again.kill_switch() == on


# ------------------------------------------------------------------ the staged rollout

def test_the_rollout_is_none_until_set_then_kept_as_set_across_a_reopen(backend, clock):
    store = backend.open()
    assert store.rollout() is None  # the engine then starts from AUTOREM_CANARY_AGENTS
    canary = Rollout(("Content", "CMO"), ("CONFLICT", "TRANSIENT", "DATA_DEP", "CONFIG"), "pack section 11", clock.now)
    assert store.set_rollout(canary) == canary and store.rollout() == canary
    store.close()
    again = backend.open()
    assert again.rollout() == canary
    everyone = Rollout(None, CLASSES, "all in", clock.now + 10)
    again.set_rollout(everyone)
    assert again.rollout() == everyone and again.kill_switch().enabled is True  # flags of their own
    again.close()
    assert backend.open().rollout() == everyone


def test_a_claim_whose_lease_expired_cannot_take_more_agents_even_before_anyone_took_it_over(store, clock):
    conflict = ingest(store, claim("CMO")).opened[0]
    held = store.claim("w1", 10, conflict)
    clock.now += 11  # expired; no other worker claimed anything since
    with pytest.raises(LeaseLost):
        store.extend(held, ["CRO"])
    assert store.leased_agents() == frozenset()
    assert store.claim("w2", 10, conflict).agents == ("CMO",)


# ------------------------------------------------------------------ the decision lineage

def stamp(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lineage_line(n, agent="CMO", incident_id=None, seconds=1_000_000.0, event="auto_remediation"):
    """An entry shaped like LineageLog's, and its line."""
    import json

    entry = {"ts": stamp(seconds), "actor": "ChiefOfStaff", "event": event, "agent": agent, "attempt": n,
             "incident_id": incident_id}
    return entry, json.dumps(entry, separators=(",", ":"))


def attempts(rows) -> list[int]:
    import json

    return [json.loads(row.line)["attempt"] for row in rows]


def every_lineage_page(store, limit, **filters) -> tuple[list[int], int]:
    seen, before, pages = [], None, 0
    while True:
        page = store.lineage_page(limit, before, **filters)
        seen += attempts(page.entries)
        pages += 1
        if page.next_cursor is None:
            return seen, pages
        assert page.next_cursor == page.entries[-1].id
        before = page.next_cursor


def test_lineage_entries_get_rising_ids_and_are_paged_newest_first_until_no_older_one_matches(store):
    ids = [store.append_lineage(*lineage_line(n)) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    first = store.lineage_page(2)
    assert [row.id for row in first.entries] == ids[:-3:-1] and first.next_cursor == ids[3]
    assert every_lineage_page(store, 2) == ([4, 3, 2, 1, 0], 3)
    assert every_lineage_page(store, 5) == ([4, 3, 2, 1, 0], 1)  # exactly a page: no empty page after it
    assert store.lineage_page(10, before=ids[0]) == type(first)([], None)
    assert attempts(store.lineage_after(0)) == [0, 1, 2, 3, 4]
    assert attempts(store.lineage_after(ids[1], limit=2)) == [2, 3]
    assert store.lineage_after(ids[-1]) == []


def test_lineage_pages_filter_by_agent_incident_and_time(store):
    for n in range(9):
        store.append_lineage(*lineage_line(n, agent=("CMO", "CRO", "COO")[n % 3], incident_id=f"i-{n % 2}",
                                           seconds=1_000_000.0 + n))
    assert every_lineage_page(store, 2, agent="CMO") == ([6, 3, 0], 2)
    assert every_lineage_page(store, 2, incident_id="i-1") == ([7, 5, 3, 1], 2)
    assert every_lineage_page(store, 10, agent="CRO", incident_id="i-1") == ([7, 1], 1)
    assert every_lineage_page(store, 2, since=1_000_006.0) == ([8, 7, 6], 2)
    assert every_lineage_page(store, 10, agent="COO", since=1_000_005.0) == ([8, 5], 1)
    assert every_lineage_page(store, 10, agent="Nobody") == ([], 1)
    assert every_lineage_page(store, 10, since=2_000_000.0) == ([], 1)


def test_a_since_page_finds_entries_stored_out_of_time_order_within_the_slack_and_skips_the_old_history(store):
    from webhook_receiver.store.lineage_rows import SINCE_SLACK_SECONDS

    since = 2_000_000.0
    for n in range(20):  # a long history, long before
        store.append_lineage(*lineage_line(n, seconds=since - 10 * SINCE_SLACK_SECONDS + n))
    store.append_lineage(*lineage_line(100, seconds=since + 5))  # stamped after SINCE, stored first
    store.append_lineage(*lineage_line(101, seconds=since - 30))  # stamped before SINCE, stored after
    store.append_lineage(*lineage_line(102, seconds=since))
    assert every_lineage_page(store, 1, since=since) == ([102, 100], 2)


def test_a_lineage_line_round_trips_exactly_and_its_agent_filters_whatever_it_holds(store):
    import json

    hostile = "<script>alert('x')</script> \"CMO\" & \u2028 caf\u00e9"
    entry = {"ts": "2025-08-18T15:02:11.123Z", "agent": hostile, "event": "remediation_refused",
             "incident_id": "i-'1'", "note": "quotes \" and \\ backslashes"}
    line = json.dumps(entry, separators=(",", ":"))
    stored = store.append_lineage(entry, line)
    store.append_lineage(*lineage_line(1, agent="CMO"))
    [row] = store.lineage_page(10, agent=hostile).entries
    assert (row.id, row.line) == (stored, line)
    assert store.lineage_page(10, incident_id="i-'1'").entries == [row]
    assert store.lineage_after(0)[0] == row


def test_a_lineage_entry_without_a_date_time_is_refused_and_nothing_is_stored(store):
    for ts in ("yesterday", None, "2025-08-18T15:02:11"):  # no zone: which moment it was is unknown
        with pytest.raises(ValueError, match="ts"):
            store.append_lineage({"ts": ts, "agent": "CMO"}, '{"agent":"CMO"}')
    assert store.lineage_after(0) == []


def test_lineage_entries_survive_reopening_the_store(backend):
    first = backend.open()
    first.append_lineage(*lineage_line(1))
    first.close()
    assert attempts(backend.open().lineage_page(10).entries) == [1]


def _bulk_lineage(store, count: int, agents: int) -> None:
    """COUNT entries straight into the table, one transaction (the plans are read on a table of some size)."""
    rows = [(1_000_000.0 + n, f"agent-{n % agents}", f"i-{n % 500}", "auto_remediation",
             f'{{"attempt":{n}}}') for n in range(count)]
    if isinstance(store, SqliteIncidentStore):
        with store._lock, store._transaction():
            store._db.executemany("INSERT INTO lineage (ts, agent, incident_id, event, entry) VALUES (?, ?, ?, ?, ?)",
                                  rows)
        store._db.execute("ANALYZE")
    else:
        with store._pool.connection() as db:
            with db.transaction(), db.cursor() as cur:
                cur.executemany("INSERT INTO lineage (ts, agent, incident_id, event, entry) "
                                "VALUES (%s, %s, %s, %s, %s)", rows)
            db.execute("ANALYZE lineage")


def _plan(store, query: str, args: list) -> str:
    if isinstance(store, SqliteIncidentStore):
        with store._lock:
            return "\n".join(row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + query, args))
    with store._pool.connection() as db:
        return "\n".join(row[0] for row in db.execute("EXPLAIN " + query, args))


def test_a_lineage_page_is_read_through_an_index_never_a_scan_of_the_history(store):
    from webhook_receiver.store.lineage_rows import floor_query, page_query

    _bulk_lineage(store, 20_000, agents=30)
    sqlite = isinstance(store, SqliteIncidentStore)
    mark = "?" if sqlite else "%s"
    cases = {  # the queries each store runs (PostgreSQL's pinned to the filter's index)
        "agent": (page_query(mark, 50, 15_000, "agent-7", None, None, None, not sqlite), "lineage_by_agent"),
        "incident": (page_query(mark, 50, 15_000, None, "i-42", None, None, not sqlite), "lineage_by_incident"),
        "cursor": (page_query(mark, 50, 15_000, None, None, None, None, not sqlite),
                   "INTEGER PRIMARY KEY" if sqlite else "lineage_pkey"),
        "since": (page_query(mark, 50, None, None, None, 1_019_000.0, 18_000, not sqlite),
                  "INTEGER PRIMARY KEY" if sqlite else "lineage_pkey"),
        "floor": ((floor_query(mark), [1_019_000.0]), "lineage_by_time"),
    }
    for name, ((query, args), index) in cases.items():
        plan = _plan(store, query, args)
        assert index in plan, (name, plan)
        assert "Seq Scan" not in plan, (name, plan)
        if name != "incident":  # an incident's few entries may be fetched and sorted; an agent's are never all read
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, (name, plan)
        if sqlite:
            assert "SEARCH" in plan and "SCAN lineage" not in plan.replace("SCAN lineage USING", ""), (name, plan)
    page = store.lineage_page(50, agent="agent-7")
    assert len(page.entries) == 50 and page.next_cursor == page.entries[-1].id


# ------------------------------------------------------------------ retention (trim_history)

DAY = 86_400.0


def note(store, clock, incident_id, tag, agent="CMO"):
    """A lineage entry stamped with the store's clock, its line tagged TAG."""
    from datetime import datetime, timezone

    ts = datetime.fromtimestamp(clock.now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store.append_lineage({"ts": ts, "agent": agent, "incident_id": incident_id, "event": "test"},
                         f'{{"tag": "{tag}"}}')


def close(store, clock, incident_id, stamped=True):
    """Closed as a worker or the sweeper closes it (with closed_at), or as an incident from before it was kept."""
    stamp = {"closed_at": clock.now} if stamped else {}
    return store.update(incident_id, state="closed", outcome="self_resolved", **stamp)


def tags(store):
    return {row.line.split('"')[3] for row in store.lineage_after(0, 1000)}


def test_trim_keeps_an_open_incidents_history_however_old_and_deletes_closed_history_older_than_the_cutoff(
        store, clock):
    start = clock.now
    kept_open = ingest(store, firing("OLD")).opened[0]
    note(store, clock, kept_open, "open-old")
    gone = ingest(store, firing("GONE")).opened[0]
    note(store, clock, gone, "closed-old")
    note(store, clock, None, "no-incident-old")
    conflict = ingest(store, claim("CMO"), claim("CRO")).opened[0]
    clock.now += 10
    close(store, clock, gone)
    close(store, clock, conflict, stamped=False)  # when it closed is its last update's time
    clock.now = start + 100 * DAY
    young = ingest(store, firing("YOUNG")).opened[0]
    note(store, clock, young, "closed-young")
    clock.now += 10
    close(store, clock, young)
    before = store.notification_count()

    done = store.trim_history(clock.now - 90 * DAY, batch=500)
    assert (done.incidents, done.lineage, done.notifications) == (2, 2, 0)
    assert store.get(gone) is None and store.get(conflict) is None
    assert store.list(agent="CRO") == [] and store.conflicts_of("CRO") == []
    assert store.get(kept_open).state == "open" and store.open_for("OLD").id == kept_open
    assert store.get(young).state == "closed"  # closed 10 s ago
    # OLD's incident, open since the start, keeps every notification from its opening on.
    assert store.notification_count() == before
    assert tags(store) == {"open-old", "closed-young"}
    assert store.trim_history(clock.now - 90 * DAY).finished(1)

    close(store, clock, kept_open)  # closed now: its old notifications and lineage go, itself not yet
    done = store.trim_history(clock.now - 90 * DAY)
    assert (done.incidents, done.lineage, done.notifications) == (0, 1, 3)
    assert store.get(kept_open).state == "closed"
    assert [n.received_at for n in store.notifications()] == [start + 100 * DAY]
    assert tags(store) == {"closed-young"}


def test_trim_deletes_at_most_a_batch_of_each_kind_and_repeated_calls_finish_the_job(store, clock):
    start = clock.now
    for n in range(7):
        agent = f"agent-{n}"
        incident = ingest(store, firing(agent)).opened[0]
        note(store, clock, incident, f"old-{n}", agent)
        clock.now += 1
        ingest(store, resolved(agent))  # only marked resolved: a worker closes it when its attempt ends
        close(store, clock, incident)
    clock.now = start + 10 * DAY
    ingest(store, firing("fresh"))
    note(store, clock, None, "fresh")
    cutoff = clock.now - 7 * DAY
    first = store.trim_history(cutoff, batch=3)
    assert (first.incidents, first.notifications, first.lineage) == (3, 3, 3) and not first.finished(3)
    total = first
    for _ in range(10):
        step = store.trim_history(cutoff, batch=3)
        assert max(step.incidents, step.notifications, step.lineage) <= 3
        total = total + step
        if step.finished(3):
            break
    assert (total.incidents, total.notifications, total.lineage) == (7, 14, 7)
    assert [i.agent for i in store.list()] == ["fresh"] and store.notification_count() == 1
    assert tags(store) == {"fresh"}
    assert store.trim_history(cutoff, batch=3) == type(first)()  # nothing left


@pytest.mark.parametrize("cutoff, batch, message", [
    (float("nan"), 10, "cutoff nan is not a finite time"), ("yesterday", 10, "cutoff 'yesterday'"),
    (1.0, 0, "batch 0 is not a whole number"), (1.0, 2.5, "batch 2.5"), (1.0, True, "batch True")])
def test_trim_refuses_a_cutoff_or_batch_that_cannot_be_meant(store, cutoff, batch, message):
    ingest(store, firing())
    with pytest.raises(ValueError, match=message):
        store.trim_history(cutoff, batch)
    assert store.notification_count() == 1


# ------------------------------------------------------------------ the operator console's event log

def kinds(rows) -> list[str]:
    return [row.kind for row in rows]


def test_events_get_rising_ids_and_are_read_oldest_first_a_page_at_a_time(store, clock):
    from webhook_receiver.store import StoredEvent

    assert store.last_event_id() == 0 and store.events_after() == []
    assert store.append_events([]) == []
    first = store.append_events([("attempt", "CMO", '{"n":0}'), ("switches", None, '{"n":1}')])
    clock.now += 5
    second = store.append_events([("closed", "CRO", '{"n":2}')])
    ids = first + second
    assert ids == sorted(ids) and len(set(ids)) == 3 and ids[0] > 0
    assert store.last_event_id() == ids[-1]
    assert store.events_after() == [StoredEvent(ids[0], 1_000_000.0, "attempt", "CMO", '{"n":0}'),
                                    StoredEvent(ids[1], 1_000_000.0, "switches", None, '{"n":1}'),
                                    StoredEvent(ids[2], 1_000_005.0, "closed", "CRO", '{"n":2}')]
    assert kinds(store.events_after(ids[0], limit=1)) == ["switches"]
    assert kinds(store.events_after(ids[1])) == ["closed"]
    assert store.events_after(ids[-1]) == []


@pytest.mark.parametrize("bad, message", [
    (("", "CMO", "{}"), "event 1: kind '' is not a non-empty text"),
    ((None, "CMO", "{}"), "event 1: kind None is not"),
    (("k" * 65, "CMO", "{}"), "event 1: kind 'k{65}' is not a non-empty text of at most 64"),
    (("attempt", 7, "{}"), "event 1: agent 7 is neither None nor a text"),
    (("attempt", "a" * 257, "{}"), "event 1: agent 'a+\\.\\.\\. is neither None nor a text of at most 256"),
    (("attempt", "CMO", {"n": 1}), "event 1: body is a dict, not a text"),
    (("attempt", "CMO", "x" * 65_537), "event 1: body is 65537 characters long, more than 65536"),
    (("attempt", "CMO"), "event 1 is not a .kind, agent, body. triple"),
])
def test_an_event_that_cannot_be_stored_refuses_the_whole_append(store, bad, message):
    good = ("attempt", "CMO", "{}")
    with pytest.raises(ValueError, match=message):
        store.append_events([good, bad, good])
    assert store.events_after() == [] and store.last_event_id() == 0
    limits = [("k" * 64, "a" * 256, "x" * 65_536), ("step", None, "")]  # exactly at the limits: stored
    assert len(store.append_events(limits)) == 2
    assert [(e.kind, e.agent, len(e.body)) for e in store.events_after()] == [("k" * 64, "a" * 256, 65_536),
                                                                              ("step", None, 0)]


def test_an_event_with_a_nul_is_stored_the_same_way_by_every_store(store):
    store.append_events([("attempt\x00", "C\x00MO", '{"x":"\x00"}')])
    [event] = store.events_after()
    assert (event.kind, event.agent, event.body) == ("attempt\ufffd", "C\ufffdMO", '{"x":"\ufffd"}')


def _drop_events_table(store) -> None:
    if isinstance(store, SqliteIncidentStore):
        with store._lock:
            store._db.execute("DROP TABLE events")
    else:
        with store._pool.connection() as db:
            db.execute("DROP TABLE events")


def test_an_event_log_that_cannot_be_written_is_a_store_error_naming_the_store(store, backend):
    from webhook_receiver.store import StoreError

    _drop_events_table(store)
    with pytest.raises(StoreError, match="cannot store the console events") as raised:
        store.append_events([("attempt", "CMO", "{}")])
    assert ("incidents.sqlite3" if backend.name == "sqlite" else "dbname=") in str(raised.value)
    with pytest.raises(StoreError, match="cannot read the console events"):
        store.events_after()


def test_events_survive_reopening_the_store_and_ids_never_go_back_after_a_trim(backend, clock):
    first = backend.open()
    ids = first.append_events([("attempt", "CMO", "{}"), ("closed", "CMO", "{}")])
    first.close()
    again = backend.open()
    assert [e.id for e in again.events_after()] == ids
    clock.now += 10
    assert again.trim_history(clock.now, batch=10).events == 2  # every event gone, the newest too
    assert again.last_event_id() == 0
    [later] = again.append_events([("step", "CMO", "{}")])
    assert later > ids[-1]


def test_trim_deletes_only_events_older_than_the_cutoff_at_most_a_batch_per_call(store, clock):
    start = clock.now
    for n in range(5):
        store.append_events([("attempt", f"agent-{n}", f'{{"n":{n}}}')])
        clock.now += 1
    clock.now = start + 10 * DAY
    [young] = store.append_events([("closed", "CMO", "{}")])
    cutoff = start + 4  # the first four (stored at start .. start + 3) are older
    first = store.trim_history(cutoff, batch=3)
    assert first.events == 3 and not first.finished(3)
    assert [e.body for e in store.events_after()] == ['{"n":3}', '{"n":4}', "{}"]
    second = store.trim_history(cutoff, batch=3)
    assert second.events == 1 and second.finished(3)
    assert (first + second).events == 4
    assert [e.body for e in store.events_after()] == ['{"n":4}', "{}"]
    assert store.trim_history(cutoff, batch=3) == type(first)()
    assert store.last_event_id() == young


def test_stores_sharing_a_ledger_see_each_others_events_in_one_order_and_a_tail_misses_none(backend):
    """Receivers on one store (and writers in one process): each append's ids are consecutive (one transaction), and a
    reader tailing by id while they write sees every event, none skipped by a later commit of a lower id."""
    writers = [backend.open(), backend.open()]
    reader = backend.open()
    [first] = writers[0].append_events([("attempt", "CMO", '{"from":0}')])
    assert [e.id for e in writers[1].events_after()] == [first]
    [second] = writers[1].append_events([("attempt", "CRO", '{"from":1}')])
    assert second > first and writers[0].last_event_id() == second

    appended: list[list[int]] = []
    failures: list[BaseException] = []
    writing = threading.Event()

    def write(store, n):
        try:
            for round_ in range(15):
                appended.append(store.append_events([("step", f"w{n}", f'{{"round":{round_},"i":{i}}}')
                                                     for i in range(3)]))
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    seen = [first, second]

    def tail():
        while True:
            done = not writing.is_set()
            for event in reader.events_after(seen[-1], limit=7):
                seen.append(event.id)
            if done and not reader.events_after(seen[-1]):
                return

    writing.set()
    threads = [threading.Thread(target=write, args=(writers[n % 2], n)) for n in range(4)]
    tailer = threading.Thread(target=tail)
    for thread in (*threads, tailer):
        thread.start()
    for thread in threads:
        thread.join(60)
    writing.clear()
    tailer.join(60)
    assert failures == [] and not tailer.is_alive()
    assert all(ids == list(range(ids[0], ids[0] + 3)) for ids in appended)
    everything = sorted([first, second, *(i for ids in appended for i in ids)])
    assert seen == everything == [e.id for e in reader.events_after(limit=1000)]
