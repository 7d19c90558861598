import datetime
import json
import re
from urllib.parse import urlsplit

import pytest

from autonomy.signal_contract import schema
from webhook_receiver import templating
from webhook_receiver.templating import (
    AGENT_NAME,
    TEMPLATE_ROOTS,
    TemplateError,
    UnsafeTarget,
    action_url,
    check_templates,
    render_args,
)

VARIABLES = {
    "agent": "CMO",
    "context": {"directiveId": "d-1", "dependencies": ["MarketIntel", "Content"], "queueDepth": 0,
                "nested": {"list": [[1, 2], {"deep": "yes"}]}},
    "metrics": {"successRate": 0.5, "alignment": 0.0},
    "checks": {"lastTaskSucceeded": False},
    "labels": {"alertname": "AgentErrorRate", "severity": "critical"},
    "priority": ["Revenue", "Marketing", "Content"],
    "losingAgent": "Content",
    "incident": {"id": 7},
}


def test_the_agent_name_pattern_is_the_signal_contracts():
    assert schema()["$defs"]["name"]["pattern"] == f"^{AGENT_NAME.pattern}(?!\\n)$"


def test_the_roots():
    assert TEMPLATE_ROOTS == {"agent", "context", "metrics", "checks", "labels", "priority", "losingAgent",
                              "winningAgent", "lowestPriorityAgent", "slotDonorAgent", "failingDependency",
                              "incident"}


# ------------------------------------------------------------------ check_templates

@pytest.mark.parametrize("value", [
    "plain text", "{{ agent }}", "{{agent}}", "{{ context.dependencies[0] }}", "{{ context.nested.list[0][1] }}",
    "agent {{ agent }} of {{ incident.id }}", "{ single } braces are text", 1, 0.5, True, None, [], {},
    {"a": ["{{ labels.alertname }}", {"b": "{{ priority }}"}]},
])
def test_good_templates(value):
    assert check_templates(value, "args") == []


@pytest.mark.parametrize("value, message", [
    ("{{ agent", "unbalanced braces: '{{' without '}}' in '{{ agent'"),
    ("agent }}", "unbalanced braces: '}}' without '{{' in 'agent }}'"),
    ("{{ agent }} }}", "unbalanced braces: '}}' without '{{' in '{{ agent }} }}'"),
    ("{{ {{ agent }}", "unbalanced braces: '{{' without '}}' in '{{ {{ agent }}'"),
    ("{{ }}", "bad template path '' (expected names joined by '.', with optional [N] indexes)"),
    ("{{ context..x }}", "bad template path 'context..x' (expected names joined by '.', with optional [N] indexes)"),
    ("{{ context.dependencies[x] }}", "bad template path 'context.dependencies[x]' (expected names joined by '.', "
                                      "with optional [N] indexes)"),
    ("{{ context.dependencies[-1] }}", "bad template path 'context.dependencies[-1]' (expected names joined by '.', "
                                       "with optional [N] indexes)"),
    ("{{ 1agent }}", "bad template path '1agent' (expected names joined by '.', with optional [N] indexes)"),
    ("{{ agent | upper }}", "bad template path 'agent | upper' (expected names joined by '.', "
                            "with optional [N] indexes)"),
    ("{{ __import__('os') }}", "bad template path \"__import__('os')\" (expected names joined by '.', "
                               "with optional [N] indexes)"),
    ("{{ os.environ }}", "unknown template root 'os' in {{ os.environ }}"),
    ("{{ signal.agent }}", "unknown template root 'signal' in {{ signal.agent }}"),
])
def test_bad_templates(value, message):
    assert check_templates(value, "args.x") == [f"args.x: {message}"]


def test_check_templates_walks_dicts_and_lists_and_names_where():
    value = {"ok": "{{ agent }}", "list": ["x", {"bad": "{{ nope }}"}], "deep": {"deeper": ["{{ agent"]},
             "{{ agent }}": 1, 3: "x", "when": datetime.date(2024, 1, 1), "nan": float("nan")}
    assert check_templates(value, "steps[0].args") == [
        "steps[0].args.list[1].bad: unknown template root 'nope' in {{ nope }}",
        "steps[0].args.deep.deeper[0]: unbalanced braces: '{{' without '}}' in '{{ agent'",
        "steps[0].args: key '{{ agent }}': templates are only allowed in values",
        "steps[0].args: key 3 is not a string",
        "steps[0].args.when: a date cannot go into a JSON body (quote it)",
        "steps[0].args.nan: nan cannot go into a JSON body",
    ]


