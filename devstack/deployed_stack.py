"""A layer already running somewhere, as the drills see a stack: its receiver, Prometheus and Alertmanager."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from webhook_receiver.upstreams import PrometheusApi

from .drill_target import DrillTarget

# What answers when each part is up (the exporter and the receiver: liveness; the others: readiness).
HEALTH_PATHS = {"receiver_url": "/healthz", "exporter_url": "/healthz", "prometheus_url": "/-/ready",
                "alertmanager": "/-/ready", "fleet_url": "/fleet/state"}


class TokenRefused(RuntimeError):
    """The receiver refused the token the target names."""


@dataclass(frozen=True)
class DrillSettings:
    """The deployed settings a drill compares against (the receiver does not publish them)."""

    max_attempts: int
    slo_backlog_min: float


@dataclass(frozen=True)
class Endpoint:
    url: str


class DeployedStack:
    """What the drills use of a LayerStack, for a layer the target file describes; nothing is started."""

    def __init__(self, target: DrillTarget, session: requests.Session | None = None):
        self.target = target
        self.session = session or requests.Session()
        self.receiver = Endpoint(target.receiver_url)
        self.exporter = Endpoint(target.exporter_url)
        self.prometheus = PrometheusApi(target.prometheus_url, self.session)
        # Silences and alerts are shared across an Alertmanager cluster: the drills read and write the first.
        self.alertmanager = Endpoint(target.alertmanager_urls[0])
        self.settings = DrillSettings(target.max_attempts, target.slo_backlog_min)
        self.time_factor = target.time_factor

    def receiver_call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the receiver: reads with the read token when the target gives one, the rest with the webhook token."""
        token = self.target.read_token if method.upper() == "GET" and self.target.read_token \
            else self.target.receiver_token
        headers = {"Authorization": f"Bearer {token.reveal()}", **kwargs.pop("headers", {})}
        reply = self.session.request(method, self.receiver.url + path, headers=headers, timeout=10, **kwargs)
        if reply.status_code in (401, 403):
            hint = "" if self.target.read_token or method.upper() != "GET" else \
                " (the receiver sets AUTOREM_READ_TOKEN: give read_token_env or read_token_file)"
            raise TokenRefused(f"the receiver refused the token {token.name} on {method} {path} "
                               f"({reply.status_code}){hint}")
        return reply


def unreachable(target: DrillTarget, timeout: float = 5.0) -> list[str]:
    """One line per part of the target that does not answer its health endpoint with 200, naming its field."""
    problems = []
    for field, url in target.endpoints():
        path = HEALTH_PATHS["alertmanager" if field.startswith("alertmanager") else field]
        try:
            status = requests.get(url + path, timeout=timeout).status_code
        except requests.RequestException as exc:
            problems.append(f"{field} {url} does not answer ({type(exc).__name__})")
            continue
        if status != 200:
            problems.append(f"{field} {url}: GET {path} answered {status}")
    return problems


def not_ready(stack: DeployedStack, agents: list[str]) -> list[str]:
    """Why the layer cannot be drilled as it is (remediation off, a dry run, a canary list without the fleet)."""
    try:
        status = stack.receiver_call("GET", "/api/v1/remediation").json()
    except (TokenRefused, requests.RequestException, ValueError) as exc:
        return [f"receiver_url {stack.receiver.url}: cannot read /api/v1/remediation: {exc}"]
    problems = []
    if not status.get("enabled"):
        problems.append(f"the receiver's remediation is off ({status.get('reason') or 'no reason given'}): the "
                        "drills need it on, and do not switch on what a person switched off")
    if status.get("dry_run"):
        problems.append("the receiver runs a dry run (AUTOREM_DRY_RUN): no drill could see a remediation")
    outside = [a for a in agents if status.get("canary_agents") and a not in status["canary_agents"]]
    if outside:
        problems.append(f"the receiver's canary list leaves out the fleet's {', '.join(outside)}")
    return problems
