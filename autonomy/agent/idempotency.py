"""The answers an action server remembers by Idempotency-Key: bounded (least recently used out), with a TTL."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Answer:
    """An answer as it left: status, JSON body, extra headers."""

    status: int
    body: dict
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _Entry:
    fingerprint: str
    started_at: float
    answer: Answer | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Claim:
    """What the table says of a request: `replay` its answer, `conflict` (the key was used for another body),
    `busy` (the first is still running after the wait), or `run` it (then `finish` or `forget` the claim)."""

    kind: str
    key: tuple[str, ...]
    entry: _Entry | None = None

    @property
    def answer(self) -> Answer | None:
        return self.entry.answer if self.entry else None


def fingerprint(body: object) -> str:
    """The same for the same JSON value, whatever its keys' order."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


class IdempotencyTable:
    """At most SIZE answers, each for TTL_S seconds; thread-safe. A request whose key is running already waits for
    that one's answer (up to WAIT_S); an answer that was forgotten (a failed handler) lets the next one run."""

    def __init__(self, size: int = 10_000, ttl_s: float = 86_400.0, clock: Callable[[], float] = time.monotonic,
                 wait_s: float = 30.0):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"idempotency_size: {size!r} is not a whole number of at least 1")
        if not isinstance(ttl_s, (int, float)) or not 0 < ttl_s < float("inf"):
            raise ValueError(f"idempotency_ttl_s: {ttl_s!r} is not a positive number of seconds")
        self.size, self.ttl_s, self.clock, self.wait_s = size, float(ttl_s), clock, wait_s
        self._entries: OrderedDict[tuple[str, ...], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def claim(self, key: tuple[str, ...], body_fingerprint: str) -> Claim:
        """What to do with a request under KEY (agent, primitive, Idempotency-Key) with that body."""
        deadline = time.monotonic() + self.wait_s
        while True:
            with self._lock:
                entry = self._live(key)
                if entry is None:
                    entry = _Entry(body_fingerprint, self.clock())
                    self._entries[key] = entry
                    while len(self._entries) > self.size:
                        self._entries.popitem(last=False)
                    return Claim("run", key, entry)
                self._entries.move_to_end(key)
            if entry.fingerprint != body_fingerprint:
                return Claim("conflict", key, entry)
            if entry.answer is not None:
                return Claim("replay", key, entry)
            # The first request with this key is running: its answer is this one's too.
            if not entry.done.wait(max(0.0, deadline - time.monotonic())):
                return Claim("busy", key, entry)
            if entry.answer is not None:
                return Claim("replay", key, entry)
            # The first failed and was forgotten: look again (this one may run now).

    def finish(self, claim: Claim, answer: Answer) -> None:
        """Remember ANSWER for the claim's key, and hand it to the requests waiting for it."""
        claim.entry.answer = answer
        claim.entry.done.set()

    def forget(self, claim: Claim) -> None:
        """Remember nothing for the claim (its handler failed): a retry runs again."""
        with self._lock:
            if self._entries.get(claim.key) is claim.entry:
                del self._entries[claim.key]
        claim.entry.done.set()

    def _live(self, key: tuple[str, ...]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.answer is not None and self.clock() - entry.started_at >= self.ttl_s:
            del self._entries[key]
            return None
        return entry
