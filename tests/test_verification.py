"""verify_recovery and verify_on_signals: the pack's section 6 checks, on samples newer than the action."""
import re
import threading
import time

import pytest

from autonomy.signal_contract import Signal
from webhook_receiver.upstreams import UpstreamError
from webhook_receiver.verification import CRITERIA, verify_on_signals, verify_recovery

ACTION_END = 1_755_529_331.25
FRESH_QUERY = re.compile(r'^autonomy_agent_last_signal_timestamp_seconds\{agent="(?P<agent>[^"]+)"\} > (?P<t>[0-9.]+)'
                         r' and timestamp\(autonomy_agent_last_signal_timestamp_seconds\{agent="(?P=agent)"\}\)'
                         r' > (?P=t)$')
PACK_QUERY = ('{__name__=~"autonomy_agent_success_ratio|autonomy_agent_alignment_ratio|'
              'autonomy_agent_backlog_age_seconds|autonomy_agent_cost_burn_dollars_per_hour", agent="CMO"}')


def row(value, **labels):
    return {"metric": dict(labels), "value": [ACTION_END + 1, str(value)]}


class FakePrometheus:
    """Answers instant queries from a dict of canned PromQL -> result functions; records every query.

    Freshness queries are answered from `sample_after[agent]`: the agent's samples are newer than the action
    from that freshness poll on (1 = the first poll)."""

    def __init__(self, answers=None, sample_after=None):
        self.answers = dict(answers or {})
        self.sample_after = dict(sample_after or {})
        self.fresh_polls: dict[str, int] = {}
        self.queries: list[str] = []
        self.down = False

    def query(self, promql):
        self.queries.append(promql)
        if self.down:
            raise UpstreamError("http://127.0.0.1:9/api/v1/query: ConnectionError")
        fresh = FRESH_QUERY.match(promql)
        if fresh:
            agent = fresh["agent"]
            assert float(fresh["t"]) == pytest.approx(ACTION_END, abs=0.001)
            self.fresh_polls[agent] = self.fresh_polls.get(agent, 0) + 1
            after = self.sample_after.get(agent)
            return [row(ACTION_END + 5, __name__="autonomy_agent_last_signal_timestamp_seconds", agent=agent)] \
                if after is not None and self.fresh_polls[agent] >= after else []
        if promql in self.answers:
            return self.answers[promql]()
        return []


def pack_rows():
    return [row(0.97, __name__="autonomy_agent_success_ratio", agent="CMO"),
            row(0.96, __name__="autonomy_agent_alignment_ratio", agent="CMO"),
            row(540, __name__="autonomy_agent_backlog_age_seconds", agent="CMO"),
            row(0.5, __name__="autonomy_agent_cost_burn_dollars_per_hour", agent="CMO")]


def verify(prom, criteria, fresh_agents=("CMO",), timeout=5.0, interval=0.01, stop=None, cap=25.0):
    return verify_recovery(prom, "CMO", criteria, ACTION_END, fresh_agents, timeout, interval, cap, stop)


# the pack's criteria, the PromQL each one asks, and what a non-empty result means
CRITERION_CASES = [
    ("lastTaskSucceeded", True, 'autonomy_agent_last_task_succeeded{agent="CMO"} == 1', False),
    ("inputsValid", True, 'autonomy_agent_inputs_valid{agent="CMO"} == 1', False),
    ("configHealthy", True, 'autonomy_agent_config_healthy{agent="CMO"} == 1', False),
    ("alignmentMin", 0.92, 'autonomy_agent_alignment_ratio{agent="CMO"} >= 0.92', False),
    ("backlogAgeMaxMinutes", 15, 'autonomy_agent_backlog_age_seconds{agent="CMO"} <= 15 * 60', False),
    ("budgetWithinCap", True, "sum(max by (agent) (autonomy_agent_cost_burn_dollars_per_hour)) * 24 <= 25", False),
    ("conflictCleared", True,
     '(autonomy_agent_conflict{agent="CMO"} == 1) or (autonomy_agent_open_conflicts{agent="CMO"} > 0)'
     ' or (count by (directive_id) (max by (agent, directive_id) (autonomy_agent_directive_claim == 1)) >= 2'
     ' and on (directive_id) max by (directive_id) (autonomy_agent_directive_claim{agent="CMO"} == 1))', True),
]


def test_every_criterion_of_the_playbook_schema_has_a_verification_query():
    from webhook_receiver.playbooks import CRITERIA as PLAYBOOK_CRITERIA
    assert set(CRITERIA) == set(PLAYBOOK_CRITERIA)
    assert {c[0] for c in CRITERION_CASES} == set(CRITERIA)


