"""Agent side: turns status signals (pack section 2) into Prometheus metrics.

Embed it (``SignalStore`` + ``AgentSignalCollector`` on your own registry) or run ``autonomy exporter``.
"""
from .collector import AgentSignalCollector
from .signal_store import SignalStore

__all__ = ["AgentSignalCollector", "SignalStore"]
