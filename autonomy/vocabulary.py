"""The layer's words, once: classes, incident states, outcomes, gates, reasons, events, sources.

Each is a `str` enum: a member is its string (in metric labels, lineage lines, JSON answers, SQL), so the
strings people filter and alert on stay what they are while the code names them one way.
"""
from __future__ import annotations

import re
from enum import StrEnum
from typing import Mapping


class IncidentClass(StrEnum):
    """The pack's five playbook families, in its table's order (section 5)."""

    CONFLICT = "CONFLICT"
    TRANSIENT = "TRANSIENT"
    CAPACITY = "CAPACITY"
    DATA_DEP = "DATA_DEP"
    CONFIG = "CONFIG"


class IncidentState(StrEnum):
    """Where an incident is in its life; every state but CLOSED is open."""

    OPEN = "open"
    REMEDIATING = "remediating"
    RECOVERED = "recovered"
    ESCALATED = "escalated"
    SKIPPED = "skipped"
    CLOSED = "closed"


OPEN_STATES = tuple(s for s in IncidentState if s is not IncidentState.CLOSED)
# Acknowledged but not finished: a worker claims these.
RUNNABLE_STATES = (IncidentState.OPEN, IncidentState.REMEDIATING)


class Outcome(StrEnum):
    """How an incident ended, for the KPIs: each counted once, by what really happened."""

    AUTO_RESOLVED = "auto_resolved"
    ESCALATED = "escalated"
    SELF_RESOLVED_AFTER_FAILURE = "self_resolved_after_failure"
    SELF_RESOLVED = "self_resolved"
    SKIPPED = "skipped"


class Gate(StrEnum):
    """What refused an attempt (autonomy_remediation_refusals_total{gate}, the lineage's `gate`)."""

    KILL_SWITCH = "kill_switch"
    CANARY = "canary"
    CLASS_NOT_ENABLED = "class_not_enabled"
    CONFLICT_ESCALATED = "conflict_escalated"
    DRY_RUN = "dry_run"
    BUDGET_CAP = "budget_cap"
    NOT_FIRING = "not_firing"
    SILENCED = "silenced"
    ALERTMANAGER_UNREACHABLE = "alertmanager_unreachable"
    GRAFANA_UNCONFIGURED = "grafana_unconfigured"
    GRAFANA_UNREACHABLE = "grafana_unreachable"
    HIGH_RISK = "high_risk"
    PRIORITY_UNRANKED = "priority_unranked"
    STALE_EVIDENCE = "stale_evidence"
    NO_PLAYBOOK = "no_playbook"


class EscalationReason(StrEnum):
    """Why a human was handed the incident (the escalation payload's and AutonomyEscalated's reason)."""

    AUTO_REMEDIATION_FAILED = "AutoRemediationFailed"
    HIGH_RISK_STEP = "HighRiskStep"
    BUDGET_CAP = "BudgetCap"
    ACTION_TARGET_UNSAFE = "ActionTargetUnsafe"
    PRIORITY_UNRANKED = "PriorityUnranked"
    NO_PLAYBOOK = "NoPlaybook"
    ACTION_NOT_IMPLEMENTED = "ActionNotImplemented"


class TileState(StrEnum):
    """The Grafana tile of an agent (autonomy_agent_state)."""

    HEALTHY = "healthy"
    RECOVERING = "recovering"
    ESCALATED = "escalated"


class StateReason(StrEnum):
    """Why an agent's tile is Recovering or Escalated (autonomy_agent_state_reason{reason})."""

    QUEUED = "queued"
    RUNNING = "running"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    HIGH_RISK_STEP = "high_risk_step"
    BUDGET_CAP = "budget_cap"
    ACTION_TARGET_UNSAFE = "action_target_unsafe"
    PRIORITY_UNRANKED = "priority_unranked"
    NO_PLAYBOOK = "no_playbook"
    ACTION_NOT_IMPLEMENTED = "action_not_implemented"
    SILENCED = "silenced"
    KILL_SWITCH = "kill_switch"
    NOT_IN_CANARY = "not_in_canary"
    CLASS_NOT_ENABLED = "class_not_enabled"
    CONFLICT_ESCALATED = "conflict_escalated"
    DRY_RUN = "dry_run"
    ALERTMANAGER_UNREACHABLE = "alertmanager_unreachable"
    GRAFANA_UNCONFIGURED = "grafana_unconfigured"
    GRAFANA_UNREACHABLE = "grafana_unreachable"
    SUPPRESSED = "suppressed"
    STALE_EVIDENCE = "stale_evidence"


