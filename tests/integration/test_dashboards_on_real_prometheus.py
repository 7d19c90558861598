"""Every dashboard panel's PromQL, variables substituted, returns data on the real Prometheus fed by the layer."""
import json

import pytest
import requests

from devstack.dashboards import DASHBOARDS_DIR
from devstack.demo import TIME_FACTOR, layer_env
from devstack.drills import DrillContext, backlog_surge, directive_overlap, transient_timeout
from devstack.fleet import SimulatedFleet, fleet_heartbeat
from devstack.layer_stack import LayerStack
from devstack.local_stack import ServedApp
from devstack.polling import wait_until
from tests.conftest import real_binary

pytestmark = pytest.mark.integration
BOARDS = {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def instant(prometheus, expr):
    reply = requests.get(prometheus.url + "/api/v1/query", params={"query": expr}, timeout=10)
    assert reply.status_code == 200, (expr, reply.text)
    return reply.json()["data"]["result"]


def test_every_panel_query_returns_data_for_the_expected_agents(tmp_path):
    real_binary("prometheus")
    real_binary("alertmanager")
    fleet = SimulatedFleet()
    agents = sorted(fleet.agents)
    with ServedApp(fleet.app) as fleet_server, LayerStack(tmp_path, fleet_server.url, env=layer_env(
            fleet_server.url, fleet), time_factor=TIME_FACTOR) as stack:
        beat = fleet_heartbeat(fleet, stack.push_url, stack.push_token, interval=0.5).start()
        try:
            wait_until(lambda: instant(stack.prometheus, f"count(autonomy_agent_info) >= {len(agents)}"), 60,
                       "the whole fleet in Prometheus")
            ctx = DrillContext(stack, fleet, lambda text: None)
            for drill in (transient_timeout, directive_overlap, backlog_surge):
                assert drill(ctx).passed
            for record in ("fleet:autonomy_conflict_recovery_seconds:p50_7d", "fleet:autonomy_auto_resolve:ratio7d",
                           "fleet:autonomy_incident_cost_dollars:per_resolved_incident7d",
                           "fleet:autonomy_lineage_coverage:ratio7d"):
                wait_until(lambda: instant(stack.prometheus, record), 60, f"{record} to have a value")

            every = "|".join(agents)
            checked = 0
            for name, board in BOARDS.items():
                for panel in board["panels"]:
                    for target in panel["targets"]:
                        expr = target["expr"]
                        if 'agent="$agent"' in expr:  # a repeated tile: one query per agent
                            for agent in agents:
                                rows = instant(stack.prometheus, expr.replace("$agent", agent))
                                assert rows, (name, panel["title"], agent)
                                assert {r["metric"].get("agent") for r in rows} == {agent}
                        else:
                            rows = instant(stack.prometheus, expr.replace("$agent", every))
                            assert rows, (name, panel["title"], expr)
                            if "{{agent}}" in target["legendFormat"]:  # one series per agent of the fleet
                                assert {r["metric"].get("agent") for r in rows} == set(agents), (name, expr)
                        checked += 1
                for annotation in board["annotations"]["list"]:
                    if "expr" in annotation:
                        instant(stack.prometheus, annotation["expr"])  # valid PromQL on 2.42
            def classes():
                rows = instant(stack.prometheus, "classification:autonomy_recovery_seconds:mean7d")
                return {"TRANSIENT", "CONFLICT", "CAPACITY"} <= {r["metric"]["classification"] for r in rows}
            wait_until(classes, 60, "MTTR for every class the drills exercised")
            tiles = {r["metric"]["agent"]: r["value"][1]
                     for r in instant(stack.prometheus, "agent:autonomy_agent_state:code")}
            assert set(tiles) == set(agents) and set(tiles.values()) == {"0"}
            assert checked >= 25
        finally:
            beat.stop()
