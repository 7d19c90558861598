"""What every HTTP service of the layer shares at its edge: JSON errors, bearer auth, body limits, serving."""
from __future__ import annotations

import hmac
import logging
import threading
import warnings
from functools import wraps
from typing import Any, Callable

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from .settings import Secret, Settings, SettingsError

MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger("autonomy.http")


class ApiError(Exception):
    """An error answered as JSON with its status code and details."""

    def __init__(self, status: int, message: str, errors: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors)


def install_json_errors(app: Flask) -> None:
    """Every error leaves as JSON, never as an HTML page."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body: dict[str, Any] = {"error": exc.message}
        if exc.errors:
            body["errors"] = exc.errors
        response = jsonify(body)
        response.status_code = exc.status
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        response = jsonify({"error": exc.description or exc.name})
        response.status_code = exc.code or 500
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = jsonify({"error": "internal error", "type": type(exc).__name__})
        response.status_code = 500
        return response


def configure_app(app: Flask, test_config: dict[str, Any] | None, token_key: str, token_env: str,
                  what: str) -> Any:
    """Common config of the layer's apps: body limit, settings, and no start without TOKEN_KEY unless INSECURE.

    Returns the Settings the app runs with.
    """
    app.config.from_mapping(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, INSECURE=False)
    if test_config:
        app.config.update(test_config)
    settings = app.config.get("SETTINGS") or Settings.from_env()
    app.config["SETTINGS"] = settings
    app.config.setdefault(token_key, getattr(settings, token_env.removeprefix("AUTOREM_").lower()))
    if app.config[token_key] is None and not app.config["INSECURE"]:
        raise SettingsError([f"{token_env}: not set (nor {token_env}_FILE); set one, "
                             f"or pass --insecure to accept unauthenticated {what}"])
    install_json_errors(app)
    install_security_headers(app)
    return settings


def bearer_ok(expected: Secret | None, header: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer` header against the expected token."""
    if expected is None:
        return False
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), expected.reveal().encode("utf-8"))


def require_token(config_key: str) -> Callable:
    """Decorator: the request must carry the bearer token held in app.config[config_key], unless INSECURE."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any):
            if not current_app.config.get("INSECURE") and not bearer_ok(
                    current_app.config.get(config_key), request.headers.get("Authorization")):
                raise ApiError(401, "missing or wrong bearer token")
            return view(*args, **kwargs)
        return guarded
    return decorate


def json_body() -> bytes:
    """The raw body of a JSON request, after the content-type and size checks."""
    if request.mimetype != "application/json":
        raise ApiError(415, f"content type must be application/json, not {request.mimetype or 'none'!r}")
    length = request.content_length
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or MAX_BODY_BYTES
    if length is not None and length > limit:
        raise ApiError(413, f"body of {length} bytes is over the limit of {limit}")
    if length is None and request.environ.get("wsgi.input_terminated"):
        # A streamed (chunked) body: read one byte past the limit to tell a cut body from a whole one.
        data = request.environ["wsgi.input"].read(limit + 1)
    else:
        data = request.get_data(cache=False)
    if len(data) > limit:
        raise ApiError(413, f"body is over the limit of {limit} bytes")
    return data


# waitress serves with select(), so well under its 1,024 descriptors; an idle connection is dropped after
# CHANNEL_TIMEOUT seconds, so idle sockets cannot hold the limit for long. Put a proxy with its own limits in
# front of anything reachable from the internet (README, "Limits").
CONNECTION_LIMIT = 500
CHANNEL_TIMEOUT_SECONDS = 30
SERVER_OPTIONS = {"connection_limit": CONNECTION_LIMIT, "channel_timeout": CHANNEL_TIMEOUT_SECONDS,
                  "cleanup_interval": 10, "ident": "autonomy"}
# With waitress's default send_bytes (1) the worker thread writes each answer itself while the main loop spins on
# select, and the two fight over the GIL; buffered, a small answer leaves in one send (exporter pushes: about 3x
# the single-signal rate, docs/exporter-scaling.md). Deprecated in waitress 3: passed only while it is known.
BUFFERED_SEND = {"send_bytes": 18000}
# Pages the layer serves hold data from agents and alerts: nothing in them may run, load or frame anything.
HTML_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")


def install_security_headers(app: Flask) -> None:
    """Every answer: no content sniffing; every HTML answer: a strict Content-Security-Policy too."""

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", HTML_POLICY)
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response


def create_waitress_server(app: Any, host: str, port: int, threads: int = 8, **extra: Any) -> Any:
    """A waitress server for APP with SERVER_OPTIONS (and EXTRA), and the buffered sends where this waitress knows
    them."""
    from waitress import create_server
    from waitress.adjustments import Adjustments

    known = {name for name, _ in Adjustments._params}
    options = {**SERVER_OPTIONS, **{k: v for k, v in BUFFERED_SEND.items() if k in known}, **extra}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "send_bytes will be removed", DeprecationWarning)
        return create_server(app, host=host, port=port, threads=threads, **options)


def serve(app: Flask, host: str, port: int, threads: int = 8) -> None:
    """Serve APP with waitress (a production WSGI server) until interrupted."""
    server = create_waitress_server(app, host, port, threads)
    log.info("serving on http://%s:%s", host, server.effective_port)
    print(f"serving on http://{host}:{server.effective_port}", flush=True)
    server.run()


class BackgroundServer:
    """A WSGI app served by waitress on HOST:PORT (0: a free one) from a daemon thread, stopped from any thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8, **options: Any):
        self.server = create_waitress_server(app, host, port, threads, **options)
        self.host, self.port = host, self.server.effective_port
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"waitress-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _serve(self) -> None:
        from waitress import wasyncore

        sockets = getattr(self.server, "map", None) or self.server._map
        while not self._stopping.is_set():
            wasyncore.loop(timeout=0.1, map=sockets, count=1)
        # Closed here, in the loop's own thread, so no select() sees a socket vanish under it.
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(sockets)

    def start(self) -> "BackgroundServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
