"""Operations endpoints: /metrics, /healthz, /readyz."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import generate_latest

from .app import receiver

ops_bp = Blueprint("ops", __name__)


@ops_bp.get("/metrics")
def metrics():
    return Response(generate_latest(receiver().metrics.registry),
                    content_type="text/plain; version=0.0.4; charset=utf-8")


@ops_bp.get("/healthz")
def healthz():
    """Answers as soon as the process serves, whatever its dependencies are doing."""
    return jsonify({"status": "ok"})


@ops_bp.get("/readyz")
def readyz():
    """Ready when every dependency answers; otherwise 503 naming what is missing."""
    state = receiver()
    up = state.engine.up
    checks = {
        "prometheus": up.prometheus.ready(),
        "alertmanager": up.alertmanager.ready() if up.alertmanager else "not configured",
        "escalation_url": bool(state.settings.escalation_url) or "not configured",
        "workers": state.engine.alive(),
    }
    missing = [name for name, ok in checks.items() if ok is False]
    body = {"ready": not missing, "checks": checks, "missing": missing}
    return jsonify(body), (200 if not missing else 503)
