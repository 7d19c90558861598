"""The classifier: each rule alone, every precedence pair, the scaffold's defects fixed, strict thresholds."""
import copy
import itertools
import json

import pytest

from autonomy.settings import Settings
from autonomy.signal_contract import schema, validate_signals
from tests.signal_cases import example
from webhook_receiver.classifier import CLASSES, FALLBACKS, RULES, Decision, Facts, SloThresholds, classify

SECTIONS = {name: set(schema()["properties"][name]["properties"]) for name in ("metrics", "context", "checks")}

# The pack's section 2 example made healthy: within every SLO, no conflict, no error code,
# its directive and its two listed dependencies kept.
HEALTHY = {"successRate": 0.99, "alignment": 0.99, "directiveId": "D-1", "conflictId": None, "errorCode": None}


def _document(base: dict, overrides: dict) -> dict:
    doc = copy.deepcopy(base)
    for key, value in overrides.items():
        section = next((name for name, keys in SECTIONS.items() if key in keys), None)
        node = doc.setdefault(section, {}) if section else doc
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return doc


def signal(**overrides):
    """The healthy example with OVERRIDES (camelCase field names; None deletes), validated by the contract."""
    [sig] = validate_signals(_document(_document(example(), HEALTHY), overrides))
    return sig


def pack_signal():
    """The pack's section 2 example exactly as written (TIMEOUT, conflictId, dependencies, zero ratios)."""
    [sig] = validate_signals(example())
    return sig


def merged(a: Facts, b: Facts) -> Facts:
    """Facts that hold everything A and B hold."""
    return Facts(
        failing_dependencies=a.failing_dependencies | b.failing_dependencies,
        directive_claimants=max(a.directive_claimants, b.directive_claimants),
        missing_secrets=a.missing_secrets | b.missing_secrets,
        alert_classes=a.alert_classes | b.alert_classes,
        silent=a.silent or b.silent,
        budget_over_cap=a.budget_over_cap or b.budget_over_cap,
    )


