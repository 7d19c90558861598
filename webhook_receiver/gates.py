"""The gates checked before every attempt; each refusal says which gate and why."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from autonomy.vocabulary import EscalationReason, Gate, IncidentClass, Source

from .conflicts import conflict_key
from .incident import Incident
from .playbooks import Playbook
from .rollout import Rollout
from .upstreams import AlertmanagerApi, UpstreamError

REMEDIABLE = frozenset(IncidentClass)
GRAFANA_UNCONFIGURED = ("a Grafana-managed alert: its state and silences are Grafana's, which the receiver is not "
                        "set to ask; set AUTOREM_GRAFANA_URL (and AUTOREM_GRAFANA_TOKEN); observed only")


@dataclass(frozen=True)
class Refusal:
    """A gate said no: `gate` names it; `escalate` sends the case to a human; `close` ends the incident."""

    gate: Gate
    reason: str
    escalate_reason: EscalationReason | None = None
    close: bool = False


@dataclass(frozen=True)
class GateInputs:
    """What the gates look at, gathered by the engine."""

    enabled: Callable[[], bool]
    rollout: Callable[[], Rollout]  # read from the store at each attempt, as the kill switch is
    alertmanager: AlertmanagerApi | None
    fleet_spend: Callable[[], float | None]
    budget_cap: float
    through_alertmanager: bool = True  # Alertmanager holds the incident's alerts (else: ask it about a probe)
    grafana: AlertmanagerApi | None = None  # Grafana's Alertmanager API: it holds a Grafana incident's alerts


def _belongs(incident: Incident, alert: dict) -> bool:
    """Whether an alert Alertmanager holds is this incident's: a conflict's own key, or an agent's other alerts."""
    labels = alert.get("labels", {})
    if labels.get("autonomy_class") not in REMEDIABLE:
        return False
    return conflict_key(labels) == incident.conflict_key


def _alert_state(am: AlertmanagerApi, incident: Incident, where: str = "Alertmanager",
                 unreachable: Gate = Gate.ALERTMANAGER_UNREACHABLE) -> Refusal | None:
    """Refuse unless the incident's alerts are still active and none is silenced (a conflict: any claimant's), as
    the Alertmanager that holds them (WHERE: Alertmanager, or Grafana for its own alerts) says."""
    try:
        alerts = [a for agent in incident.agents for a in am.agent_alerts(agent) if _belongs(incident, a)]
    except UpstreamError as exc:
        return Refusal(unreachable, f"cannot check the alert and its silences in {where}: {exc}")
    silenced = sorted({s for a in alerts for s in a.get("status", {}).get("silencedBy") or []})
    # A silence on one claimant of a conflict stops the whole conflict: acting on the others changes it too.
    if silenced and (incident.conflict_key or not any(a.get("status", {}).get("state") == "active" for a in alerts)):
        return Refusal(Gate.SILENCED, f"the agent's alerts are silenced in {where} ({', '.join(silenced)})")
    if any(a.get("status", {}).get("state") == "active" for a in alerts):
        return None
    if alerts:
        return Refusal(Gate.NOT_FIRING, f"the agent's alerts are suppressed in {where}")
    if unreachable is Gate.GRAFANA_UNREACHABLE:
        # Grafana answers a token that may not see the rule's organization or folder with nothing at all: absence
        # is no evidence of a resolution there. Held; Grafana's resolved notification closes it.
        return Refusal(Gate.NOT_FIRING, "Grafana shows no active alert of the agent (resolved, or not visible to "
                                        "AUTOREM_GRAFANA_TOKEN's organization and folders): held until Grafana's "
                                        "resolved notification")
    return Refusal(Gate.NOT_FIRING, f"the alert is no longer firing in {where}", close=True)


def _grafana_state(grafana: AlertmanagerApi | None, incident: Incident) -> Refusal | None:
    """A Grafana incident's alerts are Grafana's: their state and silences are asked of Grafana, or it is held."""
    if grafana is None:
        return Refusal(Gate.GRAFANA_UNCONFIGURED, GRAFANA_UNCONFIGURED)
    return _alert_state(grafana, incident, "Grafana", Gate.GRAFANA_UNREACHABLE)


def _signal_silence(am: AlertmanagerApi, incident: Incident, classification: str) -> Refusal | None:
    """The direct path: ask Alertmanager whether it would silence or inhibit the incident's alerts."""
    firing = [a.labels for a in incident.alerts if a.status == "firing"] or [
        {"agent": agent, "autonomy_class": classification} for agent in incident.agents]
    silenced, inhibited = set(), set()
    try:
        for labels in firing:
            by_silence, by_alert = am.verdict({k: v for k, v in labels.items() if isinstance(v, str)})
            silenced.update(by_silence)
            inhibited.update(by_alert)
    except UpstreamError as exc:
        return Refusal(Gate.ALERTMANAGER_UNREACHABLE, f"cannot ask Alertmanager about silences: {exc}")
    if silenced:
        return Refusal(Gate.SILENCED, f"a silence in Alertmanager covers the agent ({', '.join(sorted(silenced))})")
    if inhibited:
        return Refusal(Gate.NOT_FIRING, f"Alertmanager inhibits the agent's alerts ({len(inhibited)} inhibiting alert(s))")
    return None


def check_gates(incident: Incident, classification: str, playbook: Playbook, inputs: GateInputs) -> Refusal | None:
    """The first gate that refuses, in order: kill switch, the rollout (its agents, then its classes), alert state
    and silences, high risk, budget."""
    if not inputs.enabled():
        return Refusal(Gate.KILL_SWITCH, "remediation is disabled (kill switch)")
    rollout = inputs.rollout()
    outside = rollout.outside(incident.agents)
    if outside:
        return Refusal(Gate.CANARY, f"{', '.join(outside)} not in the rollout's agents; observed only")
    if classification not in rollout.classes:
        return Refusal(Gate.CLASS_NOT_ENABLED, f"{classification} is not enabled in the rollout "
                                               f"({', '.join(rollout.classes)}); observed only")
    if incident.source == Source.GRAFANA:
        refusal = _grafana_state(inputs.grafana, incident)
        if refusal:
            return refusal
    elif inputs.alertmanager is not None:
        refusal = (_alert_state(inputs.alertmanager, incident) if inputs.through_alertmanager
                   else _signal_silence(inputs.alertmanager, incident, classification))
        if refusal:
            return refusal
    risky = [s.action for s in playbook.steps if s.high_risk]
    if risky:
        return Refusal(Gate.HIGH_RISK, f"{playbook.name} has high-risk steps ({', '.join(risky)}): a human decides",
                       escalate_reason=EscalationReason.HIGH_RISK_STEP)
    if playbook.increases_spend:
        spend = inputs.fleet_spend()
        if spend is not None and spend > inputs.budget_cap:
            return Refusal(Gate.BUDGET_CAP, f"{playbook.name} adds spend while the fleet projects "
                                         f"{spend:.2f} dollars a day over the {inputs.budget_cap:g} cap",
                           escalate_reason=EscalationReason.BUDGET_CAP)
    return None
