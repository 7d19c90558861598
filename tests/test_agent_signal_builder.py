"""The agent library's signal: the §2 document the contract accepts, built from an AgentReport."""
from datetime import datetime, timezone

import pytest

from autonomy.agent import AgentReport, build_signal
from autonomy.signal_contract import SignalError, load_signals

NOW = 1_755_529_331.25  # 2025-08-18T15:02:11.250Z


def test_a_fresh_report_is_a_healthy_signal_the_contract_accepts():
    signal = build_signal("CMO", "Marketing", AgentReport(), NOW)
    assert signal == {"agent": "CMO", "domain": "Marketing", "status": "healthy", "lastReport": "",
                      "metrics": {"successRate": 1.0, "alignment": 1.0, "backlogAgeMinutes": 0.0,
                                  "costBurnRatePerHour": 0.0},
                      "ts": "2025-08-18T15:02:11.250Z"}
    [parsed] = load_signals(__import__("json").dumps(signal))
    assert parsed.timestamp == NOW and parsed.domain == "Marketing"


def test_every_field_of_the_report_lands_where_the_schema_puts_it():
    report = AgentReport(status="error", success_rate=0.7, alignment=0.9, backlog_minutes=20, cost_per_hour=1.5,
                         error_code="TIMEOUT", queue_depth=7, open_conflicts=1, dependencies=("MarketIntel",),
                         directive_id="dir-42", conflict_id="c-1", checks={"lastTaskSucceeded": False},
                         extensions={"model": "gpt-x", "shard": 3}, last_report="timed out twice")
    signal = build_signal("CMO", None, report, datetime(2025, 8, 18, 15, 2, 11, tzinfo=timezone.utc))
    assert "domain" not in signal
    assert signal["context"] == {"directiveId": "dir-42", "conflictId": "c-1", "errorCode": "TIMEOUT",
                                 "queueDepth": 7, "openConflicts": 1, "dependencies": ["MarketIntel"]}
    assert signal["checks"] == {"lastTaskSucceeded": False}
    assert signal["extensions"] == {"model": "gpt-x", "shard": 3}
    assert signal["ts"] == "2025-08-18T15:02:11.000Z"
    [parsed] = load_signals(__import__("json").dumps(signal))
    assert parsed.error_code == "TIMEOUT" and parsed.backlog_age_seconds == 1200


@pytest.mark.parametrize("change, field", [
    ({"status": "sleepy"}, "status"),
    ({"success_rate": 1.5}, "metrics.successRate"),
    ({"error_code": "OOPS"}, "context.errorCode"),
    ({"checks": {"feelsFine": True}}, "checks.feelsFine"),
    ({"extensions": {"1bad": 1}}, "extensions"),
])
def test_a_wrong_field_is_a_value_error_naming_it(change, field):
    with pytest.raises(ValueError) as caught:
        build_signal("CMO", "Marketing", AgentReport(**change), NOW)
    assert isinstance(caught.value, SignalError)
    assert any(e.startswith(field) for e in caught.value.errors), caught.value.errors


def test_a_reserved_or_malformed_name_and_a_naive_time_are_refused():
    with pytest.raises(ValueError, match="agent: 'fleet' is reserved"):
        build_signal("fleet", None, AgentReport(), NOW)
    with pytest.raises(ValueError, match="domain"):
        build_signal("CMO", "not a name", AgentReport(), NOW)
    with pytest.raises(ValueError, match="now: a datetime without a zone"):
        build_signal("CMO", None, AgentReport(), datetime(2025, 1, 1))


def test_update_sets_fields_together_and_names_an_unknown_one():
    report = AgentReport()
    assert report.update(status="degraded", success_rate=0.8) is report
    assert (report.status, report.success_rate) == ("degraded", 0.8)
    with pytest.raises(TypeError, match="AgentReport has no field colour"):
        report.update(colour="red")


def test_the_signal_is_a_copy_the_agent_can_keep_changing():
    report = AgentReport(extensions={"seen": ["a"]})
    signal = build_signal("CMO", None, report, NOW)
    report.extensions["seen"].append("b")
    assert signal["extensions"] == {"seen": ["a"]}
