"""The receiver's HTTP surface, through create_app: a fresh app per test on tmp_path, no worker threads."""
import json
from datetime import datetime, timezone

import pytest
from flask import Flask, jsonify
from prometheus_client.parser import text_string_to_metric_families

from autonomy.settings import Secret, Settings, SettingsError
from autonomy.vocabulary import ESCALATION_REASONS, IncidentClass, Outcome
from devstack.local_stack import ServedApp
from tests.receivers import WEBHOOK_TOKEN as TOKEN
from tests.receivers import receiver_env as base_env
from webhook_receiver.lineage import PACK_FIELDS
from webhook_receiver.receiver_state import receiver

READ_TOKEN = "read-test-token-c93f0a"
MIB = 1024 * 1024


def state(app):
    with app.app_context():
        return receiver()


# ------------------------------------------------------------------ payloads

def alert(agent="CMO", cls="TRANSIENT", status="firing", alertname="AgentLastTaskFailed", **labels):
    return {"status": status,
            "labels": {"alertname": alertname, "agent": agent, "autonomy_class": cls, "severity": "warning",
                       **labels},
            "annotations": {"summary": f"{agent} is failing"},
            "startsAt": "2025-08-18T15:02:11.000Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2025-08-18T15:09:11.000Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": f"{agent}-{cls}-{alertname}"}


