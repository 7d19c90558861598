import copy
import dataclasses

import pytest
import yaml

from autonomy.settings import Settings
from devstack.checkout import PLAYBOOKS_FILE as DEFAULT_PATH
from webhook_receiver.playbooks import (
    CLASSIFICATIONS,
    AgentEntry,
    PlaybookError,
    PlaybookSet,
    Step,
    load_playbooks,
    step_target,
)
from webhook_receiver.retry_policy import RetryPolicy
from webhook_receiver.templating import UnsafeTarget

CATCH_ALL = ("no playbook for class {} without label matchers (every class needs one that matches all its "
             "incidents)")


@pytest.fixture(scope="module")
def real():
    return load_playbooks(DEFAULT_PATH)


# ------------------------------------------------------------------ the real file

def test_the_real_file_holds_the_packs_five_playbooks_plus_throttle_for_budget(real):
    assert [p.name for p in real.playbooks] == [
        "ThrottleForBudget", "ResolveInterAgentConflict", "RestartAndRetryTransient", "RebalanceCapacity",
        "RepairDataDependency", "FixConfig"]
    assert {p.name: p.criteria for p in real.playbooks} == {
        "ThrottleForBudget": {"budgetWithinCap": True},
        "ResolveInterAgentConflict": {"conflictCleared": True, "alignmentMin": 0.92},
        "RestartAndRetryTransient": {"lastTaskSucceeded": True},
        "RebalanceCapacity": {"backlogAgeMaxMinutes": 15},
        "RepairDataDependency": {"inputsValid": True},
        "FixConfig": {"configHealthy": True},
    }
    assert {p.name: [s.action for s in p.steps] for p in real.playbooks} == {
        "ThrottleForBudget": ["throttleAgent"],
        "ResolveInterAgentConflict": ["applyPriorityRules", "reassignOverlaps", "throttleAgent"],
        "RestartAndRetryTransient": ["restartAgent", "retryLastTask"],
        "RebalanceCapacity": ["reallocateSlots", "splitDirective"],
        "RepairDataDependency": ["refreshCache", "refetchSource", "validateInputs"],
        "FixConfig": ["checkSecrets", "schemaMigrateIfNeeded"],
    }
    assert [p.name for p in real.playbooks if p.increases_spend] == ["RebalanceCapacity"]
    assert not any(p.high_risk for p in real.playbooks)


def test_the_real_file_keeps_the_packs_step_args_with_templates_for_the_variables(real):
    args = {(p.name, s.action): s.args_dict() for p in real.playbooks for s in p.steps}
    assert args[("ThrottleForBudget", "throttleAgent")] == {
        "agent": "{{ lowestPriorityAgent }}", "maxConcurrent": 1, "minutes": 60}
    assert args[("ResolveInterAgentConflict", "applyPriorityRules")] == {"order": "{{ priority }}"}
    assert args[("ResolveInterAgentConflict", "reassignOverlaps")] == {
        "policy": "revenue_first", "directiveId": "{{ context.directiveId }}", "winner": "{{ winningAgent }}"}
    assert args[("ResolveInterAgentConflict", "throttleAgent")] == {
        "agent": "{{ losingAgent }}", "maxConcurrent": 1, "minutes": 20}
    assert args[("RestartAndRetryTransient", "restartAgent")] == {"mode": "soft"}
    assert args[("RestartAndRetryTransient", "retryLastTask")] == {"backoffMs": 1500, "max": 2}
    # not the scaffold's fixed CMO -> CRO move
    assert args[("RebalanceCapacity", "reallocateSlots")] == {
        "from": "{{ slotDonorAgent }}", "to": "{{ agent }}", "slots": 2}
    assert args[("RebalanceCapacity", "splitDirective")] == {
        "directiveId": "{{ context.directiveId }}", "ratio": [0.6, 0.4]}
    assert args[("RepairDataDependency", "refetchSource")] == {"source": "{{ failingDependency }}"}
    assert args[("FixConfig", "checkSecrets")] == {"required": ["GOOGLE_PROJECT_ID", "SERVICE_ACCOUNT", "API_BASE"]}
    assert args[("RepairDataDependency", "refreshCache")] == {}


