"""The heartbeat: an agent's newest signal pushed to the layer on an interval and on change, from its own thread."""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import urlsplit

import requests

from autonomy.settings import Secret

from .tokens import resolve_token

PUSH_PATH = "/api/v1/signals"  # the exporter's, and the receiver's direct path: the same shapes and answers
RETRY_AFTER_CAP_S = 60.0  # beyond this the agent would look silent to the layer (AgentSilent: 120 s)
ERROR_TEXT_LIMIT = 300
log = logging.getLogger("autonomy.agent.heartbeat")


class Clock(Protocol):
    """Time as the heartbeat reads it: monotonic seconds for the schedule, wall time for the record, and a wait."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def wait(self, event: threading.Event, timeout: float) -> bool: ...


class SystemClock:
    """The real clocks, and Event.wait."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    @staticmethod
    def wait(event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


@dataclass(frozen=True)
class Backoff:
    """Delays between failed pushes: INITIAL, doubling to at most MAXIMUM, each stretched by up to JITTER of it."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff: initial {self.initial!r} must be above 0 and at most maximum {self.maximum!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff: jitter {self.jitter!r} must be between 0 and 1")

    def delay(self, failures: int, rng: random.Random) -> float:
        """The wait after the FAILURES-th failure in a row (1 for the first)."""
        base = min(self.maximum, self.initial * 2 ** min(max(failures - 1, 0), 64))
        return min(self.maximum, base * (1 + self.jitter * rng.random()))


def push_url(url: str) -> str:
    """URL itself, or URL/api/v1/signals when it names only the layer (no path)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url: {url!r} is not an http(s) URL")
    return url.rstrip("/") + PUSH_PATH if parts.path in ("", "/") else url


def retry_after(reply: requests.Response) -> float | None:
    """The answer's Retry-After in seconds, when it gives them as a number."""
    try:
        value = float(reply.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if 0 <= value < float("inf") else None


def error_text(reply: requests.Response) -> str:
    """What the layer said was wrong: its JSON `error` (and `errors`), or the start of its body."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        text = str(body["error"])
        if isinstance(body.get("errors"), list) and body["errors"]:
            text += ": " + "; ".join(str(e) for e in body["errors"])
    else:
        text = reply.text
    return f"HTTP {reply.status_code}: {text[:ERROR_TEXT_LIMIT]}"


class Heartbeat:
    """Pushes SOURCE()'s signal (a dict, or a list of them for a batch) to URL every INTERVAL seconds and soon after
    `changed()`, on a daemon thread. Each push sends what SOURCE() gives then, never an old one held back: after the
    layer was unreachable, the first push that gets through carries the newest signal only. Unreachable, 5xx and 429
    are retried with growing backoff (at least Retry-After); any other 4xx is logged and waits for the next beat."""

    def __init__(self, url: str, token: str | Secret | None = None, *, source: Callable[[], Any],
                 token_env: str | None = None, interval: float = 15.0, session: requests.Session | None = None,
                 backoff: Backoff | tuple[float, float, float] = Backoff(), timeout: float = 10.0,
                 clock: Clock | None = None, rng: random.Random | None = None, env: Mapping[str, str] | None = None):
        if not callable(source):
            raise ValueError("source: must be a callable returning a signal dict or a list of them")
        if not (isinstance(interval, (int, float)) and 0 < interval < float("inf")):
            raise ValueError(f"interval: {interval!r} is not a positive number of seconds")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise ValueError(f"timeout: {timeout!r} is not a positive number of seconds")
        self.url = push_url(url)
        self._token = resolve_token(token, token_env, "heartbeat token", env)
        self.source, self.interval, self.timeout = source, float(interval), float(timeout)
        self.backoff = backoff if isinstance(backoff, Backoff) else Backoff(*backoff)
        self.session = session or requests.Session()
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.pushed = self.failed = 0
        self.last_error: str | None = None
        self.last_push_at: float | None = None  # wall time (clock.time()) of the last accepted push
        self._failures_in_a_row = 0
        self._changed = False
        self._next_at = 0.0  # the first beat goes out at once
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "Heartbeat":
        """Start beating on a daemon thread; the first push goes out at once."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("heartbeat: already started")
            self._thread = threading.Thread(target=self._run, name="autonomy-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop beating and wait for the thread (a push in flight ends within its timeout)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def changed(self) -> None:
        """The agent's state changed: push soon (several calls before the push make one). Never blocks; during a
        backoff the retry, when it comes, carries the change."""
        self._changed = True
        self._wake.set()

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _due(self) -> bool:
        # During a backoff a change waits for the retry, which carries it.
        return self.clock.monotonic() >= self._next_at or (self._changed and self._failures_in_a_row == 0)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._due():
                self._changed = False
                self._beat()
                continue
            self._wake.clear()
            if not self._due() and not self._stopping.is_set():  # again: a change may have come before the clear
                self.clock.wait(self._wake, max(0.0, self._next_at - self.clock.monotonic()))

    def _beat(self) -> None:
        try:
            payload = self.source()
            if isinstance(payload, list) and not payload:
                self._next_at = self.clock.monotonic() + self.interval  # nothing to say this beat
                return
            if not isinstance(payload, (dict, list)):
                raise ValueError(f"source() gave {type(payload).__name__}, not a signal dict or a list of them")
            data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except Exception as exc:  # the agent's own source failed: nothing to send, the next beat tries again
            self._failed(f"source failed: {type(exc).__name__}: {exc}", retry=False)
            return
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        try:
            reply = self.session.post(self.url, data=data, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            self._failed(f"unreachable: {type(exc).__name__}: {exc}", retry=True)
            return
        except Exception as exc:  # anything else (a bad URL, a session that broke): said, and the beats go on
            self._failed(f"push failed: {type(exc).__name__}", retry=True)
            return
        if 200 <= reply.status_code < 300:
            self.pushed += 1
            self.last_push_at = self.clock.time()
            self._failures_in_a_row = 0
            self._next_at = self.clock.monotonic() + self.interval
        elif reply.status_code == 429 or reply.status_code >= 500:
            self._failed(error_text(reply), retry=True, at_least=retry_after(reply))
        else:  # the layer refused this signal itself: sending it again at once cannot help
            self._failed(error_text(reply), retry=False)

    def _failed(self, error: str, *, retry: bool, at_least: float | None = None) -> None:
        if self._token is not None:
            error = error.replace(self._token.reveal(), f"<{self._token.name}>")
        self.failed += 1
        self.last_error = error
        if retry:
            self._failures_in_a_row += 1
            wait = self.backoff.delay(self._failures_in_a_row, self.rng)
            if at_least is not None:
                wait = max(wait, min(at_least, RETRY_AFTER_CAP_S))
            log.warning("heartbeat to %s failed (%d in a row), retrying in %.1f s: %s", self.url,
                        self._failures_in_a_row, wait, error)
        else:
            self._failures_in_a_row = 0
            wait = self.interval
            log.error("heartbeat to %s refused, not retried before the next beat: %s", self.url, error)
        self._next_at = self.clock.monotonic() + wait