# (signal overrides, facts, class, deciding rule, its reason): every rule alone, and nothing else matching.
SINGLE_RULES = [
    pytest.param({"conflictId": "C-1"}, Facts(), "CONFLICT", "conflict-id", "conflictId C-1 reported",
                 id="conflict-id"),
    pytest.param({}, Facts(directive_claimants=2), "CONFLICT", "conflict-directive-claimants",
                 "directiveId D-1 claimed by 2 agents", id="conflict-directive-claimants"),
    pytest.param({"openConflicts": 3}, Facts(), "CONFLICT", "conflict-open", "openConflicts 3", id="conflict-open"),
    pytest.param({}, Facts(alert_classes={"CONFLICT"}), "CONFLICT", "conflict-alert",
                 "firing alert classed CONFLICT", id="conflict-alert"),
    pytest.param({"errorCode": "CONFIG_MISSING"}, Facts(), "CONFIG", "config-error-code",
                 "errorCode CONFIG_MISSING", id="config-error-code-missing"),
    pytest.param({"errorCode": "AUTH_FAILED"}, Facts(), "CONFIG", "config-error-code",
                 "errorCode AUTH_FAILED", id="config-error-code-auth"),
    pytest.param({}, Facts(missing_secrets={"API_BASE"}), "CONFIG", "config-missing-secret",
                 "required secret API_BASE missing", id="config-missing-secret"),
    pytest.param({}, Facts(missing_secrets={"SERVICE_ACCOUNT", "API_BASE"}), "CONFIG", "config-missing-secret",
                 "required secrets API_BASE, SERVICE_ACCOUNT missing", id="config-missing-secrets"),
    pytest.param({"configHealthy": False}, Facts(), "CONFIG", "config-check", "checks.configHealthy is false",
                 id="config-check"),
    pytest.param({}, Facts(alert_classes={"CONFIG"}), "CONFIG", "config-alert", "firing alert classed CONFIG",
                 id="config-alert"),
    pytest.param({"errorCode": "INPUT_MISSING"}, Facts(), "DATA_DEP", "data-dep-error-code",
                 "errorCode INPUT_MISSING", id="data-dep-error-code-input"),
    pytest.param({"errorCode": "STALE_DATA"}, Facts(), "DATA_DEP", "data-dep-error-code",
                 "errorCode STALE_DATA", id="data-dep-error-code-stale"),
    pytest.param({}, Facts(failing_dependencies={"MarketIntel"}), "DATA_DEP", "data-dep-dependency-failing",
                 "dependency MarketIntel failing", id="data-dep-dependency-failing"),
    pytest.param({}, Facts(failing_dependencies={"MarketIntel", "Content"}), "DATA_DEP",
                 "data-dep-dependency-failing", "dependencies Content, MarketIntel failing",
                 id="data-dep-dependencies-failing"),
    pytest.param({"inputsValid": False}, Facts(), "DATA_DEP", "data-dep-inputs-check", "checks.inputsValid is false",
                 id="data-dep-inputs-check"),
    pytest.param({}, Facts(alert_classes={"DATA_DEP"}), "DATA_DEP", "data-dep-alert", "firing alert classed DATA_DEP",
                 id="data-dep-alert"),
    pytest.param({"errorCode": "TIMEOUT"}, Facts(), "TRANSIENT", "transient-error-code", "errorCode TIMEOUT",
                 id="transient-error-code-timeout"),
    pytest.param({"errorCode": "RATE_LIMIT"}, Facts(), "TRANSIENT", "transient-error-code", "errorCode RATE_LIMIT",
                 id="transient-error-code-rate-limit"),
    pytest.param({"errorCode": "TEMP_NETWORK"}, Facts(), "TRANSIENT", "transient-error-code",
                 "errorCode TEMP_NETWORK", id="transient-error-code-network"),
    pytest.param({}, Facts(silent=True), "TRANSIENT", "transient-silent", "agent stopped signalling",
                 id="transient-silent"),
    pytest.param({"lastTaskSucceeded": False}, Facts(), "TRANSIENT", "transient-last-task",
                 "checks.lastTaskSucceeded is false", id="transient-last-task"),
    pytest.param({}, Facts(alert_classes={"TRANSIENT"}), "TRANSIENT", "transient-alert",
                 "firing alert classed TRANSIENT", id="transient-alert"),
    pytest.param({"queueDepth": 6}, Facts(), "CAPACITY", "capacity-queue-depth", "queueDepth 6 over the max of 5",
                 id="capacity-queue-depth"),
    pytest.param({"backlogAgeMinutes": 41}, Facts(), "CAPACITY", "capacity-backlog",
                 "backlog 41 min over the 15 min SLO", id="capacity-backlog"),
    pytest.param({}, Facts(budget_over_cap=True), "CAPACITY", "capacity-budget",
                 "projected fleet spend over the daily budget cap", id="capacity-budget"),
    pytest.param({}, Facts(alert_classes={"CAPACITY"}), "CAPACITY", "capacity-alert", "firing alert classed CAPACITY",
                 id="capacity-alert"),
    pytest.param({"status": "error"}, Facts(), "TRANSIENT", "fallback-status-error", "status error",
                 id="fallback-status-error"),
    pytest.param({"status": "degraded"}, Facts(), "CAPACITY", "fallback-status-degraded", "status degraded",
                 id="fallback-status-degraded"),
    pytest.param({"successRate": 0.82}, Facts(), "CAPACITY", "fallback-slo-success",
                 "success 0.82 under the 0.94 SLO", id="fallback-slo-success"),
    pytest.param({"alignment": 0.9}, Facts(), "CAPACITY", "fallback-slo-align", "alignment 0.9 under the 0.95 SLO",
                 id="fallback-slo-align"),
]


@pytest.mark.parametrize(("overrides", "facts", "classification", "rule", "reason"), SINGLE_RULES)
def test_each_rule_alone_decides_its_class(overrides, facts, classification, rule, reason):
    decision = classify(signal(**overrides), facts)
    assert (decision.classification, decision.rule, decision.reasons) == (classification, rule, (reason,))


