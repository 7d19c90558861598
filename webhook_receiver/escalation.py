"""Escalation to a human: the pack's section 7 payload, and the AutonomyEscalated alert in Alertmanager."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from autonomy.settings import Secret
from autonomy.vocabulary import ESCALATION_REASONS, REASON_TEXT

from .incident import Incident
from .playbooks import PlaybookSet
from .upstreams import AlertmanagerApi, UpstreamError

ESCALATED_ALERT = "AutonomyEscalated"
ALERT_LIFETIME = timedelta(hours=1)  # re-posted by the sweeper while the incident stays escalated


def escalation_payload(incident: Incident, reason: str, playbooks: PlaybookSet, lineage_ref: str) -> dict:
    """The pack's section 7 payload; `lastTwoAttempts` names the playbooks actually run."""
    context = dict(incident.context or (incident.signal or {}).get("context") or {})
    for label in ("directive_id", "conflict_id"):
        value = next((a.labels.get(label) for a in incident.alerts if a.labels.get(label)), None)
        if value:
            context.setdefault("directiveId" if label == "directive_id" else "conflictId", value)
    return {
        "to": playbooks.escalate_to,
        "reason": reason,
        "agent": incident.agent,
        "context": context,
        "lastTwoAttempts": list(incident.playbooks_run[-2:]),
        "recommendedOptions": [{"name": o.name, "why": o.why} for o in playbooks.recommended_options],
        "lineageRef": lineage_ref,
        "incidentId": incident.id,
        "classification": incident.classification,
        **({"claimants": list(incident.claimants)} if incident.claimants else {}),
    }


def post_payload(url: str, payload: dict, token: Secret | None, timeout: float = 10.0) -> str | None:
    """POST the payload; None on success, else the reason (never the token)."""
    headers = {"Authorization": f"Bearer {token.reveal()}"} if token else {}
    try:
        reply = requests.post(url, json=payload, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return f"escalation endpoint unreachable: {type(exc).__name__}"
    if not 200 <= reply.status_code < 300:
        return f"escalation endpoint answered HTTP {reply.status_code}"
    return None


def escalation_summary(reason: str, escalate_to: str) -> str:
    """The pack's toast text where it is true (attempts exhausted), an honest one for the other reasons."""
    text = REASON_TEXT.get(ESCALATION_REASONS.get(reason.split(";")[0].strip(), ""))
    return text.replace("CEO", escalate_to, 1) if text else f"Escalated to {escalate_to}: {reason}"


def escalated_labels(incident: Incident) -> dict[str, str]:
    """The labels that name an incident's AutonomyEscalated alert in Alertmanager (its identity there)."""
    return {"alertname": ESCALATED_ALERT, "agent": incident.agent, "severity": "critical",
            "escalated_class": incident.classification or "none"}


def escalated_alert(incident: Incident, reason: str, lineage_url: str, escalate_to: str = "CEO",
                    resolved: bool = False) -> dict:
    """The AutonomyEscalated alert; people's routing, paging and silences apply to it."""
    now = datetime.now(timezone.utc)
    ends = now if resolved else now + ALERT_LIFETIME
    return {
        "labels": escalated_labels(incident),
        "annotations": {
            "summary": escalation_summary(reason, escalate_to),
            "description": (f"{incident.agent}: {reason} after {incident.attempts} attempt(s); playbooks tried: "
                            f"{', '.join(incident.playbooks_run) or 'none'}."),
            "reason": reason,
            "incident_id": incident.id,
            "lineage_url": lineage_url,
        },
        "startsAt": datetime.fromtimestamp(incident.opened_at, timezone.utc).isoformat(),
        "endsAt": ends.isoformat(),
    }


def post_escalated_alert(alertmanager: AlertmanagerApi, alert: dict) -> str | None:
    """Post to Alertmanager; None on success, else the reason."""
    return post_escalated_alerts(alertmanager, [alert])


def post_escalated_alerts(alertmanager: AlertmanagerApi, alerts: list[dict]) -> str | None:
    """Post ALERTS to Alertmanager in one request; None on success, else the reason."""
    try:
        alertmanager.post_alerts(alerts)
    except UpstreamError as exc:
        return f"alertmanager unreachable: {exc}"
    return None
