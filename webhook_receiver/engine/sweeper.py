"""The sweeper: closes incidents whose alerts are gone (muted after escalation, or a lost resolved notification),
as Prometheus says (or Grafana, for its own alerts), and keeps each open escalation's AutonomyEscalated alive in
Alertmanager."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from autonomy.vocabulary import IncidentState, Source

from ..classifier import CLASSES
from ..escalation import escalated_alert, post_escalated_alerts
from ..outcomes import closing_outcome
from ..playbooks import PlaybookSet
from ..store import IncidentClosed, IncidentStore
from ..upstreams import AlertmanagerApi, UpstreamError
from .alert_outbox import PostTimes
from .fleet_readers import FleetReaders, Upstreams
from .outcome_recorder import OutcomeRecorder

log = logging.getLogger("autonomy.sweeper")
# States in which an incident waits for its alerts to resolve: nothing runs for it now.
WAITING = (IncidentState.ESCALATED, IncidentState.RECOVERED, IncidentState.SKIPPED)
POST_BATCH = 500  # alerts per request to Alertmanager: one request of 500 costs about what a few single ones do


def _firing(up: Upstreams, sources: set[str]) -> dict[str, set[str] | None]:
    """The agents with a firing remediable alert, per source, each asked once for the whole fleet (a storm leaves
    thousands waiting): Prometheus's ALERTS for Alertmanager's incidents. None for Grafana's: its resolved
    notification alone closes them. A source whose upstream cannot be asked is left out."""
    firing: dict[str, set[str] | None] = {}
    if Source.ALERTMANAGER in sources:
        classes = "|".join(CLASSES)
        try:
            rows = up.prometheus.query(f'ALERTS{{alertstate="firing", autonomy_class=~"{classes}"}}')
            firing[Source.ALERTMANAGER] = {row.get("metric", {}).get("agent") for row in rows}
        except UpstreamError:
            pass
    if Source.GRAFANA in sources:
        # Never closed by absence: a token that cannot see a rule's organization or folder is answered with
        # nothing, so only Grafana's resolved notification closes its incidents.
        firing[Source.GRAFANA] = None
    return firing


class Sweeper:
    """One pass every AUTOREM_SWEEP_SECONDS, in a thread of its own."""

    def __init__(self, store: IncidentStore, readers: FleetReaders, recorder: OutcomeRecorder, playbooks: PlaybookSet,
                 upstreams: Callable[[], Upstreams], lineage_url: Callable[[str], str], interval: float,
                 post_times: PostTimes):
        self.store, self.readers, self.recorder, self.playbooks = store, readers, recorder, playbooks
        self.upstreams, self.lineage_url, self.interval = upstreams, lineage_url, interval
        self.post_times = post_times
        self._thread: threading.Thread | None = None

    def sweep(self) -> None:
        through = {source: self.readers.of(source).through_alertmanager for source in Source}
        waiting = [i for i in self.store.open_incidents() if through.get(i.source) and i.state in WAITING]
        self.post_times.keep_only(i.id for i in waiting if i.state == IncidentState.ESCALATED)
        if not waiting:
            return
        up = self.upstreams()
        firing = _firing(up, {i.source for i in waiting})
        due = []
        for incident in waiting:
            if incident.source not in firing:  # its upstream cannot be asked now: nothing changes for it
                continue
            agents = firing[incident.source]
            if agents is not None and not agents & set(incident.agents):
                try:
                    done = self.store.update(incident.id, state=IncidentState.CLOSED, closed_at=time.time(),
                                             outcome=closing_outcome(incident),
                                             reason=(incident.reason or "") + "; alerts resolved")
                except IncidentClosed:  # a resolved notification closed it since the list was read
                    continue
                self.recorder.closed([done])
            elif incident.state == IncidentState.ESCALATED and self.post_times.due(incident.id):
                due.append(incident.id)
        if up.alertmanager is not None:
            self._repost(up.alertmanager, due)

    def _repost(self, alertmanager: AlertmanagerApi, due: list[str]) -> None:
        """Keep the due escalations' AutonomyEscalated active, many alerts per request."""
        for start in range(0, len(due), POST_BATCH):
            alerts, ids = [], []
            for incident_id in due[start:start + POST_BATCH]:
                current = self.store.get(incident_id)  # closed since the list was read: firing again would be false
                if current is None or current.state != IncidentState.ESCALATED:
                    continue
                alerts.append(escalated_alert(current, current.reason or "", self.lineage_url(current.agent),
                                              self.playbooks.escalate_to))
                ids.append(incident_id)
            if not alerts:
                continue
            problem = post_escalated_alerts(alertmanager, alerts)
            if problem:  # due again at the next sweep; the alerts posted before live for an hour
                log.warning("%d AutonomyEscalated alerts not re-posted: %s", len(alerts), problem)
                return
            self.post_times.posted(ids)

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
