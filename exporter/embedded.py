"""The exporter embedded in one agent's process: its own signal as GET /metrics, scraped by Prometheus directly."""
from __future__ import annotations

import json
import math
import threading
import time
from typing import Any, Callable, Iterable

from autonomy.settings import Settings
from autonomy.signal_contract import future_errors, load_signals
from autonomy.vocabulary import AGENT_NAME, AGENT_NAME_RULE

from .app import EXPOSITION_TYPE
from .signal_store import SignalStore

METRICS_PATH = "/metrics"
_METHODS = ("GET", "HEAD")


def _not_json(value: Any, path: str = "") -> str | None:
    """The first part of VALUE a JSON document cannot hold, as `path: why`; None when it is all JSON."""
    stack = [(path, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    return f"{where or '(root)'}: key {key!r} is not a string"
                stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{where or '(root)'}: {node!r} is not a finite number"
        elif node is not None and not isinstance(node, (str, int, float, bool)):
            return f"{where or '(root)'}: a {type(node).__name__} is not a JSON value"
    return None


class EmbeddedExporter:
    """One agent's latest signal, exposed with the shared exporter's metric families and names (the same store
    and renderer), so every rule and the receiver read it alike. It holds one agent: the one given, else the
    first observed; no expiry, the agent's own target going down is what tells Prometheus it is gone."""

    def __init__(self, agent: str | None = None, max_clock_skew_seconds: float | None = None,
                 clock: Callable[[], float] = time.time):
        if agent is not None and (not isinstance(agent, str) or not AGENT_NAME.fullmatch(agent)):
            raise ValueError(f"agent: {agent!r} is not an agent name ({AGENT_NAME_RULE})")
        if max_clock_skew_seconds is None:
            max_clock_skew_seconds = Settings.from_env({}).max_clock_skew_seconds
        self.agent, self.max_clock_skew_seconds, self._clock = agent, float(max_clock_skew_seconds), clock
        self._store = SignalStore(expiry_seconds=math.inf)
        self._lock = threading.Lock()

    def observe(self, signal: dict) -> bool:
        """Make SIGNAL (a §2 signal document) the one exposed; False when it is older than the one held.
        ValueError naming the field when the contract refuses it, it is dated further ahead than the clock
        skew allows (as the shared exporter refuses it), or it is another agent's."""
        if not isinstance(signal, dict):
            raise ValueError(f"(root): expected one signal object, got {type(signal).__name__}")
        problem = _not_json(signal)
        if problem:
            raise ValueError(problem)
        # Through JSON text, as a push is: the same checks, and a copy the caller can no longer change.
        [parsed] = load_signals(json.dumps(signal))
        errors = future_errors([parsed], self._clock(), self.max_clock_skew_seconds)
        if errors:
            raise ValueError("; ".join(errors))
        with self._lock:
            if self.agent is None:
                self.agent = parsed.agent
            elif parsed.agent != self.agent:
                raise ValueError(f"agent: {parsed.agent!r} is not {self.agent!r}, the one agent this embedded "
                                 "exporter exposes")
            return self._store.put(parsed)

    def metrics_text(self) -> bytes:
        """The text exposition (format 0.0.4): every agent family, with this agent's samples once it reported."""
        return self._store.render().encode("utf-8")

    def wsgi_app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """WSGI: GET (or HEAD) /metrics; any other path 404, any other method 405, with a JSON error."""
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path != METRICS_PATH:
            return _error(start_response, "404 Not Found", f"no such path {path!r}: this serves GET {METRICS_PATH}")
        if method not in _METHODS:
            return _error(start_response, "405 Method Not Allowed",
                          f"method {method} is not allowed on {METRICS_PATH}: use GET", [("Allow", "GET, HEAD")])
        body = self.metrics_text()
        start_response("200 OK", [("Content-Type", EXPOSITION_TYPE), ("Content-Length", str(len(body))),
                                  ("X-Content-Type-Options", "nosniff")])
        return [b""] if method == "HEAD" else [body]

    __call__ = wsgi_app


def _error(start_response: Callable, status: str, message: str,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (json.dumps({"error": message}) + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("X-Content-Type-Options", "nosniff"), *(extra or [])])
    return [body]
