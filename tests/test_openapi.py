"""The published OpenAPI contract (autonomy/schemas/openapi.yaml): valid, complete, true to what the apps serve."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from autonomy import openapi
from autonomy.primitives import ACTION_PATH, IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN, PRIMITIVES, REPLAYED_HEADER
from autonomy.vocabulary import EscalationReason, IncidentClass, IncidentState, LineageEvent, Outcome, Source
from devstack.checkout import PLAYBOOKS_FILE
from tests.conftest import TOKEN as EXPORTER_TOKEN
from tests.receivers import WEBHOOK_TOKEN

REPO = Path(__file__).resolve().parent.parent
DOCUMENT_FILE = REPO / "autonomy" / "schemas" / "openapi.yaml"
SIGNAL_SCHEMA_FILE = REPO / "autonomy" / "schemas" / "signal.schema.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
ACTION_ANSWERS = {"200", "202", "401", "404", "409", "422", "429", "501", "5XX", "400", "405", "413"}


@pytest.fixture(scope="module")
def doc() -> dict:
    return openapi.document()


def _local(doc: dict, node: dict) -> tuple[dict, str | None]:
    """NODE, or what its local $ref names, with the pointer it was found at (None when not a reference)."""
    ref = node.get("$ref") if isinstance(node, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node, None
    target = doc
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target, ref[1:]


def _escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _examples(doc: dict):
    """(where, pointer of the schema, example value) for every example of a media type, parameter or header."""
    def walk(node, pointer):
        if isinstance(node, dict):
            if "schema" in node and isinstance(node["schema"], dict):
                if "example" in node:
                    yield pointer, f"{pointer}/schema", node["example"]
                for name, example in (node.get("examples") or {}).items():
                    example, _ = _local(doc, example)
                    yield f"{pointer}/examples/{name}", f"{pointer}/schema", example["value"]
            for key, value in node.items():
                if key not in ("example", "examples", "schema"):
                    yield from walk(value, f"{pointer}/{_escaped(key)}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{pointer}/{index}")
    yield from walk(doc, "")


def _routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, METHOD) of every route APP serves but `static`."""
    return {(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method)
            for rule in app.url_map.iter_rules() if rule.endpoint != "static"
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item if method in METHODS}


def _answer_errors(doc: dict, path: str, method: str, reply) -> list:
    """The problems of REPLY against what the document says PATH's METHOD answers with its status."""
    responses = doc["paths"][path][method.lower()]["responses"]
    documented = responses.get(str(reply.status_code)) or responses.get(f"{str(reply.status_code)[0]}XX")
    if documented is None:
        return [f"{method} {path} answered {reply.status_code}, not documented ({', '.join(responses)})"]
    response, at = _local(doc, documented)
    at = at or f"/paths/{_escaped(path)}/{method.lower()}/responses/{reply.status_code}"
    media = response.get("content", {}).get("application/json")
    if media is None:
        return []
    return openapi.body_errors_at(f"{at}/content/application~1json/schema", reply.get_json())


def test_the_document_is_valid_openapi_3_1_and_its_signal_references_resolve(doc):
    assert doc["openapi"] == "3.1.0"
    validate(yaml.safe_load(DOCUMENT_FILE.read_text("utf-8")), base_uri=DOCUMENT_FILE.as_uri())
    assert openapi.document_text() == DOCUMENT_FILE.read_text("utf-8")
    signal = json.loads((REPO / "examples" / "signal.json").read_text("utf-8"))
    assert openapi.body_errors("Signal", signal) == []
    assert openapi.body_errors("Signal", {**signal, "status": "fine"}) == [
        ("status", '"fine" is not one of "healthy", "degraded", "error"')]


def test_every_route_the_apps_serve_is_documented_and_every_documented_route_is_served(doc, exporter_app, app):
    exporter, receiver = _routes(exporter_app), _routes(app)
    assert exporter - _documented(doc) == set(), "exporter routes missing from openapi.yaml"
    assert receiver - _documented(doc) == set(), "receiver routes missing from openapi.yaml"
    served_by_the_agents = {(p, m) for p, m in _documented(doc) if p.startswith("/agents/")}
    assert _documented(doc) - served_by_the_agents - exporter - receiver == set(), "documented, served by neither"


def test_every_example_validates_against_its_own_schema(doc):
    checked = 0
    for where, schema_at, value in _examples(doc):
        assert openapi.body_errors_at(schema_at, value) == [], where
        checked += 1
    assert checked > 100  # the walk found the examples (parameters, headers, bodies, answers, the webhook)