def test_the_real_file_declares_every_primitive_of_the_pack_and_the_escalation(real):
    assert sorted(real.primitives) == sorted([
        "applyPriorityRules", "reassignOverlaps", "throttleAgent", "restartAgent", "retryLastTask",
        "reallocateSlots", "splitDirective", "refreshCache", "refetchSource", "validateInputs", "checkSecrets",
        "schemaMigrateIfNeeded"])
    for name, primitive in real.primitives.items():
        assert (primitive.name, primitive.method, primitive.path) == (name, "POST", f"/agents/{{agent}}/actions/{name}")
    assert real.default_base_url == "http://agents:8080"
    assert real.timeout_seconds == 5
    assert real.retry == RetryPolicy(attempts=3, backoff_seconds=0.5, max_backoff_seconds=5, jitter=0.2)
    assert real.escalate_to == "CEO"
    assert [(o.name, o.why) for o in real.recommended_options] == [
        ("ReassignToCOO", "capacity + higher ROI path"), ("ReduceScopeAndRetry", "keeps SLA, lowers risk")]
    assert real.agents["CRO"] == AgentEntry("Revenue", None)


def test_every_class_selects_its_pack_playbook(real):
    assert {c: real.select(c).name for c in CLASSIFICATIONS} == {
        "CONFLICT": "ResolveInterAgentConflict", "TRANSIENT": "RestartAndRetryTransient",
        "CAPACITY": "RebalanceCapacity", "DATA_DEP": "RepairDataDependency", "CONFIG": "FixConfig"}
    assert real.select("NOPE") is None


def test_a_label_matcher_wins_only_when_its_label_matches(real):
    budget = {"alertname": "FleetBudgetProjectedOverCap", "agent": "fleet", "severity": "critical"}
    assert real.select("CAPACITY", budget).name == "ThrottleForBudget"
    assert real.select("CAPACITY", {"alertname": "AgentBacklogTooOld"}).name == "RebalanceCapacity"
    assert real.select("CAPACITY", {}).name == "RebalanceCapacity"
    # the label matcher is for CAPACITY only
    assert real.select("CONFLICT", budget).name == "ResolveInterAgentConflict"


def test_first_match_wins(tmp_path):
    d = minimal()
    d["playbooks"][0:0] = [
        playbook("ByTwoLabels", "CONFLICT", labels={"alertname": "X", "severity": "critical"}),
        playbook("ByAlertname", "CONFLICT", labels={"alertname": "X"}),
        playbook("BySeverity", "CONFLICT", labels={"severity": "critical"}),
    ]
    s = load(tmp_path, d)
    assert s.select("CONFLICT", {"alertname": "X", "severity": "critical"}).name == "ByTwoLabels"
    assert s.select("CONFLICT", {"alertname": "X", "severity": "warning"}).name == "ByAlertname"
    assert s.select("CONFLICT", {"alertname": "Y", "severity": "critical"}).name == "BySeverity"
    assert s.select("CONFLICT", {"alertname": "Y"}).name == "FixCONFLICT"
    assert s.select("CONFLICT").name == "FixCONFLICT"
    # both ByAlertname and BySeverity match {alertname: X, severity: critical} once ByTwoLabels is gone
    d["playbooks"].pop(0)
    assert load(tmp_path, d).select("CONFLICT", {"alertname": "X", "severity": "critical"}).name == "ByAlertname"


