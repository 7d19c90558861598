"""The agent status-signal contract (pack section 2): parsing, validation and the typed Signal."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

import jsonschema

from .signal_extensions import EXTENSIONS, extensions_ok, size_errors

SCHEMA_RESOURCE = "schemas/signal.schema.json"
STATUSES = ("healthy", "degraded", "error")
ERROR_CODES = ("TIMEOUT", "RATE_LIMIT", "TEMP_NETWORK", "INPUT_MISSING", "STALE_DATA", "CONFIG_MISSING", "AUTH_FAILED",
               "OTHER")
CHECKS = ("lastTaskSucceeded", "inputsValid", "configHealthy")
_RESERVED = ("fleet", "autonomy-layer")  # the schema's `not` of agent
MAX_DEPTH = 64


class SignalError(ValueError):
    """One or more problems with a signal document, each naming its field path."""

    def __init__(self, errors: Iterable[str]):
        self.errors = tuple(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class Signal:
    """A validated signal, in base units (seconds, ratios, dollars)."""

    agent: str
    status: str
    last_report: str
    success_ratio: float
    alignment_ratio: float
    backlog_age_seconds: float
    cost_burn_dollars_per_hour: float
    timestamp: float
    domain: str | None = None
    directive_id: str | None = None
    conflict_id: str | None = None
    error_code: str | None = None
    queue_depth: int | None = None
    open_conflicts: int | None = None
    dependencies: tuple[str, ...] = ()
    last_task_succeeded: bool | None = None
    inputs_valid: bool | None = None
    config_healthy: bool | None = None
    document: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_document(cls, doc: dict) -> "Signal":
        """Build from a document that already passed the schema."""
        metrics, context, checks = doc["metrics"], doc.get("context", {}), doc.get("checks", {})
        signal = object.__new__(cls)  # every field at once, not one frozen __setattr__ each (the hot path)
        signal.__dict__.update(
            agent=doc["agent"],
            status=doc["status"],
            last_report=doc["lastReport"],
            success_ratio=float(metrics["successRate"]),
            alignment_ratio=float(metrics["alignment"]),
            backlog_age_seconds=float(metrics["backlogAgeMinutes"]) * 60.0,
            cost_burn_dollars_per_hour=float(metrics["costBurnRatePerHour"]),
            timestamp=parse_timestamp(doc["ts"]).timestamp(),
            domain=doc.get("domain"),
            directive_id=context.get("directiveId"),
            conflict_id=context.get("conflictId"),
            error_code=context.get("errorCode"),
            queue_depth=context.get("queueDepth"),
            open_conflicts=context.get("openConflicts"),
            dependencies=tuple(context.get("dependencies", ())),
            last_task_succeeded=checks.get("lastTaskSucceeded"),
            inputs_valid=checks.get("inputsValid"),
            config_healthy=checks.get("configHealthy"),
            document=doc,
        )
        return signal


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp that carries a zone; ValueError otherwise."""
    if not isinstance(text, str) or "T" not in text.upper():
        raise ValueError("not an ISO-8601 date-time")
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("no zone")
    return value


@lru_cache(maxsize=1)
def schema() -> dict:
    """The published JSON Schema, as shipped in the package."""
    return json.loads(resources.files("autonomy").joinpath(SCHEMA_RESOURCE).read_text("utf-8"))


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def _is_datetime(instance: object) -> bool:
        if isinstance(instance, str):
            parse_timestamp(instance)
        return True

    cls = jsonschema.validators.validator_for(schema())
    return cls(schema(), format_checker=checker)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise SignalError([f"(body): number {text} is out of range"])
    return value


def _bounded_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 308:  # beyond what a float (every number here ends as one) can hold
        raise SignalError([f"(body): number of {len(digits)} digits is out of range"])
    return int(text)


def _reject_constant(name: str) -> None:
    raise SignalError([f"(body): {name} is not valid JSON"])


def parse_json(data: bytes | str) -> Any:
    """Parse a request body or file; SignalError names what is wrong."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignalError([f"(body): not UTF-8 ({exc.reason} at byte {exc.start})"]) from None
    if not data.strip():
        raise SignalError(["(body): empty body, expected a JSON signal or a list of signals"])
    try:
        return json.loads(data, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SignalError([f"(body): not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None
    except RecursionError:
        raise SignalError(["(body): JSON nested too deeply"]) from None


def too_deep(doc: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether DOC nests dicts and lists more than LIMIT levels deep (checked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def _render_path(prefix: str, path: Iterable[Any]) -> str:
    out = prefix
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


_REQUIRED = re.compile(r"^'(.+)' is a required property$")


def _describe(error: jsonschema.ValidationError, prefix: str) -> list[str]:
    path = list(error.absolute_path)
    if error.validator == "required":
        match = _REQUIRED.match(error.message)
        name = match.group(1) if match else "?"
        return [f"{_render_path(prefix, path + [name])}: is required"]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        return [f"{_render_path(prefix, path + [key])}: unexpected property"
                for key in sorted(set(error.instance) - known)]
    if "propertyNames" in error.absolute_schema_path:  # a bad key, named as the field it would make
        return [f"{_render_path(prefix, path + [error.instance])}: not a valid key (pattern {error.validator_value})"]
    where = _render_path(prefix, path)
    if error.validator == "maxProperties":
        return [f"{where}: {len(error.instance)} keys, more than {error.validator_value}"]
    if error.validator == "format":
        return [f"{where}: {error.instance!r} is not an ISO-8601 date-time with a zone"]
    if error.validator == "pattern":
        return [f"{where}: {error.instance!r} is not a valid name or id (pattern {error.validator_value})"]
    if error.validator == "not":
        return [f"{where}: {error.instance!r} is reserved for the layer's own alerts"]
    if error.validator == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return [f"{where}: {error.instance!r} is not one of {allowed}"]
    return [f"{where}: {error.message}"]


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any, prefix: str = "") -> list[str]:
    """Every violation of VALIDATOR's schema by DOC, as `path: reason` lines, sorted by path."""
    if too_deep(doc):  # describing such a document would exhaust the recursion limit
        return [f"(body): JSON nested more than {MAX_DEPTH} levels deep"]
    errors: list[str] = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        errors.extend(_describe(error, prefix))
    return errors


