"""An agent's action endpoints (POST /agents/{agent}/actions/{primitive}) as a plain WSGI app, per the contract."""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from autonomy import openapi
from autonomy.http_edge import bearer_ok
from autonomy.primitives import BY_NAME, IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN, REPLAYED_HEADER
from autonomy.settings import Secret
from autonomy.signal_contract import SignalError, parse_json
from autonomy.vocabulary import AGENT_NAME, AGENT_NAME_RULE

from .idempotency import Answer, IdempotencyTable, fingerprint
from .tokens import resolve_token

MAX_BODY_BYTES = 64 * 1024
ROUTE = re.compile(r"(?:^|/)agents/(?P<agent>[^/]+)/actions/(?P<primitive>[^/]+)\Z")
MOUNTED = re.compile(r"/agents/[^/]+/actions/[^/]+\Z")
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN.removeprefix("^").removesuffix("$"))  # fullmatch: no trailing newline
_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
            422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}
log = logging.getLogger("autonomy.agent.actions")


@dataclass(frozen=True)
class ActionRequest:
    """One call of a primitive, as its handler sees it (the body already valid against its schema)."""

    agent: str
    primitive: str
    body: dict
    idempotency_key: str | None


@dataclass(frozen=True)
class ActionResult:
    """A handler's answer when a plain dict (200) or (status, dict) is not enough: extra headers (Retry-After)."""

    status: int = 200
    body: dict = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[ActionRequest], Any]


def _agent_matcher(agents: str | Iterable[str] | Callable[[str], bool]) -> Callable[[str], bool]:
    if callable(agents):
        return agents
    names = {agents} if isinstance(agents, str) else set(agents) if isinstance(agents, Iterable) else None
    if not names:
        raise ValueError("agents: name one agent, a set of names, or a callable(name) -> bool")
    wrong = sorted(repr(n) for n in names if not isinstance(n, str) or not AGENT_NAME.fullmatch(n))
    if wrong:
        raise ValueError(f"agents: {', '.join(wrong)} is not an agent name ({AGENT_NAME_RULE})")
    return frozenset(names).__contains__


def _answer(status: int, body: dict, *headers: tuple[str, str]) -> Answer:
    return Answer(status, body, tuple(headers))


def _invalid(field_path: str, message: str) -> Answer:
    return _answer(422, {"error": f"{field_path}: {message}", "field": field_path})


