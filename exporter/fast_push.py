"""The push's hot path, in front of Flask: a push that needs nothing of Flask is answered without it."""
from __future__ import annotations

import io
import time
from typing import Any, Callable, Iterable

from flask import Flask

from autonomy.http_edge import MAX_BODY_BYTES, bearer_ok
from autonomy.latest_signals import AgentLimit
from autonomy.signal_contract import Signal, SignalError, checked_signal, future_errors, parse_json

PUSH_PATH = "/api/v1/signals"
ANSWER = b'{"ignored_older":%d,"stored":%d}\n'  # as jsonify writes {"stored": n, "ignored_older": m}


def checked_batch(body: bytes, now: float, max_skew: float) -> list[Signal] | None:
    """The signals of BODY when the hand checks accept every one and none is dated too far ahead; None when
    anything is in doubt, never an error (load_signals decides then, and names the problems)."""
    try:
        doc = parse_json(body)
    except SignalError:
        return None
    signals = []
    for item in doc if type(doc) is list else [doc]:
        signal = checked_signal(item)
        if signal is None:
            return None
        signals.append(signal)
    return signals if signals and not future_errors(signals, now, max_skew) else None


class FastPush:
    """WSGI middleware around the exporter's Flask app. A `POST /api/v1/signals` with the right bearer token,
    the type `application/json` exactly, a Content-Length within the limit, and signals the hand checks accept
    and the store has room for, is stored and answered here: the 200, headers (the security header of
    install_security_headers too) and body the Flask view gives (a test compares the two), at a fraction of
    the cost. Anything else, or any doubt, goes on to Flask with the body replayed, and Flask answers it as it
    always did: the errors, their messages and their counts are its own."""

    def __init__(self, app: Flask, state: Any):
        self.app, self.state, self.wsgi_app = app, state, app.wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PUSH_PATH and environ.get("REQUEST_METHOD") == "POST" \
                and environ.get("CONTENT_TYPE") == "application/json":
            body = self._push(environ)
            if body is not None:
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                          ("X-Content-Type-Options", "nosniff")])
                return [body]
        return self.wsgi_app(environ, start_response)

    def _push(self, environ: dict) -> bytes | None:
        config = self.app.config
        if not config.get("INSECURE") and not bearer_ok(config.get("EXPORTER_TOKEN"),
                                                        environ.get("HTTP_AUTHORIZATION")):
            return None
        length = environ.get("CONTENT_LENGTH") or ""
        if not (length.isascii() and length.isdigit()) \
                or not 0 < int(length) <= (config.get("MAX_CONTENT_LENGTH") or MAX_BODY_BYTES):
            return None
        try:
            data = environ["wsgi.input"].read(int(length))
        except Exception:  # a client gone mid-body, under a server that streams it: Flask says so
            data = b""
        environ["wsgi.input"] = io.BytesIO(data)  # for Flask, should it answer after all (a short body: 400)
        if len(data) != int(length):
            return None
        signals = checked_batch(data, time.time(), config["SETTINGS"].max_clock_skew_seconds)
        if signals is None:
            return None
        try:
            result = self.state.store.put_many(signals)
        except AgentLimit:  # nothing was stored: the view tries again, answers the 429 and counts it
            return None
        self.state.count(result)
        return ANSWER % (result.ignored_older, result.stored)
