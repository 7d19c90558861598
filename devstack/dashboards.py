"""Grafana dashboards as code: agent tiles, KPIs and SLOs, rendered to grafana/dashboards/*.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autonomy.settings import Settings

from .checkout import DASHBOARDS_DIR
from .rule_render import load_thresholds

DATASOURCE = {"type": "prometheus", "uid": "autonomy-prometheus"}
STATE_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "Healthy", "color": "green", "index": 0},
    "1": {"text": "Recovering", "color": "orange", "index": 1},
    "2": {"text": "Escalated", "color": "red", "index": 2},
}}]
RUNNING_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "idle", "color": "text", "index": 0},
    "1": {"text": "Auto-Resolve running", "color": "blue", "index": 1},
}}]
AGENT = 'agent=~"$agent"'
# Tile reasons (webhook_receiver/agent_states.py): the layer's own escalations besides exhausted attempts, and
# holds a person's decision (or a check the layer cannot make) put on an unhealthy agent.
ESCALATED_BY_LAYER = "high_risk_step|budget_cap|action_target_unsafe|priority_unranked|no_playbook|action_not_implemented"
HELD = "silenced|kill_switch|not_in_canary|class_not_enabled|conflict_escalated|dry_run|alertmanager_unreachable|grafana_unconfigured|grafana_unreachable|suppressed|stale_evidence"


def target(expr: str, legend: str = "", ref: str = "A") -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def goal(value: float, legend: str, ref: str) -> dict:
    """A constant series drawn as a goal or threshold line (a plain PromQL `vector`)."""
    return target(f"vector({value:g})", legend, ref)


def panel(kind: str, title: str, targets: list[dict], grid: tuple[int, int, int, int], unit: str = "",
          **extra: Any) -> dict:
    x, y, w, h = grid
    body = {"type": kind, "title": title, "datasource": DATASOURCE, "targets": targets,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
            "options": {}}
    for key, value in extra.items():
        if key == "defaults":
            body["fieldConfig"]["defaults"].update(value)
        elif key == "overrides":
            body["fieldConfig"]["overrides"] = value
        else:
            body[key] = value
    return body


def agent_variable() -> dict:
    return {"name": "agent", "label": "agent", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(autonomy_agent_info, agent)", "refId": "agent"},
            "definition": "label_values(autonomy_agent_info, agent)", "refresh": 2, "multi": True,
            "includeAll": True, "current": {"text": "All", "value": "$__all"}, "sort": 1}


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict], annotations: list[dict] = (),
              refresh: str = "15s") -> dict:
    for number, p in enumerate(panels, start=1):
        p["id"] = number
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
               "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}
    return {"uid": uid, "title": title, "tags": ["autonomy-layer"], "timezone": "browser", "editable": True,
            "schemaVersion": 39, "version": 1, "refresh": refresh, "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": list(variables)}, "annotations": {"list": [builtin, *annotations]},
            "panels": panels}


def agent_tiles() -> dict:
    """Healthy / Recovering / Escalated per agent, the remediation spinner, the log link, outcomes as annotations."""
    receiver = {"name": "receiver_url", "label": "receiver", "type": "textbox", "query": "http://localhost:9818",
                "current": {"text": "http://localhost:9818", "value": "http://localhost:9818"}}
    tile = panel("stat", "$agent", [
        target('agent:autonomy_agent_state:code{agent="$agent"}', "state", "A"),
        target('max by (agent) (autonomy_remediation_in_progress{agent="$agent"}) '
               'or max by (agent) (autonomy_agent_info{agent="$agent"}) * 0', "remediation", "B"),
    ], (0, 0, 4, 5), repeat="agent", repeatDirection="h", maxPerRow=6,
        options={"colorMode": "background", "graphMode": "none", "textMode": "value", "justifyMode": "center",
                 "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        defaults={"mappings": STATE_MAPPINGS, "links": [{
            "title": "View Remediation Log", "url": "${receiver_url}/lineage?agent=${agent}", "targetBlank": True}],
            "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]}},
        overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [{"id": "mappings", "value": RUNNING_MAPPINGS}]}])
    timeline = panel("state-timeline", "Agent states over time", [
        target(f"agent:autonomy_agent_state:code{{{AGENT}}}", "{{agent}}")], (0, 5, 24, 8),
        options={"showValue": "never", "mergeValues": True}, defaults={"mappings": STATE_MAPPINGS})
    # Why a tile is Recovering or Escalated (queued, running, attempts_exhausted, silenced, ...); "ok" otherwise.
    reasons = panel("table", "Why: the reason behind each tile", [dict(target(
        f'max by (agent, reason) (autonomy_agent_state_reason{{{AGENT}}} == 1) or on (agent) '
        f'label_replace(max by (agent) (autonomy_agent_info{{{AGENT}}}) * 0, "reason", "ok", "", "")', "{{agent}}"),
        format="table", instant=True, range=False)], (0, 19, 24, 6),
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}])
    # In flight is each receiver's own (summed); the queue is the shared store's, reported alike by every receiver.
    incidents = panel("timeseries", "Remediations in progress", [
        target("sum(autonomy_remediations_in_flight)", "in flight", "A"),
        target("max(autonomy_work_queue_depth)", "queued", "B")], (0, 13, 12, 6))
    switch = panel("stat", "Automatic remediation", [
        target("min(autonomy_remediation_enabled)", "enabled")], (12, 13, 12, 6),
        defaults={"mappings": [{"type": "value", "options": {
            "0": {"text": "DISABLED (kill switch)", "color": "red", "index": 0},
            "1": {"text": "enabled", "color": "green", "index": 1}}}]})
    # The staged rollout (pack section 11): who is in the canary, which classes the layer remediates.
    canary = panel("table", "Rollout: agents remediated", [dict(target(
        'max by (agent) (autonomy_rollout_agent_included == 1) or '
        'label_replace(max(autonomy_rollout_all_agents) == 1, "agent", "every agent (*)", "", "")', ""),
        format="table", instant=True, range=False)], (0, 25, 12, 5),
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}])
    classes = panel("stat", "Rollout: classes enabled", [
        target("max by (classification) (autonomy_rollout_class_enabled)", "{{classification}}")], (12, 25, 12, 5),
        options={"colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                 "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        defaults={"mappings": [{"type": "value", "options": {
            "0": {"text": "observed only", "color": "text", "index": 0},
            "1": {"text": "enabled", "color": "green", "index": 1}}}]})
    ok_attempts = 'autonomy_remediation_attempts_total{result="ok"}'

    def became(reasons: str) -> str:  # the moment an agent took on one of REASONS (a rising edge)
        series = f'autonomy_agent_state_reason{{reason=~"{reasons}"}}'
        return f"({series} == 1) unless ({series} offset 1m == 1)"

    # The pack's texts only where they are true: an attempt verified on fresh samples, attempts exhausted.
    annotations = [
        {"name": "Resolved by CoS", "datasource": DATASOURCE, "enable": True, "iconColor": "green",
         "expr": f"(increase({ok_attempts}[1m]) > 0) or ({ok_attempts} unless {ok_attempts} offset 1m)",
         "titleFormat": "Resolved by CoS: {{playbook}}", "textFormat": "{{agent}} ({{classification}})",
         "tagKeys": "agent,classification", "step": "30s"},
        {"name": "Escalated to CEO", "datasource": DATASOURCE, "enable": True, "iconColor": "red",
         "expr": became("attempts_exhausted"), "titleFormat": "Escalated to CEO (attempts exhausted)",
         "textFormat": "{{agent}}", "tagKeys": "agent", "step": "30s"},
        {"name": "Escalated to CEO, other reasons", "datasource": DATASOURCE, "enable": True, "iconColor": "red",
         "expr": became(ESCALATED_BY_LAYER), "titleFormat": "Escalated to CEO ({{reason}})",
         "textFormat": "{{agent}}", "tagKeys": "agent,reason", "step": "30s"},
        {"name": "Held for a human", "datasource": DATASOURCE, "enable": True, "iconColor": "orange",
         "expr": became(HELD), "titleFormat": "Held for a human ({{reason}})", "textFormat": "{{agent}}",
         "tagKeys": "agent,reason", "step": "30s"},
    ]
    return dashboard("autonomy-agents", "Autonomy layer: agent tiles",
                     [tile, timeline, incidents, switch, reasons, canary, classes], [agent_variable(), receiver],
                     annotations)


def kpis(settings: Settings) -> dict:
    """The pack's weekly KPIs (section 13) from the recording rules, with their goal lines."""
    ratio = {"min": 0, "max": 1}
    goal_share = load_thresholds(settings).values["auto_resolve_goal"]
    panels = [
        panel("timeseries", "Auto-resolve % (7 days)", [
            target("fleet:autonomy_auto_resolve:ratio7d", "auto-resolved (verified) of the incidents handled"),
            goal(goal_share, f"goal {goal_share * 100:g} %", "B")],
            (0, 0, 12, 8), "percentunit", defaults=ratio),
        panel("timeseries", "MTTR per class, from onset (7 days)", [
            target("classification:autonomy_recovery_seconds:mean7d", "{{classification}}"),
            target("classification:autonomy_mttr_goal_seconds:constant", "{{classification}} goal", "B")],
            (12, 0, 12, 8), "s"),
        panel("timeseries", "Conflict half-life (7 days)", [
            target("fleet:autonomy_conflict_recovery_seconds:p50_7d", "median time to clear a conflict")],
            (0, 8, 8, 8), "s"),
        panel("timeseries", "Escalations and holds per week", [
            target("fleet:autonomy_escalations:increase7d", "escalations"),
            target("fleet:autonomy_incidents_skipped:increase7d", "held (silence, kill switch, canary, dry run)",
                   "B")], (8, 8, 8, 8), "short"),
        panel("timeseries", "Cost per resolved incident (7 days)", [
            target("fleet:autonomy_incident_cost_dollars:per_resolved_incident7d", "dollars per resolved incident")],
            (16, 8, 8, 8), "currencyUSD"),
        panel("timeseries", "Alignment drift (7 days)", [
            target("fleet:autonomy_agent_alignment_ratio:avg7d", "fleet alignment"),
            target("agent:autonomy_agent_alignment_ratio:avg7d", "{{agent}}", "B"),
            goal(settings.slo_align, "goal 95 %", "C")], (0, 16, 12, 8), "percentunit", defaults=ratio),
        panel("timeseries", "Projected daily spend", [
            target("fleet:autonomy_cost_projected_daily_dollars:sum", "projected"),
            goal(settings.budget_cap_daily_usd, "cap", "B")], (12, 16, 12, 8), "currencyUSD"),
        panel("timeseries", "Lineage coverage (7 days)", [
            target("fleet:autonomy_lineage_coverage:ratio7d", "decisions with their lineage line"),
            goal(1, "goal 100 %", "B")], (0, 24, 12, 8), "percentunit", defaults=ratio),
    ]
    return dashboard("autonomy-kpis", "Autonomy layer: KPIs", panels, [], refresh="1m")


