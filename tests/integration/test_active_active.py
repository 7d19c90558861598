"""Issue 17: several receivers, one truth. Two `autonomy receiver` processes share one real PostgreSQL ledger
behind two real clustered Alertmanagers, each Alertmanager sending every notification to both receivers.

Storm: 1,000 agents' TRANSIENT alerts posted into both Alertmanagers (as an HA pair of Prometheus servers does);
every group reaches both receivers from both Alertmanagers, again at every repeat, and the receivers' small
shared work queue answers 503 so Alertmanager retries. Actions go to a counting agents server; verification
reads a Prometheus address where nothing listens, so each remediation fails fast and is escalated
(AUTOREM_MAX_ATTEMPTS=1): the point is one remediation per incident, however many copies arrived, and that
nothing is lost.

Kill: CMO's restartAgent blocks; the receiver holding CMO's lease (read from the ledger) is SIGKILLed; the other
takes the lease over when it expires, re-runs the attempt, and verifies the recovery on the real Prometheus.
"""
from __future__ import annotations

import json
import signal
import socket
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import requests

from devstack.drills import every_page
from devstack.local_stack import ServedApp
from devstack.polling import wait_until, wait_while_progressing
from devstack.records import read_lineage, read_metrics
from devstack.storm import CountingAgents
from tests.conftest import real_binary
from tests.integration.receiver_process import ScriptedAgents
from tests.integration.receiver_replicas import ReceiverReplicas, SharedStoreLayer
from webhook_receiver.store.postgres_store import PostgresIncidentStore

# The storm fixture runs 1,000 remediations through two processes and two Alertmanagers on two cores.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

STORM_AGENTS, WORKERS, QUEUE_SIZE = 1000, 4, 300
SETTLE = 600.0  # the kill test's wait
STORM_SETTLE, STALL = 1500.0, 180.0  # the storm's, on a loaded machine; it fails once nothing moved for STALL s


def _binaries():
    real_binary("prometheus")
    real_binary("alertmanager")


def storm_alerts(agents: int) -> list[dict]:
    labels = [{"alertname": "AgentTransientError", "agent": f"storm-{n:04d}", "autonomy_class": "TRANSIENT",
               "severity": "warning"} for n in range(agents)]
    # Firing for the whole test: without endsAt, Alertmanager would resolve them after its resolve_timeout.
    ends = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    return [{"labels": lab, "annotations": {"summary": "storm"}, "generatorURL": "http://prometheus.invalid/graph",
             "endsAt": ends} for lab in labels]


def _sum(metrics_pages: list[dict], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for page in metrics_pages for (n, lab), v in page.items() if n == name and want <= set(lab))


