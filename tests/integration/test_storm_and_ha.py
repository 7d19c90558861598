"""Issue 7, items 2 and 3: an alert storm against the real receiver, and duplicates from clustered Alertmanagers.

The scenarios live in devstack/storm.py and devstack/ha_drill.py (bench/storm_and_ha.py runs them at full size:
10,000 alerts for 1,000 agents); here they run smaller and every property is asserted.

Storm: 2,000 firing alerts for 200 agents, 20 version-4 webhooks of 100 alerts (10 agents each), posted
by 8 client threads to `autonomy receiver` in its own process (waitress), AUTOREM_QUEUE_SIZE=50 and
AUTOREM_WORKERS=4; every 503 is retried with backoff until 200, as Alertmanager does. No Alertmanager
(its gate is skipped) and a Prometheus address where nothing listens: each remediation runs its two
actions, fails verification at once and is escalated (AUTOREM_MAX_ATTEMPTS=1).

HA: two real Alertmanagers clustered on 127.0.0.1, both from the repo's alertmanager.yml (timings x 1/30),
a real Prometheus with the repo's rules sending to both, the simulated fleet pushing to the exporter.
"""
import json
import socket
from collections import Counter

import pytest
import requests

from autonomy.settings import Settings
from devstack.ha_drill import ha_duplicates
from devstack.local_stack import ServedApp
from devstack.records import read_metrics
from devstack.storm import storm, storm_webhooks
from tests.conftest import real_binary
from webhook_receiver.app import create_app, shutdown

pytestmark = pytest.mark.integration

ALERTS, AGENTS, PER_WEBHOOK, QUEUE_SIZE, WORKERS = 2000, 200, 100, 50, 4
WEBHOOKS = ALERTS // PER_WEBHOOK


@pytest.fixture(scope="module")
def stormed(tmp_path_factory):
    return storm(tmp_path_factory.mktemp("storm"), alerts=ALERTS, agents=AGENTS, per_webhook=PER_WEBHOOK,
                 queue_size=QUEUE_SIZE, workers=WORKERS, clients=8)


def test_the_storm_is_accepted_after_503s_and_no_refused_request_left_anything_behind(stormed):
    r = stormed
    assert all(d.reply is not None for d in r.deliveries), r.log_tail
    assert not [d.transport_errors for d in r.deliveries if d.transport_errors]
    assert all(set(d.codes) <= {200, 503} and d.codes[-1] == 200 and d.codes.count(200) == 1
               for d in r.deliveries)
    assert r.accepted == WEBHOOKS
    assert r.refused >= 1, "the queue of 50 never filled: the test proves nothing about back-pressure"
    # The receiver counted the same answers the clients got.
    assert (r.receiver_answers["200"], r.receiver_answers["503"]) == (r.accepted, r.refused)

    # One stored notification per 200 reply, each exactly the body sent; a 503 stored nothing (a refused
    # attempt that had left a row would show up as a second copy of its webhook).
    assert len(r.stored_bodies) == r.accepted
    assert Counter(b["groupKey"] for b in r.stored_bodies) == Counter(w["groupKey"]
                                                                       for w in r.webhooks_by_index.values())
    sent = sorted(json.dumps(w, sort_keys=True) for w in r.webhooks_by_index.values())
    assert sorted(json.dumps(b, sort_keys=True) for b in r.stored_bodies) == sent
    assert r.seconds < 60


def test_every_alert_of_the_storm_is_recorded_on_its_agents_one_incident(stormed):
    r = stormed
    assert len(r.sent_fingerprints) == ALERTS and set(r.sent_fingerprints.values()) == {1}
    assert r.recorded_fingerprints == set(r.sent_fingerprints) == r.accepted_fingerprints
    assert r.lost == 0

    per_agent = Counter(i["agent"] for i in r.incidents)
    assert set(per_agent) == set(r.expected) and len(per_agent) == AGENTS
    assert set(per_agent.values()) == {1}, "an agent got more than one incident"
    assert r.incidents_opened_metric == AGENTS
    for incident in r.incidents:
        assert {a["fingerprint"] for a in incident["alerts"]} == r.expected[incident["agent"]]
        assert incident["source"] == "alertmanager"
        assert (incident["state"], incident["attempts"], incident["playbook"]) == (
            "escalated", 1, "RestartAndRetryTransient"), incident


def test_storm_remediations_run_at_most_workers_at_once_and_one_per_agent_at_a_time(stormed):
    r = stormed
    assert not r.hold_timed_out, "the 4 workers were never all inside an action while the queue was full"
    # Every worker ran an action at the same moment, and never more than AUTOREM_WORKERS did.
    assert r.max_concurrency == WORKERS
    assert r.overlaps == [], "two actions ran at once for one agent"
    # One remediation per incident: each agent got its playbook's two actions once.
    assert r.remediations == Counter({agent: 1 for agent in r.expected})
    assert r.action_calls == 2 * AGENTS
    runs = Counter(e["agent"] for e in r.lineage if e["event"] == "auto_remediation")
    assert runs == Counter({agent: 1 for agent in r.expected})
    escalations = Counter(e["agent"] for e in r.lineage if e["event"] == "escalation")
    assert escalations == runs


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    real_binary("prometheus")
    real_binary("alertmanager")
    return ha_duplicates(tmp_path_factory.mktemp("ha"), agent="CMO", replays=2, escalated_agent="COO")


