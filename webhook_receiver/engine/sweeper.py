"""The sweeper: closes incidents whose alerts are gone (muted after escalation, or a lost resolved notification),
and keeps each open escalation's AutonomyEscalated alive in Alertmanager."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from autonomy.vocabulary import IncidentState, Source

from ..classifier import CLASSES
from ..escalation import escalated_alert, post_escalated_alert
from ..outcomes import closing_outcome
from ..playbooks import PlaybookSet
from ..store import IncidentClosed, IncidentStore
from ..upstreams import UpstreamError
from .fleet_readers import FleetReaders, Upstreams
from .outcome_recorder import OutcomeRecorder

log = logging.getLogger("autonomy.sweeper")
# States in which an incident waits for its alerts to resolve: nothing runs for it now.
WAITING = (IncidentState.ESCALATED, IncidentState.RECOVERED, IncidentState.SKIPPED)


class Sweeper:
    """One pass every AUTOREM_SWEEP_SECONDS, in a thread of its own."""

    def __init__(self, store: IncidentStore, readers: FleetReaders, recorder: OutcomeRecorder, playbooks: PlaybookSet,
                 upstreams: Callable[[], Upstreams], lineage_url: Callable[[str], str], interval: float):
        self.store, self.readers, self.recorder, self.playbooks = store, readers, recorder, playbooks
        self.upstreams, self.lineage_url, self.interval = upstreams, lineage_url, interval
        self._thread: threading.Thread | None = None

    def sweep(self) -> None:
        through = {source: self.readers.of(source).through_alertmanager for source in Source}
        waiting = [i for i in self.store.open_incidents() if through.get(i.source) and i.state in WAITING]
        if not waiting:
            return
        up = self.upstreams()
        classes = "|".join(CLASSES)
        try:  # one query for the whole fleet, not one per incident: a storm leaves thousands waiting
            rows = up.prometheus.query(f'ALERTS{{alertstate="firing", autonomy_class=~"{classes}"}}')
        except UpstreamError:
            return
        firing = {row.get("metric", {}).get("agent") for row in rows}
        for incident in waiting:
            if not firing & set(incident.agents):
                try:
                    done = self.store.update(incident.id, state=IncidentState.CLOSED, closed_at=time.time(),
                                             outcome=closing_outcome(incident),
                                             reason=(incident.reason or "") + "; alerts resolved")
                except IncidentClosed:  # a resolved notification closed it since the list was read
                    continue
                self.recorder.closed([done])
            elif incident.state == IncidentState.ESCALATED and up.alertmanager is not None:
                current = self.store.get(incident.id)  # closed since the list was read: firing again would be false
                if current is None or current.state != IncidentState.ESCALATED:
                    continue
                post_escalated_alert(up.alertmanager, escalated_alert(
                    current, current.reason or "", self.lineage_url(current.agent), self.playbooks.escalate_to))

    def start(self, stopping: threading.Event) -> None:
        def loop() -> None:
            while not stopping.wait(self.interval):
                try:
                    self.sweep()
                except Exception:
                    log.exception("sweep failed")
        self._thread = threading.Thread(target=loop, name="sweeper", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)