def test_every_rule_has_a_row_of_its_own():
    assert {p.values[3] for p in SINGLE_RULES} == {rule.name for rule in RULES}


# One representative trigger per class, on fields that do not interfere with one another.
TRIGGERS = {
    "CONFLICT": ({"conflictId": "C-1"}, Facts()),
    "CONFIG": ({}, Facts(missing_secrets={"API_BASE"})),
    "DATA_DEP": ({}, Facts(failing_dependencies={"MarketIntel"})),
    "TRANSIENT": ({"errorCode": "TIMEOUT"}, Facts()),
    "CAPACITY": ({"backlogAgeMinutes": 41}, Facts()),
}
PAIRS = list(itertools.combinations(CLASSES, 2))


def test_the_pairs_are_every_ordered_pair_of_classes():
    assert len(PAIRS) == 10 and set(TRIGGERS) == set(CLASSES)


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}-beats-{b}" for a, b in PAIRS])
def test_the_earlier_class_wins_every_pair(first, second):
    (over_a, facts_a), (over_b, facts_b) = TRIGGERS[first], TRIGGERS[second]
    alone_b = classify(signal(**over_b), facts_b)
    both = classify(signal(**over_a, **over_b), merged(facts_a, facts_b))
    assert alone_b.classification == second
    assert both.classification == first
    assert both.reasons[0] == classify(signal(**over_a), facts_a).reasons[0]
    assert alone_b.reasons[0] in both.reasons[1:]


@pytest.mark.parametrize(("overrides", "facts", "expected"), [
    pytest.param({"conflictId": "C-1", "errorCode": "TIMEOUT"}, Facts(), "CONFLICT", id="conflict-beats-timeout"),
    pytest.param({"errorCode": "CONFIG_MISSING"}, Facts(directive_claimants=3), "CONFLICT",
                 id="directive-overlap-beats-config-error"),
    pytest.param({"errorCode": "INPUT_MISSING"}, Facts(missing_secrets={"API_BASE"}), "CONFIG",
                 id="missing-secret-beats-input-missing"),
    pytest.param({"errorCode": "AUTH_FAILED", "queueDepth": 40}, Facts(), "CONFIG", id="auth-failed-beats-queue"),
    pytest.param({"errorCode": "TIMEOUT"}, Facts(failing_dependencies={"MarketIntel"}), "DATA_DEP",
                 id="failing-dependency-beats-its-timeout"),
    pytest.param({"inputsValid": False, "lastTaskSucceeded": False}, Facts(), "DATA_DEP",
                 id="invalid-inputs-beat-failed-task"),
    pytest.param({"errorCode": "RATE_LIMIT", "queueDepth": 9}, Facts(budget_over_cap=True), "TRANSIENT",
                 id="rate-limit-beats-queue-and-budget"),
    pytest.param({"status": "error", "backlogAgeMinutes": 20}, Facts(), "CAPACITY",
                 id="backlog-beats-the-status-error-fallback"),
    pytest.param({"status": "degraded", "lastTaskSucceeded": False}, Facts(), "TRANSIENT",
                 id="failed-task-beats-the-degraded-fallback"),
    pytest.param({"status": "error", "successRate": 0.5}, Facts(), "TRANSIENT",
                 id="status-error-fallback-beats-slo-breach"),
])
def test_named_precedence_cases(overrides, facts, expected):
    assert classify(signal(**overrides), facts).classification == expected


# The defects of the pack's section 14 TypeScript classifier, each fixed.
def test_listing_dependencies_alone_is_not_an_incident():
    sig = signal()
    assert sig.dependencies == ("MarketIntel", "Content")
    assert classify(sig) == Decision(None, (), None)


def test_a_healthy_signal_within_slo_is_not_an_incident():
    assert classify(signal(dependencies=None)).classification is None