def payload(*alerts, status=None) -> dict:
    alerts = list(alerts) or [alert()]
    return {"version": "4", "groupKey": '{}:{agent="CMO"}', "truncatedAlerts": 0,
            "status": status or ("firing" if any(a["status"] == "firing" for a in alerts) else "resolved"),
            "receiver": "autonomy-receiver", "groupLabels": {"agent": "CMO"}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": alerts}


def post(web, body, token=TOKEN, path="/api/v1/alerts", content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return web.post(path, data=data, headers=headers, content_type=content_type)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def signal(agent="CMO", status="healthy", error_code=None, **checks) -> dict:
    doc = {"agent": agent, "domain": "Marketing", "status": status, "lastReport": "ok",
           "metrics": {"successRate": 0.99, "alignment": 0.99, "backlogAgeMinutes": 1, "costBurnRatePerHour": 0.1},
           "context": {}, "checks": {"lastTaskSucceeded": True, "inputsValid": True, "configHealthy": True, **checks},
           "ts": now_iso()}
    if error_code:
        doc["context"]["errorCode"] = error_code
    return doc


def stored(app) -> tuple[int, list]:
    s = state(app)
    return s.store.notification_count(), [i.as_dict() for i in s.store.list()]


def metric_samples(web) -> dict:
    text = web.get("/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ------------------------------------------------------------------ authentication and framing

@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer ", TOKEN])
def test_the_webhook_answers_401_with_www_authenticate_without_the_right_bearer_token(app, web, header):
    headers = {"Authorization": header} if header is not None else {}
    reply = web.post("/api/v1/alerts", data=json.dumps(payload()), headers=headers, content_type="application/json")
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.get_json()["error"] == "missing or wrong bearer token"
    assert stored(app) == (0, [])


def test_the_webhook_answers_413_over_one_mebibyte_and_stores_nothing(app, web):
    body = json.dumps(payload()).encode()
    body = body[:-1] + b"," + b'"padding":"' + b"x" * MIB + b'"}'
    reply = post(web, body)
    assert reply.status_code == 413
    assert "over the limit" in reply.get_json()["error"]
    assert stored(app) == (0, [])


def test_the_webhook_accepts_a_body_just_under_the_limit(app, web):
    body = json.dumps({**payload(), "padding": ""}).encode()
    body = body.replace(b'"padding": ""', b'"padding": "' + b"x" * (MIB - len(body) - 1) + b'"')
    assert len(body) < MIB
    assert post(web, body).status_code == 200


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b'{"version": NaN}'])
def test_the_webhook_answers_400_to_a_body_that_is_not_json(app, web, body):
    reply = post(web, body)
    assert reply.status_code == 400
    assert reply.get_json()["errors"][0].startswith("(body):")
    assert stored(app) == (0, [])


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_the_webhook_answers_415_to_another_content_type(app, web, content_type):
    reply = post(web, payload(), content_type=content_type)
    assert reply.status_code == 415
    assert stored(app) == (0, [])


def test_the_webhook_accepts_json_with_a_charset_parameter(web):
    assert post(web, payload(), content_type="application/json; charset=utf-8").status_code == 200


def with_alert(**changes):
    a = alert()
    a.update(changes)
    return payload(a)


def without_labels():
    a = alert()
    del a["labels"]
    return payload(a)


@pytest.mark.parametrize("body,expected", [
    ({**payload(), "version": "3"}, "version: '3' is not one of 4, 1"),
    ({**payload(), "alerts": "none"}, "alerts: 'none' is not of type 'array'"),
    ({**payload(), "status": "pending"}, "status: 'pending' is not one of firing, resolved"),
    ({k: v for k, v in payload().items() if k != "alerts"}, "alerts: is required"),
    (without_labels(), "alerts[0].labels: is required"),
    (with_alert(labels={"agent": "CMO", "autonomy_class": "TRANSIENT", "severity": 2}),
     "alerts[0].labels.severity: 2 is not of type 'string'"),
    (with_alert(status="active"), "alerts[0].status: 'active' is not one of firing, resolved"),
    ([payload()], "(root): "),
], ids=["version-3", "alerts-not-list", "bad-status", "no-alerts", "alert-without-labels", "label-not-string",
        "alert-status", "not-an-object"])
def test_the_webhook_answers_422_naming_the_field_path_of_a_wrong_shape(app, web, body, expected):
    reply = post(web, body)
    assert reply.status_code == 422
    assert any(line.startswith(expected) for line in reply.get_json()["errors"]), reply.get_json()
    assert "nothing was stored" in reply.get_json()["error"]
    assert stored(app) == (0, [])


def test_the_webhook_tolerates_unknown_keys_of_newer_alertmanagers(app, web):
    a = alert()
    a["someFutureAlertField"] = {"nested": [1, 2]}
    body = {**payload(a), "truncatedAlerts": 3, "someFutureTopLevelField": "x"}
    reply = post(web, body)
    assert reply.status_code == 200, reply.get_json()
    assert len(reply.get_json()["opened"]) == 1


# ------------------------------------------------------------------ recording

def test_200_comes_only_after_the_incident_is_recorded_in_the_ledger(app, web):
    reply = post(web, payload(alert(directive_id="D-1")))
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["notification"] == 1
    assert len(body["opened"]) == 1 and body["queued"] == body["opened"]
    incident = state(app).store.get(body["opened"][0])
    assert (incident.agent, incident.state, incident.source) == ("CMO", "open", "alertmanager")
    assert incident.alerts[0].labels["directive_id"] == "D-1"
    assert state(app).store.notification_count() == 1


def test_503_when_the_work_queue_is_full_and_nothing_of_that_request_is_stored(make_receiver):
    app = make_receiver({"AUTOREM_QUEUE_SIZE": "2"})
    web = app.test_client()
    assert post(web, payload(alert("COO"))).status_code == 200  # one of the two slots taken
    before = stored(app)
    reply = post(web, payload(alert("CMO"), alert("CRO", "CAPACITY", alertname="AgentBacklogTooOld")))
    assert reply.status_code == 503
    assert "nothing was stored" in reply.get_json()["error"]
    assert stored(app) == before
    samples = metric_samples(web)
    assert samples[("autonomy_webhook_requests_total", (("code", "503"), ("endpoint", "alerts")))] == 1
    assert samples[("autonomy_incidents_total", (("source", "alertmanager"),))] == 1
    # one slot is still free: one agent fits
    assert post(web, payload(alert("CMO"))).status_code == 200
    # and now it is taken
    reply = post(web, payload(alert("CRO", "CAPACITY")))
    assert reply.status_code == 503
    count, incidents = stored(app)
    assert count == 2 and sorted(i["agent"] for i in incidents) == ["CMO", "COO"]


def test_a_batch_larger_than_the_whole_queue_gets_in_once_the_queue_is_empty(make_receiver):
    app = make_receiver({"AUTOREM_QUEUE_SIZE": "1"})
    reply = post(app.test_client(), payload(alert("CMO"), alert("CRO", "CAPACITY")))
    assert reply.status_code == 200 and len(reply.get_json()["opened"]) == 2


def test_the_same_payload_three_times_gives_one_incident_and_two_duplicates(app, web):
    replies = [post(web, payload()).get_json() for _ in range(3)]
    incident_id = replies[0]["opened"][0]
    assert [r["opened"] for r in replies] == [[incident_id], [], []]
    assert [r["duplicates"] for r in replies] == [[], [incident_id], [incident_id]]
    assert [r["queued"] for r in replies] == [[incident_id], [], []]
    count, incidents = stored(app)
    assert count == 3 and len(incidents) == 1


def test_a_resolved_notification_closes_an_incident_no_worker_holds(make_receiver):
    app = make_receiver({"AUTO_REMEDIATE": "false", "AUTOREM_ALERTMANAGER_URL": ""})
    web = app.test_client()
    incident_id = post(web, payload()).get_json()["opened"][0]
    state(app).engine.process(incident_id)  # remediation is off: the incident is skipped
    assert state(app).store.get(incident_id).state == "skipped"
    reply = post(web, payload(alert(status="resolved")))
    assert reply.status_code == 200
    assert reply.get_json()["closed"] == [incident_id]
    incident = web.get(f"/api/v1/incidents/{incident_id}").get_json()
    assert incident["state"] == "closed" and incident["closed_at"] is not None


def test_a_resolved_notification_while_queued_only_marks_it_resolved(app, web):
    incident_id = post(web, payload()).get_json()["opened"][0]
    reply = post(web, payload(alert(status="resolved"))).get_json()
    assert reply["closed"] == [] and reply["duplicates"] == [incident_id]
    incident = state(app).store.get(incident_id)
    assert incident.state == "open" and incident.resolved_at is not None


def test_alerts_without_an_agent_or_a_remediable_class_are_ignored_and_listed(app, web):
    no_agent = alert()
    del no_agent["labels"]["agent"]
    layer = alert(cls="none", alertname="AutonomyRemediationDisabled")
    bad_name = alert(agent="../CEO", alertname="Weird")
    reply = post(web, payload(no_agent, layer, bad_name, alert("CRO", "CAPACITY", alertname="AgentBacklogTooOld")))
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["ignored"] == ["alerts[0] (AgentLastTaskFailed): no agent label",
                               "alerts[1] (AutonomyRemediationDisabled): no remediable autonomy_class",
                               "alerts[2] (Weird): agent label is not an agent name"]
    assert [i["agent"] for i in stored(app)[1]] == ["CRO"]


def test_a_notification_with_only_ignored_alerts_is_recorded_but_opens_nothing(app, web):
    reply = post(web, payload(alert(cls="none")))
    assert reply.status_code == 200 and reply.get_json()["opened"] == []
    assert stored(app) == (1, [])


# ------------------------------------------------------------------ start-up

def test_the_app_refuses_to_start_without_a_webhook_token(make_receiver):
    with pytest.raises(SettingsError) as err:
        make_receiver(token_from_settings=True)
    assert "AUTOREM_WEBHOOK_TOKEN" in str(err.value)


def test_the_app_starts_without_a_token_when_insecure_and_then_accepts_unauthenticated_webhooks(make_receiver):
    app = make_receiver(WEBHOOK_TOKEN=None, INSECURE=True)
    assert post(app.test_client(), payload(), token=None).status_code == 200


def test_the_webhook_token_can_come_from_the_settings(make_receiver, tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text("from-a-file-123\n")
    settings = Settings.from_env(base_env(AUTOREM_WEBHOOK_TOKEN_FILE=str(secret_file)))
    web = make_receiver(settings=settings, token_from_settings=True).test_client()
    assert post(web, payload(), token="from-a-file-123").status_code == 200
    assert post(web, payload(), token=TOKEN).status_code == 401


# ------------------------------------------------------------------ reading incidents and lineage

def test_incidents_are_listed_and_filtered_by_agent_and_state(app, web):
    cmo = post(web, payload(alert("CMO"))).get_json()["opened"][0]
    cro = post(web, payload(alert("CRO", "CAPACITY"))).get_json()["opened"][0]
    state(app).store.update(cro, state="escalated")
    assert {i["id"] for i in web.get("/api/v1/incidents").get_json()["incidents"]} == {cmo, cro}
    assert [i["id"] for i in web.get("/api/v1/incidents?agent=CMO").get_json()["incidents"]] == [cmo]
    assert [i["id"] for i in web.get("/api/v1/incidents?state=escalated").get_json()["incidents"]] == [cro]
    assert web.get("/api/v1/incidents?agent=CMO&state=escalated").get_json()["incidents"] == []
    assert web.get("/api/v1/incidents?agent=Nobody").get_json()["incidents"] == []


def test_an_unknown_state_filter_is_a_400(web):
    reply = web.get("/api/v1/incidents?state=sleeping")
    assert reply.status_code == 400
    assert "state" in reply.get_json()["error"]


def test_an_incident_by_id_and_404_for_an_unknown_one(web):
    incident_id = post(web, payload()).get_json()["opened"][0]
    body = web.get(f"/api/v1/incidents/{incident_id}").get_json()
    assert body["id"] == incident_id and body["agent"] == "CMO" and body["alerts"][0]["status"] == "firing"
    reply = web.get("/api/v1/incidents/does-not-exist")
    assert reply.status_code == 404 and reply.is_json


def write_lineage(app):
    log = state(app).lineage
    log.append({"ts": "2025-08-18T15:00:00.000Z", "event": "auto_remediation", "agent": "CMO", "ok": True,
                "incident_id": "i-1"})
    log.append({"ts": "2025-08-18T15:05:00.000Z", "event": "auto_remediation", "agent": "CRO", "ok": False,
                "incident_id": "i-2"})
    log.append({"ts": "2025-08-18T15:10:00.000Z", "event": "escalation", "agent": "CMO", "ok": False,
                "incident_id": "i-3"})


def test_lineage_json_filters_by_agent_and_since(app, web):
    write_lineage(app)
    ids = lambda q: [e["incident_id"] for e in web.get(f"/api/v1/lineage{q}").get_json()["entries"]]  # noqa: E731
    assert ids("") == ["i-3", "i-2", "i-1"]  # newest first
    assert ids("?agent=CMO") == ["i-3", "i-1"]
    assert ids("?since=2025-08-18T15:05:00Z") == ["i-3", "i-2"]
    assert ids("?since=2025-08-18T17:06:00%2B02:00") == ["i-3"]  # any zone, compared in UTC
    assert ids("?agent=CMO&since=2025-08-18T15:01:00Z") == ["i-3"]
    assert ids("?incident=i-2") == ["i-2"]
    assert web.get("/api/v1/lineage").get_json()["skipped_ids"] == []


def test_lineage_json_keeps_the_pack_section_8_field_order(app, web):
    state(app).lineage.append({"zeta": 1, "agent": "CMO", "event": "auto_remediation", "ok": True, "alpha": 2})
    [entry] = web.get("/api/v1/lineage").get_json()["entries"]
    assert list(entry) == list(PACK_FIELDS) + ["zeta", "alpha"]


@pytest.mark.parametrize("since", ["yesterday", "2025-08-18T15:05:00", "2025-08-18"])
def test_a_bad_since_is_a_400(web, since):
    reply = web.get(f"/api/v1/lineage?since={since}")
    assert reply.status_code == 400
    assert "since" in reply.get_json()["error"]
    assert web.get(f"/lineage?since={since}").status_code == 400


def test_the_lineage_page_escapes_hostile_values(app, web):
    hostile = "<script>alert(1)</script>"
    state(app).lineage.append({"event": "remediation_refused", "agent": hostile, "classification": "'\"><img>",
                               "playbook": hostile, "ok": False, "gate": hostile,
                               "before": {hostile: hostile}, "after": {}})
    for url in ("/lineage", "/lineage?agent=%3Cscript%3Ealert(1)%3C%2Fscript%3E"):
        reply = web.get(url)
        assert reply.status_code == 200
        assert reply.content_type.startswith("text/html")
        page = reply.get_data(as_text=True)
        assert "<script>" not in page and "<img>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_lineage_page_lists_entries_newest_first(app, web):
    write_lineage(app)
    page = web.get("/lineage?agent=CMO").get_data(as_text=True)
    assert "Remediation log: CMO" in page
    assert page.index("15:10:00") < page.index("15:00:00")
    assert "15:05:00" not in page


# ------------------------------------------------------------------ the kill switch

def put_switch(web, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return web.put("/api/v1/remediation", data=data, headers=headers, content_type="application/json")


@pytest.mark.parametrize("token", [None, "wrong", READ_TOKEN])
def test_the_kill_switch_needs_the_webhook_token(make_receiver, token):
    app = make_receiver(READ_TOKEN=Secret("AUTOREM_READ_TOKEN", READ_TOKEN))
    web = app.test_client()
    reply = put_switch(web, {"enabled": False, "reason": "x"}, token=token)
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert state(app).engine.enabled is True


def test_the_kill_switch_turns_remediation_off_and_on(app, web):
    reply = put_switch(web, {"enabled": False, "reason": "  incident review  "})
    assert reply.status_code == 200
    assert reply.get_json()["enabled"] is False and reply.get_json()["reason"] == "incident review"
    assert web.get("/api/v1/remediation").get_json()["enabled"] is False
    assert metric_samples(web)[("autonomy_remediation_enabled", ())] == 0
    reply = put_switch(web, {"enabled": True})
    body = reply.get_json()
    assert isinstance(body.pop("changed_at"), float)
    assert body == {"enabled": True, "reason": None, "dry_run": False, "canary_agents": []}
    assert metric_samples(web)[("autonomy_remediation_enabled", ())] == 1


@pytest.mark.parametrize("body,status,fields", [
    ({}, 422, ["enabled"]),
    ({"enabled": "false"}, 422, ["enabled"]),
    ({"enabled": 0}, 422, ["enabled"]),
    ({"enabled": False, "reason": 5}, 422, ["reason"]),
    ({"enabled": False, "because": "x", "extra": 1}, 422, ["because", "extra"]),
    ([{"enabled": False}], 422, ["(root)"]),
    (b"{enabled: false}", 400, []),
])
def test_the_kill_switch_validates_its_body_naming_the_fields(app, web, body, status, fields):
    reply = put_switch(web, body)
    assert reply.status_code == status
    errors = reply.get_json().get("errors", [])
    for name in fields:
        assert any(e.startswith(f"{name}:") for e in errors), errors
    assert state(app).engine.enabled is True


def test_turning_the_kill_switch_back_on_requeues_what_it_held_back(make_receiver):
    app = make_receiver({"AUTOREM_ALERTMANAGER_URL": ""})
    web = app.test_client()
    incident_id = post(web, payload()).get_json()["opened"][0]
    assert put_switch(web, {"enabled": False, "reason": "review"}).status_code == 200
    state(app).engine.process(incident_id)
    assert state(app).store.get(incident_id).state == "skipped"
    assert put_switch(web, {"enabled": True}).status_code == 200
    assert state(app).store.get(incident_id).state == "open"


def test_the_kill_switch_persists_across_restarts_on_the_same_data_dir(make_receiver, tmp_path):
    first = make_receiver()
    assert put_switch(first.test_client(), {"enabled": False, "reason": "bad deploy"}).status_code == 200
    make_receiver.close(first)
    second = make_receiver()
    status = second.test_client().get("/api/v1/remediation").get_json()
    assert status["enabled"] is False
    assert status["reason"] == "bad deploy"  # the reason stays: the switch may have been set on another receiver
    assert isinstance(status["changed_at"], float)
    assert metric_samples(second.test_client())[("autonomy_remediation_enabled", ())] == 0
    assert put_switch(second.test_client(), {"enabled": True}).status_code == 200
    make_receiver.close(second)
    assert make_receiver().test_client().get("/api/v1/remediation").get_json()["enabled"] is True


@pytest.mark.parametrize("value", ["false", None])
def test_auto_remediate_not_exactly_true_starts_disabled_and_the_kill_switch_cannot_turn_it_on(make_receiver, value):
    env = base_env()
    if value is None:
        env.pop("AUTO_REMEDIATE")
    else:
        env["AUTO_REMEDIATE"] = value
    web = make_receiver(SETTINGS=Settings.from_env(env)).test_client()
    assert web.get("/api/v1/remediation").get_json() == {
        "enabled": False, "reason": "AUTO_REMEDIATE is not true (feature flag off)", "changed_at": None,
        "dry_run": False, "canary_agents": []}
    assert metric_samples(web)[("autonomy_remediation_enabled", ())] == 0
    reply = put_switch(web, {"enabled": True})
    assert reply.status_code == 409
    assert "AUTO_REMEDIATE is not true" in reply.get_json()["error"]
    assert web.get("/api/v1/remediation").get_json()["enabled"] is False


def test_kill_switch_requests_are_counted_by_status_code(web):
    put_switch(web, {"enabled": False}, token=None)
    put_switch(web, {"enabled": False})
    samples = metric_samples(web)
    assert samples[("autonomy_webhook_requests_total", (("code", "401"), ("endpoint", "remediation")))] == 1
    assert samples[("autonomy_webhook_requests_total", (("code", "200"), ("endpoint", "remediation")))] == 1


# ------------------------------------------------------------------ the read token

READS = ["/api/v1/incidents", "/api/v1/lineage", "/lineage", "/api/v1/remediation"]


@pytest.mark.parametrize("url", READS)
def test_reads_are_open_when_no_read_token_is_set(web, url):
    assert web.get(url).status_code == 200


@pytest.mark.parametrize("url", READS)
def test_the_read_token_guards_reads_and_is_accepted_as_bearer_or_query_parameter(make_receiver, url):
    web = make_receiver(READ_TOKEN=Secret("AUTOREM_READ_TOKEN", READ_TOKEN)).test_client()
    reply = web.get(url)
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert web.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert web.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401  # not the write token
    assert web.get(f"{url}{'&' if '?' in url else '?'}token=nope").status_code == 401
    assert web.get(url, headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200
    assert web.get(f"{url}?token={READ_TOKEN}").status_code == 200


def test_the_read_token_guards_incident_detail_too(make_receiver):
    app = make_receiver(READ_TOKEN=Secret("AUTOREM_READ_TOKEN", READ_TOKEN))
    web = app.test_client()
    incident_id = post(web, payload()).get_json()["opened"][0]
    assert web.get(f"/api/v1/incidents/{incident_id}").status_code == 401
    assert web.get(f"/api/v1/incidents/{incident_id}?token={READ_TOKEN}").status_code == 200


def test_ops_endpoints_stay_open_with_a_read_token(make_receiver):
    web = make_receiver(READ_TOKEN=Secret("AUTOREM_READ_TOKEN", READ_TOKEN)).test_client()
    assert web.get("/metrics").status_code == 200
    assert web.get("/healthz").status_code == 200


# ------------------------------------------------------------------ operations

def test_metrics_show_pre_initialised_series_at_zero(web):
    samples = metric_samples(web)
    for cls in IncidentClass:
        for outcome in Outcome:
            assert samples[("autonomy_incident_outcomes_total", (("classification", cls), ("outcome", outcome)))] == 0
    for reason in ESCALATION_REASONS:
        assert samples[("autonomy_escalations_total", (("reason", reason),))] == 0
    for source in ("alertmanager", "signal"):
        assert samples[("autonomy_incidents_total", (("source", source),))] == 0
    assert samples[("autonomy_remediation_enabled", ())] == 1
    assert samples[("autonomy_remediations_in_flight", ())] == 0
    assert samples[("autonomy_work_queue_capacity", ())] == 1000


def test_metrics_count_webhook_answers_and_opened_incidents(web):
    post(web, payload(), token=None)
    post(web, payload())
    post(web, payload())
    samples = metric_samples(web)
    assert samples[("autonomy_webhook_requests_total", (("code", "401"), ("endpoint", "alerts")))] == 1
    assert samples[("autonomy_webhook_requests_total", (("code", "200"), ("endpoint", "alerts")))] == 2
    assert samples[("autonomy_incidents_total", (("source", "alertmanager"),))] == 1


def test_healthz_is_always_200(web):
    reply = web.get("/healthz")
    assert reply.status_code == 200 and reply.get_json() == {"status": "ok"}


def test_readyz_is_503_naming_unreachable_prometheus_and_alertmanager(web):
    reply = web.get("/readyz")
    assert reply.status_code == 503
    body = reply.get_json()
    assert body["ready"] is False
    assert {"prometheus", "alertmanager"} <= set(body["missing"])
    assert body["checks"]["prometheus"] is False and body["checks"]["alertmanager"] is False
    assert body["checks"]["escalation_url"] == "not configured"
    assert "escalation_url" not in body["missing"]


@pytest.fixture
def upstream():
    """A stand-in for Prometheus and Alertmanager that answers their readiness probes."""
    fake = Flask("fake-upstream")

    @fake.get("/-/ready")
    def ready():
        return "ready"

    @fake.get("/api/v1/query")
    def query():
        return jsonify({"status": "success", "data": {"resultType": "vector", "result": []}})

    with ServedApp(fake) as served:
        yield served.url


def test_readyz_is_200_when_every_dependency_answers_and_the_workers_run(make_receiver, upstream):
    app = make_receiver({"AUTOREM_PROMETHEUS_URL": upstream, "AUTOREM_ALERTMANAGER_URL": upstream,
                    "AUTOREM_WORKERS": "1"}, START_ENGINE=True)
    reply = app.test_client().get("/readyz")
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["missing"] == []


def test_readyz_names_only_the_missing_dependency(make_receiver, upstream):
    app = make_receiver({"AUTOREM_PROMETHEUS_URL": upstream, "AUTOREM_WORKERS": "1"}, START_ENGINE=True)
    reply = app.test_client().get("/readyz")
    assert reply.status_code == 503
    assert reply.get_json()["missing"] == ["alertmanager"]


def test_readyz_names_stopped_workers(web):
    body = web.get("/readyz").get_json()
    assert "workers" in body["missing"]  # START_ENGINE False: no worker threads


def test_runbooks_are_served_and_names_are_checked(web):
    assert web.get("/runbooks/..%2Fsecrets.md").status_code == 404
    assert web.get("/runbooks/NoSuchRunbook.md").status_code == 404


# ------------------------------------------------------------------ the direct signal path

@pytest.mark.parametrize("body,status", [
    ({**signal(), "metrics": {"successRate": 1.7, "alignment": 1, "backlogAgeMinutes": 0,
                              "costBurnRatePerHour": 0}}, 422),
    ({**signal(), "agent": "fleet"}, 422),
    ([signal("CMO"), {**signal("CRO"), "status": "sick"}], 422),
    (b"{not json", 400),
])
def test_an_invalid_signal_is_refused_and_nothing_is_stored(app, web, body, status):
    reply = post(web, body, path="/api/v1/signals")
    assert reply.status_code == status
    assert "nothing was stored" in reply.get_json()["error"]
    assert reply.get_json()["errors"]
    assert stored(app) == (0, [])
    assert state(app).signals.snapshot() == []


def test_a_signal_needs_the_webhook_token(app, web):
    assert post(web, signal(), token=None, path="/api/v1/signals").status_code == 401
    assert post(web, signal(), token="nope", path="/api/v1/signals").status_code == 401
    assert stored(app) == (0, [])


def test_a_healthy_signal_opens_nothing_and_is_stored(app, web):
    reply = post(web, signal(), path="/api/v1/signals")
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["opened"] == [] and body["queued"] == []
    assert body["decisions"] == {"CMO": {"classification": None, "playbook": None, "reasons": []}}
    assert stored(app)[1] == []
    assert state(app).signals.latest("CMO").status == "healthy"


def test_a_timeout_signal_opens_an_incident_with_source_signal_and_returns_the_decision(app, web):
    reply = post(web, signal(status="error", error_code="TIMEOUT", lastTaskSucceeded=False), path="/api/v1/signals")
    assert reply.status_code == 200
    body = reply.get_json()
    assert len(body["opened"]) == 1 and body["queued"] == body["opened"]
    decision = body["decisions"]["CMO"]
    assert decision["classification"] == "TRANSIENT"
    assert decision["reasons"][0] == "errorCode TIMEOUT"
    incident = state(app).store.get(body["opened"][0])
    assert (incident.agent, incident.source, incident.state) == ("CMO", "signal", "open")
    assert incident.alert_classes == {"TRANSIENT"}
    assert incident.signal["context"]["errorCode"] == "TIMEOUT"
    samples = metric_samples(web)
    assert samples[("autonomy_incidents_total", (("source", "signal"),))] == 1


def test_a_healthy_signal_after_a_failing_one_marks_the_queued_incident_resolved(app, web):
    incident_id = post(web, signal(status="error", error_code="TIMEOUT"), path="/api/v1/signals").get_json()["opened"][0]
    reply = post(web, signal(), path="/api/v1/signals").get_json()
    assert reply["opened"] == [] and reply["duplicates"] == [incident_id]
    assert state(app).store.get(incident_id).resolved_at is not None


def test_a_full_queue_refuses_a_failing_signal_and_does_not_store_it(make_receiver):
    app = make_receiver({"AUTOREM_QUEUE_SIZE": "2"})
    web = app.test_client()
    assert post(web, [signal("COO", status="error", error_code="TIMEOUT")], path="/api/v1/signals").status_code == 200
    before = stored(app)
    body = [signal("CMO", status="error", error_code="TIMEOUT"), signal("CRO", status="error", error_code="TIMEOUT")]
    reply = post(web, body, path="/api/v1/signals")
    assert reply.status_code == 503
    assert stored(app) == before
    assert [e.signal.agent for e in state(app).signals.snapshot()] == ["COO"]


def test_readyz_says_which_store_and_that_it_answers(web):
    body = web.get("/readyz").get_json()
    assert body["checks"]["store"] is True and "store" not in body["missing"]
    assert body["store"].startswith("sqlite ") and body["store"].endswith("incidents.sqlite3")


def test_readyz_names_a_store_that_does_not_answer(web):
    web.application.extensions["autonomy_receiver"].store.close()  # as a database gone away would
    body = web.get("/readyz").get_json()
    assert body["checks"]["store"] is False and "store" in body["missing"]
