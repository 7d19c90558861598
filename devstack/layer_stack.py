"""The whole layer on loopback: exporter, receiver, real Prometheus and real Alertmanager, wired together."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Mapping

import requests

from autonomy.settings import Secret, Settings
from exporter.app import create_app as create_exporter
from webhook_receiver.app import create_app as create_receiver
from webhook_receiver.app import shutdown

from .durations import format_duration
from .local_stack import AlertmanagerProcess, PrometheusProcess, ReceiverProcess, ServedApp, free_port
from .rule_render import render_rules
from .stack_config import alertmanager_config, prometheus_config


class StackLifecycle:
    """Keeps what a stack started and stops it in reverse, the receiver's engine included; a context manager."""

    _started: list[Any]
    receiver: Any = None
    receiver_app: Any = None

    def start(self) -> "StackLifecycle":
        raise NotImplementedError

    def _keep(self, thing: Any) -> Any:
        self._started.append(thing)
        return thing

    def stop(self) -> None:

        while self._started:
            thing = self._started.pop()
            try:
                if thing is self.receiver and self.receiver_app is not None:
                    # Open console streams end with the feed, so the server need not wait for them.
                    self.receiver_app.extensions["autonomy_receiver"].stop_feed()
                thing.stop()
            except Exception:  # keep stopping the rest
                pass
            if thing is self.receiver and self.receiver_app is not None:
                shutdown(self.receiver_app)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LayerStack(StackLifecycle):
    """Starts everything in order (ports first, so each side knows the other) and stops it in reverse.

    Durations in the rules, Alertmanager's route timings and the receiver's waits are compressed by
    TIME_FACTOR alike; thresholds are not. Without the Prometheus/Alertmanager binaries `start` raises
    MissingBinary.
    """

    def __init__(self, workdir: Path, actions_base_url: str, env: Mapping[str, str] | None = None,
                 time_factor: float = 1 / 30, span_exporter: Any = None, receiver_process: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.actions_base_url = actions_base_url
        self.env = dict(env or {})
        self.time_factor = time_factor
        self.span_exporter = span_exporter
        self.receiver_process = receiver_process  # `autonomy receiver` as its own process, as deployed
        self.push_token = Secret("AUTOREM_EXPORTER_TOKEN", secrets.token_urlsafe(24))
        self.webhook_token = Secret("AUTOREM_WEBHOOK_TOKEN", secrets.token_urlsafe(24))
        # The token the receiver sends with every action (playbooks.yaml's tokenSecret): the fleet's, from ENV.
        self.agent_token = Secret("AUTOREM_AGENT_TOKEN", self.env.get("AUTOREM_AGENT_TOKEN")
                                  or secrets.token_urlsafe(24))
        self.token_file = self.workdir / "webhook_token"
        self._started: list[Any] = []
        self.exporter = self.receiver = self.prometheus = self.alertmanager = None
        self.receiver_app = None
        self.settings: Settings | None = None

    def receiver_settings(self, prometheus_port: int, alertmanager_port: int) -> Settings:
        return Settings.from_env(self.receiver_env(prometheus_port, alertmanager_port))

    def receiver_env(self, prometheus_port: int, alertmanager_port: int) -> dict[str, str]:
        scaled = {
            "AUTOREM_VERIFY_TIMEOUT_SECONDS": 120 * self.time_factor * 2,
            "AUTOREM_VERIFY_INTERVAL_SECONDS": 0.25,
            "AUTOREM_SWEEP_SECONDS": max(0.5, 30 * self.time_factor),
            "AUTOREM_REOPEN_GRACE_SECONDS": 300 * self.time_factor,
            "AUTOREM_LATE_NOTIFICATION_SECONDS": 60 * self.time_factor,
            "AUTOREM_AGENT_SILENT_SECONDS": 120 * self.time_factor,
            "AUTOREM_ATTEMPT_BACKOFF_SECONDS": 30 * self.time_factor,
        }
        env = {key: f"{value:g}" for key, value in scaled.items()}
        env.update({
            "AUTO_REMEDIATE": "true",
            "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}",
            "AUTOREM_ALERTMANAGER_URL": f"http://127.0.0.1:{alertmanager_port}",
            "AUTOREM_ACTIONS_BASE_URL": self.actions_base_url,
            "AUTOREM_DATA_DIR": str(self.workdir / "receiver"),
            "AUTOREM_AGENT_TOKEN": self.agent_token.reveal(),
        })
        env.update(self.env)
        return env

    def start(self) -> "LayerStack":

        try:
            self.token_file.write_text(self.webhook_token.reveal())
            os.chmod(self.token_file, 0o600)
            prometheus_port, alertmanager_port = free_port(), free_port()
            self.settings = self.receiver_settings(prometheus_port, alertmanager_port)
            self.exporter = self._keep(ServedApp(create_exporter({
                "SETTINGS": self.settings, "EXPORTER_TOKEN": self.push_token})).start())
            if self.receiver_process:
                env = {**self.receiver_env(prometheus_port, alertmanager_port),
                       "AUTOREM_WEBHOOK_TOKEN": self.webhook_token.reveal()}
                self.receiver = self._keep(ReceiverProcess(self.workdir / "receiver", env,
                                                           self.workdir / "receiver.log").start())
            else:
                self.receiver_app = create_receiver({
                    "SETTINGS": self.settings, "WEBHOOK_TOKEN": self.webhook_token, "SPAN_EXPORTER": self.span_exporter,
                    "ENVIRON": self.receiver_env(prometheus_port, alertmanager_port)})
                self.receiver = ServedApp(self.receiver_app, threads=16)
                self.receiver_app.config["PUBLIC_URL"] = self.receiver.url
                self._keep(self.receiver.start())
            self.alertmanager = self._keep(AlertmanagerProcess(self.workdir / "alertmanager", alertmanager_config(
                self.receiver.url + "/api/v1/alerts", self.token_file, self.time_factor)).start(
                port=alertmanager_port))
            # The rules scale their own durations; they start from the unscaled settings.
            rules = render_rules(Settings.from_env(self.env), self.workdir / "rules", time_factor=self.time_factor)
            targets = {"autonomy-exporter": [self.exporter.url[7:]], "autonomy-receiver": [self.receiver.url[7:]]}
            interval = format_duration(15 * self.time_factor)  # the repo's 15 s, compressed like the rest
            self.prometheus = self._keep(PrometheusProcess(self.workdir / "prometheus", prometheus_config(
                targets, interval=interval, rule_files=rules, alertmanagers=[self.alertmanager.url[7:]])).start(
                port=prometheus_port))
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def push_url(self) -> str:
        """Where agents push their signals (the exporter's POST /api/v1/signals; with `push_token`)."""
        return self.exporter.url + "/api/v1/signals"

    def push(self, signals: list[dict]) -> dict:
        """Push signals to the exporter as an agent would."""
        reply = requests.post(self.exporter.url + "/api/v1/signals", json=signals, timeout=10,
                              headers={"Authorization": f"Bearer {self.push_token.reveal()}"})
        reply.raise_for_status()
        return reply.json()

    def receiver_call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the receiver with its webhook token (reads with the read token, when the stack has one)."""
        read = self.env.get("AUTOREM_READ_TOKEN")
        token = read if method == "GET" and read else self.webhook_token.reveal()
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.receiver.url + path, headers=headers, timeout=10, **kwargs)

