"""Tile states (Healthy / Recovering / Escalated) and their reasons, derived from the ledger on every scrape."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily

from autonomy.exposition import label_value
from autonomy.vocabulary import ESCALATION_REASONS, GATE_REASONS, IncidentState, StateReason, TileState

HEALTHY, RECOVERING, ESCALATED = TileState.HEALTHY, TileState.RECOVERING, TileState.ESCALATED
AGENT_STATES = tuple(TileState)
_SEVERITY = {HEALTHY: 0, RECOVERING: 1, ESCALATED: 2}
_SORTED_STATES = sorted(AGENT_STATES)  # as prometheus_client writes a state set

# Incident state -> tile state. A skipped incident is held by a person's decision (silence, kill switch,
# canary list, dry run) while its agent is still unhealthy: a human owns it, so it is Escalated, not Recovering.
TILE_STATE: Mapping[str, TileState] = {
    IncidentState.OPEN: RECOVERING, IncidentState.REMEDIATING: RECOVERING, IncidentState.RECOVERED: HEALTHY,
    IncidentState.ESCALATED: ESCALATED, IncidentState.SKIPPED: ESCALATED, IncidentState.CLOSED: HEALTHY,
}


def reason_of(incident) -> str | None:
    """The incident's state reason; for incidents written before reasons were kept, read from its text."""
    if incident.state_reason:
        return incident.state_reason
    text = incident.reason or ""
    if incident.state == IncidentState.ESCALATED:
        return ESCALATION_REASONS.get(text.split(";")[0].strip())
    if incident.state == IncidentState.SKIPPED:
        return GATE_REASONS.get(text.split(":")[0].strip())
    return None


def derive_state(incident_state: str | None, state_reason: str | None, running: bool) -> tuple[str, str | None]:
    """(tile state, reason) of an agent from its incident's ledger state; no incident is Healthy."""
    if incident_state is None:
        return HEALTHY, None
    state = TILE_STATE[incident_state]
    if state == RECOVERING:
        return state, StateReason.RUNNING if running else StateReason.QUEUED
    if state == ESCALATED:
        return state, state_reason or (StateReason.ATTEMPTS_EXHAUSTED if incident_state == IncidentState.ESCALATED
                                       else StateReason.KILL_SWITCH)
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
        out[agent] = (RECOVERING, StateReason.RUNNING)
    return out


_FAMILIES = (
    ("autonomy_agent_state", "The agent's tile state: healthy, recovering or escalated."),
    ("autonomy_agent_state_reason", "1 for why the agent is recovering or escalated (queued, running, "
                                    "attempts_exhausted, silenced, kill_switch, ...)."),
    ("autonomy_remediation_in_progress", "1 while a remediation of the agent is running."),
)


class AgentStateCollector:
    """autonomy_agent_state, autonomy_agent_state_reason and autonomy_remediation_in_progress, from the ledger."""

    def __init__(self, open_incidents: Callable[[], Iterable], running: Callable[[], set[str]]):
        self.open_incidents, self.running = open_incidents, running

    def _states(self) -> tuple[dict[str, tuple[str, str | None]], set[str]]:
        running = set(self.running())
        return fleet_states(self.open_incidents(), running), running

    def collect(self):
        states, running = self._states()
        (state_name, state_help), (reason_name, reason_help), (progress_name, progress_help) = _FAMILIES
        state_set = StateSetMetricFamily(state_name, state_help, labels=["agent"])
        reason = GaugeMetricFamily(reason_name, reason_help, labels=["agent", "reason"])
        progress = GaugeMetricFamily(progress_name, progress_help, labels=["agent"])
        for agent in sorted(states):
            state, why = states[agent]
            state_set.add_metric([agent], {s: state == s for s in AGENT_STATES})
            if why:
                reason.add_metric([agent, why], 1.0)
            progress.add_metric([agent], 1.0 if agent in running else 0.0)
        return [state_set, reason, progress]

    def render(self) -> str:
        """What `collect` exposes, as prometheus_client's text exposition writes it, built as strings: a scrape
        of a large fleet does not build and validate an object per sample."""
        states, running = self._states()
        heads = [f"# HELP {name} {text}\n# TYPE {name} gauge\n" for name, text in _FAMILIES]
        lines: list[list[str]] = [[], [], []]
        for agent in sorted(states):
            state, why = states[agent]
            label = f'agent="{label_value(agent)}"'
            lines[0].extend(f'autonomy_agent_state{{{label},autonomy_agent_state="{s}"}} {float(state == s)}\n'
                            for s in _SORTED_STATES)
            if why:
                lines[1].append(f'autonomy_agent_state_reason{{{label},reason="{label_value(why)}"}} 1.0\n')
            lines[2].append(f"autonomy_remediation_in_progress{{{label}}} {float(agent in running)}\n")
        return "".join(head + "".join(body) for head, body in zip(heads, lines))
