"""The Grafana dashboards and provisioning: generated, committed, and structurally sound."""
import json
from pathlib import Path

import pytest
import yaml

from autonomy.settings import Settings
from devstack.dashboards import DASHBOARDS_DIR, render_all

REPO = Path(__file__).resolve().parent.parent
DATASOURCE_UID = "autonomy-prometheus"
BOARDS = {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def test_the_committed_dashboards_are_the_rendering_of_the_default_settings():
    fresh = render_all(Settings.from_env({}))
    assert set(fresh) == set(BOARDS)
    for name, board in fresh.items():
        assert json.loads(json.dumps(board, sort_keys=True)) == BOARDS[name], (
            f"grafana/dashboards/{name} is stale: run `autonomy dashboards render`")


def test_the_datasource_is_provisioned_with_the_fixed_uid():
    doc = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = doc["datasources"]
    assert (source["uid"], source["type"], source["url"]) == (DATASOURCE_UID, "prometheus", "http://prometheus:9090")


def test_a_file_provider_points_at_the_dashboards_folder():
    doc = yaml.safe_load((REPO / "grafana/provisioning/dashboards/autonomy.yml").read_text())
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_dashboard_has_a_fixed_uid_and_every_panel_a_query_on_the_fixed_datasource(name):
    board = BOARDS[name]
    assert board["uid"].startswith("autonomy-") and len(board["uid"]) <= 40
    assert board["panels"]
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == DATASOURCE_UID
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_the_uids_are_distinct():
    assert len({b["uid"] for b in BOARDS.values()}) == len(BOARDS)


def _state_mappings(panel):
    [mapping] = panel["fieldConfig"]["defaults"]["mappings"]
    return {value: (option["text"], option["color"]) for value, option in mapping["options"].items()}


def test_the_agent_tiles_map_all_three_states_to_text_and_colour():
    board = BOARDS["agent-tiles.json"]
    tile = next(p for p in board["panels"] if p.get("repeat") == "agent")
    timeline = next(p for p in board["panels"] if p["type"] == "state-timeline")
    expected = {"0": ("Healthy", "green"), "1": ("Recovering", "orange"), "2": ("Escalated", "red")}
    assert _state_mappings(tile) == expected and _state_mappings(timeline) == expected


def test_a_tile_is_repeated_by_an_agent_variable_from_label_values():
    board = BOARDS["agent-tiles.json"]
    variable = next(v for v in board["templating"]["list"] if v["name"] == "agent")
    assert variable["query"]["query"] == "label_values(autonomy_agent_info, agent)" and variable["includeAll"]
    tile = next(p for p in board["panels"] if p.get("repeat") == "agent")
    assert tile["type"] == "stat" and "$agent" in tile["targets"][0]["expr"]


def test_the_tile_shows_a_running_remediation():
    tile = next(p for p in BOARDS["agent-tiles.json"]["panels"] if p.get("repeat") == "agent")
    assert any("autonomy_remediation_in_progress" in t["expr"] for t in tile["targets"])
    [override] = tile["fieldConfig"]["overrides"]
    texts = {o["text"] for o in override["properties"][0]["value"][0]["options"].values()}
    assert "Auto-Resolve running" in texts


def test_the_tile_links_to_the_agents_remediation_log():
    tile = next(p for p in BOARDS["agent-tiles.json"]["panels"] if p.get("repeat") == "agent")
    [link] = tile["fieldConfig"]["defaults"]["links"]
    assert link["title"] == "View Remediation Log"
    assert link["url"] == "${receiver_url}/lineage?agent=${agent}"


def test_remediation_outcomes_are_annotations_with_the_packs_toasts_only_where_they_are_true():
    by_title = {a.get("titleFormat"): a.get("expr", "") for a in BOARDS["agent-tiles.json"]["annotations"]["list"]}
    assert {"Resolved by CoS: {{playbook}}", "Escalated to CEO (attempts exhausted)",
            "Escalated to CEO ({{reason}})", "Held for a human ({{reason}})"} <= set(by_title)
    assert 'reason=~"attempts_exhausted"' in by_title["Escalated to CEO (attempts exhausted)"]
    assert "attempts_exhausted" not in by_title["Escalated to CEO ({{reason}})"]
    assert "high_risk_step" in by_title["Escalated to CEO ({{reason}})"]
    assert "silenced" in by_title["Held for a human ({{reason}})"]
    assert 'result="ok"' in by_title["Resolved by CoS: {{playbook}}"]  # an attempt verified on fresh samples


def test_the_dashboards_reason_lists_are_the_receivers():
    from autonomy.vocabulary import ESCALATION_REASONS, GATE_REASONS
    from devstack.dashboards import ESCALATED_BY_LAYER, HELD

    assert set(ESCALATED_BY_LAYER.split("|")) | {"attempts_exhausted"} == set(ESCALATION_REASONS.values())
    assert set(HELD.split("|")) == set(GATE_REASONS.values())


def test_the_tiles_board_says_why_each_tile_is_in_its_state():
    panel = next(p for p in BOARDS["agent-tiles.json"]["panels"] if p["type"] == "table")
    assert "autonomy_agent_state_reason" in panel["targets"][0]["expr"]


def test_the_kpi_dashboard_has_every_kpi_and_its_goal_lines():
    exprs = {t["expr"] for p in BOARDS["kpis.json"]["panels"] for t in p["targets"]}
    for record in ("fleet:autonomy_auto_resolve:ratio7d", "classification:autonomy_recovery_seconds:mean7d",
                   "classification:autonomy_mttr_goal_seconds:constant",
                   "fleet:autonomy_conflict_recovery_seconds:p50_7d", "fleet:autonomy_escalations:increase7d",
                   "fleet:autonomy_incidents_skipped:increase7d", "fleet:autonomy_lineage_coverage:ratio7d",
                   "fleet:autonomy_incident_cost_dollars:per_resolved_incident7d",
                   "fleet:autonomy_agent_alignment_ratio:avg7d"):
        assert record in exprs
    assert {"vector(0.85)", "vector(0.95)", "vector(1)"} <= exprs


def test_the_slo_dashboard_draws_each_threshold_from_the_settings():
    exprs = {t["expr"] for p in BOARDS["slos.json"]["panels"] for t in p["targets"]}
    assert {"vector(0.94)", "vector(0.95)", "vector(900)", "vector(5)"} <= exprs
    stricter = render_all(Settings.from_env({"AUTOREM_SLO_SUCCESS": "0.97"}))["slos.json"]
    assert "vector(0.97)" in {t["expr"] for p in stricter["panels"] for t in p["targets"]}
