"""The soak's report: the pack's success criteria (§0, §13) per stage and for the week, and the ground truth."""
from __future__ import annotations

import statistics

from .demo import outcome_tally
from .drills import every_page
from .fleet_truth import FLEET
from .soak_schedule import Schedule
from .soak_truth import Margins, check

# Pack section 13's MTTR targets from onset, and section 0's: TRANSIENT and CAPACITY under 5 minutes.
MTTR_TARGETS = {"TRANSIENT": 180.0, "CAPACITY": 480.0, "CONFLICT": 600.0}
SECTION0_MTTR = {"TRANSIENT": 300.0, "CAPACITY": 300.0}
AUTO_RESOLVE_GOAL = 0.85
RULES = {"cost_per_resolved_incident_dollars": "fleet:autonomy_incident_cost_dollars:per_resolved_incident7d",
         "alignment_drift": "fleet:autonomy_alignment_drift:avg7d",
         "lineage_coverage_rules": "fleet:autonomy_lineage_coverage:ratio7d"}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def kpis(incidents: list[dict], time_factor: float, unfixable: dict[str, bool] | None = None) -> dict:
    """The pack's figures over INCIDENTS (durations in simulated seconds): each incident once, by its outcome."""
    count, handled, wall = outcome_tally(incidents)
    by_class = {c: [s / time_factor for s in v] for c, v in wall.items()}
    mttr = {c: {"mean": round(statistics.mean(v), 1), "p50": _quantile(v, 0.5), "p95": _quantile(v, 0.95),
                "n": len(v), "target": MTTR_TARGETS.get(c)} for c, v in sorted(by_class.items())}
    escalated = [i for i in incidents if i.get("outcome") == "escalated"]
    out = {"incidents": len(incidents), "auto_resolved": count["auto_resolved"], "handled": handled,
           "auto_resolve_ratio": round(count["auto_resolved"] / handled, 4) if handled else None,
           "escalated": len(escalated), "held": count["skipped"], "mttr_s_by_class": mttr,
           "conflict_half_life_s": mttr.get("CONFLICT", {}).get("p50")}
    if unfixable is not None:
        out["escalated_correctly"] = sum(1 for i in escalated if unfixable.get(i["id"]))
    return out


def _unfixable(incidents: list[dict], intervals: list[dict]) -> dict[str, bool]:
    """Per incident: whether a fault the layer cannot fix held on its agents while it was open."""
    out = {}
    for i in incidents:
        agents = set(i.get("claimants") or [i["agent"]])
        end = i.get("closed_at") or i.get("updated_at") or float("inf")
        out[i["id"]] = any((t["agent"] in agents or (FLEET in agents and t["agent"] == FLEET)) and not t["fixable"]
                           and t["start"] <= end and (t["end"] is None or t["end"] >= i["opened_at"])
                           for t in intervals)
    return out


def _rule_values(stack) -> dict:
    out = {}
    for key, record in RULES.items():
        rows = stack.prometheus.query(record)
        out[key] = round(float(rows[0]["value"][1]), 4) if rows else None
    return out


