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


class SignalStore:
    """Thread-safe map agent -> latest signal; agents silent past `expiry_seconds` are dropped."""

    def __init__(self, expiry_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic,
                 max_agents: int | None = None):
        self.expiry_seconds = expiry_seconds
        self.max_agents = max_agents
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: dict[str, StoredSignal] = {}
        self.expired_total = 0

    def check_room(self, agents: Iterable[str]) -> None:
        """AgentLimit unless the store can take AGENTS without exceeding `max_agents`."""
        with self._lock:
            self._check_room(set(agents), self._clock())

    def _check_room(self, agents: set[str], now: float) -> None:
        if self.max_agents is None:
            return
        new = sorted(agents - set(self._agents))
        if new and len(self._agents) + len(new) > self.max_agents:
            self._drop_expired(now)  # the silent ones make room first
            if len(self._agents) + len(new) > self.max_agents:
                raise AgentLimit(new, self.max_agents)

    def put_many(self, signals: Iterable[Signal], enforce_limit: bool = True) -> PutResult:
        """Store a validated batch atomically; a signal older than the held one for its agent is ignored.
        AgentLimit (and nothing stored) when its new agents would exceed `max_agents`."""
        now = self._clock()
        prepared = [StoredSignal(s, now, tuple(render_samples(m, s) for m in AGENT_METRICS)) for s in signals]
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

    def render(self) -> str:
        """Text exposition (format 0.0.4) of every agent family, identical to prometheus_client's."""
        entries = self.snapshot()
        parts: list[str] = []
        for index, metric in enumerate(AGENT_METRICS):
            parts.append(family_header(metric))
            parts.extend(e.fragments[index] for e in entries)
        return "".join(parts)
