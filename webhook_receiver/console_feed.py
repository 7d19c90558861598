"""The console's live feed: one thread per receiver tails the store's events (every receiver's), joins each with its
agent's tile as the ledger has it now, and hands them to every open stream; no stream reads the ledger itself."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Iterable

from autonomy.vocabulary import REASON_TEXT, IncidentState, TileState

from .agent_states import fleet_states
from .console_events import CLOSED, OUTCOME, STEP
from .store import IncidentStore, StoredEvent

log = logging.getLogger(__name__)

EVENT_PAGE = 500  # events read from the store at a time
RECENT = 2000  # events kept for streams that reconnect; older gaps are read from the store
CATCH_UP_MAX = 5000  # a stream further behind than this reloads its page (the page is the ledger's truth)
CATCH_UP_SECONDS = 2.0  # a stream resuming from an id this feed has not read yet waits this long for it
MANY_AGENTS = 20  # a batch naming more agents reads every open incident at once instead of each agent's
LABELS = {TileState.HEALTHY: "Healthy", TileState.RECOVERING: "Recovering", TileState.ESCALATED: "Escalated"}


@dataclass(frozen=True)
class FeedEvent:
    """One event as streams send it: SEQ orders this feed (and the store's ID, when it has one, resumes it)."""

    seq: int
    id: int | None
    kind: str
    data: dict

    def frame(self) -> str:
        """The event as server-sent events text."""
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.kind}\ndata: {json.dumps(self.data, separators=(',', ':'), default=str)}\n\n"


def tile(agent: str, state: tuple[str, str | None], incident, progress: dict | None) -> dict:
    """What an agent's tile shows: its state by text, why, and while a remediation runs, its playbook and step."""
    name, reason = state
    running = incident is not None and incident.state == IncidentState.REMEDIATING
    out = {"agent": agent, "state": str(name), "label": LABELS[name], "reason": reason,
           "reason_text": REASON_TEXT.get(reason, reason) if reason else None, "running": running,
           "playbook": incident.playbook if running else None, "step": None,
           "incident_id": incident.id if incident is not None else None}
    if running:
        if incident.verifying:
            out["step"] = "verifying recovery"
        elif progress and progress.get("incident_id") == incident.id:
            out["step"] = progress.get("step")
    return out


def tiles_of(agents: Iterable[str], incidents: list, leased: Iterable[str], progress: dict[str, dict]) -> dict[str, dict]:
    """The tiles of AGENTS from the open INCIDENTS (every one of theirs, others too) and the LEASED agents."""
    agents = sorted(set(agents))
    states = fleet_states(incidents, set(leased) & set(agents))
    own = {i.agent: i for i in incidents if i.agent in agents}
    return {a: tile(a, states.get(a, (TileState.HEALTHY, None)), own.get(a), progress.get(a)) for a in agents}


class TileReader:
    """Tiles of some agents, read from the ledger (their open incidents, the live leases) in one pass."""

    def __init__(self, store: IncidentStore):
        self.store = store

    def incidents_of(self, agents: Iterable[str]) -> list:
        agents = set(agents)
        if len(agents) > MANY_AGENTS:
            return [i for i in self.store.open_incidents() if agents & {i.agent, *i.claimants}]
        found: dict[str, object] = {}
        for agent in agents:
            for incident in (self.store.open_for(agent), *self.store.conflicts_of(agent)):
                if incident is not None:
                    found[incident.id] = incident
        return list(found.values())

    def tiles(self, agents: Iterable[str], progress: dict[str, dict]) -> dict[str, dict]:
        agents = set(agents)
        if not agents:
            return {}
        return tiles_of(agents, self.incidents_of(agents), self.store.leased_agents(), progress)

    def fleet(self) -> dict[str, tuple[str, str | None]]:
        return fleet_states(self.store.open_incidents(), set(self.store.leased_agents()))


