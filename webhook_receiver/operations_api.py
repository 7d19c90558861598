"""Operations: /metrics, /healthz, /readyz and the kill switch."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from autonomy.http_edge import ApiError, json_body, require_token
from autonomy.signal_contract import SignalError, parse_json

from .engine import FeatureFlagOff
from .receiver_state import counted, readable, receiver

operations_bp = Blueprint("operations", __name__)
log = logging.getLogger(__name__)


@operations_bp.get("/metrics")
def metrics():
    return Response(receiver().metrics.exposition(),
                    content_type="text/plain; version=0.0.4; charset=utf-8")


@operations_bp.get("/healthz")
def healthz():
    """Answers as soon as the process serves, whatever its dependencies are doing."""
    return jsonify({"status": "ok"})


@operations_bp.get("/readyz")
def readyz():
    """Ready when every dependency answers; otherwise 503 naming what is missing."""
    state = receiver()
    up = state.engine.up
    checks = {
        "prometheus": up.prometheus.ready(),
        "alertmanager": up.alertmanager.ready() if up.alertmanager else "not configured",
        "grafana": up.grafana.ready() if up.grafana else "not configured",
        "escalation_url": bool(state.settings.escalation_url) or "not configured",
        "workers": state.engine.alive(),
        "store": _store_answers(state.store),
    }
    missing = [name for name, ok in checks.items() if ok is False]
    body = {"ready": not missing, "checks": checks, "missing": missing, "store": state.store_description}
    return jsonify(body), (200 if not missing else 503)


def _store_answers(store) -> bool:
    """One small read (the kill switch, which every step reads anyway): the shared ledger may be down."""
    try:
        store.kill_switch()
    except Exception:  # noqa: BLE001 - whatever the driver raises, the answer is "not ready"
        log.warning("readiness: the store did not answer", exc_info=True)
        return False
    return True


@operations_bp.get("/api/v1/remediation")
@readable
def remediation_status():
    return jsonify(receiver().engine.remediation_status())


@operations_bp.put("/api/v1/remediation")
@counted("remediation")
@require_token("WEBHOOK_TOKEN")
def set_remediation():
    """The kill switch: {"enabled": false, "reason": "..."}; takes effect at once, durably."""
    try:
        doc = parse_json(json_body())
    except SignalError as exc:
        raise ApiError(400, "not JSON", exc.errors) from None
    errors = []
    if not isinstance(doc, dict):
        raise ApiError(422, "expected an object", ["(root): expected {\"enabled\": bool, \"reason\": str}"])
    if not isinstance(doc.get("enabled"), bool):
        errors.append("enabled: is required and must be true or false")
    if "reason" in doc and not isinstance(doc["reason"], str):
        errors.append("reason: must be a string")
    unknown = sorted(set(doc) - {"enabled", "reason"})
    errors += [f"{key}: unexpected property" for key in unknown]
    if errors:
        raise ApiError(422, "invalid kill switch request", errors)
    reason = (doc.get("reason") or "").strip()[:500] or "no reason given"
    try:
        receiver().engine.set_enabled(doc["enabled"], reason)
    except FeatureFlagOff as exc:
        raise ApiError(409, str(exc)) from None
    return jsonify(receiver().engine.remediation_status())
