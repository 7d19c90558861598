"""The staged rollout's API (GET/PUT /api/v1/rollout, POST /api/v1/rollout/expand), its metrics on /metrics and
the `autonomy rollout` command against a served receiver."""
import json
from pathlib import Path

import pytest

from autonomy.settings import Secret
from autonomy_cli import main
from devstack.local_stack import ServedApp
from tests.receivers import WEBHOOK_TOKEN as TOKEN
from tests.receivers import closed_url
from webhook_receiver.rollout import CLASSES

READ_TOKEN = "read-test-token-7e21aa"
CANARY_CLASSES = ["TRANSIENT", "CONFLICT", "DATA_DEP", "CONFIG"]


def engine(app):
    return app.extensions["autonomy_receiver"].engine


def send(web, body, path="/api/v1/rollout", method="put", token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return getattr(web, method)(path, data=data, headers=headers, content_type="application/json")


def test_the_initial_rollout_is_the_canary_setting_with_every_class(make_receiver):
    web = make_receiver({"AUTOREM_CANARY_AGENTS": "Content,CMO"}).test_client()
    assert web.get("/api/v1/rollout").get_json() == {
        "agents": ["Content", "CMO"], "classes": list(CLASSES), "reason": None, "changed_at": None}


def test_put_replaces_the_rollout_and_expand_adds_to_it(app, web):
    reply = send(web, {"agents": ["Content", "CMO"], "classes": CANARY_CLASSES, "reason": " pack section 11 "})
    assert reply.status_code == 200
    body = reply.get_json()
    assert body == {"agents": ["Content", "CMO"], "classes": ["CONFLICT", "TRANSIENT", "DATA_DEP", "CONFIG"],
                    "reason": "pack section 11", "changed_at": body["changed_at"]} and body["changed_at"] > 0
    assert web.get("/api/v1/rollout").get_json() == body
    reply = send(web, {"agents": ["CRO", "COO", "CEO"], "reason": "canary verified"}, "/api/v1/rollout/expand",
                 "post")
    assert reply.status_code == 200 and reply.get_json()["agents"] == ["Content", "CMO", "CRO", "COO", "CEO"]
    reply = send(web, {"classes": ["CAPACITY"], "reason": "capacity and budget"}, "/api/v1/rollout/expand", "post")
    assert reply.get_json()["classes"] == list(CLASSES)
    reply = send(web, {"agents": ["*"], "classes": ["*"], "reason": "all in"})
    assert reply.get_json()["agents"] == ["*"] and engine(app).rollout().agents is None


@pytest.mark.parametrize("body, status, fields", [
    ({}, 422, ["agents", "classes", "reason"]),
    ({"agents": ["CMO"], "classes": ["TRANSIENT"]}, 422, ["reason"]),
    ({"agents": ["CMO"], "classes": ["TRANSIENT"], "reason": "   "}, 422, ["reason"]),
    ({"agents": ["CMO"], "classes": ["TRANSIENT"], "reason": "x" * 501}, 422, ["reason"]),
    ({"agents": "CMO", "classes": ["TRANSIENT"], "reason": "x"}, 422, ["agents"]),
    ({"agents": ["CMO", 3], "classes": ["TRANSIENT"], "reason": "x"}, 422, ["agents"]),
    ({"agents": ["not a name"], "classes": ["TRANSIENT"], "reason": "x"}, 422, ["agents"]),
    ({"agents": ["CMO"], "classes": ["BUDGET"], "reason": "x"}, 422, ["classes"]),
    ({"agents": [], "classes": [], "reason": "x"}, 422, ["agents", "classes"]),
    ({"agents": ["CMO"], "classes": ["TRANSIENT"], "reason": "x", "because": 1}, 422, ["because"]),
    ({"agents": ["fleet"], "classes": ["TRANSIENT"], "reason": "x", "extra": 1}, 422, ["extra", "agents"]),
    ([{"agents": ["CMO"]}], 422, ["(root)"]),
    (b"{agents: [CMO]}", 400, []),
])
def test_a_bad_put_is_refused_naming_each_field_and_stores_nothing(app, web, body, status, fields):
    reply = send(web, body)
    assert reply.status_code == status
    errors = reply.get_json().get("errors", [])
    for name in fields:
        assert any(e.startswith(f"{name}:") for e in errors), errors
    assert engine(app).store.rollout() is None and engine(app).lineage.read().entries == []


@pytest.mark.parametrize("body, fields", [
    ({"reason": "x"}, ["agents, classes"]),
    ({"agents": ["CRO"]}, ["reason"]),
    ({"agents": ["CRO"], "classes": "CAPACITY", "reason": "x"}, ["classes"]),
    ({"agents": ["CRO"], "reason": "x", "narrow": True}, ["narrow"]),
])
def test_a_bad_expand_is_refused_naming_each_field_and_stores_nothing(app, web, body, fields):
    reply = send(web, body, "/api/v1/rollout/expand", "post")
    assert reply.status_code == 422
    errors = reply.get_json()["errors"]
    for name in fields:
        assert any(e.startswith(f"{name}:") for e in errors), errors
    assert engine(app).store.rollout() is None


@pytest.mark.parametrize("token", [None, "wrong", READ_TOKEN])
@pytest.mark.parametrize("path, method", [("/api/v1/rollout", "put"), ("/api/v1/rollout/expand", "post")])
def test_changing_the_rollout_needs_the_webhook_token(make_receiver, token, path, method):
    app = make_receiver(READ_TOKEN=Secret("AUTOREM_READ_TOKEN", READ_TOKEN))
    web = app.test_client()
    reply = send(web, {"agents": ["*"], "classes": ["*"], "reason": "x"}, path, method, token=token)
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert engine(app).store.rollout() is None
    assert web.get("/api/v1/rollout").status_code == 401
    assert web.get("/api/v1/rollout", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200


def test_a_change_whose_lineage_line_cannot_be_written_is_not_made(app, web, monkeypatch):
    def disk_full(entry):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine(app).lineage, "append", disk_full)
    reply = send(web, {"agents": ["*"], "classes": ["*"], "reason": "x"})
    assert reply.status_code == 503 and "unchanged" in reply.get_json()["error"]
    assert engine(app).store.rollout() is None


def test_rollout_requests_are_counted_by_status_code(web):
    send(web, {"agents": ["*"], "classes": ["*"], "reason": "x"}, token=None)
    send(web, {"agents": ["*"], "classes": ["*"], "reason": "x"})
    send(web, {"reason": "x"}, "/api/v1/rollout/expand", "post")
    text = web.get("/metrics").get_data(as_text=True)
    for code, count in (("401", 1), ("200", 1), ("422", 1), ("400", 0)):
        assert f'autonomy_webhook_requests_total{{code="{code}",endpoint="rollout"}} {count:.1f}' in text


def rollout_lines(web) -> list[str]:
    return [line for line in web.get("/metrics").get_data(as_text=True).splitlines() if "autonomy_rollout" in line]


def test_the_metrics_say_which_classes_are_enabled_and_which_agents_are_in(make_receiver):
    web = make_receiver({"AUTOREM_CANARY_AGENTS": "Content,CMO"}).test_client()
    send(web, {"agents": ["CMO", "Content"], "classes": CANARY_CLASSES, "reason": "canary"})
    assert rollout_lines(web) == [
        "# HELP autonomy_rollout_class_enabled 1 when the staged rollout remediates this classification.",
        "# TYPE autonomy_rollout_class_enabled gauge",
        'autonomy_rollout_class_enabled{classification="CONFLICT"} 1.0',
        'autonomy_rollout_class_enabled{classification="TRANSIENT"} 1.0',
        'autonomy_rollout_class_enabled{classification="CAPACITY"} 0.0',
        'autonomy_rollout_class_enabled{classification="DATA_DEP"} 1.0',
        'autonomy_rollout_class_enabled{classification="CONFIG"} 1.0',
        "# HELP autonomy_rollout_all_agents 1 when the staged rollout remediates every agent.",
        "# TYPE autonomy_rollout_all_agents gauge",
        "autonomy_rollout_all_agents 0.0",
        "# HELP autonomy_rollout_canary_agents How many agents the staged rollout lists (0: every agent).",
        "# TYPE autonomy_rollout_canary_agents gauge",
        "autonomy_rollout_canary_agents 2.0",
        "# HELP autonomy_rollout_agent_included 1 for each agent the staged rollout lists (none when it is every "
        "agent).",
        "# TYPE autonomy_rollout_agent_included gauge",
        'autonomy_rollout_agent_included{agent="CMO"} 1.0',
        'autonomy_rollout_agent_included{agent="Content"} 1.0',
    ]
    send(web, {"agents": ["*"], "classes": ["CAPACITY"], "reason": "all in"}, "/api/v1/rollout/expand", "post")
    samples = [line for line in rollout_lines(web) if not line.startswith("#")]
    assert samples == [f'autonomy_rollout_class_enabled{{classification="{c}"}} 1.0' for c in CLASSES] + [
        "autonomy_rollout_all_agents 1.0", "autonomy_rollout_canary_agents 0.0"]


def test_the_metrics_of_the_initial_rollout_are_there_from_the_first_scrape(web):
    samples = [line for line in rollout_lines(web) if not line.startswith("#")]
    assert samples == [f'autonomy_rollout_class_enabled{{classification="{c}"}} 1.0' for c in CLASSES] + [
        "autonomy_rollout_all_agents 1.0", "autonomy_rollout_canary_agents 0.0"]


# ------------------------------------------------------------------ the CLI, against a served receiver

@pytest.fixture
def served(app):
    with ServedApp(app) as server:
        yield server


def test_the_cli_sets_expands_and_shows_the_rollout(served, monkeypatch, capsys):
    monkeypatch.setenv("AUTOREM_WEBHOOK_TOKEN", TOKEN)
    url = ["--receiver-url", served.url]
    assert main(["rollout", "set", *url, "--agents", "Content,CMO", "--classes", "TRANSIENT,CONFLICT,DATA_DEP,CONFIG",
                 "--reason", "canary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["agents:  Content, CMO", "classes: CONFLICT, TRANSIENT, DATA_DEP, CONFIG", "reason:  canary"]
    assert out[3].startswith("changed: 20")
    assert main(["rollout", "expand", *url, "--agents", "CRO,COO,CEO", "--reason", "verified"]) == 0
    assert main(["rollout", "expand", *url, "--classes", "CAPACITY", "--reason", "capacity and budget"]) == 0
    capsys.readouterr()
    assert main(["rollout", "show", *url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["agents"], shown["classes"], shown["reason"]) == (
        ["Content", "CMO", "CRO", "COO", "CEO"], list(CLASSES), "capacity and budget")
    assert main(["rollout", "expand", *url, "--agents", "*", "--reason", "all in"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "agents:  every agent (*)"


def test_the_cli_shows_the_initial_rollout(served, capsys):
    assert main(["rollout", "show", "--receiver-url", served.url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "agents:  every agent (*)" and out[-1].startswith("changed: never")


def test_the_cli_exits_1_with_the_apis_errors_when_refused(served, monkeypatch, capsys):
    monkeypatch.setenv("AUTOREM_WEBHOOK_TOKEN", TOKEN)
    assert main(["rollout", "set", "--receiver-url", served.url, "--agents", "CMO", "--classes", "BUDGET",
                 "--reason", "x"]) == 1
    err = capsys.readouterr().err
    assert "refused (422): invalid rollout request" in err and "classes: 'BUDGET' is not a class" in err
    monkeypatch.delenv("AUTOREM_WEBHOOK_TOKEN")
    assert main(["rollout", "expand", "--receiver-url", served.url, "--agents", "CRO", "--reason", "x"]) == 1
    assert "refused (401): missing or wrong bearer token" in capsys.readouterr().err


def test_the_cli_exits_2_when_the_receiver_is_unreachable(capsys):
    assert main(["rollout", "show", "--receiver-url", closed_url()]) == 2
    assert "cannot reach the receiver at" in capsys.readouterr().err


def test_the_rollout_metrics_and_endpoints_are_documented_in_the_readme():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in ("autonomy_rollout_class_enabled", "autonomy_rollout_all_agents", "autonomy_rollout_canary_agents",
                 "autonomy_rollout_agent_included", "PUT /api/v1/rollout", "POST /api/v1/rollout/expand"):
        assert f"`{name}" in readme, name


def test_the_remediation_log_page_shows_a_rollout_change(web):
    send(web, {"agents": ["CMO"], "classes": ["*"], "reason": "canary <b>"})
    page = web.get("/lineage").get_data(as_text=True)
    assert "rollout_change" in page and "<b>" not in page
