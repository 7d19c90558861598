"""Several `autonomy receiver` processes sharing one PostgreSQL ledger behind two clustered Alertmanagers, each
Alertmanager sending every notification to every receiver (what `docker-compose.yml` deploys).

`ReceiverReplicas` is that part alone (the storm test posts its alerts straight into the Alertmanagers);
`SharedStoreLayer` is `ProcessLayer` (agents, exporter, rules on a real Prometheus) with the replicas in place of
its one receiver, for the kill test.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping

import psycopg
import requests

from devstack.durations import format_duration
from devstack.local_stack import AlertmanagerProcess, PrometheusProcess, ServedApp, free_port
from devstack.polling import wait_until
from devstack.rule_render import render_rules
from devstack.stack_config import alertmanager_config, prometheus_config
from tests.integration.receiver_process import ProcessLayer, ReceiverProcess, ScriptedAgents


def _cluster_args(own: int, peer: int, time_factor: float) -> list[str]:
    return [f"--cluster.listen-address=127.0.0.1:{own}", f"--cluster.advertise-address=127.0.0.1:{own}",
            f"--cluster.peer=127.0.0.1:{peer}", "--cluster.gossip-interval=50ms",
            f"--cluster.peer-timeout={int(15000 * time_factor)}ms",
            f"--cluster.pushpull-interval={int(60000 * time_factor)}ms", "--cluster.reconnect-interval=1s"]


class ReceiverReplicas:
    """REPLICAS receiver processes on STORE_URL and two clustered Alertmanagers routing to all of them."""

    def __init__(self, workdir: Path, store_url: str, env: Mapping[str, str], replicas: int = 2,
                 time_factor: float = 1 / 30):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store_url, self.env, self.time_factor = store_url, dict(env), time_factor
        self.webhook_token = self.env.setdefault("AUTOREM_WEBHOOK_TOKEN", secrets.token_urlsafe(24))
        self.am_ports = [free_port(), free_port()]
        self.receivers = [ReceiverProcess(self.workdir / f"receiver-{n}", self._env(), self.workdir / f"receiver-{n}.log")
                          for n in range(replicas)]
        self.alertmanagers: list[AlertmanagerProcess] = []

    def _env(self) -> dict[str, str]:
        return {**self.env, "AUTOREM_STORE_URL": self.store_url,
                "AUTOREM_ALERTMANAGER_URL": ",".join(f"http://127.0.0.1:{p}" for p in self.am_ports)}

    @property
    def alertmanager_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.am_ports]

    def start(self) -> "ReceiverReplicas":
        try:
            for receiver in self.receivers:
                receiver.start()
            token_file = self.workdir / "webhook_token"
            token_file.write_text(self.webhook_token)
            os.chmod(token_file, 0o600)
            config = alertmanager_config([r.url + "/api/v1/alerts" for r in self.receivers], token_file,
                                         self.time_factor)
            gossip = [free_port(), free_port()]
            for n, (web, own, peer) in enumerate(((self.am_ports[0], gossip[0], gossip[1]),
                                                   (self.am_ports[1], gossip[1], gossip[0]))):
                am = AlertmanagerProcess(self.workdir / f"alertmanager-{n}", config,
                                         extra_args=_cluster_args(own, peer, self.time_factor))
                self.alertmanagers.append(am.start(port=web))
            wait_until(self.cluster_ready, 60, "the two Alertmanagers to form a settled cluster of 2")
        except BaseException:
            self.stop()
            raise
        return self

    def cluster_ready(self) -> bool:
        status = [requests.get(am.url + "/api/v2/status", timeout=5).json()["cluster"] for am in self.alertmanagers]
        return all(len(c.get("peers") or []) == 2 and c.get("status") == "ready" for c in status)

    def post_alerts(self, alerts: list[dict]) -> None:
        """ALERTS into every Alertmanager, as an HA pair of Prometheus servers sends them."""
        for am in self.alertmanagers:
            requests.post(am.url + "/api/v2/alerts", json=alerts, timeout=30).raise_for_status()

    def lease_owners(self) -> dict[str, str]:
        """incident id -> the owner of its live lease, read from the shared ledger."""
        with psycopg.connect(self.store_url) as db:
            rows = db.execute("SELECT incident_id, owner FROM leases WHERE expires_at > extract(epoch FROM now())")
            return dict(rows.fetchall())

    def holder_of(self, incident_id: str) -> ReceiverProcess | None:
        """The receiver process whose worker holds INCIDENT_ID's lease (owners are host:pid:nonce)."""
        owner = self.lease_owners().get(incident_id)
        if owner is None:
            return None
        pid = int(owner.split(":")[1])
        return next((r for r in self.receivers if r.process is not None and r.process.pid == pid), None)

    def stop(self) -> None:
        for thing in [*self.alertmanagers, *self.receivers]:
            try:
                thing.stop()
            except Exception:  # keep stopping the rest
                pass


class SharedStoreLayer(ProcessLayer):
    """ProcessLayer with ReceiverReplicas: agents, exporter and a real Prometheus (the repo's rules, sending to
    both Alertmanagers, scraping every receiver)."""

    def __init__(self, workdir: Path, agents: ScriptedAgents, store_url: str,
                 receiver_env: Mapping[str, str] | None = None, replicas: int = 2, time_factor: float = 1 / 30):
        super().__init__(workdir, agents, receiver_env, time_factor)
        self.store_url, self.replicas_count = store_url, replicas
        self.replicas: ReceiverReplicas | None = None

    def start(self) -> "SharedStoreLayer":
        from autonomy.settings import Settings
        from exporter.app import create_app as create_exporter

        try:
            self.agents_server = ServedApp(self.agents.app, threads=32).start()
            self.inbox_server = ServedApp(self.inbox.app).start()
            self.exporter = ServedApp(create_exporter({"SETTINGS": Settings.from_env({}),
                                                       "EXPORTER_TOKEN": self.push_token})).start()
            prometheus_port = free_port()
            env = self._receiver_env(prometheus_port, 0)
            env.pop("AUTOREM_ALERTMANAGER_URL")
            self.replicas = ReceiverReplicas(self.workdir / "replicas", self.store_url, env, self.replicas_count,
                                             self.time_factor).start()
            self.receiver = self.replicas.receivers[0]
            rules = render_rules(Settings.from_env({}), self.workdir / "rules", time_factor=self.time_factor)
            targets = {"autonomy-exporter": [self.exporter.url[7:]],
                       "autonomy-receiver": [r.url[7:] for r in self.replicas.receivers]}
            self._prometheus_config = prometheus_config(
                targets, interval=format_duration(15 * self.time_factor), rule_files=rules,
                alertmanagers=[u[7:] for u in self.replicas.alertmanager_urls])
            self.prometheus = PrometheusProcess(self.workdir / "prometheus", self._prometheus_config).start(
                port=prometheus_port)
            from devstack.fleet import fleet_heartbeat

            self.heartbeat = fleet_heartbeat(self.agents, self.exporter.url, self.push_token,
                                             interval=self.heartbeat_seconds).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.agents.release_all()
        for step in (lambda: self.heartbeat and self.heartbeat.stop(), lambda: self.prometheus and self.prometheus.stop(),
                     lambda: self.replicas and self.replicas.stop(), lambda: self.exporter and self.exporter.stop(),
                     lambda: self.inbox_server and self.inbox_server.stop(),
                     lambda: self.agents_server and self.agents_server.stop()):
            try:
                step()
            except Exception:  # keep stopping the rest
                pass
