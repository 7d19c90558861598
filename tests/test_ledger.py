"""SqliteIncidentLedger: every notification recorded, one open incident per agent, durable across restarts."""
import sqlite3

import pytest

from webhook_receiver.ledger import AgentNotification, AlertRef, IncidentClosed, SqliteIncidentLedger

GRACE = 300.0


def grant(count: int) -> bool:
    return True


def refuse(count: int) -> bool:
    return False


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


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ledger(tmp_path, clock):
    led = SqliteIncidentLedger(tmp_path / "incidents.sqlite3", GRACE, clock=clock)
    yield led
    led.close()


def ingest(ledger, *items, source="alertmanager", reserve=grant, body="{}"):
    return ledger.ingest(source, body, list(items), reserve)


def test_a_firing_notification_opens_one_incident_and_queues_it(ledger):
    result = ingest(ledger, firing())
    assert not result.refused
    assert result.notification_id > 0
    assert len(result.opened) == 1 and result.to_run == result.opened
    incident = ledger.get(result.opened[0])
    assert (incident.agent, incident.state, incident.source, incident.attempts) == ("CMO", "open", "alertmanager", 0)
    assert incident.alert_classes == frozenset({"TRANSIENT"})
    assert incident.labels["autonomy_class"] == "TRANSIENT"
    assert ledger.open_for("CMO") == incident
    assert ledger.notification_count() == 1


def test_repeated_firing_notifications_are_duplicates_of_the_one_open_incident(ledger):
    first = ingest(ledger, firing())
    second = ingest(ledger, firing())
    third = ingest(ledger, firing(cls="CAPACITY"))  # another alert of the same agent: still the same incident
    assert second.opened == () and second.to_run == () and second.duplicates == first.opened
    assert third.opened == () and third.duplicates == first.opened
    assert [i.id for i in ledger.list()] == list(first.opened)
    assert ledger.get(first.opened[0]).alert_classes == {"CAPACITY"}  # the latest alerts are kept
    assert ledger.notification_count() == 3


def test_each_agent_gets_its_own_incident_from_one_notification(ledger):
    result = ingest(ledger, firing("CMO"), firing("CRO", "CAPACITY"))
    assert len(result.opened) == 2
    assert sorted(i.agent for i in ledger.list()) == ["CMO", "CRO"]
    assert ledger.notification_count() == 1


def test_the_unique_index_holds_one_open_incident_per_agent_even_against_a_direct_insert(ledger):
    incident = ledger.get(ingest(ledger, firing()).opened[0])
    with pytest.raises(sqlite3.IntegrityError):
        ledger._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at) VALUES (?, ?, ?, ?, ?)",
                           ("another-id", "CMO", "open", "{}", 1.0))
    with pytest.raises(sqlite3.IntegrityError):  # any open state counts, not only "open"
        ledger._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at) VALUES (?, ?, ?, ?, ?)",
                           ("another-id", "CMO", "escalated", "{}", 1.0))
    # closed incidents do not count: history may hold many
    ledger._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at) VALUES (?, ?, ?, ?, ?)",
                       ("old-id", "CMO", "closed", "{}", 1.0))
    assert ledger.open_for("CMO").id == incident.id


def test_a_resolved_notification_closes_an_incident_no_worker_holds(ledger, clock):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="escalated", outcome="escalated", reason="AutoRemediationFailed")
    clock.now += 10
    result = ingest(ledger, resolved())
    assert [i.id for i in result.closed] == [incident_id]
    closed = ledger.get(incident_id)
    assert closed.state == "closed" and closed.closed_at == clock.now
    assert closed.outcome == "escalated"  # the outcome it had is kept
    assert ledger.open_for("CMO") is None


def test_a_resolved_notification_closes_a_skipped_incident_as_self_resolved(ledger):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="skipped")
    result = ingest(ledger, resolved())
    assert [i.id for i in result.closed] == [incident_id]
    assert ledger.get(incident_id).outcome == "self_resolved"
    assert ledger.get(incident_id).reason == "alert resolved"


@pytest.mark.parametrize("state", ["open", "remediating"])
def test_resolved_while_a_worker_holds_the_incident_only_marks_resolved_at(ledger, clock, state):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state=state)
    clock.now += 5
    result = ingest(ledger, resolved())
    assert result.closed == () and result.duplicates == (incident_id,)
    incident = ledger.get(incident_id)
    assert incident.state == state
    assert incident.resolved_at == clock.now and incident.closed_at is None


