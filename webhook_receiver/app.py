"""The receiver's Flask application: create_app, and the resources its blueprints share."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from autonomy.contract_routes import contract_bp
from autonomy.http_edge import configure_app
from autonomy.latest_signals import LatestSignals
from autonomy.settings import Secret, Settings, SettingsError

from .actions import ActionRunner
from .agent_extensions import ExporterExtensions
from .agent_states import AgentStateCollector
from .alerts_api import alerts_bp
from .console_api import console_bp
from .console_events import EventWriter
from .console_feed import ConsoleFeed
from .console_fleet import ConsoleFleet
from .data_dir import DataDirLock, writable_file
from .engine import RemediationEngine, Upstreams
from .incidents_api import incidents_bp
from .lineage import LINEAGE_FILE, LineageLog
from .operations_api import operations_bp
from .playbooks import load_playbooks
from .receiver_metrics import ReceiverMetrics
from .receiver_state import Receiver
from .rollout_api import rollout_bp
from .runbooks_api import runbooks_bp
from .signals_api import signals_bp
from .store import describe, open_store
from .upstreams import AlertmanagerApi, PrometheusApi, grafana_alertmanager
from .week_kpis import WeekKpis


def _tracer_provider(span_exporter: Any) -> TracerProvider:
    """Spans go where the standard OTEL_* settings say (console or OTLP), or to the exporter given (tests)."""
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
        "OTEL_SERVICE_NAME", "autonomy-receiver")}))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        return provider
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if choice == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif choice == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise SettingsError(["OTEL_TRACES_EXPORTER: otlp needs the opentelemetry-exporter-otlp-proto-http "
                                 "package"]) from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif choice not in ("none", ""):
        raise SettingsError([f"OTEL_TRACES_EXPORTER: {choice!r} is not supported (console, otlp or none)"])
    return provider


def _upstreams(settings: Settings, signals: LatestSignals) -> Upstreams:
    return Upstreams(
        prometheus=PrometheusApi(settings.prometheus_url),
        alertmanager=AlertmanagerApi(settings.alertmanager_url) if settings.alertmanager_url else None,
        latest_signal=signals.latest,
        all_signals=lambda: [e.signal for e in signals.snapshot()],
        extensions=(ExporterExtensions(settings.exporter_url, settings.exporter_token) if settings.exporter_url
                    else None),
        grafana=grafana_alertmanager(settings.grafana_url, settings.grafana_token) if settings.grafana_url else None,
    )


def init_app(app: Flask) -> Receiver:
    """Build the store, lineage, metrics, playbooks and engine from the app's settings (UPSTREAMS, a function of
    the latest signals, replaces Prometheus and Alertmanager in tests)."""
    settings: Settings = app.config["SETTINGS"]
    data_dir = Path(app.config.get("DATA_DIR") or settings.data_dir)
    playbooks = app.config.get("PLAYBOOKS") or load_playbooks(
        Path(settings.playbooks_file), actions_base_url=settings.actions_base_url or None,
        env=app.config.get("ENVIRON"))
    lock = DataDirLock(data_dir).acquire()  # one receiver per data directory, for the process's life
    try:
        store = open_store(settings.store_url, data_dir, settings.reopen_grace_seconds)
        writable_file(data_dir / LINEAGE_FILE, "decision lineage")
    except BaseException:
        lock.release()
        raise
    secrets = [settings.webhook_token, settings.read_token, settings.escalation_token, settings.exporter_token,
               settings.grafana_token,
               app.config.get("WEBHOOK_TOKEN"), playbooks.token, *(e.token for e in playbooks.agents.values())]
    lineage = LineageLog(data_dir / LINEAGE_FILE, [s for s in secrets if isinstance(s, Secret)], store=store)
    metrics = ReceiverMetrics()
    metrics.lineage_skipped.set_function(lambda: lineage.torn_lines)
    signals = LatestSignals(expiry_seconds=settings.agent_expiry_seconds, max_agents=settings.max_agents)
    provider = _tracer_provider(app.config.get("SPAN_EXPORTER"))
    upstreams = (app.config.get("UPSTREAMS") or _upstreams)(settings, signals)
    public = app.config.get("PUBLIC_URL", "").rstrip("/")
    events = EventWriter(store, playbooks.escalate_to)
    feed = ConsoleFeed(store, max_agents=settings.max_agents)
    events.listeners.append(feed.wake)
    engine = RemediationEngine(settings, store, lineage, metrics, playbooks, upstreams,
                               ActionRunner(playbooks), provider.get_tracer("autonomy.receiver"),
                               lineage_url=lambda agent: f"{public}/lineage?agent={quote(agent, safe='')}",
                               events=events)
    metrics.watch_states(AgentStateCollector(store.open_incidents, engine.running_agents))
    fleet = ConsoleFleet(lambda: engine.up.prometheus, lambda: (
        {e.signal.agent for e in signals.snapshot()} | set(playbooks.agents)), settings.max_agents)
    state = Receiver(settings, store, lineage, metrics, playbooks, signals, engine, provider, lock,
                     describe(settings.store_url, data_dir), events, feed, fleet,
                     WeekKpis(lambda: engine.up.prometheus))
    app.extensions["autonomy_receiver"] = state
    if app.config.get("START_ENGINE", True):
        engine.start()
    return state


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The receiver app; without a webhook token it refuses to start unless INSECURE is set."""
    app = Flask(__name__)
    settings = configure_app(app, test_config, "WEBHOOK_TOKEN", "AUTOREM_WEBHOOK_TOKEN", "webhooks")
    app.config.setdefault("READ_TOKEN", settings.read_token)
    app.json.sort_keys = False  # lineage entries keep the pack's field order
    init_app(app)
    for blueprint in (alerts_bp, signals_bp, incidents_bp, operations_bp, rollout_bp, runbooks_bp, contract_bp,
                      console_bp):
        app.register_blueprint(blueprint)
    return app


def shutdown(app: Flask) -> None:
    """Stop the engine's threads and close the store (tests, and the CLI on exit)."""
    state: Receiver = app.extensions["autonomy_receiver"]
    state.stop_feed()
    state.engine.stop()
    state.events.close()
    state.tracer_provider.shutdown()
    state.store.close()
    state.lock.release()
