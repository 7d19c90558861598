"""Agent side: turns status signals (pack section 2) into Prometheus metrics.

Embed it (``exporter.embedded.EmbeddedExporter``: one agent's own GET /metrics; or ``SignalStore`` +
``AgentSignalCollector`` on your own registry) or run ``autonomy exporter``; with
several exporters, ``exporter_url`` picks an agent's (docs/exporter-scaling.md).
"""
from .collector import AgentSignalCollector
from .sharding import exporter_url, shard_of
from .signal_store import SignalStore

__all__ = ["AgentSignalCollector", "SignalStore", "exporter_url", "shard_of"]
