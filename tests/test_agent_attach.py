"""attach(): one line per agent, on its Flask app or standalone, pushing its signal or serving it as /metrics."""
import pytest
import requests
from flask import Flask

from autonomy.agent import AgentReport, attach
from tests.test_agent_heartbeat import FakeClock, FakeLayer

PUSH_TOKEN, ACTION_TOKEN = "push-token-0123456789", "action-token-0123456789"
LAYER = "http://layer.test:9108"
AUTH = {"Authorization": f"Bearer {ACTION_TOKEN}"}


@pytest.fixture
def agent_app():
    app = Flask("writer")
    app.add_url_rule("/", "home", lambda: {"agent": "Writer"})
    return app


def test_attached_to_a_flask_app_it_serves_actions_and_pushes_changes(agent_app):
    clock, layer = FakeClock(), FakeLayer()
    agent = attach(agent_app, name="Writer", domain="Content", layer_url=LAYER, push_token=PUSH_TOKEN,
                   action_token=ACTION_TOKEN, session=layer, clock=clock)
    try:
        restarts = []

        @agent.actions.handler("restartAgent")
        def restart(request):
            restarts.append(request.body.get("mode"))
            agent.update(status="healthy", error_code=None)
            return {"restarted": True}

        clock.idle(agent.heartbeat, 1)
        assert layer.calls[0]["body"]["agent"] == "Writer" and layer.calls[0]["body"]["domain"] == "Content"
        assert layer.calls[0]["headers"]["Authorization"] == f"Bearer {PUSH_TOKEN}"
        agent.update(status="error", error_code="TIMEOUT", success_rate=0.5)
        clock.idle(agent.heartbeat, 2)
        assert layer.calls[1]["body"]["status"] == "error"
        client = agent_app.test_client()
        assert client.get("/").get_json() == {"agent": "Writer"}
        answer = client.post("/agents/Writer/actions/restartAgent", json={"mode": "hard"},
                             headers={**AUTH, "Idempotency-Key": "inc-1:1:0"})
        assert answer.status_code == 200 and restarts == ["hard"]
        clock.idle(agent.heartbeat, 3)
        assert layer.calls[2]["body"]["status"] == "healthy" and "context" not in layer.calls[2]["body"]
        assert client.post("/agents/Other/actions/restartAgent", json={}, headers=AUTH).status_code == 404
        assert client.post("/agents/Writer/actions/refreshCache", json={}, headers=AUTH).status_code == 501
    finally:
        agent.stop()
    assert not agent.heartbeat.running


def test_standalone_it_serves_the_actions_on_its_own_port(monkeypatch):
    monkeypatch.setenv("WRITER_ACTION_TOKEN", ACTION_TOKEN)
    clock, layer = FakeClock(), FakeLayer()
    report = AgentReport(queue_depth=3)
    with attach(None, name="Writer", layer_url=LAYER, action_token_env="WRITER_ACTION_TOKEN", report=report,
                session=layer, clock=clock) as agent:
        agent.actions.handler("refreshCache")(lambda request: (202, {"refreshing": True}))
        assert agent.report is report and agent.url.startswith("http://127.0.0.1:")
        answer = requests.post(agent.url + "/agents/Writer/actions/refreshCache", json={}, headers=AUTH, timeout=5)
        assert answer.status_code == 202 and answer.json() == {"refreshing": True}
        assert requests.post(agent.url + "/agents/Writer/actions/refreshCache", json={},
                             timeout=5).status_code == 401
        clock.idle(agent.heartbeat, 1)
        assert layer.calls[0]["body"]["context"] == {"queueDepth": 3} and "Authorization" not in layer.calls[0][
            "headers"]
    with pytest.raises(requests.ConnectionError):
        requests.post(agent.url + "/agents/Writer/actions/refreshCache", json={}, headers=AUTH, timeout=5)


def test_embedded_metrics_on_a_flask_app_are_the_newest_signal_and_nothing_is_pushed(agent_app):
    agent = attach(agent_app, name="Writer", domain="Content", action_token=ACTION_TOKEN, metrics="embedded")
    assert agent.heartbeat is None
    agent.update(status="degraded", success_rate=0.25)
    text = agent_app.test_client().get("/metrics").get_data(as_text=True)
    assert 'agent="Writer"' in text and "0.25" in text
    agent.stop()


def test_embedded_metrics_standalone():
    with attach(name="Writer", action_token=ACTION_TOKEN, metrics="embedded") as agent:
        agent.update(success_rate=0.125)
        scraped = requests.get(agent.url + "/metrics", timeout=5)
        assert scraped.status_code == 200 and "0.125" in scraped.text
        assert scraped.headers["Content-Type"].startswith("text/plain")
        assert requests.post(agent.url + "/agents/Writer/actions/restartAgent", json={}, headers=AUTH,
                             timeout=5).status_code == 501


@pytest.mark.parametrize("options, says", [
    ({"metrics": "pull"}, "metrics: 'pull' is not one of push, embedded"),
    ({}, "layer_url: required"),
    ({"layer_url": LAYER, "action_token": None}, "no token"),
    ({"metrics": "embedded", "layer_url": LAYER}, "pushes nothing"),
    ({"metrics": "embedded", "timeout": 3}, r"heartbeat's options \(timeout\)"),
    ({"layer_url": LAYER, "name": "fleet"}, "reserved"),
    ({"layer_url": LAYER, "report": AgentReport(status="sleepy")}, "status"),
])
def test_a_wrong_attachment_is_refused_before_anything_starts(agent_app, options, says):
    arguments = {"name": "Writer", "action_token": ACTION_TOKEN, **options}
    with pytest.raises(ValueError, match=says):
        attach(agent_app, **arguments)


def test_embedded_metrics_refuse_an_app_that_serves_metrics_already(agent_app):
    agent_app.add_url_rule("/metrics", "metrics", lambda: "")
    with pytest.raises(ValueError, match="already serves /metrics"):
        attach(agent_app, name="Writer", action_token=ACTION_TOKEN, metrics="embedded")


def test_handlers_given_to_attach_answer_from_the_first_request_and_a_bad_update_is_refused():
    clock, layer = FakeClock(), FakeLayer()
    with attach(None, name="Writer", layer_url=LAYER, action_token=ACTION_TOKEN, session=layer, clock=clock,
                handlers={"restartAgent": lambda request: {"restarted": True}}) as agent:
        answer = requests.post(f"{agent.url}/agents/Writer/actions/restartAgent", json={"mode": "soft"},
                               headers=AUTH, timeout=10)
        assert answer.status_code == 200 and answer.json() == {"restarted": True}
        with pytest.raises(ValueError, match="status"):
            agent.update(status="sleepy", success_rate=0.5)
        assert (agent.report.status, agent.report.success_rate) == ("healthy", 1.0)  # as it was


def test_the_standalone_server_refuses_a_body_over_the_limit_before_reading_it_all():
    with attach(None, name="Writer", layer_url=LAYER, action_token=ACTION_TOKEN, session=FakeLayer(),
                clock=FakeClock()) as agent:
        answer = requests.post(f"{agent.url}/agents/Writer/actions/restartAgent", data=b"x" * (2 << 20),
                               headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
        assert answer.status_code == 413
