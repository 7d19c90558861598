"""Alerts for Alertmanager posted from a thread of their own, so no request waits on Alertmanager."""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterable

from ..escalation import post_escalated_alert
from ..upstreams import AlertmanagerApi

log = logging.getLogger("autonomy.outbox")
# An open escalation's AutonomyEscalated is posted again once a minute, as Prometheus re-sends its firing alerts
# (resend_delay): Alertmanager keeps alerts in memory only, so one restarted has it back within the minute; it
# lives ALERT_LIFETIME past each post, so Alertmanager never needs it more often.
REPOST_AFTER_SECONDS = 60.0


class PostTimes:
    """When each open escalation's AutonomyEscalated was last posted, so it is posted again only when due; as
    many entries as open escalations (forgotten as they close). After a restart every one is due once."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._posted: dict[str, float] = {}
        self._lock = threading.Lock()

    def posted(self, incident_ids: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            self._posted.update((i, now) for i in incident_ids)

    def due(self, incident_id: str) -> bool:
        with self._lock:
            last = self._posted.get(incident_id)
        return last is None or self.clock() - last >= REPOST_AFTER_SECONDS

    def keep_only(self, incident_ids: Iterable[str]) -> None:
        keep = set(incident_ids)
        with self._lock:
            for gone in [i for i in self._posted if i not in keep]:
                del self._posted[gone]


class AlertOutbox:
    """A bounded queue of alerts and the thread that posts them. When full, an alert is dropped and counted:
    every alert posted carries an endsAt, so Alertmanager resolves a lost one by itself within the hour."""

    def __init__(self, alertmanager: Callable[[], AlertmanagerApi | None], on_dropped: Callable[[], None],
                 capacity: int = 1000):
        self.alertmanager, self.on_dropped = alertmanager, on_dropped
        self._queue: queue.Queue[tuple[dict, Callable[[], bool]] | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None

    def put(self, alert: dict, still_due: Callable[[], bool] = lambda: True) -> None:
        """Queue ALERT; STILL_DUE is asked just before it is posted (what happened since may make it wrong)."""
        if self.alertmanager() is None:
            return
        try:
            self._queue.put_nowait((alert, still_due))
        except queue.Full:
            log.warning("alert outbox full: %s for %s dropped", alert["labels"].get("alertname"),
                        alert["labels"].get("agent"))
            self.on_dropped()

    def drain(self) -> int:
        """Post everything queued now, in this thread (tests, and the final flush at stop); how many were posted."""
        posted = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return posted
            if item is not None:
                posted += self._post(*item)

    def _post(self, alert: dict, still_due: Callable[[], bool]) -> bool:
        alertmanager = self.alertmanager()
        if alertmanager is None:
            return False
        try:
            if not still_due():
                log.info("%s for %s not posted: superseded", alert["labels"].get("alertname"),
                         alert["labels"].get("agent"))
                return False
        except Exception:  # the store cannot say: post it, as queued
            log.exception("alert outbox: could not check whether an alert is still due")
        problem = post_escalated_alert(alertmanager, alert)
        if problem:
            log.warning("%s for %s not posted: %s", alert["labels"].get("alertname"), alert["labels"].get("agent"),
                        problem)
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-outbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._post(*item)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout=timeout)
            self._thread = None
        self.drain()  # what was queued behind the thread's last one (a webhook answered during the stop)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()
