"""The staged rollout (pack section 11): its transitions as a table, then the gate and the engine on fakes (a held
incident runs after the rollout widens, without a restart; a narrowing refuses new attempts only)."""
import pytest

from tests.engine_harness import Harness
from webhook_receiver.rollout import CLASSES, Rollout, RolloutError, expand, from_dict, initial, set_rollout, widens

NO_CAPACITY = ("CONFLICT", "TRANSIENT", "DATA_DEP", "CONFIG")  # the vocabulary's order
CANARY = Rollout(("Content", "CMO"), NO_CAPACITY, "canary", 1.0)

# (current, agents, classes, reason) -> (agents, classes) of the new rollout, or the problems named.
SET_TABLE = [
    (Rollout(), ["Content", "CMO"], ["TRANSIENT", "CONFLICT", "DATA_DEP", "CONFIG"], "canary",
     (("Content", "CMO"), NO_CAPACITY)),
    (CANARY, ["*"], ["*"], "all in", (None, CLASSES)),
    (CANARY, ["CRO"], ["CAPACITY"], "narrowed", (("CRO",), ("CAPACITY",))),
    (CANARY, ["a.b-c_9"], ["CONFIG", "TRANSIENT"], "names", (("a.b-c_9",), ("TRANSIENT", "CONFIG"))),
    (CANARY, [], [], "", ["agents: list at least one", "classes: list at least one", "reason: must not be empty"]),
    (CANARY, None, None, None, ["agents: is required", "classes: is required", "reason: is required"]),
    (CANARY, "Content", {"TRANSIENT": 1}, 5, ["agents: must be a list of strings",
                                             "classes: must be a list of strings", "reason: is required"]),
    (CANARY, ["CRO", 7], ["TRANSIENT"], "x", ["agents: must be a list of strings"]),
    (CANARY, ["9lives", "fleet", "autonomy-layer", "a" * 65], ["TRANSIENT"], "x",
     ["agents: '9lives' is not an agent name", "agents: 'fleet' is reserved", "agents: 'autonomy-layer' is reserved",
      f"agents: '{'a' * 65}' is not an agent name"]),
    (CANARY, ["CRO", "CRO"], ["TRANSIENT", "TRANSIENT"], "x", ["agents: lists CRO twice",
                                                              "classes: lists TRANSIENT twice"]),
    (CANARY, ["*", "CRO"], ["*", "CONFIG"], "x", ['agents: "*" stands alone', 'classes: "*" stands alone']),
    (CANARY, ["CRO"], ["BUDGET", "transient"], "x", ["classes: 'BUDGET' is not a class",
                                                    "classes: 'transient' is not a class"]),
    (CANARY, ["CRO"], ["TRANSIENT"], "r" * 501, ["reason: 501 characters is over 500"]),
    (CANARY, ["A", "B", "C", "D", "E", "F"], ["TRANSIENT"], "x", ["agents: 6 names is over 5"]),
]


@pytest.mark.parametrize("current, agents, classes, reason, expected", SET_TABLE)
def test_set_replaces_the_rollout_or_names_every_problem(current, agents, classes, reason, expected):
    if isinstance(expected, tuple):
        new = set_rollout(current, agents, classes, f"  {reason}  ", 5.0, max_agents=5)
        assert (new.agents, new.classes, new.reason, new.changed_at) == (*expected, reason, 5.0)
        return
    with pytest.raises(RolloutError) as caught:
        set_rollout(current, agents, classes, reason, 5.0, max_agents=5)
    assert len(caught.value.errors) == len(expected), caught.value.errors
    for error, start in zip(caught.value.errors, expected):
        assert error.startswith(start), (error, start)
    assert str(caught.value) == "; ".join(caught.value.errors)


EXPAND_TABLE = [
    (CANARY, ["CRO", "COO", "CEO"], [], (("Content", "CMO", "CRO", "COO", "CEO"), CANARY.classes)),
    (CANARY, [], ["CAPACITY"], (("Content", "CMO"), CLASSES)),
    (CANARY, ["CMO", "CRO"], ["TRANSIENT"], (("Content", "CMO", "CRO"), CANARY.classes)),  # already in: kept once
    (CANARY, ["*"], [], (None, CANARY.classes)),
    (CANARY, [], ["*"], (CANARY.agents, CLASSES)),
    (Rollout(None, ("CONFIG",)), ["CRO"], [], (None, ("CONFIG",))),  # every agent stays every agent
    (CANARY, [], [], ["agents, classes: nothing to add"]),
    (CANARY, ["fleet"], ["budget"], ["agents: 'fleet' is reserved", "classes: 'budget' is not a class"]),
    (CANARY, "CRO", None, ["agents: must be a list of strings", "classes: is required"]),
    (Rollout(("A", "B")), ["C", "D"], [], ["agents: the rollout would list 4 agents, over AUTOREM_MAX_AGENTS (3)"]),
]


