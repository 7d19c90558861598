"""Workers that claim incidents from the store with a lease, run them, and give them back; a lease keeper renews
the leases of what they hold. Nothing about who holds what lives only in this process."""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

from ..receiver_metrics import ReceiverMetrics
from ..store import Claim, IncidentStore

log = logging.getLogger("autonomy.workers")
RENEW_BATCH = 500  # leases renewed per store transaction: a storm's thousand claims in two, not a thousand
IDLE_POLL_SECONDS = 1.0  # an idle worker looks again this often: retry times come, leases of dead workers expire


class Deferred(Exception):
    """The incident waits for another remediation or incident to end; RETRY_AT, if given, is when to look again
    (otherwise the store holds it back until what it waits for is released)."""

    def __init__(self, why: str, retry_at: float | None = None):
        super().__init__(why)
        self.retry_at = retry_at


@dataclass
class Work:
    """A claimed incident in a worker's hands: the claim (renewed, or extended to more agents, as it runs),
    whether its lease was lost to another worker, and when to look at it again once given back; `handed_over`
    when the verifier keeps the claim until its verdict, `continues` when its next attempt is due at `retry_at`."""

    claim: Claim
    lost: bool = False
    retry_at: float | None = None
    handed_over: bool = False
    continues: bool = False


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WorkerPool:
    """RUN(work) for every incident a worker claims; the claim is released after, whatever happened."""

    def __init__(self, store: IncidentStore, run: Callable[[Work], None], metrics: ReceiverMetrics,
                 lease_seconds: float, stopping: threading.Event, owner: str | None = None,
                 idle_poll_seconds: float = IDLE_POLL_SECONDS):
        self.store, self.run, self.metrics = store, run, metrics
        self.lease_seconds, self.idle_poll_seconds = lease_seconds, min(idle_poll_seconds, lease_seconds / 3)
        self.owner = owner or default_owner()
        self._held: dict[str, Work] = {}  # token -> work: what the lease keeper renews
        self._held_lock = threading.Lock()
        self._wake = threading.Condition()
        self._signals = 0
        self.stopping = stopping
        self._workers_done = threading.Event()  # the lease keeper renews until every worker has stopped
        self._threads: list[threading.Thread] = []
        self._keeper: threading.Thread | None = None

    def wake(self, count: int = 1) -> None:
        """COUNT new incidents may be claimable: wake as many idle workers."""
        with self._wake:
            # Capped: a storm of thousands must not make idle workers spin through as many empty claims.
            self._signals = min(self._signals + count, max(1, len(self._threads)))
            self._wake.notify(count)

    def wake_all(self) -> None:
        """Agents were freed: whatever waited for them may be claimable now."""
        with self._wake:
            self._signals = max(1, len(self._threads))
            self._wake.notify_all()

    def run_one(self, incident_id: str | None = None) -> Work | None:
        """Claim the next claimable incident (or INCIDENT_ID), run it, give it back (unless the verifier keeps
        it); the work done, or None if nothing was claimable."""
        claim = self.store.claim(self.owner, self.lease_seconds, incident_id)
        if claim is None:
            return None
        work = Work(claim)
        with self._held_lock:
            self._held[claim.token] = work
        self.metrics.in_flight.inc()
        try:
            self.run(work)
        except Exception:  # one bad incident must not take a worker down
            log.exception("incident %s failed unexpectedly", claim.incident_id)
        finally:
            self.metrics.in_flight.dec()
            if not work.handed_over:
                # No one is woken: this worker claims again at once, and takes whatever the release unblocked.
                self.give_back(work, wake=False)
        return work

    def give_back(self, work: Work, release: bool = True, wake: bool = True) -> None:
        """Stop renewing WORK's lease and release its claim (RELEASE false: let the lease expire)."""
        with self._held_lock:
            self._held.pop(work.claim.token, None)
        if not release:
            return
        try:
            self.store.release(work.claim, work.retry_at)
        except Exception:
            log.exception("incident %s: its claim could not be released; its lease expires instead",
                          work.claim.incident_id)
            return
        if wake:
            self.wake(1)

    def renew_all(self) -> None:
        """Extend the lease of everything held, a batch per transaction; a claim taken over is marked lost."""
        with self._held_lock:
            held = list(self._held.values())
        for start in range(0, len(held), RENEW_BATCH):
            batch = held[start:start + RENEW_BATCH]
            claims = [w.claim for w in batch]
            try:
                renewed = self.store.renew_many(claims, self.lease_seconds)
            except Exception:
                log.exception("lease renewal of %d incidents failed", len(batch))
                continue
            for work, old, claim in zip(batch, claims, renewed):
                if claim is None:
                    log.warning("incident %s: its lease was taken over; this worker stops at its next step",
                                work.claim.incident_id)
                    work.lost = True
                elif work.claim is old:  # else its worker extended it meanwhile: that claim is the newer one
                    work.claim = claim

    def start(self, workers: int) -> None:
        for n in range(workers):
            self._threads.append(self._spawn(self._work_loop, f"remediation-{n}"))
        self._keeper = self._spawn(self._keep_leases, "lease-keeper")

    @staticmethod
    def _spawn(target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _work_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                ran = self.run_one()
            except Exception:  # the store itself failed: wait, then try again
                log.exception("claiming work failed")
                ran = None
            if ran is None:
                with self._wake:
                    if not self._signals and not self.stopping.is_set():
                        self._wake.wait(self.idle_poll_seconds)
                    self._signals = max(0, self._signals - 1)

    def _keep_leases(self) -> None:
        # Not until `stopping`: a worker finishing its step during the stop still holds its incident, and a lease
        # left to expire under it would let another receiver act on the same agent at the same time.
        while not self._workers_done.wait(self.lease_seconds / 3):
            self.renew_all()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.wake_all()
        for thread in self._threads:
            thread.join(timeout=timeout)
        if any(t.is_alive() for t in self._threads):
            log.warning("a worker is still running its step: its lease stays renewed until it ends")
            return
        self._workers_done.set()
        if self._keeper is not None:
            self._keeper.join(timeout=timeout)

    def alive(self) -> bool:
        threads = [*self._threads, *([self._keeper] if self._keeper else [])]
        return bool(threads) and all(t.is_alive() for t in threads)
