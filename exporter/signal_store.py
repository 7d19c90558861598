"""The latest signal per agent, with each agent's exposition lines rendered once at ingest."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from autonomy.signal_contract import Signal

from .agent_metrics import AGENT_METRICS, family_header, render_samples


@dataclass(frozen=True)
class StoredSignal:
    """A signal, when it arrived (monotonic seconds) and its rendered sample lines per metric."""

    signal: Signal
    received: float
    fragments: tuple[str, ...]


@dataclass(frozen=True)
class PutResult:
    """How many signals of a batch were stored, and how many were older than what is held."""

    stored: int
    ignored_older: int


class SignalStore:
    """Thread-safe map agent -> latest signal; agents silent past `expiry_seconds` are dropped."""

    def __init__(self, expiry_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        self.expiry_seconds = expiry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: dict[str, StoredSignal] = {}
        self.expired_total = 0

    def put_many(self, signals: Iterable[Signal]) -> PutResult:
        """Store a validated batch atomically; a signal older than the held one for its agent is ignored."""
        now = self._clock()
        prepared = [StoredSignal(s, now, tuple(render_samples(m, s) for m in AGENT_METRICS)) for s in signals]
        stored = ignored = 0
        with self._lock:
            for entry in prepared:
                held = self._agents.get(entry.signal.agent)
                if held is not None and held.signal.timestamp > entry.signal.timestamp:
                    ignored += 1
                    continue
                self._agents[entry.signal.agent] = entry
                stored += 1
        return PutResult(stored, ignored)

    def put(self, signal: Signal) -> bool:
        """Store one signal; False if it is older than the one held."""
        return self.put_many([signal]).stored == 1

    def latest(self, agent: str) -> Signal | None:
        """The agent's latest live signal, if any."""
        with self._lock:
            entry = self._agents.get(agent)
        if entry is None or entry.received < self._clock() - self.expiry_seconds:
            return None
        return entry.signal

    def snapshot(self) -> list[StoredSignal]:
        """Live entries sorted by agent, after dropping the expired ones."""
        cutoff = self._clock() - self.expiry_seconds
        with self._lock:
            expired = [agent for agent, e in self._agents.items() if e.received < cutoff]
            for agent in expired:
                del self._agents[agent]
            self.expired_total += len(expired)
            entries = list(self._agents.values())
        entries.sort(key=lambda e: e.signal.agent)
        return entries

    def __len__(self) -> int:
        return len(self.snapshot())

    def render(self) -> str:
        """Text exposition (format 0.0.4) of every agent family, identical to prometheus_client's."""
        entries = self.snapshot()
        parts: list[str] = []
        for index, metric in enumerate(AGENT_METRICS):
            parts.append(family_header(metric))
            parts.extend(e.fragments[index] for e in entries)
        return "".join(parts)