def test_every_json_body_and_answer_has_an_example(doc):
    missing = []
    for path, item in [*doc["paths"].items(), *doc["webhooks"].items()]:
        for method in (m for m in item if m in METHODS):
            operation = item[method]
            bodies = [("request", operation.get("requestBody", {}))] + list(operation["responses"].items())
            for status, body in bodies:
                body, _ = _local(doc, body)
                media = body.get("content", {}).get("application/json")
                if media is not None and "example" not in media and "examples" not in media:
                    missing.append(f"{method.upper()} {path} {status}")
    assert missing == []


def test_every_primitive_has_its_action_operation_and_request_schema(doc):
    playbooks = yaml.safe_load(PLAYBOOKS_FILE.read_text("utf-8"))
    used = {step["do"] for playbook in playbooks["playbooks"] for step in playbook["steps"]}
    names = {p.name for p in PRIMITIVES}
    assert used <= names and set(playbooks["actions"]["primitives"]) == names
    for p in PRIMITIVES:
        path = ACTION_PATH.format(agent="{agent}", primitive=p.name)
        assert playbooks["actions"]["primitives"][p.name]["path"] == path
        item = doc["paths"][path]
        assert item["servers"][0]["url"] == "{baseUrl}", path
        operation = item["post"]
        assert operation["tags"] == ["agent actions"]
        assert " ".join(p.called.split()) in " ".join(operation["description"].split()), path
        assert " ".join(p.asks.split()) in " ".join(operation["description"].split()), path
        schema_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert schema_ref == f"#/components/schemas/{openapi.request_schema_name(p.name)}"
        assert openapi.request_schema_name(p.name) in openapi.schema_names()
        assert set(operation["responses"]) == ACTION_ANSWERS, path
        assert {"agentActionToken": []} in operation["security"]
        parameters = [_local(doc, parameter)[0] for parameter in item["parameters"]]
        key = next(x for x in parameters if x["in"] == "header")
        assert (key["name"], key["schema"]["pattern"]) == (IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN)
        assert REPLAYED_HEADER in operation["responses"]["200"]["headers"]
        not_implemented = operation["responses"]["501"]["content"]["application/json"]["example"]
        assert not_implemented == {"error": f"agent does not implement {p.name}", "primitive": p.name}


PLAUSIBLE = {  # what the receiver fills the playbooks' templates with, as it would for a real incident
    "agent": "CRO", "priority": ["Revenue", "Marketing", "Content"], "losingAgent": "CMO", "winningAgent": "CRO",
    "lowestPriorityAgent": "Content", "slotDonorAgent": "Content", "failingDependency": "MarketIntel",
    "context": {"directiveId": "D-1002", "conflictId": "C-77", "errorCode": "TIMEOUT", "queueDepth": 3,
                "dependencies": ["MarketIntel"]},
    "metrics": {"successRate": 0.81, "alignment": 0.93, "backlogAgeMinutes": 41, "costBurnRatePerHour": 0.3},
    "checks": {"lastTaskSucceeded": False}, "labels": {"alertname": "AgentTransientError", "agent": "CRO"},
    "incident": {"id": "2a0fdeb2b4a54865b024be6fec8f6bf1"},
}


def test_the_args_every_playbook_step_sends_validate_against_the_primitives_request_schema():
    from webhook_receiver.templating import render_args

    playbooks = yaml.safe_load(PLAYBOOKS_FILE.read_text("utf-8"))
    steps = [(playbook["name"], step) for playbook in playbooks["playbooks"] for step in playbook["steps"]]
    assert len(steps) >= 10
    for name, step in steps:
        body = render_args(step.get("args") or {}, PLAUSIBLE)
        assert openapi.body_errors(openapi.request_schema_name(step["do"]), body) == [], f"{name}: {step['do']}"


def test_both_apps_serve_the_document_and_the_signal_schema_as_shipped(exporter_app, web):
    for client in (exporter_app.test_client(), web):
        reply = client.get("/openapi.yaml")
        assert (reply.status_code, reply.mimetype) == (200, "application/yaml")
        assert reply.data == DOCUMENT_FILE.read_bytes()
        reply = client.get("/signal.schema.json")
        assert (reply.status_code, reply.mimetype) == (200, "application/schema+json")
        assert reply.data == SIGNAL_SCHEMA_FILE.read_bytes()


def _request_example(doc: dict, path: str, method: str, name: str | None = None):
    media = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
    if name is None:
        return media["example"]
    return _local(doc, media["examples"][name])[0]["value"]


