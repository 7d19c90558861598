"""Deciding what an attempt does, from a fresh view of the agent (or a conflict's claimants)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from autonomy.settings import Settings
from autonomy.signal_contract import Signal
from autonomy.vocabulary import RUNNABLE_STATES, Gate, IncidentClass, IncidentState

from ..agent_view import AgentView
from ..classifier import CAUSELESS_RULES, Decision, Facts, SloThresholds, classify
from ..conflicts import DIRECTIVE, Arbitration, arbitrate, key_parts, signal_conflict_labels, without_conflicts
from ..fleet_ranking import Role, lowest_ranked, tiers
from ..fleet_reader import FleetReader
from ..fleet_view import Member, directive_claimants, template_variables
from ..gates import Refusal
from ..incident import Incident, alert_onset
from ..playbooks import Playbook, PlaybookSet
from ..store import IncidentStore
from ..upstreams import UpstreamError
from .worker_pool import Deferred, Work


@dataclass(frozen=True)
class Plan:
    """What an attempt is about to do, decided from a fresh view."""

    view: AgentView
    decision: Decision
    arbitration: Arbitration | None
    agents: tuple[str, ...]  # whose recovery is verified: the agent, or a conflict's claimants
    foreign: tuple[str, ...]  # conflicts other incidents own
    symptom_of: str | None = None  # the agent's conflict a person owns, whose symptom this decision sees


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def classification_inputs(view: AgentView, incident: Incident) -> tuple[Signal | None, Facts]:
    """The agent's own signal decides when it is live; alert classes only stand in when it is not."""
    if view.signal is not None and not view.facts.silent:
        return view.signal, replace(view.facts, alert_classes=frozenset())
    # A silent agent's last signal is old news: its stale error code must not outrank `silent`.
    return None, replace(view.facts, alert_classes=incident.alert_classes)


# Template roots whose values rank a directive's claimants (the winner and the loser, when no arbitration of the
# conflict gave them); the fleet's rankings (fleet_ranking.Role) are searched tier by tier.
CLAIMANT_RANKING = frozenset({"winningAgent", "losingAgent"})


def members_of(reader: FleetReader, agents) -> list[Member]:
    """The members AGENTS; none when the upstream cannot say."""
    try:
        return reader.members(agents)
    except UpstreamError:
        return []


def claimant_members(reader: FleetReader, agent: str, view: AgentView) -> list[Member]:
    """The members claiming AGENT's directive (AGENT among them), read by a query that selects only them."""
    directive = view.signal.directive_id if view.signal else None
    try:
        claimants = reader.claimants(f"{DIRECTIVE}:{directive}") if directive else []
    except UpstreamError:
        claimants = []
    return members_of(reader, {agent, *claimants})


