"""The closed loop: classify, gate, run the playbook, verify on fresh samples, retry, escalate."""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from opentelemetry import trace

from autonomy.settings import Settings
from autonomy.signal_contract import Signal

from .actions import ActionRunner
from .agent_view import AgentView, read_agent, view_from_signals
from .classifier import CLASSES, Facts, SloThresholds, classify
from .escalation import escalated_alert, escalation_payload, post_escalated_alert, post_payload
from .fleet_view import (Member, members_from_prometheus, members_from_signals, signal_context,
                         template_variables)
from .gates import GateInputs, Refusal, check_gates
from .ledger import Incident, IncidentClosed, SqliteIncidentLedger
from .lineage import LINEAGE_FILE, LineageLog, utc_now_iso
from .playbooks import PlaybookSet
from .receiver_metrics import ReceiverMetrics
from .upstreams import AlertmanagerApi, PrometheusApi, UpstreamError
from .verification import VerifyResult, verify_on_signals, verify_recovery

log = logging.getLogger("autonomy.engine")
KILL_SWITCH_FLAG = "remediation_enabled"


@dataclass
class Upstreams:
    """Where the engine reads and writes outside itself; None where not configured."""

    prometheus: PrometheusApi
    alertmanager: AlertmanagerApi | None
    latest_signal: Callable[[str], Signal | None]
    all_signals: Callable[[], list[Signal]]


