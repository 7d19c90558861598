"""The exporter's latest-signal store: each agent's exposition lines rendered once, at ingest."""
from __future__ import annotations

from autonomy.latest_signals import AgentLimit, LatestSignals, PutResult, StoredSignal
from autonomy.signal_contract import Signal

from .agent_metrics import AGENT_METRICS, family_header, render_samples

__all__ = ["AgentLimit", "PutResult", "SignalStore", "StoredSignal"]


class SignalStore(LatestSignals):
    """LatestSignals whose entries carry their sample lines per metric, so a scrape only joins strings."""

    def prepare(self, signal: Signal) -> tuple[str, ...]:
        return tuple(render_samples(m, signal) for m in AGENT_METRICS)

    def render(self) -> str:
        """Text exposition (format 0.0.4) of every agent family, identical to prometheus_client's."""
        entries = self.snapshot()
        parts: list[str] = []
        for index, metric in enumerate(AGENT_METRICS):
            parts.append(family_header(metric))
            parts.extend(e.fragments[index] for e in entries)
        return "".join(parts)