def report(plan: Schedule, runner, started: float, ended: float) -> dict:
    """Everything the soak measured, as one JSON-ready dict; `passed` only if section 0 holds and every
    ground-truth count is 0."""
    stack, fleet, tf = runner.stack, runner.fleet, runner.tf
    incidents = [i for i in runner.incidents() if i["opened_at"] >= started]
    lineage = every_page(lambda p: stack.receiver_call("GET", "/api/v1/lineage", params=p), "entries")["entries"]
    intervals = fleet.truth_intervals()
    with fleet.lock:
        calls = [(ts, agent, action) for ts, agent, action, _ in fleet.calls]
    margins = Margins.scaled(tf, 0.5)
    truth = check(intervals, incidents, lineage, calls, runner.log.silences, runner.log.switched_off, margins, ended)
    unfixable = _unfixable(incidents, intervals)
    week = kpis(incidents, tf, unfixable)
    stages, starts = [], [t for t, _ in runner.log.stages] + [float("inf")]
    for n, (t, stage) in enumerate(runner.log.stages):
        mine = [i for i in incidents if t <= i["opened_at"] < starts[n + 1]]
        stages.append({"stage": stage.name, "agents": list(stage.agents or ["*"]), "classes": list(stage.classes),
                       **kpis(mine, tf, unfixable)})
    rules = _rule_values(stack)
    if rules["cost_per_resolved_incident_dollars"] is not None:  # spend accrues in wall time: back to simulated
        rules["cost_per_resolved_incident_dollars"] = round(rules["cost_per_resolved_incident_dollars"] / tf, 4)
    with_lines = {e.get("incident_id") for e in lineage}
    coverage = round(sum(1 for i in incidents if i["id"] in with_lines) / len(incidents), 4) if incidents else None
    mttr_ok = all((week["mttr_s_by_class"].get(c) or {}).get("mean", 0) < limit for c, limit in SECTION0_MTTR.items())
    counts = truth.counts()
    passed = bool(week["auto_resolve_ratio"] is not None and week["auto_resolve_ratio"] >= AUTO_RESOLVE_GOAL
                  and mttr_ok and coverage == 1.0 and rules["lineage_coverage_rules"] in (None, 1.0)
                  and not any(counts.values()) and not runner.log.timed_out)
    return {"passed": passed, "seed": plan.seed, "agents": len(plan.roles), "episodes": len(plan.episodes),
            "simulated_days": plan.days, "wall_seconds": round(ended - started, 1), "time_factor": tf,
            **week, "escalations_per_week": round(week["escalated"] * 7 / plan.days, 1),
            "lineage_coverage": coverage, "lineage_lines": len(lineage), **rules,
            "ground_truth": counts, "ground_truth_examples": truth.examples(),
            "faults": len(intervals), "operator_fixes": runner.log.operator_clears,
            "receiver_restarts": len(runner.log.restarts), "episodes_timed_out": runner.log.timed_out,
            "stages": stages}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def table(r: dict) -> str:
    """The report as the terminal shows it."""
    def mttr(m: dict) -> str:
        return ", ".join(f"{c} p50 {v['p50']:g} s / p95 {v['p95']:g} s (target {v['target'] or '-'} s)"
                         for c, v in m.items()) or "-"
    rows = [("simulated span", f"{r['simulated_days']:g} days, {r['agents']} agents, seed {r['seed']}; "
                               f"wall {r['wall_seconds']:.0f} s (time x{1 / r['time_factor']:g})"),
            ("incidents", f"{r['incidents']} ({r['faults']} fault conditions in the fleet's truth)"),
            ("auto-resolved", f"{_pct(r['auto_resolve_ratio'])} of {r['handled']} handled (goal >= 85 %)"),
            ("escalated", f"{r['escalated']}, of which correctly (unfixable): {r.get('escalated_correctly', 0)}; "
                          f"{r['escalations_per_week']:g} per week"),
            ("held for a person", str(r["held"])),
            ("MTTR from onset", mttr(r["mttr_s_by_class"])),
            ("conflict half-life", "-" if r["conflict_half_life_s"] is None else f"{r['conflict_half_life_s']:g} s"),
            ("cost per resolved incident", "-" if r["cost_per_resolved_incident_dollars"] is None
             else f"$ {r['cost_per_resolved_incident_dollars']:.4f}"),
            ("alignment drift", "-" if r["alignment_drift"] is None else f"{r['alignment_drift']:+.4f}"),
            ("lineage coverage", f"{_pct(r['lineage_coverage'])} of incidents; rules {r['lineage_coverage_rules']}")]
    rows += [(f"ground truth: {k.replace('_', ' ')}", str(v)) for k, v in r["ground_truth"].items()]
    rows += [(f"stage {s['stage']}", f"{s['incidents']} incidents, auto-resolved {_pct(s['auto_resolve_ratio'])}, "
              f"{s['escalated']} escalated, {s['held']} held") for s in r["stages"]]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"{'passed':<{width}}  {'yes' if r['passed'] else 'NO'}")
    return "\n".join(lines)
