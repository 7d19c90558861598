"""An agent as Prometheus sees it: its latest signal rebuilt from the exporter's series, plus cross-agent facts."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from autonomy.signal_contract import Signal
from autonomy.signal_extensions import EXTENSIONS, extensions_of

from .classifier import Facts
from .upstreams import PrometheusApi, promql_alternatives, promql_string, samples

FLEET = "fleet"
PACK_METRICS = {
    "autonomy_agent_success_ratio": ("successRate", 1.0),
    "autonomy_agent_alignment_ratio": ("alignment", 1.0),
    "autonomy_agent_backlog_age_seconds": ("backlogAgeMinutes", 1 / 60),
    "autonomy_agent_cost_burn_dollars_per_hour": ("costBurnRatePerHour", 1.0),
}
FLEET_SPEND = "sum(max by (agent) (autonomy_agent_cost_burn_dollars_per_hour)) * 24"


@dataclass(frozen=True)
class AgentView:
    """What the receiver knows of an agent at one moment."""

    signal: Signal | None
    facts: Facts
    metrics: dict  # the pack's section 8 `before`/`after` shape
    problem: str | None = None  # why the view is empty (the upstream could not be read)


def pack_metrics(prom: PrometheusApi, agent: str) -> dict:
    """successRate, alignment, backlogAgeMinutes, costBurnRatePerHour of AGENT (or the fleet's spend)."""
    if agent == FLEET:
        rows = samples(prom.query(FLEET_SPEND))
        return {"projectedDailySpendDollars": round(float(rows[0]["value"][1]), 4)} if rows else {}
    names = "|".join(PACK_METRICS)
    rows = prom.query(f'{{__name__=~"{names}", agent={promql_string(agent)}}}')
    out = {}
    for row in samples(rows, "__name__"):
        if row["metric"]["__name__"] not in PACK_METRICS:
            continue
        key, scale = PACK_METRICS[row["metric"]["__name__"]]
        out[key] = round(float(row["value"][1]) * scale, 6)
    return out


def _signal_from_series(agent: str, rows: list[dict]) -> Signal | None:
    rows = samples(rows, "__name__")
    values: dict[str, float] = {}
    labels: dict[str, list[dict]] = {}
    for row in rows:
        name = row["metric"]["__name__"]
        labels.setdefault(name, []).append(row["metric"])
        if float(row["value"][1]) == 1.0 or name not in values:
            values[name] = float(row["value"][1])
    if "autonomy_agent_last_signal_timestamp_seconds" not in values:
        return None

    def first_label(metric: str, label: str, only_set: bool = True) -> str | None:
        for row in rows:
            if row["metric"]["__name__"] == metric and (not only_set or float(row["value"][1]) == 1.0):
                return row["metric"].get(label)
        return None

    def flag(metric: str) -> bool | None:
        return None if metric not in values else values[metric] == 1.0

    def optional_int(metric: str) -> int | None:
        value = values.get(metric)
        return int(value) if value is not None and math.isfinite(value) else None

    return Signal(
        agent=agent,
        status=first_label("autonomy_agent_status", "autonomy_agent_status") or "healthy",
        last_report="(rebuilt from Prometheus)",
        success_ratio=values.get("autonomy_agent_success_ratio", 1.0),
        alignment_ratio=values.get("autonomy_agent_alignment_ratio", 1.0),
        backlog_age_seconds=values.get("autonomy_agent_backlog_age_seconds", 0.0),
        cost_burn_dollars_per_hour=values.get("autonomy_agent_cost_burn_dollars_per_hour", 0.0),
        timestamp=values["autonomy_agent_last_signal_timestamp_seconds"],
        domain=first_label("autonomy_agent_info", "domain") or None,
        directive_id=first_label("autonomy_agent_directive_claim", "directive_id"),
        conflict_id=first_label("autonomy_agent_conflict", "conflict_id"),
        error_code=first_label("autonomy_agent_error_code", "code"),
        queue_depth=optional_int("autonomy_agent_queue_depth"),
        open_conflicts=optional_int("autonomy_agent_open_conflicts"),
        dependencies=tuple(sorted(m["dependency"] for m in labels.get("autonomy_agent_dependency", []))),
        last_task_succeeded=flag("autonomy_agent_last_task_succeeded"),
        inputs_valid=flag("autonomy_agent_inputs_valid"),
        config_healthy=flag("autonomy_agent_config_healthy"),
    )


def read_agent(prom: PrometheusApi, agent: str, alert_classes: frozenset[str], silent_seconds: float,
               budget_cap_daily: float, clock=time.time) -> AgentView:
    """Rebuild AGENT's signal from Prometheus and gather the facts no single signal carries."""
    return read_agents(prom, [agent], silent_seconds, budget_cap_daily, alert_classes, clock)[agent]


def _fleet_view(prom: PrometheusApi, alert_classes: frozenset[str], budget_cap_daily: float) -> AgentView:
    rows = samples(prom.query(FLEET_SPEND))
    spend = float(rows[0]["value"][1]) if rows else 0.0
    return AgentView(None, Facts(alert_classes=alert_classes, budget_over_cap=spend > budget_cap_daily),
                     {"projectedDailySpendDollars": round(spend, 4)})


def read_agents(prom: PrometheusApi, agents, silent_seconds: float, budget_cap_daily: float,
                alert_classes: frozenset[str] = frozenset(), clock=time.time) -> dict[str, AgentView]:
    """The views of AGENTS (read_agent's), from one query per kind for all of them."""
    names = sorted(set(agents) - {FLEET})
    views = {FLEET: _fleet_view(prom, alert_classes, budget_cap_daily)} if FLEET in agents else {}
    if not names:
        return views
    rows = prom.query(f'{{__name__=~"autonomy_agent_.+", agent=~{promql_alternatives(names)}}}')
    by_agent: dict[str, list[dict]] = {}
    for row in rows:
        by_agent.setdefault(row.get("metric", {}).get("agent"), []).append(row)
    signals = {a: _signal_from_series(a, by_agent.get(a, [])) for a in names}
    deps = sorted({d for s in signals.values() if s for d in s.dependencies})
    failing: set[str] = set()
    if deps:  # a dependency fails when its own signal is in error or older than the silence threshold
        alternatives = promql_alternatives(deps)
        error = f'autonomy_agent_status{{agent=~{alternatives},autonomy_agent_status="error"}} == 1'
        stale = f'time() - autonomy_agent_last_signal_timestamp_seconds{{agent=~{alternatives}}} > {silent_seconds:g}'
        failing = {row["metric"]["agent"] for q in (error, stale) for row in samples(prom.query(q), "agent")}
    directives = sorted({s.directive_id for s in signals.values() if s and s.directive_id})
    counts: dict[str, float] = {}
    if directives:
        query = (f"count by (directive_id) (max by (agent, directive_id) (autonomy_agent_directive_claim"
                 f"{{directive_id=~{promql_alternatives(directives)}}} == 1))")
        counts = {r["metric"]["directive_id"]: float(r["value"][1]) for r in samples(prom.query(query), "directive_id")}
    now = clock()
    for agent, signal in signals.items():
        count = counts.get(signal.directive_id, 0.0) if signal and signal.directive_id else 0.0
        facts = Facts(failing_dependencies=frozenset(d for d in (signal.dependencies if signal else ()) if d in failing),
                      directive_claimants=int(count) if 0 <= count < 1e9 else 0,  # NaN and nonsense: none
                      alert_classes=alert_classes, silent=signal is None or now - signal.timestamp > silent_seconds)
        views[agent] = AgentView(signal, facts, signal_metrics(signal))
    return views


def signal_metrics(signal: Signal | None) -> dict:
    """The section 8 metrics of a signal, and the extensions it was sent with (the lineage's before/after)."""
    if signal is None:
        return {}
    metrics = {"successRate": signal.success_ratio, "alignment": signal.alignment_ratio,
               "backlogAgeMinutes": round(signal.backlog_age_seconds / 60, 6),
               "costBurnRatePerHour": signal.cost_burn_dollars_per_hour}
    extensions = extensions_of(signal)  # none on a signal rebuilt from Prometheus: agent_extensions.py reads them
    return {**metrics, EXTENSIONS: extensions} if extensions else metrics


def view_from_signals(agent: str, signals: list[Signal], silent_seconds: float, clock=time.time) -> AgentView:
    """The direct path's view: the agent's latest reported signal, with facts from the other agents' signals."""
    by_agent = {s.agent: s for s in signals}
    signal = by_agent.get(agent)
    if signal is None:
        return AgentView(None, Facts(silent=True), {})
    now = clock()
    failing = frozenset(d for d in signal.dependencies if d in by_agent and (
        by_agent[d].status == "error" or now - by_agent[d].timestamp > silent_seconds))
    claimants = sum(1 for s in signals if signal.directive_id and s.directive_id == signal.directive_id)
    facts = Facts(failing_dependencies=failing, directive_claimants=claimants,
                  silent=now - signal.timestamp > silent_seconds)
    return AgentView(signal, facts, signal_metrics(signal))
