import json

import pytest

from autonomy.settings import Settings, SettingsError
from exporter.app import create_app
from tests.signal_cases import MALFORMED, example


def push(client, body, auth, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/api/v1/signals", data=data, headers=auth, content_type=content_type)


def stored_agents(client):
    text = client.get("/metrics").get_data(as_text=True)
    return sorted({line.split('agent="')[1].split('"')[0] for line in text.splitlines()
                   if line.startswith("autonomy_agent_info{")})


def test_a_valid_signal_is_stored_and_scraped(client, auth):
    reply = push(client, example(), auth)
    assert reply.status_code == 200
    assert reply.get_json() == {"stored": 1, "ignored_older": 0}
    text = client.get("/metrics").get_data(as_text=True)
    assert 'autonomy_agent_success_ratio{agent="CMO"} 0.0' in text
    assert 'autonomy_agent_error_code{agent="CMO",code="TIMEOUT"} 1.0' in text


@pytest.mark.parametrize("body, expected", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_signal_gets_400_or_422_naming_the_field_and_nothing_is_stored(client, auth, body, expected):
    reply = push(client, body, auth)
    assert reply.status_code in (400, 422)
    payload = reply.get_json()
    assert any(expected in line for line in payload["errors"]), payload
    assert stored_agents(client) == []


def test_parse_errors_are_400_and_schema_errors_are_422(client, auth):
    assert push(client, b"{", auth).status_code == 400
    assert push(client, {"agent": "CMO"}, auth).status_code == 422


def test_a_batch_with_one_bad_signal_stores_none(client, auth):
    good = example()
    other = dict(example(), agent="CRO")
    bad = dict(example(), agent="Content", status="sick")
    reply = push(client, [good, other, bad], auth)
    assert reply.status_code == 422
    assert reply.get_json()["errors"] == ["[2].status: 'sick' is not one of healthy, degraded, error"]
    assert stored_agents(client) == []
    assert push(client, [good, other], auth).status_code == 200
    assert stored_agents(client) == ["CMO", "CRO"]


def test_an_older_signal_does_not_replace_a_newer_one(client, auth):
    newer = dict(example(), ts="2025-08-18T15:05:00Z", status="healthy")
    older = dict(example(), ts="2025-08-18T15:00:00Z", status="error")
    push(client, newer, auth)
    assert push(client, older, auth).get_json() == {"stored": 0, "ignored_older": 1}
    text = client.get("/metrics").get_data(as_text=True)
    assert 'autonomy_agent_status{agent="CMO",autonomy_agent_status="healthy"} 1.0' in text


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer", "test-push-token"])
def test_pushing_without_the_right_bearer_token_is_401(client, header):
    headers = {"Authorization": header} if header else {}
    reply = push(client, example(), headers)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert stored_agents(client) == []


def test_a_body_that_is_not_declared_json_is_415(client, auth):
    reply = push(client, json.dumps(example()).encode(), auth, content_type="text/plain")
    assert reply.status_code == 415
    assert "application/json" in reply.get_json()["error"]


def test_a_body_over_one_mebibyte_is_413(client, auth):
    reply = push(client, b"[" + b" " * (1024 * 1024) + b"]", auth)
    assert reply.status_code == 413
    assert reply.is_json


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/nope").get_json() == {"error": "The requested URL was not found on the server. If you "
                                                       "entered the URL manually please check your spelling and "
                                                       "try again."}
    assert client.get("/api/v1/signals").status_code == 405


def test_the_exporter_refuses_to_start_without_a_token_unless_insecure():
    with pytest.raises(SettingsError, match="AUTOREM_EXPORTER_TOKEN"):
        create_app({"SETTINGS": Settings.from_env({})})
    app = create_app({"SETTINGS": Settings.from_env({}), "INSECURE": True})
    assert push(app.test_client(), example(), {}).status_code == 200


def test_self_metrics_read_zero_from_the_first_scrape(client):
    text = client.get("/metrics").get_data(as_text=True)
    for result in ("stored", "ignored_older", "rejected"):
        assert f'autonomy_exporter_signals_total{{result="{result}"}} 0.0' in text
    assert "autonomy_exporter_agents 0.0" in text
    assert "autonomy_exporter_agents_expired_total 0.0" in text


def test_self_metrics_count_results(client, auth):
    push(client, example(), auth)
    push(client, {"agent": "x"}, auth)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'autonomy_exporter_signals_total{result="stored"} 1.0' in text
    assert 'autonomy_exporter_signals_total{result="rejected"} 1.0' in text
    assert "autonomy_exporter_agents 1.0" in text


def test_metrics_are_served_in_the_prometheus_text_format(client):
    reply = client.get("/metrics")
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_healthz_answers(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "agents": 0}