@pytest.mark.parametrize("name,value,promql,holds_when_empty", CRITERION_CASES, ids=[c[0] for c in CRITERION_CASES])
def test_a_criterion_holds_when_its_promql_says_so_on_fresh_samples(name, value, promql, holds_when_empty):
    met = [row(1, agent="CMO")]
    prom = FakePrometheus({promql: (lambda: []) if holds_when_empty else (lambda: met),
                           PACK_QUERY: pack_rows}, sample_after={"CMO": 1})
    result = verify(prom, {name: value})
    assert result.ok, result.reason
    assert result.checks == {name: True}
    assert promql in prom.queries
    assert result.after == {"successRate": 0.97, "alignment": 0.96, "backlogAgeMinutes": 9.0,
                            "costBurnRatePerHour": 0.5}


@pytest.mark.parametrize("name,value,promql,holds_when_empty", CRITERION_CASES, ids=[c[0] for c in CRITERION_CASES])
def test_a_criterion_fails_until_the_timeout_when_its_promql_says_not(name, value, promql, holds_when_empty):
    unmet = [row(1, agent="CMO")] if holds_when_empty else []
    prom = FakePrometheus({promql: lambda: unmet}, sample_after={"CMO": 1})
    result = verify(prom, {name: value}, timeout=0.2, interval=0.05)
    assert not result.ok
    assert result.checks == {name: False}
    assert result.reason == f"criteria not met on fresh samples: {name}"
    assert result.polls >= 2  # it kept polling until the deadline


def test_conflict_cleared_holds_on_an_empty_result():
    prom = FakePrometheus(sample_after={"CMO": 1})  # every query answers []
    result = verify(prom, {"conflictCleared": True})
    assert result.ok and result.checks == {"conflictCleared": True}


def test_all_criteria_must_hold_and_the_reason_names_the_ones_that_did_not():
    prom = FakePrometheus({'autonomy_agent_alignment_ratio{agent="CMO"} >= 0.92': lambda: []},
                          sample_after={"CMO": 1})
    result = verify(prom, {"conflictCleared": True, "alignmentMin": 0.92}, timeout=0.15, interval=0.05)
    assert not result.ok
    assert result.checks == {"conflictCleared": True, "alignmentMin": False}
    assert result.reason == "criteria not met on fresh samples: alignmentMin"


def test_it_waits_for_a_sample_newer_than_the_action_before_judging():
    met = lambda: [row(1, agent="CMO")]  # noqa: E731 - the criterion already holds on the stale sample
    prom = FakePrometheus({'autonomy_agent_last_task_succeeded{agent="CMO"} == 1': met},
                          sample_after={"CMO": 3})
    result = verify(prom, {"lastTaskSucceeded": True})
    assert result.ok and result.polls == 3
    criteria_asked = [i for i, q in enumerate(prom.queries) if q.startswith("autonomy_agent_last_task_succeeded")]
    fresh_asked = [i for i, q in enumerate(prom.queries) if FRESH_QUERY.match(q)]
    assert len(fresh_asked) == 3 and criteria_asked and min(criteria_asked) > fresh_asked[2]


def test_without_a_fresh_sample_it_times_out_saying_so():
    prom = FakePrometheus({'autonomy_agent_last_task_succeeded{agent="CMO"} == 1': lambda: [row(1)]})
    started = time.monotonic()
    result = verify(prom, {"lastTaskSucceeded": True}, timeout=0.3, interval=0.05)
    assert time.monotonic() - started < 3
    assert not result.ok
    assert result.reason == "no sample newer than the action yet from CMO"
    assert not any(q.startswith("autonomy_agent_last_task") for q in prom.queries)


def test_every_target_of_the_playbook_must_have_reported_since_the_action():
    prom = FakePrometheus(sample_after={"CMO": 1})  # CRO (the throttled agent) never reports again
    result = verify(prom, {"conflictCleared": True}, fresh_agents=("CMO", "CRO", "fleet"), timeout=0.15,
                    interval=0.05)
    assert not result.ok
    assert result.reason == "no sample newer than the action yet from CRO"
    assert "fleet" not in prom.fresh_polls  # the fleet pseudo-agent has no samples of its own


def test_an_unreachable_prometheus_gives_a_reason_and_no_exception():
    prom = FakePrometheus(sample_after={"CMO": 1})
    prom.down = True
    result = verify(prom, {"lastTaskSucceeded": True}, timeout=0.15, interval=0.05)
    assert not result.ok
    assert result.reason.startswith("prometheus unreachable")
    assert result.after == {}


def test_prometheus_coming_back_within_the_timeout_still_verifies():
    class Flaky(FakePrometheus):
        def query(self, promql):
            self.down = len(self.queries) < 2
            return super().query(promql)

    prom = Flaky({'autonomy_agent_inputs_valid{agent="CMO"} == 1': lambda: [row(1)]}, sample_after={"CMO": 1})
    result = verify(prom, {"inputsValid": True})
    assert result.ok and result.polls == 3


def test_a_false_boolean_criterion_asks_for_nothing():
    prom = FakePrometheus(sample_after={"CMO": 1})
    result = verify(prom, {"lastTaskSucceeded": False})
    assert result.ok and result.checks == {}
    assert not any(q.startswith("autonomy_agent_last_task") for q in prom.queries)


