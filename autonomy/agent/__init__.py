"""The agent library: what an operator's own agent imports to be monitored and remediated by the layer.

One line per agent (pack §10), on the agent's Flask app or standalone (its own server on HOST:PORT):

    from autonomy.agent import attach

    agent = attach(app, name="Writer", domain="Content", layer_url="http://exporter:9108",
                   push_token_env="AUTOREM_EXPORTER_TOKEN", action_token_env="WRITER_ACTION_TOKEN")

    @agent.actions.handler("restartAgent")
    def restart(request):                      # request.body: the primitive's validated arguments
        worker.restart(hard=request.body.get("mode") == "hard")
        return {"restarted": True}

    agent.update(status="error", error_code="TIMEOUT", success_rate=0.7)   # a change: pushed at once
    agent.stop()                                                           # at shutdown

With metrics="embedded" nothing is pushed: the app serves GET /metrics itself, for Prometheus to scrape.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from autonomy.http_edge import BackgroundServer
from autonomy.settings import Secret

from .action_server import ActionRequest, ActionResult, ActionServer
from .heartbeat import Backoff, Heartbeat
from .signal_builder import AgentReport, build_signal

__all__ = ["ActionRequest", "ActionResult", "ActionServer", "AgentReport", "Attached", "Backoff", "Heartbeat",
           "attach", "build_signal"]
METRICS_MODES = ("push", "embedded")
METRICS_PATH = "/metrics"
log = logging.getLogger("autonomy.agent")


class _Metrics:
    """The embedded mode's GET /metrics: the agent's newest signal observed, then the exposition rendered."""

    def __init__(self, name: str, source: Any):
        from exporter.embedded import EmbeddedExporter

        self.source, self.exporter = source, EmbeddedExporter(agent=name)
        self.observe()

    def observe(self) -> None:
        try:
            self.exporter.observe(self.source())
        except ValueError as exc:  # the report went wrong: the last good signal stays exposed, and it is said
            log.error("embedded metrics: the agent's signal was refused, the last one stays: %s", exc)

    def wsgi(self, environ: dict, start_response: Any) -> Any:
        self.observe()
        return self.exporter.wsgi_app(environ, start_response)


class Attached:
    """One agent attached to the layer: `.actions` (register handlers), `.report` (its numbers), `.changed()`,
    `.update(**fields)`, `.heartbeat` (None when metrics are embedded), `.url` (standalone only), `.stop()`."""

    def __init__(self, name: str, domain: str | None, report: AgentReport, actions: ActionServer,
                 heartbeat: Heartbeat | None, metrics: _Metrics | None, server: BackgroundServer | None):
        self.name, self.domain, self.report, self.actions = name, domain, report, actions
        self.heartbeat, self.metrics, self._server = heartbeat, metrics, server
        self.url = f"http://{server.host}:{server.port}" if server else None

    def signal(self) -> dict:
        """The agent's signal as of now."""
        return build_signal(self.name, self.domain, self.report, time.time())

    def changed(self) -> None:
        """The report changed: push it now (embedded: observe it now). Never blocks."""
        if self.heartbeat is not None:
            self.heartbeat.changed()
        if self.metrics is not None:
            self.metrics.observe()

    def update(self, **fields: Any) -> "Attached":
        """Change the report's fields together, then `changed()`; a change that would make the signal invalid is
        refused (ValueError naming the field) and the report stays as it was."""
        before = self.report.snapshot()
        self.report.update(**fields)
        try:
            self.signal()
        except ValueError:
            self.report.update(**{k: before[k] for k in fields})
            raise
        self.changed()
        return self

    def stop(self) -> None:
        """Stop the heartbeat and the standalone server (a mounted app's routes stay)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> "Attached":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _routed(path: str, app: Any, otherwise: Any) -> Any:
    """A WSGI app sending PATH to APP and everything else to OTHERWISE."""
    def route(environ: dict, start_response: Any) -> Any:
        return (app if environ.get("PATH_INFO") == path else otherwise)(environ, start_response)
    return route


def attach(app: Any | None = None, *, name: str, domain: str | None = None, layer_url: str | None = None,
           push_token: str | Secret | None = None, push_token_env: str | None = None,
           action_token: str | Secret | None = None, action_token_env: str | None = None,
           report: AgentReport | None = None, interval: float = 15.0, metrics: str = "push",
           host: str = "127.0.0.1", port: int = 0, insecure_no_auth: bool = False,
           handlers: Mapping[str, Callable[[ActionRequest], Any]] | None = None,
           **heartbeat_options: Any) -> Attached:
    """Attach agent NAME: its action endpoints mounted on the Flask APP (or served alone on HOST:PORT when APP is
    None), and its signal pushed to LAYER_URL (the exporter, or the receiver's direct path) every INTERVAL
    seconds and on each change; with METRICS="embedded", served as GET /metrics instead. Tokens are given or read
    by name (NAME or NAME_FILE); without an action token, only insecure_no_auth=True serves the actions.
    HANDLERS (primitive -> fn) are registered before anything is served, so no call meets a 501 meanwhile.
    HEARTBEAT_OPTIONS go to the Heartbeat (session, backoff, timeout, clock, rng)."""
    if metrics not in METRICS_MODES:
        raise ValueError(f"metrics: {metrics!r} is not one of {', '.join(METRICS_MODES)}")
    report = report if report is not None else AgentReport()
    build_signal(name, domain, report, time.time())  # a wrong name, domain or report fails here, not on a beat

    def source() -> dict:
        return build_signal(name, domain, report, time.time())

    actions = ActionServer(agents=name, token=action_token, token_env=action_token_env,
                           insecure_no_auth=insecure_no_auth)
    for primitive, handler in (handlers or {}).items():  # before anything is served: no 501 in between
        actions.handler(primitive)(handler)
    heartbeat = embedded = None
    if metrics == "push":
        if layer_url is None:
            raise ValueError("layer_url: required to push signals (or metrics='embedded' to be scraped)")
        heartbeat = Heartbeat(layer_url, push_token, token_env=push_token_env, source=source, interval=interval,
                              **heartbeat_options)
    else:
        if layer_url is not None or push_token is not None or push_token_env is not None or heartbeat_options:
            extra = f" ({', '.join(sorted(heartbeat_options))})" if heartbeat_options else ""
            raise ValueError(f"metrics='embedded' pushes nothing: drop layer_url, the push token and the heartbeat's "
                             f"options{extra}")
        embedded = _Metrics(name, source)
    server = None
    if app is not None:
        if embedded is not None and any(rule.rule == METRICS_PATH for rule in app.url_map.iter_rules()):
            raise ValueError(f"metrics='embedded': the app already serves {METRICS_PATH}")
        actions.mount(app)
        if embedded is not None:
            app.wsgi_app = _routed(METRICS_PATH, embedded.wsgi, app.wsgi_app)
    else:
        standalone = _routed(METRICS_PATH, embedded.wsgi, actions) if embedded is not None else actions
        server = BackgroundServer(standalone, host, port, threads=4,
                                  max_request_body_size=actions.max_body_bytes).start()
    if heartbeat is not None:
        heartbeat.start()
    return Attached(name, domain, report, actions, heartbeat, embedded, server)
