"""The exporter's latest-signal store: each agent's exposition lines rendered at ingest, once per change."""
from __future__ import annotations

from operator import attrgetter

from autonomy.exposition import label_value
from autonomy.latest_signals import AgentLimit, LatestSignals, PutResult, StoredSignal
from autonomy.signal_contract import Signal

from .agent_metrics import AGENT_METRICS, family_header, render_samples

__all__ = ["AgentLimit", "PutResult", "SignalStore", "StoredSignal"]
_FIELDS = attrgetter(*(m.reads for m in AGENT_METRICS))  # per metric, the one field its lines show


class SignalStore(LatestSignals):
    """LatestSignals whose entries carry their sample lines per metric, so a scrape only joins strings."""

    def prepare(self, signal: Signal) -> tuple[str, ...]:
        """The agent's lines per metric: those of its held signal where the field they show is unchanged (a
        heartbeat mostly changes its timestamp), new ones elsewhere. Read without the lock: a held entry that
        is replaced meanwhile still holds lines true of its own signal, so at worst a line is rendered anew."""
        held, agent = self.held(signal.agent), label_value(signal.agent)
        if held is None or len(held.fragments) != len(AGENT_METRICS):
            return tuple([render_samples(m, signal, agent) for m in AGENT_METRICS])
        # A zero may be -0.0, equal to 0.0 but written differently: rendered anew, as is anything that changed.
        return tuple([lines if new == old and new != 0 else render_samples(m, signal, agent) for m, new, old, lines
                      in zip(AGENT_METRICS, _FIELDS(signal), _FIELDS(held.signal), held.fragments)])

    def render(self) -> str:
        """Text exposition (format 0.0.4) of every agent family, identical to prometheus_client's."""
        entries = self.snapshot()
        parts: list[str] = []
        for index, metric in enumerate(AGENT_METRICS):
            parts.append(family_header(metric))
            parts.extend(e.fragments[index] for e in entries)
        return "".join(parts)
