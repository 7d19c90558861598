"""The webhook payload of Alertmanager (version 4) or of Grafana Alerting (version 1, Alertmanager's shape with
fields of its own): validated, unknown keys tolerated, split per agent."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jsonschema

from autonomy.signal_contract import SignalError, parse_json, schema_errors
from autonomy.vocabulary import AGENT_NAME, IncidentClass, Source

from .incident import AlertRef
from .notification import AgentNotification
from .upstreams import PROBE_LABEL

# The layer's own alerts use this agent name; it is never an agent to remediate.
RESERVED_FOR_THE_LAYER = frozenset(("autonomy-layer",))

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
ALERTMANAGER, GRAFANA = "4", "1"  # the `version` each sends
# Grafana's own fields, typed as Grafana sends them (docs/grafana-alerting.md); its alerts are read as Alertmanager's.
_GRAFANA = {
    "properties": {
        "orgId": {"type": "integer"},
        **{key: {"type": "string"} for key in ("title", "state", "message")},
        "alerts": {"items": {"properties": {
            **{key: {"type": "string"} for key in ("silenceURL", "dashboardURL", "panelURL", "imageURL",
                                                   "valueString")},
            "values": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        }}},
    },
}
PAYLOAD_SCHEMA = {
    "type": "object",
    "required": ["version", "status", "alerts"],
    "if": {"properties": {"version": {"const": GRAFANA}}, "required": ["version"]},
    "then": _GRAFANA,
    "properties": {
        "version": {"enum": [ALERTMANAGER, GRAFANA]},
        "status": {"enum": ["firing", "resolved"]},
        "receiver": {"type": "string"},
        "groupKey": {"type": "string"},
        "groupLabels": _STRINGS,
        "commonLabels": _STRINGS,
        "commonAnnotations": _STRINGS,
        "externalURL": {"type": "string"},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "alerts": {
            "type": "array",
            "maxItems": 10000,
            "items": {
                "type": "object",
                "required": ["status", "labels"],
                "properties": {
                    "status": {"enum": ["firing", "resolved"]},
                    "labels": _STRINGS,
                    "annotations": _STRINGS,
                    "startsAt": {"type": "string"},
                    "endsAt": {"type": "string"},
                    "generatorURL": {"type": "string"},
                    "fingerprint": {"type": "string"},
                },
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(PAYLOAD_SCHEMA)


class PayloadError(ValueError):
    """The body is not a webhook payload of version 4 (or 1); `status` is 400 (not JSON) or 422 (wrong shape)."""

    def __init__(self, status: int, errors: tuple[str, ...]):
        super().__init__("; ".join(errors))
        self.status = status
        self.errors = errors


@dataclass(frozen=True)
class WebhookNotification:
    """A validated notification: its alerts per agent, the alerts it could not attribute, and who sent it
    (Alertmanager, or Grafana Alerting: the source of the incidents it opens)."""

    status: str
    per_agent: tuple[AgentNotification, ...]
    ignored: tuple[str, ...]
    source: Source = Source.ALERTMANAGER


_STATUSES = frozenset(("firing", "resolved"))
_REMEDIABLE = frozenset(IncidentClass)
_must_be_strings = "".join  # raises TypeError unless every item is a str: one C call instead of a loop
# tuple.__new__ builds the named tuples without their Python-level __new__ (once per alert on the hot path).
_alert_ref = partial(tuple.__new__, AlertRef)
_agent_notification = partial(tuple.__new__, AgentNotification)


def _top_level_ok(doc: object) -> bool:
    """The schema's checks of everything but the alerts, by hand (the hot path: Alertmanager's; Grafana's
    notifications, far fewer, are checked by jsonschema)."""
    if type(doc) is not dict or doc.get("version") != ALERTMANAGER or doc.get("status") not in ("firing", "resolved"):
        return False
    alerts = doc.get("alerts")
    if type(alerts) is not list or len(alerts) > 10000:
        return False
    truncated = doc.get("truncatedAlerts", 0)
    if type(truncated) is not int or truncated < 0:
        return False
    try:
        for key in ("groupLabels", "commonLabels", "commonAnnotations"):
            if key in doc:
                _must_be_strings(doc[key].values())
        _must_be_strings([doc.get("receiver", ""), doc.get("groupKey", ""), doc.get("externalURL", "")])
    except (TypeError, AttributeError):
        return False
    return True


def _group(alerts: list) -> tuple[dict[str, list[AlertRef]], list[str]] | None:
    """Check each alert against the schema and group it by agent, in one pass; None when in doubt."""
    grouped: dict[str, list[AlertRef]] = {}
    ignored: list[str] = []
    agent_name = AGENT_NAME.fullmatch
    try:
        for index, alert in enumerate(alerts):
            status, labels = alert["status"], alert["labels"]
            _must_be_strings(labels.values())
            if "annotations" in alert:
                _must_be_strings(alert["annotations"].values())
            get = alert.get
            starts_at, fingerprint = get("startsAt", ""), get("fingerprint", "")
            _must_be_strings((starts_at, fingerprint, get("endsAt", ""), get("generatorURL", "")))
            if status not in _STATUSES:
                return None
            agent = labels.get("agent")
            if agent is None or not agent_name(agent) or agent in RESERVED_FOR_THE_LAYER \
                    or labels.get("autonomy_class") not in _REMEDIABLE or PROBE_LABEL in labels:
                name = labels.get("alertname", "?")
                reason = ("no agent label" if agent is None else "agent label is not an agent name"
                          if not agent_name(agent) else "the layer's own agent name" if agent in RESERVED_FOR_THE_LAYER
                          else "a probe of the receiver's, not an alert" if PROBE_LABEL in labels
                          else "no remediable autonomy_class")
                ignored.append(f"alerts[{index}] ({name}): {reason}")
                continue
            ref = _alert_ref((fingerprint or "|".join(f"{k}={v}" for k, v in sorted(labels.items())),
                              status, labels, starts_at))
            if agent in grouped:
                grouped[agent].append(ref)
            else:
                grouped[agent] = [ref]
    except (TypeError, KeyError, AttributeError):
        return None
    return grouped, ignored


def parse_webhook(body: bytes) -> WebhookNotification:
    """Validate BODY (Alertmanager's or Grafana's) and group its alerts by their `agent` label."""
    try:
        doc = parse_json(body)
    except SignalError as exc:
        raise PayloadError(400, exc.errors) from None
    grouped = _group(doc["alerts"]) if _top_level_ok(doc) else None
    if grouped is None:
        # The hand checks doubt it: jsonschema decides, and names every problem if there are any.
        errors = schema_errors(_VALIDATOR, doc)
        if errors:
            raise PayloadError(400 if all(e.startswith("(body)") for e in errors) else 422, tuple(errors))
        grouped = _group(doc["alerts"])
        if grouped is None:  # the schema accepted what the hand checks refuse: refuse rather than guess
            raise PayloadError(422, ("alerts: an alert the receiver cannot read",))
    by_agent, ignored = grouped
    per_agent = tuple(_agent_notification((agent, tuple(alerts), None)) for agent, alerts in sorted(by_agent.items()))
    sender = Source.GRAFANA if doc["version"] == GRAFANA else Source.ALERTMANAGER
    return WebhookNotification(doc["status"], per_agent, tuple(ignored), sender)