# ------------------------------------------------------------------ render_args

def test_a_whole_placeholder_yields_the_raw_value():
    args = {"order": "{{ priority }}", "n": "{{ incident.id }}", "ok": "{{ checks.lastTaskSucceeded }}",
            "rate": "{{ metrics.alignment }}", "depth": "{{ context.queueDepth }}"}
    assert render_args(args, VARIABLES) == {"order": ["Revenue", "Marketing", "Content"], "n": 7, "ok": False,
                                            "rate": 0.0, "depth": 0}


def test_placeholders_inside_text_are_interpolated():
    assert render_args({"note": "{{ agent }} lost to {{ context.dependencies[1] }} ({{ incident.id }})"},
                       VARIABLES) == {"note": "CMO lost to Content (7)"}
    assert render_args(" {{ agent }}", VARIABLES) == " CMO"


def test_paths_walk_keys_and_indexes():
    assert render_args(["{{ context.dependencies[0] }}", "{{ context.nested.list[0][1] }}",
                        "{{ context.nested.list[1].deep }}", {"k": ["{{ labels.alertname }}"]}], VARIABLES) == [
        "MarketIntel", 2, "yes", {"k": ["AgentErrorRate"]}]


def test_values_that_look_like_the_scaffolds_var_convention_stay_literal():
    # the TypeScript resolveArgs tested VALUES (`v.endsWith("Var")`); keys and values here are just data
    args = {"sourceVar": "context.dependencies[0]", "agentVar": "losingAgent", "mode": "fooVar"}
    assert render_args(args, VARIABLES) == args


@pytest.mark.parametrize("template, message", [
    ("{{ winningAgent }}", "template path 'winningAgent' has no value: no key 'winningAgent'"),
    ("{{ context.conflictId }}", "template path 'context.conflictId' has no value: no key 'conflictId' in context"),
    ("{{ context.dependencies[2] }}",
     "template path 'context.dependencies[2]' has no value: no index [2] in context.dependencies"),
    ("{{ agent.name }}", "template path 'agent.name' has no value: no key 'name' in agent"),
    ("{{ agent[0] }}", "template path 'agent[0]' has no value: no index [0] in agent"),
    ("{{ context[0] }}", "template path 'context[0]' has no value: no index [0] in context"),
    ("x {{ labels.missing }}", "template path 'labels.missing' has no value: no key 'missing' in labels"),
])
def test_a_missing_path_raises_naming_it(template, message):
    with pytest.raises(TemplateError) as caught:
        render_args({"a": template}, VARIABLES)
    assert str(caught.value) == message
    assert caught.value.path in template


def test_presence_is_by_key_so_falsy_values_are_values():
    variables = {"context": {"a": None, "b": 0, "c": "", "d": [], "e": False}}
    assert render_args({k: f"{{{{ context.{k} }}}}" for k in "abcde"}, variables) == {
        "a": None, "b": 0, "c": "", "d": [], "e": False}


def test_render_refuses_bad_or_unknown_templates_it_was_not_checked_for():
    with pytest.raises(TemplateError, match="unknown template root 'secrets'"):
        render_args("{{ secrets.token }}", {"secrets": {"token": "x"}})
    with pytest.raises(TemplateError, match="unbalanced"):
        render_args("{{ agent", VARIABLES)


def test_render_returns_a_deep_copy():
    args = {"order": "{{ priority }}", "fixed": [1, {"x": 2}], "ctx": "{{ context.nested }}"}
    out = render_args(args, VARIABLES)
    out["order"].append("Mutated")
    out["fixed"][1]["x"] = 99
    out["ctx"]["list"].clear()
    assert VARIABLES["priority"] == ["Revenue", "Marketing", "Content"]
    assert args["fixed"] == [1, {"x": 2}]
    assert VARIABLES["context"]["nested"]["list"] == [[1, 2], {"deep": "yes"}]


# ------------------------------------------------------------------ hostile values: URLs and bodies

HOSTILE = [
    "a/b", "..", ".", "CRO/../../admin", "CRO?x=1", "CRO#frag", "user@evil.example", "http://evil.example/x",
    "//evil.example/x", "CRO\n", "CRO\nHost: evil", "CRO%2F..%2Fadmin", "%2e%2e", "C R O", " CRO", "CRO\\admin",
    "CRO;x=1", "", "A" * 65, "CR\x00O", "ÇRO", "{{ agent }}", "{agent}",
]
BASES = ["http://agents:8080", "https://agents.internal/api/v1/", "http://127.0.0.1:18080/prefix"]


