"""A prometheus_client collector over a SignalStore, for agents that embed the exporter."""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily

from .agent_metrics import AGENT_METRICS, AgentMetric
from .signal_store import SignalStore


def _family(metric: AgentMetric) -> Metric:
    labels = ["agent", *metric.labels]
    if metric.kind == "stateset":
        return StateSetMetricFamily(metric.name, metric.help, labels=["agent"])
    return GaugeMetricFamily(metric.name, metric.help, labels=labels)


class AgentSignalCollector:
    """Exposes the latest signal of every live agent; the agent set may change between scrapes."""

    def __init__(self, store: SignalStore):
        self.store = store

    def describe(self) -> list[Metric]:
        return [_family(m) for m in AGENT_METRICS]

    def collect(self) -> Iterator[Metric]:
        entries = self.store.snapshot()
        for metric in AGENT_METRICS:
            family = _family(metric)
            for entry in entries:
                samples = list(metric.samples(entry.signal))
                if metric.kind == "stateset":
                    family.add_metric([entry.signal.agent], {state[0]: bool(v) for state, v in samples})
                else:
                    for extra, value in samples:
                        family.add_metric([entry.signal.agent, *extra], value)
            yield family
