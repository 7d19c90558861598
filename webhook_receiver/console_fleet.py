"""Which agents the console shows a tile for: those Prometheus scrapes and the others the receiver knows (those that
push their signals here, those the playbooks name); with the agents of open incidents, sorted, a page at a time."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from .upstream_deadline import deadline as upstream_deadline
from .upstreams import PrometheusApi, UpstreamError, samples

log = logging.getLogger(__name__)

CACHE_SECONDS = 30.0  # Prometheus is asked at most this often by one receiver
PROMETHEUS_SECONDS = 3.0  # a page waits no longer than this for Prometheus's list


class ConsoleFleet:
    """The fleet's agent names from every source; MAX_AGENTS bounds what is kept."""

    def __init__(self, prometheus: Callable[[], PrometheusApi], others: Callable[[], Iterable[str]],
                 max_agents: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.prometheus, self.others, self.max_agents, self.clock = prometheus, others, max_agents, clock
        self._lock = threading.Lock()
        self._scraped: tuple[float, frozenset[str]] | None = None

    def _from_prometheus(self) -> frozenset[str]:
        with self._lock:
            if self._scraped is None or self.clock() - self._scraped[0] >= CACHE_SECONDS:
                try:
                    with upstream_deadline(time.time() + PROMETHEUS_SECONDS):
                        rows = samples(self.prometheus().query("count by (agent) (autonomy_agent_info)"), "agent")
                    names = frozenset(r["metric"]["agent"] for r in rows[:self.max_agents])
                except UpstreamError as exc:
                    log.warning("console: Prometheus did not list the agents: %s", exc)
                    names = self._scraped[1] if self._scraped else frozenset()
                self._scraped = (self.clock(), names)
            return self._scraped[1]

    def names(self) -> set[str]:
        return set(self._from_prometheus()) | set(self.others())


def page_of(names: Iterable[str], after: str | None, limit: int) -> tuple[list[str], str | None]:
    """Up to LIMIT of NAMES, sorted, after AFTER, and the cursor of the next page (None on the last)."""
    names = sorted(n for n in names if after is None or n > after)
    return names[:limit], (names[limit - 1] if len(names) > limit else None)
