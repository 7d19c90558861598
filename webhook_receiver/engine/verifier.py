"""The verifier: an attempt whose steps ran waits for its verdict as durable state (the incident's `verifying`,
with its deadline), not in a sleeping worker; each poll looks at every waiting attempt together, one query per
kind for all their agents, and hands each verdict back to the workers."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from autonomy.settings import Settings

from ..criteria import active
from ..fleet_snapshot import snapshot
from ..incident import Incident
from ..playbooks import PlaybookSet
from ..receiver_metrics import ReceiverMetrics
from ..store import IncidentClosed, IncidentStore, LeaseLost
from ..upstream_deadline import deadline as upstream_deadline
from ..verification import Verification, VerifyResult, look, result_as_dict
from .fleet_readers import FleetReaders
from .worker_pool import Work, WorkerPool

log = logging.getLogger("autonomy.verifier")


@dataclass
class Waiting:
    """An attempt waiting for its verdict: its claim (kept, so its agents stay held), what to verify, until when."""

    work: Work
    what: Verification
    wanted: Mapping[str, object]
    deadline: float
    last: VerifyResult | None = None


def pending_verification(incident: Incident, playbooks: PlaybookSet) -> Verification:
    """What INCIDENT's attempt in verification must show; its playbook's criteria as loaded now (None: the
    playbook is no longer loaded)."""
    pending = incident.verifying or {}
    playbook = next((p for p in playbooks.playbooks if p.name == pending.get("playbook")), None)
    criteria = playbook.criteria if playbook is not None else None
    return Verification(incident, criteria, float(pending["action_end"]), tuple(pending["agents"]),
                        tuple(pending["fresh_agents"]), tuple(pending.get("foreign") or ()))


class Verifier:
    """Holds the waiting attempts (their claims renewed by the pool's lease keeper) and polls them together."""

    def __init__(self, settings: Settings, store: IncidentStore, readers: FleetReaders, playbooks: PlaybookSet,
                 pool: WorkerPool, metrics: ReceiverMetrics, stop: threading.Event):
        self.settings, self.store, self.readers, self.playbooks = settings, store, readers, playbooks
        self.pool, self.metrics, self.stop = pool, metrics, stop
        self._waiting: dict[str, Waiting] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        metrics.verifications_waiting.set_function(lambda: len(self._waiting))

    def wait_for(self, work: Work, incident: Incident) -> None:
        """Keep WORK's claim until the verdict of INCIDENT's attempt; the worker is free at once."""
        what = pending_verification(incident, self.playbooks)
        work.handed_over = True
        # Its window runs from when it starts waiting (a resumed one, after a restart, waits a window again);
        # the stored deadline is the earliest it may end.
        deadline = max(float(incident.verifying["deadline"]), time.time() + self.settings.verify_timeout_seconds)
        item = Waiting(work, what, active(what.criteria or {}), deadline)
        with self._lock:
            self._waiting[incident.id] = item
        if what.criteria is None:  # its playbook is gone since (a restart with another playbooks.yaml)
            item.last = VerifyResult(False, f"playbook {incident.verifying.get('playbook')} is no longer loaded: "
                                     "its criteria cannot be judged", {}, {}, 0)
            self._hand_back(item)

    def waiting(self, incident_id: str) -> bool:
        with self._lock:
            return incident_id in self._waiting

    def poll(self) -> int:
        """One look at every waiting attempt, read together per path; how many verdicts were handed back."""
        with self._lock:
            waiting = list(self._waiting.values())
        by_source: dict[str, list[Waiting]] = {}
        for item in waiting:
            by_source.setdefault(item.what.incident.source, []).append(item)
        done = 0
        for source, items in by_source.items():
            agents = {a for item in items for a in (*item.what.agents, *item.what.fresh_agents)}
            # No upstream call outlasts the verifications it serves (one past its deadline gets its verdict).
            with upstream_deadline(max(item.deadline for item in items)):
                reader = snapshot(self.readers.of(source), agents)
                for item in items:
                    if item.work.lost:
                        self._drop(item)
                        continue
                    try:
                        item.last = look(reader, item.what, item.wanted, self.settings.budget_cap_daily_usd,
                                         item.last)
                    except Exception as exc:  # no attempt is left waiting forever: it failed, recorded as such
                        log.exception("incident %s: its verification failed unexpectedly", item.what.incident.id)
                        item.last = VerifyResult(False, f"verification failed unexpectedly: {type(exc).__name__}: "
                                                 f"{str(exc)[:300]}", {}, {}, (item.last.polls if item.last else 0) + 1)
                        item.deadline = 0.0
                    if item.last.ok or time.time() >= item.deadline:
                        self._hand_back(item)
                        done += 1
        return done

    def _hand_back(self, item: Waiting) -> None:
        """Store the verdict in the incident and give its claim back: a worker finishes the attempt."""
        incident_id = item.work.claim.incident_id
        try:
            current = self.store.get(incident_id)
            if current is not None and current.verifying is not None:
                verdict = {**result_as_dict(item.last), "at": time.time()}
                self.store.update(incident_id, item.work.claim, verifying={**current.verifying, "verdict": verdict})
        except (LeaseLost, IncidentClosed):
            log.info("incident %s: no longer this receiver's to verify", incident_id)
        except Exception:  # the store failed: the claim's lease expires and the attempt is verified again
            log.exception("incident %s: its verdict could not be stored", incident_id)
            self._drop(item, release=False)
            return
        self._drop(item)

    def _drop(self, item: Waiting, release: bool = True) -> None:
        with self._lock:
            self._waiting.pop(item.work.claim.incident_id, None)
        self.pool.give_back(item.work, release=release)

    def run_until_done(self, incident_id: str) -> None:
        """Poll, in this thread, until INCIDENT_ID has its verdict (the tests, a receiver without workers)."""
        try:
            while self.waiting(incident_id):
                if self.poll() == 0 and self.waiting(incident_id):
                    with self._lock:
                        item = self._waiting.get(incident_id)
                    left = item.deadline - time.time() if item is not None else 0.0
                    # The last look lands on the deadline, not an interval past it.
                    if self.stop.wait(min(self.settings.verify_interval_seconds, max(0.0, left))):
                        self.release_all()
                        return
        except BaseException:  # this thread is going away: the claim goes back, the attempt is verified later
            with self._lock:
                item = self._waiting.get(incident_id)
            if item is not None:
                self._drop(item)
            raise

    def release_all(self) -> None:
        """At a stop: give every waiting claim back; each attempt is verified again after the restart."""
        with self._lock:
            items = list(self._waiting.values())
        for item in items:
            self._drop(item)

    def start(self) -> None:
        def loop() -> None:
            while not self.stop.wait(self.settings.verify_interval_seconds):
                try:
                    self.poll()
                except Exception:
                    log.exception("verification poll failed")
        self._thread = threading.Thread(target=loop, name="verifier", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()
