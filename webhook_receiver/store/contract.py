"""What the receiver needs from its incident store: one Protocol every backend implements (SQLite here, a shared
database next), and the values it hands back. tests/test_store_contract.py runs one suite against each."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol, Sequence

from ..data_dir import DataDirError
from ..incident import Incident
from ..notification import AgentNotification
from ..rollout import Rollout


@dataclass(frozen=True)
class IngestResult:
    """What a notification did: incidents to run, duplicates absorbed, incidents closed; `refused` when the
    work queue was full (nothing stored)."""

    notification_id: int
    to_run: tuple[str, ...] = ()
    opened: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    closed: tuple[Incident, ...] = ()
    refused: bool = False


@dataclass(frozen=True)
class Claim:
    """A worker's exclusive hold on an incident and on each of its agents, until `expires_at` unless renewed.

    `token` fences its holder: once the lease expired and another worker took it, the old holder's writes
    are refused (LeaseLost)."""

    incident: Incident
    owner: str
    token: str
    agents: tuple[str, ...]
    expires_at: float

    @property
    def incident_id(self) -> str:
        return self.incident.id


@dataclass(frozen=True)
class KillSwitch:
    """The kill switch as stored: on unless someone switched it off (with a reason, at a time)."""

    enabled: bool = True
    reason: str | None = None
    changed_at: float | None = None


@dataclass(frozen=True)
class StoredNotification:
    """A notification as received and stored, before anything was decided from it."""

    id: int
    received_at: float
    source: str
    body: str


@dataclass(frozen=True)
class TrimResult:
    """What one trim of the history deleted, of each kind (retention: engine/retention.py)."""

    notifications: int = 0
    incidents: int = 0
    lineage: int = 0
    events: int = 0

    def __add__(self, other: TrimResult) -> TrimResult:
        return TrimResult(self.notifications + other.notifications, self.incidents + other.incidents,
                          self.lineage + other.lineage, self.events + other.events)

    def finished(self, batch: int) -> bool:
        """Fewer than BATCH of every kind went: nothing older is left to trim (or another trimmer holds it)."""
        return max(self.notifications, self.incidents, self.lineage, self.events) < batch


@dataclass(frozen=True)
class StoredLineage:
    """A lineage entry as stored: its id (the store's order, the paging cursor) and its line exactly as written to
    the lineage file (JSON, without the newline)."""

    id: int
    line: str


@dataclass(frozen=True)
class StoredLineagePage:
    """Lineage entries newest first; `next_cursor` (an id: `before` of the next page) continues with older ones,
    None when no older entry matches."""

    entries: list[StoredLineage]
    next_cursor: int | None


@dataclass(frozen=True)
class StoredEvent:
    """An event of the operator console's live feed as stored: its id (the SSE event id, one order for every receiver
    on the store), when it was stored, its kind, the agent it is about (None: of no one agent) and its body (JSON)."""

    id: int
    ts: float
    kind: str
    agent: str | None
    body: str


def check_trim(cutoff: float, batch: int) -> None:
    """Refuse a cutoff or batch that cannot be meant (ValueError naming it)."""
    if not isinstance(cutoff, (int, float)) or not math.isfinite(cutoff):
        raise ValueError(f"trim_history: cutoff {cutoff!r} is not a finite time")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"trim_history: batch {batch!r} is not a whole number of at least 1")


EVENT_KIND_MAX, EVENT_AGENT_MAX, EVENT_BODY_MAX = 64, 256, 65_536  # characters


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_events(events: Sequence[tuple[str, str | None, str]]) -> list[tuple[str, str | None, str]]:
    """EVENTS as rows to insert, or ValueError naming the first event (its index) and field that cannot be stored."""
    rows = []
    for index, event in enumerate(events):
        try:
            kind, agent, body = event
        except (TypeError, ValueError):
            raise ValueError(f"append_events: event {index} is not a (kind, agent, body) triple") from None
        if not isinstance(kind, str) or not 0 < len(kind) <= EVENT_KIND_MAX:
            raise ValueError(f"append_events: event {index}: kind {_shown(kind)} is not a non-empty text of at "
                             f"most {EVENT_KIND_MAX} characters")
        if agent is not None and (not isinstance(agent, str) or len(agent) > EVENT_AGENT_MAX):
            raise ValueError(f"append_events: event {index}: agent {_shown(agent)} is neither None nor a text "
                             f"of at most {EVENT_AGENT_MAX} characters")
        if not isinstance(body, str):
            raise ValueError(f"append_events: event {index}: body is a {type(body).__name__}, not a text (JSON)")
        if len(body) > EVENT_BODY_MAX:
            raise ValueError(f"append_events: event {index}: body is {len(body)} characters long, more than "
                             f"{EVENT_BODY_MAX}")
        # PostgreSQL's text holds no NUL (JSON text has none: it escapes it), so neither store does.
        rows.append(tuple(None if v is None else v.replace("\x00", "\ufffd") for v in (kind, agent, body)))
    return rows


class IncidentClosed(RuntimeError):
    """A change was asked of an incident that is already closed."""


class LeaseLost(RuntimeError):
    """A write under a claim whose lease another worker has taken over since (it expired)."""


class StoreError(DataDirError):
    """The store cannot be used (newer schema, not a ledger, corrupt, read-only); the message says what and
    what to do."""


class IncidentStore(Protocol):
    """Every notification recorded, one open incident per agent (and per conflict), work claimed with leases."""

    def ingest(self, source: str, body: str, per_agent: Iterable[AgentNotification], max_queued: int | None = None,
               keep_unchanged: bool = True) -> IngestResult:
        """Record a notification and open, update or close incidents in one transaction. Refused (nothing
        stored) when it would queue work beyond MAX_QUEUED incidents waiting for a worker, unless none wait.
        Without KEEP_UNCHANGED a notification that changes no incident is not stored (notification_id 0)."""

    def get(self, incident_id: str) -> Incident | None: ...

    def open_for(self, agent: str) -> Incident | None:
        """The agent's own open incident (not the conflicts it is a claimant of)."""

    def open_incidents(self) -> list[Incident]: ...

    def open_count(self) -> int:
        """How many agents have an open incident of their own."""

    def conflicts_of(self, agent: str) -> list[Incident]:
        """The open conflict incidents AGENT is a claimant of."""

    def open_conflict_keys(self) -> frozenset[str]: ...

    def list(self, agent: str | None = None, state: str | None = None, limit: int = 100,
             before: tuple[float, str] | None = None) -> list[Incident]:
        """Incidents newest first (ties by id), from before the (opened_at, id) cursor BEFORE; AGENT matches its
        own and the conflicts it claims."""

    def notifications(self, after: int = 0, limit: int = 100) -> list[StoredNotification]:
        """Stored notifications oldest first, those with an id above AFTER."""

    def notification_count(self) -> int: ...

    def append_lineage(self, entry: Mapping[str, object], line: str) -> int:
        """Store LINE, the lineage file's line for ENTRY (JSON, without its newline), with what it is read by: its
        time (ENTRY's ISO `ts`; ValueError if it is not one), agent, incident_id and event. Durable when it
        returns; its id, above every id stored before. StoreError naming the store if it cannot be written."""

    def lineage_page(self, limit: int, before: int | None = None, agent: str | None = None,
                     incident_id: str | None = None, since: float | None = None) -> StoredLineagePage:
        """Up to LIMIT entries newest first (by id) with an id below BEFORE, of AGENT, of INCIDENT_ID, stamped at
        or after SINCE (epoch seconds); each a few index reads, however long the history."""

    def lineage_after(self, after: int = 0, limit: int = 1000) -> list[StoredLineage]:
        """Up to LIMIT entries oldest first with an id above AFTER (an export pages through them all)."""

    def append_events(self, events: Sequence[tuple[str, str | None, str]]) -> list[int]:
        """Store every (kind, agent, body) of EVENTS in one transaction, stamped with the store's clock; their ids in
        order, each above every id stored before ([] and no transaction for none). ValueError naming the index and
        field for a kind that is not a non-empty str of at most 64 characters, an agent neither None nor a str of at
        most 256, a body not a str of at most 65,536 (nothing stored then). StoreError naming the store if it cannot
        be written."""

    def events_after(self, after: int = 0, limit: int = 500) -> list[StoredEvent]:
        """Up to LIMIT events oldest first with an id above AFTER (a range read of the primary key)."""

    def last_event_id(self) -> int:
        """The newest event's id, 0 if there is none."""

    def update(self, incident_id: str, lease: Claim | None = None, **changes: object) -> Incident:
        """Change an incident durably; IncidentClosed if it is closed, KeyError if unknown, LeaseLost if LEASE
        is given and no longer held."""

    def claim(self, owner: str, lease_seconds: float, incident_id: str | None = None) -> Claim | None:
        """Take the oldest runnable incident (or INCIDENT_ID) that no live lease holds, whose agents no other
        claim holds, whose retry time has come and, for an agent's own incident, none of whose agents is a
        claimant of a runnable conflict; None if there is none."""

    def extend(self, claim: Claim, agents: Iterable[str]) -> Claim | None:
        """CLAIM holding AGENTS too, or None (and nothing taken) if another claim holds one of them."""

    def renew(self, claim: Claim, lease_seconds: float) -> Claim | None:
        """CLAIM with its lease extended, or None if it was lost (expired and taken over)."""

    def renew_many(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim | None]:
        """`renew` of every one of CLAIMS in one transaction, answered in their order."""

    def release(self, claim: Claim, retry_at: float | None = None) -> None:
        """Give the incident and its agents back; RETRY_AT keeps the incident from being claimed before then."""

    def queued_count(self) -> int:
        """Runnable incidents no live lease holds: the work waiting for a worker."""

    def leased_agents(self) -> frozenset[str]:
        """Agents a live claim holds: a remediation of them is running."""

    def kill_switch(self) -> KillSwitch: ...

    def set_kill_switch(self, enabled: bool, reason: str | None) -> KillSwitch: ...

    def rollout(self) -> Rollout | None:
        """The staged rollout as last set, None if it never was (AUTOREM_CANARY_AGENTS is its initial value)."""

    def set_rollout(self, rollout: Rollout) -> Rollout:
        """Keep ROLLOUT durably, as computed by webhook_receiver.rollout; the gates read it on every attempt."""

    def trim_history(self, cutoff: float, batch: int = 500) -> TrimResult:
        """Delete, oldest first, at most BATCH of each kind, each kind in a short transaction of its own: closed
        incidents (with their agents' rows) closed before CUTOFF; notifications received before CUTOFF and before
        the oldest open incident opened; lineage entries older than CUTOFF that are not an open incident's; console
        events stored before CUTOFF. Never an open incident or its notifications or lineage. Call again until
        `finished(batch)`; several trimmers may run at once."""

    def close(self) -> None: ...