class ActionServer:
    """The WSGI app answering the layer's action calls for AGENTS (a name, a set, or a callable(name) -> bool).
    Checks in the contract's order: POST (405), bearer token (401), agent (404), primitive (404; 501 when not
    registered), body (413, 422), Idempotency-Key (422), then an answer replayed or the handler run."""

    def __init__(self, *, agents: str | Iterable[str] | Callable[[str], bool], token: str | Secret | None = None,
                 token_env: str | None = None, insecure_no_auth: bool = False, idempotency_size: int = 10_000,
                 idempotency_ttl_s: float = 86_400.0, clock: Callable[[], float] = time.monotonic,
                 max_body_bytes: int = MAX_BODY_BYTES, in_flight_wait_s: float = 2.0,
                 env: Mapping[str, str] | None = None):
        self._token = resolve_token(token, token_env, "action server token", env)
        if self._token is None and not insecure_no_auth:
            raise ValueError("ActionServer: no token (token=..., or token_env=NAME to read NAME or NAME_FILE); pass "
                             "insecure_no_auth=True to serve actions to anyone who can reach them")
        if self._token is not None and insecure_no_auth:
            raise ValueError("ActionServer: a token and insecure_no_auth=True contradict each other")
        self.is_known_agent = _agent_matcher(agents)
        self.table = IdempotencyTable(idempotency_size, idempotency_ttl_s, clock, in_flight_wait_s)
        self.max_body_bytes = max_body_bytes
        self.handlers: dict[str, Handler] = {}

    def handler(self, primitive: str) -> Callable[[Handler], Handler]:
        """Decorator: FN(ActionRequest) answers PRIMITIVE with a dict (200), (status, dict) or an ActionResult."""
        if primitive not in BY_NAME:
            raise ValueError(f"handler: {primitive!r} is not one of the pack's primitives ({', '.join(BY_NAME)})")

        def register(fn: Handler) -> Handler:
            if primitive in self.handlers:
                raise ValueError(f"handler: {primitive} already has a handler ({self.handlers[primitive].__name__})")
            self.handlers[primitive] = fn
            return fn
        return register

    def mount(self, flask_app: Any) -> Any:
        """Serve /agents/<agent>/actions/<primitive> of FLASK_APP from this server (its other routes unchanged)."""
        inner = flask_app.wsgi_app

        def routed(environ: dict, start_response: Callable) -> Iterable[bytes]:
            if MOUNTED.match(environ.get("PATH_INFO", "")):
                return self(environ, start_response)
            return inner(environ, start_response)
        flask_app.wsgi_app = routed
        return flask_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        answer = self.answer(environ)
        body = json.dumps(answer.body, separators=(",", ":")).encode("utf-8") + b"\n"
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("X-Content-Type-Options", "nosniff"), *answer.headers]
        start_response(f"{answer.status} {_REASONS.get(answer.status, 'Unknown')}", headers)
        return [body]

    def answer(self, environ: dict) -> Answer:
        """The answer to one WSGI request."""
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        route = ROUTE.search(path)
        if route is None:
            return _answer(404, {"error": f"no such path: {path[:200]}; actions are POST "
                                          "/agents/{agent}/actions/{primitive}"})
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(405, {"error": f"method {environ.get('REQUEST_METHOD')} not allowed; actions are POST"},
                           ("Allow", "POST"))
        if not self._authorized(environ.get("HTTP_AUTHORIZATION")):
            return _answer(401, {"error": "missing or wrong bearer token"}, ("WWW-Authenticate", "Bearer"))
        agent, primitive = route["agent"], route["primitive"]
        if not AGENT_NAME.fullmatch(agent) or not self.is_known_agent(agent):
            return _answer(404, {"error": f"unknown agent {agent[:80]!r}", "agent": agent[:80]})
        if primitive not in BY_NAME:
            return _answer(404, {"error": f"unknown primitive {primitive[:80]!r}: not one of the pack's twelve",
                                 "primitive": primitive[:80]})
        handler = self.handlers.get(primitive)
        if handler is None:
            return _answer(501, {"error": f"agent does not implement {primitive}", "primitive": primitive})
        body = self._body(environ, primitive)
        if isinstance(body, Answer):
            return body
        key = environ.get("HTTP_" + IDEMPOTENCY_HEADER.upper().replace("-", "_"))
        if key is not None and not _KEY.fullmatch(key):
            return _invalid(IDEMPOTENCY_HEADER, f"{key[:80]!r} does not match {IDEMPOTENCY_KEY_PATTERN}")
        request = ActionRequest(agent, primitive, body, key)
        if key is None:
            return self._run(handler, request)
        return self._run_once(handler, request)

    def _authorized(self, header: str | None) -> bool:
        # insecure_no_auth, chosen explicitly; else the layer's own constant-time bearer check
        return self._token is None or bearer_ok(self._token, header)

    def _body(self, environ: dict, primitive: str) -> dict | Answer:
        length = environ.get("CONTENT_LENGTH") or ""
        if length and not (length.isascii() and length.isdigit()):
            return _answer(400, {"error": f"Content-Length {length[:40]!r} is not a number"})
        if length and int(length) > self.max_body_bytes:
            return _answer(413, {"error": f"body of {length} bytes is over the limit of {self.max_body_bytes}"})
        stream = environ.get("wsgi.input")
        if length:
            data = stream.read(int(length))
        elif environ.get("wsgi.input_terminated") and stream is not None:  # a chunked body: read one byte past
            data = stream.read(self.max_body_bytes + 1)
        else:
            data = b""
        if len(data) > self.max_body_bytes:
            return _answer(413, {"error": f"body is over the limit of {self.max_body_bytes} bytes"})
        try:
            body = parse_json(data)
        except SignalError as exc:
            return _invalid("(body)", str(exc).removeprefix("(body): "))
        if not isinstance(body, dict):
            return _invalid("(body)", f"expected a JSON object, got {type(body).__name__}")
        errors = openapi.body_errors(openapi.request_schema_name(primitive), body)
        if errors:
            where, message = errors[0]
            return _invalid(where or "(body)", message)
        return body

    def _run_once(self, handler: Handler, request: ActionRequest) -> Answer:
        claim = self.table.claim((request.agent, request.primitive, request.idempotency_key),
                                 fingerprint(request.body))
        if claim.kind == "conflict":
            return _answer(422, {"error": f"Idempotency-Key {request.idempotency_key} was used for a different "
                                          "request", "field": IDEMPOTENCY_HEADER})
        if claim.kind == "busy":
            return _answer(503, {"error": f"the request with Idempotency-Key {request.idempotency_key} is still "
                                          "running; ask again"}, ("Retry-After", "1"))
        if claim.kind == "replay":
            first = claim.answer
            return Answer(first.status, first.body, (*first.headers, (REPLAYED_HEADER, "true")))
        answer = self._run(handler, request)
        if answer.status >= 500 or answer.status == 429:
            self.table.forget(claim)  # the layer retries these: the retry must run again
        else:
            self.table.finish(claim, answer)
        return answer

    def _run(self, handler: Handler, request: ActionRequest) -> Answer:
        try:
            result = handler(request)
        except Exception as exc:
            log.exception("handler of %s for %s failed (key %s)", request.primitive, request.agent,
                          request.idempotency_key)
            return _answer(500, {"error": f"handler failed: {type(exc).__name__}"})
        answer = _handler_answer(result)
        if answer is None:
            log.error("handler of %s answered %r, not a dict, (status, dict) or ActionResult", request.primitive,
                      type(result).__name__)
            return _answer(500, {"error": f"handler failed: it answered {type(result).__name__}, not a dict, "
                                          "(status, dict) or ActionResult"})
        log.info("%s for %s answered %d (key %s)", request.primitive, request.agent, answer.status,
                 request.idempotency_key)
        return answer


def _handler_answer(result: Any) -> Answer | None:
    """A handler's return as an Answer; None when it is none of the shapes a handler may return."""
    headers: tuple[tuple[str, str], ...] = ()
    if isinstance(result, ActionResult):
        status, body = result.status, result.body
        headers = tuple((str(k), str(v)) for k, v in dict(result.headers).items())
    elif isinstance(result, tuple) and len(result) == 2:
        status, body = result
    elif isinstance(result, dict):
        status, body = 200, result
    else:
        return None
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599 \
            or not isinstance(body, dict):
        return None
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return Answer(status, body, headers)