def test_priority_follows_the_default_setting_revenue_then_marketing_then_content(real):
    priority = Settings.from_env({}).priority
    assert priority == ("Revenue", "Marketing", "Content")
    assert [real.priority_rank(a, priority) for a in ("CRO", "CMO", "Content")] == [0, 1, 2]
    assert real.by_priority(["Content", "CMO", "CRO"], priority) == ["CRO", "CMO", "Content"]
    # unknown domains rank after every known one; ties by name
    assert real.priority_rank("CEO", priority) == 3
    assert real.by_priority(["MarketIntel", "Content", "CEO", "CRO", "CMO"], priority) == [
        "CRO", "CMO", "Content", "CEO", "MarketIntel"]


def test_the_files_domain_wins_over_the_signals(real):
    priority = ("Revenue", "Marketing", "Content")
    assert real.domain_of("CMO", "Revenue") == "Marketing"
    assert real.domain_of("NewAgent", "Revenue") == "Revenue"
    assert real.domain_of("NewAgent") is None
    assert real.priority_rank("NewAgent", priority, "Revenue") == 0
    assert real.priority_rank("NewAgent", priority) == 3
    assert real.by_priority(["CMO", "NewAgent"], priority, {"NewAgent": "Revenue", "CMO": "Revenue"}) == [
        "NewAgent", "CMO"]


def test_base_urls_per_agent_and_the_setting_override(tmp_path):
    d = minimal()
    d["agents"]["CMO"] = {"domain": "Marketing", "baseUrl": "https://cmo.internal:9443/api/"}
    s = load(tmp_path, d)
    assert s.base_url_for("CMO") == "https://cmo.internal:9443/api"
    assert s.base_url_for("CRO") == s.base_url_for("Unknown") == "http://agents:8080"
    assert s.url_for("restartAgent", "CMO") == "https://cmo.internal:9443/api/agents/CMO/actions/restartAgent"
    assert s.url_for("restartAgent", "CRO") == "http://agents:8080/agents/CRO/actions/restartAgent"
    with pytest.raises(UnsafeTarget):
        s.url_for("restartAgent", "CRO/../admin")
    override = load(tmp_path, d, actions_base_url="http://127.0.0.1:18080")
    assert override.base_url_for("CRO") == "http://127.0.0.1:18080"
    assert override.base_url_for("CMO") == "https://cmo.internal:9443/api"
    # the setting's "unset" value
    assert load(tmp_path, d, actions_base_url="").default_base_url == "http://agents:8080"


def test_a_step_acts_on_the_incident_agent_unless_its_args_name_one():
    assert step_target({"mode": "soft"}, "CMO") == "CMO"
    assert step_target({"agent": "Content"}, "CMO") == "Content"


def test_steps_and_playbook_sets_are_immutable_and_hashable(real):
    step = real.select("CONFIG").steps[0]
    copy_ = step.args_dict()
    copy_["required"].append("MORE")
    assert step.args_dict()["required"] == ["GOOGLE_PROJECT_ID", "SERVICE_ACCOUNT", "API_BASE"]
    with pytest.raises(TypeError):
        step.args["required"] = []
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.action = "other"
    assert hash(step) == hash(Step("checkSecrets", {"required": ["GOOGLE_PROJECT_ID", "SERVICE_ACCOUNT", "API_BASE"]}))
    assert step == Step("checkSecrets", {"required": ["GOOGLE_PROJECT_ID", "SERVICE_ACCOUNT", "API_BASE"]})
    assert isinstance(hash(real), int)
    with pytest.raises(TypeError):
        real.agents["X"] = AgentEntry("Y")
    assert isinstance(real, PlaybookSet)


def test_a_high_risk_step_is_flagged(tmp_path):
    d = minimal()
    d["playbooks"][4]["steps"][0]["highRisk"] = True
    s = load(tmp_path, d)
    assert s.select("CONFIG").steps[0].high_risk and s.select("CONFIG").high_risk
    assert not s.select("CONFLICT").high_risk


# ------------------------------------------------------------------ validation: one test per kind

