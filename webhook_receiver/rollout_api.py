"""The staged rollout (pack section 11): read it, set it, expand it; written like the kill switch."""
from __future__ import annotations

from typing import Callable

from flask import Blueprint, jsonify

from autonomy.http_edge import ApiError, json_body, require_token
from autonomy.signal_contract import SignalError, parse_json

from .receiver_state import counted, readable, receiver
from .rollout import Rollout, RolloutError, expand, set_rollout

rollout_bp = Blueprint("rollout", __name__)
FIELDS = ("agents", "classes", "reason")


@rollout_bp.get("/api/v1/rollout")
@readable
def rollout_status():
    return jsonify(receiver().engine.rollout().as_dict())


@rollout_bp.put("/api/v1/rollout")
@counted("rollout")
@require_token("WEBHOOK_TOKEN")
def put_rollout():
    """{"agents": [...] or ["*"], "classes": [...] or ["*"], "reason": "..."}: the rollout replaced."""
    doc = _request()
    engine = receiver().engine
    return _changed(doc, lambda current, now: set_rollout(current, doc.get("agents"), doc.get("classes"),
                                                          doc.get("reason"), now, engine.settings.max_agents),
                    lambda: engine.set_rollout(doc.get("agents"), doc.get("classes"), doc.get("reason")))


@rollout_bp.post("/api/v1/rollout/expand")
@counted("rollout")
@require_token("WEBHOOK_TOKEN")
def expand_rollout():
    """{"agents": [...], "classes": [...], "reason": "..."}: added to the rollout, which never narrows here."""
    doc = _request()
    engine = receiver().engine
    agents, classes = doc.get("agents", []), doc.get("classes", [])
    return _changed(doc, lambda current, now: expand(current, agents, classes, doc.get("reason"), now,
                                                     engine.settings.max_agents),
                    lambda: engine.expand_rollout(agents, classes, doc.get("reason")))


def _request() -> dict:
    try:
        doc = parse_json(json_body())
    except SignalError as exc:
        raise ApiError(400, "not JSON", exc.errors) from None
    if not isinstance(doc, dict):
        raise ApiError(422, "expected an object",
                       ['(root): expected {"agents": [...], "classes": [...], "reason": "..."}'])
    return doc


def _changed(doc: dict, check: Callable[[Rollout, float], Rollout], apply: Callable[[], Rollout]):
    """Apply the change, or 422 naming every problem (unknown fields too) with nothing stored."""
    unknown = [f"{key}: unexpected property" for key in sorted(set(doc) - set(FIELDS))]
    try:
        if unknown:
            check(receiver().engine.rollout(), 0.0)  # only to name its other problems as well
            raise ApiError(422, "invalid rollout request", unknown)
        rollout = apply()
    except RolloutError as exc:
        raise ApiError(422, "invalid rollout request", unknown + exc.errors) from None
    except OSError as exc:
        raise ApiError(503, f"the change's lineage line could not be written ({exc.strerror or exc}); "
                            "the rollout is unchanged") from None
    return jsonify(rollout.as_dict())
