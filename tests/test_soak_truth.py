"""The soak's ground-truth checks on hand-made timelines (wall seconds, uncompressed margins)."""
import pytest

from devstack.fleet import SimulatedFleet
from devstack.soak_truth import (
    Margins,
    Window,
    actions_after_self_heal,
    actions_while_held,
    check,
    credited_not_fixed,
    duplicate_remediations,
    false_resolutions,
    missed_faults,
)

M = Margins({"timeout": 90, "silent": 240, "overlap": 120, "backlog": 180, "over-budget": 360, "stale-inputs": 90},
            fresh=30, in_flight=10, notice=120)


def interval(agent="CMO", kind="timeout", start=0.0, end=None, fixable=True, cause=None):
    return {"agent": agent, "kind": kind, "start": start, "end": end, "fixable": fixable, "cause": cause}


def incident(id="i1", agent="CMO", outcome="auto_resolved", opened=100.0, recovered=200.0, closed=None, **kw):
    return {"id": id, "agent": agent, "outcome": outcome, "opened_at": opened, "recovered_at": recovered,
            "closed_at": closed, "claimants": kw.pop("claimants", []), **kw}


def line(agent="CMO", ts=150.0, event="auto_remediation", incident_id="i1", attempt=1, duration=10.0, **kw):
    from datetime import datetime, timezone
    return {"agent": agent, "event": event, "incident_id": incident_id, "attempt": attempt, "duration_s": duration,
            "ts": datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z"), **kw}


@pytest.mark.parametrize("truth, expected", [
    ([interval(end=190, cause="action:restartAgent")], 0),   # healed before the verdict
    ([interval(end=None)], 1),                                 # still broken when "resolved"
    ([interval(end=250)], 1),                                  # healed only after the verdict
    ([interval(start=150, end=None)], 0),                      # began too recently to be part of the verdict
    ([interval(start=0, end=None, kind="backlog")], 1),       # another condition, alerted long before
    ([interval(agent="CRO", end=None)], 0),                    # another agent
])
def test_a_false_resolution_is_a_verdict_while_the_truth_says_broken(truth, expected):
    assert len(false_resolutions(truth, [incident()], M)) == expected


def test_a_conflicts_verdict_covers_every_claimants_overlap_and_the_fleets_covers_the_budget():
    conflict = incident(agent="CMO", claimants=["CMO", "CRO"], conflict_key="directive:D-REV-1")
    assert len(false_resolutions([interval(agent="CRO", kind="overlap", end=None)], [conflict], M)) == 1
    # A claimant's TIMEOUT is its own incident's to judge, not the conflict's (found by the soak: CRO's own
    # incident restarted it a moment after the conflict's verdict).
    assert false_resolutions([interval(agent="CRO", kind="timeout", end=None)], [conflict], M) == []
    budget = incident(agent="fleet", recovered=500.0)
    assert len(false_resolutions([interval(agent="fleet", kind="over-budget", end=None)], [budget], M)) == 1


@pytest.mark.parametrize("truth, expected", [
    ([interval(end=190, cause="action:restartAgent")], 0),
    ([interval(end=190, cause="operator")], 1),      # a person fixed it; the layer said it did
    ([interval(end=190, cause="self")], 1),
    ([interval(end=150, cause="self"), interval(kind="backlog", end=190, cause="drain")], 0),
    ([interval(end=50, cause="operator")], 0),       # ended before its condition began: not this one's
    ([interval(end=95, cause="operator")], 1),       # fixed by hand just before a late notification opened it
])
def test_an_auto_resolved_verdict_the_layer_did_not_earn_is_counted(truth, expected):
    assert len(credited_not_fixed(truth, [incident(onset_at=90.0)])) == expected


@pytest.mark.parametrize("truth, incidents, lineage, silences, expected", [
    ([interval(start=0, end=300)], [], [], [], 1),                                  # nothing took it up
    ([interval(start=0, end=50)], [], [], [], 0),                                   # too short to alert
    ([interval(start=0, end=300)], [incident(opened=60, closed=400)], [], [], 0),   # an incident
    ([interval(start=0, end=300)], [], [line(ts=100)], [], 0),                      # a decision
    ([interval(start=0, end=300)], [], [], [Window(10, 400, "CMO")], 0),            # silenced before it alerted
    ([interval(start=0, end=300)], [], [], [Window(10, 400, "CRO")], 1),            # someone else's silence
    ([interval(start=500, end=800)], [incident(opened=60, closed=400)], [line(ts=100)], [], 1),  # a relapse nobody took up
])
def test_a_missed_fault_is_a_condition_long_enough_to_alert_that_led_to_nothing(truth, incidents, lineage, silences,
                                                                                expected):
    assert len(missed_faults(truth, incidents, lineage, silences, M, now=1000)) == expected


@pytest.mark.parametrize("ts, agent, expected", [(105, "CMO", 0), (120, "CMO", 1), (120, "CRO", 0), (250, "CMO", 0),
                                                 (320, "CEO", 1)])
def test_an_action_while_held_is_one_begun_after_a_silence_or_with_the_switch_off(ts, agent, expected):
    held = actions_while_held([(ts, agent, "restartAgent")], [Window(100, 200, "CMO")], [Window(300, 400)], M)
    assert len(held) == expected


@pytest.mark.parametrize("truth, ts, expected", [
    ([interval(end=100, cause="self")], 200, 1),                    # healed by itself long before
    ([interval(end=100, cause="self")], 110, 0),                    # the samples may still show it
    ([interval(end=100, cause="action:restartAgent")], 200, 0),     # the layer fixed it
    ([interval(end=100, cause="self"), interval(start=150)], 200, 0),  # broken again
    ([interval(end=100, cause="self"), interval(agent="fleet", kind="over-budget", start=150)], 200, 0),
    ([], 200, 0),
])
def test_an_action_after_a_self_heal_is_counted(truth, ts, expected):
    assert len(actions_after_self_heal([(ts, "CMO", "restartAgent")], truth, M)) == expected


def test_duplicate_remediations_are_attempts_recorded_twice_or_overlapping_on_one_agent():
    assert duplicate_remediations([line(), line(ts=300, attempt=2)]) == []
    assert len(duplicate_remediations([line(), line()])) >= 1
    overlapping = [line(ts=150, duration=20), line(ts=160, duration=20, incident_id="i2")]
    assert [d["why"] for d in duplicate_remediations(overlapping)] == ["attempts at the same time"]
    assert duplicate_remediations([line(ts=150), line(ts=160, incident_id="i2", agent="CRO")]) == []


def test_an_attempt_ends_at_its_verdict_not_when_a_worker_wrote_its_line():
    # The verdict at 150, written at 158 after another incident's attempt (151-157) on the agent: no overlap.
    late = line(ts=158, duration=10, verdict_at=150.0)
    assert duplicate_remediations([late, line(ts=157, duration=6, incident_id="i2")]) == []
    assert len(duplicate_remediations([line(ts=158, duration=10), line(ts=157, duration=6, incident_id="i2")])) == 1


def test_check_counts_each_kind_once_and_keeps_examples():
    truth = [interval(end=None), interval(agent="CEO", start=0, end=400)]
    result = check(truth, [incident()], [], [(130, "CMO", "restartAgent")], [Window(100, 200, "CMO")], [], M, 1000)
    assert result.counts() == {"false_resolutions": 1, "credited_not_fixed": 0, "missed_faults": 1, "actions_while_held": 1,
                               "actions_after_self_heal": 0, "duplicate_remediations": 0}
    assert set(result.examples()) == {"false_resolutions", "missed_faults", "actions_while_held"}


def test_the_fleet_records_its_truth_and_what_ended_each_condition():
    fleet = SimulatedFleet()
    fleet.inject("CMO", "timeout")
    fleet.act("CMO", "restartAgent", {}, 0)
    fleet.act("CMO", "retryLastTask", {}, 0)
    fleet.inject("COO", "missing-secret", fixable=False)
    fleet.clear("COO", cause="operator")
    fleet.inject("CEO", "silent")
    assert not any(s["agent"] == "CEO" for s in fleet.signals()), "a silent agent sends nothing"
    fleet.clear("CEO", "silent", cause="self")
    fleet.inject("Content", "cost-spike")
    fleet.act("Content", "throttleAgent", {}, 0)
    got = [(i["agent"], i["kind"], i["fixable"], i["cause"]) for i in fleet.truth_intervals()]
    assert got == [("CMO", "timeout", True, "action:retryLastTask"), ("COO", "missing-secret", False, "operator"),
                   ("CEO", "silent", True, "self"), ("fleet", "over-budget", True, "action:throttleAgent")]
    assert all(i["end"] is not None and i["end"] >= i["start"] for i in fleet.truth_intervals())


def test_margins_scale_with_the_compression():
    m = Margins.scaled(1 / 30, heartbeat=0.5)
    assert m.detect["timeout"] == pytest.approx(3.0) and m.fresh == pytest.approx(2.5) and m.in_flight == 3.0


def test_a_self_heal_racing_the_first_action_is_not_counted_as_unearned_credit_but_a_persons_fix_is():
    calls = [(100.0, "CMO", "restartAgent")]
    assert credited_not_fixed([interval(end=99.0, cause="self")], [incident(onset_at=90.0)], calls, M) == []
    assert len(credited_not_fixed([interval(end=95.0, cause="operator")], [incident(onset_at=90.0)], calls, M)) == 1
    assert len(credited_not_fixed([interval(end=60.0, cause="self")], [incident(onset_at=50.0)], calls, M)) == 1
