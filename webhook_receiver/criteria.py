"""The pack's success criteria (section 6) as predicates on an agent's view, and the checks a plain section 2
signal implies when it does not report them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from autonomy.signal_contract import Signal

from .classifier import Facts

# Error codes that each say a check of the agent failed (README, "Checks an agent does not report").
TASK_FAILED_CODES = frozenset(("TIMEOUT", "RATE_LIMIT", "TEMP_NETWORK", "OTHER"))
INPUT_FAILED_CODES = frozenset(("INPUT_MISSING", "STALE_DATA"))
CONFIG_FAILED_CODES = frozenset(("CONFIG_MISSING", "AUTH_FAILED"))


def last_task_succeeded(signal: Signal, facts: Facts) -> bool:
    """The reported checks.lastTaskSucceeded; absent: status not error and no task-failure error code."""
    if signal.last_task_succeeded is not None:
        return signal.last_task_succeeded
    return signal.status != "error" and signal.error_code not in TASK_FAILED_CODES


def inputs_valid(signal: Signal, facts: Facts) -> bool:
    """The reported checks.inputsValid; absent: no input error code and no listed dependency failing."""
    if signal.inputs_valid is not None:
        return signal.inputs_valid
    return signal.error_code not in INPUT_FAILED_CODES and not facts.failing_dependencies


def config_healthy(signal: Signal, facts: Facts) -> bool:
    """The reported checks.configHealthy; absent: no configuration or authentication error code."""
    if signal.config_healthy is not None:
        return signal.config_healthy
    return signal.error_code not in CONFIG_FAILED_CODES


def conflict_cleared(signal: Signal, facts: Facts) -> bool:
    """No conflictId, no open conflicts reported, and no other agent claiming the agent's directive."""
    return signal.conflict_id is None and not signal.open_conflicts and facts.directive_claimants < 2


@dataclass(frozen=True)
class Criterion:
    """One success criterion: the kind of value playbooks.yaml gives it, its bounds, and when it holds."""

    name: str
    kind: str  # "bool" or "number"
    low: float | None
    high: float | None
    # (signal, facts, the playbook's value, the fleet's projected daily spend or None, the cap) -> held
    holds: Callable[[Signal, Facts, object, "float | None", float], bool]


CRITERIA: Mapping[str, Criterion] = {c.name: c for c in (
    Criterion("lastTaskSucceeded", "bool", None, None, lambda s, f, v, spend, cap: last_task_succeeded(s, f)),
    Criterion("inputsValid", "bool", None, None, lambda s, f, v, spend, cap: inputs_valid(s, f)),
    Criterion("configHealthy", "bool", None, None, lambda s, f, v, spend, cap: config_healthy(s, f)),
    Criterion("conflictCleared", "bool", None, None, lambda s, f, v, spend, cap: conflict_cleared(s, f)),
    Criterion("alignmentMin", "number", 0, 1, lambda s, f, v, spend, cap: s.alignment_ratio >= float(v)),
    Criterion("backlogAgeMaxMinutes", "number", 0, None,
              lambda s, f, v, spend, cap: s.backlog_age_seconds <= float(v) * 60),
    Criterion("budgetWithinCap", "bool", None, None, lambda s, f, v, spend, cap: spend is not None and spend <= cap),
)}
# Criteria about the whole fleet, judged once rather than per agent.
FLEET_CRITERIA = frozenset(("budgetWithinCap",))


def active(criteria: Mapping[str, object]) -> dict[str, object]:
    """The criteria that ask for something: a boolean criterion set to false asks for nothing."""
    return {k: v for k, v in criteria.items() if v is not False}


def check_criteria(criteria: Mapping[str, object], signals: Mapping[str, tuple[Signal | None, Facts]],
                   fleet_spend: float | None, budget_cap: float) -> dict[str, bool]:
    """Each active criterion for each agent of SIGNALS (`name` alone for one agent, `name[agent]` for several);
    an agent without a signal holds nothing."""
    checks: dict[str, bool] = {}
    several = len(signals) > 1
    for name, value in active(criteria).items():
        criterion = CRITERIA[name]
        if name in FLEET_CRITERIA:
            checks[name] = fleet_spend is not None and fleet_spend <= budget_cap
            continue
        for agent, (signal, facts) in signals.items():
            key = f"{name}[{agent}]" if several else name
            checks[key] = signal is not None and criterion.holds(signal, facts, value, fleet_spend, budget_cap)
    return checks
