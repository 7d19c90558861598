"""Conflicts between agents: one incident per conflict (its key), its claimants, and arbitration by the priority
order, refused where that order does not decide."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

from autonomy.signal_contract import Signal

from .agent_view import AgentView

DIRECTIVE, CONFLICT_ID = "directive", "conflict"


def conflict_key(labels: Mapping[str, str]) -> str | None:
    """The conflict an alert is about: `conflict:<id>` or `directive:<id>`; None for other alerts."""
    if labels.get("autonomy_class") != "CONFLICT":
        return None
    if labels.get("conflict_id"):
        return f"{CONFLICT_ID}:{labels['conflict_id']}"
    if labels.get("directive_id"):
        return f"{DIRECTIVE}:{labels['directive_id']}"
    return None


def key_parts(key: str) -> tuple[str, str]:
    kind, _, ident = key.partition(":")
    return kind, ident


def signal_conflict_labels(signal: Signal, claimants: int) -> dict[str, str]:
    """Labels that tie a direct-path signal to its conflict, as the alert rules' labels do."""
    if signal.conflict_id:
        return {"conflict_id": signal.conflict_id}
    if signal.directive_id and claimants >= 2:
        return {"directive_id": signal.directive_id}
    return {}


def without_conflicts(view: AgentView, keys: Iterable[str]) -> AgentView:
    """VIEW without the evidence of conflicts in KEYS: another incident owns them, this one must not act on them."""
    keys = set(keys)
    signal, facts = view.signal, view.facts
    if signal is None or not keys:
        return view
    if signal.conflict_id and f"{CONFLICT_ID}:{signal.conflict_id}" in keys:
        signal = replace(signal, conflict_id=None)
    if signal.directive_id and f"{DIRECTIVE}:{signal.directive_id}" in keys:
        facts = replace(facts, directive_claimants=0)
    return replace(view, signal=signal, facts=facts)


@dataclass(frozen=True)
class Arbitration:
    """Who wins a conflict by the priority order: claimants highest first, their domains, or why it cannot say."""

    claimants: tuple[str, ...]
    domains: Mapping[str, str | None]
    priority: tuple[str, ...]
    problem: str | None = None

    @property
    def winner(self) -> str:
        return self.claimants[0]

    @property
    def loser(self) -> str:
        return self.claimants[-1]

    def as_dict(self) -> dict:
        """For the lineage: who claimed, in which domain, the order applied, who won and who yields."""
        out = {"claimants": list(self.claimants), "domains": dict(self.domains), "priority": list(self.priority)}
        if self.problem:
            out["problem"] = self.problem
        else:
            out.update(winner=self.winner, loser=self.loser)
        return out


def arbitrate(claimants: Mapping[str, str | None], priority: Sequence[str]) -> Arbitration:
    """Rank CLAIMANTS (agent -> domain) by PRIORITY; a problem when a domain is unranked or two share a rank."""
    priority = tuple(priority)
    rank = {agent: priority.index(domain) if domain in priority else None for agent, domain in claimants.items()}
    ordered = tuple(sorted(claimants, key=lambda a: (rank[a] if rank[a] is not None else len(priority), a)))
    problem = None
    unranked = [a for a in ordered if rank[a] is None]
    if len(ordered) > 1 and unranked:
        named = ", ".join(f"{a} ({claimants[a] or 'no domain'})" for a in unranked)
        problem = (f"the priority order {','.join(priority)} (AUTOREM_PRIORITY) does not rank {named}: "
                   "a human decides who yields")
    elif len(ordered) > 1:
        by_rank: dict[int, list[str]] = {}
        for agent in ordered:
            by_rank.setdefault(rank[agent], []).append(agent)
        tied = next((agents for agents in by_rank.values() if len(agents) > 1), None)
        if tied:
            problem = (f"{' and '.join(tied)} share the domain {claimants[tied[0]]}: the priority order does not "
                       "decide between them, a human does")
    return Arbitration(ordered, dict(claimants), priority, problem)