@pytest.mark.parametrize("current, agents, classes, expected", EXPAND_TABLE)
def test_expand_adds_and_never_narrows(current, agents, classes, expected):
    if isinstance(expected, tuple):
        new = expand(current, agents, classes, "widen", 7.0, max_agents=3 if current.agents == ("A", "B") else 10)
        assert (new.agents, new.classes, new.reason, new.changed_at) == (*expected, "widen", 7.0)
        assert not widens(new, current)
        return
    with pytest.raises(RolloutError) as caught:
        expand(current, agents, classes, "widen", 7.0, max_agents=3)
    assert len(caught.value.errors) == len(expected), caught.value.errors
    for error, start in zip(caught.value.errors, expected):
        assert error.startswith(start), (error, start)


@pytest.mark.parametrize("old, new, wider", [
    (CANARY, expand(CANARY, ["CRO"], [], "x", 1), True),
    (CANARY, expand(CANARY, [], ["CAPACITY"], "x", 1), True),
    (CANARY, set_rollout(CANARY, ["CMO"], ["TRANSIENT"], "x", 1), False),
    (CANARY, set_rollout(CANARY, ["CRO"], ["TRANSIENT"], "x", 1), True),  # narrower in classes, wider in agents
    (Rollout(), set_rollout(Rollout(), ["*"], ["*"], "x", 1), False),
])
def test_a_change_widens_when_it_admits_something_new(old, new, wider):
    assert widens(old, new) is wider


def test_the_initial_rollout_is_the_canary_setting_with_every_class_and_round_trips_as_the_api_answers_it():
    assert initial(()) == Rollout(None, CLASSES, None, None)
    assert initial(("Content", "CMO")).agents == ("Content", "CMO")
    assert Rollout().as_dict() == {"agents": ["*"], "classes": list(CLASSES), "reason": None, "changed_at": None}
    assert from_dict(CANARY.as_dict()) == CANARY and from_dict(Rollout().as_dict()) == Rollout()


def test_the_fleets_own_incidents_follow_the_classes_only():
    assert CANARY.outside(["fleet", "CRO", "CMO"]) == ["CRO"]
    assert CANARY.admits(["fleet"], "TRANSIENT") and not CANARY.admits(["fleet"], "CAPACITY")


# ------------------------------------------------------------------ the gate and the engine, on fakes

def failing(h, agent="CMO", domain="Marketing"):
    if agent in h.prom.docs:
        h.prom.set(agent, status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5)
    else:
        h.prom.add(agent, domain, status="error", errorCode="TIMEOUT", lastTaskSucceeded=False, successRate=0.5)


def test_an_agent_outside_the_rollout_is_observed_only_and_says_so(h):
    h.build({"AUTOREM_CANARY_AGENTS": "Content,CMO"})
    failing(h, "CRO")
    incident = h.run(h.fire("CRO"))
    assert h.agents.calls == [] and incident.state == "skipped" and incident.state_reason == "not_in_canary"
    [line] = h.lineage()
    assert (line["gate"], line["reason"]) == ("canary", "CRO not in the rollout's agents; observed only")


def test_a_class_the_rollout_does_not_enable_is_observed_only_and_held_as_class_not_enabled(h):
    h.build()
    h.engine.set_rollout(["*"], ["CONFLICT", "DATA_DEP", "CONFIG", "CAPACITY"], "TRANSIENT under review")
    failing(h)
    incident = h.run(h.fire())
    assert h.agents.calls == [] and incident.state == "skipped" and incident.state_reason == "class_not_enabled"
    [line] = h.lineage("remediation_refused")
    assert line["gate"] == "class_not_enabled" and line["classification"] == "TRANSIENT"
    assert line["reason"].startswith("TRANSIENT is not enabled in the rollout")
    assert h.metric("autonomy_remediation_refusals_total", gate="class_not_enabled") == 1
    assert h.samples("autonomy_agent_state_reason") == {(("agent", "CMO"), ("reason", "class_not_enabled")): 1}


