"""What the receiver's blueprints share: the resources init_app attached, and the decorators every view uses."""
from __future__ import annotations

from dataclasses import dataclass
from functools import wraps

from flask import current_app, request
from opentelemetry.sdk.trace import TracerProvider

from autonomy.http_edge import ApiError, bearer_ok
from autonomy.latest_signals import LatestSignals
from autonomy.settings import Settings

from .data_dir import DataDirLock
from .engine import RemediationEngine
from .lineage import LineageLog
from .playbooks import PlaybookSet
from .receiver_metrics import ReceiverMetrics
from .store import IncidentStore, IngestResult


@dataclass
class Receiver:
    """Everything the receiver's views use, attached to the app by init_app."""

    settings: Settings
    store: IncidentStore
    lineage: LineageLog
    metrics: ReceiverMetrics
    playbooks: PlaybookSet
    signals: LatestSignals
    engine: RemediationEngine
    tracer_provider: TracerProvider
    lock: DataDirLock
    store_description: str = ""  # which store, without its password: for /readyz and logs


def receiver() -> Receiver:
    return current_app.extensions["autonomy_receiver"]


def counted(endpoint: str):
    """Count every answer of ENDPOINT by status code, errors included."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            metrics = receiver().metrics
            try:
                response = view(*args, **kwargs)
            except ApiError as exc:
                metrics.webhook_requests.labels(endpoint, str(exc.status)).inc()
                raise
            except Exception as exc:
                metrics.webhook_requests.labels(endpoint, str(getattr(exc, "code", 500))).inc()
                raise
            metrics.webhook_requests.labels(endpoint, str(response.status_code)).inc()
            return response
        return wrapper
    return decorate


def readable(view):
    """Open, unless AUTOREM_READ_TOKEN is set: then a bearer token or ?token= (for dashboard links)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        expected = current_app.config.get("READ_TOKEN")
        if expected is not None and not current_app.config.get("INSECURE"):
            header = request.headers.get("Authorization") or (
                f"Bearer {request.args['token']}" if "token" in request.args else None)
            if not bearer_ok(expected, header):
                raise ApiError(401, "missing or wrong read token")
        return view(*args, **kwargs)
    return guarded


def accepted(source: str, result: IngestResult) -> dict:
    """After the store committed: wake the workers, account for closures, and say what happened."""
    state = receiver()
    if result.refused:
        raise ApiError(503, "work queue full; nothing was stored, retry later")
    state.metrics.incidents.labels(source).inc(len(result.opened))
    state.engine.wake(len(result.to_run))
    state.engine.on_closed(result.closed)
    return {"notification": result.notification_id, "opened": list(result.opened),
            "queued": list(result.to_run), "duplicates": list(result.duplicates),
            "closed": [i.id for i in result.closed]}
