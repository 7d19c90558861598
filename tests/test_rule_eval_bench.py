"""The rules' cost at 10,000 agents: the chain's windows tile time, and bench/rule_eval.py builds what it says."""
import re
import subprocess
import time

import pytest
import yaml

from autonomy.settings import Settings
from bench import rule_eval
from devstack.durations import parse_duration
from devstack.rule_render import render_rules
from tests.conftest import real_binary

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def seconds(duration: str) -> float:
    """A PromQL duration, compound ones (4m59s999ms) included."""
    parts = re.findall(r"(\d+)(ms|d|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * UNITS[u] for n, u in parts)


@pytest.mark.parametrize("time_factor", [1.0, 1 / 30])
def test_each_step_of_the_alignment_chain_reads_its_own_interval_less_a_millisecond(tmp_path, time_factor):
    """So that consecutive windows tile time (a Prometheus 2.x range includes both ends) whatever the
    thresholds say: a window longer than its interval would count a point twice, a shorter one skip some."""
    render_rules(Settings.from_env({}), tmp_path, time_factor=time_factor)  # the demo's compression too
    groups = {g["name"]: g for g in yaml.safe_load((tmp_path / "kpis.rules.yml").read_text())["groups"]}
    steps = {"autonomy-kpis-5m": "agent:autonomy_agent_alignment_ratio:avg5m",
             "autonomy-kpis-1h": "agent:autonomy_agent_alignment_ratio:avg1h"}
    for name, record in steps.items():
        group = groups[name]
        rule = next(r for r in group["rules"] if r["record"] == record)
        (window,) = re.findall(r"\[([0-9a-z]+)\]", rule["expr"])
        assert seconds(window) == pytest.approx(parse_duration(group["interval"]) - 0.001), (name, window)
    assert [g for g in groups if g.startswith("autonomy-kpis")] == [
        "autonomy-kpis-5m", "autonomy-kpis-1h", "autonomy-kpis"]


def test_no_frequently_evaluated_rule_reads_a_range_of_raw_per_agent_samples(tmp_path):
    """An hour of 15 s samples is 2.4 million at 10,000 agents: only the minutely memory group reads one."""
    render_rules(Settings.from_env({}), tmp_path)
    for path in tmp_path.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for metric, window in re.findall(r"\b(autonomy_agent_[a-z_]+)(?:\{[^}]*\})?\[([0-9a-z]+)\]",
                                                 rule["expr"]):
                    allowed = {"autonomy-agents-memory": 3600, "autonomy-kpis-5m": 300}
                    assert seconds(window) <= allowed.get(group["name"], 0), (group["name"], metric, window)


def test_the_steady_fleet_keeps_one_agent_in_a_hundred_faulty_in_pairs_on_a_directive():
    docs = rule_eval.steady_fleet(1000)
    faulty = [d for d in docs if d["metrics"]["successRate"] < 0.94]
    assert len(faulty) == 10
    claims = {}
    for doc in docs:
        claims.setdefault(doc["context"]["directiveId"], []).append(doc["agent"])
    assert sorted(len(v) for v in claims.values() if len(v) > 1) == [2] * 5
    assert sum(d["context"]["dependencies"][0].startswith("agent-gone-") for d in docs) == 5
    assert len(rule_eval.steady_fleet(1000, storm=True)) == 1000


def test_the_exposition_dates_every_last_signal_at_the_scrape_but_the_silent_agents():
    app = rule_eval.HeartbeatingExposition(1000)
    before = time.time()
    body = b"".join(app({}, lambda status, headers: None)).decode()
    stamps = dict(re.findall(r'^autonomy_agent_last_signal_timestamp_seconds\{agent="([^"]+)"\} (\S+)$', body, re.M))
    assert len(stamps) == 1000
    silent = {a for a, v in stamps.items() if float(v) < before - 60}
    assert silent == {"agent-500"} and float(stamps["agent-500"]) == app.silent_since
    assert body.count("autonomy_agent_info{") == 1000


def test_the_backfill_is_one_openmetrics_file_per_two_hour_block_that_promtool_accepts(tmp_path):
    end = 1_800_000_000 + 1234
    samples = rule_eval.write_backfill(tmp_path, 3, "127.0.0.1:1", end, end - 600, counter_step=3600)
    files = sorted(tmp_path.glob("*.om"))
    assert len(files) in (85, 86)  # a week and the hour before it, in 2-hour windows
    seen = 0
    for path in files:
        window = int(path.stem)
        assert window % rule_eval.BLOCK_S == 0
        text = path.read_text()
        assert text.endswith("# EOF\n")
        times = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and not line.startswith("#")]
        assert all(window <= t < window + rule_eval.BLOCK_S and t < end for t in times)
        seen += len(times)
    assert seen == samples
    last = files[-1].read_text()
    assert 'agent:autonomy_agent_alignment_ratio:avg7d_hourly{agent="agent-0"}' in last
    assert 'autonomy_agent_last_signal_timestamp_seconds{agent="agent-gone-0",' in last
    done = subprocess.run([real_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                           str(files[-1]), str(tmp_path / "tsdb")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_group_evaluations_are_read_from_prometheus_own_metrics():
    text = ('prometheus_rule_group_last_duration_seconds{rule_group="/r/agents.rules.yml;autonomy-agents"} 0.042\n'
            'prometheus_rule_group_last_evaluation_timestamp_seconds{rule_group="/r/agents.rules.yml;autonomy-agents"}'
            ' 1.7e+09\n'
            'prometheus_rule_group_last_duration_seconds{rule_group="/r/kpis.rules.yml;autonomy-kpis-1h"} 0\n')
    assert rule_eval.group_evaluations(text) == {"autonomy-agents": (1.7e9, 0.042), "autonomy-kpis-1h": (0.0, 0.0)}
