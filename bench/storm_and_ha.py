"""Benchmark: an alert storm against the real receiver, and two clustered Alertmanagers notifying it.

Two scenarios, both on loopback with real processes (nothing mocked):

* `storm`: ALERTS firing alerts for AGENTS agents, posted as Alertmanager webhooks (payload version 4,
  100 alerts each) by several client threads to `autonomy receiver` running in its own process. The
  receiver's work queue is small, so it answers 503 and the clients retry with backoff, as Alertmanager
  does, until 200. Remediation actions go to a counting agents server that measures how many run at
  once, and whether two ever ran at once for one agent. Verification reads a Prometheus address where
  nothing listens, so every attempt fails fast and is escalated: the point is the bounded concurrency
  and that nothing is lost, not the recovery.
* `ha_duplicates`: two real Alertmanagers clustered over gossip on 127.0.0.1, both routing to the same
  receiver with the repo's alertmanager.yml; a real Prometheus (the repo's rules) sending to both; the
  simulated fleet pushing to the exporter. One agent's fault is seen by both Alertmanagers; the
  notification is also replayed as retries would, and once more after recovery. The receiver must
  run one remediation.

`run(full)` returns the figures (bench/run.py prints them); tests/integration/test_storm_and_ha.py
runs the same scenarios at smaller sizes and asserts on every detail.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests
from flask import Flask, jsonify
from prometheus_client.parser import text_string_to_metric_families

from devstack.checkout import PLAYBOOKS_FILE
from devstack.layer_stack import StackLifecycle
from devstack.local_stack import AlertmanagerProcess, PrometheusProcess, ReceiverProcess, ServedApp, free_port
from devstack.polling import DeadlineExceeded, wait_until
from devstack.stack_config import alertmanager_config, prometheus_config

LEDGER_FILE = "incidents.sqlite3"
LINEAGE_FILE = "decision_lineage.jsonl"
TRANSIENT_ALERTS = ("AgentTransientError", "AgentStatusError", "AgentSilent")
FINISHED = ("recovered", "escalated", "skipped", "closed")


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit fingerprint of a label set (Alertmanager's are the same shape)."""
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by (sample name, sorted labels)."""
    reply = requests.get(url + "/metrics", timeout=30)
    reply.raise_for_status()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def read_lineage(data_dir: Path) -> list[dict]:
    path = data_dir / LINEAGE_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def read_ledger(data_dir: Path) -> tuple[list[str], list[dict]]:
    """(notification bodies, incident documents) of the receiver's ledger, read without writing."""
    db = sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True, timeout=30)
    try:
        bodies = [row[0] for row in db.execute("SELECT body FROM notifications ORDER BY id")]
        docs = [json.loads(row[0]) for row in db.execute("SELECT doc FROM incidents ORDER BY opened_at")]
    finally:
        db.close()
    return bodies, docs


