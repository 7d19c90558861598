"""The simulated fleet over HTTP (`autonomy fleet`): what a drill does to the in-process fleet, done remotely."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests


class FleetError(RuntimeError):
    """The fleet refused a request or did not answer as the simulated fleet does."""


class RemoteFleet:
    """Fault injection, state, the actions the layer ran and the escalations it sent, from /fleet/* endpoints."""

    def __init__(self, url: str, session: requests.Session | None = None, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise FleetError(f"fleet {self.url}: no answer to {method} {path} ({type(exc).__name__})") from None
        try:
            body = reply.json()
        except ValueError:
            body = None
        if reply.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise FleetError(f"fleet {self.url}: {method} {path} answered {reply.status_code}"
                             + (f": {error}" if error else ""))
        return body

    @property
    def agents(self) -> list[str]:
        """The fleet's agent names."""
        return list(self.snapshot())

    @property
    def escalations(self) -> list[dict]:
        """Every escalation payload the fleet's CEO received, oldest first."""
        return list(self._call("GET", "/fleet/escalations")["escalations"])

    def inject(self, agent: str, fault: str, fixable: bool = True) -> None:
        self._call("POST", "/fleet/faults", json={"agent": agent, "fault": fault, "fixable": fixable})

    def clear(self, agent: str, fault: str | None = None) -> None:
        """Heal FAULT (or every fault) of AGENT."""
        self._call("DELETE", f"/fleet/faults/{quote(agent, safe='')}", params={"fault": fault} if fault else None)

    def heal_all(self) -> None:
        """Every fault of every agent healed: the state a drill starts from."""
        for agent in self.agents:
            self.clear(agent)

    def snapshot(self) -> dict:
        return self._call("GET", "/fleet/state")

    def calls_for(self, agent: str, since: float = 0.0) -> list[tuple[str, dict]]:
        """The actions the layer ran on AGENT at or after SINCE (the fleet's clock), as (action, body)."""
        rows = self._call("GET", "/fleet/calls", params={"agent": agent, "since": repr(float(since))})["calls"]
        return [(row["action"], row["body"]) for row in rows]
