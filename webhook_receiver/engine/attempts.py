"""The attempt loop for one claimed incident: plan on a fresh view, pass the gates, run the playbook, verify on
fresh samples, space the retries, escalate when the attempts are spent."""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import replace
from typing import Callable

from opentelemetry import trace

from autonomy.settings import Settings
from autonomy.vocabulary import EscalationReason, Gate, IncidentState, LineageEvent

from ..actions import ActionRunner
from ..fleet_reader import FleetReader
from ..fleet_view import signal_context
from ..gates import GateInputs, Refusal, check_gates
from ..incident import Incident
from ..playbooks import Playbook, PlaybookSet
from ..receiver_metrics import ReceiverMetrics
from ..retry_policy import RetryPolicy
from ..store import IncidentClosed, IncidentStore, LeaseLost
from ..upstreams import UpstreamError
from ..upstreams import deadline as upstream_deadline
from ..verification import Verification, VerifyResult, verify_recovery
from .fleet_readers import FleetReaders, Upstreams
from .outcome_recorder import OutcomeRecorder, lineage_entry
from .planning import Plan, Planner
from .worker_pool import Deferred, Work

log = logging.getLogger("autonomy.engine")


def attempt_policy(settings: Settings) -> RetryPolicy:
    """The spacing of attempts: AUTOREM_ATTEMPT_BACKOFF_SECONDS before the second, doubling, capped at 4x."""
    base = settings.attempt_backoff_seconds
    return RetryPolicy(attempts=settings.max_attempts, backoff_seconds=base, max_backoff_seconds=base * 4,
                       jitter=0.1 if base else 0.0)


