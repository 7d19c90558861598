"""verify_recovery: recovered only when, on samples newer than the action, the playbook's criteria hold AND the
incident's own conditions no longer do; on both paths (Prometheus and the agents' direct signals)."""
import threading
import time

import pytest

from autonomy.signal_contract import Signal
from tests.engine_harness import FakePrometheus
from webhook_receiver.agent_view import AgentView
from webhook_receiver.alert_conditions import RuleCatalog
from webhook_receiver.classifier import Facts, SloThresholds
from webhook_receiver.fleet_reader import PrometheusFleetReader, SignalFleetReader
from webhook_receiver.incident import AlertRef, Incident
from webhook_receiver.upstreams import UpstreamError
from webhook_receiver.verification import RECOVERED, Verification, judge, verify_recovery

SLO = SloThresholds()


def incident(*alertnames, agent="CMO", source="alertmanager", **fields) -> Incident:
    alerts = tuple(AlertRef(f"fp-{n}", "firing", {"alertname": n, "agent": agent, "autonomy_class": "CAPACITY"})
                   for n in alertnames)
    return Incident(id="i-1", agent=agent, state="remediating", source=source, opened_at=1.0, updated_at=1.0,
                    alerts=alerts, **fields)


# ------------------------------------------------------------------ judge: the verdict from its evidence

@pytest.mark.parametrize("checks, still_true, unknown, ok, reason", [
    ({"backlogAgeMaxMinutes": True}, [], [], True, RECOVERED),
    ({"backlogAgeMaxMinutes": True}, ["AgentSuccessRatioBelowSLO"], [], False,
     "criteria held but AgentSuccessRatioBelowSLO still true"),
    ({"backlogAgeMaxMinutes": False}, [], [], False, "criteria not met on fresh samples: backlogAgeMaxMinutes"),
    ({"backlogAgeMaxMinutes": False}, ["AgentBacklogAgeAboveSLO"], [], False,
     "criteria not met on fresh samples: backlogAgeMaxMinutes; AgentBacklogAgeAboveSLO still true"),
    ({"lastTaskSucceeded": True}, [], ["AgentX: Prometheus has no alerting rule of that name"], False,
     "cannot re-check AgentX: Prometheus has no alerting rule of that name"),
    ({}, [], [], True, RECOVERED),  # a playbook whose criteria ask nothing: the condition alone decides
    ({}, ["AgentTransientError", "AgentStatusError"], [], False,
     "criteria held but AgentTransientError, AgentStatusError still true"),
])
def test_judge_recovers_only_when_the_criteria_hold_and_no_condition_holds_or_is_unknown(
        checks, still_true, unknown, ok, reason):
    assert judge(checks, still_true, unknown) == (ok, reason)


# ------------------------------------------------------------------ the table: criteria x condition x path

ACTION_END = time.time() - 60  # every sample the fakes give is newer than this


def prometheus_path(backlog: float, success: float):
    prom = FakePrometheus()
    prom.add("CMO", "Marketing", backlogAgeMinutes=backlog, successRate=success)
    return PrometheusFleetReader(prom, RuleCatalog(prom), 120, 25.0), incident("AgentSuccessRatioBelowSLO")


def direct_path(backlog: float, success: float):
    prom = FakePrometheus()  # only used to build the signal document
    prom.add("CMO", "Marketing", backlogAgeMinutes=backlog, successRate=success)
    signal = prom.signal("CMO")
    return SignalFleetReader(lambda: [signal], 120, SLO), incident(source="signal")


@pytest.mark.parametrize("path", [prometheus_path, direct_path], ids=["prometheus", "direct"])
@pytest.mark.parametrize("criteria_hold", [True, False], ids=["criteria-held", "criteria-not-met"])
@pytest.mark.parametrize("condition_cleared", [True, False], ids=["condition-cleared", "condition-persists"])
def test_verification_over_criteria_condition_and_path(path, criteria_hold, condition_cleared):
    reader, what = path(backlog=5 if criteria_hold else 41, success=0.98 if condition_cleared else 0.70)
    result = verify_recovery(reader, Verification(what, {"backlogAgeMaxMinutes": 15}, ACTION_END, ("CMO",),
                                                    ("CMO",)), timeout=0.2, interval=0.05, budget_cap=25.0)
    assert result.ok is (criteria_hold and condition_cleared), result.reason
    assert result.checks == {"backlogAgeMaxMinutes": criteria_hold}
    if criteria_hold and not condition_cleared:
        assert result.reason.startswith("criteria held but ")
        expected = "AgentSuccessRatioBelowSLO" if path is prometheus_path else "CAPACITY on the latest signal"
        assert expected in result.reason
    if not criteria_hold:
        assert result.reason.startswith("criteria not met on fresh samples: backlogAgeMaxMinutes")
    assert result.after["backlogAgeMinutes"] == (5 if criteria_hold else 41)


# ------------------------------------------------------------------ polling, freshness, upstream faults