@pytest.fixture(scope="module")
def storm(tmp_path_factory, postgres_server):
    _binaries()
    url = postgres_server.create_database()
    counting = CountingAgents(2 * WORKERS, hold_seconds=3.0)
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound, not listening: Prometheus is "down"
    closed.bind(("127.0.0.1", 0))
    seen: dict = {}
    try:
        with ServedApp(counting.app, threads=4 * WORKERS + 8) as agents_server:
            env = {"AUTOREM_QUEUE_SIZE": str(QUEUE_SIZE), "AUTOREM_WORKERS": str(WORKERS),
                   "AUTOREM_ESCALATION_URL": "", "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{closed.getsockname()[1]}",
                   # Alertmanager, busy sending the storm on a loaded machine, may take many seconds to answer a
                   # gate's question; verification, on a Prometheus that is down, fails at its own deadline.
                   "AUTOREM_GATE_TIMEOUT_SECONDS": "120", "AUTOREM_VERIFY_TIMEOUT_SECONDS": "1",
                   "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.25",
                   "AUTOREM_MAX_ATTEMPTS": "1", "AUTOREM_ACTIONS_BASE_URL": agents_server.url,
                   "AUTOREM_LEASE_SECONDS": "10", "AUTO_REMEDIATE": "true",
                   # A group that waited behind 503s arrives minutes after its alert started; late arrivals
                   # need samples newer than themselves, and this Prometheus is down: they would be skipped.
                   "AUTOREM_LATE_NOTIFICATION_SECONDS": "3600"}
            replicas = ReceiverReplicas(tmp_path_factory.mktemp("storm"), url, env, replicas=2, time_factor=1 / 5)
            with_replicas = replicas.start()
            try:
                alerts = storm_alerts(STORM_AGENTS)
                seen["agents"] = {a["labels"]["agent"] for a in alerts}
                for start in range(0, len(alerts), 100):
                    with_replicas.post_alerts(alerts[start:start + 100])

                def refused() -> None:  # the first actions are held until a receiver has answered a 503
                    wait_until(lambda: _sum([read_metrics(r.url) for r in replicas.receivers],
                                            "autonomy_webhook_requests_total", endpoint="alerts", code="503") > 0,
                               120, "a receiver to refuse a notification (work queue full)")
                    counting.queue_full.set()
                watcher = threading.Thread(target=refused, daemon=True)
                watcher.start()

                store = PostgresIncidentStore(url)
                try:
                    def standing() -> dict:
                        incidents = store.list(limit=STORM_AGENTS + 10)
                        states = Counter(":".join(filter(None, (i.state, i.state_reason))) for i in incidents)
                        return {"incidents": len(incidents), "states": dict(sorted(states.items())),
                                "unsettled": sum(i.state in ("open", "remediating") for i in incidents),
                                "queued": store.queued_count(), "leased": len(store.leased_agents())}

                    def finished(now: dict) -> bool:
                        return now["incidents"] >= STORM_AGENTS and not (now["unsettled"] or now["queued"]
                                                                         or now["leased"])
                    # How long 1,000 remediations take depends on the machine's load: wait while they move.
                    wait_while_progressing(standing, finished, STALL, STORM_SETTLE,
                                           "every storm incident to be remediated")
                    seen["incidents"] = [i.as_dict() for i in store.list(limit=10 * STORM_AGENTS)]
                    # Kept beside the receivers' logs, for whoever reads a failure.
                    (replicas.workdir / "incidents.json").write_text(json.dumps(seen["incidents"], default=str))
                    seen["bodies"], after = [], 0
                    while page := store.notifications(after=after, limit=1000):
                        seen["bodies"] += [json.loads(n.body) for n in page]
                        after = page[-1].id
                finally:
                    store.close()
                seen["metrics"] = [read_metrics(r.url) for r in replicas.receivers]
                seen["ready"] = [requests.get(r.url + "/readyz", timeout=10).json() for r in replicas.receivers]
            finally:
                replicas.stop()
            seen["lineage"] = [read_lineage(r.data_dir) for r in replicas.receivers]
            seen["overlaps"], seen["remediations"] = list(counting.overlaps), counting.remediations()
            seen["max_in_flight"] = counting.max_in_flight
    finally:
        closed.close()
        postgres_server.drop_database(url)
    return seen


class TestStormOnTwoReceivers:
    def test_every_agent_has_one_incident_and_every_alert_is_recorded(self, storm):
        per_agent = Counter(i["agent"] for i in storm["incidents"])
        assert set(per_agent) == storm["agents"] and set(per_agent.values()) == {1}
        recorded = {a["labels"].get("agent") for body in storm["bodies"] for a in body.get("alerts", [])}
        assert storm["agents"] <= recorded  # nothing lost: every agent's alert is in a stored notification
        for incident in storm["incidents"]:
            assert (incident["state"], incident["attempts"], incident["playbook"]) == (
                "escalated", 1, "RestartAndRetryTransient"), incident

    def test_each_incident_was_remediated_once_however_many_copies_arrived(self, storm):
        assert storm["remediations"] == Counter({agent: 1 for agent in storm["agents"]})
        assert storm["overlaps"] == []  # never two actions on one agent at once, across both receivers
        copies = Counter(a["fingerprint"] for body in storm["bodies"] for a in body.get("alerts", [])
                         if a["labels"].get("agent") in storm["agents"])
        assert sum(1 for n in copies.values() if n > 1) > STORM_AGENTS // 2, "few duplicates: the test proves little"
        runs = Counter(e["incident_id"] for lines in storm["lineage"] for e in lines
                       if e["event"] == "auto_remediation")
        assert set(runs.values()) == {1} and len(runs) == STORM_AGENTS

    def test_both_receivers_took_work_and_the_full_queue_made_alertmanager_retry(self, storm):
        done = [sum(1 for e in lines if e["event"] == "auto_remediation") for lines in storm["lineage"]]
        assert all(n > 0 for n in done), done
        assert _sum(storm["metrics"], "autonomy_webhook_requests_total", endpoint="alerts", code="503") > 0
        assert storm["max_in_flight"] <= 2 * WORKERS

    def test_both_receivers_report_the_shared_store_ready(self, storm):
        for ready in storm["ready"]:
            assert ready["checks"]["store"] is True and ready["store"].startswith("postgresql ")
            assert "password" not in ready["store"]


