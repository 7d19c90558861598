"""The pack's success criteria as predicates, and the checks a plain section 2 signal implies (README table)."""
import pytest

from autonomy.signal_contract import Signal
from webhook_receiver.classifier import Facts
from webhook_receiver.criteria import CRITERIA, check_criteria, config_healthy, inputs_valid, last_task_succeeded
from webhook_receiver.playbooks import validation


def signal(**fields) -> Signal:
    base = dict(agent="CMO", status="healthy", last_report="ok", success_ratio=0.97, alignment_ratio=0.96,
                backlog_age_seconds=540.0, cost_burn_dollars_per_hour=0.5, timestamp=1.0)
    base.update(fields)
    return Signal(**base)


FAILING = Facts(failing_dependencies=frozenset({"MarketIntel"}))

# (check, signal fields, facts, expected): the README's "Checks an agent does not report" table, row by row.
INFERENCE = [
    # lastTaskSucceeded <= status not error and no TIMEOUT / RATE_LIMIT / TEMP_NETWORK / OTHER
    (last_task_succeeded, {}, Facts(), True),
    (last_task_succeeded, {"status": "degraded"}, Facts(), True),
    (last_task_succeeded, {"status": "error"}, Facts(), False),
    (last_task_succeeded, {"error_code": "TIMEOUT"}, Facts(), False),
    (last_task_succeeded, {"error_code": "RATE_LIMIT"}, Facts(), False),
    (last_task_succeeded, {"error_code": "TEMP_NETWORK"}, Facts(), False),
    (last_task_succeeded, {"error_code": "OTHER"}, Facts(), False),
    (last_task_succeeded, {"error_code": "STALE_DATA"}, Facts(), True),
    (last_task_succeeded, {"status": "error", "last_task_succeeded": True}, Facts(), True),  # reported wins
    (last_task_succeeded, {"last_task_succeeded": False}, Facts(), False),
    # inputsValid <= no INPUT_MISSING / STALE_DATA and no listed dependency failing
    (inputs_valid, {}, Facts(), True),
    (inputs_valid, {"error_code": "INPUT_MISSING"}, Facts(), False),
    (inputs_valid, {"error_code": "STALE_DATA"}, Facts(), False),
    (inputs_valid, {"error_code": "TIMEOUT"}, Facts(), True),
    (inputs_valid, {"dependencies": ("MarketIntel",)}, FAILING, False),
    (inputs_valid, {"dependencies": ("MarketIntel",)}, Facts(), True),
    (inputs_valid, {"inputs_valid": True}, FAILING, True),  # reported wins
    (inputs_valid, {"inputs_valid": False}, Facts(), False),
    # configHealthy <= no CONFIG_MISSING / AUTH_FAILED
    (config_healthy, {}, Facts(), True),
    (config_healthy, {"error_code": "CONFIG_MISSING"}, Facts(), False),
    (config_healthy, {"error_code": "AUTH_FAILED"}, Facts(), False),
    (config_healthy, {"error_code": "TIMEOUT", "status": "error"}, Facts(), True),
    (config_healthy, {"error_code": "AUTH_FAILED", "config_healthy": True}, Facts(), True),  # reported wins
    (config_healthy, {"config_healthy": False}, Facts(), False),
]


@pytest.mark.parametrize("check, fields, facts, expected", INFERENCE,
                         ids=[f"{c.__name__}-{i}" for i, (c, *_) in enumerate(INFERENCE)])
def test_a_check_the_agent_does_not_report_is_inferred_from_its_section_2_fields(check, fields, facts, expected):
    assert check(signal(**fields), facts) is expected


# (criterion, value, signal fields, facts, fleet spend, expected)
CRITERION_CASES = [
    ("lastTaskSucceeded", True, {"error_code": "TIMEOUT"}, Facts(), None, False),
    ("lastTaskSucceeded", True, {}, Facts(), None, True),
    ("inputsValid", True, {"dependencies": ("MarketIntel",)}, FAILING, None, False),
    ("configHealthy", True, {"error_code": "CONFIG_MISSING"}, Facts(), None, False),
    ("alignmentMin", 0.92, {"alignment_ratio": 0.92}, Facts(), None, True),
    ("alignmentMin", 0.92, {"alignment_ratio": 0.91}, Facts(), None, False),
    ("backlogAgeMaxMinutes", 15, {"backlog_age_seconds": 900.0}, Facts(), None, True),
    ("backlogAgeMaxMinutes", 15, {"backlog_age_seconds": 901.0}, Facts(), None, False),
    ("conflictCleared", True, {}, Facts(), None, True),
    ("conflictCleared", True, {"conflict_id": "C-1"}, Facts(), None, False),
    ("conflictCleared", True, {"open_conflicts": 2}, Facts(), None, False),
    ("conflictCleared", True, {"directive_id": "D-1"}, Facts(directive_claimants=2), None, False),
    ("budgetWithinCap", True, {}, Facts(), 24.0, True),
    ("budgetWithinCap", True, {}, Facts(), 26.0, False),
    ("budgetWithinCap", True, {}, Facts(), None, False),  # the spend unknown is not within the cap
]


@pytest.mark.parametrize("name, value, fields, facts, spend, expected", CRITERION_CASES)
def test_each_criterion_holds_exactly_when_the_pack_says(name, value, fields, facts, spend, expected):
    assert check_criteria({name: value}, {"CMO": (signal(**fields), facts)}, spend, 25.0) == {name: expected}


def test_every_criterion_the_playbooks_accept_has_a_predicate_and_one_definition():
    assert validation.CRITERIA is CRITERIA  # the validator reads the one registry
    assert {c[0] for c in CRITERION_CASES} == set(CRITERIA)


def test_an_agent_without_a_signal_holds_no_criterion_and_several_agents_are_named():
    checks = check_criteria({"alignmentMin": 0.9, "lastTaskSucceeded": False},
                            {"CMO": (signal(), Facts()), "CRO": (None, Facts())}, None, 25.0)
    assert checks == {"alignmentMin[CMO]": True, "alignmentMin[CRO]": False}