def test_a_closed_incident_refuses_updates(ledger):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="recovered", recovered_at=1.0)
    ingest(ledger, resolved())
    with pytest.raises(IncidentClosed):
        ledger.update(incident_id, state="open")
    with pytest.raises(IncidentClosed):
        ledger.update(incident_id, reason="late note")
    assert ledger.get(incident_id).state == "closed"


def test_update_rejects_unknown_fields_states_and_incidents(ledger):
    incident_id = ingest(ledger, firing()).opened[0]
    with pytest.raises(TypeError):
        ledger.update(incident_id, colour="red")
    with pytest.raises(ValueError):
        ledger.update(incident_id, state="sleeping")
    with pytest.raises(KeyError):
        ledger.update("no-such-incident", state="open")


def test_after_closing_a_new_firing_notification_opens_a_new_incident(ledger):
    first = ingest(ledger, firing()).opened[0]
    ledger.update(first, state="recovered", recovered_at=1.0)
    ingest(ledger, resolved())
    second = ingest(ledger, firing()).opened
    assert len(second) == 1 and second[0] != first
    assert {i.id: i.state for i in ledger.list(agent="CMO")} == {first: "closed", second[0]: "open"}


def test_a_skipped_incident_is_queued_again_by_a_new_firing_notification(ledger):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="skipped", attempts=1, outcome="skipped", reason="silenced: by an SRE")
    result = ingest(ledger, firing())
    assert result.to_run == (incident_id,) and result.opened == () and result.duplicates == ()
    incident = ledger.get(incident_id)
    assert incident.state == "open" and incident.outcome is None and incident.reason is None
    assert incident.attempts == 1  # a skip is not a relapse: attempts made so far still count


def test_reopening_an_incident_clears_the_resolved_at_of_the_previous_episode(ledger, clock):
    incident_id = ingest(ledger, firing()).opened[0]
    clock.now += 1
    ingest(ledger, resolved())  # arrives while queued: only marks resolved_at
    ledger.update(incident_id, state="skipped", outcome="skipped", reason="silenced: by an SRE")
    clock.now += 60
    result = ingest(ledger, firing())  # the alert fires again
    assert result.to_run == (incident_id,)
    assert ledger.get(incident_id).resolved_at is None


def test_a_recovered_incident_absorbs_firing_notifications_within_the_reopen_grace(ledger, clock):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="recovered", attempts=1, recovered_at=clock.now, outcome="auto_resolved")
    clock.now += GRACE - 1
    result = ingest(ledger, firing())
    assert result.to_run == () and result.duplicates == (incident_id,)
    assert ledger.get(incident_id).state == "recovered"


def test_a_firing_notification_after_the_reopen_grace_is_a_relapse_with_fresh_attempts(ledger, clock):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="recovered", attempts=2, recovered_at=clock.now, outcome="auto_resolved",
                  reason="Resolved by CoS: RestartAndRetryTransient")
    clock.now += GRACE + 1
    result = ingest(ledger, firing())
    assert result.to_run == (incident_id,) and result.opened == ()
    incident = ledger.get(incident_id)
    assert (incident.state, incident.attempts, incident.outcome, incident.reason) == ("open", 0, None, None)


def test_an_escalated_incident_is_not_reopened_by_firing_notifications(ledger, clock):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="escalated", attempts=2, outcome="escalated")
    clock.now += GRACE * 10
    result = ingest(ledger, firing())
    assert result.to_run == () and result.duplicates == (incident_id,)
    assert ledger.get(incident_id).state == "escalated"


def test_notifications_from_the_other_source_do_not_touch_an_incident(ledger):
    incident_id = ingest(ledger, firing(), source="signal").opened[0]
    ledger.update(incident_id, state="recovered", recovered_at=1.0)
    result = ingest(ledger, resolved(), source="alertmanager")
    assert result.closed == () and result.duplicates == (incident_id,)
    assert ledger.get(incident_id).state == "recovered"