# ---------------------------------------------------------------------------------------------------------

AGENTS = {"CMO": "Marketing", "COO": "Operations"}


def _incident(replicas: ReceiverReplicas, agent: str) -> dict | None:
    receiver = next(r for r in replicas.receivers if r.alive())
    found = receiver.incidents(agent)
    return found[-1] if found else None


@pytest.fixture(scope="module")
def killed(tmp_path_factory, postgres_server):
    _binaries()
    url = postgres_server.create_database()
    agents = ScriptedAgents(AGENTS)
    release = agents.block("CMO", "restartAgent", calls=(1,))
    seen: dict = {}
    try:
        with SharedStoreLayer(tmp_path_factory.mktemp("kill"), agents, url) as layer:
            replicas = layer.replicas
            agents.set("CMO", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
            agents.wait_entered("CMO", "restartAgent", 1)
            incident = _incident(replicas, "CMO")
            seen["incident_id"] = incident["id"]
            holder = replicas.holder_of(incident["id"])
            assert holder is not None, replicas.lease_owners()
            seen["tiles"] = [{k: v for k, v in read_metrics(r.url).items() if k[0].startswith("autonomy_agent_state")}
                             for r in replicas.receivers]
            survivor = next(r for r in replicas.receivers if r is not holder)
            seen["exit_code"] = holder.kill()
            seen["killed_lineage"] = (holder.data_dir / "decision_lineage.jsonl").read_bytes() if (
                holder.data_dir / "decision_lineage.jsonl").exists() else b""
            agents.wait_entered("CMO", "restartAgent", 2)  # the survivor re-attempts once the lease expired
            wait_until(lambda: (_incident(replicas, "CMO") or {}).get("state") == "closed", SETTLE,
                       "CMO's incident to be resolved by the surviving receiver")
            seen["incident"] = survivor.incident(incident["id"])
            seen["survivor_lineage"] = every_page(
                lambda params: survivor.call("GET", "/api/v1/lineage", params=params), "entries")["entries"]
            seen["survivor_file"] = read_lineage(survivor.data_dir)
            seen["entered"] = dict(agents.entered)
            # The kill switch flipped on one receiver is what the other reads before its next step.
            reply = survivor.call("PUT", "/api/v1/remediation", json={"enabled": False, "reason": "drill"})
            seen["switch_put"] = reply.status_code
            holder.start()
            seen["switch_other"] = holder.call("GET", "/api/v1/remediation").json()
            release.set()
    finally:
        postgres_server.drop_database(url)
    return seen


class TestReceiverKilledMidPlaybookOnASharedStore:
    def test_the_other_receiver_finishes_the_incident_after_the_lease(self, killed):
        assert killed["exit_code"] == -signal.SIGKILL
        incident = killed["incident"]
        assert (incident["state"], incident["outcome"], incident["attempts"]) == ("closed", "auto_resolved", 1)
        assert killed["entered"][("CMO", "restartAgent")] == 2  # one cut off by the kill, one re-attempt
        assert killed["entered"][("CMO", "retryLastTask")] == 1

    def test_the_lineage_has_the_attempt_once_and_nothing_torn(self, killed):
        raw = killed["killed_lineage"]
        assert raw == b"" or raw.endswith(b"\n")
        assert all(isinstance(json.loads(line), dict) for line in raw.splitlines())
        killed_runs = [json.loads(line) for line in raw.splitlines()
                       if json.loads(line).get("event") == "auto_remediation"]
        runs = [e for e in killed["survivor_lineage"] if e["event"] == "auto_remediation"
                and e["incident_id"] == killed["incident_id"]]
        assert [(e["attempt"], e["ok"]) for e in runs] == [(1, True)] and not killed_runs
        file_runs = [e for e in killed["survivor_file"] if e["event"] == "auto_remediation"]
        assert [e["incident_id"] for e in file_runs] == [killed["incident_id"]]

    def test_the_kill_switch_set_on_one_receiver_holds_on_the_other(self, killed):
        assert killed["switch_put"] == 200
        assert killed["switch_other"]["enabled"] is False and killed["switch_other"]["reason"] == "drill"

    def test_both_receivers_export_the_same_tile_states_from_the_store(self, killed):
        first, second = killed["tiles"]  # read mid-playbook, the lease held by one of them
        assert first == second
        assert first[("autonomy_agent_state", (("agent", "CMO"), ("autonomy_agent_state", "recovering")))] == 1