def slos(settings: Settings) -> dict:
    """Each agent's SLO signals against their thresholds (the AUTOREM_* settings)."""
    def slo(title: str, metric: str, threshold: float, label: str, grid, unit: str, **extra) -> dict:
        return panel("timeseries", title, [target(f"{metric}{{{AGENT}}}", "{{agent}}"),
                                           goal(threshold, label, "B")], grid, unit, **extra)
    panels = [
        slo("Success ratio", "autonomy_agent_success_ratio", settings.slo_success,
            f"SLO {settings.slo_success:g}", (0, 0, 12, 8), "percentunit"),
        slo("Alignment", "autonomy_agent_alignment_ratio", settings.slo_align,
            f"SLO {settings.slo_align:g}", (12, 0, 12, 8), "percentunit"),
        slo("Backlog age", "autonomy_agent_backlog_age_seconds", settings.slo_backlog_min * 60,
            f"SLO {settings.slo_backlog_min:g} min", (0, 8, 12, 8), "s"),
        slo("Queue depth", "autonomy_agent_queue_depth", settings.queue_depth_max,
            f"max {settings.queue_depth_max:g}", (12, 8, 12, 8), "short"),
        panel("timeseries", "Cost burn", [
            target(f"autonomy_agent_cost_burn_dollars_per_hour{{{AGENT}}}", "{{agent}}"),
            target("sum(max by (agent) (autonomy_agent_cost_burn_dollars_per_hour))", "fleet", "B"),
            goal(round(settings.budget_cap_daily_usd / 24, 4), "fleet cap per hour", "C")],
            (0, 16, 24, 8), "currencyUSD"),
    ]
    return dashboard("autonomy-slos", "Autonomy layer: SLOs per agent", panels, [agent_variable()])


def render_all(settings: Settings) -> dict[str, dict]:
    """file name -> dashboard, for the given settings (thresholds and goal lines follow them)."""
    return {"agent-tiles.json": agent_tiles(), "kpis.json": kpis(settings), "slos.json": slos(settings)}


def write_all(settings: Settings, out_dir: Path = DASHBOARDS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in render_all(settings).items():
        path = out_dir / name
        path.write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
