"""Tile states (Healthy / Recovering / Escalated) and their reasons, derived from the ledger on every scrape."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily

HEALTHY, RECOVERING, ESCALATED = "healthy", "recovering", "escalated"
AGENT_STATES = (HEALTHY, RECOVERING, ESCALATED)
_SEVERITY = {HEALTHY: 0, RECOVERING: 1, ESCALATED: 2}

# Incident state -> tile state. A skipped incident is held by a person's decision (silence, kill switch,
# canary list, dry run) while its agent is still unhealthy: a human owns it, so it is Escalated, not Recovering.
TILE_STATE: Mapping[str, str] = {
    "open": RECOVERING, "remediating": RECOVERING, "recovered": HEALTHY,
    "escalated": ESCALATED, "skipped": ESCALATED, "closed": HEALTHY,
}
# The gate that held an incident, and the escalation reason, as the tile's reason.
GATE_REASONS: Mapping[str, str] = {
    "kill_switch": "kill_switch", "canary": "not_in_canary", "silenced": "silenced", "dry_run": "dry_run",
    "alertmanager_unreachable": "alertmanager_unreachable", "not_firing": "suppressed",
    "stale_evidence": "stale_evidence",
}
ESCALATION_REASONS: Mapping[str, str] = {
    "AutoRemediationFailed": "attempts_exhausted", "HighRiskStep": "high_risk_step", "BudgetCap": "budget_cap",
    "ActionTargetUnsafe": "action_target_unsafe", "PriorityUnranked": "priority_unranked",
    "NoPlaybook": "no_playbook",
}
# What a dashboard or an alert may say for each reason; the pack's text only where it is true.
REASON_TEXT: Mapping[str, str] = {
    "queued": "Auto-Resolve queued",
    "running": "Auto-Resolve running",
    "attempts_exhausted": "Escalated to CEO (attempts exhausted)",
    "high_risk_step": "Escalated to CEO (a high-risk step needs a human)",
    "budget_cap": "Escalated to CEO (the playbook adds spend over the budget cap)",
    "action_target_unsafe": "Escalated to CEO (an action target was unsafe)",
    "priority_unranked": "Escalated to CEO (the priority order does not decide the conflict)",
    "no_playbook": "Escalated to CEO (no playbook matches)",
    "silenced": "Held: silenced in Alertmanager",
    "kill_switch": "Held: remediation switched off",
    "not_in_canary": "Held: not in the canary list",
    "dry_run": "Held: dry run, nothing runs",
    "alertmanager_unreachable": "Held: Alertmanager unreachable, silences unknown",
    "suppressed": "Held: alerts suppressed in Alertmanager",
    "stale_evidence": "Held: no fresh sample since the gate opened",
}
STATE_REASONS = tuple(REASON_TEXT)


def reason_of(incident) -> str | None:
    """The incident's state reason; for incidents written before reasons were kept, read from its text."""
    if incident.state_reason:
        return incident.state_reason
    text = incident.reason or ""
    if incident.state == "escalated":
        return ESCALATION_REASONS.get(text.split(";")[0].strip())
    if incident.state == "skipped":
        return GATE_REASONS.get(text.split(":")[0].strip())
    return None


def derive_state(incident_state: str | None, state_reason: str | None, running: bool) -> tuple[str, str | None]:
    """(tile state, reason) of an agent from its incident's ledger state; no incident is Healthy."""
    if incident_state is None:
        return HEALTHY, None
    state = TILE_STATE[incident_state]
    if state == RECOVERING:
        return state, "running" if running else "queued"
    if state == ESCALATED:
        return state, state_reason or ("attempts_exhausted" if incident_state == "escalated" else "kill_switch")
    return state, None


def worst(a: tuple[str, str | None], b: tuple[str, str | None]) -> tuple[str, str | None]:
    return a if _SEVERITY[a[0]] >= _SEVERITY[b[0]] else b


def fleet_states(incidents: Iterable, running: set[str]) -> dict[str, tuple[str, str | None]]:
    """Each agent of an open incident (a conflict's claimants too), with the worst state of its incidents."""
    out: dict[str, tuple[str, str | None]] = {}
    for incident in incidents:
        for agent in incident.claimants or (incident.agent,):
            state = derive_state(incident.state, reason_of(incident), agent in running)
            out[agent] = worst(state, out[agent]) if agent in out else state
    for agent in running - set(out):
        out[agent] = (RECOVERING, "running")
    return out


class AgentStateCollector:
    """autonomy_agent_state, autonomy_agent_state_reason and autonomy_remediation_in_progress, from the ledger."""

    def __init__(self, open_incidents: Callable[[], Iterable], running: Callable[[], set[str]]):
        self.open_incidents, self.running = open_incidents, running

    def collect(self):
        running = set(self.running())
        states = fleet_states(self.open_incidents(), running)
        state_set = StateSetMetricFamily("autonomy_agent_state",
                                         "The agent's tile state: healthy, recovering or escalated.",
                                         labels=["agent"])
        reason = GaugeMetricFamily("autonomy_agent_state_reason",
                                   "1 for why the agent is recovering or escalated (queued, running, "
                                   "attempts_exhausted, silenced, kill_switch, ...).", labels=["agent", "reason"])
        progress = GaugeMetricFamily("autonomy_remediation_in_progress",
                                     "1 while a remediation of the agent is running.", labels=["agent"])
        for agent in sorted(states):
            state, why = states[agent]
            state_set.add_metric([agent], {s: state == s for s in AGENT_STATES})
            if why:
                reason.add_metric([agent, why], 1.0)
            progress.add_metric([agent], 1.0 if agent in running else 0.0)
        return [state_set, reason, progress]
