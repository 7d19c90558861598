"""An alert storm against the real receiver: ALERTS firing alerts for AGENTS agents, posted as Alertmanager
webhooks (payload version 4, 100 alerts each) by several client threads to `autonomy receiver` in its own
process. The receiver's work queue is small, so it answers 503 and the clients retry with backoff, as
Alertmanager does, until 200. Remediation actions go to a counting agents server that measures how many run at
once, and whether two ever ran at once for one agent. Verification reads a Prometheus address where nothing
listens, so every attempt fails fast and is escalated: the point is the bounded concurrency and that nothing is
lost, not the recovery. bench/storm_and_ha.py runs it at full size; tests/integration/test_storm_and_ha.py at a
smaller one, asserting on every detail."""
from __future__ import annotations

import json
import random
import secrets
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import requests
from flask import Flask, jsonify

from .checkout import PLAYBOOKS_FILE
from .local_stack import ReceiverProcess, ServedApp
from .polling import wait_until
from .records import fingerprint, read_lineage, read_metrics, read_stopped_receiver

TRANSIENT_ALERTS = ("AgentTransientError", "AgentStatusError", "AgentSilent")


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
    """What the storm did, from the clients, the agents server, the receiver's metrics and its store."""

    alerts: int
    agents: int
    queue_size: int
    workers: int
    deliveries: list[Delivery]
    seconds: float                    # first POST to the last 200
    drain_seconds: float              # first POST to every incident finished
    expected: dict[str, set[str]]     # agent -> its alerts' fingerprints
    sent_fingerprints: Counter        # fingerprint -> webhooks carrying it (one each)
    stored_bodies: list[dict]         # the store's notifications
    incidents: list[dict]             # the store's incidents
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
    stored, incidents = read_stopped_receiver(receiver.data_dir)
    return StormResult(alerts, agents, queue_size, workers, deliveries, last_accept - started, drain_done - started,
                       expected, sent, [json.loads(b) for b in stored], incidents, read_lineage(receiver.data_dir),
                       answers, opened_metric, counting.max_in_flight, list(counting.overlaps),
                       counting.hold_timed_out, counting.remediations(), sum(counting.calls.values()), log_tail,
                       webhooks_by_index=dict(enumerate(webhooks)))
