"""Two real Alertmanagers clustered over gossip on 127.0.0.1, both routing to the same receiver with the repo's
alertmanager.yml; a real Prometheus (the repo's rules) sending to both; the simulated fleet pushing to the
exporter. One agent's fault is seen by both Alertmanagers; the notification is also replayed as retries would,
and once more after recovery. The receiver must run one remediation."""
from __future__ import annotations

import json
import os
import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from autonomy.settings import Secret, Settings
from exporter.app import create_app as create_exporter
from webhook_receiver.app import create_app as create_receiver

from .durations import format_duration
from .fleet import SimulatedFleet, fleet_heartbeat
from .layer_stack import StackLifecycle
from .local_stack import AlertmanagerProcess, PrometheusProcess, ServedApp, free_port
from .polling import DeadlineExceeded, wait_until
from .records import read_lineage, stored_bodies
from .rule_render import render_rules
from .stack_config import alertmanager_config, prometheus_config


class HaStack(StackLifecycle):
    """Fleet, exporter and receiver in-process; two clustered Alertmanagers and one Prometheus as processes."""

    def __init__(self, workdir: Path, time_factor: float = 1 / 30, peer_timeout_ms: int | None = None):
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
        f = self.time_factor
        return Settings.from_env({
            "AUTOREM_VERIFY_TIMEOUT_SECONDS": f"{120 * f * 2:g}", "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.25",
            "AUTOREM_SWEEP_SECONDS": f"{max(0.5, 30 * f):g}", "AUTOREM_REOPEN_GRACE_SECONDS": f"{300 * f:g}",
            "AUTOREM_LATE_NOTIFICATION_SECONDS": f"{60 * f:g}",
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
            self.receiver_app = create_receiver({"SETTINGS": settings, "WEBHOOK_TOKEN": self.webhook_token,
                                                 "ENVIRON": {"AUTOREM_AGENT_TOKEN": self.fleet.action_token.reveal()}})
            self.receiver = ServedApp(self.receiver_app, threads=16)
            self.receiver_app.config["PUBLIC_URL"] = self.receiver.url
            self._keep(self.receiver.start())
            am_config = alertmanager_config(self.receiver.url + "/api/v1/alerts", token_file, self.time_factor)
            for name, web, own, peer in (("a", web_a, gossip_a, gossip_b), ("b", web_b, gossip_b, gossip_a)):
                am = AlertmanagerProcess(self.workdir / f"alertmanager-{name}", am_config,
                                         extra_args=self._cluster_args(own, peer))
                self.alertmanagers.append(self._keep(am.start(port=web)))
            wait_until(self.cluster_ready, 60, "the two Alertmanagers to form a settled cluster of 2")
            self.heartbeat = self._keep(fleet_heartbeat(self.fleet, self.exporter.url, self.push_token, interval=0.3).start())
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
        bodies = stored_bodies(self.receiver_app.extensions["autonomy_receiver"].store)
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
