"""An incident and what a notification does to it: a pure transition function, the ledger's state machine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from autonomy.signal_contract import parse_timestamp
from autonomy.vocabulary import GATE_REASONS, RUNNABLE_STATES, IncidentState, StateReason

from .outcomes import closing_outcome

STATES = tuple(IncidentState)
# States in which a repeated firing notification changes nothing (recovered and skipped may reopen).
QUIET_STATES = frozenset((IncidentState.OPEN, IncidentState.REMEDIATING, IncidentState.ESCALATED))
# Holds a new notification may have lifted (a silence expired, Alertmanager or Grafana came back, Grafana's API set
# since a restart, a fresh sample, the agent's conflict settled). The kill switch resumes its own incidents when
# switched on, the staged rollout those a widening admits; dry run changes only with a restart.
RECONSIDERED_REASONS = frozenset((StateReason.SILENCED, StateReason.ALERTMANAGER_UNREACHABLE, StateReason.SUPPRESSED,
                                  StateReason.STALE_EVIDENCE, StateReason.CONFLICT_ESCALATED,
                                  StateReason.GRAFANA_UNREACHABLE, StateReason.GRAFANA_UNCONFIGURED))


class AlertRef(NamedTuple):
    """One alert of a notification, as the ledger keeps it (a tuple: built and compared in C on the hot path)."""

    fingerprint: str
    status: str
    labels: dict
    starts_at: str = ""


@dataclass(frozen=True)
class Incident:
    """An agent's problem (or a conflict between agents) from its first alert or signal until it is closed."""

    id: str
    agent: str
    state: str
    source: str
    opened_at: float
    updated_at: float
    classification: str | None = None
    playbook: str | None = None
    attempts: int = 0
    recovered_at: float | None = None
    resolved_at: float | None = None
    closed_at: float | None = None
    context: dict | None = None
    outcome: str | None = None
    reason: str | None = None
    alerts: tuple[AlertRef, ...] = ()
    playbooks_run: tuple[str, ...] = ()
    signal: dict | None = field(default=None, repr=False)
    metrics: dict | None = None
    trace_id: str | None = None
    span_id: str | None = None  # its root span: the spans of every later turn join its trace under it
    onset_at: float | None = None  # when the condition first held (the alerts' activeAt, or the first bad signal)
    conflict_key: str | None = None  # `directive:<id>` or `conflict:<id>`: this incident is that conflict's
    claimants: tuple[str, ...] = ()  # a conflict's agents, the incident's agent first
    state_reason: str | None = None  # why it is held or escalated (agent_states.REASON_TEXT)
    gate_changed_at: float | None = None  # when a hold was lifted: act only on samples newer than this
    retry_at: float | None = None  # not run again before this moment (the spacing of attempts, a failure)
    verifying: dict | None = None  # an attempt whose steps ran, waiting for its verdict (engine/verifier.py)
    next_backoff: float | None = None  # the spacing chosen before the next attempt (its lineage line says it)

    @property
    def agents(self) -> tuple[str, ...]:
        """The agents this incident is about."""
        return self.claimants or (self.agent,)

    @property
    def labels(self) -> dict:
        """Labels shared by every firing alert (what playbook label matchers see)."""
        firing = [a.labels for a in self.alerts if a.status == "firing"]
        if not firing:
            return {}
        common = dict(firing[0])
        for labels in firing[1:]:
            common = {k: v for k, v in common.items() if labels.get(k) == v}
        return common

    @property
    def alert_classes(self) -> frozenset[str]:
        return frozenset(a.labels.get("autonomy_class", "") for a in self.alerts if a.status == "firing") - {""}

    def as_dict(self) -> dict:
        """A JSON-ready view (shallow: the caller serialises it, never mutates it)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["alerts"] = [{"fingerprint": a.fingerprint, "status": a.status, "labels": a.labels,
                          "starts_at": a.starts_at} for a in self.alerts]
        out["playbooks_run"] = list(self.playbooks_run)
        out["claimants"] = list(self.claimants)
        return out


def alert_onset(alerts: tuple[AlertRef, ...], fallback: float) -> float:
    """The earliest startsAt of the firing alerts (Alertmanager's, or the first bad signal's ts)."""
    moments = []
    for alert in alerts:
        if alert.status == "firing" and alert.starts_at:
            try:
                moments.append(parse_timestamp(alert.starts_at).timestamp())
            except ValueError:
                continue
    return min(moments) if moments else fallback


def _reason(incident: Incident) -> str | None:
    return incident.state_reason or GATE_REASONS.get((incident.reason or "").split(":")[0])


@dataclass(frozen=True)
class Notified:
    """What a notification does to an incident: `action` and the fields it changes.

    open: start one; ignore: nothing to start; duplicate: nothing changes; update: new alerts recorded;
    mark_resolved: a worker holds it and closes it when its attempt ends; close; reopen: run it again.
    """

    action: str
    changes: Mapping[str, object] = field(default_factory=dict)


def on_alerts(current: Incident | None, alerts: tuple[AlertRef, ...], signal: dict | None, source: str,
              now: float, reopen_grace: float, sender_firing: bool | None = None) -> Notified:
    """The transition of CURRENT (the open incident, or None) for the latest ALERTS of its agent or conflict.

    SENDER_FIRING says whether the notifying agent's own alerts fire (a conflict's ALERTS hold every
    claimant's): only a firing notification can be a relapse.
    """
    firing = any(a.status == "firing" for a in alerts)
    sender_firing = firing if sender_firing is None else sender_firing
    if current is None:
        return Notified("open" if firing else "ignore")
    if current.source != source:
        return Notified("duplicate")  # the other path owns this incident; its own notifications decide its fate
    if current.state in QUIET_STATES and signal is None and alerts == current.alerts and firing:
        return Notified("duplicate")  # the common case of a storm: Alertmanager repeating itself
    if not firing:
        if current.state in RUNNABLE_STATES:
            return Notified("mark_resolved", {"alerts": alerts, "resolved_at": now})
        return Notified("close", {"state": "closed", "closed_at": now, "alerts": alerts,
                                  "outcome": closing_outcome(current), "reason": current.reason or "alert resolved"})
    relapsed = sender_firing and current.state == "recovered" and now - (current.recovered_at or now) > reopen_grace
    reconsider = current.state == "skipped" and _reason(current) in RECONSIDERED_REASONS
    if relapsed:
        return Notified("reopen", {"state": "open", "alerts": alerts, "signal": signal or current.signal,
                                   "attempts": 0, "playbooks_run": (), "outcome": None, "reason": None,
                                   "state_reason": None, "resolved_at": None, "recovered_at": None,
                                   "onset_at": alert_onset(alerts, now), "gate_changed_at": None})
    if reconsider:
        return Notified("reopen", {"state": "open", "alerts": alerts, "signal": signal or current.signal,
                                   "outcome": None, "reason": None, "state_reason": None, "resolved_at": None,
                                   "gate_changed_at": now})
    if alerts != current.alerts or (signal and signal != current.signal):
        return Notified("update", {"alerts": alerts, "signal": signal or current.signal})
    return Notified("duplicate")
