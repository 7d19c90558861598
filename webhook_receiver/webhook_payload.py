"""Alertmanager's webhook payload (version 4): validated, unknown keys tolerated, split per agent."""
from __future__ import annotations

import re
from dataclasses import dataclass

import jsonschema

from autonomy.signal_contract import SignalError, parse_json, schema_errors

from .classifier import CLASSES
from .ledger import AgentNotification, AlertRef

AGENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
PAYLOAD_SCHEMA = {
    "type": "object",
    "required": ["version", "status", "alerts"],
    "properties": {
        "version": {"const": "4"},
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
    """The body is not a version 4 webhook payload; `status` is 400 (not JSON) or 422 (wrong shape)."""

    def __init__(self, status: int, errors: tuple[str, ...]):
        super().__init__("; ".join(errors))
        self.status = status
        self.errors = errors


@dataclass(frozen=True)
class WebhookNotification:
    """A validated notification: its alerts per agent, and the alerts it could not attribute."""

    status: str
    per_agent: tuple[AgentNotification, ...]
    ignored: tuple[str, ...]


_ONLY_STR = {str}


def _strings(value: object) -> bool:
    return isinstance(value, dict) and set(map(type, value.values())) <= _ONLY_STR


def _optional_strings(item: dict, *keys: str) -> bool:
    return set(type(item[k]) for k in keys if k in item) <= _ONLY_STR


def _well_formed(doc: object) -> bool:
    """The schema, checked by hand on the hot path; anything it doubts goes to jsonschema for the errors."""
    if not isinstance(doc, dict) or doc.get("version") != "4" or doc.get("status") not in ("firing", "resolved"):
        return False
    alerts = doc.get("alerts")
    if not isinstance(alerts, list) or len(alerts) > 10000:
        return False
    if not all(_strings(doc[k]) for k in ("groupLabels", "commonLabels", "commonAnnotations") if k in doc):
        return False
    truncated = doc.get("truncatedAlerts", 0)
    if type(truncated) is not int or truncated < 0 or not _optional_strings(doc, "receiver", "groupKey",
                                                                           "externalURL"):
        return False
    for alert in alerts:
        if not isinstance(alert, dict) or alert.get("status") not in ("firing", "resolved"):
            return False
        if not _strings(alert.get("labels")) or ("annotations" in alert and not _strings(alert["annotations"])):
            return False
        if not _optional_strings(alert, "startsAt", "endsAt", "generatorURL", "fingerprint"):
            return False
    return True


def parse_webhook(body: bytes) -> WebhookNotification:
    """Validate BODY and group its alerts by their `agent` label."""
    try:
        doc = parse_json(body)
    except SignalError as exc:
        raise PayloadError(400, exc.errors) from None
    if not _well_formed(doc):
        errors = schema_errors(_VALIDATOR, doc)
        if errors:
            raise PayloadError(400 if all(e.startswith("(body)") for e in errors) else 422, tuple(errors))
    grouped: dict[str, list[AlertRef]] = {}
    ignored: list[str] = []
    for index, alert in enumerate(doc["alerts"]):
        agent = alert["labels"].get("agent")
        name = alert["labels"].get("alertname", "?")
        if agent is None:
            ignored.append(f"alerts[{index}] ({name}): no agent label")
            continue
        if not AGENT_NAME.fullmatch(agent):
            ignored.append(f"alerts[{index}] ({name}): agent label is not an agent name")
            continue
        if alert["labels"].get("autonomy_class") not in CLASSES:
            ignored.append(f"alerts[{index}] ({name}): no remediable autonomy_class")
            continue
        fingerprint = alert.get("fingerprint") or "|".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()))
        grouped.setdefault(agent, []).append(
            AlertRef(fingerprint, alert["status"], dict(alert["labels"]), alert.get("startsAt", "")))
    per_agent = tuple(AgentNotification(agent, tuple(alerts)) for agent, alerts in sorted(grouped.items()))
    return WebhookNotification(doc["status"], per_agent, tuple(ignored))