def minimal() -> dict:
    return {
        "apiVersion": "autonomy-layer/v1",
        "kind": "PlaybookSet",
        "agents": {"CRO": {"domain": "Revenue"}},
        "actions": {"baseUrl": "http://agents:8080", "primitives": {
            "restartAgent": {"method": "POST", "path": "/agents/{agent}/actions/restartAgent"},
            "throttleAgent": {"method": "POST", "path": "/agents/{agent}/actions/throttleAgent"}}},
        "escalation": {"to": "CEO"},
        "playbooks": [playbook(f"Fix{cls}", cls) for cls in CLASSIFICATIONS],
    }  # playbooks[0] CONFLICT, [1] TRANSIENT, [2] CAPACITY, [3] DATA_DEP, [4] CONFIG


def playbook(name, cls, labels=None):
    p = {"name": name, "match": {"classification": cls}, "steps": [{"do": "restartAgent"}],
         "successCriteria": {"lastTaskSucceeded": True}}
    if labels:
        p["match"]["labels"] = labels
    return p


def load(tmp_path, doc, **kwargs):
    path = tmp_path / "playbooks.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return load_playbooks(path, **kwargs)


def errors(tmp_path, doc, **kwargs):
    with pytest.raises(PlaybookError) as caught:
        load(tmp_path, doc, **kwargs)
    assert str(caught.value).startswith("invalid playbooks:\n  ")
    return caught.value.errors


def changed(edit):
    d = minimal()
    edit(d)
    return d


def test_the_minimal_document_is_valid(tmp_path):
    assert len(load(tmp_path, minimal()).playbooks) == 5


def test_wrong_api_version_and_kind(tmp_path):
    d = changed(lambda d: d.update(apiVersion="autonomy-layer/v2", kind="Playbooks"))
    assert errors(tmp_path, d) == ("apiVersion: must be 'autonomy-layer/v1', got 'autonomy-layer/v2'",
                                   "kind: must be 'PlaybookSet', got 'Playbooks'")


def test_unknown_top_level_key(tmp_path):
    assert errors(tmp_path, changed(lambda d: d.update(playbook=[]))) == ("(root): unknown key 'playbook'",)


def test_missing_top_level_keys(tmp_path):
    d = changed(lambda d: [d.pop("escalation"), d.pop("kind"), d.pop("actions"), d.pop("playbooks")])
    assert errors(tmp_path, d) == ("kind: is required", "actions: is required", "escalation: is required",
                                   "playbooks: is required")


def test_unknown_action(tmp_path):
    d = changed(lambda d: d["playbooks"][2]["steps"][0].update({"do": "restartAgnet"}))
    assert errors(tmp_path, d) == ("playbooks[2].steps[0].do: unknown action 'restartAgnet'",)


def test_unknown_class(tmp_path):
    d = changed(lambda d: d["playbooks"][1]["match"].update(classification="TRANSIET"))
    assert errors(tmp_path, d) == (
        "playbooks[1].match.classification: unknown class 'TRANSIET' "
        "(one of CONFLICT, TRANSIENT, CAPACITY, DATA_DEP, CONFIG)",
        "playbooks: " + CATCH_ALL.format("TRANSIENT"))


def test_unknown_criterion(tmp_path):
    d = changed(lambda d: d["playbooks"][0].update(successCriteria={"conflictClosed": True}))
    assert errors(tmp_path, d) == ("playbooks[0].successCriteria.conflictClosed: unknown criterion 'conflictClosed'",)


@pytest.mark.parametrize("criteria, message", [
    ({"lastTaskSucceeded": "yes"}, "lastTaskSucceeded: must be true or false, got 'yes'"),
    ({"budgetWithinCap": 1}, "budgetWithinCap: must be true or false, got 1"),
    ({"alignmentMin": 1.5}, "alignmentMin: must be a number from 0 to 1, got 1.5"),
    ({"alignmentMin": True}, "alignmentMin: must be a number from 0 to 1, got True"),
    ({"backlogAgeMaxMinutes": -1}, "backlogAgeMaxMinutes: must be a number of at least 0, got -1"),
    ({"backlogAgeMaxMinutes": "15"}, "backlogAgeMaxMinutes: must be a number of at least 0, got '15'"),
])
def test_wrong_criterion_type(tmp_path, criteria, message):
    d = changed(lambda d: d["playbooks"][3].update(successCriteria=criteria))
    assert errors(tmp_path, d) == (f"playbooks[3].successCriteria.{message}",)