def test_a_config_error_with_a_long_backlog_is_config():
    decision = classify(signal(errorCode="CONFIG_MISSING", backlogAgeMinutes=60))
    assert (decision.classification, decision.rule) == ("CONFIG", "config-error-code")
    assert decision.reasons == ("errorCode CONFIG_MISSING", "backlog 60 min over the 15 min SLO")


def test_a_backlog_symptom_never_beats_a_timeout():
    assert classify(signal(errorCode="TIMEOUT", backlogAgeMinutes=41, queueDepth=12)).classification == "TRANSIENT"


def test_the_packs_own_example_is_a_conflict():
    decision = classify(pack_signal())
    assert (decision.classification, decision.rule) == ("CONFLICT", "conflict-id")
    assert decision.reasons == (
        "conflictId id-optional reported", "errorCode TIMEOUT",
        "success 0 under the 0.94 SLO", "alignment 0 under the 0.95 SLO",
    )


# The pack's section 12 chaos drills.
@pytest.mark.parametrize(("overrides", "facts", "expected", "rule"), [
    pytest.param({"agent": "CMO", "status": "error", "errorCode": "TIMEOUT"}, Facts(), "TRANSIENT",
                 "transient-error-code", id="timeout-on-cmo"),
    pytest.param({"agent": "CRO", "directiveId": "D-42"}, Facts(directive_claimants=2), "CONFLICT",
                 "conflict-directive-claimants", id="cro-cmo-overlap-on-one-directive"),
    pytest.param({"status": "error", "errorCode": "CONFIG_MISSING", "configHealthy": False},
                 Facts(missing_secrets={"API_BASE"}), "CONFIG", "config-error-code", id="required-secret-removed"),
])
def test_chaos_drills(overrides, facts, expected, rule):
    decision = classify(signal(**overrides), facts)
    assert (decision.classification, decision.rule) == (expected, rule)


@pytest.mark.parametrize(("overrides", "slo", "expected"), [
    pytest.param({"backlogAgeMinutes": 15}, SloThresholds(), None, id="backlog-at-slo"),
    pytest.param({"backlogAgeMinutes": 15.01}, SloThresholds(), "CAPACITY", id="backlog-over-slo"),
    pytest.param({"backlogAgeMinutes": 15.01}, SloThresholds(backlog_minutes=30), None, id="backlog-under-custom"),
    pytest.param({"backlogAgeMinutes": 30}, SloThresholds(backlog_minutes=30), None, id="backlog-at-custom"),
    pytest.param({"backlogAgeMinutes": 30.5}, SloThresholds(backlog_minutes=30), "CAPACITY",
                 id="backlog-over-custom"),
    # 2.41 * 60 / 60 > 2.41 in floating point: a value exactly at the SLO must still not breach it.
    pytest.param({"backlogAgeMinutes": 2.41}, SloThresholds(backlog_minutes=2.41), None, id="backlog-at-odd-slo"),
    pytest.param({"queueDepth": 5}, SloThresholds(), None, id="queue-at-max"),
    pytest.param({"queueDepth": 6}, SloThresholds(), "CAPACITY", id="queue-over-max"),
    pytest.param({"queueDepth": 6}, SloThresholds(queue_depth_max=10), None, id="queue-under-custom"),
    pytest.param({"successRate": 0.94}, SloThresholds(), None, id="success-at-slo"),
    pytest.param({"successRate": 0.9399}, SloThresholds(), "CAPACITY", id="success-under-slo"),
    pytest.param({"successRate": 0.9}, SloThresholds(success=0.8), None, id="success-over-custom"),
    pytest.param({"alignment": 0.95}, SloThresholds(), None, id="alignment-at-slo"),
    pytest.param({"alignment": 0.9499}, SloThresholds(), "CAPACITY", id="alignment-under-slo"),
])
def test_thresholds_are_strict_and_come_from_the_slo(overrides, slo, expected):
    assert classify(signal(**overrides), Facts(), slo).classification == expected


def test_a_custom_slo_is_named_in_the_reason():
    decision = classify(signal(backlogAgeMinutes=45), slo=SloThresholds(backlog_minutes=30))
    assert decision.reasons == ("backlog 45 min over the 30 min SLO",)