def test_a_refused_reservation_rolls_back_everything_including_the_notification_row(ledger):
    kept = ingest(ledger, firing("CRO", "CAPACITY")).opened[0]
    ledger.update(kept, state="escalated", outcome="escalated")
    before = ([i.as_dict() for i in ledger.list()], ledger.notification_count())
    asked = []

    def full(count):
        asked.append(count)
        return False

    # one new incident (needs a slot) and one closure in the same notification: all or nothing
    result = ingest(ledger, firing("CMO"), resolved("CRO", "CAPACITY"), reserve=full)
    assert asked == [1]
    assert result.refused and result.notification_id == 0 and result.to_run == ()
    assert ([i.as_dict() for i in ledger.list()], ledger.notification_count()) == before
    assert ledger.open_for("CMO") is None and ledger.get(kept).state == "escalated"


def test_a_notification_that_runs_nothing_does_not_ask_for_a_slot(ledger):
    incident_id = ingest(ledger, firing()).opened[0]
    result = ingest(ledger, firing(), reserve=refuse)  # a duplicate needs no worker
    assert not result.refused and result.duplicates == (incident_id,)
    assert ledger.notification_count() == 2


def test_an_exception_while_reserving_rolls_back_and_propagates(ledger):
    def broken(count):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ingest(ledger, firing(), reserve=broken)
    assert ledger.list() == [] and ledger.notification_count() == 0
    assert ingest(ledger, firing()).opened  # the ledger is still usable


def test_runnable_incidents_survive_reopening_the_same_file(tmp_path, clock):
    path = tmp_path / "incidents.sqlite3"
    first = SqliteIncidentLedger(path, GRACE, clock=clock)
    queued = ingest(first, firing("CMO")).opened[0]
    running = ingest(first, firing("CRO", "CAPACITY")).opened[0]
    first.update(running, state="remediating", attempts=1, playbooks_run=("RebalanceCapacity",))
    done = ingest(first, firing("Content", "CONFIG")).opened[0]
    first.update(done, state="escalated")
    first.close()

    again = SqliteIncidentLedger(path, GRACE, clock=clock)
    try:
        assert [i.id for i in again.runnable()] == [queued, running]
        resumed = again.get(running)
        assert resumed.state == "remediating" and resumed.attempts == 1
        assert resumed.playbooks_run == ("RebalanceCapacity",)
        assert resumed.alerts[0].labels["autonomy_class"] == "CAPACITY"
        assert again.notification_count() == 3
    finally:
        again.close()


def test_flags_persist_across_reopening_the_same_file(tmp_path):
    path = tmp_path / "incidents.sqlite3"
    first = SqliteIncidentLedger(path)
    assert first.flag("remediation_enabled") is None
    first.set_flag("remediation_enabled", "true")
    first.set_flag("remediation_enabled", "false")  # overwritten, not duplicated
    first.close()
    again = SqliteIncidentLedger(path)
    try:
        assert again.flag("remediation_enabled") == "false"
    finally:
        again.close()


def test_list_filters_by_agent_and_state_newest_first(ledger, clock):
    a = ingest(ledger, firing("CMO")).opened[0]
    clock.now += 1
    b = ingest(ledger, firing("CRO", "CAPACITY")).opened[0]
    ledger.update(b, state="escalated")
    assert [i.id for i in ledger.list()] == [b, a]
    assert [i.id for i in ledger.list(agent="CMO")] == [a]
    assert [i.id for i in ledger.list(state="escalated")] == [b]
    assert ledger.list(agent="CMO", state="escalated") == []
    assert [i.id for i in ledger.list(limit=1)] == [b]


def test_an_incident_round_trips_through_its_json_document(ledger):
    incident_id = ingest(ledger, firing(), source="signal").opened[0]
    ledger.update(incident_id, metrics={"successRate": 0.5}, playbooks_run=("A", "B"), trace_id="ab" * 16)
    incident = ledger.get(incident_id)
    assert incident.metrics == {"successRate": 0.5}
    assert incident.playbooks_run == ("A", "B")
    assert incident.as_dict()["alerts"][0]["fingerprint"] == "fp-CMO-TRANSIENT"


@pytest.mark.parametrize("gate", ["kill_switch", "canary", "dry_run"])
def test_a_repeat_notification_does_not_requeue_what_only_a_setting_can_lift(ledger, gate):
    incident_id = ingest(ledger, firing()).opened[0]
    ledger.update(incident_id, state="skipped", outcome="skipped", reason=f"{gate}: refused")
    result = ingest(ledger, firing())
    assert result.to_run == () and result.duplicates == (incident_id,)
    assert ledger.get(incident_id).state == "skipped"


