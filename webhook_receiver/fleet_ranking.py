"""Who yields to an incident: the lowest-priority spender to throttle, the lowest-priority healthy agent to donate
slots. Searched tier by tier from the lowest priority up, so an attempt reads the candidates of one tier by a query
that selects them, never the whole fleet."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Sequence

from .playbooks import PlaybookSet
from .upstreams import promql_alternatives


class Role(str, Enum):
    """What a candidate must be: a healthy agent other than the incident's (a donor), or one that spends."""

    DONOR = "slotDonorAgent"
    SPENDER = "lowestPriorityAgent"


@dataclass(frozen=True)
class Tier:
    """The agents of one priority rank: their signal's domain is in DOMAINS (or, UNRANKED, in none of OUTSIDE, the
    ranked domains), unless playbooks.yaml places them (OVERRIDDEN); LISTED are the agents it places here."""

    domains: frozenset[str]
    unranked: bool
    outside: frozenset[str]
    listed: frozenset[str]
    overridden: frozenset[str]

    def holds(self, agent: str, signal_domain: str | None) -> bool:
        if agent in self.overridden:
            return agent in self.listed
        if self.unranked:
            return signal_domain not in self.outside
        return signal_domain in self.domains


def tiers(priority: Sequence[str], playbooks: PlaybookSet) -> list[Tier]:
    """Every rank, lowest first: the domains AUTOREM_PRIORITY does not name, then its domains from the last."""
    ranked = list(dict.fromkeys(priority))
    placed = {agent: entry.domain for agent, entry in playbooks.agents.items()}
    overridden = frozenset(placed)
    out = [Tier(frozenset(), True, frozenset(ranked),
                frozenset(a for a, d in placed.items() if d not in ranked), overridden)]
    for domain in reversed(ranked):
        out.append(Tier(frozenset({domain}), False, frozenset(),
                        frozenset(a for a, d in placed.items() if d == domain), overridden))
    return out


def lowest_ranked(role: Role, agent: str, tiers_: Iterable[Tier],
                  candidates: Callable[[Role, Tier], list[str]]) -> str:
    """The last by name of the lowest tier with a candidate for ROLE (ties by name keep the choice stable); AGENT
    itself when the fleet has none."""
    for tier in tiers_:
        names = [n for n in candidates(role, tier) if not (role is Role.DONOR and n == agent)]
        if names:
            return max(names)
    return agent


def candidates_query(role: Role, tier: Tier) -> str:
    """PromQL selecting ROLE's candidates of TIER by agent, as the members read would judge them."""
    if tier.unranked:
        info = f"autonomy_agent_info{{domain!~{promql_alternatives(tier.outside)}}}" if tier.outside else "autonomy_agent_info"
    else:
        info = f"autonomy_agent_info{{domain=~{promql_alternatives(tier.domains)}}}"
    expr = f"max by (agent) ({info})"
    if tier.overridden:
        expr = f"({expr} unless on (agent) autonomy_agent_info{{agent=~{promql_alternatives(tier.overridden)}}})"
    if tier.listed:
        expr = f"({expr} or max by (agent) (autonomy_agent_info{{agent=~{promql_alternatives(tier.listed)}}}))"
    if role is Role.DONOR:  # an agent without a status sample counts as healthy, as in the members read
        return f'{expr} unless on (agent) (autonomy_agent_status{{autonomy_agent_status!="healthy"}} == 1)'
    return f"{expr} and on (agent) (max by (agent) (autonomy_agent_cost_burn_dollars_per_hour) > 0)"