def test_an_incident_held_outside_the_canary_runs_after_the_rollout_expands_without_a_restart(h):
    h.build({"AUTOREM_CANARY_AGENTS": "Content,CMO"})
    failing(h, "CRO")
    held = h.fire("CRO")
    assert h.run(held).state == "skipped"
    failing(h, "CMO")
    h.engine.set_enabled(False, "review")
    by_switch = h.fire("CMO")
    h.run(by_switch)
    h.engine.set_enabled(True, "")  # CMO resumed by the switch; the rollout's hold of CRO stays
    assert (h.store.get(held).state, h.store.get(by_switch).state) == ("skipped", "open")
    h.engine.expand_rollout(["CRO", "COO", "CEO"], [], "canary verified")
    resumed = h.store.get(held)
    assert (resumed.state, resumed.reason, resumed.state_reason) == ("open", "resumed: the rollout widened", None)
    assert h.run(held).state == "recovered"
    assert [a for a, _, _ in h.agents.calls] == ["CRO", "CRO"]


def test_a_widening_resumes_only_what_the_new_rollout_admits(h):
    h.build({"AUTOREM_CANARY_AGENTS": "Content"})
    h.engine.set_rollout(["Content"], ["CONFLICT"], "conflicts first")
    failing(h, "CRO")
    held = h.fire("CRO")
    h.run(held)
    h.engine.expand_rollout(["CRO"], [], "CRO in")  # CRO admitted, TRANSIENT still not
    assert h.store.get(held).state == "skipped"
    h.engine.expand_rollout([], ["TRANSIENT"], "transients too")
    assert h.store.get(held).state == "open"


def test_a_narrowing_refuses_new_attempts_and_never_stops_one_already_running(h):
    h.build()
    failing(h)

    def restart(agent, body):
        h.engine.set_rollout(["Content"], ["CONFIG"], "narrowed mid-playbook")
        h.agents.fix(agent, "restartAgent", body)

    h.agents.handlers["restartAgent"] = restart
    incident = h.run(h.fire())
    assert incident.state == "recovered"
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]
    failing(h, "CRO")
    assert h.run(h.fire("CRO")).state_reason == "not_in_canary"


def test_each_change_writes_one_lineage_line_naming_old_and_new_and_the_reason(h):
    h.build({"AUTOREM_CANARY_AGENTS": "Content,CMO"})
    h.engine.set_rollout(["Content", "CMO"], ["TRANSIENT", "CONFLICT", "DATA_DEP", "CONFIG"], "pack section 11")
    h.engine.expand_rollout(["CRO"], ["CAPACITY"], "verified")
    first, second = h.lineage("rollout_change")
    assert list(first)[:3] == ["ts", "actor", "event"] and first["actor"] == "operator" and first["ok"] is True
    assert (first["before"], first["after"], first["reason"], first["change"]) == (
        {"agents": ["Content", "CMO"], "classes": list(CLASSES)},
        {"agents": ["Content", "CMO"], "classes": list(NO_CAPACITY)}, "pack section 11", "set")
    assert (second["before"], second["after"], second["change"]) == (
        first["after"], {"agents": ["Content", "CMO", "CRO"], "classes": list(CLASSES)}, "expand")
    assert h.metric("autonomy_decisions_total", event="auto_remediation") == 0  # a change is not a decision


def test_a_refused_change_stores_nothing_and_writes_no_line(h):
    h.build()
    with pytest.raises(RolloutError):
        h.engine.set_rollout(["fleet"], ["TRANSIENT"], "x")
    assert h.store.rollout() is None and h.lineage() == []


def test_the_rollout_is_read_from_the_store_at_each_attempt_and_outlives_a_restart(h, tmp_path):
    h.build({"AUTOREM_CANARY_AGENTS": "Content"})
    h.engine.expand_rollout(["CMO"], [], "CMO too")
    h.close()
    again = Harness(tmp_path, h.agents).build({"AUTOREM_CANARY_AGENTS": "Content"}, data_dir=tmp_path / "data")
    try:
        assert again.engine.rollout().agents == ("Content", "CMO")
        failing(again)
        assert again.run(again.fire()).state == "recovered"
        reply = again.web.get("/api/v1/rollout").get_json()
        assert reply["agents"] == ["Content", "CMO"] and reply["reason"] == "CMO too"
        assert again.web.get("/api/v1/remediation").get_json()["canary_agents"] == ["Content", "CMO"]
    finally:
        again.close()
