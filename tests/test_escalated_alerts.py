"""The AutonomyEscalated alert in Alertmanager says what the store says: a resolve queued for a closed
escalation never resolves a newer one of the same agent, the sweeper never re-fires a closed one and re-posts
open ones in batches only when due, and an escalation stored is counted even when its lease is lost while
delivering it."""
import time
from datetime import datetime

from tests.test_engine import failing_cmo
from tests.test_store_contract import firing
from webhook_receiver.engine.alert_outbox import REPOST_AFTER_SECONDS
from webhook_receiver.store import LeaseLost


def escalated(h, incident_id, cls="TRANSIENT"):
    return h.store.update(incident_id, state="escalated", outcome="escalated", classification=cls,
                          reason="AutoRemediationFailed")


def closed(h, incident_id):
    done = h.store.update(incident_id, state="closed", closed_at=time.time(), reason="alerts resolved")
    h.engine.on_closed([done])  # queues the resolve of its AutonomyEscalated in the outbox
    return done


def resolves(posted):
    return [a for a in posted if datetime.fromisoformat(a["endsAt"]).timestamp() <= time.time()]


def test_a_queued_resolve_is_not_posted_once_a_newer_escalation_of_the_agent_fires_under_its_labels(h):
    h.build()
    old = escalated(h, h.fire())
    closed(h, old.id)
    # Before the outbox posts the resolve, the agent fails again and is escalated again (same class).
    new_id = h.store.ingest("alertmanager", "{}", [firing("CMO", fingerprint="fp-again")]).opened[0]
    escalated(h, new_id)
    posted = len(h.am.posted)
    assert h.engine.outbox.drain() == 0 and len(h.am.posted) == posted  # the newer one stays firing
    closed(h, new_id)
    assert h.engine.outbox.drain() == 1
    [resolve] = resolves(h.am.posted[posted:])
    assert resolve["annotations"]["incident_id"] == new_id


def test_a_resolve_of_another_class_is_posted_while_the_agent_has_a_newer_escalation(h):
    h.build()
    old = escalated(h, h.fire(), cls="CAPACITY")
    closed(h, old.id)
    new_id = h.store.ingest("alertmanager", "{}", [firing("CMO", fingerprint="fp-again")]).opened[0]
    escalated(h, new_id, cls="TRANSIENT")  # another alert in Alertmanager: resolving the old one is right
    assert h.engine.outbox.drain() == 1
    [resolve] = resolves(h.am.posted)
    assert resolve["labels"]["escalated_class"] == "CAPACITY"


def test_the_outbox_posts_what_was_queued_during_its_stop(h):
    h.build()
    incident = escalated(h, h.fire())
    h.engine.start(workers=1, sweeper=False)
    h.engine.outbox.stop()  # its thread has ended; the receiver is still stopping
    closed(h, incident.id)  # a resolved notification answered meanwhile
    h.engine.stop()
    assert len(resolves(h.am.posted)) == 1


def test_the_sweeper_does_not_refire_an_escalation_closed_since_it_read_the_list(h, monkeypatch):
    h.build()
    incident = escalated(h, h.fire())
    h.prom.firing_alerts = {"CMO"}
    stale = h.store.open_incidents()  # read by the sweeper just before a resolved notification closed it
    closed(h, incident.id)
    h.engine.outbox.drain()
    monkeypatch.setattr(h.engine.sweeper.store, "open_incidents", lambda: stale)
    posted = len(h.am.posted)
    h.engine.sweep()
    assert h.am.posted[posted:] == []


def test_an_escalation_is_counted_once_stored_even_if_its_lease_is_lost_while_delivering_it(h, monkeypatch):
    h.build()
    failing_cmo(h)
    h.agents.unfixable.add("CMO")
    recorder, store = h.engine.recorder, h.engine.store
    update = store.update

    def deliver_then_lose_the_lease(incident, reason, payload):
        def fenced(incident_id, lease=None, **changes):
            if lease is not None:
                raise LeaseLost(incident_id)
            return update(incident_id, lease, **changes)
        monkeypatch.setattr(store, "update", fenced)  # another worker took the lease over meanwhile
        return ["escalation endpoint unreachable"]
    monkeypatch.setattr(recorder, "_deliver", deliver_then_lose_the_lease)
    incident = h.run(h.fire())
    assert incident.state == "escalated"
    assert h.metric("autonomy_escalations_total", reason="AutoRemediationFailed") == 1
    assert h.metric("autonomy_incident_outcomes_total", classification="TRANSIENT", outcome="escalated") == 1


def test_the_sweeper_reposts_open_escalations_in_batches_only_once_they_are_due(h, monkeypatch):
    h.build()
    agents = [f"agent-{n:03d}" for n in range(600)]
    opened = h.store.ingest("alertmanager", "{}", [firing(a) for a in agents]).opened
    for incident_id in opened:
        escalated(h, incident_id)
    h.prom.firing_alerts = set(agents)
    clock = [time.time()]
    monkeypatch.setattr(h.engine.sweeper.post_times, "clock", lambda: clock[0])
    h.engine.sweep()
    assert (h.am.requests, len(h.am.posted)) == (2, 600)  # 500 alerts per request, not one request each
    h.engine.sweep()
    assert h.am.requests == 2  # all active in Alertmanager for an hour: nothing is due
    clock[0] += REPOST_AFTER_SECONDS
    h.engine.sweep()
    assert (h.am.requests, len(h.am.posted)) == (4, 1200)


def test_an_escalation_posted_when_it_happened_is_not_due_at_the_next_sweep_and_a_failed_repost_stays_due(h):
    h.build()
    failing_cmo(h)
    h.agents.unfixable.add("CMO")
    assert h.run(h.fire()).state == "escalated"
    h.prom.firing_alerts = {"CMO"}
    requests = h.am.requests
    h.engine.sweep()
    assert h.am.requests == requests
    h.engine.sweeper.post_times.keep_only([])  # as after a restart: due at once
    h.am.down = True
    h.engine.sweep()
    h.am.down = False
    h.engine.sweep()
    assert h.am.requests == requests + 1 and h.am.posted[-1]["labels"]["agent"] == "CMO"
