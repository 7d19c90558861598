"""The soak report's figures over hand-made incidents: each once by its outcome, durations in simulated time."""
from devstack.soak_report import kpis


def test_the_figures_count_each_incident_by_its_outcome_and_scale_durations_back():
    incidents = [
        {"id": "a", "outcome": "auto_resolved", "classification": "TRANSIENT", "opened_at": 10, "onset_at": 8,
         "recovered_at": 12},
        {"id": "b", "outcome": "auto_resolved", "classification": "TRANSIENT", "opened_at": 20, "recovered_at": 26},
        {"id": "c", "outcome": "escalated", "classification": "CONFIG", "opened_at": 30},
        {"id": "d", "outcome": "skipped", "classification": "CAPACITY", "opened_at": 40},
    ]
    r = kpis(incidents, time_factor=1 / 30, unfixable={"c": True})
    assert (r["incidents"], r["handled"], r["auto_resolved"], r["escalated"], r["held"]) == (4, 3, 2, 1, 1)
    assert r["auto_resolve_ratio"] == 0.6667 and r["escalated_correctly"] == 1
    assert r["mttr_s_by_class"] == {"TRANSIENT": {"mean": 150.0, "p50": 180.0, "p95": 180.0, "n": 2, "target": 180.0}}
