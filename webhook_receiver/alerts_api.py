"""The alert webhook (Alertmanager's, or Grafana Alerting's): every notification recorded durably before it is
answered."""
from __future__ import annotations

from flask import Blueprint, jsonify

from autonomy.http_edge import ApiError, json_body, require_token

from .receiver_state import accepted, counted, receiver
from .webhook_payload import PayloadError, parse_webhook

alerts_bp = Blueprint("alerts", __name__)


@alerts_bp.post("/api/v1/alerts")
@counted("alerts")
@require_token("WEBHOOK_TOKEN")
def alertmanager_webhook():
    """Record the notification durably, then answer; remediation runs on the workers afterwards."""
    body = json_body()
    try:
        notification = parse_webhook(body)
    except PayloadError as exc:
        raise ApiError(exc.status, "not a webhook payload of Alertmanager (version 4) or Grafana Alerting "
                       "(version 1); nothing was stored", exc.errors) from None
    state = receiver()
    new = [n.agent for n in notification.per_agent if n.firing and state.store.open_for(n.agent) is None]
    if new and state.store.open_count() + len(new) > state.settings.max_agents:
        raise ApiError(429, f"{len(new)} new agent(s) beyond AUTOREM_MAX_AGENTS={state.settings.max_agents} "
                            "agents with an open incident; nothing was stored")
    # Grafana's incidents are a source of their own: Grafana, not Alertmanager, holds their state and silences.
    result = state.store.ingest(notification.source, body.decode("utf-8"), notification.per_agent,
                                max_queued=state.settings.queue_size)
    return jsonify({**accepted(notification.source, result), "ignored": list(notification.ignored)})
