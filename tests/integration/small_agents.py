"""Small HTTP agents for the integration tests: state the test sets, and action endpoints that change it."""
from __future__ import annotations

import copy
import hmac
import secrets
import threading
from collections import Counter
from datetime import datetime, timezone

from flask import Flask, jsonify, request


def healthy(agent: str, domain: str) -> dict:
    return {"agent": agent, "domain": domain, "status": "healthy", "lastReport": "ok",
            "metrics": {"successRate": 0.99, "alignment": 0.99, "backlogAgeMinutes": 1, "costBurnRatePerHour": 0.1},
            "context": {}, "checks": {"lastTaskSucceeded": True, "inputsValid": True, "configHealthy": True}}


class SmallAgents:
    """Agents whose state the test sets and whose action endpoints change it as real agents would.

    An agent in `frozen` keeps sending the signal it sent when it froze (its heartbeat stalls), whatever its
    state becomes meanwhile; `plain` agents send only the pack's section 2 fields (no `checks`)."""

    def __init__(self, agents: dict[str, str]):
        self.token = secrets.token_urlsafe(16)  # every action must carry it (the receiver's AUTOREM_AGENT_TOKEN)
        self.refused: list[tuple[str, str]] = []  # actions that came without it
        self.keys: list[tuple[str, str, str | None]] = []  # (agent, action, Idempotency-Key) of every action
        self.lock = threading.Lock()
        self.state = {name: healthy(name, domain) for name, domain in agents.items()}
        self.calls: Counter = Counter()
        self.call_log: list[tuple[str, str, dict]] = []
        self.unfixable: set[str] = set()
        self.frozen: dict[str, dict] = {}
        self._last: dict[str, dict] = {}
        self.app = Flask("small-agents")
        self.app.add_url_rule("/agents/<agent>/actions/<action>", view_func=self.action, methods=["POST"])

    def set(self, agent: str, **changes) -> None:
        """Change an agent: status, errorCode / directiveId (None clears), metrics and checks keys;
        plain=True drops its checks for good."""
        with self.lock:
            s = self.state[agent]
            for key, value in changes.items():
                if key == "status":
                    s["status"] = value
                elif key == "plain":
                    s.pop("checks", None)
                elif key in ("errorCode", "directiveId"):
                    s["context"].pop(key, None) if value is None else s["context"].update({key: value})
                elif key in s["metrics"]:
                    s["metrics"][key] = value
                elif "checks" in s:
                    s["checks"][key] = value

    def freeze(self, agent: str) -> None:
        """The agent's heartbeat stalls: it keeps sending its last signal, ts and all."""
        with self.lock:
            self.frozen[agent] = copy.deepcopy(self._last[agent])

    def thaw(self, agent: str) -> None:
        with self.lock:
            self.frozen.pop(agent, None)

    def tick(self) -> None:
        """Nothing evolves on its own here; the test changes the state."""

    def signals(self) -> list[dict]:
        now = datetime.now(timezone.utc).isoformat()
        with self.lock:
            for name, s in self.state.items():
                if name not in self.frozen:
                    self._last[name] = {**copy.deepcopy(s), "ts": now}
            return [copy.deepcopy(self.frozen.get(name, self._last[name])) for name in self.state]

    def action(self, agent: str, action: str):
        body = request.get_json(silent=True) or {}
        with self.lock:
            self.keys.append((agent, action, request.headers.get("Idempotency-Key")))
            if not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.token}"):
                self.refused.append((agent, action))
                return jsonify({"error": "missing or wrong token"}), 401
            self.calls[(agent, action)] += 1
            self.call_log.append((agent, action, body))
            if agent not in self.state:
                return jsonify({"error": "unknown agent"}), 404
            s = self.state[agent]
            if agent in self.unfixable:
                return jsonify({"done": False, "missing": ["API_BASE"]})
            checks = s.get("checks", {})  # a plain agent reports none: its repair shows in its section 2 fields
            if action == "restartAgent":
                s["context"].pop("errorCode", None)
                s["status"] = "healthy"
            elif action == "retryLastTask":
                checks["lastTaskSucceeded"] = True
            elif action == "checkSecrets":
                checks["configHealthy"] = True
                s["context"].pop("errorCode", None)
                s["status"] = "healthy"
            elif action == "reallocateSlots":
                s["metrics"]["backlogAgeMinutes"] = 5
            elif action == "reassignOverlaps":
                for name, other in self.state.items():  # everyone but the winner gives the directive back
                    if name != body.get("winner") and other["context"].get("directiveId") == body.get("directiveId"):
                        other["context"]["directiveId"] = f"D-{name}-own"
                for other in self.state.values():
                    if other["metrics"]["alignment"] < 0.95:
                        other["metrics"]["alignment"] = 0.99
        return jsonify({"done": True})