# The gate that held an incident, and the escalation reason, as the tile's reason.
GATE_REASONS: Mapping[Gate, StateReason] = {
    Gate.KILL_SWITCH: StateReason.KILL_SWITCH, Gate.CANARY: StateReason.NOT_IN_CANARY,
    Gate.CLASS_NOT_ENABLED: StateReason.CLASS_NOT_ENABLED, Gate.CONFLICT_ESCALATED: StateReason.CONFLICT_ESCALATED,
    Gate.SILENCED: StateReason.SILENCED, Gate.DRY_RUN: StateReason.DRY_RUN,
    Gate.ALERTMANAGER_UNREACHABLE: StateReason.ALERTMANAGER_UNREACHABLE, Gate.NOT_FIRING: StateReason.SUPPRESSED,
    Gate.STALE_EVIDENCE: StateReason.STALE_EVIDENCE, Gate.GRAFANA_UNCONFIGURED: StateReason.GRAFANA_UNCONFIGURED,
    Gate.GRAFANA_UNREACHABLE: StateReason.GRAFANA_UNREACHABLE,
}
ESCALATION_REASONS: Mapping[EscalationReason, StateReason] = {
    EscalationReason.AUTO_REMEDIATION_FAILED: StateReason.ATTEMPTS_EXHAUSTED,
    EscalationReason.HIGH_RISK_STEP: StateReason.HIGH_RISK_STEP, EscalationReason.BUDGET_CAP: StateReason.BUDGET_CAP,
    EscalationReason.ACTION_TARGET_UNSAFE: StateReason.ACTION_TARGET_UNSAFE,
    EscalationReason.PRIORITY_UNRANKED: StateReason.PRIORITY_UNRANKED,
    EscalationReason.NO_PLAYBOOK: StateReason.NO_PLAYBOOK,
    EscalationReason.ACTION_NOT_IMPLEMENTED: StateReason.ACTION_NOT_IMPLEMENTED,
}
# What a dashboard or an alert may say for each reason; the pack's text only where it is true.
REASON_TEXT: Mapping[StateReason, str] = {
    StateReason.QUEUED: "Auto-Resolve queued",
    StateReason.RUNNING: "Auto-Resolve running",
    StateReason.ATTEMPTS_EXHAUSTED: "Escalated to CEO (attempts exhausted)",
    StateReason.HIGH_RISK_STEP: "Escalated to CEO (a high-risk step needs a human)",
    StateReason.BUDGET_CAP: "Escalated to CEO (the playbook adds spend over the budget cap)",
    StateReason.ACTION_TARGET_UNSAFE: "Escalated to CEO (an action target was unsafe)",
    StateReason.PRIORITY_UNRANKED: "Escalated to CEO (the priority order does not decide the conflict)",
    StateReason.NO_PLAYBOOK: "Escalated to CEO (no playbook matches)",
    StateReason.ACTION_NOT_IMPLEMENTED: "Escalated to CEO (the agent does not implement a step's action)",
    StateReason.SILENCED: "Held: silenced in Alertmanager",
    StateReason.KILL_SWITCH: "Held: remediation switched off",
    StateReason.NOT_IN_CANARY: "Held: not in the rollout's agents (the canary)",
    StateReason.CLASS_NOT_ENABLED: "Held: its class is not enabled in the rollout",
    StateReason.CONFLICT_ESCALATED: "Held: a symptom of its conflict, which a person owns",
    StateReason.DRY_RUN: "Held: dry run, nothing runs",
    StateReason.ALERTMANAGER_UNREACHABLE: "Held: Alertmanager unreachable, silences unknown",
    StateReason.GRAFANA_UNCONFIGURED: "Held: a Grafana-managed alert, whose state and silences are Grafana's "
                                      "(AUTOREM_GRAFANA_URL is not set)",
    StateReason.GRAFANA_UNREACHABLE: "Held: Grafana unreachable, the alert's state and silences unknown",
    StateReason.SUPPRESSED: "Held: alerts suppressed in Alertmanager",
    StateReason.STALE_EVIDENCE: "Held: no fresh sample since the gate opened",
}


class LineageEvent(StrEnum):
    """A lineage line's `event`; the first four are decisions (autonomy_decisions_total{event})."""

    AUTO_REMEDIATION = "auto_remediation"
    REMEDIATION_REFUSED = "remediation_refused"
    ESCALATION = "escalation"
    NO_ACTION = "no_action"
    ESCALATION_DELIVERY = "escalation_delivery"
    ROLLOUT_CHANGE = "rollout_change"


DECISIONS = (LineageEvent.AUTO_REMEDIATION, LineageEvent.REMEDIATION_REFUSED, LineageEvent.ESCALATION,
             LineageEvent.NO_ACTION)


class Source(StrEnum):
    """Where an incident's notifications come from."""

    ALERTMANAGER = "alertmanager"
    SIGNAL = "signal"
    GRAFANA = "grafana"  # Grafana Alerting's webhook: Grafana holds the alert's state and silences


# An agent's name: what the signal schema, the webhook edge and the action URLs all accept.
AGENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
AGENT_NAME_RULE = "a letter, then letters, digits, '_', '.', '-' (at most 64)"