# ------------------------------------------------------------------ conflicts: one incident per conflict

def claim(agent, directive="D-REV-1", status="firing", *others: AlertRef) -> AgentNotification:
    labels = {"alertname": "DirectiveClaimedByMultipleAgents", "agent": agent, "autonomy_class": "CONFLICT",
              "directive_id": directive, "severity": "warning"}
    return AgentNotification(agent, (AlertRef(f"fp-{agent}-claim", status, labels, "2025-08-18T15:02:11Z"),
                                     *others))


def symptom(agent) -> AlertRef:
    labels = {"alertname": "AgentAlignmentBelowSLO", "agent": agent, "autonomy_class": "CAPACITY"}
    return AlertRef(f"fp-{agent}-align", "firing", labels, "2025-08-18T15:02:15Z")


def test_a_conflict_between_two_agents_is_one_incident_listing_both_claimants(ledger):
    first = ingest(ledger, claim("CMO"))
    second = ingest(ledger, claim("CRO"))
    assert len(first.opened) == 1 and second.opened == () and second.to_run == ()
    [conflict] = ledger.list()
    assert conflict.conflict_key == "directive:D-REV-1" and conflict.claimants == ("CMO", "CRO")
    assert {a.labels["agent"] for a in conflict.alerts} == {"CMO", "CRO"}
    assert [i.id for i in ledger.list(agent="CRO")] == [conflict.id]  # listed under every claimant
    assert ledger.open_for("CRO") is None and ledger.conflicts_of("CRO") == [conflict]


def test_both_claimants_in_one_notification_open_one_conflict_incident(ledger):
    result = ingest(ledger, claim("CMO"), claim("CRO"))
    assert len(result.opened) == 1 and result.to_run == result.opened
    assert ledger.get(result.opened[0]).claimants == ("CMO", "CRO")


def test_a_claimants_other_alerts_are_its_own_incident(ledger):
    result = ingest(ledger, claim("CRO", "D-REV-1", "firing", symptom("CRO")))
    assert len(result.opened) == 2
    own, conflict = ledger.open_for("CRO"), ledger.conflicts_of("CRO")[0]
    assert [a.labels["alertname"] for a in own.alerts] == ["AgentAlignmentBelowSLO"]
    assert [a.labels["alertname"] for a in conflict.alerts] == ["DirectiveClaimedByMultipleAgents"]


def test_the_conflict_closes_only_when_no_claimant_has_its_alert_firing(ledger):
    conflict_id = ingest(ledger, claim("CMO"), claim("CRO")).opened[0]
    ledger.update(conflict_id, state="recovered", recovered_at=1.0, outcome="auto_resolved")
    assert ingest(ledger, claim("CMO", status="resolved")).closed == ()
    assert ledger.get(conflict_id).state == "recovered"
    # CRO's next notification no longer carries the alert at all (resolved and gone): the conflict is over.
    closed = ingest(ledger, AgentNotification("CRO", ())).closed
    assert [i.id for i in closed] == [conflict_id]
    assert ledger.get(conflict_id).outcome == "auto_resolved" and ledger.conflicts_of("CRO") == []


def test_the_database_holds_one_open_incident_per_conflict(ledger):
    ingest(ledger, claim("CMO"))
    with pytest.raises(sqlite3.IntegrityError):
        ledger._db.execute("INSERT INTO incidents (id, agent, state, doc, opened_at, conflict_key) "
                           "VALUES (?, ?, ?, ?, ?, ?)", ("x", "CRO", "open", "{}", 1.0, "directive:D-REV-1"))


def test_the_onset_of_an_incident_is_its_earliest_firing_alert(ledger):
    incident = ledger.get(ingest(ledger, firing()).opened[0])
    assert incident.onset_at == 1755529331.0  # 2025-08-18T15:02:11Z


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
    ledger = SqliteIncidentLedger(path)
    try:
        assert ledger.get("old-1").state == "escalated" and ledger.get("old-1").claimants == ()
        assert ledger._db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert ingest(ledger, claim("CRO")).opened  # the new columns and tables work
    finally:
        ledger.close()


def test_a_ledger_written_by_a_newer_receiver_is_refused_with_what_to_do(tmp_path):
    from webhook_receiver.ledger import LedgerError

    path = tmp_path / "incidents.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(LedgerError, match="newer receiver.*schema 7.*knows up to 2"):
        SqliteIncidentLedger(path)
