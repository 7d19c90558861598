"""How an incident ended, for the KPIs (pack section 13): each incident counted once, by what really happened."""
from __future__ import annotations

from typing import Protocol

from autonomy.vocabulary import Outcome

AUTO_RESOLVED, ESCALATED, SKIPPED = Outcome.AUTO_RESOLVED, Outcome.ESCALATED, Outcome.SKIPPED
SELF_RESOLVED, SELF_RESOLVED_AFTER_FAILURE = Outcome.SELF_RESOLVED, Outcome.SELF_RESOLVED_AFTER_FAILURE
OUTCOMES = tuple(Outcome)
# The auto-resolve share's denominator: incidents the layer handled. Skipped ones (silence, kill switch, canary,
# dry run) and those that healed before any attempt are counted on their own.
HANDLED = (AUTO_RESOLVED, ESCALATED, SELF_RESOLVED_AFTER_FAILURE)
# Counted when they happen (a verified recovery, an escalation), not again when the incident closes.
COUNTED_BEFORE_CLOSE = frozenset((AUTO_RESOLVED, ESCALATED))


class _Ending(Protocol):
    outcome: str | None
    attempts: int


def closing_outcome(incident: _Ending) -> str:
    """The outcome of an incident that closes now: kept if already decided, else how it healed."""
    if incident.outcome in (AUTO_RESOLVED, ESCALATED, SKIPPED, SELF_RESOLVED_AFTER_FAILURE):
        return incident.outcome
    return SELF_RESOLVED_AFTER_FAILURE if incident.attempts else SELF_RESOLVED
