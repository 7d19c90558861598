"""What the operator console's live feed is told, written to the store by whoever decides it (the outcome recorder,
the attempts, the webhook, the switches): every receiver on the store tails the same events, in one order."""
from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Iterable, Mapping

from autonomy.vocabulary import ESCALATION_REASONS, REASON_TEXT, LineageEvent

from .store import IncidentStore, StoreError

log = logging.getLogger(__name__)
QUEUE_CAPACITY = 10_000  # events waiting for the writer; beyond, dropped and counted (the tiles stay true)
BATCH = 500  # events stored in one transaction

# Event kinds: an incident closed, a step of an attempt began, a decision was recorded (its lineage
# line), a switch (kill switch, rollout) changed. An incident that opened shows when the feed next compares the
# tiles with the ledger (console_feed.py): the webhook's hot path writes nothing more for the console.
CLOSED, STEP, OUTCOME, SWITCHES = "closed", "step", "outcome", "switches"
KINDS = (CLOSED, STEP, OUTCOME, SWITCHES)


def toast_of(entry: Mapping[str, object], escalate_to: str = "CEO") -> str | None:
    """The pack's toast (section 9) for a lineage ENTRY, or None: only a verified recovery says "Resolved"."""
    event = entry.get("event")
    if event == LineageEvent.AUTO_REMEDIATION and entry.get("ok") is True and entry.get("playbook"):
        return f"Resolved by CoS: {entry['playbook']}"
    if event == LineageEvent.ESCALATION:
        reason = ESCALATION_REASONS.get(str(entry.get("reason")))
        # REASON_TEXT's words in brackets: "Escalated to CEO (attempts exhausted)" for attempts exhausted.
        words = REASON_TEXT[reason].partition("(")[2].rstrip(")") if reason else str(entry.get("reason") or "")
        return f"Escalated to {escalate_to} ({words})" if words else f"Escalated to {escalate_to}"
    return None


def outcome_fields(entry: Mapping[str, object], escalate_to: str = "CEO") -> dict:
    """What the feed says of a decision: enough for a toast and a tile, never the entry's metrics or payload."""
    fields = {key: entry.get(key) for key in ("event", "ok", "playbook", "attempt", "incident_id", "gate")
              if entry.get(key) is not None}
    toast = toast_of(entry, escalate_to)
    if toast:
        fields["toast"] = toast
    return fields


class EventWriter:
    """Hands events to one background thread that appends them to the store in batches: no remediation step and no
    webhook waits for the console. Best effort: the ledger is the truth and the feed compares its tiles with it, so
    an event the queue had no room for, or the store refused, is counted and logged, never fatal to its decision."""

    def __init__(self, store: IncidentStore | None, escalate_to: str = "CEO", capacity: int = QUEUE_CAPACITY):
        self.store, self.escalate_to = store, escalate_to
        self.dropped = 0  # events not stored: the queue was full, or the store refused them
        self.listeners: list = []  # called after each batch is stored: the local feed reads it at once
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def publish(self, kind: str, agent: str | None, **fields: object) -> None:
        self.publish_many([(kind, agent, fields)])

    def publish_many(self, events: Iterable[tuple[str, str | None, Mapping[str, object]]]) -> None:
        if self.store is None or self._closed:
            return
        rows = [(kind, agent, json.dumps(fields, separators=(",", ":"), default=str)) for kind, agent, fields in events]
        self._start()
        for row in rows:
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._count_dropped(1, "the queue is full")

    def _count_dropped(self, count: int, why: str) -> None:
        with self._lock:
            self.dropped += count
        log.warning("console events not stored (%d): %s", count, why)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._write, name="console-events", daemon=True)
                self._thread.start()

    def _write(self) -> None:
        while True:
            row = self._queue.get()
            if row is None:
                self._queue.task_done()
                return
            rows = [row]
            while len(rows) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # seen again after this batch
                    self._queue.task_done()
                    break
                rows.append(more)
            try:
                self.store.append_events(rows)
            except (StoreError, ValueError) as exc:
                self._count_dropped(len(rows), str(exc))
            else:
                for listener in self.listeners:
                    listener()
            finally:
                for _ in rows:
                    self._queue.task_done()

    def flush(self) -> None:
        """Wait until every event published so far is stored (or dropped)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Store what is queued, then stop the thread."""
        self._closed = True
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=10)
            except queue.Full:
                return
            self._thread.join(timeout=10)

    def step(self, incident, playbook, attempt: int, index: int) -> None:
        """The attempt's step INDEX (of PLAYBOOK) begins: the tile's spinner says which."""
        self.publish(STEP, incident.agent, incident_id=incident.id, playbook=playbook.name, attempt=attempt,
                     step=playbook.steps[index].action, index=index + 1, steps=len(playbook.steps))

    def outcome(self, entry: Mapping[str, object]) -> None:
        agent = entry.get("agent")
        self.publish(OUTCOME, agent if isinstance(agent, str) else None, **outcome_fields(entry, self.escalate_to))