def test_thresholds_come_from_settings():
    env = {"AUTOREM_SLO_SUCCESS": "0.9", "AUTOREM_SLO_ALIGN": "0.8",
           "AUTOREM_SLO_BACKLOG_MIN": "30", "AUTOREM_QUEUE_DEPTH_MAX": "10"}
    assert SloThresholds.from_settings(Settings.from_env(env)) == SloThresholds(0.9, 0.8, 30.0, 10.0)
    assert SloThresholds.from_settings(Settings.from_env({})) == SloThresholds()


@pytest.mark.parametrize(("facts", "expected", "rule", "reasons"), [
    pytest.param(Facts(alert_classes={"TRANSIENT"}), "TRANSIENT", "transient-alert",
                 ("firing alert classed TRANSIENT",), id="alert-only"),
    pytest.param(Facts(silent=True, alert_classes={"TRANSIENT"}), "TRANSIENT", "transient-silent",
                 ("agent stopped signalling", "firing alert classed TRANSIENT"), id="silent"),
    pytest.param(Facts(directive_claimants=2), "CONFLICT", "conflict-directive-claimants",
                 ("directive claimed by 2 agents",), id="claimants-without-directive-id"),
    pytest.param(Facts(budget_over_cap=True, failing_dependencies={"MarketIntel"}), "DATA_DEP",
                 "data-dep-dependency-failing",
                 ("dependency MarketIntel failing", "projected fleet spend over the daily budget cap"), id="mixed"),
    pytest.param(Facts(directive_claimants=1, alert_classes={"none"}), None, None, (), id="nothing-wrong"),
    pytest.param(Facts(), None, None, (), id="no-facts"),
])
def test_without_a_signal_only_facts_decide(facts, expected, rule, reasons):
    assert classify(None, facts) == Decision(expected, reasons, rule)


def test_reasons_name_every_matching_rule_winner_first():
    decision = classify(
        signal(status="error", errorCode="TIMEOUT", backlogAgeMinutes=41, successRate=0.82),
        Facts(failing_dependencies={"MarketIntel"}, alert_classes={"TRANSIENT", "CAPACITY"}),
    )
    assert (decision.classification, decision.rule) == ("DATA_DEP", "data-dep-dependency-failing")
    assert decision.reasons == (
        "dependency MarketIntel failing",
        "errorCode TIMEOUT",
        "firing alert classed TRANSIENT",
        "backlog 41 min over the 15 min SLO",
        "firing alert classed CAPACITY",
        "status error",
        "success 0.82 under the 0.94 SLO",
    )


def test_a_decision_as_a_dict():
    decision = classify(signal(errorCode="TIMEOUT"))
    assert decision.as_dict("RestartAndRetryTransient") == {
        "classification": "TRANSIENT", "playbook": "RestartAndRetryTransient", "reasons": ["errorCode TIMEOUT"],
    }
    assert classify(signal()).as_dict() == {"classification": None, "playbook": None, "reasons": []}
    json.dumps(decision.as_dict())


def test_rules_are_the_class_precedence_with_the_fallbacks_last():
    assert RULES[len(RULES) - len(FALLBACKS):] == FALLBACKS
    ranks = [CLASSES.index(rule.classification) for rule in RULES[:len(RULES) - len(FALLBACKS)]]
    assert ranks == sorted(ranks)
    assert set(ranks) == set(range(len(CLASSES)))
    assert [rule.classification for rule in FALLBACKS] == ["TRANSIENT", "CAPACITY", "CAPACITY", "CAPACITY"]
    assert len({rule.name for rule in RULES}) == len(RULES)


def test_facts_take_any_collection_of_names_but_not_a_bare_string():
    assert Facts(missing_secrets=["API_BASE"]) == Facts(missing_secrets=frozenset({"API_BASE"}))
    hash(Facts(alert_classes={"CONFIG"}))
    with pytest.raises(TypeError, match="missing_secrets"):
        Facts(missing_secrets="API_BASE")
