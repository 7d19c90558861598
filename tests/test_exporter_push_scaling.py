"""Past one exporter (docs/exporter-scaling.md): agents sharded by a stable hash of their name, the example
scrape configuration valid, and the shipped rules right on series from several shards (real promtool)."""
import collections
import re
import subprocess
import zlib

import pytest
import yaml

from devstack.checkout import REPO_ROOT
from devstack.rule_render import RULES_DIR
from exporter import exporter_url, shard_of
from tests.conftest import real_binary

DOC = (REPO_ROOT / "docs" / "exporter-scaling.md").read_text()


def example_config() -> str:
    [config] = [block for block in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if "scrape_configs:" in block]
    return config


def test_an_agents_shard_is_the_crc32_of_its_name_the_same_in_every_process():
    assert [shard_of(agent, 4) for agent in ("CMO", "CRO", "Content")] == [2, 0, 1]  # as the page says
    assert "With 4 shards, `CMO` is on shard 2, `CRO` on 0, `Content` on 1." in DOC
    assert shard_of("ÇMO", 7) == zlib.crc32("ÇMO".encode("utf-8")) % 7
    assert {shard_of(f"agent-{i}", 1) for i in range(100)} == {0}
    spread = collections.Counter(shard_of(f"agent-{i}", 4) for i in range(10_000))
    assert min(spread.values()) > 2_000, spread
    urls = ["http://exporter-0:9817", "http://exporter-1:9817", "http://exporter-2:9817"]
    assert exporter_url("CMO", urls) == urls[shard_of("CMO", 3)]
    with pytest.raises(ValueError):
        shard_of("CMO", 0)


def test_the_example_scrape_config_has_one_exporter_job_with_a_target_per_shard():
    config = yaml.safe_load(example_config())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "autonomy-exporter"]
    targets = job["static_configs"]
    assert [t["labels"]["shard"] for t in targets] == [str(i) for i in range(len(targets))]
    assert all(len(t["targets"]) == 1 for t in targets) and len(targets) >= 2
    assert job["sample_limit"] == 250000


def test_promtool_accepts_the_example_scrape_config(tmp_path):
    path = tmp_path / "prometheus.yml"
    path.write_text(example_config())
    done = subprocess.run([real_binary("promtool"), "check", "config", "--syntax-only", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def series(metric: str, agent: str, instance: str, shard: str, values: str, **labels: str) -> dict:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return {"series": f'{metric}{{agent="{agent}"{extra},job="autonomy-exporter",instance="{instance}",'
                      f'shard="{shard}"}}', "values": values}


def up(instance: str, shard: str, values: str) -> dict:
    return {"series": f'up{{job="autonomy-exporter",instance="{instance}",shard="{shard}"}}', "values": values}


SILENT = {"summary": "An agent has stopped sending status signals.",
          "runbook_url": "http://localhost:9818/runbooks/AgentSilent.md"}
TESTS = [
    {"name": "three shards, shard 0 an HA pair: the spend counts each agent once",
     "interval": "15s",
     "input_series": [
         series("autonomy_agent_cost_burn_dollars_per_hour", "CMO", "exporter-0a:9817", "0", "0.5x8"),
         series("autonomy_agent_cost_burn_dollars_per_hour", "CMO", "exporter-0b:9817", "0", "0.5x8"),
         series("autonomy_agent_cost_burn_dollars_per_hour", "CRO", "exporter-1:9817", "1", "0.25x8"),
         series("autonomy_agent_cost_burn_dollars_per_hour", "COO", "exporter-2:9817", "2", "0.25x8")],
     "promql_expr_test": [{"expr": "fleet:autonomy_cost_projected_daily_dollars:sum", "eval_time": "1m",
                           "exp_samples": [{"labels": "fleet:autonomy_cost_projected_daily_dollars:sum",
                                            "value": 24}]}]},
    {"name": "one directive claimed from two shards is one conflict",
     "interval": "15s",
     "input_series": [
         series("autonomy_agent_directive_claim", "CMO", "exporter-0a:9817", "0", "1x8", directive_id="D-1"),
         series("autonomy_agent_directive_claim", "CMO", "exporter-0b:9817", "0", "1x8", directive_id="D-1"),
         series("autonomy_agent_directive_claim", "CRO", "exporter-1:9817", "1", "1x8", directive_id="D-1")],
     "promql_expr_test": [{
         "expr": "count by (directive_id) (max by (agent, directive_id) (autonomy_agent_directive_claim == 1))",
         "eval_time": "1m", "exp_samples": [{"labels": '{directive_id="D-1"}', "value": 2}]}]},
    {"name": "a down shard pages for its exporter alone and holds back AgentSilent for every shard",
     "interval": "15s",
     "input_series": [
         up("exporter-0:9817", "0", "1x40"), up("exporter-1:9817", "1", "1x4 0x36"),
         series("autonomy_agent_last_signal_timestamp_seconds", "CMO", "exporter-0:9817", "0", "0x40"),
         series("autonomy_agent_last_signal_timestamp_seconds", "CRO", "exporter-1:9817", "1", "0+15x4")],
     "alert_rule_test": [
         {"eval_time": "5m", "alertname": "AutonomyExporterDown", "exp_alerts": [{
             "exp_labels": {"agent": "autonomy-layer", "severity": "critical", "autonomy_class": "none",
                            "job": "autonomy-exporter", "instance": "exporter-1:9817", "shard": "1"},
             "exp_annotations": {
                 "summary": "Prometheus cannot scrape the agents' signal exporter.",
                 "description": "The exporter exporter-1:9817 has been down; agent signals are not seen.",
                 "runbook_url": "http://localhost:9818/runbooks/AutonomyExporterDown.md"}}]},
         {"eval_time": "5m", "alertname": "AgentSilent", "exp_alerts": []}]},
    {"name": "with every shard up, an agent silent on its shard is reported, once",
     "interval": "15s",
     "input_series": [
         up("exporter-0:9817", "0", "1x20"), up("exporter-1:9817", "1", "1x20"),
         series("autonomy_agent_last_signal_timestamp_seconds", "CMO", "exporter-0:9817", "0", "0x20"),
         series("autonomy_agent_last_signal_timestamp_seconds", "CRO", "exporter-1:9817", "1", "0+15x20")],
     "alert_rule_test": [
         {"eval_time": "3m15s", "alertname": "AgentSilent", "exp_alerts": [{
             "exp_labels": {"agent": "CMO", "severity": "critical", "autonomy_class": "TRANSIENT"},
             "exp_annotations": {**SILENT, "description": "CMO last reported 3m 15s ago; the limit is 120 seconds."}}]},
         {"eval_time": "3m15s", "alertname": "AutonomyExporterDown", "exp_alerts": []}]},
]


def test_the_shipped_rules_hold_over_several_shards(tmp_path):
    path = tmp_path / "shards.test.yml"
    path.write_text(yaml.safe_dump({
        "rule_files": [str(RULES_DIR / "agents.rules.yml"), str(RULES_DIR / "layer.rules.yml")],
        "evaluation_interval": "15s", "tests": TESTS}, sort_keys=False))
    done = subprocess.run([real_binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
