"""The closed loop's front: the kill switch, the staged rollout, and the workers, sweeper and outbox that run it."""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from opentelemetry import trace

from autonomy.settings import Settings
from autonomy.vocabulary import IncidentState, LineageEvent, StateReason

from ..actions import ActionRunner
from ..console_events import SWITCHES, EventWriter
from ..incident import Incident
from ..lineage import LineageLog
from ..playbooks import PlaybookSet
from ..receiver_metrics import ReceiverMetrics
from ..rollout import Rollout, expand, initial, set_rollout, widens
from ..store import IncidentStore
from .alert_outbox import AlertOutbox, PostTimes
from .attempts import AttemptLoop
from .fleet_readers import FleetReaders, Upstreams
from .outcome_recorder import OutcomeRecorder
from .planning import Planner
from .retention import RetentionTrimmer
from .sweeper import Sweeper
from .verifier import Verifier
from .worker_pool import Work, WorkerPool

log = logging.getLogger("autonomy.engine")
FLAG_OFF = "AUTO_REMEDIATE is not true (feature flag off)"
ROLLOUT_HOLDS = (StateReason.NOT_IN_CANARY, StateReason.CLASS_NOT_ENABLED)


class FeatureFlagOff(RuntimeError):
    """Remediation was asked to be switched on while AUTO_REMEDIATE is not exactly true."""


def _or_nan(read: Callable[[], float]) -> Callable[[], float]:
    def safe() -> float:
        try:
            return float(read())
        except Exception:  # a scrape during shutdown, or a broken store: unknown, not a guess
            return math.nan
    return safe


def _scope(rollout: Rollout) -> dict:
    """What a rollout admits, as its lineage line's before and after."""
    return {k: v for k, v in rollout.as_dict().items() if k in ("agents", "classes")}


def _held_by_rollout(incident: Incident) -> bool:
    """Skipped by the rollout's gate (incidents from before reasons were kept: by their text)."""
    return incident.state_reason in ROLLOUT_HOLDS or (incident.reason or "").startswith(("canary:",
                                                                                          "class_not_enabled:"))


