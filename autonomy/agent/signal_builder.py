"""An agent's own numbers (AgentReport) and the §2 signal built from them, checked by the contract's validator."""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from autonomy.signal_contract import SignalError, document_errors


@dataclass
class AgentReport:
    """The mutable state of one agent, as its signal reports it; `update` changes several fields at once."""

    status: str = "healthy"
    success_rate: float = 1.0
    alignment: float = 1.0
    backlog_minutes: float = 0.0
    cost_per_hour: float = 0.0
    error_code: str | None = None
    queue_depth: int | None = None
    open_conflicts: int | None = None
    dependencies: list[str] = field(default_factory=list)
    directive_id: str | None = None
    conflict_id: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    last_report: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def update(self, **changes: Any) -> "AgentReport":
        """Set several fields together, so a signal built meanwhile never sees half of the change."""
        known = {f.name for f in fields(self) if not f.name.startswith("_")}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"AgentReport has no field {', '.join(unknown)} (fields: {', '.join(sorted(known))})")
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)
        return self

    def snapshot(self) -> dict[str, Any]:
        """The fields as they are now, copied under the lock (the containers too)."""
        with self._lock:
            values = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
            return copy.deepcopy(values)  # the containers too: the agent may change them while the signal leaves


def timestamp(now: float | datetime) -> str:
    """NOW (epoch seconds or an aware datetime) as the signal's `ts`: UTC, milliseconds, `Z`."""
    if isinstance(now, datetime):
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now: a datetime without a zone; pass an aware datetime or epoch seconds")
        moment = now.astimezone(timezone.utc)
    elif isinstance(now, (int, float)) and not isinstance(now, bool):
        moment = datetime.fromtimestamp(now, timezone.utc)
    else:
        raise ValueError(f"now: {type(now).__name__} is neither epoch seconds nor a datetime")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_list(items: Any) -> Any:
    if isinstance(items, (set, frozenset)):
        return sorted(items, key=str)
    return list(items) if isinstance(items, tuple) else items  # anything else is for the schema to name


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def build_signal(name: str, domain: str | None, report: AgentReport, now: float | datetime) -> dict:
    """The §2 signal of agent NAME from REPORT at NOW, valid against autonomy/schemas/signal.schema.json;
    SignalError (a ValueError) naming every wrong field otherwise."""
    if not isinstance(report, AgentReport):
        raise ValueError(f"report: {type(report).__name__} is not an AgentReport")
    values = report.snapshot()
    signal: dict[str, Any] = {"agent": name}
    if domain is not None:
        signal["domain"] = domain
    signal.update({
        "status": values["status"],
        "lastReport": values["last_report"],
        "metrics": {
            "successRate": values["success_rate"],
            "alignment": values["alignment"],
            "backlogAgeMinutes": values["backlog_minutes"],
            "costBurnRatePerHour": values["cost_per_hour"],
        },
    })
    context = _without_none({
        "directiveId": values["directive_id"],
        "conflictId": values["conflict_id"],
        "errorCode": values["error_code"],
        "queueDepth": values["queue_depth"],
        "openConflicts": values["open_conflicts"],
        "dependencies": _as_list(values["dependencies"]) or None,
    })
    if context:
        signal["context"] = context
    if values["checks"]:
        signal["checks"] = values["checks"]
    if values["extensions"]:
        signal["extensions"] = values["extensions"]
    signal["ts"] = timestamp(now)
    errors = document_errors(signal)
    if errors:
        raise SignalError(errors)
    return signal
