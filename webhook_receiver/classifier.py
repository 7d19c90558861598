"""Classify an agent's incident into one of the pack's five playbook families, root cause before symptom."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from autonomy.signal_contract import Signal
from autonomy.vocabulary import IncidentClass

# Root cause before symptom: a conflict explains the rest, a broken config or input explains errors, and an
# error explains a slow backlog. The rule table below is ordered by it (a test holds it so).
CLASSES = (IncidentClass.CONFLICT, IncidentClass.CONFIG, IncidentClass.DATA_DEP, IncidentClass.TRANSIENT,
           IncidentClass.CAPACITY)


@dataclass(frozen=True)
class SloThresholds:
    """The SLO and capacity limits the rules compare against."""

    success: float = 0.94
    align: float = 0.95
    backlog_minutes: float = 15.0
    queue_depth_max: float = 5.0

    @classmethod
    def from_settings(cls, settings) -> "SloThresholds":
        """The thresholds configured by AUTOREM_SLO_* and AUTOREM_QUEUE_DEPTH_MAX."""
        return cls(success=settings.slo_success, align=settings.slo_align,
                   backlog_minutes=settings.slo_backlog_min, queue_depth_max=settings.queue_depth_max)


@dataclass(frozen=True)
class Facts:
    """What the receiver gathers beyond the agent's own signal."""

    failing_dependencies: frozenset[str] = frozenset()
    directive_claimants: int = 0
    missing_secrets: frozenset[str] = frozenset()
    alert_classes: frozenset[str] = frozenset()
    silent: bool = False
    budget_over_cap: bool = False

    def __post_init__(self):
        for name in ("failing_dependencies", "missing_secrets", "alert_classes"):
            value = getattr(self, name)
            # A bare string would silently become the set of its letters.
            if isinstance(value, str):
                raise TypeError(f"{name} must be a collection of names, not the string {value!r}")
            object.__setattr__(self, name, frozenset(value))


Check = Callable[[Signal | None, Facts, SloThresholds], bool]
Explain = Callable[[Signal | None, Facts, SloThresholds], str]


@dataclass(frozen=True)
class Rule:
    """One row of the precedence table: when TEST holds, the incident is CLASSIFICATION."""

    classification: str
    name: str
    test: Check
    explain: Explain


@dataclass(frozen=True)
class Decision:
    """The class of an incident (None: nothing to fix), why, and which rule decided."""

    classification: str | None
    reasons: tuple[str, ...]
    rule: str | None

    def as_dict(self, playbook: str | None = None) -> dict:
        """The decision as JSON-ready data, for lineage and logs."""
        return {"classification": self.classification, "playbook": playbook, "reasons": list(self.reasons)}


def _names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names))


def _error_code(classification: str, prefix: str, *codes: str) -> Rule:
    return Rule(classification, f"{prefix}-error-code",
                lambda s, f, t: s is not None and s.error_code in codes,
                lambda s, f, t: f"errorCode {s.error_code}")


def _check_false(classification: str, name: str, attr: str, label: str) -> Rule:
    # Only an explicit false counts: an agent that does not report the check says nothing.
    return Rule(classification, name,
                lambda s, f, t: s is not None and getattr(s, attr) is False,
                lambda s, f, t: f"checks.{label} is false")


def _alert(classification: str, prefix: str) -> Rule:
    return Rule(classification, f"{prefix}-alert",
                lambda s, f, t: classification in f.alert_classes,
                lambda s, f, t: f"firing alert classed {classification}")


def _backlog_over(s: Signal | None, t: SloThresholds) -> bool:
    # Compared in seconds, as the signal stores it, so a backlog exactly at the SLO never
    # crosses it through a seconds-to-minutes rounding error.
    return s is not None and s.backlog_age_seconds > t.backlog_minutes * 60.0


def _claimed(s: Signal | None, f: Facts, t: SloThresholds) -> str:
    directive = f"directiveId {s.directive_id}" if s is not None and s.directive_id else "directive"
    return f"{directive} claimed by {f.directive_claimants} agents"


def _counted(one: str, many: str, names: frozenset[str]) -> str:
    return f"{one if len(names) == 1 else many} {_names(names)}"


