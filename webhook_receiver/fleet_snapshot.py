"""One poll's reads of every agent under verification, made together: a fleet reader whose answers come from
one query per kind for all of them, however many incidents wait (engine/verifier.py looks through it)."""
from __future__ import annotations

from typing import Iterable

from autonomy.vocabulary import Source

from .agent_extensions import with_extensions
from .agent_view import FLEET, FLEET_SPEND, AgentView, read_agents
from .alert_conditions import still_true
from .classifier import CLASSES, Facts
from .conflicts import conflict_key
from .fleet_reader import LAST_SIGNAL, FleetReader, PrometheusFleetReader, incident_alertnames
from .incident import Incident
from .upstreams import DeadlinePassed, PrometheusApi, UpstreamError, prometheus_problem, promql_alternatives, samples


class MemoPrometheus:
    """A Prometheus whose answers are kept for one poll: each rule's expression is evaluated once."""

    def __init__(self, prom: PrometheusApi):
        self.prom = prom
        self._answers: dict[str, list[dict] | UpstreamError] = {}

    def query(self, promql: str) -> list[dict]:
        if promql not in self._answers:
            try:
                self._answers[promql] = self.prom.query(promql)
            except UpstreamError as exc:
                self._answers[promql] = exc
        answer = self._answers[promql]
        if isinstance(answer, UpstreamError):
            raise answer
        return answer

    def __getattr__(self, name: str):
        return getattr(self.prom, name)


class PrometheusSnapshot:
    """The Prometheus path's reader over AGENTS, read together on first use; answers for other agents, or for
    another kind of question, fall through to READER."""

    through_alertmanager = True

    def __init__(self, reader: PrometheusFleetReader, agents: Iterable[str]):
        self.reader, self.agents = reader, sorted(set(agents))
        self.source: Source = reader.source
        self.prom = MemoPrometheus(reader.prom)
        self._views: dict[str, AgentView] | None = None
        self._fresh: dict[str, float] | None = None
        self._alerts: list[dict] | None = None
        self._problem: str | None = None

    def view(self, agent: str) -> AgentView:
        if self._views is None:
            try:
                self._views = with_extensions(read_agents(self.prom, self.agents, self.reader.silent_seconds,
                                                          self.reader.budget_cap), self.reader.extensions)
            except DeadlinePassed:
                raise  # the time is up, Prometheus did not fail: the look keeps its last reason
            except UpstreamError as exc:
                self._views, self._problem = {}, prometheus_problem(exc)
        if self._problem:
            return AgentView(None, Facts(), {}, self._problem)
        return self._views[agent] if agent in self._views else self.reader.view(agent)

    def stale(self, agents: Iterable[str], since: float, own_signal: bool = True) -> list[str]:
        wanted = sorted({a for a in agents if a != FLEET})
        if not own_signal or not set(wanted) <= set(self.agents):
            return self.reader.stale(wanted, since, own_signal)
        if self._fresh is None:
            # An agent's newest sample counts from the later of its signal's own time and its scrape's.
            selector = f"{LAST_SIGNAL}{{agent=~{promql_alternatives(a for a in self.agents if a != FLEET)}}}"
            signal = {r["metric"]["agent"]: float(r["value"][1]) for r in samples(self.prom.query(selector), "agent")}
            scraped = {r["metric"]["agent"]: float(r["value"][1])
                       for r in samples(self.prom.query(f"timestamp({selector})"), "agent")}
            self._fresh = {a: min(signal[a], scraped[a]) for a in signal if a in scraped}
        return [a for a in wanted if self._fresh.get(a, float("-inf")) <= since]

    def fleet_spend(self) -> float | None:
        rows = samples(self.prom.query(FLEET_SPEND))
        return float(rows[0]["value"][1]) if rows else None

    def members(self, agents=None):
        return self.reader.members(agents)

    def candidates(self, role, tier) -> list[str]:
        return self.reader.candidates(role, tier)

    def claimants(self, key: str) -> list[str]:
        return self.reader.claimants(key)

    def conditions(self, incident: Incident, agents: Iterable[str],
                   foreign_conflicts: Iterable[str]) -> tuple[list[str], list[str]]:
        agents = sorted(set(agents))
        if not set(agents) <= set(self.agents):
            return self.reader.conditions(incident, agents, foreign_conflicts)
        if self._alerts is None:
            classes = "|".join(CLASSES)
            self._alerts = self.prom.query(f'ALERTS{{agent=~{promql_alternatives(self.agents)}, '
                                           f'autonomy_class=~"{classes}"}}')
        names, wanted = incident_alertnames(incident, agents), set(agents)
        for row in self._alerts:
            labels = row.get("metric", {})
            if labels.get("agent") not in wanted:
                continue
            key = conflict_key(labels)
            if (key == incident.conflict_key) if incident.conflict_key else key is None:
                names.setdefault(labels["agent"], set()).add(labels.get("alertname", ""))
        return still_true(self.prom, self.reader.catalog, {a: n for a, n in names.items() if n}, self.agents,
                          missing=self.reader.missing_rule)

    def onset(self, incident: Incident) -> float | None:
        return self.reader.onset(incident)


def snapshot(reader: FleetReader, agents: Iterable[str]) -> FleetReader:
    """READER as one poll sees AGENTS: batched on the Prometheus path; the direct path reads memory anyway."""
    return PrometheusSnapshot(reader, agents) if isinstance(reader, PrometheusFleetReader) else reader
