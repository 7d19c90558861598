"""The alert rules, recording rules and Alertmanager routing, checked with the real promtool and amtool."""
import re
import subprocess

import pytest
import yaml

from autonomy.settings import Settings
from devstack.checkout import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, REPO_ROOT
from devstack.rule_render import RULES_DIR, TEMPLATES_DIR, render_rules
from tests.conftest import real_binary

RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.test.yml"))
ROUTE_CASES = yaml.safe_load((REPO_ROOT / "alertmanager" / "routes.test.yml").read_text())["cases"]
CLASSES = {"CONFLICT", "TRANSIENT", "CAPACITY", "DATA_DEP", "CONFIG"}


def rules(kind: str) -> list[dict]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(r for r in group["rules"] if kind in r)
    return out


def run(args, cwd=None):
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_there_are_rule_files_and_test_files():
    assert {p.name for p in RULE_FILES} == {"agents.rules.yml", "layer.rules.yml", "kpis.rules.yml"}
    assert {p.name for p in TEST_FILES} == {"agents.test.yml", "layer.test.yml", "kpis.test.yml"}


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules_passes(path):
    done = run([real_binary("promtool"), "check", "rules", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path):
    done = run([real_binary("promtool"), "test", "rules", path.name], cwd=path.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_config_passes_on_the_prometheus_config():
    done = run([real_binary("promtool"), "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_check_config_passes():
    done = run([real_binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: c["alert"])
def test_each_alert_reaches_its_intended_receivers(case):
    labels = [f"alertname={case['alert']}"] + [f"{k}={v}" for k, v in case["labels"].items()]
    done = run([real_binary("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                f"--verify.receivers={','.join(case['receivers'])}", *labels])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_routing_table_covers_every_alert_with_its_rule_labels():
    table = {c["alert"]: c["labels"] for c in ROUTE_CASES}
    for rule in rules("alert"):
        assert rule["alert"] in table, f"{rule['alert']} has no case in alertmanager/routes.test.yml"
        for key in ("severity", "autonomy_class"):
            assert table[rule["alert"]][key] == rule["labels"][key], (rule["alert"], key)


@pytest.mark.parametrize("rule", rules("alert"), ids=lambda r: r["alert"])
def test_every_alert_has_the_labels_and_annotations_the_receiver_and_people_need(rule):
    labels, notes = rule["labels"], rule["annotations"]
    assert labels["severity"] in {"critical", "warning", "info"}
    assert labels["autonomy_class"] in CLASSES | {"none"}
    assert "agent" in labels or "agent" in rule["expr"] or "by (agent" in rule["expr"]
    assert notes["summary"] and "{{" not in notes["summary"] and notes["summary"].endswith(".")
    assert "{{" in notes["description"]
    assert notes["runbook_url"] == f"http://localhost:9818/runbooks/{rule['alert']}.md"
    assert (REPO_ROOT / "webhook_receiver" / "runbooks" / f"{rule['alert']}.md").is_file()


def test_the_escalation_and_hold_alerts_use_exactly_the_receivers_reasons():
    from autonomy.vocabulary import ESCALATION_REASONS, GATE_REASONS

    by_name = {r["alert"]: r["expr"] for r in rules("alert")}

    def listed(alert):
        return set(re.search(r'reason=~"([a-z_|]+)"', by_name[alert]).group(1).split("|"))

    assert listed("AutonomyEscalationOpen") == set(ESCALATION_REASONS.values())
    assert listed("AutonomyIncidentHeld") == set(GATE_REASONS.values())


def test_the_receivers_own_escalation_alert_has_a_runbook():
    assert (REPO_ROOT / "webhook_receiver" / "runbooks" / "AutonomyEscalated.md").is_file()


def test_every_alert_and_recording_rule_is_exercised_by_a_promtool_test():
    tested = "\n".join(p.read_text() for p in TEST_FILES)
    for rule in rules("alert"):
        assert f"alertname: {rule['alert']}" in tested, rule["alert"]
    for rule in rules("record"):
        assert f"expr: {rule['record']}" in tested, rule["record"]


def test_every_for_duration_comes_from_the_thresholds_file():
    for template in TEMPLATES_DIR.glob("*.yml"):
        for line in template.read_text().splitlines():
            if re.match(r"\s*(for|interval):", line):
                assert re.search(r"\$\{[a-z_]+\}", line), f"{template.name}: literal duration in {line.strip()!r}"


def test_the_committed_rules_are_the_rendering_of_the_default_settings(tmp_path):
    written = render_rules(Settings.from_env({}), tmp_path)
    for path in written:
        assert (RULES_DIR / path.name).read_text() == path.read_text(), (
            f"alert_rules/{path.name} is stale: run `autonomy rules render`")


def test_recording_rule_names_follow_level_metric_operation():
    for rule in rules("record"):
        assert re.fullmatch(r"[a-z]+:autonomy_[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


SLO_TEST = """
rule_files: [{rules}]
evaluation_interval: 15s
tests:
  - name: a success ratio of 0.92 held for 5m
    interval: 15s
    input_series:
      - series: 'autonomy_agent_success_ratio{{agent="CMO"}}'
        values: '0.92x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: AgentSuccessRatioBelowSLO
        exp_alerts: {expected}
"""

FIRING_CMO = """
          - exp_labels: {{agent: CMO, severity: warning, autonomy_class: CAPACITY}}
            exp_annotations:
              summary: An agent's task success ratio is below its SLO.
              description: CMO succeeds on 92% of its tasks; the SLO is {slo}.
              runbook_url: http://localhost:9818/runbooks/AgentSuccessRatioBelowSLO.md"""


@pytest.mark.parametrize("slo, fires", [("0.94", True), ("0.90", False)])
def test_setting_autorem_slo_success_changes_when_the_alert_fires(tmp_path, slo, fires):
    promtool = real_binary("promtool")
    render_rules(Settings.from_env({"AUTOREM_SLO_SUCCESS": slo}), tmp_path)
    expected = FIRING_CMO.format(slo=slo) if fires else "[]"
    (tmp_path / "slo.test.yml").write_text(SLO_TEST.format(rules="agents.rules.yml", expected=expected))
    done = run([promtool, "test", "rules", "slo.test.yml"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_diff_reports_stale_rules(monkeypatch, capsys):
    from autonomy_cli import main

    monkeypatch.setenv("AUTOREM_SLO_SUCCESS", "0.94")
    assert main(["rules", "diff"]) == 0
    monkeypatch.setenv("AUTOREM_SLO_SUCCESS", "0.90")
    assert main(["rules", "diff"]) == 1
    assert "alert_rules/agents.rules.yml differs" in capsys.readouterr().err


def test_the_time_factor_compresses_durations_only(tmp_path):
    render_rules(Settings.from_env({}), tmp_path, time_factor=1 / 15)
    text = (tmp_path / "agents.rules.yml").read_text()
    assert "for: 8s" in text  # 2m / 15
    assert "> 8\n" in text or "> 8 " in text  # the 120 s silence threshold / 15
    assert "autonomy_agent_success_ratio < 0.94" in text
    assert "autonomy_agent_backlog_age_seconds > 900" in text
    done = run([real_binary("promtool"), "check", "rules", str(tmp_path / "agents.rules.yml")])
    assert done.returncode == 0, done.stdout