class Planner:
    """Classifies the incident on the latest view, arbitrates conflicts, and waits for evidence where it must."""

    def __init__(self, settings: Settings, store: IncidentStore, playbooks: PlaybookSet, stop: threading.Event):
        self.settings, self.store, self.playbooks, self.stop = settings, store, playbooks, stop
        self.slo = SloThresholds.from_settings(settings)

    def plan(self, work: Work, incident: Incident, reader: FleetReader) -> tuple[Incident, Plan]:
        view = reader.view(incident.agent)
        if incident.conflict_key:
            return self._plan_conflict(work, incident, reader, view)
        foreign, owned = self._foreign_conflicts(incident, view, reader)
        decision = classify(*classification_inputs(without_conflicts(view, foreign), incident), self.slo)
        symptom_of = owned if owned is not None and decision.rule in CAUSELESS_RULES else None
        arbitration = None
        if decision.classification == IncidentClass.CONFLICT:
            claimants = directive_claimants(incident.agent, view, claimant_members(reader, incident.agent, view))
            arbitration = arbitrate({m.agent: self.playbooks.domain_of(m.agent, m.domain) for m in claimants}
                                    or {incident.agent: self.playbooks.domain_of(incident.agent)},
                                    self.settings.priority)
        return incident, Plan(view, decision, arbitration, (incident.agent,), foreign, symptom_of)

    def _foreign_conflicts(self, incident: Incident, view: AgentView,
                           reader: FleetReader) -> tuple[tuple[str, ...], str | None]:
        """The conflicts with an incident of their own, which this agent's incident leaves to them, and this
        agent's own conflict if a person owns it (escalated or held).

        A conflict this agent is in whose alert has not reached the receiver yet gets a moment to arrive (its
        rule fires well before its symptoms'), then its incident goes first; without one, this incident acts.
        """
        signal = view.signal
        own = signal_conflict_labels(signal, view.facts.directive_claimants) if signal else {}
        key = (f"conflict:{own['conflict_id']}" if "conflict_id" in own
               else f"directive:{own['directive_id']}" if "directive_id" in own else None)
        deadline = time.time() + self.settings.verify_timeout_seconds
        while key and reader.through_alertmanager and key not in self.store.open_conflict_keys():
            if time.time() >= deadline or self.stop.wait(self.settings.verify_interval_seconds):
                break
        conflict = next((c for c in self.store.open_incidents() if c.conflict_key == key), None) if key else None
        if conflict is not None and conflict.state in RUNNABLE_STATES:
            # A claimant of it is held back by the store until the conflict is settled: no need to look again.
            retry_at = None if incident.agent in conflict.agents else time.time() + self.settings.verify_interval_seconds
            raise Deferred(f"waits for the conflict {key} to be settled first", retry_at=retry_at)
        owned = key if conflict is not None and conflict.state in (IncidentState.ESCALATED, IncidentState.SKIPPED) \
            else None
        return tuple(sorted(self.store.open_conflict_keys())), owned

    def _plan_conflict(self, work: Work, incident: Incident, reader: FleetReader,
                       view: AgentView) -> tuple[Incident, Plan]:
        kind, ident = key_parts(incident.conflict_key)
        holders = reader.claimants(incident.conflict_key)
        foreign = tuple(sorted(self.store.open_conflict_keys() - {incident.conflict_key}))
        persists = len(holders) >= 2 if kind == DIRECTIVE else bool(holders)
        if not persists:
            return incident, Plan(view, Decision(None, (), None), None, incident.agents, foreign)
        incident = self._more_agents(work, incident, holders)
        members = {m.agent: m for m in members_of(reader, holders)}
        arbitration = arbitrate({a: self.playbooks.domain_of(a, members[a].domain if a in members else None)
                                 for a in holders}, self.settings.priority)
        what = f"directiveId {ident}" if kind == DIRECTIVE else f"conflictId {ident}"
        decision = Decision(IncidentClass.CONFLICT, (f"{what} claimed by {', '.join(holders)}",), f"conflict-{kind}")
        return incident, Plan(view, decision, arbitration, incident.agents, foreign)

    def _more_agents(self, work: Work, incident: Incident, agents) -> Incident:
        """A conflict found more claimants: record them and take them too, or wait for whoever holds one."""
        new = [a for a in agents if a not in work.claim.agents]
        if not new:
            return incident
        incident = self.store.update(incident.id, work.claim,
                                     claimants=tuple(dict.fromkeys((*incident.claimants, *new))))
        extended = self.store.extend(work.claim, new)
        if extended is None:
            raise Deferred(f"waits for {', '.join(new)} to be free")  # claimable again once they are
        work.claim = extended
        return incident

    def await_evidence(self, incident: Incident, reader: FleetReader) -> Refusal | None:
        """After a hold was lifted, or on a notification that arrived late, act only on samples newer than that
        moment; wait for them, or refuse."""
        since, what = incident.gate_changed_at, "the end of its hold"
        if since is None and incident.attempts == 0 and self._arrived_late(incident):
            # A person may have fixed it just before lifting the silence that kept it back: the samples the
            # notification reflects are older than that fix, and acting on them would claim the person's fix.
            since, what = incident.opened_at, "its late notification"
        if since is None:
            return None
        deadline = time.time() + self.settings.verify_timeout_seconds
        stale: list[str] = list(incident.agents)
        while True:
            try:
                stale = reader.stale(incident.agents, since)
                # A silent agent sends nothing new: its silence, on a sample scraped since, is the evidence.
                if not stale or (all(reader.view(a).facts.silent for a in stale)
                                 and not reader.stale(stale, since, own_signal=False)):
                    return None
            except UpstreamError:
                pass
            if time.time() >= deadline or self.stop.wait(self.settings.verify_interval_seconds):
                return Refusal(Gate.STALE_EVIDENCE, f"no sample from {', '.join(stale)} newer than {what} "
                                                    f"({_iso(since)}) within "
                                                    f"{self.settings.verify_timeout_seconds:g}s: nothing done")

    def _arrived_late(self, incident: Incident) -> bool:
        """Whether its alerts had been firing longer than AUTOREM_LATE_NOTIFICATION_SECONDS when it opened."""
        started = alert_onset(incident.alerts, incident.opened_at)
        return incident.opened_at - started > self.settings.late_notification_seconds

    def refine_onset(self, work: Work, incident: Incident, reader: FleetReader) -> Incident:
        try:
            onset = reader.onset(incident)
        except UpstreamError:
            return incident
        if onset is not None and (incident.onset_at is None or onset < incident.onset_at):
            return self.store.update(incident.id, work.claim, onset_at=onset)
        return incident

    def variables(self, incident: Incident, plan: Plan, reader: FleetReader, playbook: Playbook) -> dict:
        """What PLAYBOOK's templates may name; agents are read only as far as its templates need them."""
        kind, ident = key_parts(incident.conflict_key) if incident.conflict_key else (None, None)
        directive = ident if kind == DIRECTIVE else None
        roots = playbook.template_roots
        members = (claimant_members(reader, incident.agent, plan.view)
                   if roots & CLAIMANT_RANKING and plan.arbitration is None else [])
        variables = template_variables(incident.agent, plan.view, members, self.playbooks, self.settings.priority,
                                       incident.labels, incident.id, plan.arbitration, directive, roots)
        for role in (r for r in Role if r.value in roots):
            variables[role.value] = self._lowest_ranked(role, incident.agent, reader)
        return variables

    def _lowest_ranked(self, role: Role, agent: str, reader: FleetReader) -> str:
        """ROLE's agent, read tier by tier; the incident's own agent when the upstream cannot say (as before)."""
        try:
            return lowest_ranked(role, agent, tiers(self.settings.priority, self.playbooks), reader.candidates)
        except UpstreamError:
            return agent
