"""The agents' direct signal path: the pack's Autonomy.execute(signal), without Prometheus in between."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from autonomy.http_edge import ApiError, json_body, require_token
from autonomy.latest_signals import AgentLimit
from autonomy.signal_contract import SignalError, load_signals
from autonomy.vocabulary import IncidentClass, Source

from .agent_view import view_from_signals
from .classifier import SloThresholds, classify
from .conflicts import conflict_key, signal_conflict_labels, without_conflicts
from .incident import AlertRef
from .notification import AgentNotification
from .receiver_state import accepted, counted, receiver

signals_bp = Blueprint("signals", __name__)
# The alert rule that says what a classifier rule says, so that a direct-path incident carries the alertname a
# person sees in Alertmanager and silences (the probe that asks Alertmanager for its verdict uses it).
DIRECT_ALERTNAMES = {
    "conflict-id": "AgentConflictReported", "conflict-directive-claimants": "DirectiveClaimedByMultipleAgents",
    "config-error-code": "AgentConfigError", "data-dep-error-code": "AgentDataInputError",
    "data-dep-dependency-failing": "AgentDependencyFailing", "transient-error-code": "AgentTransientError",
    "transient-silent": "AgentSilent", "capacity-queue-depth": "AgentQueueDepthHigh",
    "capacity-backlog": "AgentBacklogAgeAboveSLO", "capacity-budget": "FleetBudgetProjectedOverCap",
    "fallback-status-error": "AgentStatusError", "fallback-status-degraded": "AgentDegraded",
    "fallback-slo-success": "AgentSuccessRatioBelowSLO", "fallback-slo-align": "AgentAlignmentBelowSLO",
}
# Their severities, as the rules give them (a test holds the two equal), so a silence on severity matches too.
SEVERITIES = {"AgentConfigError": "critical", "AgentSilent": "critical", "FleetBudgetProjectedOverCap": "critical",
              "AgentDegraded": "info"}


def direct_labels(alertname: str, agent: str, classification: str, **more: str) -> dict:
    """The labels of a direct-path incident's alert, as its alert rule would have labelled it."""
    return {"alertname": alertname, "agent": agent, "severity": SEVERITIES.get(alertname, "warning"),
            "autonomy_class": classification, **more}


@signals_bp.post("/api/v1/signals")
@counted("signals")
@require_token("WEBHOOK_TOKEN")
def direct_signals():
    """The pack's Autonomy.execute(signal): store, classify, and open an incident when there is one."""
    body = json_body()
    try:
        signals = load_signals(body, time.time(), receiver().settings.max_clock_skew_seconds)
    except SignalError as exc:
        status = 400 if all(e.startswith("(body)") for e in exc.errors) else 422
        raise ApiError(status, "invalid signal; nothing was stored", exc.errors) from None
    state = receiver()
    try:
        state.signals.check_room(s.agent for s in signals)
    except AgentLimit as exc:
        raise ApiError(429, str(exc)) from None
    slo = SloThresholds.from_settings(state.settings)
    latest = {e.signal.agent: e.signal for e in state.signals.snapshot()}
    for signal in signals:  # what the store will hold once this request is accepted
        if signal.agent not in latest or latest[signal.agent].timestamp <= signal.timestamp:
            latest[signal.agent] = signal
    everyone = list(latest.values())
    per_agent, decisions = [], {}
    for signal in signals:
        view = view_from_signals(signal.agent, everyone, state.settings.agent_silent_seconds)
        decision = classify(view.signal, view.facts, slo)
        decisions[signal.agent] = decision.as_dict()
        ts = signal.document.get("ts", "")
        alerts, rest = [], decision
        conflict = signal_conflict_labels(signal, view.facts.directive_claimants) \
            if decision.classification == IncidentClass.CONFLICT else {}
        if conflict:
            # A conflict with other agents is its own incident; what else ails the agent is the agent's own.
            labels = direct_labels(DIRECT_ALERTNAMES[decision.rule], signal.agent, IncidentClass.CONFLICT, **conflict)
            alerts.append(AlertRef(f"signal:{signal.agent}:conflict", "firing", labels, ts))
            others = without_conflicts(view, [conflict_key(labels)])
            rest = classify(others.signal, others.facts, slo)
        labels = direct_labels(DIRECT_ALERTNAMES.get(rest.rule or "", "AgentSignalCheckFailed"), signal.agent,
                               rest.classification or "none")
        alerts.append(AlertRef(f"signal:{signal.agent}", "firing" if rest.classification else "resolved", labels, ts))
        per_agent.append(AgentNotification(signal.agent, tuple(alerts), signal.document))
    result = state.store.ingest(Source.SIGNAL, body.decode("utf-8"), per_agent, max_queued=state.settings.queue_size,
                                keep_unchanged=False)
    if not result.refused:
        state.signals.put_many(signals, enforce_limit=False)  # room was checked above: never half-stored
        state.metrics.direct_signals.labels("stored" if result.notification_id else "unchanged").inc(len(signals))
    return jsonify({**accepted(Source.SIGNAL, result), "decisions": decisions})
