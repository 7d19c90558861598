"""Retention: the store's closed history older than AUTOREM_RETENTION_DAYS deleted in small batches, in a thread of
its own, a round every hour; never an open incident's. Every receiver sharing a store trims it: the store lets
trimmers run at once (store.IncidentStore.trim_history)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import fields
from typing import Callable

from ..receiver_metrics import ReceiverMetrics
from ..store import IncidentStore
from ..store.contract import TrimResult

log = logging.getLogger("autonomy.retention")
DAY_SECONDS = 86_400.0
BATCH = 500  # rows of each kind per transaction: the store is held for a few milliseconds, whatever the backlog
PAUSE_SECONDS = 0.1  # between batches, so a large backlog (retention just shortened) leaves the store to the webhook
# Not settings: an hour late is nothing against days of retention, and a minute after start keeps the first round
# out of the way of a receiver catching up on its queue.
ROUND_SECONDS = 3600.0
FIRST_ROUND_SECONDS = 60.0
KINDS = tuple(field.name for field in fields(TrimResult))  # autonomy_retention_deleted_total's kinds, events included


class RetentionTrimmer:
    """Rounds of trim_history until nothing older than the cutoff is left; a store error waits for the next round."""

    def __init__(self, store: IncidentStore, retention_days: float, metrics: ReceiverMetrics,
                 clock: Callable[[], float] = time.time, batch: int = BATCH, pause: float = PAUSE_SECONDS,
                 interval: float = ROUND_SECONDS, first_round: float = FIRST_ROUND_SECONDS):
        self.store, self.retention_days, self.metrics, self.clock = store, retention_days, metrics, clock
        self.batch, self.pause, self.interval, self.first_round = batch, pause, interval, first_round
        self._thread: threading.Thread | None = None
        for kind in KINDS:  # each kind at 0 from the start: its first deletion is an increase
            metrics.retention_deleted.labels(kind)

    def cutoff(self) -> float:
        """History from before this moment goes."""
        return self.clock() - self.retention_days * DAY_SECONDS

    def trim_round(self, stopping: threading.Event | None = None) -> TrimResult:
        """Trim a batch at a time until none is left (or STOPPING is set); what went. A store error propagates,
        after what was deleted before it is counted."""
        cutoff = self.cutoff()  # fixed for the round: rows coming of age meanwhile wait for the next one
        stopping = stopping or threading.Event()
        total = TrimResult()
        while True:
            step = self.store.trim_history(cutoff, self.batch)
            total = total + step
            for kind in KINDS:
                if getattr(step, kind):
                    self.metrics.retention_deleted.labels(kind).inc(getattr(step, kind))
            if step.finished(self.batch) or stopping.wait(self.pause):
                return total

    def run_round(self, stopping: threading.Event | None = None) -> TrimResult | None:
        """One round as the thread runs it: a failure is logged and counted, never raised; None then."""
        try:
            done = self.trim_round(stopping)
        except Exception:
            self.metrics.retention_failures.inc()
            log.exception("retention round failed (AUTOREM_RETENTION_DAYS=%g); the next round tries again in %gs",
                          self.retention_days, self.interval)
            return None
        if done != TrimResult():
            log.info("retention: deleted %d closed incidents, %d notifications, %d lineage entries, %d console events "
                     "older than %g days", done.incidents, done.notifications, done.lineage, done.events,
                     self.retention_days)
        return done

    def start(self, stopping: threading.Event) -> None:
        def loop() -> None:
            wait = self.first_round
            while not stopping.wait(wait):
                self.run_round(stopping)
                wait = self.interval
        self._thread = threading.Thread(target=loop, name="retention", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)
