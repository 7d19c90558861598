"""`autonomy drill --json` end to end on the real binaries: every drill of issue 5 passes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import real_binary

pytestmark = pytest.mark.integration
AUTONOMY = str(Path(sys.executable).with_name("autonomy"))
REPO = Path(__file__).resolve().parent.parent.parent
EXPECTED = {
    "transient-timeout": ("TRANSIENT", "RestartAndRetryTransient", "resolved"),
    "directive-overlap": ("CONFLICT", "ResolveInterAgentConflict", "resolved"),
    "missing-secret": ("CONFIG", "FixConfig", "escalated"),
    "backlog-surge": ("CAPACITY", "RebalanceCapacity", "resolved"),
    "dependency-down": ("DATA_DEP", "RepairDataDependency", "resolved"),
    "budget-spike": ("CAPACITY", "ThrottleForBudget", "resolved"),
    "silenced": (None, None, "skipped"),
    "kill-switch": ("TRANSIENT", "RestartAndRetryTransient", "skipped"),
    "duplicate-delivery": ("TRANSIENT", "RestartAndRetryTransient", "resolved"),
}


def demo_processes() -> set[str]:
    out = subprocess.run(["pgrep", "-f", "autonomy-demo-"], capture_output=True, text=True).stdout
    return set(out.split())


def test_every_drill_passes_and_the_report_is_one_json_line():
    real_binary("prometheus")
    real_binary("alertmanager")
    before = demo_processes()
    done = subprocess.run([AUTONOMY, "drill", "--json"], capture_output=True, text=True, timeout=600, cwd=REPO)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (report, done.stderr[-3000:])
    assert report["passed"] is True
    # Every action the receiver sent carried the fleet's token and a body its action server (the agent library,
    # checking each body against autonomy/schemas/openapi.yaml) accepted.
    assert report["refused_actions"] == {}
    got = {s["name"]: (s["classification"], s["playbook"], s["outcome"]) for s in report["scenarios"]}
    assert got == EXPECTED
    for scenario in report["scenarios"]:
        assert set(scenario) == {"name", "passed", "classification", "playbook", "attempts", "outcome", "mttr_s",
                                 "mttr_onset_s", "mttr_webhook_s", "detail"}
        assert scenario["passed"] is True
        resolved = scenario["outcome"] == "resolved"
        assert (scenario["mttr_s"] is not None) == resolved == (scenario["mttr_onset_s"] is not None)
        if resolved:  # the fault, then Prometheus seeing it hold (onset), then the webhook: each later
            assert 0 < scenario["mttr_webhook_s"] <= scenario["mttr_onset_s"] + 0.01
            assert scenario["mttr_onset_s"] <= scenario["mttr_s"] + 0.01
    assert next(s for s in report["scenarios"] if s["name"] == "missing-secret")["attempts"] == 2
    kpis = report["kpis"]
    assert set(kpis) == {"auto_resolve_ratio", "mttr_s_by_class", "lineage_coverage", "escalations", "skipped",
                         "from_rules", "agree_with_rules"}
    assert kpis["lineage_coverage"] == 1.0
    # missing-secret escalates; the kill switch's incident is held (skipped) and outside the share.
    assert kpis["escalations"] >= 1 and kpis["skipped"] >= 1 and 0 < kpis["auto_resolve_ratio"] < 1
    assert {"TRANSIENT", "CONFLICT", "CAPACITY", "DATA_DEP"} <= set(kpis["mttr_s_by_class"])
    # The same figures as Prometheus's recording rules compute them from the receiver's metrics.
    assert kpis["agree_with_rules"] is True, kpis
    assert {k: v for k, v in kpis["from_rules"].items()} == {
        k: kpis[k] for k in ("auto_resolve_ratio", "lineage_coverage", "escalations", "skipped")} | {
        "mttr_s_by_class": kpis["from_rules"]["mttr_s_by_class"]}
    for cls, mean in kpis["mttr_s_by_class"].items():
        assert kpis["from_rules"]["mttr_s_by_class"][cls] == pytest.approx(mean, rel=1e-3, abs=0.01)
    assert demo_processes() == before, "the drill left processes behind"


def test_a_selected_scenario_runs_alone_and_an_unknown_one_is_refused():
    real_binary("prometheus")
    real_binary("alertmanager")
    done = subprocess.run([AUTONOMY, "drill", "--json", "--scenario", "transient-timeout"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and [s["name"] for s in report["scenarios"]] == ["transient-timeout"]
    refused = subprocess.run([AUTONOMY, "drill", "--scenario", "nope"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unknown scenario(s): nope" in refused.stderr