class AttemptLoop:
    """What a worker does with the incident it claimed; every ending goes through the recorder."""

    def __init__(self, settings: Settings, store: IncidentStore, recorder: OutcomeRecorder, planner: Planner,
                 readers: FleetReaders, playbooks: PlaybookSet, runner: ActionRunner, tracer: trace.Tracer,
                 metrics: ReceiverMetrics, upstreams: Callable[[], Upstreams], enabled: Callable[[], bool],
                 stop: threading.Event):
        self.settings, self.store, self.recorder, self.planner = settings, store, recorder, planner
        self.readers, self.playbooks, self.runner, self.tracer = readers, playbooks, runner, tracer
        self.metrics, self.upstreams, self.enabled, self.stop = metrics, upstreams, enabled, stop
        self.policy = attempt_policy(settings)
        self.rng = random.Random()

    def run(self, work: Work) -> None:
        incident = self.store.get(work.claim.incident_id)
        if incident is None or incident.state not in (IncidentState.OPEN, IncidentState.REMEDIATING):
            return
        try:
            if incident.state == IncidentState.REMEDIATING:
                # Its attempt never finished (a crash, a stop, a lost lease) nor wrote its line: run it again.
                incident = self.store.update(incident.id, work.claim, state=IncidentState.OPEN,
                                             attempts=max(0, incident.attempts - 1),
                                             playbooks_run=incident.playbooks_run[:-1],
                                             reason="resumed: its previous attempt never finished")
            with self.tracer.start_as_current_span("incident", attributes={
                    "autonomy.incident_id": incident.id, "autonomy.agent": incident.agent}) as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                incident = self.store.update(incident.id, work.claim, trace_id=trace_id, retry_at=None)
                self._attempts(work, incident)
        except IncidentClosed:
            log.info("incident %s was closed while being remediated", incident.id)
        except Deferred as deferred:
            log.info("incident %s %s", incident.id, deferred)
            work.retry_at = deferred.retry_at
        except LeaseLost:
            log.warning("incident %s: another worker holds it now; this one stops", incident.id)
            work.lost = True
        except Exception as exc:  # no incident is left stranded: the failure is recorded, retried or escalated
            log.exception("incident %s: an attempt failed unexpectedly", incident.id)
            self._failed_unexpectedly(work, exc)

    def _failed_unexpectedly(self, work: Work, exc: Exception) -> None:
        """An exception ended the attempt: record it as a failed attempt, then retry after a backoff or escalate
        once the attempts are spent. If even that fails, it is taken up again after a backoff (or, if the claim
        cannot even be given back, once its lease expires)."""
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            incident = self.store.get(work.claim.incident_id)
            if incident is None or incident.state not in (IncidentState.OPEN, IncidentState.REMEDIATING):
                return
            reader = self.readers.for_incident(incident)
            failed = EscalationReason.AUTO_REMEDIATION_FAILED
            if incident.state != IncidentState.REMEDIATING and incident.attempts >= self.settings.max_attempts:
                self.recorder.escalate(incident, failed, reader, work.claim)  # it failed escalating: again
                return
            attempt = incident.attempts if incident.state == IncidentState.REMEDIATING else incident.attempts + 1
            self.recorder.failed_attempt(incident, attempt, error, reader)
            incident = self.store.update(incident.id, work.claim, state=IncidentState.OPEN, attempts=attempt,
                                         reason=f"attempt {attempt} failed unexpectedly: {error}")
            if attempt >= self.settings.max_attempts:
                self.recorder.escalate(incident, failed, reader, work.claim)
                return
            work.retry_at = time.time() + replace(self.policy, used=attempt).backoff(self.rng)
        except Exception:
            # Not taken up again at once: whatever broke (a full disk) must not run the playbook in a loop.
            work.retry_at = time.time() + replace(self.policy, used=max(1, work.claim.incident.attempts)).backoff(
                self.rng)
            log.exception("incident %s: the failure could not be recorded; it is taken up again after a backoff",
                          work.claim.incident_id)

    def _attempts(self, work: Work, incident: Incident) -> None:
        reader = self.readers.for_incident(incident)
        gates = GateInputs(enabled=self.enabled, canary=self.settings.canary_agents,
                           alertmanager=self.upstreams().alertmanager, fleet_spend=lambda: _spend(reader),
                           budget_cap=self.settings.budget_cap_daily_usd,
                           through_alertmanager=reader.through_alertmanager)
        with upstream_deadline(time.time() + self.settings.verify_timeout_seconds):
            incident = self.planner.refine_onset(work, incident, reader)
        policy = self.policy
        for attempt in range(incident.attempts + 1, self.settings.max_attempts + 1):
            backoff = 0.0
            if attempt > 1:
                # Spaced, not back to back: the agent settles, and is read again before anything runs.
                policy = replace(policy, used=attempt - 1)
                backoff = policy.backoff(self.rng)
                if self.stop.wait(backoff):
                    return  # stopping: it stays open and resumes at this attempt after the restart
                incident = self.store.get(incident.id)
                if incident is None or incident.state == IncidentState.CLOSED:
                    raise IncidentClosed(incident.id if incident else "?")
            # Reading the agent, deciding and the gates: no upstream call may hold the attempt up past this.
            with upstream_deadline(time.time() + 2 * self.settings.verify_timeout_seconds):
                ready = self._prepare(work, incident, reader, gates)
            if ready is None:
                return
            incident, plan, playbook = ready
            decision = plan.decision
            incident = self.store.update(incident.id, work.claim, state=IncidentState.REMEDIATING, attempts=attempt,
                                         classification=decision.classification, playbook=playbook.name,
                                         playbooks_run=incident.playbooks_run + (playbook.name,),
                                         metrics=plan.view.metrics, context=signal_context(plan.view.signal))
            result, stopped = self._attempt(work, incident, attempt, plan, playbook, reader, backoff)
            if stopped:
                return
            if result.ok:
                self.recorder.recovered(incident, decision.classification, playbook.name, reader, work.claim)
                return
            incident = self.store.update(incident.id, work.claim, state=IncidentState.OPEN)  # nothing is running
        self.recorder.escalate(incident, EscalationReason.AUTO_REMEDIATION_FAILED, reader, work.claim)

    def _prepare(self, work: Work, incident: Incident, reader: FleetReader,
                 gates: GateInputs) -> tuple[Incident, Plan, Playbook] | None:
        """What the next attempt runs, from a fresh view; None when the incident ended here (refused, nothing to
        fix, dry run) and nothing is to run."""
        refused = self.recorder.refused
        refusal = self.planner.await_evidence(incident, reader)
        if refusal:
            refused(incident, None, None, refusal, reader, work.claim, reader.view(incident.agent))
            return None
        incident, plan = self.planner.plan(work, incident, reader)
        decision = plan.decision
        if decision.classification is None:
            self.recorder.nothing_to_fix(incident, plan.view, work.claim)
            return None
        playbook = self.playbooks.select(decision.classification, incident.labels)
        if playbook is None:  # load_playbooks guarantees a default per class; kept for safety
            refused(incident, decision.classification, None, Refusal(
                Gate.NO_PLAYBOOK, "no playbook matches", escalate_reason=EscalationReason.NO_PLAYBOOK),
                reader, work.claim, plan.view)
            return None
        if plan.arbitration is not None and plan.arbitration.problem:
            refused(incident, decision.classification, playbook.name, Refusal(
                Gate.PRIORITY_UNRANKED, plan.arbitration.problem, escalate_reason=EscalationReason.PRIORITY_UNRANKED),
                reader, work.claim, plan.view, extra={"arbitration": plan.arbitration.as_dict()})
            return None
        refusal = check_gates(incident, decision.classification, playbook, gates)
        if refusal:
            refused(incident, decision.classification, playbook.name, refusal, reader, work.claim, plan.view)
            return None
        if self.settings.dry_run:
            self._dry_run(work, incident, playbook, plan, reader)
            return None
        return incident, plan, playbook

    def _dry_run(self, work: Work, incident: Incident, playbook: Playbook, plan: Plan, reader: FleetReader) -> None:
        variables = self.planner.variables(incident, plan, reader, playbook)
        planned = []
        for step in playbook.steps:
            try:
                target, url, body = self.runner.prepare(step, incident.agent, variables)
                planned.append({"action": step.action, "target": target, "url": url, "body": body})
            except Exception as exc:  # a dry run reports what would fail instead of failing
                planned.append({"action": step.action, "error": f"{type(exc).__name__}: {exc}"})
        self.recorder.refused(incident, plan.decision.classification, playbook.name,
                              Refusal(Gate.DRY_RUN, "AUTOREM_DRY_RUN: recorded what would run, ran nothing"), reader,
                              work.claim, plan.view, extra={"would_run": planned})

    def _attempt(self, work: Work, incident: Incident, attempt: int, plan: Plan, playbook: Playbook,
                 reader: FleetReader, backoff: float) -> tuple[VerifyResult | None, bool]:
        started = time.time()
        with upstream_deadline(started + self.settings.verify_timeout_seconds):
            variables = self.planner.variables(incident, plan, reader, playbook)
        steps = []
        decision = plan.decision
        with self.tracer.start_as_current_span("attempt", attributes={
                "autonomy.attempt": attempt, "autonomy.classification": decision.classification,
                "autonomy.playbook": playbook.name}):
            for step in playbook.steps:
                if work.lost:
                    raise LeaseLost(incident.id)
                if not self.enabled():
                    self.recorder.refused(incident, decision.classification, playbook.name, Refusal(
                        Gate.KILL_SWITCH, f"remediation disabled during the playbook; stopped before step {step.action}"),
                        reader, work.claim, plan.view, attempt=attempt, steps=steps, action_end=time.time())
                    return None, True
                with self.tracer.start_as_current_span("step", attributes={"autonomy.action": step.action}) as span:
                    result = self.runner.run(step, incident.agent, variables, self.stop)
                    span.set_attribute("autonomy.ok", result.ok)
                    span.set_attribute("autonomy.target", result.target)
                steps.append(result)
                if not result.ok:
                    break
            action_end = time.time()
            with self.tracer.start_as_current_span("verify") as span:
                verdict = self._verify(incident, plan, playbook, reader, steps, action_end)
                span.set_attribute("autonomy.ok", verdict.ok)
                span.set_attribute("autonomy.reason", verdict.reason)
        self.metrics.attempts.labels(incident.agent, decision.classification, playbook.name,
                                     "ok" if verdict.ok else "failed").inc()
        entry = lineage_entry(
            LineageEvent.AUTO_REMEDIATION, incident, ok=verdict.ok, before=plan.view.metrics,
            after=dict(verdict.after), attempt=attempt, classification=decision.classification,
            playbook=playbook.name, after_fresh=verdict.after_fresh, reasons=list(decision.reasons),
            steps=[s.as_dict() for s in steps],
            verification={"ok": verdict.ok, "reason": verdict.reason, "checks": dict(verdict.checks),
                          "still_true": list(verdict.still_true), "polls": verdict.polls},
            backoff_s=round(backoff, 3), duration_s=round(time.time() - started, 3))
        if verdict.after_note and not verdict.after_fresh:
            entry["after_note"] = verdict.after_note
        if incident.claimants:
            entry["claimants"] = list(incident.claimants)
        if plan.arbitration is not None:
            entry["arbitration"] = plan.arbitration.as_dict()
        self.recorder.record(entry)
        return verdict, False

    def _verify(self, incident: Incident, plan: Plan, playbook: Playbook, reader: FleetReader, steps,
                action_end: float) -> VerifyResult:
        if steps and not all(s.ok for s in steps):
            failed = next(s for s in steps if not s.ok)
            after, fresh, note = self.recorder.after(incident, reader, action_end)
            return VerifyResult(False, f"step {failed.action} failed: {failed.error}", {}, after, 0, (), fresh, note)
        current = self.store.get(incident.id) or incident  # the alerts it has by now
        targets = {s.target for s in steps if s.ok} | set(plan.view.facts.failing_dependencies)
        return verify_recovery(reader, Verification(current, playbook.criteria, action_end, plan.agents,
                                                    tuple(sorted(set(plan.agents) | targets)), plan.foreign),
                               self.settings.verify_timeout_seconds, self.settings.verify_interval_seconds,
                               self.settings.budget_cap_daily_usd, self.stop)


def _spend(reader: FleetReader) -> float | None:
    try:
        return reader.fleet_spend()
    except UpstreamError:
        return None
