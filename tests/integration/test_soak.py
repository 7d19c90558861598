"""Issue 15: a short soak (a simulated day, every shape of episode once, the demo's six agents) on the real
Prometheus and Alertmanager, the receiver as its own process. The report's structure, and its counts against
the receiver's own ledger and lineage file, read after the stack stopped."""
import json
import sqlite3
from collections import Counter

import pytest

from devstack.soak import run_soak
from devstack.soak_schedule import SHAPES
from tests.conftest import real_binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    real_binary("prometheus")
    real_binary("alertmanager")
    workdir = tmp_path_factory.mktemp("soak")
    report = run_soak(days=1, agents=6, seed=4, workdir=workdir)
    return report, workdir


def test_the_report_has_every_figure_the_issue_lists(soak):
    report, _ = soak
    for key in ("incidents", "auto_resolve_ratio", "escalated", "escalated_correctly", "mttr_s_by_class",
                "conflict_half_life_s", "escalations_per_week", "cost_per_resolved_incident_dollars",
                "alignment_drift", "lineage_coverage", "ground_truth", "passed", "simulated_days", "wall_seconds",
                "stages"):
        assert key in report, key
    assert set(report["ground_truth"]) == {"false_resolutions", "credited_not_fixed", "missed_faults",
                                           "actions_while_held", "actions_after_self_heal", "duplicate_remediations"}
    assert [s["stage"] for s in report["stages"]] == ["canary", "expanded", "capacity"]
    assert report["episodes"] == len(SHAPES) and report["receiver_restarts"] == 1
    json.dumps(report)


def test_the_ground_truth_finds_nothing_wrong(soak):
    report, _ = soak
    assert report["ground_truth"] == dict.fromkeys(report["ground_truth"], 0), report["ground_truth_examples"]
    assert report["episodes_timed_out"] == []
    assert report["escalated"] >= 1 and report["escalated_correctly"] == report["escalated"], report


def test_its_counts_are_the_ledgers_and_the_lineage_files(soak):
    report, workdir = soak
    with sqlite3.connect(f"file:{workdir / 'receiver' / 'incidents.sqlite3'}?mode=ro", uri=True) as db:
        docs = [json.loads(doc) for (doc,) in db.execute("SELECT doc FROM incidents")]
    outcomes = Counter(d.get("outcome") for d in docs)
    assert report["incidents"] == len(docs)
    assert (report["auto_resolved"], report["escalated"], report["held"]) == (
        outcomes["auto_resolved"], outcomes["escalated"], outcomes["skipped"])
    lines = (workdir / "receiver" / "decision_lineage.jsonl").read_text().splitlines()
    assert report["lineage_lines"] == len(lines)
    ids = {json.loads(line).get("incident_id") for line in lines}
    assert all(d["id"] in ids for d in docs) and report["lineage_coverage"] == 1.0
    assert sum(s["incidents"] for s in report["stages"]) == report["incidents"]