def test_the_budget_cap_comes_from_the_setting():
    promql = "sum(max by (agent) (autonomy_agent_cost_burn_dollars_per_hour)) * 24 <= 12.5"
    prom = FakePrometheus({promql: lambda: [row(10)]}, sample_after={"CMO": 1})
    assert verify(prom, {"budgetWithinCap": True}, cap=12.5).ok


def test_an_agent_name_is_quoted_as_a_promql_string():
    prom = FakePrometheus()
    verify_recovery(prom, 'we"ird', {"inputsValid": True}, ACTION_END, (), 0.1, 0.05, 25.0)
    assert 'autonomy_agent_inputs_valid{agent="we\\"ird"} == 1' in prom.queries


def test_the_stop_event_ends_verification_early():
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    result = verify(FakePrometheus(), {"inputsValid": True}, timeout=30, interval=10, stop=stop)
    assert not result.ok and result.polls == 1
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------ the direct path: reported signals

def make_signal(ts, agent="CMO", **fields):
    base = dict(agent=agent, status="healthy", last_report="ok", success_ratio=0.97, alignment_ratio=0.96,
                backlog_age_seconds=540.0, cost_burn_dollars_per_hour=0.5, timestamp=ts, last_task_succeeded=True,
                inputs_valid=True, config_healthy=True)
    base.update(fields)
    return Signal(**base)


def on_signals(latest, criteria, timeout=5.0, interval=0.01, all_latest=lambda: (), cap=25.0):
    return verify_on_signals(latest, "CMO", criteria, ACTION_END, timeout, interval, cap, all_latest)


def test_on_signals_a_signal_not_newer_than_the_action_is_not_judged():
    old = make_signal(ACTION_END)  # exactly at the action end is not after it
    result = on_signals(lambda agent: old, {"lastTaskSucceeded": True}, timeout=0.15, interval=0.05)
    assert not result.ok
    assert result.reason == "no signal from CMO newer than the action yet"
    assert result.checks == {}


def test_on_signals_no_signal_at_all_is_not_verified():
    result = on_signals(lambda agent: None, {"inputsValid": True}, timeout=0.1, interval=0.05)
    assert not result.ok and result.after == {}


def test_on_signals_it_waits_for_the_next_heartbeat_after_the_action():
    calls = []

    def latest(agent):
        calls.append(agent)
        ts = ACTION_END - 1 if len(calls) < 3 else ACTION_END + 1
        return make_signal(ts)

    result = on_signals(latest, {"lastTaskSucceeded": True})
    assert result.ok and result.polls == 3
    assert result.after == {"successRate": 0.97, "alignment": 0.96, "backlogAgeMinutes": 9.0,
                            "costBurnRatePerHour": 0.5}


@pytest.mark.parametrize("criteria,fields,ok", [
    ({"lastTaskSucceeded": True}, {"last_task_succeeded": False}, False),
    ({"lastTaskSucceeded": True}, {"last_task_succeeded": None}, False),  # not reported is not success
    ({"inputsValid": True}, {"inputs_valid": False}, False),
    ({"configHealthy": True}, {"config_healthy": True}, True),
    ({"alignmentMin": 0.92}, {"alignment_ratio": 0.92}, True),
    ({"alignmentMin": 0.92}, {"alignment_ratio": 0.91}, False),
    ({"backlogAgeMaxMinutes": 15}, {"backlog_age_seconds": 900.0}, True),
    ({"backlogAgeMaxMinutes": 15}, {"backlog_age_seconds": 901.0}, False),
    ({"conflictCleared": True}, {}, True),
    ({"conflictCleared": True}, {"conflict_id": "C-1"}, False),
    ({"conflictCleared": True}, {"open_conflicts": 2}, False),
])
def test_on_signals_the_criteria_are_checked_on_the_fresh_signal(criteria, fields, ok):
    fresh = make_signal(ACTION_END + 1, **fields)
    result = on_signals(lambda agent: fresh, criteria, timeout=0.1, interval=0.05)
    assert result.ok is ok
    assert result.checks == {name: ok for name in criteria}


def test_on_signals_budget_within_cap_sums_every_agents_latest_spend():
    fresh = make_signal(ACTION_END + 1)
    fleet = [make_signal(ACTION_END + 1, cost_burn_dollars_per_hour=0.5),
             make_signal(ACTION_END + 1, agent="CRO", cost_burn_dollars_per_hour=0.6)]
    assert on_signals(lambda a: fresh, {"budgetWithinCap": True}, all_latest=lambda: fleet, cap=27).ok  # 26.4 a day
    result = on_signals(lambda a: fresh, {"budgetWithinCap": True}, all_latest=lambda: fleet, timeout=0.1, cap=26)
    assert not result.ok and result.checks == {"budgetWithinCap": False}