def test_the_receivers_answers_are_what_the_document_says(doc, web):
    auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    alertmanager = _request_example(doc, "/api/v1/alerts", "post", "alertmanager")
    calls = [("POST", "/api/v1/alerts", "/api/v1/alerts", alertmanager),
             ("POST", "/api/v1/signals", "/api/v1/signals", _request_example(doc, "/api/v1/signals", "post", "one")),
             ("POST", "/api/v1/signals", "/api/v1/signals", _request_example(doc, "/api/v1/signals", "post", "fleet")),
             ("POST", "/api/v1/signals", "/api/v1/signals", {"agent": "CMO"}),
             ("GET", "/api/v1/incidents", "/api/v1/incidents", None),
             ("GET", "/api/v1/incidents", "/api/v1/incidents?limit=0", None),
             ("GET", "/api/v1/incidents/{incident_id}", "/api/v1/incidents/nope", None),
             ("GET", "/api/v1/lineage", "/api/v1/lineage", None),
             ("GET", "/healthz", "/healthz", None), ("GET", "/readyz", "/readyz", None),
             ("GET", "/api/v1/remediation", "/api/v1/remediation", None),
             ("PUT", "/api/v1/remediation", "/api/v1/remediation", {"enabled": False, "reason": "review"}),
             ("PUT", "/api/v1/remediation", "/api/v1/remediation", {"enabled": "no"}),
             ("GET", "/api/v1/rollout", "/api/v1/rollout", None),
             ("PUT", "/api/v1/rollout", "/api/v1/rollout", _request_example(doc, "/api/v1/rollout", "put", "canary")),
             ("POST", "/api/v1/rollout/expand", "/api/v1/rollout/expand",
              _request_example(doc, "/api/v1/rollout/expand", "post", "widen")),
             ("PUT", "/api/v1/rollout", "/api/v1/rollout", {"agents": [], "zz": 1}),
             ("GET", "/runbooks/{name}", "/runbooks/Nope.md", None)]
    for method, path, url, body in calls:
        reply = web.open(url, method=method, json=body, headers=auth) if body is not None else \
            web.open(url, method=method, headers=auth)
        assert _answer_errors(doc, path, method, reply) == [], (method, url, reply.status_code)
        assert reply.status_code < 500 or path == "/readyz", (method, url, reply.get_json())
    incident = web.get("/api/v1/incidents").get_json()["incidents"][0]
    reply = web.get(f"/api/v1/incidents/{incident['id']}")
    assert reply.status_code == 200 and _answer_errors(doc, "/api/v1/incidents/{incident_id}", "GET", reply) == []
    reply = web.post("/api/v1/alerts", json={"version": "4"})
    assert reply.status_code == 401 and _answer_errors(doc, "/api/v1/alerts", "POST", reply) == []


