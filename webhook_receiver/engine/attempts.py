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
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from autonomy.primitives import idempotency_key
from autonomy.settings import Settings
from autonomy.vocabulary import EscalationReason, Gate, IncidentState

from ..actions import NOT_IMPLEMENTED, ActionRunner
from ..fleet_reader import FleetReader
from ..fleet_view import signal_context
from ..gates import GateInputs, Refusal, check_gates
from ..incident import Incident
from ..playbooks import Playbook, PlaybookSet
from ..receiver_metrics import ReceiverMetrics
from ..retry_policy import attempt_policy
from ..rollout import Rollout
from ..store import IncidentClosed, IncidentStore, LeaseLost
from ..upstream_deadline import deadline as upstream_deadline
from ..upstreams import UpstreamError
from ..verification import VerifyResult, result_as_dict, result_from_dict
from .fleet_readers import FleetReaders, Upstreams
from .outcome_recorder import OutcomeRecorder, attempt_entry
from .planning import Plan, Planner
from .worker_pool import Deferred, Work

log = logging.getLogger("autonomy.engine")


class AttemptLoop:
    """What a worker does with the incident it claimed; every ending goes through the recorder. An attempt is
    run in two turns: its steps (then its verification waits in the verifier, the worker free), and its verdict
    (recorded, then recovered, escalated, or the next attempt due after its spacing)."""

    def __init__(self, settings: Settings, store: IncidentStore, recorder: OutcomeRecorder, planner: Planner,
                 readers: FleetReaders, playbooks: PlaybookSet, runner: ActionRunner, tracer: trace.Tracer,
                 metrics: ReceiverMetrics, upstreams: Callable[[], Upstreams], enabled: Callable[[], bool],
                 rollout: Callable[[], Rollout], stop: threading.Event, hand_over: Callable[[Work, Incident], None]):
        self.settings, self.store, self.recorder, self.planner = settings, store, recorder, planner
        self.readers, self.playbooks, self.runner, self.tracer = readers, playbooks, runner, tracer
        self.metrics, self.upstreams, self.enabled, self.stop = metrics, upstreams, enabled, stop
        self.hand_over, self.rollout = hand_over, rollout
        self.policy = attempt_policy(settings)
        self.rng = random.Random()

    def run(self, work: Work) -> None:
        incident = self.store.get(work.claim.incident_id)
        if incident is None or incident.state not in (IncidentState.OPEN, IncidentState.REMEDIATING):
            return
        try:
            if incident.verifying is not None:
                if "verdict" in incident.verifying:
                    self._conclude(work, incident)
                else:  # its verification was cut off (a restart, a lost lease): it waits again
                    self.hand_over(work, incident)
                return
            if incident.state == IncidentState.REMEDIATING:
                # Its steps were cut off (a crash, a stop, a lost lease) before its verification: run it again.
                incident = self.store.update(incident.id, work.claim, state=IncidentState.OPEN,
                                             attempts=max(0, incident.attempts - 1),
                                             playbooks_run=incident.playbooks_run[:-1],
                                             reason="resumed: its previous attempt never finished")
            if incident.trace_id is None or incident.span_id is None:
                with self.tracer.start_as_current_span("incident", attributes={
                        "autonomy.incident_id": incident.id, "autonomy.agent": incident.agent}) as span:
                    context = span.get_span_context()
                    incident = self.store.update(incident.id, work.claim, trace_id=format(context.trace_id, "032x"),
                                                 span_id=format(context.span_id, "016x"), retry_at=None)
                    self._next_attempt(work, incident)
            else:
                if incident.retry_at is not None:
                    incident = self.store.update(incident.id, work.claim, retry_at=None)
                self._next_attempt(work, incident)
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
        work.handed_over = work.continues = False
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
                                         verifying=None, reason=f"attempt {attempt} failed unexpectedly: {error}")
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

    def _gates(self, reader: FleetReader) -> GateInputs:
        up = self.upstreams()
        return GateInputs(enabled=self.enabled, rollout=self.rollout, alertmanager=up.alertmanager, grafana=up.grafana,
                          fleet_spend=lambda: _spend(reader), budget_cap=self.settings.budget_cap_daily_usd,
                          through_alertmanager=reader.through_alertmanager)

    def _next_attempt(self, work: Work, incident: Incident) -> None:
        """Plan and gate the next attempt, run its steps, then hand its verification to the verifier."""
        reader = self.readers.for_incident(incident)
        if incident.attempts == 0:
            with upstream_deadline(time.time() + self.settings.verify_timeout_seconds):
                incident = self.planner.refine_onset(work, incident, reader)
        attempt = incident.attempts + 1
        if attempt > self.settings.max_attempts:  # spent already (a setting lowered across a restart)
            self.recorder.escalate(incident, EscalationReason.AUTO_REMEDIATION_FAILED, reader, work.claim)
            return
        backoff = incident.next_backoff or 0.0
        # Reading the agent, deciding and the gates: no upstream call may hold the attempt up past this.
        with upstream_deadline(time.time() + (self.settings.gate_timeout_seconds
                                            or 2 * self.settings.verify_timeout_seconds)):
            ready = self._prepare(work, incident, reader, self._gates(reader))
        if ready is None:
            return
        incident, plan, playbook = ready
        decision = plan.decision
        incident = self.store.update(incident.id, work.claim, state=IncidentState.REMEDIATING, attempts=attempt,
                                     classification=decision.classification, playbook=playbook.name,
                                     playbooks_run=incident.playbooks_run + (playbook.name,),
                                     metrics=plan.view.metrics, context=signal_context(plan.view.signal),
                                     next_backoff=None)
        started = time.time()
        with upstream_deadline(started + self.settings.verify_timeout_seconds):
            variables = self.planner.variables(incident, plan, reader, playbook)
        steps = []
        with self.tracer.start_as_current_span("attempt", context=span_context(incident), attributes={
                "autonomy.attempt": attempt, "autonomy.classification": decision.classification,
                "autonomy.playbook": playbook.name}) as span:
            for index, step in enumerate(playbook.steps):
                if work.lost:
                    raise LeaseLost(incident.id)
                if not self.enabled():
                    self.recorder.refused(incident, decision.classification, playbook.name, Refusal(
                        Gate.KILL_SWITCH, f"remediation disabled during the playbook; stopped before step {step.action}"),
                        reader, work.claim, plan.view, attempt=attempt, steps=steps, action_end=time.time())
                    return
                self.recorder.events.step(incident, playbook, attempt, index)
                with self.tracer.start_as_current_span("step", attributes={"autonomy.action": step.action}) as step_span:
                    result = self.runner.run(step, incident.agent, variables, self.stop,
                                             idempotency_key(incident.id, attempt, index))
                    step_span.set_attribute("autonomy.ok", result.ok)
                    step_span.set_attribute("autonomy.target", result.target)
                steps.append(result)
                if not result.ok:
                    break
            attempt_span = format(span.get_span_context().span_id, "016x")
        action_end = time.time()
        targets = {s.target for s in steps if s.ok} | set(plan.view.facts.failing_dependencies)
        pending = {"attempt": attempt, "playbook": playbook.name, "classification": decision.classification,
                   "reasons": list(decision.reasons), "before": plan.view.metrics, "steps": [s.as_dict() for s in steps],
                   "started": started, "action_end": action_end, "backoff": backoff,
                   "deadline": action_end + self.settings.verify_timeout_seconds, "agents": list(plan.agents),
                   "fresh_agents": sorted(set(plan.agents) | targets), "foreign": list(plan.foreign),
                   "arbitration": plan.arbitration.as_dict() if plan.arbitration is not None else None,
                   "span_id": attempt_span}
        failed = next((s for s in steps if not s.ok), None)
        if failed is not None:  # nothing to wait for: the attempt failed at this step
            after, fresh, note = self.recorder.after(incident, reader, action_end)
            verdict = VerifyResult(False, f"step {failed.action} failed: {failed.error}", {}, after, 0, (), fresh, note)
            pending["verdict"] = {**result_as_dict(verdict), "at": time.time()}
            self._conclude(work, self.store.update(incident.id, work.claim, verifying=pending))
            return
        self.hand_over(work, self.store.update(incident.id, work.claim, verifying=pending))

    def _conclude(self, work: Work, incident: Incident) -> None:
        """The attempt's verdict is in: its lineage line, then recovered, escalated or the next attempt due."""
        pending = incident.verifying
        verdict, verdict_at = result_from_dict(pending["verdict"]), float(pending["verdict"]["at"])
        attempt, playbook, classification = pending["attempt"], pending["playbook"], pending["classification"]
        reader = self.readers.for_incident(incident)
        try:
            self.recorder.record(attempt_entry(incident, pending, verdict, verdict_at))
        except OSError:
            # The verdict is stored; only its line is missing (a full disk). Nothing runs again until it is written.
            log.exception("incident %s: the line of attempt %s could not be written; written again later",
                          incident.id, attempt)
            work.retry_at = time.time() + replace(self.policy, used=attempt).backoff(self.rng)
            return
        span = self.tracer.start_span("verify", context=span_context(incident, pending.get("span_id")),
                                      start_time=int(pending["action_end"] * 1e9))
        span.set_attribute("autonomy.ok", verdict.ok)
        span.set_attribute("autonomy.reason", verdict.reason)
        span.end(end_time=int(max(verdict_at, pending["action_end"]) * 1e9))
        self.metrics.attempts.labels(incident.agent, classification, playbook, "ok" if verdict.ok else "failed").inc()
        if verdict.ok:
            self.recorder.recovered(incident, classification, playbook, reader, work.claim, verifying=None)
            return
        # An unimplemented action would be called again by another attempt: a person decides at once.
        reason = next((EscalationReason.ACTION_NOT_IMPLEMENTED for s in pending["steps"]
                       if s.get("status") == NOT_IMPLEMENTED), None) or (
            EscalationReason.AUTO_REMEDIATION_FAILED if attempt >= self.settings.max_attempts else None)
        if reason:
            incident = self.store.update(incident.id, work.claim, state=IncidentState.OPEN, verifying=None)
            self.recorder.escalate(incident, reason, reader, work.claim)
            return
        # Spaced, not back to back: the agent settles, and is read again before anything runs.
        backoff = replace(self.policy, used=attempt).backoff(self.rng)
        self.store.update(incident.id, work.claim, state=IncidentState.OPEN, verifying=None, next_backoff=backoff)
        work.retry_at, work.continues = time.time() + backoff, True

    def _prepare(self, work: Work, incident: Incident, reader: FleetReader,
                 gates: GateInputs) -> tuple[Incident, Plan, Playbook] | None:
        """What the next attempt runs, from a fresh view; None when the incident ended here (refused, nothing to
        fix, dry run) and nothing is to run."""
        refused = self.recorder.refused
        # With the kill switch off its gate refuses anyway: no point waiting for evidence first.
        refusal = self.planner.await_evidence(incident, reader) if gates.enabled() else None
        if refusal:
            refused(incident, None, None, refusal, reader, work.claim, reader.view(incident.agent))
            return None
        incident, plan = self.planner.plan(work, incident, reader)
        decision = plan.decision
        if decision.classification is None:
            self.recorder.nothing_to_fix(incident, plan.view, work.claim)
            return None
        if plan.symptom_of is not None:  # remedied here, the person's fix of the conflict would be the layer's
            refused(incident, decision.classification, None, Refusal(
                Gate.CONFLICT_ESCALATED, f"{'; '.join(decision.reasons)}: a symptom of {plan.symptom_of}, which is "
                f"escalated or held for a person; observed only"), reader, work.claim, plan.view)
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


def span_context(incident: Incident, span_id: str | None = None):
    """A context whose parent is INCIDENT's root span (or SPAN_ID of its trace): later turns join its trace."""
    parent = SpanContext(int(incident.trace_id, 16), int(span_id or incident.span_id, 16), is_remote=False,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _spend(reader: FleetReader) -> float | None:
    try:
        return reader.fleet_spend()
    except UpstreamError:
        return None