def test_two_clustered_alertmanagers_route_the_agents_alert_to_the_receiver(ha):
    assert len(ha.cluster) == 2
    assert all(c["status"] == "ready" and len(c["peers"]) == 2 for c in ha.cluster)
    assert {p["address"] for p in ha.cluster[0]["peers"]} == {p["address"] for p in ha.cluster[1]["peers"]}
    firing = [n for n in ha.notifications if n["status"] == "firing"]
    # The repo's rules, evaluated by the real Prometheus, fired for the injected TIMEOUT.
    assert {a["labels"]["alertname"] for n in firing for a in n["alerts"]} & {"AgentTransientError", "AgentStatusError"}
    assert {a["labels"]["agent"] for n in firing for a in n["alerts"]} == {ha.agent}
    # Both peers are set to notify at once (peer timeout 0, as when gossip lags), so the receiver usually
    # gets one notification from each; HA dedup may still suppress one, hence the two replays.
    senders = ha.from_alertmanagers()
    assert sum(senders.values()) >= 1
    # externalURL is http://<host>:<web port>: the senders are the two Alertmanagers and nothing else.
    assert {url.rstrip("/").rsplit(":", 1)[1] for url in senders} <= {
        url.rsplit(":", 1)[1] for url in ha.alertmanager_urls}
    assert ha.replay_codes == [200, 200]
    assert len(firing) >= 1 + len(ha.replay_codes) + 1  # at least one from an Alertmanager, 2 replays, the late one


def test_duplicate_notifications_from_both_alertmanagers_run_exactly_one_remediation(ha):
    assert ha.action_calls == ["restartAgent", "retryLastTask"]
    runs = [e for e in ha.lineage if e["event"] == "auto_remediation"]
    assert len(runs) == 1 and runs[0]["ok"] is True and runs[0]["playbook"] == "RestartAndRetryTransient"
    assert ha.duplicate_remediations == 0

    remediated = [i for i in ha.incidents if i["playbooks_run"]]
    assert len(remediated) == 1
    incident = remediated[0]
    assert (incident["state"], incident["outcome"], incident["attempts"]) == ("closed", "auto_resolved", 1)
    # The replays, sent while that incident was open, were absorbed by it.
    assert all(reply["opened"] == [] and reply["duplicates"] == [incident["id"]] for reply in ha.replay_replies)
    # Never two incidents open at once for the agent.
    spans = sorted((i["opened_at"], i["closed_at"]) for i in ha.incidents)
    assert all(closed <= next_opened for (_, closed), (next_opened, _) in zip(spans, spans[1:]))


def test_a_firing_notification_replayed_after_recovery_runs_nothing(ha):
    assert ha.late_replay_code == 200
    late = set(ha.late_replay_reply["opened"]) | set(ha.late_replay_reply["duplicates"])
    assert late
    for incident in (i for i in ha.incidents if i["id"] in late):
        assert incident["state"] == "closed" and incident["playbooks_run"] == []
        events = {e["event"] for e in ha.lineage if e.get("incident_id") == incident["id"]}
        assert events <= {"no_action", "remediation_refused"}


def test_an_unfixable_fault_under_ha_runs_max_attempts_once_and_escalates_once(ha):
    # COO's alerts keep coming from the Alertmanager that does not hold AutonomyEscalated (see below);
    # the escalated incident absorbs them: no third attempt, no second incident.
    [incident] = ha.escalated_incidents
    assert (incident["state"], incident["attempts"], incident["outcome"]) == ("escalated", 2, "escalated")
    assert [e["attempt"] for e in ha.escalated_lineage if e["event"] == "auto_remediation"] == [1, 2]
    assert len([e for e in ha.escalated_lineage if e["event"] == "escalation"]) == 1
    assert True in ha.escalated_alert_in  # the receiver's AUTOREM_ALERTMANAGER_URL got it


def test_the_escalation_alert_reaches_every_alertmanager_of_the_cluster(ha):
    assert ha.escalated_alert_in == [True, True]


def test_a_notification_for_more_agents_than_the_queue_holds_is_accepted_by_an_idle_receiver(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    settings = Settings.from_env({"AUTOREM_QUEUE_SIZE": str(QUEUE_SIZE), "AUTOREM_ALERTMANAGER_URL": "",
                                  "AUTOREM_PROMETHEUS_URL": nowhere, "AUTOREM_ACTIONS_BASE_URL": nowhere,
                                  "AUTOREM_DRY_RUN": "true", "AUTOREM_DATA_DIR": str(tmp_path)})
    app = create_app({"SETTINGS": settings, "INSECURE": True})
    try:
        with ServedApp(app) as server:
            # One Alertmanager group holding QUEUE_SIZE + 1 agents (e.g. a route grouped by alertname).
            [body] = storm_webhooks(alerts=QUEUE_SIZE + 1, agents=QUEUE_SIZE + 1, per_webhook=QUEUE_SIZE + 1)
            codes: list[int] = []
            while len(codes) < 3 and 200 not in codes:
                # Idle before every retry: nothing queued, nothing running, so waiting longer cannot help.
                metrics = read_metrics(server.url)
                assert metrics[("autonomy_work_queue_depth", ())] == 0
                assert metrics[("autonomy_remediations_in_flight", ())] == 0
                codes.append(requests.post(server.url + "/api/v1/alerts", json=body, timeout=30).status_code)
            assert codes[-1] == 200, codes
    finally:
        shutdown(app)
        closed.close()
