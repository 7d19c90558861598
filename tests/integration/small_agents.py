"""Small HTTP agents for the integration tests: state the test sets, and action endpoints that change it."""
from __future__ import annotations

import copy
import threading
from collections import Counter
from datetime import datetime, timezone

from flask import Flask, jsonify, request


def healthy(agent: str, domain: str) -> dict:
    return {"agent": agent, "domain": domain, "status": "healthy", "lastReport": "ok",
            "metrics": {"successRate": 0.99, "alignment": 0.99, "backlogAgeMinutes": 1, "costBurnRatePerHour": 0.1},
            "context": {}, "checks": {"lastTaskSucceeded": True, "inputsValid": True, "configHealthy": True}}


class SmallAgents:
    """Agents whose state the test sets and whose action endpoints change it as real agents would."""

    def __init__(self, agents: dict[str, str]):
        self.lock = threading.Lock()
        self.state = {name: healthy(name, domain) for name, domain in agents.items()}
        self.calls: Counter = Counter()
        self.call_log: list[tuple[str, str, dict]] = []
        self.unfixable: set[str] = set()
        self.app = Flask("small-agents")
        self.app.add_url_rule("/agents/<agent>/actions/<action>", view_func=self.action, methods=["POST"])

    def set(self, agent: str, **changes) -> None:
        """Change an agent: status, errorCode (None clears), metrics and checks keys."""
        with self.lock:
            s = self.state[agent]
            for key, value in changes.items():
                if key == "status":
                    s["status"] = value
                elif key == "errorCode":
                    s["context"].pop("errorCode", None) if value is None else s["context"].update(errorCode=value)
                elif key in s["metrics"]:
                    s["metrics"][key] = value
                else:
                    s["checks"][key] = value

    def tick(self) -> None:
        """Nothing evolves on its own here; the test changes the state."""

    def signals(self) -> list[dict]:
        now = datetime.now(timezone.utc).isoformat()
        with self.lock:
            return [{**copy.deepcopy(s), "ts": now} for s in self.state.values()]

    def action(self, agent: str, action: str):
        body = request.get_json(silent=True) or {}
        with self.lock:
            self.calls[(agent, action)] += 1
            self.call_log.append((agent, action, body))
            if agent not in self.state:
                return jsonify({"error": "unknown agent"}), 404
            s = self.state[agent]
            if agent in self.unfixable:
                return jsonify({"done": False, "missing": ["API_BASE"]})
            if action == "restartAgent":
                s["context"].pop("errorCode", None)
                s["status"] = "healthy"
            elif action == "retryLastTask":
                s["checks"]["lastTaskSucceeded"] = True
            elif action == "checkSecrets":
                s["checks"]["configHealthy"] = True
                s["context"].pop("errorCode", None)
                s["status"] = "healthy"
        return jsonify({"done": True})
