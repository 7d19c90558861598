"""Incidents and the decision lineage, a page at a time (JSON, and the remediation log page)."""
from __future__ import annotations

import html
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request

from autonomy.http_edge import ApiError
from autonomy.signal_contract import parse_timestamp

from .incident import STATES
from .receiver_state import readable, receiver
from .store import StoreError

incidents_bp = Blueprint("incidents", __name__)


def _since() -> float | None:
    """The `since` filter as epoch seconds (any zone)."""
    text = request.args.get("since")
    if not text:
        return None
    try:
        moment = parse_timestamp(text)
    except ValueError:
        raise ApiError(400, f"since: {text!r} is not an ISO-8601 date-time with a zone") from None
    return moment.timestamp()


PAGE_DEFAULT, PAGE_MAX = 100, 1000


def _limit() -> int:
    text = request.args.get("limit")
    if text is None:
        return PAGE_DEFAULT
    if not text.isdigit() or not 1 <= int(text) <= PAGE_MAX:
        raise ApiError(400, f"limit: {text[:20]!r} is not a whole number from 1 to {PAGE_MAX}")
    return int(text)


def _cursor(parse):
    text = request.args.get("cursor")
    if not text:
        return None
    try:
        return parse(text)
    except (ValueError, TypeError):
        raise ApiError(400, f"cursor: {text[:40]!r} is not a cursor this endpoint gave out") from None


def _incident_cursor(text: str) -> tuple[float, str]:
    opened_at, _, incident_id = text.rpartition(":")
    if not incident_id.isalnum() or len(incident_id) > 64:
        raise ValueError(text)
    return float(opened_at), incident_id


@incidents_bp.get("/api/v1/incidents")
@readable
def list_incidents():
    """Incidents newest first, a page at a time: `limit` (default 100, at most 1,000), `cursor` from the last."""
    state = request.args.get("state")
    if state and state not in STATES:
        raise ApiError(400, f"state: {state!r} is not one of {', '.join(STATES)}")
    limit = _limit()
    incidents = receiver().store.list(agent=request.args.get("agent"), state=state, limit=limit,
                                       before=_cursor(_incident_cursor))
    last = incidents[-1] if len(incidents) == limit else None
    return jsonify({"incidents": [i.as_dict() for i in incidents],
                    "next_cursor": f"{last.opened_at!r}:{last.id}" if last else None})


@incidents_bp.get("/api/v1/incidents/<incident_id>")
@readable
def get_incident(incident_id: str):
    incident = receiver().store.get(incident_id)
    if incident is None:
        raise ApiError(404, f"no incident {incident_id!r}")
    return jsonify(incident.as_dict())


def _lineage_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # a store id (any 18 digits fit a bigint)
        raise ValueError(text)
    return int(text)


def _lineage_page():
    limit, before, since = _limit(), _cursor(_lineage_id), _since()
    try:
        return receiver().lineage.page(limit, before, agent=request.args.get("agent"), since=since,
                                       incident_id=request.args.get("incident"))
    except StoreError as exc:
        raise ApiError(503, f"the lineage cannot be read now: {exc}") from None


@incidents_bp.get("/api/v1/lineage")
@readable
def lineage_json():
    """Lineage entries newest first, a page at a time, read from the store by index (a page costs the same however
    long the history): `limit`, `cursor` (the last page's `next_cursor`), filters `agent`, `incident`, `since`."""
    page = _lineage_page()
    return jsonify({"entries": page.entries, "skipped_ids": list(page.skipped_ids),
                    "next_cursor": str(page.next_cursor) if page.next_cursor is not None else None})


def _cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in value.items())
    return html.escape("" if value is None else str(value))


@incidents_bp.get("/lineage")
@readable
def lineage_page():
    """The "View Remediation Log" page: newest first, one row per attempt, refusal or escalation, a page at a
    time with a link to the older ones."""
    agent = request.args.get("agent")
    page = _lineage_page()
    rows = "".join(
        f"<tr class='{_cell(e.get('event'))}'><td>{_cell(e.get('ts'))}</td><td>{_cell(e.get('agent'))}</td>"
        f"<td>{_cell(e.get('event'))}</td><td>{_cell(e.get('classification'))}</td>"
        f"<td>{_cell(e.get('playbook'))}</td><td>{_cell(e.get('attempt'))}</td>"
        f"<td>{'resolved' if e.get('ok') else _cell(e.get('gate') or e.get('reason') or 'failed')}</td>"
        f"<td>{_cell(e.get('before'))}</td><td>{_cell(e.get('after'))}</td></tr>"
        for e in page.entries)
    older = ""
    if page.next_cursor is not None:
        keep = {k: v for k, v in request.args.items() if k in ("agent", "since", "incident", "limit", "token")}
        older = f"<p><a href='?{html.escape(urlencode({**keep, 'cursor': page.next_cursor}))}'>Older entries</a></p>"
    title = f"Remediation log: {html.escape(agent)}" if agent else "Remediation log"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd;"
            "text-align:left;vertical-align:top}</style></head>"
            f"<body><h1>{title}</h1><table><tr><th>time</th><th>agent</th><th>event</th><th>class</th>"
            "<th>playbook</th><th>attempt</th><th>outcome</th><th>before</th><th>after</th></tr>"
            f"{rows}</table>{older}</body></html>")
    return Response(page, content_type="text/html; charset=utf-8")