class RemediationEngine:
    """Workers claim incidents from the store, one remediation per agent at a time (the store's leases say so)."""

    def __init__(self, settings: Settings, store: IncidentStore, lineage: LineageLog, metrics: ReceiverMetrics,
                 playbooks: PlaybookSet, upstreams: Upstreams, runner: ActionRunner, tracer: trace.Tracer,
                 lineage_url: Callable[[str], str], owner: str | None = None, events: EventWriter | None = None):
        self.settings, self.store, self.metrics, self.up = settings, store, metrics, upstreams
        self.events = events or EventWriter(None)  # the console's live feed (none: a test's bare engine)
        self.lineage = lineage
        self._rollout_lock = threading.Lock()  # one change at a time: each computed from the one before
        self.stopping = threading.Event()
        self.readers = FleetReaders(settings, lambda: self.up)
        self.outbox = AlertOutbox(lambda: self.up.alertmanager, metrics.outbox_dropped.inc)
        post_times = PostTimes()
        self.recorder = OutcomeRecorder(settings, store, lineage, metrics, playbooks, lambda: self.up, lineage_url,
                                        self.outbox, post_times, self.events)
        self.attempts = AttemptLoop(settings, store, self.recorder, Planner(settings, store, playbooks, self.stopping),
                                    self.readers, playbooks, runner, tracer, metrics, lambda: self.up,
                                    lambda: self.enabled, self.rollout, self.stopping,
                                    lambda work, incident: self.verifier.wait_for(work, incident))
        self.pool = WorkerPool(store, self.attempts.run, metrics, settings.lease_seconds, self.stopping, owner)
        self.verifier = Verifier(settings, store, self.readers, playbooks, self.pool, metrics, self.stopping)
        self.sweeper = Sweeper(store, self.readers, self.recorder, playbooks, lambda: self.up, lineage_url,
                               settings.sweep_seconds, post_times)
        self.retention = RetentionTrimmer(store, settings.retention_days, metrics)
        metrics.queue_capacity.set(settings.queue_size)
        metrics.queue_depth.set_function(_or_nan(store.queued_count))
        metrics.remediation_enabled.set_function(_or_nan(lambda: self.enabled))
        metrics.watch_rollout(self.rollout, settings.max_agents)

    # -- the kill switch -------------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """AUTO_REMEDIATE is exactly true and the kill switch (in the store, shared) is on; read each time."""
        return self.settings.auto_remediate and self.store.kill_switch().enabled

    def set_enabled(self, enabled: bool, reason: str) -> None:
        """Flip the kill switch durably; an in-flight playbook stops before its next step.

        Switching it back on resumes the incidents the switch had held back; they act only on samples newer
        than this moment. With AUTO_REMEDIATE not exactly true it cannot be switched on (FeatureFlagOff).
        """
        if enabled and not self.settings.auto_remediate:
            raise FeatureFlagOff("AUTO_REMEDIATE is not true: set AUTO_REMEDIATE=true and restart the receiver")
        self.store.set_kill_switch(enabled, reason)
        self.events.publish(SWITCHES, None, switch="remediation", enabled=enabled, reason=reason)
        if enabled:
            self._resume_held(lambda i: i.state_reason == StateReason.KILL_SWITCH
                              or (i.reason or "").startswith("kill_switch"), "resumed: kill switch on")

    def remediation_status(self) -> dict:
        switch = self.store.kill_switch()
        if not self.settings.auto_remediate:
            reason = FLAG_OFF
        elif switch.enabled:
            reason = None
        elif switch.changed_at is None:  # a ledger from before reasons were kept
            reason = "disabled before the last restart"
        else:
            # Whoever switched it, on whichever receiver sharing the store, and however long ago: their reason.
            reason = switch.reason or "no reason given"
        return {"enabled": self.enabled, "reason": reason, "changed_at": switch.changed_at,
                "dry_run": self.settings.dry_run, "canary_agents": list(self.rollout().agents or ())}

    # -- the staged rollout ------------------------------------------------------------------------------------------
    def rollout(self) -> Rollout:
        """The rollout in the store (shared, read each time), or AUTOREM_CANARY_AGENTS and every class until set."""
        return self.store.rollout() or initial(self.settings.canary_agents)

    def set_rollout(self, agents: object, classes: object, reason: object) -> Rollout:
        """Replace the rollout (RolloutError names every problem, nothing changed); see _change_rollout."""
        return self._change_rollout("set", lambda old, now: set_rollout(old, agents, classes, reason, now,
                                                                        self.settings.max_agents))

    def expand_rollout(self, agents: object = (), classes: object = (), reason: object = "") -> Rollout:
        """Add agents and classes to the rollout (RolloutError names every problem, nothing changed)."""
        return self._change_rollout("expand", lambda old, now: expand(old, agents, classes, reason, now,
                                                                      self.settings.max_agents))

    def _change_rollout(self, how: str, change: Callable[[Rollout, float], Rollout]) -> Rollout:
        """Its lineage line, then the store; a widening resumes the held incidents it admits (they act only on
        samples newer than now). A narrowing refuses new attempts; one already running finishes."""
        with self._rollout_lock:
            old = self.rollout()
            new = change(old, time.time())
            self.lineage.append({"actor": "operator", "event": LineageEvent.ROLLOUT_CHANGE, "ok": True,
                                 "before": _scope(old), "after": _scope(new), "reason": new.reason, "change": how})
            self.store.set_rollout(new)
        self.events.publish(SWITCHES, None, switch="rollout", rollout=new.as_dict())
        if widens(old, new):
            self._resume_held(lambda i: _held_by_rollout(i) and new.admits(i.agents, i.classification),
                              "resumed: the rollout widened")
        return new

    def _resume_held(self, held_here: Callable[[Incident], bool], reason: str) -> int:
        """Open again the skipped incidents HELD_HERE selects, a page at a time; they wait for samples newer than
        now. How many were resumed."""
        now, resumed, before = time.time(), 0, None
        while True:
            page = self.store.list(state=IncidentState.SKIPPED, limit=500, before=before)
            for incident in page:
                if held_here(incident):
                    self.store.update(incident.id, state=IncidentState.OPEN, outcome=None, resolved_at=None,
                                      reason=reason, state_reason=None, gate_changed_at=now)
                    resumed += 1
            if len(page) < 500:
                break
            before = (page[-1].opened_at, page[-1].id)
        self.pool.wake(resumed)
        return resumed

    # -- running -----------------------------------------------------------------------------------------------------
    def start(self, workers: int | None = None, sweeper: bool = True) -> None:
        """Start the workers, the outbox, the sweeper and the retention. What a stopped or crashed receiver held is
        taken over as its leases expire; holds a restart lifted (the initial rollout wider, dry run off) are
        resumed."""
        rollout, dry_run = self.rollout(), self.settings.dry_run

        def lifted(incident: Incident) -> bool:
            if incident.state_reason in ROLLOUT_HOLDS:
                return rollout.admits(incident.agents, incident.classification)
            return incident.state_reason == StateReason.DRY_RUN and not dry_run
        self._resume_held(lifted, "resumed: the restart lifted its hold")
        self.pool.start(workers or self.settings.workers)
        self.verifier.start()
        self.outbox.start()
        if sweeper:
            self.sweeper.start(self.stopping)
        self.retention.start(self.stopping)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.verifier.join(timeout)
        self.pool.stop(timeout)
        self.verifier.release_all()  # each waiting attempt waits again after the restart; its steps do not rerun
        self.sweeper.join(timeout)
        self.retention.join(timeout)
        self.outbox.stop(timeout)

    def alive(self) -> bool:
        return (self.pool.alive() and self.verifier.alive() and self.sweeper.alive() and self.outbox.alive()
                and self.retention.alive())

    def wake(self, count: int) -> None:
        """COUNT incidents were just queued (the webhook committed them)."""
        if count:
            self.pool.wake(count)

    def running_agents(self) -> set[str]:
        """Agents a live claim holds right now (the tiles' spinner)."""
        return set(self.store.leased_agents())

    def on_closed(self, incidents) -> None:
        self.recorder.closed(incidents)

    # -- one step at a time (the tests, and a receiver without workers) -----------------------------------------------
    def process(self, incident_id: str) -> bool:
        """Claim INCIDENT_ID and run it now, in this thread, verification and later attempts included; False if
        it could not be claimed."""
        return self._drive(self.pool.run_one(incident_id))

    def work_once(self) -> str | None:
        """Claim the next claimable incident and run it to its end, as workers and the verifier would; its id."""
        work = self.pool.run_one()
        self._drive(work)
        return work.claim.incident_id if work is not None else None

    def _drive(self, work: Work | None) -> bool:
        """Carry WORK's incident through its turns here: its verification polled in this thread, its next attempt
        claimed once due."""
        if work is None:
            return False
        incident_id = work.claim.incident_id
        while True:
            if work.handed_over:
                self.verifier.run_until_done(incident_id)
            elif work.continues and work.retry_at is not None:
                if self.stopping.wait(max(0.0, work.retry_at - time.time())):
                    return True
            else:
                return True
            work = self.pool.run_one(incident_id)
            if work is None:
                return True

    def sweep(self) -> None:
        self.sweeper.sweep()