_CLASS_RULES: tuple[Rule, ...] = (
    Rule("CONFLICT", "conflict-id",
         lambda s, f, t: s is not None and bool(s.conflict_id),
         lambda s, f, t: f"conflictId {s.conflict_id} reported"),
    Rule("CONFLICT", "conflict-directive-claimants",
         lambda s, f, t: f.directive_claimants >= 2, _claimed),
    Rule("CONFLICT", "conflict-open",
         lambda s, f, t: s is not None and (s.open_conflicts or 0) > 0,
         lambda s, f, t: f"openConflicts {s.open_conflicts}"),
    _alert("CONFLICT", "conflict"),

    _error_code("CONFIG", "config", "CONFIG_MISSING", "AUTH_FAILED"),
    Rule("CONFIG", "config-missing-secret",
         lambda s, f, t: bool(f.missing_secrets),
         lambda s, f, t: f"required {_counted('secret', 'secrets', f.missing_secrets)} missing"),
    _check_false("CONFIG", "config-check", "config_healthy", "configHealthy"),
    _alert("CONFIG", "config"),

    _error_code("DATA_DEP", "data-dep", "INPUT_MISSING", "STALE_DATA"),
    # Only a dependency whose own signal is failing: the scaffold's "dependencies listed" fired on every agent.
    Rule("DATA_DEP", "data-dep-dependency-failing",
         lambda s, f, t: bool(f.failing_dependencies),
         lambda s, f, t: f"{_counted('dependency', 'dependencies', f.failing_dependencies)} failing"),
    _check_false("DATA_DEP", "data-dep-inputs-check", "inputs_valid", "inputsValid"),
    _alert("DATA_DEP", "data-dep"),

    _error_code("TRANSIENT", "transient", "TIMEOUT", "RATE_LIMIT", "TEMP_NETWORK"),
    Rule("TRANSIENT", "transient-silent",
         lambda s, f, t: f.silent,
         lambda s, f, t: "agent stopped signalling"),
    _check_false("TRANSIENT", "transient-last-task", "last_task_succeeded", "lastTaskSucceeded"),
    _alert("TRANSIENT", "transient"),

    Rule("CAPACITY", "capacity-queue-depth",
         lambda s, f, t: s is not None and s.queue_depth is not None and s.queue_depth > t.queue_depth_max,
         lambda s, f, t: f"queueDepth {s.queue_depth:g} over the max of {t.queue_depth_max:g}"),
    Rule("CAPACITY", "capacity-backlog",
         lambda s, f, t: _backlog_over(s, t),
         lambda s, f, t: f"backlog {s.backlog_age_seconds / 60:g} min over the {t.backlog_minutes:g} min SLO"),
    Rule("CAPACITY", "capacity-budget",
         lambda s, f, t: f.budget_over_cap,
         lambda s, f, t: "projected fleet spend over the daily budget cap"),
    _alert("CAPACITY", "capacity"),
)

# Decide only when no class row matched: they describe a symptom without naming a cause.
FALLBACKS: tuple[Rule, ...] = (
    Rule("TRANSIENT", "fallback-status-error",
         lambda s, f, t: s is not None and s.status == "error",
         lambda s, f, t: "status error"),
    Rule("CAPACITY", "fallback-status-degraded",
         lambda s, f, t: s is not None and s.status == "degraded",
         lambda s, f, t: "status degraded"),
    Rule("CAPACITY", "fallback-slo-success",
         lambda s, f, t: s is not None and s.success_ratio < t.success,
         lambda s, f, t: f"success {s.success_ratio:g} under the {t.success:g} SLO"),
    Rule("CAPACITY", "fallback-slo-align",
         lambda s, f, t: s is not None and s.alignment_ratio < t.align,
         lambda s, f, t: f"alignment {s.alignment_ratio:g} under the {t.align:g} SLO"),
)

RULES: tuple[Rule, ...] = _CLASS_RULES + FALLBACKS
# Rules that see a symptom (a status, a ratio under its SLO, an alert's class) but no cause in the signal: what an
# agent in a conflict shows too, so while a person owns that conflict they are its symptoms, not a problem of their own.
CAUSELESS_RULES = frozenset(r.name for r in RULES if r in FALLBACKS or r.name.endswith("-alert"))


def classify(signal: Signal | None, facts: Facts = Facts(), slo: SloThresholds = SloThresholds()) -> Decision:
    """The first matching rule decides; every matching rule gives a reason, winner first."""
    matched = [rule for rule in RULES if rule.test(signal, facts, slo)]
    if not matched:
        return Decision(None, (), None)
    reasons = tuple(rule.explain(signal, facts, slo) for rule in matched)
    return Decision(matched[0].classification, reasons, matched[0].name)
