"""What the operator console's live feed is told, written to the store by whoever decides it (the outcome recorder,
the attempts, the webhook, the switches): every receiver on the store tails the same events, in one order."""
from __future__ import annotations

import json
import logging
from typing import Iterable, Mapping

from autonomy.vocabulary import ESCALATION_REASONS, REASON_TEXT, LineageEvent

from .store import IncidentStore, StoreError

log = logging.getLogger(__name__)

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
    """Appends events to the store. Best effort: the ledger is the truth and the feed re-reads it, so an event the
    store refused is logged, never fatal to the decision that caused it."""

    def __init__(self, store: IncidentStore | None, escalate_to: str = "CEO"):
        self.store, self.escalate_to = store, escalate_to
        self.failures = 0
        self.listeners: list = []  # called after each append: the local feed wakes at once

    def publish(self, kind: str, agent: str | None, **fields: object) -> None:
        self.publish_many([(kind, agent, fields)])

    def publish_many(self, events: Iterable[tuple[str, str | None, Mapping[str, object]]]) -> None:
        rows = [(kind, agent, json.dumps(fields, separators=(",", ":"), default=str)) for kind, agent, fields in events]
        if not rows or self.store is None:
            return
        try:
            self.store.append_events(rows)
        except (StoreError, ValueError) as exc:
            self.failures += len(rows)
            log.warning("console events not stored (%d): %s", len(rows), exc)
            return
        for listener in self.listeners:
            listener()

    def step(self, incident, playbook, attempt: int, index: int) -> None:
        """The attempt's step INDEX (of PLAYBOOK) begins: the tile's spinner says which."""
        self.publish(STEP, incident.agent, incident_id=incident.id, playbook=playbook.name, attempt=attempt,
                     step=playbook.steps[index].action, index=index + 1, steps=len(playbook.steps))

    def outcome(self, entry: Mapping[str, object]) -> None:
        agent = entry.get("agent")
        self.publish(OUTCOME, agent if isinstance(agent, str) else None, **outcome_fields(entry, self.escalate_to))
