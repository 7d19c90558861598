"""The receiver as a real child process (`autonomy receiver`) beside the real Prometheus and Alertmanager.

`ProcessLayer` wires what `devstack.layer_stack.LayerStack` wires (exporter, rules rendered with a time
factor, the repo's Alertmanager routing), except that the receiver is a separate process
(`devstack.local_stack.ReceiverProcess`), so a test can SIGKILL it and start it again on the same port and
data directory.
`ScriptedAgents` are the small test agents whose action endpoints can also block, hang or fail on cue, so a
test knows where the receiver is in a playbook.
"""
from __future__ import annotations

import os
import secrets
import sys
import threading
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import requests
from flask import Flask, jsonify, request

from autonomy.settings import Secret, Settings
from devstack import local_stack
from devstack.checkout import PLAYBOOKS_FILE
from devstack.drills import every_page
from devstack.durations import format_duration
from devstack.fleet import fleet_heartbeat
from devstack.local_stack import AlertmanagerProcess, PrometheusProcess, ServedApp, free_port
from devstack.polling import wait_until
from devstack.rule_render import render_rules
from devstack.stack_config import alertmanager_config, prometheus_config
from tests.integration.small_agents import SmallAgents
from webhook_receiver.store import SqliteIncidentStore

AUTONOMY_SCRIPT = Path(sys.executable).with_name("autonomy")
LINEAGE_FILE = "decision_lineage.jsonl"
LEDGER_FILE = "incidents.sqlite3"
# An upper bound for any blocked or hung action handler, so a failed test never leaves a thread behind.
MAX_BLOCK_SECONDS = 120.0


class ReceiverProcess(local_stack.ReceiverProcess):
    """The deployed receiver process, plus what the crash tests read of it."""

    @property
    def lineage_path(self) -> Path:
        return self.data_dir / LINEAGE_FILE

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / LEDGER_FILE

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- talking to it ------------------------------------------------------------------------------------
    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def incidents(self, agent: str | None = None) -> list[dict]:
        """Every incident (paged through), newest first."""
        return every_page(lambda params: self.call("GET", "/api/v1/incidents", params=params), "incidents",
                          **({"agent": agent} if agent else {}))["incidents"][::-1]

    def incident(self, incident_id: str) -> dict:
        reply = self.call("GET", f"/api/v1/incidents/{incident_id}")
        reply.raise_for_status()
        return reply.json()

    def lineage(self, agent: str | None = None) -> dict:
        """Every stored entry (paged through), oldest first, and the ids of stored lines skipped."""
        return every_page(lambda params: self.call("GET", "/api/v1/lineage", params=params), "entries",
                          **({"agent": agent} if agent else {}))

    @contextmanager
    def stopped_store(self) -> Iterator[SqliteIncidentStore]:
        """The receiver's store, opened through the store's own API while the receiver is not running."""
        assert not self.alive(), "the receiver runs: read it through its API instead"
        store = SqliteIncidentStore(self.ledger_path)
        try:
            yield store
        finally:
            store.close()


class ScriptedAgents(SmallAgents):
    """SmallAgents whose action endpoints can also block, hang or fail on cue.

    `entered[(agent, action)]` counts every call that reached the endpoint (before any block).
    """

    def __init__(self, agents: dict[str, str]):
        super().__init__(agents)
        self.entered: Counter = Counter()
        self.scripts: dict[tuple[str, str], Callable[[int], tuple[dict, int] | None]] = {}
        self._releases: list[threading.Event] = []

    def action(self, agent: str, action: str):
        with self.lock:
            self.entered[(agent, action)] += 1
            number = self.entered[(agent, action)]
        script = self.scripts.get((agent, action))
        outcome = script(number) if script else None
        if outcome is not None:
            body, status = outcome
            return jsonify(body), status
        return super().action(agent, action)

    def block(self, agent: str, action: str, calls: tuple[int, ...] = (1,),
              answer: tuple[dict, int] | None = None) -> threading.Event:
        """Calls number CALLS of ACTION on AGENT wait until the returned event is set; then every call acts
        as usual, or gives ANSWER (body, status) if one is given."""
        release = threading.Event()
        self._releases.append(release)

        def script(number: int) -> tuple[dict, int] | None:
            if number in calls:
                release.wait(MAX_BLOCK_SECONDS)
            return answer
        self.scripts[(agent, action)] = script
        return release

    def hang(self, agent: str, action: str) -> threading.Event:
        """Every call hangs (until the returned event is set, at the latest at stop), then answers 200."""
        release = threading.Event()
        self._releases.append(release)

        def script(number: int) -> tuple[dict, int]:
            release.wait(MAX_BLOCK_SECONDS)
            return {"done": False, "late": True}, 200
        self.scripts[(agent, action)] = script
        return release

    def fail(self, agent: str, action: str, status: int, calls: tuple[int, ...] | None = None,
             body: dict | None = None) -> None:
        """Calls number CALLS (every call if None) answer STATUS without doing anything."""
        def script(number: int) -> tuple[dict, int] | None:
            if calls is None or number in calls:
                return body or {"error": f"scripted HTTP {status}"}, status
            return None
        self.scripts[(agent, action)] = script

    def wait_entered(self, agent: str, action: str, count: int, timeout: float = 90.0) -> None:
        wait_until(lambda: self.entered[(agent, action)] >= count, timeout,
                   f"call {count} of {action} on {agent} to reach the agent")

    def release_all(self) -> None:
        for release in self._releases:
            release.set()


