"""Verifying recovery on samples taken after the action ended, from Prometheus or from reported signals."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from autonomy.signal_contract import Signal

from .agent_view import FLEET, FLEET_SPEND, pack_metrics, signal_metrics
from .upstreams import PrometheusApi, UpstreamError, promql_string


@dataclass(frozen=True)
class Criterion:
    """A success criterion of the pack, defined once: a PromQL template and whether it holds on a result."""

    name: str
    promql: str  # {agent} is a PromQL string literal, {value} the playbook's value, {cap} the budget cap
    holds_when_empty: bool = False
    on_signal: Callable[[Signal, object], bool] = field(default=lambda s, v: False, compare=False)


_CONFLICT_OPEN = (
    "(autonomy_agent_conflict{{agent={agent}}} == 1)"
    " or (autonomy_agent_open_conflicts{{agent={agent}}} > 0)"
    " or (count by (directive_id) (max by (agent, directive_id) (autonomy_agent_directive_claim == 1)) >= 2"
    " and on (directive_id) max by (directive_id) (autonomy_agent_directive_claim{{agent={agent}}} == 1))"
)

CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("lastTaskSucceeded", "autonomy_agent_last_task_succeeded{{agent={agent}}} == 1",
              on_signal=lambda s, v: s.last_task_succeeded is True),
    Criterion("inputsValid", "autonomy_agent_inputs_valid{{agent={agent}}} == 1",
              on_signal=lambda s, v: s.inputs_valid is True),
    Criterion("configHealthy", "autonomy_agent_config_healthy{{agent={agent}}} == 1",
              on_signal=lambda s, v: s.config_healthy is True),
    Criterion("alignmentMin", "autonomy_agent_alignment_ratio{{agent={agent}}} >= {value}",
              on_signal=lambda s, v: s.alignment_ratio >= float(v)),
    Criterion("backlogAgeMaxMinutes", "autonomy_agent_backlog_age_seconds{{agent={agent}}} <= {value} * 60",
              on_signal=lambda s, v: s.backlog_age_seconds <= float(v) * 60),
    Criterion("conflictCleared", _CONFLICT_OPEN, holds_when_empty=True,
              on_signal=lambda s, v: s.conflict_id is None and not s.open_conflicts),
    Criterion("budgetWithinCap", FLEET_SPEND + " <= {cap}"),
)}

FRESH = ("autonomy_agent_last_signal_timestamp_seconds{{agent={agent}}} > {t}"
         " and timestamp(autonomy_agent_last_signal_timestamp_seconds{{agent={agent}}}) > {t}")


@dataclass(frozen=True)
class VerifyResult:
    """Whether the criteria held on fresh samples; why not; the per-criterion results and the `after` metrics."""

    ok: bool
    reason: str
    checks: Mapping[str, bool]
    after: Mapping[str, float]
    polls: int


def _active(criteria: Mapping[str, object]) -> dict[str, object]:
    # A boolean criterion set to false asks for nothing.
    return {k: v for k, v in criteria.items() if v is not False}


def verify_recovery(prom: PrometheusApi, agent: str, criteria: Mapping[str, object], action_end: float,
                    fresh_agents: Iterable[str], timeout: float, interval: float, budget_cap: float,
                    stop: threading.Event | None = None, clock: Callable[[], float] = time.time) -> VerifyResult:
    """Poll Prometheus until every criterion holds on samples newer than ACTION_END, or TIMEOUT passes."""
    stop = stop or threading.Event()
    wanted = _active(criteria)
    fresh = sorted({a for a in fresh_agents if a != FLEET})
    deadline = clock() + timeout
    polls, reason, checks = 0, "not verified", {}
    while True:
        polls += 1
        try:
            stale = [a for a in fresh if not prom.query(FRESH.format(agent=promql_string(a), t=f"{action_end:.3f}"))]
            if stale:
                reason = f"no sample newer than the action yet from {', '.join(stale)}"
            else:
                checks = {}
                for name, value in wanted.items():
                    c = CRITERIA[name]
                    rows = prom.query(c.promql.format(agent=promql_string(agent), value=value, cap=f"{budget_cap:g}"))
                    checks[name] = (not rows) if c.holds_when_empty else bool(rows)
                failed = [n for n, held in checks.items() if not held]
                if not failed:
                    return VerifyResult(True, "criteria held on fresh samples", checks,
                                        _after(prom, agent), polls)
                reason = f"criteria not met on fresh samples: {', '.join(failed)}"
        except UpstreamError as exc:
            reason = f"prometheus unreachable: {exc}"
        if clock() >= deadline or stop.wait(min(interval, max(0.0, deadline - clock()))):
            return VerifyResult(False, reason, checks, _after(prom, agent), polls)


def _after(prom: PrometheusApi, agent: str) -> dict:
    try:
        return pack_metrics(prom, agent)
    except UpstreamError:
        return {}


def verify_on_signals(latest: Callable[[str], Signal | None], agent: str, criteria: Mapping[str, object],
                      action_end: float, timeout: float, interval: float, budget_cap: float,
                      all_latest: Callable[[], Iterable[Signal]] = lambda: (),
                      stop: threading.Event | None = None, clock: Callable[[], float] = time.time) -> VerifyResult:
    """The direct path: the same criteria on the agent's latest reported signal, once it is newer than the action."""
    stop = stop or threading.Event()
    wanted = _active(criteria)
    deadline = clock() + timeout
    polls, reason, checks = 0, "not verified", {}
    while True:
        polls += 1
        signal = latest(agent)
        if signal is None or signal.timestamp <= action_end:
            reason = f"no signal from {agent} newer than the action yet"
        else:
            checks = {}
            for name, value in wanted.items():
                if name == "budgetWithinCap":
                    checks[name] = sum(s.cost_burn_dollars_per_hour for s in all_latest()) * 24 <= budget_cap
                else:
                    checks[name] = CRITERIA[name].on_signal(signal, value)
            failed = [n for n, held in checks.items() if not held]
            if not failed:
                return VerifyResult(True, "criteria held on a fresh signal", checks, signal_metrics(signal), polls)
            reason = f"criteria not met on a fresh signal: {', '.join(failed)}"
        if clock() >= deadline or stop.wait(min(interval, max(0.0, deadline - clock()))):
            return VerifyResult(False, reason, checks, signal_metrics(latest(agent)), polls)
