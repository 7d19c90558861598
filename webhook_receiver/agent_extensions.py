"""The agents' signal extensions on the Prometheus path: Prometheus never holds them, so the exporters are asked."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterable, Mapping

import requests

from autonomy.settings import Secret
from autonomy.signal_extensions import EXTENSIONS

from .agent_view import FLEET, AgentView
from .upstream_deadline import deadline as upstream_deadline
from .upstreams import DeadlinePassed, UpstreamError, get_json

TIMEOUT_SECONDS = 2.0  # read for the lineage only: never worth holding an attempt or a verification up longer
RETRY_AFTER_SECONDS = 30.0  # after a failure, not asked again for this long (noted meanwhile): a down exporter
BATCH = 200  # agents per request (an exporter takes up to 500)
NOTE = "extensions_note"
PATH = "/api/v1/signals/extensions"


def _table(body: object, url: str) -> dict[str, dict]:
    table = body.get("extensions") if isinstance(body, dict) else None
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in table.items()):
        raise UpstreamError(f"{url}: extensions answered in an unexpected shape")
    return table


class ExporterExtensions:
    """GET /api/v1/signals/extensions of every exporter (several when sharded), with the push token, bounded by
    TIMEOUT_SECONDS in all; after a failure, the exporters are left alone for RETRY_AFTER_SECONDS."""

    def __init__(self, base_urls: str | list[str], token: Secret | None, session: requests.Session | None = None,
                 timeout: float = TIMEOUT_SECONDS, clock: Callable[[], float] = time.monotonic):
        urls = base_urls.split(",") if isinstance(base_urls, str) else list(base_urls)
        self.base_urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        self.session = session or requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token.reveal()}"
        self.timeout, self.clock = timeout, clock
        self._failed: tuple[float, str] | None = None  # when the last read failed, and why

    def read(self, agents: Iterable[str]) -> dict[str, dict]:
        """The extensions of AGENTS' latest signals (an agent no exporter holds a live signal of is left out);
        UpstreamError when an exporter cannot be read."""
        if self._failed is not None and self.clock() - self._failed[0] < RETRY_AFTER_SECONDS:
            raise UpstreamError(f"{self._failed[1]} (not asked again for {RETRY_AFTER_SECONDS:g} s)")
        names, found, began = sorted(set(agents)), {}, time.time()
        try:
            with upstream_deadline(time.time() + self.timeout):
                for base in self.base_urls:
                    for first in range(0, len(names), BATCH):
                        params = [("agent", a) for a in names[first:first + BATCH]]
                        found.update(_table(get_json(self.session, base + PATH, params), base + PATH))
        except UpstreamError as exc:
            if not isinstance(exc, DeadlinePassed) or time.time() - began >= self.timeout:
                self._failed = (self.clock(), str(exc))  # not when the caller's time ran out: no fault of theirs
            raise
        self._failed = None
        return found


def with_extensions(views: Mapping[str, AgentView], source: ExporterExtensions | None) -> dict[str, AgentView]:
    """VIEWS with each agent's extensions in its metrics (the lineage's before/after), or a note of why they
    could not be read there instead: never an error, and nothing a verdict reads."""
    wanted = sorted(a for a, v in views.items() if a != FLEET and v.signal is not None and not v.problem)
    if source is None or not wanted:
        return dict(views)
    try:
        found, note = source.read(wanted), None
    except UpstreamError as exc:
        found, note = {}, f"extensions not read: {exc}"
    out = dict(views)
    for agent in wanted:
        extra = {NOTE: note} if note else {EXTENSIONS: found[agent]} if found.get(agent) else {}
        if extra:
            out[agent] = replace(views[agent], metrics={**views[agent].metrics, **extra})
    return out
