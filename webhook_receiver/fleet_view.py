"""The fleet as the receiver sees it, and the priority decisions templates use (who wins, who yields)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from autonomy.signal_contract import Signal

from .agent_view import AgentView
from .conflicts import Arbitration
from .playbooks import PlaybookSet
from .upstreams import PrometheusApi, samples


@dataclass(frozen=True)
class Member:
    """One agent of the fleet: enough to arbitrate between agents."""

    agent: str
    domain: str | None
    status: str
    cost_per_hour: float
    directive_id: str | None


def members_from_prometheus(prom: PrometheusApi, selector: str = "") -> list[Member]:
    """The agents the exporter reports (those SELECTOR, such as `{agent=~"A|B"}`, selects), with domain,
    status, spend and directive."""
    info = {r["metric"]["agent"]: r["metric"].get("domain") or None
            for r in samples(prom.query(f"autonomy_agent_info{selector}"), "agent")}
    status = {r["metric"]["agent"]: r["metric"]["autonomy_agent_status"]
              for r in samples(prom.query(f"autonomy_agent_status{selector} == 1"), "agent", "autonomy_agent_status")}
    cost = {r["metric"]["agent"]: float(r["value"][1]) for r in samples(
        prom.query(f"max by (agent) (autonomy_agent_cost_burn_dollars_per_hour{selector})"), "agent")}
    directive = {r["metric"]["agent"]: r["metric"]["directive_id"] for r in samples(
        prom.query(f"autonomy_agent_directive_claim{selector} == 1"), "agent", "directive_id")}
    return [Member(a, info[a], status.get(a, "healthy"), cost.get(a, 0.0), directive.get(a)) for a in sorted(info)]


def members_from_signals(signals: Iterable[Signal]) -> list[Member]:
    return [Member(s.agent, s.domain, s.status, s.cost_burn_dollars_per_hour, s.directive_id)
            for s in sorted(signals, key=lambda s: s.agent)]


def _ranked(members: Iterable[Member], playbooks: PlaybookSet, priority: Sequence[str]) -> list[Member]:
    """Highest priority first; ties by name, so the choice is stable."""
    return sorted(members, key=lambda m: (playbooks.priority_rank(m.agent, priority, m.domain), m.agent))


def signal_context(signal: Signal | None) -> dict:
    """The section 2 `context` of a signal (also when rebuilt from Prometheus), without empty fields."""
    if signal is None:
        return {}
    return {k: v for k, v in {
        "directiveId": signal.directive_id, "conflictId": signal.conflict_id, "errorCode": signal.error_code,
        "queueDepth": signal.queue_depth, "openConflicts": signal.open_conflicts,
        "dependencies": list(signal.dependencies) or None}.items() if v is not None}


def directive_claimants(agent: str, view: AgentView, members: list[Member]) -> list[Member]:
    """The members claiming the agent's directive, the agent among them."""
    signal = view.signal
    me = next((m for m in members if m.agent == agent), None)
    claimants = [m for m in members if signal and signal.directive_id and m.directive_id == signal.directive_id]
    if me is not None and me not in claimants:
        claimants.append(me)
    return claimants


def template_variables(agent: str, view: AgentView, members: list[Member], playbooks: PlaybookSet,
                       priority: Sequence[str], labels: dict, incident_id: str,
                       arbitration: Arbitration | None = None, directive_id: str | None = None,
                       roots: Iterable[str] | None = None) -> dict:
    """What a playbook template may name (see templating.TEMPLATE_ROOTS), or only ROOTS of it; a conflict's
    winner and loser come from its ARBITRATION. MEMBERS need hold only the agents the ROOTS rank."""
    signal = view.signal
    context = signal_context(signal)
    if directive_id:
        context["directiveId"] = directive_id
    if arbitration is not None:
        ranked = list(arbitration.claimants)
    else:
        ranked = [m.agent for m in _ranked(directive_claimants(agent, view, members), playbooks, priority)]
    others = [m for m in members if m.agent != agent]
    donors = [m for m in _ranked(others, playbooks, priority) if m.status == "healthy"]
    spenders = [m for m in members if m.cost_per_hour > 0]
    failing = sorted(view.facts.failing_dependencies) or context.get("dependencies", [])
    variables = {
        "agent": agent,
        "context": context,
        "metrics": dict(view.metrics),
        "checks": {k: v for k, v in {
            "lastTaskSucceeded": signal.last_task_succeeded if signal else None,
            "inputsValid": signal.inputs_valid if signal else None,
            "configHealthy": signal.config_healthy if signal else None}.items() if v is not None},
        "labels": dict(labels),
        "priority": list(priority),
        "winningAgent": ranked[0] if ranked else agent,
        "losingAgent": ranked[-1] if ranked else agent,
        "lowestPriorityAgent": _ranked(spenders, playbooks, priority)[-1].agent if spenders else agent,
        "slotDonorAgent": donors[-1].agent if donors else agent,
        "failingDependency": failing[0] if failing else agent,
        "incident": {"id": incident_id},
    }
    return variables if roots is None else {k: v for k, v in variables.items() if k in set(roots)}
