"""Who may read and who may switch on the console: a login form exchanges the read or the write token for a
signed session cookie (HttpOnly, SameSite=Strict), and every change carries a CSRF token bound to that session."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import current_app, request

from autonomy.http_edge import bearer_ok
from autonomy.settings import Secret

COOKIE = "autonomy_console"
SESSION_SECONDS = 12 * 3600
READ, WRITE = "read", "write"


@dataclass(frozen=True)
class Viewer:
    """Who is looking: READ may see everything, WRITE may also switch; SESSION is the cookie's signature (the CSRF
    token's seed), empty without one."""

    role: str | None
    session: str = ""

    @property
    def can_read(self) -> bool:
        return self.role in (READ, WRITE)

    @property
    def can_write(self) -> bool:
        return self.role == WRITE


def _reveal(value) -> str | None:
    if isinstance(value, Secret):
        return value.reveal()
    return value or None


def _tokens() -> tuple[str | None, str | None]:
    return _reveal(current_app.config.get("READ_TOKEN")), _reveal(current_app.config.get("WEBHOOK_TOKEN"))


def _key() -> bytes:
    """Derived from the tokens, so that every receiver given them accepts the others' sessions, and changing a
    token ends every session made with the old one."""
    read, write = _tokens()
    return hashlib.sha256(b"autonomy-console-session\0" + (read or "").encode() + b"\0" + (write or "").encode()
                          ).digest()


def _sign(payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(_key(), payload, hashlib.sha256).digest()).decode().rstrip("=")


def insecure() -> bool:
    return bool(current_app.config.get("INSECURE"))


def role_for_token(token: str) -> str | None:
    """The role TOKEN gives (the write token reads too), or None."""
    read, write = _tokens()
    if write and hmac.compare_digest(token.encode(), write.encode()):
        return WRITE
    if read and hmac.compare_digest(token.encode(), read.encode()):
        return READ
    return None


def session_cookie(role: str, now: float | None = None) -> str:
    payload = json.dumps({"role": role, "exp": int((now or time.time()) + SESSION_SECONDS)}).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _sign(payload)


def _session() -> tuple[str | None, str]:
    text = request.cookies.get(COOKIE, "")
    body, _, signature = text.partition(".")
    if not body or not signature or len(text) > 512:
        return None, ""
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        doc = json.loads(payload)
    except ValueError:
        return None, ""
    if not hmac.compare_digest(signature, _sign(payload)) or not isinstance(doc, dict):
        return None, ""
    if doc.get("role") not in (READ, WRITE) or not isinstance(doc.get("exp"), int) or doc["exp"] < time.time():
        return None, ""
    return doc["role"], signature


def session_viewer() -> Viewer | None:
    """The viewer of the request's console session, None without a valid one."""
    role, session = _session()
    return Viewer(role, session) if role is not None else None


def viewer() -> Viewer:
    """The request's viewer: its session, else the read token as a bearer token (scripts; the write token reads
    nothing by itself, as on the API), else anonymous (who may read only when no read token is set)."""
    role, session = _session()
    if role is not None:
        return Viewer(role, session)
    read, _ = _tokens()
    header = request.headers.get("Authorization")
    if header and read and bearer_ok(current_app.config.get("READ_TOKEN"), header):
        return Viewer(READ)
    if insecure():
        return Viewer(WRITE)
    return Viewer(READ if read is None else None)


def csrf_token(who: Viewer) -> str:
    """The token a form of WHO's session carries: bound to the session, so another site cannot know it."""
    return _sign(b"csrf\0" + who.session.encode()) if who.session else ""


def same_origin() -> bool:
    """A browser's POST says where its page came from: it must be this receiver (a missing Origin is a client
    that is not a browser, which holds no cookie of ours either)."""
    origin = request.headers.get("Origin")
    if origin in (None, "null"):  # "null": a page whose policy sends no referrer; the browser's own word then
        return request.headers.get("Sec-Fetch-Site") in ((None, "same-origin") if origin is None else ("same-origin",))
    # Behind a proxy the browser's origin is the public one (PUBLIC_URL), not the address the receiver serves on.
    public = urlsplit(current_app.config.get("PUBLIC_URL") or "")
    return origin.rstrip("/") in {request.host_url.rstrip("/"), f"{public.scheme}://{public.netloc}"}


def csrf_ok(who: Viewer, sent: str | None) -> bool:
    """A change is the session's own: from this receiver's page, with the session's CSRF token."""
    expected = csrf_token(who)
    return bool(expected) and bool(sent) and hmac.compare_digest(expected, sent) and same_origin()
