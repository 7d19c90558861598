"""The fleet reader port: how the engine sees agents, through Prometheus (the Alertmanager path) or through the
signals agents report straight to the receiver (the direct path). Both answer the same questions, so the loop has
one shape; `through_alertmanager` says which path's incidents these are, for the few places the paths differ."""
from __future__ import annotations

from typing import Callable, Iterable, Protocol

from autonomy.signal_contract import Signal
from autonomy.vocabulary import Source

from .agent_extensions import ExporterExtensions, with_extensions
from .agent_view import FLEET, FLEET_SPEND, AgentView, read_agent, view_from_signals
from .alert_conditions import RuleCatalog, missing_rule, still_true
from .classifier import CLASSES, Facts, SloThresholds, classify
from .conflicts import CONFLICT_ID, DIRECTIVE, conflict_key, key_parts, without_conflicts
from .fleet_ranking import Role, Tier, candidates_query
from .fleet_view import Member, members_from_prometheus, members_from_signals
from .incident import Incident
from .upstreams import PrometheusApi, UpstreamError, prometheus_problem, promql_alternatives, promql_string, samples

LAST_SIGNAL = "autonomy_agent_last_signal_timestamp_seconds"



def incident_alertnames(incident: Incident, agents: Iterable[str]) -> dict[str, set[str]]:
    """Every alert the incident has seen, by the agent it is about (the incident's agent when unlabelled)."""
    names: dict[str, set[str]] = {a: set() for a in agents}
    for alert in incident.alerts:
        agent = alert.labels.get("agent", incident.agent)
        if agent in names:
            names[agent].add(alert.labels.get("alertname", "(an alert without alertname)"))
    return names


class FleetReader(Protocol):
    """What the engine asks about agents; UpstreamError where the source cannot be read.

    `through_alertmanager`: the incidents are alert rules notified by an Alertmanager (Prometheus's rules by
    Alertmanager, or Grafana's by Grafana's own: `source` says which), so their alerts resolve there (a resolved
    notification, or the sweeper, closes them), a conflict's own alert arrives on its own, and that Alertmanager
    holds their silences. Otherwise agents report straight to the receiver: a verified recovery closes the
    incident, and Alertmanager is asked what it would silence.
    """

    source: Source
    through_alertmanager: bool

    def view(self, agent: str) -> AgentView: ...

    def stale(self, agents: Iterable[str], since: float, own_signal: bool = True) -> list[str]: ...

    def fleet_spend(self) -> float | None: ...

    def members(self, agents: Iterable[str] | None = None) -> list[Member]:
        """The fleet's agents, or only AGENTS (the engine names them: a ranking of the fleet uses `candidates`)."""

    def candidates(self, role: Role, tier: Tier) -> list[str]:
        """The agents of TIER that could be ROLE (fleet_ranking searches the tiers), selected by the source."""

    def claimants(self, key: str) -> list[str]: ...

    def conditions(self, incident: Incident, agents: Iterable[str],
                   foreign_conflicts: Iterable[str]) -> tuple[list[str], list[str]]: ...

    def onset(self, incident: Incident) -> float | None: ...


