"""The closed loop: classify, gate, run the playbook, verify on fresh samples, retry, escalate."""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable

from opentelemetry import trace

from autonomy.settings import Settings
from autonomy.signal_contract import Signal

from .actions import ActionRunner
from .agent_states import ESCALATION_REASONS, GATE_REASONS
from .agent_view import FLEET, AgentView
from .alert_conditions import RuleCatalog
from .classifier import CLASSES, Decision, Facts, SloThresholds, classify
from .conflicts import DIRECTIVE, Arbitration, arbitrate, key_parts, signal_conflict_labels, without_conflicts
from .escalation import escalated_alert, escalation_payload, post_escalated_alert, post_payload
from .fleet_view import Member, directive_claimants, signal_context, template_variables
from .gates import GateInputs, Refusal, check_gates
from .incident import RUNNABLE_STATES
from .ledger import Incident, IncidentClosed, IncidentLedger
from .lineage import LINEAGE_FILE, LineageLog, utc_now_iso
from .observation import Observer, PrometheusObserver, SignalObserver
from .outcomes import AUTO_RESOLVED, COUNTED_BEFORE_CLOSE, ESCALATED, SKIPPED, closing_outcome
from .playbooks import PlaybookSet
from .receiver_metrics import ReceiverMetrics
from .retry_policy import RetryPolicy
from .upstreams import AlertmanagerApi, PrometheusApi, UpstreamError
from .upstreams import deadline as upstream_deadline
from .verification import Verification, VerifyResult, verify_recovery

log = logging.getLogger("autonomy.engine")
KILL_SWITCH_FLAG = "remediation_enabled"


@dataclass
class Upstreams:
    """Where the engine reads and writes outside itself; None where not configured."""

    prometheus: PrometheusApi
    alertmanager: AlertmanagerApi | None
    latest_signal: Callable[[str], Signal | None]
    all_signals: Callable[[], list[Signal]]


class FeatureFlagOff(RuntimeError):
    """Remediation was asked to be switched on while AUTO_REMEDIATE is not exactly true."""


