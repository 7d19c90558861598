"""What the receiver's blueprints share: the resources init_app attached, and the decorators every view uses."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import wraps

from flask import current_app, request
from opentelemetry.sdk.trace import TracerProvider

from autonomy.http_edge import ApiError, bearer_ok
from autonomy.latest_signals import LatestSignals
from autonomy.settings import Settings

from .console_auth import session_viewer
from .console_events import EventWriter
from .console_feed import ConsoleFeed
from .console_fleet import ConsoleFleet
from .data_dir import DataDirLock
from .engine import RemediationEngine
from .lineage import LineageLog
from .playbooks import PlaybookSet
from .receiver_metrics import ReceiverMetrics
from .store import IncidentStore, IngestResult
from .week_kpis import WeekKpis


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
    events: EventWriter | None = None
    feed: ConsoleFeed | None = None
    fleet: ConsoleFleet | None = None
    kpis: WeekKpis | None = None
    _feed_lock: threading.Lock = field(default_factory=threading.Lock)
    _feed_started: bool = False

    def start_feed(self) -> None:
        """The console's feed thread, started by the first console page or stream (not by every app a test
        builds)."""
        with self._feed_lock:
            if not self._feed_started:
                self.feed.start()
                self._feed_started = True

    def stop_feed(self) -> None:
        with self._feed_lock:
            if self._feed_started:
                self.feed.stop()
                self._feed_started = False


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
    """Open, unless AUTOREM_READ_TOKEN is set: then the read token as a bearer token or ?token= (for dashboard
    links), or a console session (made with the read or the write token)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        expected = current_app.config.get("READ_TOKEN")
        if expected is not None and not current_app.config.get("INSECURE"):
            header = request.headers.get("Authorization") or (
                f"Bearer {request.args['token']}" if "token" in request.args else None)
            if not (bearer_ok(expected, header) or session_viewer() is not None):
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
