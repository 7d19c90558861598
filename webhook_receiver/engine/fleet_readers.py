"""Where the engine reads and writes outside itself, and the fleet reader each incident is seen through."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from autonomy.settings import Settings
from autonomy.signal_contract import Signal
from autonomy.vocabulary import Source

from ..agent_extensions import ExporterExtensions
from ..alert_conditions import RuleCatalog
from ..classifier import SloThresholds
from ..fleet_reader import FleetReader, PrometheusFleetReader, SignalFleetReader
from ..incident import Incident
from ..upstreams import AlertmanagerApi, PrometheusApi


@dataclass
class Upstreams:
    """Where the engine reads and writes outside itself; None where not configured."""

    prometheus: PrometheusApi
    alertmanager: AlertmanagerApi | None
    latest_signal: Callable[[str], Signal | None]
    all_signals: Callable[[], list[Signal]]
    extensions: ExporterExtensions | None = None  # the signals' extensions on the Prometheus path
    grafana: AlertmanagerApi | None = None  # Grafana's Alertmanager API: Grafana Alerting's incidents' alert state


class FleetReaders:
    """The reader of each path, built on the current upstreams (the rule catalog kept while Prometheus is)."""

    def __init__(self, settings: Settings, upstreams: Callable[[], Upstreams]):
        self.settings, self.upstreams = settings, upstreams
        self.slo = SloThresholds.from_settings(settings)
        self._catalog: RuleCatalog | None = None

    def of(self, source: str) -> FleetReader:
        up = self.upstreams()
        if source == Source.SIGNAL:
            return SignalFleetReader(up.all_signals, self.settings.agent_silent_seconds, self.slo)
        if self._catalog is None or self._catalog.prom is not up.prometheus:
            self._catalog = RuleCatalog(up.prometheus)
        # Grafana's incidents are verified on Prometheus's samples too, by the rules Prometheus has of their names.
        return PrometheusFleetReader(up.prometheus, self._catalog, self.settings.agent_silent_seconds,
                                     self.settings.budget_cap_daily_usd, up.extensions,
                                     source=Source.GRAFANA if source == Source.GRAFANA else Source.ALERTMANAGER)

    def for_incident(self, incident: Incident) -> FleetReader:
        return self.of(incident.source)