class RemediationEngine:
    """Worker threads draining a bounded queue of incident ids; one remediation per agent at a time."""

    def __init__(self, settings: Settings, ledger: SqliteIncidentLedger, lineage: LineageLog,
                 metrics: ReceiverMetrics, playbooks: PlaybookSet, upstreams: Upstreams,
                 runner: ActionRunner, tracer: trace.Tracer, lineage_url: Callable[[str], str]):
        self.settings, self.ledger, self.lineage, self.metrics = settings, ledger, lineage, metrics
        self.playbooks, self.up, self.runner, self.tracer = playbooks, upstreams, runner, tracer
        self.lineage_url = lineage_url
        self.slo = SloThresholds.from_settings(settings)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._slots_lock = threading.Lock()
        self._free_slots = settings.queue_size
        self._busy: set[str] = set()
        self._deferred: dict[str, list[str]] = {}
        self._busy_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        stored = ledger.flag(KILL_SWITCH_FLAG)
        self._enabled = settings.auto_remediate and stored != "false"
        self._disabled_reason = None if self._enabled else "AUTO_REMEDIATE=false" if not settings.auto_remediate \
            else "disabled before the last restart"
        metrics.remediation_enabled.set(1 if self._enabled else 0)
        metrics.queue_capacity.set(settings.queue_size)

    # -- the kill switch -------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool, reason: str) -> None:
        """Flip the kill switch durably; an in-flight playbook stops before its next step.

        Switching it back on resumes the incidents the switch had held back.
        """
        self.ledger.set_flag(KILL_SWITCH_FLAG, "true" if enabled else "false")
        self._enabled, self._disabled_reason = enabled, None if enabled else reason
        self.metrics.remediation_enabled.set(1 if enabled else 0)
        if enabled:
            held = [i for i in self.ledger.list(state="skipped", limit=10_000)
                    if (i.reason or "").startswith("kill_switch") and self.reserve(1)]
            for incident in held:
                self.ledger.update(incident.id, state="open", outcome=None, resolved_at=None,
                                   reason="resumed: kill switch on")
            self.enqueue([i.id for i in held])

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
        for incident_id in incident_ids:
            self._queue.put(incident_id)
        self.metrics.queue_depth.set(self._queue.qsize())

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

    def _work(self) -> None:
        while not self._stop.is_set():
            incident_id = self._queue.get()
            if incident_id is None:
                return
            with self._slots_lock:
                self._free_slots += 1
            self.metrics.queue_depth.set(self._queue.qsize())
            try:
                self.process(incident_id)
            except Exception:  # one bad incident must not take a worker down
                log.exception("incident %s failed unexpectedly", incident_id)

    # -- one incident ----------------------------------------------------------------------------------
    def process(self, incident_id: str) -> None:
        incident = self.ledger.get(incident_id)
        if incident is None or incident.state not in ("open", "remediating"):
            return
        with self._busy_lock:
            if incident.agent in self._busy:
                # Runs once the agent's current remediation ends: one at a time per agent, nothing dropped.
                self._deferred.setdefault(incident.agent, []).append(incident.id)
                return
            self._busy.add(incident.agent)
        self.metrics.in_flight.inc()
        self.metrics.agent_states.set(incident.agent, "recovering", running=True)
        try:
            with self.tracer.start_as_current_span("incident", attributes={
                    "autonomy.incident_id": incident.id, "autonomy.agent": incident.agent}) as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                incident = self.ledger.update(incident.id, trace_id=trace_id)
                self._attempts(incident)
        except IncidentClosed:
            log.info("incident %s was closed while being remediated", incident.id)
        finally:
            with self._busy_lock:
                self._busy.discard(incident.agent)
                deferred = self._deferred.pop(incident.agent, [])
            with self._slots_lock:
                self._free_slots -= len(deferred)
            for waiting in deferred:
                self._queue.put(waiting)
            self.metrics.in_flight.dec()
            self.metrics.agent_states.running(incident.agent, False)

    def _observe(self, incident: Incident) -> AgentView:
        if incident.source == "signal":
            return view_from_signals(incident.agent, self.up.all_signals(), self.settings.agent_silent_seconds)
        try:
            return read_agent(self.up.prometheus, incident.agent, incident.alert_classes,
                              self.settings.agent_silent_seconds, self.settings.budget_cap_daily_usd)
        except UpstreamError as exc:
            log.warning("cannot read %s from Prometheus: %s", incident.agent, exc)
            return AgentView(None, Facts(alert_classes=incident.alert_classes), {})

    @staticmethod
    def _classification_inputs(view: AgentView, incident: Incident) -> tuple[Signal | None, Facts]:
        """The agent's own signal decides when it is live; alert classes only stand in when it is not."""
        if view.signal is not None and not view.facts.silent:
            return view.signal, replace(view.facts, alert_classes=frozenset())
        # A silent agent's last signal is old news: its stale error code must not outrank `silent`.
        return None, replace(view.facts, alert_classes=incident.alert_classes)

    def _members(self, incident: Incident) -> list[Member]:
        if incident.source == "signal":
            return members_from_signals(self.up.all_signals())
        try:
            return members_from_prometheus(self.up.prometheus)
        except UpstreamError:
            return []

    def _fleet_spend(self, incident: Incident) -> float | None:
        if incident.source == "signal":
            return sum(s.cost_burn_dollars_per_hour for s in self.up.all_signals()) * 24
        try:
            rows = self.up.prometheus.query("sum(max by (agent) (autonomy_agent_cost_burn_dollars_per_hour)) * 24")
        except UpstreamError:
            return None
        return float(rows[0]["value"][1]) if rows else None

    def _attempts(self, incident: Incident) -> None:
        gates = GateInputs(enabled=lambda: self._enabled, canary=self.settings.canary_agents,
                           alertmanager=self.up.alertmanager, fleet_spend=lambda: self._fleet_spend(incident),
                           budget_cap=self.settings.budget_cap_daily_usd)
        for attempt in range(incident.attempts + 1, self.settings.max_attempts + 1):
            view = self._observe(incident)
            decision = classify(*self._classification_inputs(view, incident), self.slo)
            if decision.classification is None:
                self._nothing_to_fix(incident, view)
                return
            playbook = self.playbooks.select(decision.classification, incident.labels)
            if playbook is None:  # load_playbooks guarantees a default per class; kept for safety
                self._refuse(incident, decision.classification, None,
                             Refusal("no_playbook", "no playbook matches", escalate_reason="AutoRemediationFailed"))
                return
            refusal = check_gates(incident, decision.classification, playbook, gates)
            if refusal:
                self._refuse(incident, decision.classification, playbook.name, refusal, view)
                return
            if self.settings.dry_run:
                self._dry_run(incident, decision.classification, playbook, view)
                return
            incident = self.ledger.update(incident.id, state="remediating", attempts=attempt,
                                          classification=decision.classification, playbook=playbook.name,
                                          playbooks_run=incident.playbooks_run + (playbook.name,),
                                          metrics=view.metrics, context=signal_context(view.signal))
            result, steps, stopped = self._attempt(incident, attempt, decision, playbook, view)
            if stopped:
                return
            if result.ok:
                self._recovered(incident, decision.classification, playbook.name)
                return
        self._escalate(incident, "AutoRemediationFailed")

    def _attempt(self, incident: Incident, attempt: int, decision, playbook, view: AgentView):
        started = time.time()
        members = self._members(incident)
        variables = template_variables(incident.agent, view, members, self.playbooks, self.settings.priority,
                                       incident.labels, incident.id)
        steps = []
        with self.tracer.start_as_current_span("attempt", attributes={
                "autonomy.attempt": attempt, "autonomy.classification": decision.classification,
                "autonomy.playbook": playbook.name}):
            for step in playbook.steps:
                if not self._enabled:
                    self._refuse(incident, decision.classification, playbook.name,
                                 Refusal("kill_switch", "remediation disabled during the playbook; stopped before "
                                                        f"step {step.action}"), view, attempt=attempt, steps=steps)
                    return None, steps, True
                with self.tracer.start_as_current_span("step", attributes={"autonomy.action": step.action}) as span:
                    result = self.runner.run(step, incident.agent, variables, self._stop)
                    span.set_attribute("autonomy.ok", result.ok)
                    span.set_attribute("autonomy.target", result.target)
                steps.append(result)
                if not result.ok:
                    break
            action_end = time.time()
            targets = {incident.agent} | {s.target for s in steps if s.ok}
            with self.tracer.start_as_current_span("verify") as span:
                if steps and not all(s.ok for s in steps):
                    failed = next(s for s in steps if not s.ok)
                    verdict = VerifyResult(False, f"step {failed.action} failed: {failed.error}", {}, {}, 0)
                else:
                    verdict = self._verify(incident, playbook.criteria, action_end, targets)
                span.set_attribute("autonomy.ok", verdict.ok)
                span.set_attribute("autonomy.reason", verdict.reason)
        ok = verdict.ok
        self.metrics.attempts.labels(incident.agent, decision.classification, playbook.name,
                                     "ok" if ok else "failed").inc()
        self.lineage.append({
            "event": "auto_remediation", "agent": incident.agent, "classification": decision.classification,
            "playbook": playbook.name, "attempt": attempt, "ok": ok, "before": view.metrics,
            "after": dict(verdict.after), "incident_id": incident.id, "trace_id": incident.trace_id,
            "reasons": list(decision.reasons), "steps": [s.as_dict() for s in steps],
            "verification": {"ok": ok, "reason": verdict.reason, "checks": dict(verdict.checks),
                             "polls": verdict.polls},
            "duration_s": round(time.time() - started, 3),
        })
        return verdict, steps, False

    def _verify(self, incident: Incident, criteria: dict, action_end: float, targets: set[str]) -> VerifyResult:
        s = self.settings
        if incident.source == "signal":
            return verify_on_signals(self.up.latest_signal, incident.agent, criteria, action_end,
                                     s.verify_timeout_seconds, s.verify_interval_seconds, s.budget_cap_daily_usd,
                                     self.up.all_signals, self._stop)
        return verify_recovery(self.up.prometheus, incident.agent, criteria, action_end, targets,
                               s.verify_timeout_seconds, s.verify_interval_seconds, s.budget_cap_daily_usd,
                               self._stop)

    # -- endings ---------------------------------------------------------------------------------------------
    def _recovered(self, incident: Incident, classification: str, playbook: str) -> None:
        now = time.time()
        self.metrics.outcomes.labels(classification, "auto_resolved").inc()
        incident = self.ledger.get(incident.id) or incident
        if incident.source == "signal" or incident.resolved_at:
            done = self.ledger.update(incident.id, state="closed", outcome="auto_resolved", recovered_at=now,
                                      closed_at=now, reason=f"Resolved by CoS: {playbook}")
            self.on_closed([done])
        else:
            self.ledger.update(incident.id, state="recovered", outcome="auto_resolved", recovered_at=now,
                               reason=f"Resolved by CoS: {playbook}")
            self.metrics.agent_states.set(incident.agent, "healthy")

    def _nothing_to_fix(self, incident: Incident, view: AgentView) -> None:
        self.lineage.append({"event": "no_action", "agent": incident.agent, "attempt": incident.attempts,
                             "ok": True, "before": view.metrics, "after": view.metrics,
                             "incident_id": incident.id, "trace_id": incident.trace_id,
                             "reason": "the agent's metrics show nothing to fix"})
        self.ledger.update(incident.id, state="recovered", recovered_at=time.time(),
                           reason="nothing to fix on the latest metrics")
        self.metrics.agent_states.set(incident.agent, "healthy")

    def _dry_run(self, incident: Incident, classification: str, playbook, view: AgentView) -> None:
        variables = template_variables(incident.agent, view, self._members(incident), self.playbooks,
                                       self.settings.priority, incident.labels, incident.id)
        planned = []
        for step in playbook.steps:
            try:
                target, url, body = self.runner.prepare(step, incident.agent, variables)
                planned.append({"action": step.action, "target": target, "url": url, "body": body})
            except Exception as exc:  # a dry run reports what would fail instead of failing
                planned.append({"action": step.action, "error": f"{type(exc).__name__}: {exc}"})
        self._refuse(incident, classification, playbook.name,
                     Refusal("dry_run", "AUTOREM_DRY_RUN: recorded what would run, ran nothing"), view,
                     extra={"would_run": planned})

    def _refuse(self, incident: Incident, classification: str | None, playbook: str | None, refusal: Refusal,
                view: AgentView | None = None, attempt: int | None = None, steps=(), extra: dict | None = None) -> None:
        self.metrics.refusals.labels(refusal.gate).inc()
        entry = {"event": "remediation_refused", "agent": incident.agent, "classification": classification,
                 "playbook": playbook, "attempt": attempt if attempt is not None else incident.attempts,
                 "ok": False, "before": view.metrics if view else {}, "after": {},
                 "incident_id": incident.id, "trace_id": incident.trace_id, "gate": refusal.gate,
                 "reason": refusal.reason, "steps": [s.as_dict() for s in steps], **(extra or {})}
        self.lineage.append(entry)
        if refusal.gate == "agent_locked":
            return
        if refusal.escalate_reason:
            incident = self.ledger.update(incident.id, classification=classification, playbook=playbook)
            self._escalate(incident, refusal.escalate_reason)
            return
        if refusal.close:
            done = self.ledger.update(incident.id, state="closed", closed_at=time.time(),
                                      outcome=incident.outcome or "self_resolved", reason=refusal.reason)
            self.on_closed([done])
            return
        if classification:
            self.metrics.outcomes.labels(classification, "skipped").inc()
        self.ledger.update(incident.id, state="skipped", classification=classification, playbook=playbook,
                           outcome="skipped", reason=f"{refusal.gate}: {refusal.reason}")

    def _escalate(self, incident: Incident, reason: str) -> None:
        ts = utc_now_iso()
        lineage_ref = f"{LINEAGE_FILE}#{ts}"
        payload = escalation_payload(incident, reason, self.playbooks, lineage_ref)
        self.lineage.append({"ts": ts, "event": "escalation", "agent": incident.agent,
                             "classification": incident.classification, "playbook": incident.playbook,
                             "attempt": incident.attempts, "ok": False, "before": incident.metrics or {},
                             "after": {}, "incident_id": incident.id, "trace_id": incident.trace_id,
                             "reason": reason, "payload": payload})
        incident = self.ledger.update(incident.id, state="escalated", outcome="escalated", reason=reason)
        problems = []
        if self.settings.escalation_url:
            problem = post_payload(self.settings.escalation_url, payload, self.settings.escalation_token)
            if problem:
                problems.append(problem)
        else:
            problems.append("AUTOREM_ESCALATION_URL is not set: payload recorded in the lineage only")
        if self.up.alertmanager is not None:
            problem = post_escalated_alert(self.up.alertmanager,
                                           escalated_alert(incident, reason, self.lineage_url(incident.agent)))
            if problem:
                problems.append(problem)
        if problems:
            self.lineage.append({"event": "escalation_delivery", "agent": incident.agent,
                                 "classification": incident.classification, "playbook": incident.playbook,
                                 "attempt": incident.attempts, "ok": False, "before": {}, "after": {},
                                 "incident_id": incident.id, "trace_id": incident.trace_id,
                                 "reason": "; ".join(problems)})
            self.ledger.update(incident.id, reason=f"{reason}; delivery: {'; '.join(problems)}")
        self.metrics.escalations.labels(reason).inc()
        if incident.classification:
            self.metrics.outcomes.labels(incident.classification, "escalated").inc()
        self.metrics.agent_states.set(incident.agent, "escalated")

    def on_closed(self, incidents: list[Incident] | tuple[Incident, ...]) -> None:
        """Account for closed incidents: recovery time, cost, tile state, and the escalation alert resolved."""
        for incident in incidents:
            end = incident.recovered_at or incident.closed_at or time.time()
            if incident.classification:
                self.metrics.recovery.labels(incident.classification).observe(max(0.0, end - incident.opened_at))
                burn = (incident.metrics or {}).get("costBurnRatePerHour") or 0.0
                self.metrics.incident_cost.labels(incident.classification).inc(
                    burn * max(0.0, end - incident.opened_at) / 3600)
            self.metrics.agent_states.set(incident.agent, "healthy")
            if incident.outcome == "escalated" and self.up.alertmanager is not None:
                post_escalated_alert(self.up.alertmanager,
                                     escalated_alert(incident, incident.reason or "", "", resolved=True))

    # -- the sweeper -------------------------------------------------------------------------------------------
    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")

    def sweep(self) -> None:
        """Close incidents whose alerts are gone (muted after escalation, or a lost resolved notification)."""
        waiting = [incident for state in ("escalated", "recovered", "skipped")
                   for incident in self.ledger.list(state=state, limit=10_000) if incident.source == "alertmanager"]
        if not waiting:
            return
        try:  # one query for the whole fleet, not one per incident: a storm leaves thousands waiting
            rows = self.up.prometheus.query(
                f'ALERTS{{alertstate="firing", autonomy_class=~"{"|".join(CLASSES)}"}}')
        except UpstreamError:
            return
        firing = {row.get("metric", {}).get("agent") for row in rows}
        for incident in waiting:
            if incident.agent not in firing:
                try:
                    done = self.ledger.update(incident.id, state="closed", closed_at=time.time(),
                                              reason=(incident.reason or "") + "; alerts resolved")
                except IncidentClosed:  # a resolved notification closed it since the list was read
                    continue
                self.on_closed([done])
            elif incident.state == "escalated" and self.up.alertmanager is not None:
                post_escalated_alert(self.up.alertmanager, escalated_alert(
                    incident, incident.reason or "", self.lineage_url(incident.agent)))
