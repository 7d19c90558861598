"""The operator console: its pages, its login, its switches, and the live event stream (/api/v1/events)."""
from __future__ import annotations

import threading
import time
from functools import wraps
from importlib import resources
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, redirect, request

from autonomy.http_edge import BUFFERED_SEND, ApiError

from . import console_page
from .agent_states import fleet_states
from .console_auth import COOKIE, SESSION_SECONDS, csrf_ok, role_for_token, same_origin, session_cookie, viewer
from .console_feed import ConsoleFeed, tiles_of
from .console_fleet import page_of
from .receiver_state import receiver
from .rollout import EVERY, RolloutError
from .store import StoreError

console_bp = Blueprint("console", __name__)
STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
TILES_PER_PAGE = 200
MAX_STREAMS = 8  # each open stream holds one of the receiver's 16 server threads
STREAM_SECONDS = 300.0  # then the browser reconnects (and resumes): no stream holds a thread for ever
KEEPALIVE_SECONDS = 15.0  # a comment line, so that a stream whose browser went away ends within this
LOG_PAGE, LOG_PAGE_MAX = 20, 100
_streams = threading.BoundedSemaphore(MAX_STREAMS)
# The server sends a running answer's output only once this much is waiting (BUFFERED_SEND, for small answers'
# sake): each write of a stream is padded to it with a comment line, which browsers ignore.
PAD_BYTES = BUFFERED_SEND.get("send_bytes", 0)


def _padded(text: str) -> str:
    short = PAD_BYTES - len(text.encode("utf-8")) - 3
    return text + ":" + " " * short + "\n\n" if short > 0 else text
NOTICES = {"remediation": "The kill switch was changed.", "rollout": "The rollout was changed.",
           "login": "Logged in.", "logout": "Logged out."}