# -- the storm ------------------------------------------------------------------------------------------------
def storm_webhooks(alerts: int, agents: int, per_webhook: int = 100) -> list[dict]:
    """ALERTS firing TRANSIENT alerts spread evenly over AGENTS, as version-4 webhooks of PER_WEBHOOK alerts.

    An agent's alerts travel together in one webhook, as one Alertmanager group's do, so each webhook
    opens PER_WEBHOOK / (ALERTS / AGENTS) incidents at once.
    """
    per_agent, rest = divmod(alerts, agents)
    if rest or per_webhook % per_agent:
        raise ValueError("alerts must be a multiple of agents, and per_webhook of alerts per agent")
    agents_per_webhook = per_webhook // per_agent
    starts_at = datetime.now(timezone.utc).isoformat()
    names = [f"storm-{i:05d}" for i in range(agents)]
    webhooks = []
    for index, first in enumerate(range(0, agents, agents_per_webhook)):
        items = []
        for agent in names[first:first + agents_per_webhook]:
            for k in range(per_agent):
                name = TRANSIENT_ALERTS[k % len(TRANSIENT_ALERTS)]
                labels = {"alertname": name, "agent": agent, "autonomy_class": "TRANSIENT",
                          "severity": "critical" if name == "AgentSilent" else "warning", "shard": str(k)}
                items.append({"status": "firing", "labels": labels,
                              "annotations": {"summary": f"{name} on {agent}"},
                              "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                              "generatorURL": "http://prometheus.invalid/graph", "fingerprint": fingerprint(labels)})
        webhooks.append({"version": "4", "status": "firing", "receiver": "autonomy-receiver",
                         "groupKey": f'{{}}/{{autonomy_class=~"TRANSIENT"}}:{{storm="{index}"}}',
                         "groupLabels": {"storm": str(index)},
                         "commonLabels": {"autonomy_class": "TRANSIENT"}, "commonAnnotations": {},
                         "externalURL": "http://storm-generator.invalid", "truncatedAlerts": 0, "alerts": items})
    return webhooks


class CountingAgents:
    """The agents' action endpoints for the storm: every call answers `done`, and concurrency is measured.

    The first calls are held until WORKERS calls are in progress at once and the receiver has refused a
    webhook (see `queue_full`), at most HOLD_SECONDS (under the playbook's 5 s action timeout): this
    makes both the full-width concurrency and the 503 certain instead of likely, on any machine.
    """

    def __init__(self, workers: int, hold_seconds: float = 4.0):
        self.workers, self.hold_seconds = workers, hold_seconds
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.running: Counter = Counter()
        self.overlaps: list[str] = []
        self.calls: Counter = Counter()
        self.all_workers_in_actions = threading.Event()
        self.queue_full = threading.Event()
        self.hold_timed_out = False
        self._hold_deadline: float | None = None
        self.app = Flask("storm-agents")
        self.app.add_url_rule("/agents/<agent>/actions/<action>", view_func=self.action, methods=["POST"])

    def action(self, agent: str, action: str):
        with self.lock:
            self.calls[(agent, action)] += 1
            if self.running[agent]:
                self.overlaps.append(f"{agent}:{action}")
            self.running[agent] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.in_flight >= self.workers:
                self.all_workers_in_actions.set()
            if self._hold_deadline is None:
                self._hold_deadline = time.monotonic() + self.hold_seconds
            deadline = self._hold_deadline
        try:
            for event in (self.all_workers_in_actions, self.queue_full):
                if not event.wait(max(0.0, deadline - time.monotonic())):
                    self.hold_timed_out = True
                    break
            return jsonify({"done": True})
        finally:
            with self.lock:
                self.in_flight -= 1
                self.running[agent] -= 1

    def remediations(self) -> Counter:
        """Playbook runs per agent: RestartAndRetryTransient's first step counted."""
        with self.lock:
            return Counter({agent: n for (agent, action), n in self.calls.items() if action == "restartAgent"})


def bench_receiver(workdir: Path, env: dict[str, str]) -> ReceiverProcess:
    """`autonomy receiver` in a process of its own, as deployed, with a fresh token and data directory."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**env, "AUTOREM_WEBHOOK_TOKEN": secrets.token_urlsafe(24),
           "AUTOREM_PLAYBOOKS_FILE": str(PLAYBOOKS_FILE)}
    return ReceiverProcess(workdir / "receiver", env, workdir / "receiver.log")


@dataclass
class Delivery:
    """One webhook's delivery: every attempt's answer, until the 200."""

    index: int
    codes: list[int] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    reply: dict | None = None
    accepted_at: float = 0.0


def deliver(session: requests.Session, url: str, token: str, index: int, body: bytes,
            on_refused: threading.Event, rng: random.Random, give_up_at: float) -> Delivery:
    """POST BODY until 200, retrying 503 and transport errors with jittered exponential backoff.

    Alertmanager's notifier does the same (exponential backoff, randomised); the waits here are the
    client's retry policy, not synchronisation. Any other answer ends the delivery.
    """
    delivery, delay = Delivery(index), 0.05
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    while time.monotonic() < give_up_at:
        try:
            reply = session.post(url, data=body, headers=headers, timeout=60)
        except requests.RequestException as exc:
            delivery.transport_errors.append(type(exc).__name__)
        else:
            delivery.codes.append(reply.status_code)
            if reply.status_code == 200:
                delivery.reply, delivery.accepted_at = reply.json(), time.monotonic()
                return delivery
            if reply.status_code != 503:
                return delivery
            on_refused.set()
        time.sleep(delay * rng.uniform(0.5, 1.5))
        delay = min(delay * 1.5, 1.0)
    return delivery


@dataclass
class StormResult:
    """What the storm did, from the clients, the agents server, the receiver's metrics and its ledger."""

    alerts: int
    agents: int
    queue_size: int
    workers: int
    deliveries: list[Delivery]
    seconds: float                    # first POST to the last 200
    drain_seconds: float              # first POST to every incident finished
    expected: dict[str, set[str]]     # agent -> its alerts' fingerprints
    sent_fingerprints: Counter        # fingerprint -> webhooks carrying it (one each)
    stored_bodies: list[dict]         # the ledger's notifications
    incidents: list[dict]             # the ledger's incidents
    lineage: list[dict]
    receiver_answers: dict[str, float]   # autonomy_webhook_requests_total{endpoint="alerts"} by code
    incidents_opened_metric: float
    max_concurrency: int
    overlaps: list[str]
    hold_timed_out: bool
    remediations: Counter             # agent -> playbook runs seen by the agents server
    action_calls: int
    log_tail: str = ""
    webhooks_by_index: dict[int, dict] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(1 for d in self.deliveries for c in d.codes if c == 200)

    @property
    def refused(self) -> int:
        return sum(1 for d in self.deliveries for c in d.codes if c == 503)

    @property
    def recorded_fingerprints(self) -> set[str]:
        return {a["fingerprint"] for body in self.stored_bodies for a in body["alerts"]}

    @property
    def accepted_fingerprints(self) -> set[str]:
        """Fingerprints of the alerts whose webhook got a 200."""
        bodies = self.webhooks_by_index
        return {a["fingerprint"] for d in self.deliveries if d.reply is not None for a in bodies[d.index]["alerts"]}

    @property
    def lost(self) -> int:
        return len(self.accepted_fingerprints - self.recorded_fingerprints)

    def figures(self) -> dict:
        return {"storm_alerts": self.alerts, "storm_agents": self.agents,
                "storm_recorded": len(self.recorded_fingerprints), "storm_lost": self.lost,
                "storm_503": self.refused, "storm_200": self.accepted, "storm_seconds": round(self.seconds, 2),
                "storm_drain_seconds": round(self.drain_seconds, 2), "storm_max_concurrency": self.max_concurrency,
                "storm_workers": self.workers, "storm_queue_size": self.queue_size,
                "storm_incidents": len(self.incidents), "storm_per_agent_overlaps": len(self.overlaps)}


def storm(workdir: Path, alerts: int = 2000, agents: int = 200, per_webhook: int = 100, queue_size: int = 50,
          workers: int = 4, clients: int = 8, verify_timeout: float = 0.1, deadline_s: float = 600.0) -> StormResult:
    """Post the storm to a fresh receiver process, wait for every incident to finish, and read it all back."""
    workdir = Path(workdir)
    webhooks = storm_webhooks(alerts, agents, per_webhook)
    expected: dict[str, set[str]] = {}
    sent = Counter()
    for body in webhooks:
        for alert in body["alerts"]:
            expected.setdefault(alert["labels"]["agent"], set()).add(alert["fingerprint"])
            sent[alert["fingerprint"]] += 1
    bodies = [json.dumps(b).encode("utf-8") for b in webhooks]
    counting = CountingAgents(workers)
    # Bound but not listening: connections are refused at once, and no other process can take the port.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    try:
        with ServedApp(counting.app, threads=4 * workers + 8) as agents_server:
            env = {"AUTOREM_QUEUE_SIZE": str(queue_size), "AUTOREM_WORKERS": str(workers),
                   "AUTOREM_ALERTMANAGER_URL": "", "AUTOREM_ESCALATION_URL": "",
                   "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{closed.getsockname()[1]}",
                   "AUTOREM_VERIFY_TIMEOUT_SECONDS": f"{verify_timeout:g}", "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.05",
                   "AUTOREM_MAX_ATTEMPTS": "1", "AUTOREM_ACTIONS_BASE_URL": agents_server.url,
                   "AUTO_REMEDIATE": "true"}
            with bench_receiver(workdir, env) as receiver:
                url = receiver.url + "/api/v1/alerts"
                local = threading.local()

                def one(index: int) -> Delivery:
                    if not hasattr(local, "session"):
                        local.session = requests.Session()
                    return deliver(local.session, url, receiver.token, index, bodies[index], counting.queue_full,
                                   random.Random(index), started + deadline_s)

                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="alertmanager") as pool:
                    deliveries = list(pool.map(one, range(len(bodies))))
                last_accept = max((d.accepted_at for d in deliveries if d.reply), default=started)

                def drained() -> bool:
                    m = read_metrics(receiver.url)
                    opened = m.get(("autonomy_incidents_total", (("source", "alertmanager"),)), 0)
                    busy = (m.get(("autonomy_remediations_in_flight", ()), 1)
                            + m.get(("autonomy_work_queue_depth", ()), 1))
                    if opened < len(expected) or busy:
                        return False
                    return all(not requests.get(receiver.url + "/api/v1/incidents", params={"state": s},
                                                timeout=30).json()["incidents"] for s in ("open", "remediating"))

                if all(d.reply for d in deliveries):
                    wait_until(drained, max(120.0, agents * 2.0 / workers), "every storm incident to finish",
                               interval=0.2)
                drain_done = time.monotonic()
                metrics = read_metrics(receiver.url)
                answers = {code: v for (name, labels), v in metrics.items()
                           if name == "autonomy_webhook_requests_total" and ("endpoint", "alerts") in labels
                           for key, code in labels if key == "code"}
                opened_metric = metrics.get(("autonomy_incidents_total", (("source", "alertmanager"),)), 0.0)
            log_tail = receiver.log_tail()
    finally:
        closed.close()
    stored, incidents = read_ledger(receiver.data_dir)
    return StormResult(alerts, agents, queue_size, workers, deliveries, last_accept - started, drain_done - started,
                       expected, sent, [json.loads(b) for b in stored], incidents, read_lineage(receiver.data_dir),
                       answers, opened_metric, counting.max_in_flight, list(counting.overlaps),
                       counting.hold_timed_out, counting.remediations(), sum(counting.calls.values()), log_tail,
                       webhooks_by_index=dict(enumerate(webhooks)))


# -- two clustered Alertmanagers -----------------------------------------------------------------------------------
class HaStack(StackLifecycle):
    """Fleet, exporter and receiver in-process; two clustered Alertmanagers and one Prometheus as processes."""

    def __init__(self, workdir: Path, time_factor: float = 1 / 30, peer_timeout_ms: int | None = None):
        from autonomy.settings import Secret
        from devstack.fleet import SimulatedFleet

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.time_factor = time_factor
        # Alertmanager's 15 s, compressed like every other duration, unless given: 0 makes both peers
        # send at once, before either's notification log has gossiped (what a slow or cut gossip does).
        self.peer_timeout_ms = int(15000 * time_factor) if peer_timeout_ms is None else peer_timeout_ms
        self.fleet = SimulatedFleet()
        self.push_token = Secret("AUTOREM_EXPORTER_TOKEN", secrets.token_urlsafe(24))
        self.webhook_token = Secret("AUTOREM_WEBHOOK_TOKEN", secrets.token_urlsafe(24))
        self.data_dir = self.workdir / "receiver"
        self._started: list[Any] = []
        self.receiver_app = None
        self.receiver = self.exporter = self.prometheus = None
        self.alertmanagers: list[AlertmanagerProcess] = []
        self.heartbeat = None

    def _settings(self, prometheus_port: int, alertmanager_urls: str, fleet_url: str):
        from autonomy.settings import Settings

        f = self.time_factor
        return Settings.from_env({
            "AUTOREM_VERIFY_TIMEOUT_SECONDS": f"{120 * f * 2:g}", "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.25",
            "AUTOREM_SWEEP_SECONDS": f"{max(0.5, 30 * f):g}", "AUTOREM_REOPEN_GRACE_SECONDS": f"{300 * f:g}",
            "AUTOREM_AGENT_SILENT_SECONDS": f"{120 * f:g}", "AUTOREM_ATTEMPT_BACKOFF_SECONDS": f"{30 * f:g}",
            "AUTO_REMEDIATE": "true",
            "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}",
            "AUTOREM_ALERTMANAGER_URL": alertmanager_urls,
            "AUTOREM_ACTIONS_BASE_URL": fleet_url, "AUTOREM_DATA_DIR": str(self.data_dir)})

    def _cluster_args(self, own: int, peer: int) -> list[str]:
        f = self.time_factor
        return [f"--cluster.listen-address=127.0.0.1:{own}", f"--cluster.advertise-address=127.0.0.1:{own}",
                f"--cluster.peer=127.0.0.1:{peer}",
                # Gossip fast so the cluster settles in about 2 s (settling waits 3 stable polls of 10 intervals).
                "--cluster.gossip-interval=50ms", f"--cluster.peer-timeout={self.peer_timeout_ms}ms",
                f"--cluster.pushpull-interval={int(60000 * f)}ms", "--cluster.reconnect-interval=1s"]

    def start(self) -> "HaStack":
        from autonomy.settings import Settings
        from devstack.durations import format_duration
        from devstack.fleet import Heartbeat
        from devstack.rule_render import render_rules
        from exporter.app import create_app as create_exporter
        from webhook_receiver.app import create_app as create_receiver

        try:
            token_file = self.workdir / "webhook_token"
            token_file.write_text(self.webhook_token.reveal())
            os.chmod(token_file, 0o600)
            fleet_server = self._keep(ServedApp(self.fleet.app).start())
            prometheus_port, web_a, web_b, gossip_a, gossip_b = (free_port() for _ in range(5))
            # The receiver knows both instances: it posts AutonomyEscalated to each (alerts are not gossiped).
            settings = self._settings(prometheus_port, f"http://127.0.0.1:{web_a},http://127.0.0.1:{web_b}",
                                      fleet_server.url)
            self.exporter = self._keep(ServedApp(create_exporter({
                "SETTINGS": settings, "EXPORTER_TOKEN": self.push_token})).start())
            self.receiver_app = create_receiver({"SETTINGS": settings, "WEBHOOK_TOKEN": self.webhook_token})
            self.receiver = ServedApp(self.receiver_app, threads=16)
            self.receiver_app.config["PUBLIC_URL"] = self.receiver.url
            self._keep(self.receiver.start())
            am_config = alertmanager_config(self.receiver.url + "/api/v1/alerts", token_file, self.time_factor)
            for name, web, own, peer in (("a", web_a, gossip_a, gossip_b), ("b", web_b, gossip_b, gossip_a)):
                am = AlertmanagerProcess(self.workdir / f"alertmanager-{name}", am_config,
                                         extra_args=self._cluster_args(own, peer))
                self.alertmanagers.append(self._keep(am.start(port=web)))
            wait_until(self.cluster_ready, 60, "the two Alertmanagers to form a settled cluster of 2")
            self.heartbeat = self._keep(Heartbeat(self.fleet, self.push, interval=0.3).start())
            rules = render_rules(Settings.from_env({}), self.workdir / "rules", time_factor=self.time_factor)
            targets = {"autonomy-exporter": [self.exporter.url[7:]], "autonomy-receiver": [self.receiver.url[7:]]}
            self.prometheus = self._keep(PrometheusProcess(self.workdir / "prometheus", prometheus_config(
                targets, interval=format_duration(15 * self.time_factor), rule_files=rules,
                alertmanagers=[am.url[7:] for am in self.alertmanagers])).start(port=prometheus_port))
        except BaseException:
            self.stop()
            raise
        return self

    def cluster_status(self) -> list[dict]:
        return [requests.get(am.url + "/api/v2/status", timeout=5).json()["cluster"] for am in self.alertmanagers]

    def cluster_ready(self) -> bool:
        return all(len(c.get("peers") or []) == 2 and c.get("status") == "ready" for c in self.cluster_status())

    def push(self, signals: list[dict]) -> dict:
        reply = requests.post(self.exporter.url + "/api/v1/signals", json=signals, timeout=10,
                              headers={"Authorization": f"Bearer {self.push_token.reveal()}"})
        reply.raise_for_status()
        return reply.json()

    def post_alerts(self, body: str) -> requests.Response:
        return requests.post(self.receiver.url + "/api/v1/alerts", data=body.encode("utf-8"), timeout=30,
                             headers={"Authorization": f"Bearer {self.webhook_token.reveal()}",
                                      "Content-Type": "application/json"})

    def incidents(self, agent: str) -> list[dict]:
        return requests.get(self.receiver.url + "/api/v1/incidents", params={"agent": agent},
                            timeout=10).json()["incidents"]

    def notifications(self, agent: str) -> list[str]:
        """Every stored notification body carrying an alert of AGENT, oldest first."""
        bodies, _ = read_ledger(self.data_dir)
        return [b for b in bodies if any(a["labels"].get("agent") == agent for a in json.loads(b)["alerts"])]

    def active_alerts(self, am: AlertmanagerProcess, agent: str) -> list[dict]:
        reply = requests.get(am.url + "/api/v2/alerts", params={"filter": f'agent="{agent}"'}, timeout=10)
        reply.raise_for_status()
        return [a for a in reply.json() if a["labels"].get("autonomy_class") not in (None, "none")]

    def escalated_alerts(self, am: AlertmanagerProcess, agent: str) -> list[dict]:
        """The agent's alerts an Alertmanager holds, active or not (AutonomyEscalated is the receiver's)."""
        reply = requests.get(am.url + "/api/v2/alerts", timeout=10, params={
            "filter": f'agent="{agent}"', "active": "true", "silenced": "true", "inhibited": "true",
            "unprocessed": "true"})
        reply.raise_for_status()
        return reply.json()



@dataclass
class HaResult:
    """What the receiver got from the two Alertmanagers (and the replays), and what it did."""

    agent: str
    cluster: list[dict]
    alertmanager_urls: list[str]
    notifications: list[dict]         # stored bodies carrying the agent's alerts, oldest first
    replay_codes: list[int]           # the firing notification posted again while the incident was open
    replay_replies: list[dict]
    late_replay_code: int             # ...and once more after recovery, the alerts resolved everywhere
    late_replay_reply: dict
    incidents: list[dict]
    action_calls: list[str]           # actions the fleet received for the agent, in order
    lineage: list[dict]               # the agent's lineage entries
    seconds: float
    escalated_agent: str | None = None        # a second agent whose fault the layer cannot fix
    escalated_incidents: list[dict] = field(default_factory=list)
    escalated_lineage: list[dict] = field(default_factory=list)
    escalated_alert_in: list[bool] = field(default_factory=list)  # AutonomyEscalated held, per Alertmanager

    def from_alertmanagers(self, status: str = "firing") -> Counter:
        """Notifications of STATUS per sending Alertmanager (its externalURL), replays excluded."""
        counts = Counter(n["externalURL"] for n in self.notifications if n["status"] == status)
        first = next((n for n in self.notifications if n["status"] == "firing"), None)
        if status == "firing" and first is not None:
            replays = len([c for c in self.replay_codes if c == 200]) + (self.late_replay_code == 200)
            counts[first["externalURL"]] -= replays
        return +counts

    @property
    def remediations(self) -> int:
        return len([e for e in self.lineage if e["event"] == "auto_remediation"])

    @property
    def duplicate_remediations(self) -> int:
        """Playbook runs beyond the first: at the agent (each run starts with restartAgent) or in the lineage."""
        return max(0, self.action_calls.count("restartAgent") - 1, self.remediations - 1)


def ha_duplicates(workdir: Path, time_factor: float = 1 / 30, agent: str = "CMO", replays: int = 2,
                  peer_timeout_ms: int | None = 0, escalated_agent: str | None = "COO") -> HaResult:
    """One agent's fault seen by two clustered Alertmanagers; the receiver must remediate it once.

    PEER_TIMEOUT_MS 0 (the default) has both Alertmanagers notify; None keeps the HA timing, under
    which the second one usually finds the first one's notification in the gossiped log and stays quiet.
    ESCALATED_AGENT, if given, gets a fault the playbook cannot fix at the same time: it is escalated,
    and the result says which Alertmanagers then hold the receiver's AutonomyEscalated alert.
    """
    with HaStack(workdir, time_factor, peer_timeout_ms) as stack:
        started = time.monotonic()
        stack.fleet.inject(agent, "timeout")
        if escalated_agent:
            stack.fleet.inject(escalated_agent, "timeout", fixable=False)
        first = wait_until(lambda: next((b for b in stack.notifications(agent)
                                         if json.loads(b)["status"] == "firing"), None),
                           90, f"an Alertmanager's firing notification for {agent}")
        # The same notification again, concurrently, as Alertmanager's retries and the HA peer would send it.
        with ThreadPoolExecutor(max_workers=replays) as pool:
            replayed = list(pool.map(lambda _: stack.post_alerts(first), range(replays)))
        wait_until(lambda: [i for i in stack.incidents(agent) if i["state"] == "closed"], 120,
                   f"{agent}'s incident to be remediated and closed")
        wait_until(lambda: not any(stack.active_alerts(am, agent) for am in stack.alertmanagers), 60,
                   f"{agent}'s alerts resolved in both Alertmanagers")
        # A firing notification arriving late, after recovery (a slow peer, a retry): nothing must run.
        late = stack.post_alerts(first)
        wait_until(lambda: all(i["state"] == "closed" for i in stack.incidents(agent)), 60,
                   f"every incident of {agent} closed")
        escalated_in: list[bool] = []
        if escalated_agent:
            wait_until(lambda: [i for i in stack.incidents(escalated_agent) if i["state"] == "escalated"], 120,
                       f"{escalated_agent}'s incident to be escalated")
            holds = [lambda am=am: any(a["labels"].get("alertname") == "AutonomyEscalated"
                                       for a in stack.escalated_alerts(am, escalated_agent))
                     for am in stack.alertmanagers]
            wait_until(lambda: any(h() for h in holds), 60, "AutonomyEscalated in an Alertmanager")
            # Alertmanager peers gossip silences and the notification log, never alerts: every
            # instance must be sent the alert. Give the others the time a sequential post would take.
            try:
                wait_until(lambda: all(h() for h in holds), 5, "AutonomyEscalated in every Alertmanager")
            except DeadlineExceeded:
                pass
            escalated_in = [h() for h in holds]
        everything = read_lineage(stack.data_dir)
        return HaResult(agent, stack.cluster_status(), [am.url for am in stack.alertmanagers],
                        [json.loads(b) for b in stack.notifications(agent)], [r.status_code for r in replayed],
                        [r.json() for r in replayed], late.status_code,
                        late.json(), stack.incidents(agent), [a for a, _ in stack.fleet.calls_for(agent)],
                        [e for e in everything if e.get("agent") == agent], time.monotonic() - started,
                        escalated_agent, stack.incidents(escalated_agent) if escalated_agent else [],
                        [e for e in everything if escalated_agent and e.get("agent") == escalated_agent],
                        escalated_in)


# -- the benchmark ----------------------------------------------------------------------------------------------------
def run(full: bool = True) -> dict:
    """The storm (10,000 alerts for 1,000 agents when FULL, else 2,000 for 200) and the HA scenario."""
    sizes = dict(alerts=10_000, agents=1_000, queue_size=100) if full else dict(alerts=2_000, agents=200, queue_size=50)
    with tempfile.TemporaryDirectory(prefix="autonomy-bench-storm-") as tmp:
        result = storm(Path(tmp) / "storm", per_webhook=100, workers=4, clients=8, **sizes)
        figures = result.figures()
        ha = ha_duplicates(Path(tmp) / "ha")
    figures.update({"duplicate_remediations": ha.duplicate_remediations,
                    "ha_notifications_from_alertmanagers": sum(ha.from_alertmanagers().values()),
                    "ha_deliveries": len([n for n in ha.notifications if n["status"] == "firing"]),
                    "ha_seconds": round(ha.seconds, 2)})
    return figures


if __name__ == "__main__":
    print(json.dumps(run(full="--small" not in sys.argv), sort_keys=True))
