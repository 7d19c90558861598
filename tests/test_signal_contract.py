import json
from pathlib import Path

import pytest

from autonomy.signal_contract import Signal, SignalError, load_signals, schema
from tests.signal_cases import MALFORMED, example

REPO = Path(__file__).resolve().parent.parent


def test_the_packs_example_with_placeholders_filled_validates():
    [signal] = load_signals(json.dumps(example()))
    assert signal.agent == "CMO"
    assert signal.error_code == "TIMEOUT"
    assert signal.dependencies == ("MarketIntel", "Content")


def test_a_signal_is_converted_to_base_units():
    doc = example()
    doc["metrics"].update(backlogAgeMinutes=2.5, successRate=0.9)
    doc["ts"] = "2025-08-18T17:02:11+02:00"
    [signal] = load_signals(json.dumps(doc))
    assert signal.backlog_age_seconds == 150.0
    assert signal.success_ratio == 0.9
    assert signal.timestamp == 1755529331.0


def test_the_optional_verification_fields_are_accepted():
    doc = example()
    doc["domain"] = "Marketing"
    doc["context"]["openConflicts"] = 2
    doc["checks"] = {"lastTaskSucceeded": True, "inputsValid": False, "configHealthy": True}
    [signal] = load_signals(json.dumps(doc))
    assert (signal.domain, signal.open_conflicts) == ("Marketing", 2)
    assert (signal.last_task_succeeded, signal.inputs_valid, signal.config_healthy) == (True, False, True)


def test_context_and_checks_may_be_left_out():
    doc = example()
    del doc["context"]
    [signal] = load_signals(json.dumps(doc))
    assert signal.dependencies == () and signal.error_code is None


@pytest.mark.parametrize("every_code", ["TIMEOUT", "RATE_LIMIT", "TEMP_NETWORK", "INPUT_MISSING", "STALE_DATA",
                                        "CONFIG_MISSING", "AUTH_FAILED", "OTHER"])
def test_every_error_code_of_the_vocabulary_is_accepted(every_code):
    doc = example()
    doc["context"]["errorCode"] = every_code
    assert load_signals(json.dumps(doc))[0].error_code == every_code


def test_there_are_at_least_fifteen_distinct_malformed_cases():
    assert len({case[0] for case in MALFORMED}) >= 15


@pytest.mark.parametrize("body, expected", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_signal_is_rejected_naming_the_field(body, expected):
    with pytest.raises(SignalError) as caught:
        load_signals(body)
    assert any(expected in line for line in caught.value.errors), caught.value.errors


def test_every_problem_is_reported_not_just_the_first():
    doc = example()
    doc["metrics"]["successRate"] = 2
    doc["status"] = "sick"
    del doc["agent"]
    with pytest.raises(SignalError) as caught:
        load_signals(json.dumps(doc))
    assert len(caught.value.errors) == 3


def test_errors_in_a_batch_name_the_item_index():
    good, bad = example(), example()
    bad["metrics"]["successRate"] = 1.7
    with pytest.raises(SignalError) as caught:
        load_signals(json.dumps([good, bad]))
    assert caught.value.errors == ("[1].metrics.successRate: 1.7 is greater than the maximum of 1",)


def test_deeply_nested_json_is_an_error_not_a_crash():
    with pytest.raises(SignalError) as caught:
        load_signals("[" * 100_000 + "]" * 100_000)
    assert caught.value.errors[0].startswith("(body)")


def test_the_published_schema_is_the_one_enforced():
    published = json.loads((REPO / "autonomy" / "schemas" / "signal.schema.json").read_text())
    assert published == schema()
    assert set(published["properties"]) == {"agent", "domain", "status", "lastReport", "metrics", "context",
                                             "checks", "ts", "extensions"}


def test_signals_compare_by_value():
    a, b = load_signals(json.dumps([example(), example()]))
    assert a == b and isinstance(a, Signal)