def _html(text: str, status: int = 200) -> Response:
    response = Response(text, status=status, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = console_page.CONSOLE_POLICY
    response.headers["Cache-Control"] = "no-store"
    # Its own origin on the console's forms (checked against CSRF), nothing to other sites.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _to_login(next_path: str) -> Response:
    return redirect("/console/login?" + urlencode({"next": next_path}), code=303)


def _safe_next(text: str | None) -> str:
    """Only a path of the console itself (never another site: no open redirect)."""
    if text and text.startswith("/console") and not text.startswith("//") and "\\" not in text:
        return text
    return "/console"


@console_bp.get("/console/static/<name>")
def static(name: str):
    if name not in STATIC:
        raise ApiError(404, f"no static file {name!r}")
    body = (resources.files("webhook_receiver") / "console_static" / name).read_bytes()  # package data
    response = Response(body, content_type=STATIC[name])
    response.headers["Cache-Control"] = "max-age=300"
    return response


@console_bp.get("/console/login")
def login_form():
    return _html(console_page.login(None, _safe_next(request.args.get("next"))))


@console_bp.post("/console/login")
def login():
    next_path = _safe_next(request.form.get("next"))
    if not same_origin():
        return _html(console_page.login("This form must be sent from this receiver's own page.", next_path), 403)
    role = role_for_token(request.form.get("token", ""))
    if role is None:
        return _html(console_page.login("That is neither the read token nor the write token.", next_path), 401)
    response = redirect(next_path, code=303)
    response.set_cookie(COOKIE, session_cookie(role), max_age=SESSION_SECONDS, httponly=True, samesite="Strict",
                        secure=request.is_secure or current_app.config.get("PUBLIC_URL", "").startswith("https:"),
                        path="/")
    return response


@console_bp.post("/console/logout")
def logout():
    who = viewer()
    if not csrf_ok(who, request.form.get("csrf")):
        return _html(console_page.message("Not logged out", "The form was not this session's own."), 403)
    response = redirect("/console/login", code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response


def _feed() -> ConsoleFeed:
    state = receiver()
    state.start_feed()
    return state.feed


@console_bp.get("/console")
def console():
    who = viewer()
    if not who.can_read:
        return _to_login("/console")
    state = receiver()
    feed = _feed()
    last_id = feed.last_id  # before the ledger is read: whatever happens after, the stream replays
    after = request.args.get("after") or None
    # One read of the ledger for the page: every open incident and lease, the counts and the tiles from them.
    incidents, leased = state.store.open_incidents(), state.store.leased_agents()
    fleet = fleet_states(incidents, set(leased))
    everyone = state.fleet.names() | set(fleet)
    names, next_after = page_of(everyone, after, TILES_PER_PAGE)
    tiles = tiles_of(names, incidents, leased, feed.progress()).values()
    counts = {"healthy": 0, "recovering": 0, "escalated": 0}
    for name, _ in fleet.values():
        counts[str(name)] += 1
    counts["healthy"] = len(everyone) - counts["recovering"] - counts["escalated"]
    body = console_page.console(list(tiles), counts, state.engine.remediation_status(),
                                state.engine.rollout().as_dict(), state.kpis.now(), who,
                                NOTICES.get(request.args.get("done", "")), next_after, after is None, last_id)
    return _html(body)


def switching(view):
    """A switch's view, given the viewer: only for a write session, with its CSRF token (403 page otherwise)."""

    @wraps(view)
    def guarded():
        who = viewer()
        if not who.can_write:
            return _html(console_page.message(
                "Not switched", "Switching needs the write token: log in with the write token to switch.", who), 403)
        if not csrf_ok(who, request.form.get("csrf")):
            return _html(console_page.message(
                "Not switched", "The form was not this session's own (CSRF check failed): reload the console.",
                who), 403)
        return view(who)
    return guarded


@console_bp.post("/console/remediation")
@switching
def switch_remediation(who):
    wanted = request.form.get("enabled")
    if wanted not in ("true", "false"):
        return _html(console_page.message("Not switched", "enabled: must be true or false.", who), 422)
    reason = (request.form.get("reason") or "").strip()[:500] or "switched on the console"
    try:
        receiver().engine.set_enabled(wanted == "true", reason)
    except Exception as exc:  # noqa: BLE001 - shown to the operator, who decides what next
        return _html(console_page.message("Not switched", f"The kill switch was not changed: {exc}", who), 409)
    return redirect("/console?done=remediation", code=303)


def _names(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return [EVERY] if names == ["*"] else names


@console_bp.post("/console/rollout")
@switching
def switch_rollout(who):
    reason = (request.form.get("reason") or "").strip()[:500] or "set on the console"
    try:
        receiver().engine.set_rollout(_names(request.form.get("agents")), _names(request.form.get("classes")),
                                      reason)
    except RolloutError as exc:
        return _html(console_page.message("Rollout unchanged", "; ".join(exc.errors), who), 422)
    except OSError as exc:
        return _html(console_page.message("Rollout unchanged", f"its lineage line could not be written: {exc}",
                                          who), 503)
    return redirect("/console?done=rollout", code=303)


def _store_id(text: str | None, name: str) -> int | None:
    """A store id given back by a page or a browser (any 18 digits fit a bigint); 400 naming NAME otherwise."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ApiError(400, f"{name}: {text[:40]!r} is not an id this receiver gave out")
    return int(text)


@console_bp.get("/console/log")
def remediation_log():
    """One agent's remediation log (or every agent's), newest first, LOG_PAGE entries a page."""
    who = viewer()
    if not who.can_read:
        return _to_login(request.full_path.rstrip("?"))
    agent = request.args.get("agent") or None
    limit = request.args.get("limit", str(LOG_PAGE))
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= LOG_PAGE_MAX:
        raise ApiError(400, f"limit: {limit[:20]!r} is not a whole number from 1 to {LOG_PAGE_MAX}")
    try:
        page = receiver().lineage.page(int(limit), _store_id(request.args.get("cursor"), "cursor"), agent=agent)
    except StoreError as exc:
        return _html(console_page.message("Remediation log", f"The lineage cannot be read now: {exc}", who), 503)
    older = None
    if page.next_cursor is not None:
        older = "/console/log?" + urlencode({**({"agent": agent} if agent else {}), "limit": limit,
                                             "cursor": page.next_cursor})
    return _html(console_page.remediation_log(agent, page.entries, older, who))


class _Slot:
    """One of the MAX_STREAMS, given back once however the stream ends."""

    def __init__(self):
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                _streams.release()


class _Stream:
    """A stream's frames; closed by the server even before its first frame (its slot is given back then too)."""

    def __init__(self, frames, slot: _Slot):
        self.frames, self.slot = frames, slot

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self.frames)

    def close(self) -> None:
        try:
            self.frames.close()
        finally:
            self.slot.release()


@console_bp.get("/api/v1/events")
def events():
    """Server-sent events: each outcome, attempt, step and switch as it is stored (by any receiver on the store),
    with the agent's tile; resumes after the Last-Event-ID a reconnecting browser sends."""
    if not viewer().can_read:
        raise ApiError(401, "missing or wrong read token (log in on /console)")
    last_id = _store_id(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"), "Last-Event-ID")
    feed = _feed()
    if not _streams.acquire(blocking=False):
        raise ApiError(503, f"{MAX_STREAMS} event streams are open already; retry later")
    try:
        resumed = feed.resume(last_id) if last_id is not None else None
        position = feed.position() if resumed is None else resumed[1]
    except BaseException:
        _streams.release()
        raise

    def stream():
        try:
            if last_id is not None and resumed is None:  # too far behind to replay: the page reloads the ledger
                yield _padded("retry: 2000\n\nevent: reset\ndata: {}\n\n")
                return
            replay = "".join(event.frame() for event in (resumed[0] if resumed else ()))
            yield _padded("retry: 2000\n\n" + replay + feed.snapshot().frame())
            cursor, ends = position, time.monotonic() + STREAM_SECONDS
            while not feed.stopped and time.monotonic() < ends:
                batch = feed.wait(cursor, KEEPALIVE_SECONDS)
                if not batch:
                    yield _padded(": keepalive\n\n")
                    continue
                if batch[0].seq > cursor + 1:  # this stream fell behind what the feed keeps
                    yield _padded("event: reset\ndata: {}\n\n")
                    return
                yield _padded("".join(event.frame() for event in batch))
                cursor = batch[-1].seq
        finally:
            slot.release()

    slot = _Slot()
    response = Response(_Stream(stream(), slot), content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response
