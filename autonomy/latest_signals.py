"""The latest signal per agent, expired after a silence and bounded in number of agents."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .signal_contract import Signal


@dataclass(frozen=True)
class StoredSignal:
    """A signal, when it arrived (monotonic seconds) and what the store's owner prepared from it at ingest."""

    signal: Signal
    received: float
    fragments: tuple[str, ...] = ()


class AgentLimit(ValueError):
    """A batch would take the store past its number of agents; nothing of it was stored."""

    def __init__(self, new_agents: list[str], limit: int):
        self.new_agents, self.limit = new_agents, limit
        shown = ", ".join(new_agents[:5]) + (" ..." if len(new_agents) > 5 else "")
        super().__init__(f"{len(new_agents)} new agent(s) ({shown}) beyond AUTOREM_MAX_AGENTS={limit}; "
                         "nothing was stored")


@dataclass(frozen=True)
class PutResult:
    """How many signals of a batch were stored, and how many were older than what is held."""

    stored: int
    ignored_older: int


class LatestSignals:
    """Thread-safe map agent -> latest signal; agents silent past `expiry_seconds` are dropped."""

    def __init__(self, expiry_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic,
                 max_agents: int | None = None):
        self.expiry_seconds = expiry_seconds
        self.max_agents = max_agents
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: dict[str, StoredSignal] = {}
        self.expired_total = 0

    def prepare(self, signal: Signal) -> tuple[str, ...]:
        """What to keep with each signal besides the signal itself (outside the lock); nothing here."""
        return ()

    def check_room(self, agents: Iterable[str]) -> None:
        """AgentLimit unless the store can take AGENTS without exceeding `max_agents`."""
        with self._lock:
            self._check_room(set(agents), self._clock())

    def _check_room(self, agents: set[str], now: float) -> None:
        if self.max_agents is None:
            return
        new = sorted(a for a in agents if a not in self._agents)  # not a set of every held agent per batch
        if new and len(self._agents) + len(new) > self.max_agents:
            self._drop_expired(now)  # the silent ones make room first
            if len(self._agents) + len(new) > self.max_agents:
                raise AgentLimit(new, self.max_agents)

    def put_many(self, signals: Iterable[Signal], enforce_limit: bool = True) -> PutResult:
        """Store a validated batch atomically; a signal older than the held one for its agent is ignored.
        AgentLimit (and nothing stored) when its new agents would exceed `max_agents`."""
        now = self._clock()
        prepared = [StoredSignal(s, now, self.prepare(s)) for s in signals]
        stored = ignored = 0
        with self._lock:
            if enforce_limit:
                self._check_room({e.signal.agent for e in prepared}, now)
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

    def held(self, agent: str) -> StoredSignal | None:
        """The entry held for AGENT, expired or not, read without the lock (one dict read: it is atomic)."""
        return self._agents.get(agent)

    def latest(self, agent: str) -> Signal | None:
        """The agent's latest live signal, if any."""
        with self._lock:
            entry = self._agents.get(agent)
        if entry is None or entry.received < self._clock() - self.expiry_seconds:
            return None
        return entry.signal

    def _drop_expired(self, now: float) -> None:
        cutoff = now - self.expiry_seconds
        expired = [agent for agent, e in self._agents.items() if e.received < cutoff]
        for agent in expired:
            del self._agents[agent]
        self.expired_total += len(expired)

    def snapshot(self) -> list[StoredSignal]:
        """Live entries sorted by agent, after dropping the expired ones."""
        with self._lock:
            self._drop_expired(self._clock())
            entries = list(self._agents.values())
        entries.sort(key=lambda e: e.signal.agent)
        return entries

    def __len__(self) -> int:
        return len(self.snapshot())