class ConsoleFeed:
    """Tails the store every INTERVAL seconds (at once when this receiver wrote an event) and, every RECONCILE
    seconds, compares the fleet's tiles with the ledger: a tile changed by what no event told (another receiver's
    event not yet committed, an event the store refused) is sent then."""

    def __init__(self, store: IncidentStore, interval: float = 0.5, reconcile: float = 5.0,
                 max_agents: int = 10_000):
        self.store, self.reader = store, TileReader(store)
        self.interval, self.reconcile, self.max_agents = interval, reconcile, max_agents
        self._cond = threading.Condition()
        self._recent: deque[FeedEvent] = deque(maxlen=RECENT)
        self._seq = 0
        self._last_id = 0
        self._progress: OrderedDict[str, dict] = OrderedDict()  # agent -> its running attempt's step (bounded)
        self._progress_lock = threading.Lock()
        self._known: dict[str, tuple[str, str | None]] = {}
        self._unhealthy: dict[str, dict] = {}  # the tiles not Healthy, as last shown: every new stream starts with them
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    # -- the tailing thread -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._last_id = self.store.last_event_id()  # streams start from now; older events are history
        self._known = self.reader.fleet()
        self._learn(self.reader.tiles([a for a, (state, _) in self._known.items() if state != TileState.HEALTHY],
                                      self._progress))
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        next_reconcile = time.monotonic() + self.reconcile
        while not self._stop.is_set():
            try:
                while self.poll():
                    pass
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + self.reconcile
                    self.reconcile_tiles()
            except Exception:  # noqa: BLE001 - the store may be down for a while; the feed carries on after
                self.errors += 1
                log.warning("console feed: cannot read the store", exc_info=True)
            self._wake.wait(self.interval)
            self._wake.clear()  # before the next read: a wake during it is not lost

    def poll(self) -> bool:
        """Read the next page of stored events into the feed; whether a whole page came (more may wait)."""
        rows = self.store.events_after(self._last_id, EVENT_PAGE)
        if rows:
            self._publish(self.joined(rows), rows[-1].id)
        return len(rows) == EVENT_PAGE

    def joined(self, rows: list[StoredEvent], learn: bool = True) -> list[tuple[int | None, str, dict]]:
        """Each stored event with its agent's tile as the ledger has it now; LEARN: remember the steps they tell
        and the tiles they show (the tailing thread; a reconnecting stream's catch-up changes nothing)."""
        decoded = [(row, _body(row)) for row in rows]
        with self._progress_lock:  # only the tailing thread changes it; a catch-up copies it
            progress = self._progress if learn else OrderedDict(self._progress)
            for row, body in decoded:
                if row.agent and row.kind == STEP:
                    progress[row.agent] = body
                    progress.move_to_end(row.agent)
                    while len(progress) > self.max_agents:
                        progress.popitem(last=False)
                elif row.agent and row.kind in (OUTCOME, CLOSED):
                    progress.pop(row.agent, None)
        tiles = self.reader.tiles({row.agent for row, _ in decoded if row.agent}, progress)
        if learn:
            self._learn(tiles)
        return [(row.id, row.kind, {**body, "agent": row.agent, "ts": row.ts,
                                    **({"tile": tiles[row.agent]} if row.agent in tiles else {})})
                for row, body in decoded]

    def _learn(self, tiles: dict[str, dict]) -> None:
        with self._cond:
            for agent, shown in tiles.items():
                self._known[agent] = (shown["state"], shown["reason"])
                if shown["state"] == TileState.HEALTHY:
                    self._unhealthy.pop(agent, None)
                else:
                    self._unhealthy[agent] = shown

    def reconcile_tiles(self) -> None:
        """Send, as one event, the tiles that differ from the ledger's (no event of theirs reached this feed)."""
        now = self.reader.fleet()
        changed = {a for a in set(now) | set(self._known)
                   if now.get(a, (TileState.HEALTHY, None)) != self._known.get(a, (TileState.HEALTHY, None))}
        if changed:
            tiles = self.reader.tiles(changed, self._progress)
            self._learn(tiles)
            self._publish([(None, "tiles", {"tiles": [t for _, t in sorted(tiles.items())], "complete": False})])

    def snapshot(self) -> FeedEvent:
        """Every tile that is not Healthy, as this feed last showed it: what a stream (re)starting begins with, so
        that a page that missed a change (away, or an id-less tile event) shows the ledger's state again."""
        with self._cond:
            tiles = [t for _, t in sorted(self._unhealthy.items())]
        return FeedEvent(0, None, "tiles", {"tiles": tiles, "complete": True})

    def _publish(self, events: list[tuple[int | None, str, dict]], last_id: int | None = None) -> None:
        with self._cond:
            for event_id, kind, data in events:
                self._seq += 1
                self._recent.append(FeedEvent(self._seq, event_id, kind, data))
            if last_id is not None:
                self._last_id = last_id
            self._cond.notify_all()

    # -- what streams read --------------------------------------------------------------------------------------
    @property
    def last_id(self) -> int:
        """The newest stored event this feed has read (a page rendered now is as new as it)."""
        with self._cond:
            return self._last_id

    def progress(self) -> dict[str, dict]:
        with self._progress_lock:
            return dict(self._progress)

    def position(self) -> int:
        with self._cond:
            return self._seq

    def wait(self, after_seq: int, timeout: float) -> list[FeedEvent]:
        """The feed's events after AFTER_SEQ, waiting up to TIMEOUT seconds for one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq <= after_seq and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            return [e for e in self._recent if e.seq > after_seq]

    def resume(self, last_id: int) -> tuple[list[FeedEvent], int] | None:
        """What a stream that saw the stored event LAST_ID missed, and the feed position to go on from; None when
        it cannot be told (too far behind, or an id this store never gave): the stream should reload its page."""
        self.wake()  # another receiver's stream may have seen events this feed has not read yet
        deadline = time.monotonic() + CATCH_UP_SECONDS
        with self._cond:
            while self._last_id < last_id and not self._stop.is_set() and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            position, recent, newest = self._seq, list(self._recent), self._last_id
        if last_id > newest:
            return None
        stored = [e for e in recent if e.id is not None]
        if last_id == newest or (stored and stored[0].id <= last_id):
            return [e for e in stored if e.id > last_id], position
        missed: list[StoredEvent] = []
        while (after := missed[-1].id if missed else last_id) < newest:
            page = [row for row in self.store.events_after(after, EVENT_PAGE) if row.id <= newest]
            if not page:
                break
            missed += page
            if len(missed) > CATCH_UP_MAX:
                return None
        return [FeedEvent(0, i, k, d) for i, k, d in self.joined(missed, learn=False)], position


def _body(row: StoredEvent) -> dict:
    try:
        body = json.loads(row.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
