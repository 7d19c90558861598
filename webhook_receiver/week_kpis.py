"""The pack's weekly KPIs (section 13) beside their goals, read from Prometheus's recording rules (kpis.rules.yml):
the same figures Grafana shows, never recomputed here; unknown when Prometheus cannot say."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from .upstream_deadline import deadline as upstream_deadline
from .upstreams import PrometheusApi, UpstreamError

CACHE_SECONDS = 30.0  # one read per receiver at most this often, however many consoles are open
PROMETHEUS_SECONDS = 3.0


@dataclass(frozen=True)
class Kpi:
    """One KPI: its recording rule, how its value reads, its goal in words and, where the pack sets a number, the
    LIMIT the value must reach (AT_LEAST) or stay under, and the thresholds.yaml entry that holds it."""

    key: str
    label: str
    query: str
    unit: str  # ratio, seconds, count or dollars
    goal: str
    limit: float | None = None
    at_least: bool = False
    threshold: str | None = None

    def met(self, value: float) -> bool | None:
        if self.limit is None:
            return None
        return value >= self.limit if self.at_least else value < self.limit


_MTTR = 'classification:autonomy_recovery_seconds:mean7d{{classification="{}"}}'
# The goals are alert_rules/thresholds.yaml's (tests/test_console.py holds them equal).
KPIS = (
    Kpi("auto_resolve", "Auto-resolved", "fleet:autonomy_auto_resolve:ratio7d", "ratio", "at least 85 %", 0.85,
        True, "auto_resolve_goal"),
    Kpi("mttr_transient", "MTTR, TRANSIENT", _MTTR.format("TRANSIENT"), "seconds", "under 3 min", 180, False,
        "mttr_goal_transient_seconds"),
    Kpi("mttr_capacity", "MTTR, CAPACITY", _MTTR.format("CAPACITY"), "seconds", "under 8 min", 480, False,
        "mttr_goal_capacity_seconds"),
    Kpi("mttr_conflict", "MTTR, CONFLICT", _MTTR.format("CONFLICT"), "seconds", "under 10 min", 600, False,
        "mttr_goal_conflict_seconds"),
    Kpi("escalations", "Escalations", "fleet:autonomy_escalations:increase7d", "count", "trending down"),
    Kpi("cost", "Cost per resolved incident", "fleet:autonomy_incident_cost_dollars:per_resolved_incident7d",
        "dollars", "trending down"),
    Kpi("lineage", "Decisions with a lineage line", "fleet:autonomy_lineage_coverage:ratio7d", "ratio", "100 %",
        0.9999, True),
)


def shown(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "seconds":
        return f"{value / 60:.1f} min" if value >= 90 else f"{value:.0f} s"
    if unit == "dollars":
        return f"${value:,.2f}"
    return f"{round(value):,}"


def read_kpis(prometheus: PrometheusApi) -> list[dict]:
    """Each KPI's value in words, its goal, and whether it is met (None: no goal, or nothing to judge)."""
    out = []
    for kpi in KPIS:
        row = {"key": kpi.key, "label": kpi.label, "goal": kpi.goal, "value": None, "text": "no data this week",
               "met": None}
        try:
            rows = [r for r in prometheus.query(kpi.query) if "value" in r]
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the figure is unknown, never "fine"
            row["text"] = f"unknown: {exc}" if isinstance(exc, UpstreamError) else f"unknown: {type(exc).__name__}"
            out.append(row)
            continue
        if len(rows) == 1:
            value = float(rows[0]["value"][1])
            if value == value:  # NaN: no incident to judge by
                row.update(value=value, text=shown(value, kpi.unit), met=kpi.met(value))
        out.append(row)
    return out


class WeekKpis:
    """read_kpis, kept for CACHE_SECONDS."""

    def __init__(self, prometheus: Callable[[], PrometheusApi], clock: Callable[[], float] = time.monotonic):
        self.prometheus, self.clock = prometheus, clock
        self._lock = threading.Lock()
        self._read: tuple[float, list[dict]] | None = None

    def now(self) -> list[dict]:
        with self._lock:
            if self._read is None or self.clock() - self._read[0] >= CACHE_SECONDS:
                with upstream_deadline(time.time() + PROMETHEUS_SECONDS):  # a page waits no longer for them
                    self._read = (self.clock(), read_kpis(self.prometheus()))
            return self._read[1]
