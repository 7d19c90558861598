"""The receiver's own metrics, for the Grafana tiles and the KPI recording rules."""
from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily

CLASSES = ("CONFLICT", "CONFIG", "DATA_DEP", "TRANSIENT", "CAPACITY")
OUTCOMES = ("auto_resolved", "escalated", "skipped")
ESCALATION_REASONS = ("AutoRemediationFailed", "HighRiskStep", "BudgetCap", "ActionTargetUnsafe")
GATES = ("kill_switch", "canary", "dry_run", "budget_cap", "agent_locked", "not_firing", "silenced",
         "alertmanager_unreachable", "high_risk")
AGENT_STATES = ("healthy", "recovering", "escalated")
RECOVERY_BUCKETS = (5, 10, 30, 60, 120, 180, 300, 480, 600, 900, 1800, 3600, 7200)
ENDPOINTS = ("alerts", "signals", "remediation")
CODES = ("200", "400", "401", "413", "415", "422", "503")


class AgentStates:
    """Per-agent state set (healthy / recovering / escalated) and remediation-in-progress flags."""

    def __init__(self):
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._running: dict[str, bool] = {}

    def set(self, agent: str, state: str, running: bool | None = None) -> None:
        with self._lock:
            self._states[agent] = state
            if running is not None:
                self._running[agent] = running

    def running(self, agent: str, value: bool) -> None:
        with self._lock:
            self._running[agent] = value
            self._states.setdefault(agent, "recovering")

    def snapshot(self) -> tuple[dict[str, str], dict[str, bool]]:
        with self._lock:
            return dict(self._states), dict(self._running)

    def collect(self):
        states, running = self.snapshot()
        state_set = StateSetMetricFamily("autonomy_agent_state",
                                         "The agent's tile state: healthy, recovering or escalated.",
                                         labels=["agent"])
        progress = GaugeMetricFamily("autonomy_remediation_in_progress",
                                     "1 while a remediation of the agent is running.", labels=["agent"])
        for agent in sorted(states):
            state_set.add_metric([agent], {s: states[agent] == s for s in AGENT_STATES})
            progress.add_metric([agent], 1.0 if running.get(agent) else 0.0)
        return [state_set, progress]


class ReceiverMetrics:
    """Every metric the receiver exposes; bounded label sets start at 0 so increase() sees the first event."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.agent_states = AgentStates()
        r.register(self.agent_states)
        self.remediation_enabled = Gauge("autonomy_remediation_enabled",
                                         "1 when automatic remediation is on (the kill switch).", registry=r)
        self.in_flight = Gauge("autonomy_remediations_in_flight", "Remediations running now.", registry=r)
        self.queue_depth = Gauge("autonomy_work_queue_depth", "Incidents waiting for a worker.", registry=r)
        self.queue_capacity = Gauge("autonomy_work_queue_capacity", "Size of the work queue.", registry=r)
        self.incidents = Counter("autonomy_incidents", "Incidents opened, by source.", ["source"], registry=r)
        self.outcomes = Counter("autonomy_incident_outcomes", "How remediations ended, by class.",
                                ["classification", "outcome"], registry=r)
        self.attempts = Counter("autonomy_remediation_attempts",
                                "Remediation attempts by agent, class, playbook and result.",
                                ["agent", "classification", "playbook", "result"], registry=r)
        self.refusals = Counter("autonomy_remediation_refusals", "Attempts a gate refused, by gate.", ["gate"],
                                registry=r)
        self.escalations = Counter("autonomy_escalations", "Escalations to a human, by reason.", ["reason"],
                                   registry=r)
        self.recovery = Histogram("autonomy_recovery_seconds", "Time from incident open to recovery, by class.",
                                  ["classification"], buckets=RECOVERY_BUCKETS, registry=r)
        self.incident_cost = Counter("autonomy_incident_cost_dollars",
                                     "Agent spend while in incident (burn rate x duration), by class.",
                                     ["classification"], registry=r)
        self.webhook_requests = Counter("autonomy_webhook_requests", "Requests to the write endpoints by code.",
                                        ["endpoint", "code"], registry=r)
        self.lineage_skipped = Gauge("autonomy_lineage_torn_lines",
                                     "Unreadable lines found in the lineage file on the last read.", registry=r)
        for source in ("alertmanager", "signal"):
            self.incidents.labels(source)
        for cls in CLASSES:
            self.recovery.labels(cls)
            self.incident_cost.labels(cls)
            for outcome in OUTCOMES:
                self.outcomes.labels(cls, outcome)
        for reason in ESCALATION_REASONS:
            self.escalations.labels(reason)
        for gate in GATES:
            self.refusals.labels(gate)
        for endpoint in ENDPOINTS:
            for code in CODES:
                self.webhook_requests.labels(endpoint, code)
