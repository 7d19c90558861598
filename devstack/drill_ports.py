"""What a drill needs of the layer and of the fleet: met by the local stack or a deployment, in process or remote."""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import requests


class PrometheusPort(Protocol):
    """Instant queries."""

    def query(self, expr: str) -> list[dict]: ...


class AlertmanagerPort(Protocol):
    """Where Alertmanager's API is."""

    url: str


class DrillSettingsPort(Protocol):
    """The deployed settings a drill compares against."""

    max_attempts: int
    slo_backlog_min: float


class DrillStack(Protocol):
    """The layer under drill (a LayerStack, a DeployedStack)."""

    prometheus: PrometheusPort
    alertmanager: AlertmanagerPort
    settings: DrillSettingsPort
    time_factor: float

    def receiver_call(self, method: str, path: str, **kwargs: Any) -> requests.Response: ...


class DrillFleet(Protocol):
    """The simulated fleet (a SimulatedFleet in process, a RemoteFleet over HTTP)."""

    agents: Mapping[str, Any] | Sequence[str]
    escalations: list[dict]

    def inject(self, agent: str, fault: str, fixable: bool = True) -> None: ...

    def clear(self, agent: str, fault: str | None = None) -> None: ...

    def snapshot(self) -> dict: ...

    def calls_for(self, agent: str, since: float = 0.0) -> list[tuple[str, dict]]: ...