class EscalationInbox:
    """Stands in for the CEO agent: records every escalation payload it receives."""

    def __init__(self):
        self.lock = threading.Lock()
        self.payloads: list[dict] = []
        self.app = Flask("escalation-inbox")
        self.app.add_url_rule("/escalations", view_func=self.receive, methods=["POST"])

    def receive(self):
        with self.lock:
            self.payloads.append(request.get_json())
        return jsonify({"ok": True})

    def for_agent(self, agent: str) -> list[dict]:
        with self.lock:
            return [p for p in self.payloads if p.get("agent") == agent]


def webhook_notification(agent: str, alertname: str = "AgentTransientError", autonomy_class: str = "TRANSIENT",
                         status: str = "firing") -> dict:
    """An Alertmanager webhook payload (version 4) with one alert of AGENT."""
    labels = {"alertname": alertname, "agent": agent, "autonomy_class": autonomy_class, "severity": "warning"}
    return {"version": "4", "status": status, "receiver": "autonomy-receiver",
            "groupKey": f'{{}}:{{agent="{agent}"}}', "groupLabels": {"agent": agent}, "commonLabels": labels,
            "commonAnnotations": {}, "externalURL": "http://alertmanager", "truncatedAlerts": 0,
            "alerts": [{"status": status, "labels": labels, "annotations": {}, "fingerprint": f"fp-{agent}",
                        "startsAt": datetime.now(timezone.utc).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prometheus/graph"}]}


class ProcessLayer:
    """Agents, exporter, the receiver process, real Alertmanager and real Prometheus, on loopback.

    Durations (rules, Alertmanager timings, the receiver's waits) are compressed by TIME_FACTOR as in
    LayerStack; RECEIVER_ENV adds or overrides the receiver's AUTOREM_* settings.
    """

    def __init__(self, workdir: Path, agents: ScriptedAgents, receiver_env: Mapping[str, str] | None = None,
                 time_factor: float = 1 / 30, heartbeat_seconds: float = 0.3):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.agents = agents
        self.inbox = EscalationInbox()
        self.receiver_env = dict(receiver_env or {})
        self.time_factor = time_factor
        self.heartbeat_seconds = heartbeat_seconds
        self.push_token = Secret("AUTOREM_EXPORTER_TOKEN", secrets.token_urlsafe(24))
        self.webhook_token = secrets.token_urlsafe(24)
        self.agent_token = agents.token or secrets.token_urlsafe(24)  # sent with every action
        self.token_file = self.workdir / "webhook_token"
        self.agents_server = self.inbox_server = self.exporter = None
        self.receiver: ReceiverProcess | None = None
        self.alertmanager: AlertmanagerProcess | None = None
        self.prometheus: PrometheusProcess | None = None
        self.heartbeat = None
        self._prometheus_config = ""
        self._alertmanager_config = ""

    def _receiver_env(self, prometheus_port: int, alertmanager_port: int) -> dict[str, str]:
        f = self.time_factor
        env = {
            "AUTOREM_WEBHOOK_TOKEN": self.webhook_token,
            "AUTOREM_AGENT_TOKEN": self.agent_token,
            "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}",
            "AUTOREM_ALERTMANAGER_URL": f"http://127.0.0.1:{alertmanager_port}",
            "AUTOREM_ACTIONS_BASE_URL": self.agents_server.url,
            "AUTOREM_ESCALATION_URL": self.inbox_server.url + "/escalations",
            "AUTOREM_PLAYBOOKS_FILE": str(PLAYBOOKS_FILE),
            # A ceiling for the happy paths (recovery is seen within a second or two); tests of failed
            # verification set their own, shorter one.
            "AUTOREM_VERIFY_TIMEOUT_SECONDS": "15",
            "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.25",
            "AUTOREM_SWEEP_SECONDS": f"{max(0.5, 30 * f):g}",
            "AUTOREM_REOPEN_GRACE_SECONDS": f"{300 * f:g}",
            "AUTOREM_LATE_NOTIFICATION_SECONDS": f"{60 * f:g}",
            "AUTOREM_AGENT_SILENT_SECONDS": f"{120 * f:g}",
            "AUTOREM_ATTEMPT_BACKOFF_SECONDS": f"{30 * f:g}",
            # A killed receiver's claims are taken over after this; long enough that a renewal delayed on a
            # loaded machine never lets a second worker start what the first still runs.
            "AUTOREM_LEASE_SECONDS": "5",
            "AUTO_REMEDIATE": "true",
        }
        env.update(self.receiver_env)
        return env

    def start(self) -> "ProcessLayer":
        from exporter.app import create_app as create_exporter

        try:
            self.token_file.write_text(self.webhook_token)
            os.chmod(self.token_file, 0o600)
            self.agents_server = ServedApp(self.agents.app, threads=32).start()
            self.inbox_server = ServedApp(self.inbox.app).start()
            self.exporter = ServedApp(create_exporter({"SETTINGS": Settings.from_env({}),
                                                       "EXPORTER_TOKEN": self.push_token})).start()
            prometheus_port, alertmanager_port = free_port(), free_port()
            self.receiver = ReceiverProcess(self.workdir / "receiver-data",
                                            self._receiver_env(prometheus_port, alertmanager_port),
                                            self.workdir / "receiver.log").start()
            self._alertmanager_config = alertmanager_config(self.receiver.url + "/api/v1/alerts", self.token_file,
                                                            self.time_factor)
            self.alertmanager = AlertmanagerProcess(self.workdir / "alertmanager", self._alertmanager_config).start(
                port=alertmanager_port)
            rules = render_rules(Settings.from_env({}), self.workdir / "rules", time_factor=self.time_factor)
            targets = {"autonomy-exporter": [self.exporter.url[7:]], "autonomy-receiver": [self.receiver.url[7:]]}
            self._prometheus_config = prometheus_config(
                targets, interval=format_duration(15 * self.time_factor), rule_files=rules,
                alertmanagers=[self.alertmanager.url[7:]])
            self.prometheus = PrometheusProcess(self.workdir / "prometheus", self._prometheus_config).start(
                port=prometheus_port)
            self.heartbeat = fleet_heartbeat(self.agents, self.exporter.url, self.push_token,
                                             interval=self.heartbeat_seconds).start()
        except BaseException:
            self.stop()
            raise
        return self

    def push(self, signals: list[dict]) -> None:
        requests.post(self.exporter.url + "/api/v1/signals", json=signals, timeout=10,
                      headers={"Authorization": f"Bearer {self.push_token.reveal()}"}).raise_for_status()

    def stop_prometheus(self) -> None:
        """Stop the Prometheus process and wait until it has exited (its port refuses connections)."""
        assert self.prometheus is not None
        self.prometheus.stop()

    def stop_alertmanager(self) -> None:
        assert self.alertmanager is not None
        self.alertmanager.stop()

    def am_alerts(self, agent: str) -> list[dict]:
        reply = requests.get(self.alertmanager.url + "/api/v2/alerts", params={"filter": f'agent="{agent}"'},
                             timeout=10)
        reply.raise_for_status()
        return reply.json()

    def stop(self) -> None:
        """Stop everything that was started, in reverse order; blocked agent handlers are released first."""
        self.agents.release_all()
        steps = [
            lambda: self.heartbeat and self.heartbeat.stop(),
            lambda: self.receiver and self.receiver.stop(),
            lambda: self.prometheus and self.prometheus.stop(),
            lambda: self.alertmanager and self.alertmanager.stop(),
            lambda: self.exporter and self.exporter.stop(),
            lambda: self.inbox_server and self.inbox_server.stop(),
            lambda: self.agents_server and self.agents_server.stop(),
        ]
        for step in steps:
            try:
                step()
            except Exception:  # keep stopping the rest
                pass

    def __enter__(self) -> "ProcessLayer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