def test_grafanas_webhook_example_is_accepted_by_the_receiver(doc, web):
    body = _request_example(doc, "/api/v1/alerts", "post", "grafana")
    reply = web.post("/api/v1/alerts", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert reply.status_code == 200, reply.get_json()
    assert _answer_errors(doc, "/api/v1/alerts", "POST", reply) == []


def test_the_exporters_answers_are_what_the_document_says(doc, client, auth):
    for name in ("one", "fleet"):
        reply = client.post("/api/v1/signals", json=_request_example(doc, "/api/v1/signals", "post", name),
                            headers=auth)
        assert reply.status_code == 200 and _answer_errors(doc, "/api/v1/signals", "POST", reply) == []
    reply = client.post("/api/v1/signals", json={"agent": "CMO"}, headers=auth)
    assert reply.status_code == 422 and _answer_errors(doc, "/api/v1/signals", "POST", reply) == []
    reply = client.post("/api/v1/signals", data="x", headers={**auth, "Content-Type": "text/plain"})
    assert reply.status_code == 415 and _answer_errors(doc, "/api/v1/signals", "POST", reply) == []
    reply = client.get("/healthz")
    assert reply.status_code == 200 and _answer_errors(doc, "/healthz", "GET", reply) == []
    if ("/api/v1/signals/extensions", "GET") in _documented(doc):
        reply = client.get("/api/v1/signals/extensions?agent=CMO&agent=Nobody", headers=auth)
        assert reply.status_code == 200 and _answer_errors(doc, "/api/v1/signals/extensions", "GET", reply) == []
    assert EXPORTER_TOKEN in auth["Authorization"]


def test_the_escalation_payload_the_receiver_posts_is_the_documented_one():
    from webhook_receiver.escalation import escalation_payload
    from webhook_receiver.incident import AlertRef, Incident
    from webhook_receiver.playbooks import load_playbooks

    incident = Incident("2a0fdeb2b4a54865b024be6fec8f6bf1", "CMO", "remediating", "alertmanager", 1.0, 2.0,
                        classification="CONFLICT", context={"errorCode": "OTHER"},
                        alerts=(AlertRef("f1", "firing", {"agent": "CMO", "directive_id": "D-1002"}),),
                        playbooks_run=("ResolveInterAgentConflict",) * 3, claimants=("CMO", "CRO"))
    playbooks = load_playbooks(PLAYBOOKS_FILE)
    for reason in EscalationReason:
        payload = escalation_payload(incident, reason, playbooks, "decision_lineage.jsonl#2025-08-18T15:02:11Z")
        assert openapi.body_errors("EscalationPayload", payload) == [], reason
    unclassified = Incident("0c4e", "fleet", "open", "alertmanager", 1.0, 1.0)
    payload = escalation_payload(unclassified, EscalationReason.NO_PLAYBOOK, playbooks, "decision_lineage.jsonl#t")
    assert openapi.body_errors("EscalationPayload", payload) == []


def test_the_documents_words_are_the_vocabularys(doc):
    schemas = doc["components"]["schemas"]
    assert schemas["IncidentClass"]["enum"] == list(IncidentClass)
    assert schemas["IncidentState"]["enum"] == list(IncidentState)
    assert schemas["EscalationReason"]["enum"] == list(EscalationReason)
    assert schemas["LineageEvent"]["enum"] == list(LineageEvent)
    assert schemas["Incident"]["properties"]["outcome"]["enum"] == [*Outcome, None]
    assert schemas["Incident"]["properties"]["source"]["enum"] == list(Source)
    from webhook_receiver.webhook_payload import PAYLOAD_SCHEMA

    assert set(PAYLOAD_SCHEMA["properties"]) <= set(schemas["AlertmanagerWebhook"]["properties"])
    assert set(PAYLOAD_SCHEMA["properties"]["alerts"]["items"]["properties"]) == set(
        schemas["WebhookAlert"]["properties"])
    grafana, documented = PAYLOAD_SCHEMA["then"]["properties"], schemas["GrafanaWebhook"]["properties"]
    assert set(grafana) - {"alerts"} <= set(documented)
    assert set(grafana["alerts"]["items"]["properties"]) == set(
        documented["alerts"]["items"]["allOf"][1]["properties"])


def test_body_errors_name_the_field():
    name = openapi.request_schema_name("throttleAgent")
    assert name == "throttleAgentRequest"
    assert openapi.body_errors(name, {"maxConcurrent": "x", "minutes": 5}) == [
        ("maxConcurrent", 'expected integer, got string "x"')]
    assert openapi.body_errors(name, {"maxConcurrent": 1}) == [("minutes", "is required")]
    assert openapi.body_errors(name, {"maxConcurrent": 1, "minutes": 5, "speed": 2}) == [
        ("speed", "unexpected property (allowed: agent, maxConcurrent, minutes, x-*)")]
    assert openapi.body_errors(name, {"agent": "Content", "maxConcurrent": 0, "minutes": 0.5, "x-trace": "t1"}) == []
    assert openapi.body_errors(name, {"agent": "bad name", "maxConcurrent": True, "minutes": 0}) == [
        ("agent", '"bad name" does not match ^[A-Za-z][A-Za-z0-9_.-]{0,63}(?!\\n)$'),
        ("maxConcurrent", "expected integer, got boolean true"),
        ("minutes", "0 is less than or equal to the minimum of 0")]
    assert openapi.body_errors("splitDirectiveRequest", {"directiveId": "D-1", "ratio": [0.6, 1.4]}) == [
        ("ratio.1", "1.4 is greater than or equal to the maximum of 1")]
    assert openapi.body_errors("restartAgentRequest", ["soft"]) == [("", 'expected object, got array ["soft"]')]
    assert openapi.body_errors("restartAgentRequest", {"mode": "gentle"}) == [
        ("mode", '"gentle" is not one of "soft", "hard"')]
    deep: object = {}
    for _ in range(100):
        deep = {"x-nest": deep}
    assert openapi.body_errors("refreshCacheRequest", deep) == [("", "JSON nested more than 64 levels deep")]


def test_every_request_schema_refuses_unknown_keys_and_takes_agent_and_x_keys():
    for p in PRIMITIVES:
        name = openapi.request_schema_name(p.name)
        errors = openapi.body_errors(name, {"agent": "CMO", "x-note": 1, "bogus": 1})
        assert ("bogus", errors[0][1]) in errors and all(path != "agent" and not path.startswith("x-")
                                                        for path, _ in errors), p.name


def test_asking_for_a_schema_the_document_lacks_names_it():
    with pytest.raises(KeyError, match="no schema 'frobnicateRequest'.*known: "):
        openapi.validator("frobnicateRequest")
    with pytest.raises(ValueError, match="not a JSON pointer"):
        openapi.validator_at("components/schemas/Error")
    assert openapi.validator("Error") is openapi.validator("Error")
