"""The exporter service: agents push signals, Prometheus scrapes /metrics."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from autonomy.http_edge import ApiError, configure_app, json_body, require_token
from autonomy.settings import Settings
from autonomy.signal_contract import SignalError, load_signals

from .signal_store import AgentLimit, SignalStore

EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"
signals_bp = Blueprint("signals", __name__)
metrics_bp = Blueprint("metrics", __name__)


@dataclass
class ExporterState:
    """Resources the exporter's views share: the store and its own metrics."""

    store: SignalStore
    registry: CollectorRegistry
    signals_total: Counter


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
    for result in ("stored", "ignored_older", "rejected", "refused_agent_limit"):
        signals_total.labels(result)
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
        state.signals_total.labels("rejected").inc()
        status = 400 if all(e.startswith("(body)") for e in exc.errors) else 422
        raise ApiError(status, "invalid signal; nothing was stored", exc.errors) from None
    try:
        result = state.store.put_many(signals)
    except AgentLimit as exc:
        state.signals_total.labels("refused_agent_limit").inc(len(signals))
        raise ApiError(429, str(exc)) from None
    state.signals_total.labels("stored").inc(result.stored)
    state.signals_total.labels("ignored_older").inc(result.ignored_older)
    return jsonify({"stored": result.stored, "ignored_older": result.ignored_older})


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
    init_state(app, app.config.get("STORE"))
    app.register_blueprint(signals_bp)
    app.register_blueprint(metrics_bp)
    return app
