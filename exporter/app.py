"""The exporter service: agents push signals, Prometheus scrapes /metrics."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from autonomy.contract_routes import contract_bp
from autonomy.http_edge import ApiError, configure_app, json_body, require_token
from autonomy.settings import Settings
from autonomy.signal_contract import SignalError, load_signals
from autonomy.signal_extensions import extensions_of
from autonomy.vocabulary import AGENT_NAME, AGENT_NAME_RULE

from .fast_push import FastPush
from .signal_store import AgentLimit, PutResult, SignalStore

EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESULTS = ("stored", "ignored_older", "rejected", "refused_agent_limit")
MAX_EXTENSION_AGENTS = 500  # agents per extensions read: a URL of names stays well under any server's limit
signals_bp = Blueprint("signals", __name__)
metrics_bp = Blueprint("metrics", __name__)


@dataclass
class ExporterState:
    """Resources the exporter's views share: the store and its own metrics."""

    store: SignalStore
    registry: CollectorRegistry
    signals_total: Counter

    def __post_init__(self) -> None:
        self.results = {r: self.signals_total.labels(r) for r in RESULTS}  # every label set from 0, looked up once

    def count(self, result: PutResult) -> None:
        """Count a stored batch: its signals stored and those older than the held ones."""
        for name, n in (("stored", result.stored), ("ignored_older", result.ignored_older)):
            if n:  # an increment by 0 changes nothing but takes the counter's lock
                self.results[name].inc(n)


class _StoreStats:
    def __init__(self, store: SignalStore):
        self.store = store

    def collect(self):
        live = GaugeMetricFamily("autonomy_exporter_agents", "Agents with a live signal in the exporter.")
        live.add_metric([], len(self.store))
        expired = CounterMetricFamily("autonomy_exporter_agents_expired",
                                      "Agents dropped from the exposition after going silent.")
        expired.add_metric([], self.store.expired_total)
        return [live, expired]


def init_state(app: Flask, store: SignalStore | None = None) -> ExporterState:
    """Attach the store and the exporter's self-metrics to APP; label sets start at 0."""
    settings: Settings = app.config["SETTINGS"]
    store = store or SignalStore(expiry_seconds=settings.agent_expiry_seconds, max_agents=settings.max_agents)
    registry = CollectorRegistry()
    signals_total = Counter("autonomy_exporter_signals", "Signals received, by result.", ["result"],
                            registry=registry)
    registry.register(_StoreStats(store))
    state = ExporterState(store, registry, signals_total)
    app.extensions["autonomy_exporter"] = state
    return state


def _state() -> ExporterState:
    return current_app.extensions["autonomy_exporter"]


@signals_bp.post("/api/v1/signals")
@require_token("EXPORTER_TOKEN")
def push_signals():
    state = _state()
    try:
        signals = load_signals(json_body(), time.time(), current_app.config["SETTINGS"].max_clock_skew_seconds)
    except SignalError as exc:
        state.results["rejected"].inc()
        status = 400 if all(e.startswith("(body)") for e in exc.errors) else 422
        raise ApiError(status, "invalid signal; nothing was stored", exc.errors) from None
    try:
        result = state.store.put_many(signals)
    except AgentLimit as exc:
        state.results["refused_agent_limit"].inc(len(signals))
        raise ApiError(429, str(exc)) from None
    state.count(result)
    return jsonify({"stored": result.stored, "ignored_older": result.ignored_older})


@signals_bp.get("/api/v1/signals/extensions")
@require_token("EXPORTER_TOKEN")
def signal_extensions():
    """The extensions of each named agent's latest live signal ({} for none); agents without one are `unknown`."""
    agents = request.args.getlist("agent")
    if not agents or len(agents) > MAX_EXTENSION_AGENTS:
        raise ApiError(400, f"agent: name 1 to {MAX_EXTENSION_AGENTS} agents (?agent=A&agent=B), not {len(agents)}")
    bad = next((a for a in agents if not AGENT_NAME.fullmatch(a)), None)
    if bad is not None:
        raise ApiError(400, f"agent: {bad!r} is not an agent name ({AGENT_NAME_RULE})")
    store, known, unknown = _state().store, {}, []
    for agent in dict.fromkeys(agents):
        signal = store.latest(agent)
        if signal is None:
            unknown.append(agent)
        else:
            known[agent] = extensions_of(signal)
    return jsonify({"extensions": known, "unknown": unknown})


@metrics_bp.get("/metrics")
def metrics():
    state = _state()
    body = state.store.render().encode("utf-8") + generate_latest(state.registry)
    return Response(body, content_type=EXPOSITION_TYPE)


@metrics_bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok", "agents": len(_state().store)})


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the exporter app; without a push token it refuses to start unless INSECURE is set."""
    app = Flask(__name__)
    configure_app(app, test_config, "EXPORTER_TOKEN", "AUTOREM_EXPORTER_TOKEN", "pushes")
    state = init_state(app, app.config.get("STORE"))
    app.wsgi_app = FastPush(app, state)  # type: ignore[method-assign]
    app.register_blueprint(signals_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(contract_bp)
    return app