class _Deferred(Exception):
    """The incident now waits (it is registered) for an agent's remediation or another incident to end."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attempt_policy(settings: Settings) -> RetryPolicy:
    """The spacing of attempts: AUTOREM_ATTEMPT_BACKOFF_SECONDS before the second, doubling, capped at 4x."""
    base = settings.attempt_backoff_seconds
    return RetryPolicy(attempts=settings.max_attempts, backoff_seconds=base, max_backoff_seconds=base * 4,
                       jitter=0.1 if base else 0.0)


@dataclass(frozen=True)
class _Plan:
    """What an attempt is about to do, decided from a fresh view."""

    view: AgentView
    decision: Decision
    arbitration: Arbitration | None
    agents: tuple[str, ...]  # whose recovery is verified: the agent, or a conflict's claimants
    foreign: tuple[str, ...]  # conflicts other incidents own


class RemediationEngine:
    """Worker threads draining a bounded queue of incident ids; one remediation per agent at a time."""

    def __init__(self, settings: Settings, ledger: IncidentLedger, lineage: LineageLog,
                 metrics: ReceiverMetrics, playbooks: PlaybookSet, upstreams: Upstreams,
                 runner: ActionRunner, tracer: trace.Tracer, lineage_url: Callable[[str], str]):
        self.settings, self.ledger, self.lineage, self.metrics = settings, ledger, lineage, metrics
        self.playbooks, self.up, self.runner, self.tracer = playbooks, upstreams, runner, tracer
        self.lineage_url = lineage_url
        self.slo = SloThresholds.from_settings(settings)
        self.attempt_policy = attempt_policy(settings)
        self.rng = random.Random()
        self._catalog: RuleCatalog | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._slots_lock = threading.Lock()
        self._free_slots = settings.queue_size
        self._busy: set[str] = set()
        self._deferred: dict[str, list[str]] = {}  # agent -> incidents waiting for it to be free
        self._waiting: dict[str, list[str]] = {}  # incident -> incidents waiting for its attempts to end
        self._in_hand: Counter[str] = Counter()  # incident -> queue entries and workers holding it
        self._busy_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        stored = ledger.flag(KILL_SWITCH_FLAG)
        self._enabled = settings.auto_remediate and stored != "false"
        self._disabled_reason = None if self._enabled else (
            "AUTO_REMEDIATE is not true (feature flag off)" if not settings.auto_remediate
            else "disabled before the last restart")
        metrics.remediation_enabled.set(1 if self._enabled else 0)
        metrics.queue_capacity.set(settings.queue_size)

    # -- the kill switch -------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool, reason: str) -> None:
        """Flip the kill switch durably; an in-flight playbook stops before its next step.

        Switching it back on resumes the incidents the switch had held back; they act only on samples newer
        than this moment. With AUTO_REMEDIATE not exactly true it cannot be switched on (FeatureFlagOff).
        """
        if enabled and not self.settings.auto_remediate:
            raise FeatureFlagOff("AUTO_REMEDIATE is not true: set AUTO_REMEDIATE=true and restart the receiver")
        self.ledger.set_flag(KILL_SWITCH_FLAG, "true" if enabled else "false")
        self._enabled, self._disabled_reason = enabled, None if enabled else reason
        self.metrics.remediation_enabled.set(1 if enabled else 0)
        if enabled:
            self._resume_held(lambda i: i.state_reason == "kill_switch" or (i.reason or "").startswith("kill_switch"),
                              "resumed: kill switch on")

    def _resume_held(self, held_here: Callable[[Incident], bool], reason: str) -> None:
        """Queue again the skipped incidents HELD_HERE selects; they wait for samples newer than now."""
        now = time.time()
        resumed = []
        for incident in self.ledger.list(state="skipped", limit=10_000):
            if not held_here(incident) or not self.reserve(1):
                continue
            try:
                self.ledger.update(incident.id, state="open", outcome=None, resolved_at=None, reason=reason,
                                   state_reason=None, gate_changed_at=now)
            except Exception:
                self.release_slots(1)  # reserved, not queued: give it back
                raise
            resumed.append(incident.id)
        self.enqueue(resumed)

    def remediation_status(self) -> dict:
        return {"enabled": self._enabled, "reason": self._disabled_reason, "dry_run": self.settings.dry_run,
                "canary_agents": list(self.settings.canary_agents)}

    # -- the queue ----------------------------------------------------------------------------------
    def reserve(self, count: int) -> bool:
        """Take COUNT queue slots, or none if that many are not free (the webhook then answers 503)."""
        with self._slots_lock:
            # A batch larger than the whole queue still gets in once the queue is empty, never 503 forever.
            if self._free_slots < min(count, self.settings.queue_size):
                return False
            self._free_slots -= count
            return True

    def enqueue(self, incident_ids: tuple[str, ...] | list[str]) -> None:
        """Queue incidents whose slots were reserved."""
        with self._busy_lock:
            self._in_hand.update(incident_ids)
        for incident_id in incident_ids:
            self._queue.put(incident_id)
        self.metrics.queue_depth.set(self._queue.qsize())

    def release_slots(self, count: int) -> None:
        """Give back COUNT reserved slots that nothing was queued in (a refused or failed commit)."""
        with self._slots_lock:
            self._free_slots = min(self.settings.queue_size, self._free_slots + count)

    def start(self, workers: int | None = None, sweeper: bool = True) -> None:
        """Start the workers (and the sweeper), after re-queueing what was in flight before a restart."""
        resumed = []
        for incident in self.ledger.runnable():
            if incident.state == "remediating":
                # The attempt a crash interrupted never finished (nor wrote its lineage line): run it again.
                self.ledger.update(incident.id, state="open", attempts=max(0, incident.attempts - 1),
                                   playbooks_run=incident.playbooks_run[:-1], reason="resumed after a restart")
            resumed.append(incident.id)
        with self._slots_lock:
            self._free_slots -= len(resumed)
        self.enqueue(resumed)
        canary, dry_run = self.settings.canary_agents, self.settings.dry_run

        def lifted(incident: Incident) -> bool:  # a hold a restart lifted: the canary widened, dry run off
            if incident.state_reason == "not_in_canary":
                return not canary or all(a in canary for a in incident.agents)
            return incident.state_reason == "dry_run" and not dry_run
        self._resume_held(lifted, "resumed: the restart lifted its hold")
        for n in range(workers or self.settings.workers):
            self._spawn(self._work, f"remediation-{n}")
        if sweeper:
            self._spawn(self._sweep_loop, "sweeper")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=timeout)

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def running_agents(self) -> set[str]:
        """Agents a worker is remediating right now (the tiles' spinner)."""
        with self._busy_lock:
            return set(self._busy)

    def _work(self) -> None:
        while not self._stop.is_set():
            incident_id = self._queue.get()
            if incident_id is None:
                return
            self.run_queued(incident_id)

    def run_queued(self, incident_id: str) -> None:
        """What a worker does with one entry it took from the queue."""
        with self._slots_lock:
            self._free_slots += 1
        self.metrics.queue_depth.set(self._queue.qsize())
        try:
            self.process(incident_id)
        except Exception:  # one bad incident must not take a worker down
            log.exception("incident %s failed unexpectedly", incident_id)
        finally:
            with self._busy_lock:
                self._in_hand[incident_id] -= 1
                if self._in_hand[incident_id] <= 0:
                    del self._in_hand[incident_id]

    # -- one incident ----------------------------------------------------------------------------------
    def _acquire(self, agents, incident_id: str) -> bool:
        """Take every agent, or none and wait (registered) for the first busy one to be released."""
        with self._busy_lock:
            busy = next((a for a in sorted(agents) if a in self._busy), None)
            if busy is not None:
                self._deferred.setdefault(busy, []).append(incident_id)
                return False
            self._busy.update(agents)
            return True

    def _wait_for(self, incident_id: str, other: Incident) -> bool:
        """Wait (registered) for OTHER's attempts to end, if it still has some to run."""
        with self._busy_lock:
            latest = self.ledger.get(other.id)
            if latest is None or latest.state not in RUNNABLE_STATES:
                return False
            self._waiting.setdefault(other.id, []).append(incident_id)
            return True

    def _release(self, agents, incident_id: str) -> None:
        """Free AGENTS and queue again whatever waited for them or for INCIDENT_ID."""
        with self._busy_lock:
            self._busy.difference_update(agents)
            woken = [i for a in sorted(agents) for i in self._deferred.pop(a, [])]
            woken += self._waiting.pop(incident_id, [])
        woken = list(dict.fromkeys(woken))
        if not woken:
            return
        with self._slots_lock:
            self._free_slots -= len(woken)
        self.enqueue(woken)

    def process(self, incident_id: str) -> None:
        incident = self.ledger.get(incident_id)
        if incident is None or incident.state not in RUNNABLE_STATES:
            self._release((), incident_id)
            return
        if incident.retry_at and incident.retry_at > time.time():
            return  # an attempt failed unexpectedly: the sweeper queues it again once its backoff has passed
        if not incident.conflict_key:
            # A conflict goes first: the agent's own incident may be its symptom, judged once it is settled.
            blocking = [c for c in self.ledger.conflicts_of(incident.agent) if c.state in RUNNABLE_STATES]
            if blocking and self._wait_for(incident.id, blocking[0]):
                return
        held = set(incident.agents)
        if not self._acquire(held, incident.id):
            return  # runs once the agents' current remediation ends: one at a time per agent, nothing dropped
        self.metrics.in_flight.inc()
        try:
            with self.tracer.start_as_current_span("incident", attributes={
                    "autonomy.incident_id": incident.id, "autonomy.agent": incident.agent}) as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                incident = self.ledger.update(incident.id, trace_id=trace_id)
                self._attempts(incident, held)
        except IncidentClosed:
            log.info("incident %s was closed while being remediated", incident.id)
        except _Deferred:
            log.info("incident %s waits for another remediation to end", incident.id)
        except Exception as exc:  # no incident is left stranded: the failure is recorded, retried or escalated
            log.exception("incident %s: an attempt failed unexpectedly", incident.id)
            self._failed_unexpectedly(incident.id, exc)
        finally:
            self._release(held, incident.id)
            self.metrics.in_flight.dec()

    def _failed_unexpectedly(self, incident_id: str, exc: Exception) -> None:
        """An exception ended the attempt: record it as a failed attempt, then retry after a backoff or escalate
        once the attempts are spent. If even that fails (the store is broken), the sweeper's watchdog retries."""
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            incident = self.ledger.get(incident_id)
            if incident is None or incident.state not in RUNNABLE_STATES:
                return
            observer = self._observer(incident)
            if incident.state != "remediating" and incident.attempts >= self.settings.max_attempts:
                self._escalate(incident, "AutoRemediationFailed", observer)  # it failed escalating: again
                return
            attempt = incident.attempts if incident.state == "remediating" else incident.attempts + 1
            after, fresh, note = self._after(incident, observer, None)
            entry = {"event": "auto_remediation", "agent": incident.agent, "classification": incident.classification,
                     "playbook": incident.playbook, "attempt": attempt, "ok": False,
                     "before": incident.metrics or {}, "after": after, "incident_id": incident.id,
                     "trace_id": incident.trace_id, "error": error,
                     "verification": {"ok": False, "reason": f"the attempt failed unexpectedly: {error}"}}
            if note:
                entry["after_note"] = note
            self._record(entry)
            incident = self.ledger.update(incident.id, state="open", attempts=attempt,
                                          reason=f"attempt {attempt} failed unexpectedly: {error}")
            if attempt >= self.settings.max_attempts:
                self._escalate(incident, "AutoRemediationFailed", observer)
                return
            backoff = replace(self.attempt_policy, used=attempt).backoff(self.rng)
            self.ledger.update(incident.id, retry_at=time.time() + backoff)  # the sweeper's watchdog queues it then
        except Exception:
            log.exception("incident %s: the failure could not be recorded; the watchdog will retry it", incident_id)

    def _observer(self, incident: Incident) -> Observer:
        if incident.source == "signal":
            return SignalObserver(self.up.all_signals, self.settings.agent_silent_seconds, self.slo)
        if self._catalog is None or self._catalog.prom is not self.up.prometheus:
            self._catalog = RuleCatalog(self.up.prometheus)
        return PrometheusObserver(self.up.prometheus, self._catalog, self.settings.agent_silent_seconds,
                                  self.settings.budget_cap_daily_usd)

    def _more_agents(self, incident: Incident, agents, held: set[str]) -> Incident:
        """A conflict found more claimants: record them and take them too, or wait for whoever holds one."""
        new = [a for a in agents if a not in held]
        if not new:
            return incident
        incident = self.ledger.update(incident.id, claimants=tuple(dict.fromkeys((*incident.claimants, *new))))
        if not self._acquire(new, incident.id):
            raise _Deferred()
        held.update(new)
        return incident

    # -- deciding what an attempt does ------------------------------------------------------------------
    @staticmethod
    def _classification_inputs(view: AgentView, incident: Incident) -> tuple[Signal | None, Facts]:
        """The agent's own signal decides when it is live; alert classes only stand in when it is not."""
        if view.signal is not None and not view.facts.silent:
            return view.signal, replace(view.facts, alert_classes=frozenset())
        # A silent agent's last signal is old news: its stale error code must not outrank `silent`.
        return None, replace(view.facts, alert_classes=incident.alert_classes)

    def _plan(self, incident: Incident, observer: Observer, held: set[str]) -> tuple[Incident, _Plan]:
        view = observer.view(incident.agent)
        if incident.conflict_key:
            return self._plan_conflict(incident, observer, view, held)
        foreign = self._foreign_conflicts(incident, view)
        decision = classify(*self._classification_inputs(without_conflicts(view, foreign), incident), self.slo)
        arbitration = None
        if decision.classification == "CONFLICT":
            members = self._members(observer)
            claimants = directive_claimants(incident.agent, view, members)
            arbitration = arbitrate({m.agent: self.playbooks.domain_of(m.agent, m.domain) for m in claimants}
                                    or {incident.agent: self.playbooks.domain_of(incident.agent)},
                                    self.settings.priority)
        return incident, _Plan(view, decision, arbitration, (incident.agent,), foreign)

    def _foreign_conflicts(self, incident: Incident, view: AgentView) -> tuple[str, ...]:
        """The conflicts with an incident of their own, which this agent's incident leaves to them.

        A conflict this agent is in whose alert has not reached the receiver yet gets a moment to arrive (its
        rule fires well before its symptoms'), then its incident goes first; without one, this incident acts.
        """
        signal = view.signal
        own = signal_conflict_labels(signal, view.facts.directive_claimants) if signal else {}
        key = (f"conflict:{own['conflict_id']}" if "conflict_id" in own
               else f"directive:{own['directive_id']}" if "directive_id" in own else None)
        deadline = time.time() + self.settings.verify_timeout_seconds
        while key and incident.source == "alertmanager" and key not in self.ledger.open_conflict_keys():
            if time.time() >= deadline or self._stop.wait(self.settings.verify_interval_seconds):
                break
        conflict = next((c for c in self.ledger.open_incidents() if c.conflict_key == key), None) if key else None
        if conflict is not None and self._wait_for(incident.id, conflict):
            raise _Deferred()
        return tuple(sorted(self.ledger.open_conflict_keys()))

    def _plan_conflict(self, incident: Incident, observer: Observer, view: AgentView,
                       held: set[str]) -> tuple[Incident, _Plan]:
        kind, ident = key_parts(incident.conflict_key)
        holders = observer.claimants(incident.conflict_key)
        foreign = tuple(sorted(self.ledger.open_conflict_keys() - {incident.conflict_key}))
        persists = len(holders) >= 2 if kind == DIRECTIVE else bool(holders)
        if not persists:
            return incident, _Plan(view, Decision(None, (), None), None, incident.agents, foreign)
        incident = self._more_agents(incident, holders, held)
        members = {m.agent: m for m in self._members(observer)}
        arbitration = arbitrate({a: self.playbooks.domain_of(a, members[a].domain if a in members else None)
                                 for a in holders}, self.settings.priority)
        what = f"directiveId {ident}" if kind == DIRECTIVE else f"conflictId {ident}"
        decision = Decision("CONFLICT", (f"{what} claimed by {', '.join(holders)}",), f"conflict-{kind}")
        return incident, _Plan(view, decision, arbitration, incident.agents, foreign)

    def _members(self, observer: Observer) -> list[Member]:
        try:
            return observer.members()
        except UpstreamError:
            return []

    def _fleet_spend(self, observer: Observer) -> float | None:
        try:
            return observer.fleet_spend()
        except UpstreamError:
            return None

    def _await_evidence(self, incident: Incident, observer: Observer) -> Refusal | None:
        """After a hold was lifted, act only on samples newer than that moment; wait for them, or refuse."""
        since = incident.gate_changed_at
        if since is None:
            return None
        deadline = time.time() + self.settings.verify_timeout_seconds
        stale: list[str] = list(incident.agents)
        while True:
            try:
                stale = observer.stale(incident.agents, since)
                # A silent agent sends nothing new: its silence, on a sample scraped since, is the evidence.
                if not stale or (all(observer.view(a).facts.silent for a in stale)
                                 and not observer.stale(stale, since, own_signal=False)):
                    return None
            except UpstreamError:
                pass
            if time.time() >= deadline or self._stop.wait(self.settings.verify_interval_seconds):
                return Refusal("stale_evidence", f"no sample from {', '.join(stale)} newer than the end of its "
                                                 f"hold ({_iso(since)}) within "
                                                 f"{self.settings.verify_timeout_seconds:g}s: nothing done")

    def _refine_onset(self, incident: Incident, observer: Observer) -> Incident:
        try:
            onset = observer.onset(incident)
        except UpstreamError:
            return incident
        if onset is not None and (incident.onset_at is None or onset < incident.onset_at):
            return self.ledger.update(incident.id, onset_at=onset)
        return incident

    # -- the attempts ---------------------------------------------------------------------------------------
    def _attempts(self, incident: Incident, held: set[str]) -> None:
        observer = self._observer(incident)
        gates = GateInputs(enabled=lambda: self._enabled, canary=self.settings.canary_agents,
                           alertmanager=self.up.alertmanager, fleet_spend=lambda: self._fleet_spend(observer),
                           budget_cap=self.settings.budget_cap_daily_usd)
        with upstream_deadline(time.time() + self.settings.verify_timeout_seconds):
            incident = self._refine_onset(incident, observer)
        policy = self.attempt_policy
        for attempt in range(incident.attempts + 1, self.settings.max_attempts + 1):
            backoff = 0.0
            if attempt > 1:
                # Spaced, not back to back: the agent settles, and is read again before anything runs.
                policy = replace(policy, used=attempt - 1)
                backoff = policy.backoff(self.rng)
                if self._stop.wait(backoff):
                    return  # stopping: it stays open and resumes at this attempt after the restart
                incident = self.ledger.get(incident.id)
                if incident is None or incident.state == "closed":
                    raise IncidentClosed(incident.id if incident else "?")
            # Reading the agent, deciding and the gates: no upstream call may hold the attempt up past this.
            with upstream_deadline(time.time() + 2 * self.settings.verify_timeout_seconds):
                ready = self._prepare(incident, observer, held, gates)
            if ready is None:
                return
            incident, plan, playbook = ready
            decision = plan.decision
            incident = self.ledger.update(incident.id, state="remediating", attempts=attempt,
                                          classification=decision.classification, playbook=playbook.name,
                                          playbooks_run=incident.playbooks_run + (playbook.name,),
                                          metrics=plan.view.metrics, context=signal_context(plan.view.signal))
            result, stopped = self._attempt(incident, attempt, plan, playbook, observer, backoff)
            if stopped:
                return
            if result.ok:
                self._recovered(incident, decision.classification, playbook.name)
                return
            incident = self.ledger.update(incident.id, state="open")  # between attempts: nothing is running
        self._escalate(incident, "AutoRemediationFailed", observer)

    def _prepare(self, incident: Incident, observer: Observer, held: set[str],
                 gates: GateInputs) -> tuple[Incident, _Plan, object] | None:
        """What the next attempt runs, from a fresh view; None when the incident ended here (refused, nothing to
        fix, dry run) and nothing is to run."""
        refusal = self._await_evidence(incident, observer)
        if refusal:
            self._refuse(incident, None, None, refusal, observer.view(incident.agent))
            return None
        incident, plan = self._plan(incident, observer, held)
        decision = plan.decision
        if decision.classification is None:
            self._nothing_to_fix(incident, plan.view)
            return None
        playbook = self.playbooks.select(decision.classification, incident.labels)
        if playbook is None:  # load_playbooks guarantees a default per class; kept for safety
            self._refuse(incident, decision.classification, None,
                         Refusal("no_playbook", "no playbook matches", escalate_reason="NoPlaybook"), plan.view)
            return None
        if plan.arbitration is not None and plan.arbitration.problem:
            self._refuse(incident, decision.classification, playbook.name,
                         Refusal("priority_unranked", plan.arbitration.problem, escalate_reason="PriorityUnranked"),
                         plan.view, extra={"arbitration": plan.arbitration.as_dict()})
            return None
        refusal = check_gates(incident, decision.classification, playbook, gates)
        if refusal:
            self._refuse(incident, decision.classification, playbook.name, refusal, plan.view)
            return None
        if self.settings.dry_run:
            self._dry_run(incident, decision.classification, playbook, plan, observer)
            return None
        return incident, plan, playbook

    def _variables(self, incident: Incident, plan: _Plan, observer: Observer) -> dict:
        kind, ident = key_parts(incident.conflict_key) if incident.conflict_key else (None, None)
        directive = ident if kind == DIRECTIVE else None
        return template_variables(incident.agent, plan.view, self._members(observer), self.playbooks,
                                  self.settings.priority, incident.labels, incident.id, plan.arbitration, directive)

    def _attempt(self, incident: Incident, attempt: int, plan: _Plan, playbook, observer: Observer,
                 backoff: float) -> tuple[VerifyResult | None, bool]:
        started = time.time()
        with upstream_deadline(started + self.settings.verify_timeout_seconds):
            variables = self._variables(incident, plan, observer)
        steps = []
        decision = plan.decision
        with self.tracer.start_as_current_span("attempt", attributes={
                "autonomy.attempt": attempt, "autonomy.classification": decision.classification,
                "autonomy.playbook": playbook.name}):
            for step in playbook.steps:
                if not self._enabled:
                    self._refuse(incident, decision.classification, playbook.name,
                                 Refusal("kill_switch", "remediation disabled during the playbook; stopped before "
                                                        f"step {step.action}"), plan.view, attempt=attempt,
                                 steps=steps, observer=observer, action_end=time.time())
                    return None, True
                with self.tracer.start_as_current_span("step", attributes={"autonomy.action": step.action}) as span:
                    result = self.runner.run(step, incident.agent, variables, self._stop)
                    span.set_attribute("autonomy.ok", result.ok)
                    span.set_attribute("autonomy.target", result.target)
                steps.append(result)
                if not result.ok:
                    break
            action_end = time.time()
            with self.tracer.start_as_current_span("verify") as span:
                if steps and not all(s.ok for s in steps):
                    failed = next(s for s in steps if not s.ok)
                    after, fresh, note = self._after(incident, observer, action_end)
                    verdict = VerifyResult(False, f"step {failed.action} failed: {failed.error}", {}, after, 0,
                                           (), fresh, note)
                else:
                    current = self.ledger.get(incident.id) or incident  # the alerts it has by now
                    targets = {s.target for s in steps if s.ok} | set(plan.view.facts.failing_dependencies)
                    verdict = verify_recovery(observer, Verification(
                        current, playbook.criteria, action_end, plan.agents,
                        tuple(sorted(set(plan.agents) | targets)), plan.foreign),
                        self.settings.verify_timeout_seconds, self.settings.verify_interval_seconds,
                        self.settings.budget_cap_daily_usd, self._stop)
                span.set_attribute("autonomy.ok", verdict.ok)
                span.set_attribute("autonomy.reason", verdict.reason)
        ok = verdict.ok
        self.metrics.attempts.labels(incident.agent, decision.classification, playbook.name,
                                     "ok" if ok else "failed").inc()
        entry = {
            "event": "auto_remediation", "agent": incident.agent, "classification": decision.classification,
            "playbook": playbook.name, "attempt": attempt, "ok": ok, "before": plan.view.metrics,
            "after": dict(verdict.after), "after_fresh": verdict.after_fresh,
            "incident_id": incident.id, "trace_id": incident.trace_id,
            "reasons": list(decision.reasons), "steps": [s.as_dict() for s in steps],
            "verification": {"ok": ok, "reason": verdict.reason, "checks": dict(verdict.checks),
                             "still_true": list(verdict.still_true), "polls": verdict.polls},
            "backoff_s": round(backoff, 3), "duration_s": round(time.time() - started, 3),
        }
        if verdict.after_note and not verdict.after_fresh:
            entry["after_note"] = verdict.after_note
        if incident.claimants:
            entry["claimants"] = list(incident.claimants)
        if plan.arbitration is not None:
            entry["arbitration"] = plan.arbitration.as_dict()
        self._record(entry)
        return verdict, False

    def _after(self, incident: Incident, observer: Observer,
               since: float | None) -> tuple[dict, bool | None, str | None]:
        """The agent's latest metrics, whether they are newer than SINCE (None: no SINCE to compare with), and
        what to say when they are not."""
        with upstream_deadline(time.time() + self.settings.verify_timeout_seconds):
            return self._read_after(incident, observer, since)

    def _read_after(self, incident: Incident, observer: Observer,
                    since: float | None) -> tuple[dict, bool | None, str | None]:
        view = observer.view(incident.agent)
        if view.problem:
            return {}, False, view.problem
        if since is None or incident.agent == FLEET:
            return view.metrics, None, None
        try:
            fresh = not observer.stale([incident.agent], since)
        except UpstreamError as exc:
            return view.metrics, False, f"freshness unknown: {exc}"
        return view.metrics, fresh, None if fresh else "the latest samples, from before the action ended"

    def _record(self, entry: dict) -> dict:
        """Write a decision's lineage line; coverage = lines written / decisions made, so a lost line shows."""
        self.metrics.decisions.labels(entry["event"]).inc()
        written = self.lineage.append(entry)
        self.metrics.lineage_lines.labels(entry["event"]).inc()
        return written

    # -- endings ---------------------------------------------------------------------------------------------
    def _class_of(self, incident: Incident) -> str:
        if incident.classification:
            return incident.classification
        return next((c for c in CLASSES if c in incident.alert_classes), "none")

    def _recovered(self, incident: Incident, classification: str, playbook: str) -> None:
        now = time.time()
        incident = self.ledger.get(incident.id) or incident
        changes = dict(outcome=AUTO_RESOLVED, recovered_at=now, reason=f"Resolved by CoS: {playbook}",
                       state_reason=None)
        if incident.source == "signal" or incident.resolved_at:
            done = self.ledger.update(incident.id, state="closed", closed_at=now, **changes)
        else:
            done = self.ledger.update(incident.id, state="recovered", **changes)
        onset = done.onset_at if done.onset_at is not None else done.opened_at
        self.metrics.outcomes.labels(classification, AUTO_RESOLVED).inc()
        self.metrics.recovery.labels(classification).observe(max(0.0, now - onset))
        burn = (done.metrics or {}).get("costBurnRatePerHour") or 0.0
        self.metrics.incident_cost.labels(classification).inc(burn * max(0.0, now - onset) / 3600)
        if done.state == "closed":
            self.on_closed([done])

    def _nothing_to_fix(self, incident: Incident, view: AgentView) -> None:
        self._record({"event": "no_action", "agent": incident.agent, "attempt": incident.attempts,
                      "ok": True, "before": view.metrics, "after": view.metrics,
                      "incident_id": incident.id, "trace_id": incident.trace_id,
                      "reason": "the agent's latest samples show nothing to fix: it healed without the layer"})
        self.ledger.update(incident.id, state="recovered", recovered_at=time.time(),
                           outcome=closing_outcome(replace(incident, outcome=None)), state_reason=None,
                           reason="nothing to fix on the latest samples")

    def _dry_run(self, incident: Incident, classification: str, playbook, plan: _Plan, observer: Observer) -> None:
        variables = self._variables(incident, plan, observer)
        planned = []
        for step in playbook.steps:
            try:
                target, url, body = self.runner.prepare(step, incident.agent, variables)
                planned.append({"action": step.action, "target": target, "url": url, "body": body})
            except Exception as exc:  # a dry run reports what would fail instead of failing
                planned.append({"action": step.action, "error": f"{type(exc).__name__}: {exc}"})
        self._refuse(incident, classification, playbook.name,
                     Refusal("dry_run", "AUTOREM_DRY_RUN: recorded what would run, ran nothing"), plan.view,
                     extra={"would_run": planned})

    def _refuse(self, incident: Incident, classification: str | None, playbook: str | None, refusal: Refusal,
                view: AgentView | None = None, attempt: int | None = None, steps=(), extra: dict | None = None,
                observer: Observer | None = None, action_end: float | None = None) -> None:
        self.metrics.refusals.labels(refusal.gate).inc()
        before = view.metrics if view else {}
        after, fresh = before, None  # nothing ran: what it saw is what it leaves
        if steps and observer is not None:  # something ran before the refusal: what it left
            after, fresh, _ = self._after(incident, observer, action_end)
        entry = {"event": "remediation_refused", "agent": incident.agent, "classification": classification,
                 "playbook": playbook, "attempt": attempt if attempt is not None else incident.attempts,
                 "ok": False, "before": before, "after": after,
                 "incident_id": incident.id, "trace_id": incident.trace_id, "gate": refusal.gate,
                 "reason": refusal.reason, "steps": [s.as_dict() for s in steps], **(extra or {})}
        if fresh is not None:
            entry["after_fresh"] = fresh
        self._record(entry)
        if refusal.gate == "agent_locked":
            return
        if refusal.escalate_reason:
            incident = self.ledger.update(incident.id, classification=classification, playbook=playbook)
            self._escalate(incident, refusal.escalate_reason, observer or self._observer(incident))
            return
        if refusal.close:
            done = self.ledger.update(incident.id, state="closed", closed_at=time.time(),
                                      outcome=closing_outcome(incident), reason=refusal.reason)
            self.on_closed([done])
            return
        self.ledger.update(incident.id, state="skipped", classification=classification, playbook=playbook,
                           outcome=SKIPPED, reason=f"{refusal.gate}: {refusal.reason}",
                           state_reason=GATE_REASONS.get(refusal.gate, refusal.gate))

    def _escalate(self, incident: Incident, reason: str, observer: Observer) -> None:
        ts = utc_now_iso()
        lineage_ref = f"{LINEAGE_FILE}#{ts}"
        payload = escalation_payload(incident, reason, self.playbooks, lineage_ref)
        after, _, note = self._after(incident, observer, None)  # the agent as it is when handed over
        entry = {"ts": ts, "event": "escalation", "agent": incident.agent,
                 "classification": incident.classification, "playbook": incident.playbook,
                 "attempt": incident.attempts, "ok": False, "before": incident.metrics or {},
                 "after": after, "incident_id": incident.id, "trace_id": incident.trace_id,
                 "reason": reason, "payload": payload}
        if note:
            entry["after_note"] = note
        self._record(entry)
        incident = self.ledger.update(incident.id, state="escalated", outcome=ESCALATED, reason=reason,
                                      state_reason=ESCALATION_REASONS.get(reason, reason))
        problems = []
        if self.settings.escalation_url:
            problem = post_payload(self.settings.escalation_url, payload, self.settings.escalation_token)
            if problem:
                problems.append(problem)
        else:
            problems.append("AUTOREM_ESCALATION_URL is not set: payload recorded in the lineage only")
        if self.up.alertmanager is not None:
            problem = post_escalated_alert(self.up.alertmanager, escalated_alert(
                incident, reason, self.lineage_url(incident.agent), self.playbooks.escalate_to))
            if problem:
                problems.append(problem)
        if problems:
            self.lineage.append({"event": "escalation_delivery", "agent": incident.agent,
                                 "classification": incident.classification, "playbook": incident.playbook,
                                 "attempt": incident.attempts, "ok": False, "before": incident.metrics or {},
                                 "after": after, "incident_id": incident.id, "trace_id": incident.trace_id,
                                 "reason": "; ".join(problems)})
            self.ledger.update(incident.id, reason=f"{reason}; delivery: {'; '.join(problems)}")
        self.metrics.escalations.labels(reason).inc()
        self.metrics.outcomes.labels(self._class_of(incident), ESCALATED).inc()

    def on_closed(self, incidents: list[Incident] | tuple[Incident, ...]) -> None:
        """Account for closed incidents (each counted once, by how it ended) and resolve their escalation alert."""
        for incident in incidents:
            self._release((), incident.id)
            if incident.outcome and incident.outcome not in COUNTED_BEFORE_CLOSE:
                self.metrics.outcomes.labels(self._class_of(incident), incident.outcome).inc()
            if incident.outcome == ESCALATED and self.up.alertmanager is not None:
                post_escalated_alert(self.up.alertmanager, escalated_alert(
                    incident, incident.reason or "", "", self.playbooks.escalate_to, resolved=True))

    # -- the sweeper -------------------------------------------------------------------------------------------
    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")

    def watchdog(self) -> list[str]:
        """Queue again the runnable incidents no worker, queue entry or wait holds (their worker vanished, or an
        unexpected failure's backoff has passed); the ids queued."""
        now = time.time()
        with self._busy_lock:
            held = set(self._in_hand) | {i for ids in (*self._deferred.values(), *self._waiting.values()) for i in ids}
        # A second's grace: a notification just committed is queued by its webhook a moment later.
        orphans = [i for i in self.ledger.runnable() if i.id not in held and now - i.updated_at > 1.0
                   and not (i.retry_at and i.retry_at > now)]
        queued = []
        try:
            for incident in orphans:
                if not self.reserve(1):
                    break  # the queue is full: the next sweep takes them
                try:
                    if incident.state == "remediating":  # its attempt never finished: run it again
                        self.ledger.update(incident.id, state="open", attempts=max(0, incident.attempts - 1),
                                           playbooks_run=incident.playbooks_run[:-1],
                                           reason="resumed: its worker vanished")
                    if incident.retry_at:
                        self.ledger.update(incident.id, retry_at=None)
                except Exception:
                    self.release_slots(1)
                    raise
                queued.append(incident.id)
        finally:
            self.enqueue(queued)
        return queued

    def sweep(self) -> None:
        """Queue stranded incidents again, and close incidents whose alerts are gone (muted after escalation, or
        a lost resolved notification)."""
        try:
            self.watchdog()
        except Exception:
            log.exception("watchdog failed")
        waiting = [i for i in self.ledger.open_incidents()
                   if i.source == "alertmanager" and i.state in ("escalated", "recovered", "skipped")]
        if not waiting:
            return
        try:  # one query for the whole fleet, not one per incident: a storm leaves thousands waiting
            rows = self.up.prometheus.query(
                f'ALERTS{{alertstate="firing", autonomy_class=~"{"|".join(CLASSES)}"}}')
        except UpstreamError:
            return
        firing = {row.get("metric", {}).get("agent") for row in rows}
        for incident in waiting:
            if not firing & set(incident.agents):
                try:
                    done = self.ledger.update(incident.id, state="closed", closed_at=time.time(),
                                              outcome=closing_outcome(incident),
                                              reason=(incident.reason or "") + "; alerts resolved")
                except IncidentClosed:  # a resolved notification closed it since the list was read
                    continue
                self.on_closed([done])
            elif incident.state == "escalated" and self.up.alertmanager is not None:
                post_escalated_alert(self.up.alertmanager, escalated_alert(
                    incident, incident.reason or "", self.lineage_url(incident.agent), self.playbooks.escalate_to))

