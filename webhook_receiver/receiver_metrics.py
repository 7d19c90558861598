"""The receiver's own metrics, for the Grafana tiles and the KPI recording rules."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from autonomy.vocabulary import DECISIONS, EscalationReason, Gate, IncidentClass, Outcome, Source

from .agent_states import AgentStateCollector
from .rollout import Rollout

RECOVERY_BUCKETS = (5, 10, 30, 60, 120, 180, 300, 480, 600, 900, 1800, 3600, 7200)
ENDPOINTS = ("alerts", "signals", "remediation", "rollout")
CODES = ("200", "400", "401", "409", "413", "415", "422", "429", "503")
RETENTION_KINDS = ("incidents", "notifications", "lineage", "events")  # the fields of store.TrimResult


class ReceiverMetrics:
    """Every metric the receiver exposes; bounded label sets start at 0 so increase() sees the first event."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.remediation_enabled = Gauge("autonomy_remediation_enabled",
                                         "1 when automatic remediation is on (the kill switch).", registry=r)
        self.in_flight = Gauge("autonomy_remediations_in_flight", "Remediations running now.", registry=r)
        self.verifications_waiting = Gauge("autonomy_verifications_waiting",
                                           "Attempts whose steps ran, waiting for their verification.", registry=r)
        self.queue_depth = Gauge("autonomy_work_queue_depth", "Incidents waiting for a worker.", registry=r)
        self.queue_capacity = Gauge("autonomy_work_queue_capacity", "Size of the work queue.", registry=r)
        self.incidents = Counter("autonomy_incidents", "Incidents opened, by source.", ["source"], registry=r)
        self.outcomes = Counter("autonomy_incident_outcomes",
                                "How incidents ended, once each: auto_resolved (verified), escalated, "
                                "self_resolved_after_failure, self_resolved (before any attempt), skipped.",
                                ["classification", "outcome"], registry=r)
        self.attempts = Counter("autonomy_remediation_attempts",
                                "Remediation attempts by agent, class, playbook and result.",
                                ["agent", "classification", "playbook", "result"], registry=r)
        self.refusals = Counter("autonomy_remediation_refusals", "Attempts a gate refused, by gate.", ["gate"],
                                registry=r)
        self.escalations = Counter("autonomy_escalations", "Escalations to a human, by reason.", ["reason"],
                                   registry=r)
        self.recovery = Histogram("autonomy_recovery_seconds",
                                  "Time from the fault's onset to verified recovery, auto-resolved incidents only.",
                                  ["classification"], buckets=RECOVERY_BUCKETS, registry=r)
        self.incident_cost = Counter("autonomy_incident_cost_dollars",
                                     "Agent spend from onset to verified recovery (burn rate x duration), "
                                     "auto-resolved incidents only.", ["classification"], registry=r)
        self.decisions = Counter("autonomy_decisions", "Attempts, refusals, escalations and no-action endings "
                                 "decided, by event.", ["event"], registry=r)
        self.lineage_lines = Counter("autonomy_lineage_lines", "Decisions whose lineage line was written and "
                                     "flushed, by event.", ["event"], registry=r)
        self.webhook_requests = Counter("autonomy_webhook_requests", "Requests to the write endpoints by code.",
                                        ["endpoint", "code"], registry=r)
        self.direct_signals = Counter("autonomy_direct_signals",
                                      "Signals on the direct path: stored (they changed an incident) or unchanged "
                                      "(counted, not stored).", ["result"], registry=r)
        self.outbox_dropped = Counter("autonomy_alert_outbox_dropped", "Alerts for Alertmanager dropped because "
                                      "the outbox was full (Alertmanager resolves them at their endsAt).", registry=r)
        self.retention_deleted = Counter("autonomy_retention_deleted", "Rows the retention deleted, by kind: "
                                         "closed incidents, notifications, lineage entries.", ["kind"], registry=r)
        self.retention_failures = Counter("autonomy_retention_failures", "Retention rounds a store error stopped "
                                          "(the next round tries again).", registry=r)
        self.agent_states: AgentStateCollector | None = None
        self.lineage_skipped = Gauge("autonomy_lineage_torn_lines",
                                     "Torn lines found at the end of this receiver's lineage file (a crash or a full "
                                     "disk mid-write) since it started; each was ended, and is not in the store.",
                                     registry=r)
        for source in Source:
            self.incidents.labels(source)
        for result in ("stored", "unchanged"):
            self.direct_signals.labels(result)
        for kind in RETENTION_KINDS:
            self.retention_deleted.labels(kind)
        for cls in IncidentClass:
            self.recovery.labels(cls)
            self.incident_cost.labels(cls)
            for outcome in Outcome:
                self.outcomes.labels(cls, outcome)
        for event in DECISIONS:
            self.decisions.labels(event)
            self.lineage_lines.labels(event)
        for reason in EscalationReason:
            self.escalations.labels(reason)
        for gate in Gate:
            self.refusals.labels(gate)
        for endpoint in ENDPOINTS:
            for code in CODES:
                self.webhook_requests.labels(endpoint, code)

    def watch_rollout(self, read: Callable[[], Rollout], max_agents: int) -> None:
        """Export the staged rollout READ returns (from the store) on every scrape."""
        self.registry.register(RolloutCollector(read, max_agents))

    def watch_states(self, collector: AgentStateCollector) -> None:
        """Export the tile states from COLLECTOR (which reads the ledger on every scrape)."""
        self.agent_states = collector

    def exposition(self) -> bytes:
        """The registry's families, then the tile states (rendered as text: one per agent of an open incident)."""
        states = self.agent_states.render().encode() if self.agent_states is not None else b""
        return generate_latest(self.registry) + states


class RolloutCollector:
    """autonomy_rollout_*: the classes enabled (all five, 0 or 1), every agent or how many and which."""

    def __init__(self, read: Callable[[], Rollout], max_agents: int):
        self.read, self.max_agents = read, max_agents

    def describe(self):
        return []  # read on each scrape only: registering must not touch the store

    def collect(self):
        try:
            rollout = self.read()
        except Exception:  # a scrape during shutdown, or a broken store: absent, not a guess
            return []
        classes = GaugeMetricFamily("autonomy_rollout_class_enabled",
                                    "1 when the staged rollout remediates this classification.",
                                    labels=["classification"])
        for cls in IncidentClass:
            classes.add_metric([cls], float(cls in rollout.classes))
        agents = rollout.agents or ()
        every = GaugeMetricFamily("autonomy_rollout_all_agents", "1 when the staged rollout remediates every agent.",
                                  value=float(rollout.agents is None))
        listed = GaugeMetricFamily("autonomy_rollout_canary_agents",
                                   "How many agents the staged rollout lists (0: every agent).", value=len(agents))
        included = GaugeMetricFamily("autonomy_rollout_agent_included",
                                     "1 for each agent the staged rollout lists (none when it is every agent).",
                                     labels=["agent"])
        for agent in sorted(agents)[:self.max_agents]:
            included.add_metric([agent], 1.0)
        return [classes, every, listed, included]