@pytest.mark.parametrize("value, message", [
    ("{{ context.dependencies[0] }", "unbalanced braces: '{{' without '}}' in '{{ context.dependencies[0] }'"),
    ("context }}", "unbalanced braces: '}}' without '{{' in 'context }}'"),
    ("{{ context..directiveId }}", "bad template path 'context..directiveId' (expected names joined by '.', "
                                   "with optional [N] indexes)"),
    ("{{ secrets.token }}", "unknown template root 'secrets' in {{ secrets.token }}"),
])
def test_bad_template(tmp_path, value, message):
    d = changed(lambda d: d["playbooks"][3]["steps"][0].update(args={"source": [value]}))
    assert errors(tmp_path, d) == (f"playbooks[3].steps[0].args.source[0]: {message}",)


def test_duplicate_playbook_names(tmp_path):
    d = changed(lambda d: d["playbooks"][4].update(name="FixCONFLICT"))
    assert errors(tmp_path, d) == ("playbooks[4].name: duplicate name 'FixCONFLICT' (also playbooks[0])",)


def test_empty_steps(tmp_path):
    d = changed(lambda d: d["playbooks"][1].update(steps=[]))
    assert errors(tmp_path, d) == ("playbooks[1].steps: must list at least one step",)


def test_a_playbook_without_success_criteria(tmp_path):
    d = changed(lambda d: [d["playbooks"][0].pop("successCriteria"), d["playbooks"][1].update(successCriteria={})])
    assert errors(tmp_path, d) == ("playbooks[0].successCriteria: is required",
                                   "playbooks[1].successCriteria: must name at least one criterion")


@pytest.mark.parametrize("path, message", [
    ("agents/{agent}/restart", "'agents/{agent}/restart' must start with '/'"),
    ("/agents/{name}/restart", "unknown variable {name} in '/agents/{name}/restart' (only {agent} is allowed)"),
    ("/agents/{agent}/{action}", "unknown variable {action} in '/agents/{agent}/{action}' (only {agent} is allowed)"),
    ("/agents/{agent/restart", "unbalanced braces in '/agents/{agent/restart'"),
    ("/agents/{agent}/../admin", "'/agents/{agent}/../admin' has an empty, '.' or '..' segment"),
    ("/agents/{agent}/restart?now=1", "'/agents/{agent}/restart?now=1' may only contain letters, digits, '/', '.', "
                                      "'_', '~', '-' and {agent}"),
])
def test_bad_primitive_path(tmp_path, path, message):
    d = changed(lambda d: d["actions"]["primitives"]["throttleAgent"].update(path=path))
    assert errors(tmp_path, d) == (f"actions.primitives.throttleAgent.path: {message}",)


def test_bad_primitive_method(tmp_path):
    d = changed(lambda d: d["actions"]["primitives"]["throttleAgent"].update(method="FETCH"))
    assert errors(tmp_path, d) == (
        "actions.primitives.throttleAgent.method: 'FETCH' is not one of GET, POST, PUT, PATCH, DELETE",)


@pytest.mark.parametrize("url, message", [
    ("ftp://agents", "'ftp://agents' is not an http(s) URL"),
    ("agents:8080", "'agents:8080' is not an http(s) URL"),
    ("http://user:pw@agents", "'http://user:pw@agents' must not carry credentials"),
    ("http://agents/x?y=1", "'http://agents/x?y=1' must not have a query or fragment"),
    ("http://agents:99999", "'http://agents:99999' has an invalid port"),
])
def test_a_base_url_that_is_not_http(tmp_path, url, message):
    d = changed(lambda d: [d["actions"].update(baseUrl=url),
                           d["agents"].update(CMO={"domain": "Marketing", "baseUrl": url})])
    assert errors(tmp_path, d) == (f"agents.CMO.baseUrl: {message}", f"actions.baseUrl: {message}")
    assert errors(tmp_path, minimal(), actions_base_url=url) == (f"AUTOREM_ACTIONS_BASE_URL: {message}",)