class PrometheusFleetReader:
    """The agents as Prometheus holds them; the incident's conditions are its alert rules, evaluated now (a
    Grafana incident's too: by the rules Prometheus has of the same names)."""

    through_alertmanager = True

    def __init__(self, prom: PrometheusApi, catalog: RuleCatalog, silent_seconds: float, budget_cap: float,
                 extensions: ExporterExtensions | None = None, source: Source = Source.ALERTMANAGER):
        self.prom, self.catalog, self.source = prom, catalog, source
        self.missing_rule = missing_rule(source)  # why a name Prometheus has no rule of cannot be re-checked
        self.silent_seconds, self.budget_cap = silent_seconds, budget_cap
        self.extensions = extensions  # the signals' extensions, which Prometheus never has: the exporters'

    def view(self, agent: str) -> AgentView:
        try:
            view = read_agent(self.prom, agent, frozenset(), self.silent_seconds, self.budget_cap)
        except UpstreamError as exc:
            return AgentView(None, Facts(), {}, prometheus_problem(exc))
        return with_extensions({agent: view}, self.extensions)[agent]

    def stale(self, agents: Iterable[str], since: float, own_signal: bool = True) -> list[str]:
        """Agents without a sample scraped after SINCE (and, with OWN_SIGNAL, a signal sent after it too)."""
        wanted = sorted({a for a in agents if a != FLEET})
        if not wanted:
            return []
        selector = f"{LAST_SIGNAL}{{agent=~{promql_alternatives(wanted)}}}"
        query = f"timestamp({selector}) > {since:.3f}"
        if own_signal:
            query = f"{selector} > {since:.3f} and {query}"
        fresh = {row["metric"]["agent"] for row in samples(self.prom.query(query), "agent")}
        return [a for a in wanted if a not in fresh]

    def fleet_spend(self) -> float | None:
        rows = samples(self.prom.query(FLEET_SPEND))
        return float(rows[0]["value"][1]) if rows else None

    def members(self, agents: Iterable[str] | None = None) -> list[Member]:
        if agents is None:
            return members_from_prometheus(self.prom)
        wanted = sorted(set(agents) - {FLEET})
        return members_from_prometheus(self.prom, f"{{agent=~{promql_alternatives(wanted)}}}") if wanted else []

    def candidates(self, role: Role, tier: Tier) -> list[str]:
        return sorted({row["metric"]["agent"] for row in samples(self.prom.query(candidates_query(role, tier)), "agent")})

    def claimants(self, key: str) -> list[str]:
        kind, ident = key_parts(key)
        metric, label = {DIRECTIVE: ("autonomy_agent_directive_claim", "directive_id"),
                         CONFLICT_ID: ("autonomy_agent_conflict", "conflict_id")}[kind]
        rows = self.prom.query(f"max by (agent) ({metric}{{{label}={promql_string(ident)}}} == 1)")
        return sorted({row["metric"]["agent"] for row in samples(rows, "agent")})

    def conditions(self, incident: Incident, agents: Iterable[str],
                   foreign_conflicts: Iterable[str]) -> tuple[list[str], list[str]]:
        """The incident's alerts, and every remediable alert pending or firing for its agents now that it has
        not seen yet, re-evaluated: (still true, cannot be re-checked)."""
        agents = sorted(set(agents))
        names = incident_alertnames(incident, agents)
        classes = "|".join(CLASSES)
        for row in self.prom.query(f"ALERTS{{agent=~{promql_alternatives(agents)}, autonomy_class=~\"{classes}\"}}"):
            labels = row.get("metric", {})
            key = conflict_key(labels)
            # A conflict with its own key is its own incident's business, and only that.
            if (key == incident.conflict_key) if incident.conflict_key else key is None:
                names.setdefault(labels.get("agent", ""), set()).add(labels.get("alertname", ""))
        return still_true(self.prom, self.catalog, {a: n for a, n in names.items() if n}, missing=self.missing_rule)

    def onset(self, incident: Incident) -> float | None:
        """When Prometheus first saw the incident's conditions hold (the alerts' activeAt, before their `for:`).

        ALERTS_FOR_STATE keeps activeAt in whole seconds; the first ALERTS sample of that second is the
        evaluation that found the condition, to the millisecond.
        """
        agents = promql_alternatives(incident.agents)
        names = {n for ns in incident_alertnames(incident, incident.agents).values() for n in ns}
        rows = samples(self.prom.query(f"ALERTS_FOR_STATE{{agent=~{agents}}}"), "alertname")
        active = [v for r in rows if r["metric"]["alertname"] in names and (v := float(r["value"][1])) == v]
        if not active:
            return None
        second = min(active)
        rows = self.prom.query(f"ALERTS{{agent=~{agents}}}[1s] @ {second + 1:.3f}")
        exact = [float(t) for r in rows if r.get("metric", {}).get("alertname") in names
                 for t, _ in r.get("values", []) if float(t) >= second]
        return min(exact) if exact else second


class SignalFleetReader:
    """The agents as their latest reported signals show them; the incident's condition is the classifier's."""

    source, through_alertmanager = Source.SIGNAL, False

    def __init__(self, signals: Callable[[], list[Signal]], silent_seconds: float, slo: SloThresholds):
        self.signals, self.silent_seconds, self.slo = signals, silent_seconds, slo

    def _by_agent(self) -> dict[str, Signal]:
        return {s.agent: s for s in self.signals()}

    def view(self, agent: str) -> AgentView:
        return view_from_signals(agent, self.signals(), self.silent_seconds)

    def stale(self, agents: Iterable[str], since: float, own_signal: bool = True) -> list[str]:
        if not own_signal:
            return []  # nothing is scraped here: a silent agent's silence is judged now
        latest = self._by_agent()
        return sorted(a for a in set(agents) if a not in latest or latest[a].timestamp <= since)

    def fleet_spend(self) -> float | None:
        return sum(s.cost_burn_dollars_per_hour for s in self.signals()) * 24

    def members(self, agents: Iterable[str] | None = None) -> list[Member]:
        signals = self.signals()
        if agents is not None:
            wanted = set(agents)
            signals = [s for s in signals if s.agent in wanted]
        return members_from_signals(signals)

    def candidates(self, role: Role, tier: Tier) -> list[str]:
        if role is Role.DONOR:
            return sorted(s.agent for s in self.signals() if tier.holds(s.agent, s.domain) and s.status == "healthy")
        return sorted(s.agent for s in self.signals() if tier.holds(s.agent, s.domain)
                      and s.cost_burn_dollars_per_hour > 0)

    def claimants(self, key: str) -> list[str]:
        kind, ident = key_parts(key)
        field = "directive_id" if kind == DIRECTIVE else "conflict_id"
        return sorted(s.agent for s in self.signals() if getattr(s, field) == ident)

    def conditions(self, incident: Incident, agents: Iterable[str],
                   foreign_conflicts: Iterable[str]) -> tuple[list[str], list[str]]:
        """What the classifier still finds on each agent's latest signal (a conflict incident: its conflict)."""
        agents = sorted(set(agents))
        if incident.conflict_key:
            holders = self.claimants(incident.conflict_key)
            kind = key_parts(incident.conflict_key)[0]
            persists = len(holders) >= 2 if kind == DIRECTIVE else bool(holders)
            return ([f"{incident.conflict_key} claimed by {', '.join(holders)}"] if persists else []), []
        true = []
        for agent in agents:
            view = without_conflicts(self.view(agent), foreign_conflicts)
            decision = classify(view.signal, view.facts, self.slo)
            if decision.classification:
                who = f" of {agent}" if len(agents) > 1 else ""
                true.append(f"{decision.classification} on the latest signal{who} ({'; '.join(decision.reasons)})")
        return true, []

    def onset(self, incident: Incident) -> float | None:
        return None  # the first bad signal's ts, which the ledger took when the incident opened

