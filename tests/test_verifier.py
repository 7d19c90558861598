"""The verifier: attempts wait for their verification as durable state, not in a worker; one poll looks at all of
them with one query per kind; a deadline ends a wait with its reason; a waiting attempt keeps its agent held and
resumes after a restart (graceful or not)."""
import re
from collections import Counter

import pytest

from devstack.polling import wait_until
from tests.test_engine import failing_cmo


def broken(h, agents):
    for agent in agents:
        h.prom.add(agent, "Content", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5)


def kinds(queries) -> Counter:
    """Queries by kind: the agent names in them blanked out."""
    return Counter(re.sub(r'agent=~?"[^"]*"', 'agent="…"', q) for q in queries)


def test_twenty_waiting_attempts_are_verified_by_one_poll_with_one_query_per_kind(h):
    h.build()
    agents = [f"agent-{n:02d}" for n in range(20)]
    broken(h, agents)
    ids = [h.fire(agent) for agent in agents]
    for incident_id in ids:
        work = h.engine.pool.run_one(incident_id)  # the steps run; the verification is handed over
        assert work.handed_over and h.store.get(incident_id).verifying["attempt"] == 1
    assert h.engine.verifier.waiting(ids[0]) and h.metric("autonomy_verifications_waiting") == 20
    assert h.metric("autonomy_remediations_in_flight") == 0  # no worker is held by a waiting attempt
    h.prom.queries.clear()
    assert h.engine.verifier.poll() == 20
    assert max(kinds(h.prom.queries).values()) == 1, kinds(h.prom.queries)  # one query per kind, for all twenty
    for incident_id in ids:
        assert h.store.get(incident_id).verifying["verdict"]["ok"] is True
        assert h.engine.process(incident_id)  # a worker records each verdict
    assert {h.store.get(i).outcome for i in ids} == {"auto_resolved"}
    assert len(h.lineage("auto_remediation")) == 20 and h.metric("autonomy_verifications_waiting") == 0


def test_a_waiting_attempt_keeps_its_agent_held_while_workers_take_other_agents(h):
    h.build()
    broken(h, ["agent-a", "agent-b"])
    first, second = h.fire("agent-a"), h.fire("agent-b")
    assert h.engine.pool.run_one(first).handed_over
    assert "agent-a" in h.store.leased_agents()  # held: nothing else may act on it while it is verified
    assert h.engine.pool.run_one(first) is None
    assert h.engine.pool.run_one(second).handed_over  # the worker was free for another agent at once
    assert h.store.leased_agents() == {"agent-a", "agent-b"}


def test_a_verification_that_never_holds_ends_at_its_deadline_with_why(h):
    # Long enough that the first poll comes before the deadline on a loaded machine (it ends the wait, not a sleep).
    h.build({"AUTOREM_MAX_ATTEMPTS": "1", "AUTOREM_VERIFY_TIMEOUT_SECONDS": "3"})
    failing_cmo(h)
    h.agents.unfixable.add("CMO")
    incident_id = h.fire()
    assert h.engine.pool.run_one(incident_id).handed_over
    deadline = h.store.get(incident_id).verifying["deadline"]
    assert h.engine.verifier.poll() == 0  # not yet: the agent still fails, the deadline has not passed
    wait_until(lambda: h.engine.verifier.poll() == 1, 30, "the deadline to end the wait")
    verdict = h.store.get(incident_id).verifying["verdict"]
    assert verdict["ok"] is False and verdict["at"] >= deadline and verdict["polls"] >= 2
    assert "still true" in verdict["reason"] or "criteria not met" in verdict["reason"]
    incident = h.run(incident_id)
    assert incident.state == "escalated" and h.lineage("auto_remediation")[0]["verification"]["ok"] is False


def test_a_waiting_verification_resumes_after_a_graceful_restart_with_its_attempt(h, tmp_path):
    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    assert h.engine.pool.run_one(incident_id).handed_over
    pending = h.store.get(incident_id).verifying
    h.close()  # a stop gives the waiting claim back; the attempt stays in the store
    h.build()
    assert h.store.get(incident_id).verifying == pending and h.store.leased_agents() == frozenset()
    incident = h.run(incident_id)
    assert incident.outcome == "auto_resolved" and incident.attempts == 1
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]  # the steps did not run again
    [line] = h.lineage("auto_remediation")
    assert line["ok"] is True and line["attempt"] == 1


def test_a_waiting_verification_is_taken_over_after_a_crash_once_its_lease_expires(h, monkeypatch):
    h.build({"AUTOREM_LEASE_SECONDS": "1"})
    failing_cmo(h)
    incident_id = h.fire()
    assert h.engine.pool.run_one(incident_id).handed_over
    monkeypatch.setattr(h.engine.verifier, "release_all", lambda: None)  # as a crash leaves it: still leased
    h.close()
    h.build({"AUTOREM_LEASE_SECONDS": "1"})
    assert h.engine.process(incident_id) is False  # the dead receiver's lease still holds it
    wait_until(lambda: h.engine.process(incident_id), 30, "the dead receiver's lease to expire")
    incident = h.store.get(incident_id)
    assert incident.outcome == "auto_resolved" and h.agents.actions() == ["restartAgent", "retryLastTask"]


def test_an_attempt_whose_playbook_is_gone_after_a_restart_is_not_verified_and_says_why(h):
    h.build()
    failing_cmo(h)
    incident_id = h.fire()
    assert h.engine.pool.run_one(incident_id).handed_over
    h.close()

    def renamed(doc):
        for playbook in doc["playbooks"]:
            if playbook["name"] == "RestartAndRetryTransient":
                playbook["name"] = "RestartAndRetryTransientV2"
    h.build(playbooks=renamed)
    h.engine.process(incident_id)
    [line] = h.lineage("auto_remediation")[:1]
    assert line["ok"] is False and line["playbook"] == "RestartAndRetryTransient"
    assert "no longer loaded" in line["verification"]["reason"]


def test_a_look_cut_short_by_the_deadline_is_not_reported_as_prometheus_unreachable():
    from webhook_receiver.alert_conditions import RuleCatalog
    from webhook_receiver.fleet_reader import PrometheusFleetReader
    from webhook_receiver.fleet_snapshot import PrometheusSnapshot
    from webhook_receiver.upstreams import DeadlinePassed, UpstreamError

    class Failing:
        def __init__(self, error):
            self.error = error

        def query(self, promql):
            raise self.error

    late = Failing(DeadlinePassed("the deadline passed before the upstream could answer"))
    with pytest.raises(DeadlinePassed):  # verification.look keeps the last look's reason for it
        PrometheusSnapshot(PrometheusFleetReader(late, RuleCatalog(late), 120, 25), ["CMO"]).view("CMO")
    down = Failing(UpstreamError("http://prometheus/api/v1/query: ConnectionError"))
    view = PrometheusSnapshot(PrometheusFleetReader(down, RuleCatalog(down), 120, 25), ["CMO"]).view("CMO")
    assert view.problem.startswith("prometheus unreachable")