def test_a_base_url_is_required_unless_the_setting_gives_one(tmp_path):
    d = changed(lambda d: d["actions"].pop("baseUrl"))
    assert errors(tmp_path, d) == ("actions.baseUrl: is required (or set AUTOREM_ACTIONS_BASE_URL)",)
    assert load(tmp_path, d, actions_base_url="http://a:1").default_base_url == "http://a:1"


def test_an_agent_name_that_breaks_the_pattern(tmp_path):
    rule = "(a letter, then letters, digits, '_', '.', '-' (at most 64))"
    d = changed(lambda d: [d["agents"].update({"bad name": {"domain": "Revenue"}, "CMO": {"domain": "x/y"}}),
                           d["playbooks"][2]["steps"][0].update(args={"agent": "CMO/../admin"}),
                           d["escalation"].update(to="-CEO")])
    assert errors(tmp_path, d) == (
        f"agents['bad name']: 'bad name' is not a valid agent name {rule}",
        f"agents.CMO.domain: 'x/y' is not a valid domain name {rule}",
        f"escalation.to: '-CEO' is not a valid agent name {rule}",
        f"playbooks[2].steps[0].args.agent: 'CMO/../admin' is not a valid agent name or template {rule}",
    )


def test_a_playbook_shadowed_by_an_earlier_one_is_unreachable(tmp_path):
    d = changed(lambda d: d["playbooks"].extend([
        playbook("NeverConflict", "CONFLICT"),
        playbook("NeverLabelled", "CAPACITY", labels={"alertname": "FleetBudgetProjectedOverCap"})]))
    assert errors(tmp_path, d) == (
        "playbooks[5]: unreachable: playbooks[0] (FixCONFLICT) comes first and matches every CONFLICT incident "
        "that NeverConflict would",
        "playbooks[6]: unreachable: playbooks[2] (FixCAPACITY) comes first and matches every CAPACITY incident "
        "that NeverLabelled would",
    )


def test_a_narrower_label_matcher_after_a_broader_one_is_unreachable(tmp_path):
    d = changed(lambda d: d["playbooks"].__setitem__(slice(0, 0), [
        playbook("Broad", "CONFIG", labels={"alertname": "X"}),
        playbook("Narrow", "CONFIG", labels={"alertname": "X", "severity": "critical"})]))
    assert errors(tmp_path, d) == (
        "playbooks[1]: unreachable: playbooks[0] (Broad) comes first and matches every CONFIG incident that "
        "Narrow would",)


def test_every_class_needs_a_playbook_without_label_matchers(tmp_path):
    d = changed(lambda d: d["playbooks"][4]["match"].update(labels={"alertname": "ConfigBroken"}))
    assert errors(tmp_path, d) == ("playbooks: " + CATCH_ALL.format("CONFIG"),)


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = yaml.safe_dump(minimal(), sort_keys=False).replace("kind: PlaybookSet", "kind: PlaybookSet\n  bad: [")
    assert errors(tmp_path, text) == (
        "(yaml): syntax error at line 3 column 6: mapping values are not allowed here",)


def test_an_unquoted_template_gets_a_hint(tmp_path):
    text = yaml.safe_dump(minimal(), sort_keys=False).replace(
        "  - do: restartAgent\n", "  - do: restartAgent\n    args: {agent: {{ losingAgent }}}\n", 1)
    (message,) = errors(tmp_path, text)
    assert message.startswith("(yaml): syntax error at line ") and message.endswith(
        "found unhashable key (quote values that contain '{' or '}')")