def _assert_stays_under(base: str, url: str, template: str) -> None:
    b, u = urlsplit(base.rstrip("/")), urlsplit(url)
    assert (u.scheme, u.netloc, u.hostname, u.port) == (b.scheme, b.netloc, b.hostname, b.port)
    assert u.path.startswith(b.path + "/") and not u.query and not u.fragment
    added = u.path[len(b.path):].split("/")[1:]
    assert len(added) == template.count("/") and all(seg not in ("", ".", "..") for seg in added)
    assert not {".", ".."} & set(u.path.split("/"))


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_agent_value_cannot_move_the_url(base, value):
    template = "/agents/{agent}/actions/restartAgent"
    try:
        url = action_url(base, template, value)
    except UnsafeTarget:
        return
    _assert_stays_under(base, url, template)


@pytest.mark.parametrize("value", HOSTILE)
def test_percent_encoding_alone_keeps_hostile_values_in_one_segment(monkeypatch, value):
    # defence in depth: even with the name check switched off, quoting plus the post-check hold
    monkeypatch.setattr(templating, "AGENT_NAME", re.compile(r".*", re.S))
    base, template = "http://agents:8080/api", "/agents/{agent}/actions/restartAgent"
    try:
        url = action_url(base, template, value)
    except UnsafeTarget:
        assert value in ("", ".", "..")  # only dot segments and the empty name need the post-check
        return
    _assert_stays_under(base, url, template)


@pytest.mark.parametrize("value", ["CRO", "Content", "Market.Intel", "a-b_c.d", "A..", "A" * 64])
def test_valid_names_pass_through_unchanged(value):
    assert action_url("http://agents:8080/", "/agents/{agent}/actions/x", value) == (
        f"http://agents:8080/agents/{value}/actions/x")


@pytest.mark.parametrize("base, template", [
    ("ftp://agents", "/agents/{agent}"), ("http://agents?x=1", "/agents/{agent}"),
    ("http://u:p@agents", "/agents/{agent}"), ("agents:8080", "/agents/{agent}"),
    ("http://agents", "agents/{agent}"), ("http://agents", "/agents/{name}"), ("http://agents", "/../{agent}"),
    ("http://agents", "/agents/{agent}?x=1"), ("http://agents", "//evil.example/{agent}"),
])
def test_a_bad_base_or_path_is_refused(base, template):
    with pytest.raises(UnsafeTarget):
        action_url(base, template, "CRO")


def test_a_non_string_agent_is_refused():
    for value in (None, 1, ["CRO"], {"agent": "CRO"}):
        with pytest.raises(UnsafeTarget):
            action_url("http://agents", "/agents/{agent}", value)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_in_args_stay_inert_data_in_the_json_body(value):
    variables = {"agent": value, "labels": {"alertname": value}, "context": {"directiveId": value, "x": "{{ agent }}"},
                 "failingDependency": value}
    args = {"source": "{{ failingDependency }}", "note": "for {{ labels.alertname }}!", "id": "{{ context.directiveId }}",
            "again": "{{ context.x }}", "fixed": "{{ agent }}"}
    body = json.loads(json.dumps(render_args(args, variables)))
    assert body == {"source": value, "note": f"for {value}!", "id": value, "again": "{{ agent }}", "fixed": value}


@pytest.mark.parametrize("value", HOSTILE)
def test_with_the_name_check_every_hostile_value_is_refused(value):
    with pytest.raises(UnsafeTarget, match="is not a valid agent name"):
        action_url("http://agents:8080", "/agents/{agent}/actions/restartAgent", value)


@pytest.mark.parametrize("value, segment", [
    ("a/b", "a%2Fb"), ("http://evil.example/x", "http%3A%2F%2Fevil.example%2Fx"), ("CRO?x=1", "CRO%3Fx%3D1"),
    ("CRO#f", "CRO%23f"), ("u@evil", "u%40evil"), ("CRO\n", "CRO%0A"), ("%2F", "%252F"), ("C R O", "C%20R%20O"),
])
def test_without_the_name_check_hostile_values_are_encoded_into_one_segment(monkeypatch, value, segment):
    monkeypatch.setattr(templating, "AGENT_NAME", re.compile(r".*", re.S))
    assert action_url("http://agents:8080", "/agents/{agent}/x", value) == f"http://agents:8080/agents/{segment}/x"
