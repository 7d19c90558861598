"""Every ending of an attempt or an incident, written the same way: the store, one lineage line from one entry
builder, and the metrics (decisions and lineage lines counted alike, so a lost line shows)."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from autonomy.settings import Settings
from autonomy.vocabulary import ESCALATION_REASONS, GATE_REASONS, IncidentState, LineageEvent, Outcome

from ..agent_view import FLEET, AgentView
from ..classifier import CLASSES
from ..console_events import CLOSED, EventWriter
from ..escalation import escalated_alert, escalated_labels, escalation_payload, post_escalated_alert, post_payload
from ..fleet_reader import FleetReader
from ..gates import Refusal
from ..incident import Incident
from ..lineage import LINEAGE_FILE, LineageLog, utc_now_iso
from ..outcomes import COUNTED_BEFORE_CLOSE, closing_outcome
from ..playbooks import PlaybookSet
from ..receiver_metrics import ReceiverMetrics
from ..store import Claim, IncidentStore
from ..upstream_deadline import deadline as upstream_deadline
from ..upstreams import UpstreamError
from ..verification import VerifyResult
from .alert_outbox import AlertOutbox, PostTimes
from .fleet_readers import Upstreams


def lineage_entry(event: LineageEvent, incident: Incident, *, ok: bool, before: dict, after: dict,
                  attempt: int | None = None, **fields: object) -> dict:
    """One lineage line: the pack's fields (section 8) for INCIDENT, then the event's own FIELDS."""
    return {"event": event, "agent": incident.agent, "classification": fields.pop("classification",
                                                                                  incident.classification),
            "playbook": fields.pop("playbook", incident.playbook),
            "attempt": incident.attempts if attempt is None else attempt, "ok": ok, "before": before, "after": after,
            "incident_id": incident.id, "trace_id": incident.trace_id, **fields}


def attempt_entry(incident: Incident, pending: dict, verdict: VerifyResult, verdict_at: float) -> dict:
    """The lineage line of an attempt (its `verifying` record) once its VERDICT is in."""
    entry = lineage_entry(
        LineageEvent.AUTO_REMEDIATION, incident, ok=verdict.ok, before=pending["before"], after=dict(verdict.after),
        attempt=pending["attempt"], classification=pending["classification"], playbook=pending["playbook"],
        after_fresh=verdict.after_fresh, reasons=list(pending["reasons"]), steps=list(pending["steps"]),
        verification={"ok": verdict.ok, "reason": verdict.reason, "checks": dict(verdict.checks),
                      "still_true": list(verdict.still_true), "polls": verdict.polls},
        backoff_s=round(pending["backoff"], 3), duration_s=round(verdict_at - pending["started"], 3),
        verdict_at=round(verdict_at, 3))  # the line itself may be written later, when a worker records it
    if verdict.after_note and not verdict.after_fresh:
        entry["after_note"] = verdict.after_note
    if incident.claimants:
        entry["claimants"] = list(incident.claimants)
    if pending.get("arbitration") is not None:
        entry["arbitration"] = pending["arbitration"]
    return entry


def read_after(incident: Incident, reader: FleetReader, since: float | None,
               timeout: float) -> tuple[dict, bool | None, str | None]:
    """The agent's latest metrics, whether they are newer than SINCE (None: nothing to compare with), and what
    to say when they are not; no upstream call may take longer than TIMEOUT."""
    with upstream_deadline(time.time() + timeout):
        view = reader.view(incident.agent)
        if view.problem:
            return {}, False, view.problem
        if since is None or incident.agent == FLEET:
            return view.metrics, None, None
        try:
            fresh = not reader.stale([incident.agent], since)
        except UpstreamError as exc:
            return view.metrics, False, f"freshness unknown: {exc}"
        return view.metrics, fresh, None if fresh else "the latest samples, from before the action ended"


class OutcomeRecorder:
    """Writes what happened; a LEASE given fences the store writes (LeaseLost once another worker holds it)."""

    def __init__(self, settings: Settings, store: IncidentStore, lineage: LineageLog, metrics: ReceiverMetrics,
                 playbooks: PlaybookSet, upstreams: Callable[[], Upstreams], lineage_url: Callable[[str], str],
                 outbox: AlertOutbox, post_times: PostTimes, events: EventWriter | None = None):
        self.settings, self.store, self.lineage, self.metrics = settings, store, lineage, metrics
        self.playbooks, self.upstreams, self.lineage_url, self.outbox = playbooks, upstreams, lineage_url, outbox
        self.post_times = post_times
        self.events = events or EventWriter(None)

    def record(self, entry: dict) -> dict:
        """Write a decision's lineage line; coverage = lines written / decisions made, so a lost line shows."""
        self.metrics.decisions.labels(entry["event"]).inc()
        written = self.lineage.append(entry)
        self.metrics.lineage_lines.labels(entry["event"]).inc()
        return written

    def after(self, incident: Incident, reader: FleetReader, since: float | None):
        return read_after(incident, reader, since, self.settings.verify_timeout_seconds)

    @staticmethod
    def class_of(incident: Incident) -> str:
        if incident.classification:
            return incident.classification
        return next((c for c in CLASSES if c in incident.alert_classes), "none")

    # -- endings ------------------------------------------------------------------------------------------------
    def recovered(self, incident: Incident, classification: str, playbook: str, reader: FleetReader,
                  lease: Claim | None, **also: object) -> None:
        """Verified: auto-resolved. The direct path (or an incident whose alerts resolved meanwhile) closes now.
        ALSO: further changes written with it."""
        now = time.time()
        incident = self.store.get(incident.id) or incident
        changes = dict(outcome=Outcome.AUTO_RESOLVED, recovered_at=now, reason=f"Resolved by CoS: {playbook}",
                       state_reason=None, **also)
        if not reader.through_alertmanager or incident.resolved_at:
            done = self.store.update(incident.id, lease, state=IncidentState.CLOSED, closed_at=now, **changes)
        else:
            done = self.store.update(incident.id, lease, state=IncidentState.RECOVERED, **changes)
        onset = done.onset_at if done.onset_at is not None else done.opened_at
        self.metrics.outcomes.labels(classification, Outcome.AUTO_RESOLVED).inc()
        self.metrics.recovery.labels(classification).observe(max(0.0, now - onset))
        burn = (done.metrics or {}).get("costBurnRatePerHour") or 0.0
        self.metrics.incident_cost.labels(classification).inc(burn * max(0.0, now - onset) / 3600)
        # The console's toast, once the ledger says so (the feed reads the tile from it).
        self.events.outcome({"event": LineageEvent.AUTO_REMEDIATION, "ok": True, "agent": done.agent,
                             "playbook": playbook, "incident_id": done.id, "attempt": done.attempts})
        if done.state == IncidentState.CLOSED:
            self.closed([done])

    def nothing_to_fix(self, incident: Incident, view: AgentView, lease: Claim | None) -> None:
        entry = self.record(lineage_entry(
            LineageEvent.NO_ACTION, incident, ok=True, before=view.metrics, after=view.metrics, classification=None,
            playbook=None, reason="the agent's latest samples show nothing to fix: it healed without the layer"))
        self.store.update(incident.id, lease, state=IncidentState.RECOVERED, recovered_at=time.time(),
                          outcome=closing_outcome(replace(incident, outcome=None)), state_reason=None,
                          reason="nothing to fix on the latest samples")
        self.events.outcome(entry)

    def refused(self, incident: Incident, classification: str | None, playbook: str | None, refusal: Refusal,
                reader: FleetReader, lease: Claim | None, view: AgentView | None = None, attempt: int | None = None,
                steps=(), extra: dict | None = None, action_end: float | None = None) -> None:
        """A gate said no: recorded, then escalated, closed or held as the refusal says."""
        self.metrics.refusals.labels(refusal.gate).inc()
        before = view.metrics if view else {}
        after, fresh = before, None  # nothing ran: what it saw is what it leaves
        if steps:  # something ran before the refusal: what it left
            after, fresh, _ = self.after(incident, reader, action_end)
        entry = lineage_entry(LineageEvent.REMEDIATION_REFUSED, incident, ok=False, before=before, after=after,
                              attempt=attempt, classification=classification, playbook=playbook, gate=refusal.gate,
                              reason=refusal.reason, steps=[s.as_dict() for s in steps], **(extra or {}))
        if fresh is not None:
            entry["after_fresh"] = fresh
        entry = self.record(entry)
        if refusal.escalate_reason:
            incident = self.store.update(incident.id, lease, classification=classification, playbook=playbook)
            self.escalate(incident, refusal.escalate_reason, reader, lease)
        elif refusal.close:
            done = self.store.update(incident.id, lease, state=IncidentState.CLOSED, closed_at=time.time(),
                                     outcome=closing_outcome(incident), reason=refusal.reason)
            self.closed([done])
        else:
            self.store.update(incident.id, lease, state=IncidentState.SKIPPED, classification=classification,
                              playbook=playbook, outcome=Outcome.SKIPPED, reason=f"{refusal.gate}: {refusal.reason}",
                              state_reason=GATE_REASONS.get(refusal.gate, refusal.gate))
        if not refusal.escalate_reason:  # an escalation tells the console itself
            self.events.outcome(entry)

    def failed_attempt(self, incident: Incident, attempt: int, error: str, reader: FleetReader) -> None:
        """An attempt that ended in an exception, as a failed attempt's line (the caller retries or escalates)."""
        after, _, note = self.after(incident, reader, None)
        entry = lineage_entry(LineageEvent.AUTO_REMEDIATION, incident, ok=False, before=incident.metrics or {},
                              after=after, attempt=attempt, error=error,
                              verification={"ok": False, "reason": f"the attempt failed unexpectedly: {error}"})
        if note:
            entry["after_note"] = note
        self.record(entry)

    def escalate(self, incident: Incident, reason: str, reader: FleetReader, lease: Claim | None) -> None:
        """Hand the incident to a human: the pack's payload (section 7) posted, AutonomyEscalated in Alertmanager."""
        ts = utc_now_iso()
        payload = escalation_payload(incident, reason, self.playbooks, f"{LINEAGE_FILE}#{ts}")
        after, _, note = self.after(incident, reader, None)  # the agent as it is when handed over
        entry = lineage_entry(LineageEvent.ESCALATION, incident, ok=False, before=incident.metrics or {},
                              after=after, ts=ts, reason=reason, payload=payload)
        if note:
            entry["after_note"] = note
        entry = self.record(entry)
        incident = self.store.update(incident.id, lease, state=IncidentState.ESCALATED, outcome=Outcome.ESCALATED,
                                     reason=reason, state_reason=ESCALATION_REASONS.get(reason, reason))
        self.events.outcome(entry)  # the toast, once the ledger says Escalated
        # Counted once it is stored: a lease lost while delivering must not lose the count.
        self.metrics.escalations.labels(reason).inc()
        self.metrics.outcomes.labels(self.class_of(incident), Outcome.ESCALATED).inc()
        problems = self._deliver(incident, reason, payload)
        if problems:
            self.lineage.append(lineage_entry(LineageEvent.ESCALATION_DELIVERY, incident, ok=False,
                                              before=incident.metrics or {}, after=after, reason="; ".join(problems)))
            self.store.update(incident.id, lease, reason=f"{reason}; delivery: {'; '.join(problems)}")

    def _deliver(self, incident: Incident, reason: str, payload: dict) -> list[str]:
        problems = []
        if self.settings.escalation_url:
            problem = post_payload(self.settings.escalation_url, payload, self.settings.escalation_token)
            if problem:
                problems.append(problem)
        else:
            problems.append("AUTOREM_ESCALATION_URL is not set: payload recorded in the lineage only")
        alertmanager = self.upstreams().alertmanager
        if alertmanager is not None:
            problem = post_escalated_alert(alertmanager, escalated_alert(
                incident, reason, self.lineage_url(incident.agent), self.playbooks.escalate_to))
            if problem:
                problems.append(problem)
            else:
                self.post_times.posted([incident.id])  # the sweeper posts it again only when it is due
        return problems

    def closed(self, incidents) -> None:
        """Account for closed incidents (each counted once, by how it ended); an escalated one's AutonomyEscalated
        is resolved in Alertmanager from the outbox, never from the caller's thread (a webhook request)."""
        incidents = list(incidents)
        self.events.publish_many((CLOSED, i.agent, {"incident_id": i.id, "outcome": i.outcome}) for i in incidents)
        for incident in incidents:
            if incident.outcome and incident.outcome not in COUNTED_BEFORE_CLOSE:
                self.metrics.outcomes.labels(self.class_of(incident), incident.outcome).inc()
            if incident.outcome == Outcome.ESCALATED:
                self.outbox.put(escalated_alert(incident, incident.reason or "", "", self.playbooks.escalate_to,
                                                resolved=True), lambda incident=incident: not self._refiring(incident))

    def _refiring(self, closed: Incident) -> bool:
        """Whether a newer escalation of CLOSED's agent fires under the same labels: resolving the closed one's
        alert now would resolve the newer one's."""
        labels = escalated_labels(closed)
        return any(c.id != closed.id and c.state == IncidentState.ESCALATED and escalated_labels(c) == labels
                   for c in (self.store.open_for(closed.agent), *self.store.conflicts_of(closed.agent))
                   if c is not None)