def test_duplicate_yaml_keys_are_an_error_not_silently_the_last(tmp_path):
    text = yaml.safe_dump(minimal(), sort_keys=False).replace("kind: PlaybookSet", "kind: PlaybookSet\nkind: Other")
    assert errors(tmp_path, text) == ("(yaml): syntax error at line 3 column 1: duplicate key 'kind'",)


def test_a_missing_file(tmp_path):
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path / "absent.yaml")
    assert caught.value.errors == (f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory",)


@pytest.mark.parametrize("doc, expected", [
    ("", ("(root): must be a mapping, got nothing",)),
    ("- 1\n", ("(root): must be a mapping, got a list",)),
])
def test_a_document_that_is_not_a_mapping(tmp_path, doc, expected):
    assert errors(tmp_path, doc) == expected


def test_wrong_shapes_and_unknown_nested_keys(tmp_path):
    def edit(d):
        d["actions"].update(timeoutSeconds=0, retry={"attempts": 0, "jitter": 0.1, "tries": 3})
        d["playbooks"][0].update(increasesSpend="no", steps=[{"do": "restartAgent", "highRisk": "yes"}])
        d["playbooks"][1]["steps"][0].update(args=["x"])
        d["playbooks"][2]["match"].update(labels={"alertname": 5})
        d["playbooks"][3].update(stepz=[])
        d["escalation"].update(recommendedOptions=[{"name": "", "why": "x"}])
    assert errors(tmp_path, changed(edit)) == (
        "actions.timeoutSeconds: must be a number above 0, got 0",
        "actions.retry: unknown key 'tries'",
        "actions.retry: attempts must be a whole number of at least 1, got 0",
        "escalation.recommendedOptions[0].name: must be a non-empty string",
        "playbooks[0].steps[0].highRisk: must be true or false, got 'yes'",
        "playbooks[0].increasesSpend: must be true or false, got 'no'",
        "playbooks[1].steps[0].args: must be a mapping, got a list",
        "playbooks[2].match.labels.alertname: must be a string, got 5 (quote it)",
        "playbooks[3]: unknown key 'stepz'",
        "playbooks: " + CATCH_ALL.format("CAPACITY"),
    )


def test_several_problems_are_reported_at_once(tmp_path):
    def edit(d):
        d["apiVersion"] = "v0"
        d["extra"] = 1
        d["actions"]["primitives"]["throttleAgent"].update(method="FETCH", path="/x/{who}")
        d["playbooks"][0]["steps"][0]["do"] = "restartAgnet"
        d["playbooks"][1]["successCriteria"] = {"lastTaskSucceeded": "true"}
        d["playbooks"][2]["match"]["classification"] = "CAPACTY"
        d["playbooks"][3]["steps"][0]["args"] = {"source": "{{ dependency }}"}
        d["playbooks"][4]["name"] = "FixCONFLICT"
    assert errors(tmp_path, changed(edit)) == (
        "(root): unknown key 'extra'",
        "apiVersion: must be 'autonomy-layer/v1', got 'v0'",
        "actions.primitives.throttleAgent.method: 'FETCH' is not one of GET, POST, PUT, PATCH, DELETE",
        "actions.primitives.throttleAgent.path: unknown variable {who} in '/x/{who}' (only {agent} is allowed)",
        "playbooks[0].steps[0].do: unknown action 'restartAgnet'",
        "playbooks[1].successCriteria.lastTaskSucceeded: must be true or false, got 'true'",
        "playbooks[2].match.classification: unknown class 'CAPACTY' "
        "(one of CONFLICT, TRANSIENT, CAPACITY, DATA_DEP, CONFIG)",
        "playbooks[3].steps[0].args.source: unknown template root 'dependency' in {{ dependency }}",
        "playbooks[4].name: duplicate name 'FixCONFLICT' (also playbooks[0])",
        "playbooks: " + CATCH_ALL.format("CAPACITY"),
    )


def test_the_real_file_round_trips_through_yaml_unchanged(tmp_path, real):
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    assert load(tmp_path, copy.deepcopy(doc)) == real