def document_errors(doc: Any, prefix: str = "") -> list[str]:
    """Every schema violation of one signal document, and an oversized `extensions`, as `path: reason` lines."""
    return schema_errors(_validator(), doc, prefix) + size_errors(doc, prefix)


_NAME, _ID = (re.compile(schema()["$defs"][d]["pattern"]).search for d in ("name", "id"))  # as jsonschema does
_INT_LIMIT, _TOP, _NUMBER = 10 ** 308, frozenset(schema()["properties"]), (int, float)  # see parse_json


def _is_name(v: object) -> bool:
    return type(v) is str and _NAME(v) is not None


_CONTEXT_CHECKS = {
    **dict.fromkeys(("directiveId", "conflictId"), lambda v: type(v) is str and _ID(v) is not None),
    "errorCode": lambda v: type(v) is str and v in ERROR_CODES,
    **dict.fromkeys(("queueDepth", "openConflicts"), lambda v: type(v) is int and 0 <= v < _INT_LIMIT),
    "dependencies": lambda v: type(v) is list and len(v) <= 64 and all(map(_is_name, v)) and len(set(v)) == len(v),
}


def checked_signal(doc: Any) -> Signal | None:
    """The schema's checks of one document by hand (the hot path): its Signal, or None when in doubt. It never
    accepts what the schema refuses; what it doubts, jsonschema decides (a property test holds the two together)."""
    try:
        agent, status, report, ts, metrics = doc["agent"], doc["status"], doc["lastReport"], doc["ts"], doc["metrics"]
        rate, align, backlog, cost = (metrics[k] for k in ("successRate", "alignment", "backlogAgeMinutes",
                                                           "costBurnRatePerHour"))
        context, checks = doc.get("context", {}), doc.get("checks", {})
        # By type, not isinstance: a bool is not a number. NaN and inf fail the ranges, and are doubted.
        if type(doc) is not dict or not doc.keys() <= _TOP or not _is_name(agent) or agent in _RESERVED \
                or type(status) is not str or status not in STATUSES or type(report) is not str or len(report) > 4096 \
                or type(ts) is not str or len(ts) > 64 or ("domain" in doc and not _is_name(doc["domain"])) \
                or type(metrics) is not dict or len(metrics) != 4 or type(context) is not dict \
                or type(checks) is not dict or type(rate) not in _NUMBER or not 0 <= rate <= 1 \
                or (EXTENSIONS in doc and (too_deep(doc) or not extensions_ok(doc[EXTENSIONS]))) \
                or type(align) not in _NUMBER or not 0 <= align <= 1 or type(backlog) not in _NUMBER \
                or not 0 <= backlog < _INT_LIMIT or type(cost) not in _NUMBER or not 0 <= cost < _INT_LIMIT:
            return None
        for key, value in checks.items():
            if type(value) is not bool or key not in CHECKS:
                return None
        for key, value in context.items():
            if not _CONTEXT_CHECKS[key](value):  # an unknown key is a KeyError
                return None
        return Signal.from_document(doc)  # ValueError if ts is not a date-time with a zone
    except (KeyError, TypeError, ValueError):
        return None


def validate_signals(doc: Any) -> list[Signal]:
    """Validate one signal or a non-empty list of them; all or nothing."""
    if isinstance(doc, list):
        if not doc:
            raise SignalError(["(root): empty list, expected at least one signal"])
        items = [(f"[{i}]", item) for i, item in enumerate(doc)]
    else:
        items = [("", doc)]
    signals = [checked_signal(item) for _, item in items]  # the hot path; any doubt, and jsonschema judges them all
    if all(s is not None for s in signals):
        return signals  # type: ignore[return-value]
    errors = [line for prefix, item in items for line in document_errors(item, prefix)]
    if errors:
        raise SignalError(errors)
    return [Signal.from_document(item) for _, item in items]


def load_signals(data: bytes | str, now: float | None = None, max_skew: float | None = None) -> list[Signal]:
    """Parse and validate a body or file: one signal or a list of them; with NOW and MAX_SKEW, a signal dated
    further ahead than that is an error too (endpoints receiving live signals)."""
    signals = validate_signals(parse_json(data))
    if now is not None and max_skew is not None:
        errors = future_errors(signals, now, max_skew)
        if errors:
            raise SignalError(errors)
    return signals


def future_errors(signals: list[Signal], now: float, max_skew: float) -> list[str]:
    """`ts: ...` lines for signals dated more than MAX_SKEW seconds after NOW: a clock that far ahead (or a
    forged date) would make every real signal after it look older, and mask the agent."""
    several = len(signals) > 1
    return [f"{f'[{i}].' if several else ''}ts: {s.document.get('ts')!r} is {s.timestamp - now:.0f} s ahead of this "
            f"receiver's clock, more than AUTOREM_MAX_CLOCK_SKEW_SECONDS={max_skew:g}"
            for i, s in enumerate(signals) if s.timestamp - now > max_skew]