class ScriptedReader:
    """A FleetReader whose answers a test scripts: fresh from poll N on, conditions true until poll M."""

    def __init__(self, fresh_from=1, cleared_from=1, down_until=0, signal_fields=None):
        self.polls = 0
        self.fresh_from, self.cleared_from, self.down_until = fresh_from, cleared_from, down_until
        self.signal = Signal(agent="CMO", status="healthy", last_report="ok", success_ratio=0.97, alignment_ratio=0.96,
                             backlog_age_seconds=540.0, cost_burn_dollars_per_hour=0.5, timestamp=ACTION_END + 1,
                             **(signal_fields or {}))
        self.stale_asked: list[tuple] = []

    def stale(self, agents, since, own_signal=True):
        self.polls += 1
        self.stale_asked.append(tuple(agents))
        if self.polls <= self.down_until:
            raise UpstreamError("http://prometheus/api/v1/query: ConnectionError")
        return [] if self.polls >= self.fresh_from else [a for a in agents if a != "fleet"]

    def view(self, agent):
        return AgentView(self.signal, Facts(), {"successRate": 0.97, "backlogAgeMinutes": 9.0})

    def fleet_spend(self):
        return 10.0

    def conditions(self, incident, agents, foreign):
        return (["AgentTransientError"] if self.polls < self.cleared_from else []), []


def run(reader, criteria, timeout=5.0, interval=0.01, agents=("CMO",), fresh=("CMO",), stop=None, cap=25.0):
    return verify_recovery(reader, Verification(incident("AgentTransientError"), criteria, ACTION_END, agents, fresh),
                           timeout, interval, cap, stop)


def test_it_waits_for_samples_newer_than_the_action_before_judging():
    reader = ScriptedReader(fresh_from=3)
    result = run(reader, {"lastTaskSucceeded": True})
    assert result.ok and result.polls == 3 and result.after_fresh


def test_without_a_fresh_sample_it_times_out_saying_so_and_says_after_is_not_fresh():
    result = run(ScriptedReader(fresh_from=10**6), {"lastTaskSucceeded": True}, timeout=0.2, interval=0.05)
    assert not result.ok
    assert result.reason == "no sample newer than the action yet from CMO"
    assert result.after == {"successRate": 0.97, "backlogAgeMinutes": 9.0} and result.after_fresh is False
    assert result.after_note == "the latest samples, from before the action ended"


def test_it_keeps_polling_while_the_condition_holds_and_recovers_once_it_clears():
    reader = ScriptedReader(cleared_from=4)
    result = run(reader, {"lastTaskSucceeded": True})
    assert result.ok and result.polls == 4


def test_a_condition_that_never_clears_fails_with_the_criteria_held_reason():
    result = run(ScriptedReader(cleared_from=10**6), {"lastTaskSucceeded": True}, timeout=0.2, interval=0.05)
    assert not result.ok and result.polls >= 2
    assert result.reason == "criteria held but AgentTransientError still true"
    assert result.still_true == ("AgentTransientError",)


def test_every_target_of_the_playbook_must_have_reported_since_the_action():
    reader = ScriptedReader(fresh_from=10**6)
    run(reader, {"conflictCleared": True}, fresh=("CMO", "CRO"), timeout=0.1, interval=0.05)
    assert set(reader.stale_asked) == {("CMO", "CRO")}


def test_an_unreachable_upstream_gives_a_reason_and_no_exception_and_coming_back_still_verifies():
    down = run(ScriptedReader(down_until=10**6), {"lastTaskSucceeded": True}, timeout=0.15, interval=0.05)
    assert not down.ok and down.reason.startswith("prometheus unreachable")
    back = run(ScriptedReader(down_until=2), {"lastTaskSucceeded": True})
    assert back.ok and back.polls == 3


def test_a_false_boolean_criterion_asks_for_nothing():
    result = run(ScriptedReader(signal_fields={"last_task_succeeded": False}), {"lastTaskSucceeded": False})
    assert result.ok and result.checks == {}


def test_the_budget_cap_comes_from_the_setting():
    assert run(ScriptedReader(), {"budgetWithinCap": True}, cap=12.5).ok  # 10 a day
    result = run(ScriptedReader(), {"budgetWithinCap": True}, cap=9.5, timeout=0.1, interval=0.05)
    assert not result.ok and result.checks == {"budgetWithinCap": False}


def test_criteria_are_checked_for_every_claimant_of_a_conflict():
    result = run(ScriptedReader(), {"alignmentMin": 0.92}, agents=("CMO", "CRO"), fresh=("CMO", "CRO"))
    assert result.ok and result.checks == {"alignmentMin[CMO]": True, "alignmentMin[CRO]": True}


def test_the_stop_event_ends_verification_early():
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    result = run(ScriptedReader(fresh_from=10**6), {"inputsValid": True}, timeout=30, interval=10, stop=stop)
    assert not result.ok and result.polls == 1
    assert time.monotonic() - started < 5


def test_on_the_direct_path_a_signal_not_newer_than_the_action_is_not_judged():
    prom = FakePrometheus()
    prom.add("CMO", "Marketing")
    old = Signal.from_document({**prom.docs["CMO"], "ts": "2025-08-18T15:02:11Z"})
    reader = SignalFleetReader(lambda: [old], 10**9, SLO)
    result = verify_recovery(reader, Verification(incident(source="signal"), {"lastTaskSucceeded": True},
                                                    old.timestamp, ("CMO",), ("CMO",)), 0.15, 0.05, 25.0)
    assert not result.ok and result.reason == "no sample newer than the action yet from CMO"
    assert result.checks == {}
