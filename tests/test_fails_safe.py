"""Failing safe: capacity given back on every path, no incident stranded, malformed upstream answers refused at
the client, one receiver per data directory, bad stores refused at start, clock skew bounded, every list
bounded, the small ones. The engine runs on fakes (tests/engine_harness.py) or on tiny local HTTP servers."""
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from flask import Flask, jsonify

from autonomy.settings import Secret, Settings
from devstack.local_stack import ServedApp, free_port
from tests.engine_harness import WEBHOOK_TOKEN, iso
from webhook_receiver import upstream_deadline
from webhook_receiver.data_dir import DataDirError
from webhook_receiver.upstream_deadline import deadline
from webhook_receiver.upstreams import AlertmanagerApi, PrometheusApi, UpstreamError

AUTONOMY = str(Path(sys.executable).with_name("autonomy"))


# ------------------------------------------------------------------ 1. capacity released on a failed commit

def test_a_failed_commit_gives_its_queue_slots_back_and_the_next_webhook_is_accepted(h, monkeypatch):
    h.build({"AUTOREM_QUEUE_SIZE": "1"})
    real = h.store._commit
    calls = []

    def disk_full(*args):
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(*args)

    monkeypatch.setattr(h.store, "_commit", disk_full)
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    reply = h.web.post("/api/v1/alerts", data=json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "AgentTransientError", "agent": "CMO",
                                         "autonomy_class": "TRANSIENT"}, "startsAt": iso(time.time())}]}),
        content_type="application/json", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert reply.status_code == 500 and reply.get_json()["type"] == "OperationalError"
    assert h.store.list() == []  # nothing half-stored
    body = h.notify("CRO")  # space came back: the one slot of the queue is free again
    assert len(body["queued"]) == 1


def test_a_refused_batch_keeps_nothing_and_leaves_its_slots_free(h):
    h.build({"AUTOREM_QUEUE_SIZE": "2"})
    h.notify("CMO")
    h.notify("CRO")
    full = h.web.post("/api/v1/alerts", data=json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "AgentTransientError", "agent": "COO",
                                         "autonomy_class": "TRANSIENT"}}]}),
        content_type="application/json", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert full.status_code == 503
    assert h.store.queued_count() == 2 and not h.store.open_for("COO")


# ------------------------------------------------------------------ 2. no incident stranded

def tiny_prometheus(answer):
    """A Prometheus that answers every query with ANSWER (a JSON-able value), its rules API with none."""
    app = Flask("tiny-prometheus")

    @app.get("/api/v1/query")
    def query():
        return jsonify(answer() if callable(answer) else answer)

    @app.get("/api/v1/rules")
    def rules():
        return jsonify({"status": "success", "data": {"groups": []}})

    return ServedApp(app)


@pytest.mark.parametrize("answer, message", [
    ({"status": "success"}, "prometheus answered without data"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "many"]}]}},
     "prometheus answered a sample that is not a [time, number] pair"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"agent": 7}, "value": [1, "1"]}]}},
     "prometheus answered a series without string labels"),
    ({"status": "success", "data": {"resultType": "vector", "result": {"agent": "CMO"}}},
     "prometheus answered a result of type 'vector', not a vector or matrix"),
    ({"status": "error", "error": "bad_data: parse error"}, "prometheus query failed: bad_data: parse error"),
    (["not", "an", "object"], "prometheus query failed: not a success answer"),
])
def test_a_malformed_prometheus_answer_is_an_upstream_error_not_a_crash(answer, message):
    with tiny_prometheus(answer) as prom:
        with pytest.raises(UpstreamError, match=message.replace("[", r"\[").replace("]", r"\]")):
            PrometheusApi(prom.url).query("up")


def test_a_malformed_alertmanager_answer_is_an_upstream_error():
    app = Flask("tiny-alertmanager")
    app.add_url_rule("/api/v2/alerts", view_func=lambda: jsonify({}), methods=["GET"])
    app.add_url_rule("/api/v2/alerts", "post", view_func=lambda: ("", 200), methods=["POST"])
    with ServedApp(app) as am:
        with pytest.raises(UpstreamError, match="alerts that are not a list"):
            AlertmanagerApi(am.url).agent_alerts("CMO")
        with pytest.raises(UpstreamError, match="alerts that are not a list"):
            AlertmanagerApi(am.url).verdict({"agent": "CMO"})


def test_an_incident_against_a_prometheus_answering_without_data_ends_escalated_with_its_reason(tmp_path, agents):
    from tests.engine_harness import Harness

    with tiny_prometheus({"status": "success"}) as prom:
        h = Harness(tmp_path, agents).build({"AUTOREM_MAX_ATTEMPTS": "1"})
        try:
            h.engine.up.prometheus = PrometheusApi(prom.url)  # the real client, a malformed upstream
            h.am.fire("CMO", "TRANSIENT")
            incident = h.run(h.notify()["opened"][0])
            assert incident.state == "escalated"
            [line] = h.lineage("auto_remediation")
            assert "prometheus answered without data" in line["verification"]["reason"]
            assert line["after_note"] == "prometheus answered without data"
        finally:
            h.close()


def test_an_exception_inside_an_attempt_is_recorded_then_retried_after_a_backoff_then_resolved(h, monkeypatch):
    h.build({"AUTOREM_MAX_ATTEMPTS": "2", "AUTOREM_ATTEMPT_BACKOFF_SECONDS": "0.2"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    real = h.engine.attempts.planner.plan
    calls = []

    def broken_once(*args):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("could not convert string to float: 'many'")
        return real(*args)

    monkeypatch.setattr(h.engine.attempts.planner, "plan", broken_once)
    incident_id = h.fire()
    assert h.work() == incident_id
    incident = h.store.get(incident_id)
    assert incident.state == "open" and incident.attempts == 1 and incident.retry_at > time.time() - 1
    [failed] = h.lineage("auto_remediation")
    assert failed["ok"] is False and failed["error"] == "ValueError: could not convert string to float: 'many'"
    assert h.work() is None  # not claimable before its backoff
    assert h.run(incident_id).state == "open"  # nor when asked for by name
    from devstack.polling import wait_until
    wait_until(lambda: h.work() == incident_id, 10, "a worker to take it up again after its backoff")
    assert h.store.get(incident_id).outcome == "auto_resolved"


def test_an_exception_in_the_last_attempt_escalates(h, monkeypatch):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")

    def broken(*args):
        raise KeyError("value")

    monkeypatch.setattr(h.engine.attempts.planner, "plan", broken)
    incident = h.run(h.fire())
    assert incident.state == "escalated" and incident.outcome == "escalated"
    assert [e["event"] for e in h.lineage()] == ["auto_remediation", "escalation"]


def test_an_incident_whose_worker_vanished_mid_attempt_is_taken_over_once_its_lease_expires(h):
    from devstack.polling import wait_until

    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    incident_id = h.fire()
    vanished = h.store.claim("a-worker-that-vanished", lease_seconds=0.5)
    h.store.update(incident_id, vanished, state="remediating", attempts=1, playbooks_run=("RestartAndRetryTransient",))
    assert h.work() is None  # its lease still runs: nobody else may take it
    wait_until(lambda: h.work() == incident_id, 10, "a worker to take the incident over after the lease")
    done = h.store.get(incident_id)
    assert (done.outcome, done.attempts, done.playbooks_run) == ("auto_resolved", 1, ("RestartAndRetryTransient",))
    assert [(e["attempt"], e["ok"]) for e in h.lineage("auto_remediation")] == [(1, True)]


def test_a_verdict_whose_line_cannot_be_written_waits_in_the_store_and_nothing_runs_again_until_it_is(h, monkeypatch):
    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    appended = []
    real_append = h.state.lineage.append

    def disk_full_then_space(entry):
        if len(appended) < 2:
            appended.append(entry["event"])
            raise OSError(28, "No space left on device")
        return real_append(entry)

    monkeypatch.setattr(h.state.lineage, "append", disk_full_then_space)
    incident_id = h.fire()
    assert h.work() == incident_id
    incident = h.store.get(incident_id)
    # The actions ran and recovery was verified; its line could not be written: the verdict waits in the store.
    assert incident.state == "remediating" and incident.verifying["verdict"]["ok"] is True
    assert h.work() == incident_id  # taken up again after its backoff (none in these tests): the disk is still full
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]  # nothing ran again
    assert h.work() == incident_id  # space again: the line is written, and only then is the recovery claimed
    incident = h.store.get(incident_id)
    assert incident.outcome == "auto_resolved" and incident.verifying is None
    assert appended == ["auto_remediation", "auto_remediation"]
    [line] = h.lineage("auto_remediation")
    assert line["ok"] is True and line["attempt"] == 1
    assert h.agents.actions() == ["restartAgent", "retryLastTask"]
    # Coverage shows the two lines that could not be written when they were due.
    assert h.metric("autonomy_decisions_total", event="auto_remediation") == 3
    assert h.metric("autonomy_lineage_lines_total", event="auto_remediation") == 1


class TimedSession:
    """A requests.Session stand-in answering every query with an empty vector, recording each call's timeout."""

    def __init__(self):
        self.timeouts: list[float] = []

    def get(self, url, params=None, timeout=None):
        self.timeouts.append(timeout)

        class Reply:
            status_code = 200

            @staticmethod
            def json():
                if url.endswith("/rules"):
                    return {"status": "success", "data": {"groups": []}}
                return {"status": "success", "data": {"resultType": "vector", "result": []}}
        return Reply()


def test_every_upstream_call_of_an_attempt_is_bounded_by_its_deadline_not_the_5_s_client_timeout(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1", "AUTOREM_VERIFY_TIMEOUT_SECONDS": "1"})
    session = TimedSession()
    h.engine.up.prometheus = PrometheusApi("http://prometheus.invalid", session=session)
    h.am.fire("CMO", "TRANSIENT")
    h.run(h.notify()["opened"][0])
    assert len(session.timeouts) > 5
    assert max(session.timeouts) <= 2.0  # two verification timeouts for the preparation, one for verifying


def test_an_upstream_call_is_bounded_by_the_verification_deadline(h):
    release = threading.Event()
    app = Flask("slow-prometheus")
    app.add_url_rule("/api/v1/query", view_func=lambda: release.wait(20) and jsonify({}) or jsonify({}))
    with ServedApp(app) as slow:
        h.build({"AUTOREM_MAX_ATTEMPTS": "1", "AUTOREM_VERIFY_TIMEOUT_SECONDS": "1"})
        try:
            started = time.monotonic()
            with deadline(time.time() + 0.5), pytest.raises(UpstreamError):
                PrometheusApi(slow.url).query("up")
            assert time.monotonic() - started < 5  # not the 5 s client timeout, let alone 20
        finally:
            release.set()


class SlowCluster:
    """Alertmanager instances that time out (requests.ReadTimeout) on the first SLOW_CALLS reads, or on every
    read given less than TAKES seconds, or refuse (ConnectionError); each call moves a fake clock on by the
    time it waited, as a real wait would. TIMEOUTS lists the timeout each call was given."""

    def __init__(self, slow_calls: int = 10**6, refuse: bool = False, takes: float | None = None):
        self.slow_calls, self.refuse, self.takes = (0 if takes else slow_calls), refuse, takes
        self.now, self.calls, self.timeouts = 1_000_000.0, [], []

    def time(self) -> float:
        return self.now

    def get(self, url, params=None, timeout=None):
        self.calls.append(url)
        self.timeouts.append(timeout)
        if self.refuse:
            raise requests.ConnectionError("refused")
        if len(self.calls) <= self.slow_calls or (self.takes and timeout < self.takes):
            self.now += timeout
            raise requests.ReadTimeout("slow")
        self.now += self.takes or 0

        class Reply:
            status_code = 200
            json = staticmethod(lambda: [])
        return Reply()


@pytest.fixture
def slow_cluster(monkeypatch):
    def build(**kwargs) -> tuple[SlowCluster, AlertmanagerApi]:
        cluster = SlowCluster(**kwargs)
        monkeypatch.setattr(upstream_deadline, "time", cluster)
        return cluster, AlertmanagerApi("http://am-0.invalid,http://am-1.invalid", session=cluster)
    return build


def test_an_alertmanager_cluster_only_slow_to_answer_is_asked_again_within_the_deadline(slow_cluster):
    cluster, am = slow_cluster(slow_calls=3)
    with deadline(cluster.now + 60):
        assert am.agent_alerts("CMO") == []
    assert cluster.calls == ["http://am-0.invalid/api/v2/alerts", "http://am-1.invalid/api/v2/alerts"] * 2


def test_a_cluster_always_slower_than_the_client_timeout_is_waited_for_longer_each_round(slow_cluster):
    cluster, am = slow_cluster(takes=8.0)
    with deadline(cluster.now + 120):
        assert am.agent_alerts("CMO") == []
    assert cluster.timeouts == [5.0, 5.0, 10.0]  # the second round waits 10 s, and the 8 s answer arrives


def test_patience_stops_growing_and_never_outlasts_the_deadline(slow_cluster):
    cluster, am = slow_cluster(takes=1000.0)
    with deadline(cluster.now + 300), pytest.raises(UpstreamError, match=r"\(asked 6 times\)$"):
        am.agent_alerts("CMO")
    assert cluster.timeouts == [5.0, 5.0, 10.0, 10.0, 20.0, 20.0, 40.0, 40.0, 40.0, 40.0, 40.0, 30.0]


def test_a_slow_cluster_is_asked_until_the_deadline_then_the_gate_holds_saying_so(slow_cluster):
    cluster, am = slow_cluster()
    with deadline(cluster.now + 12), pytest.raises(UpstreamError) as held:
        am.agent_alerts("CMO")
    assert len(cluster.calls) == 3  # 5 s, 5 s, then the 2 s the deadline left
    assert str(held.value) == ("http://am-0.invalid/api/v2/alerts: ReadTimeout; "
                               "http://am-1.invalid/api/v2/alerts: ReadTimeout (asked 2 times)")


def test_a_slow_cluster_is_asked_once_outside_any_deadline(slow_cluster):
    cluster, am = slow_cluster(slow_calls=2)
    with pytest.raises(UpstreamError, match="ReadTimeout; .*ReadTimeout$"):
        am.agent_alerts("CMO")
    assert len(cluster.calls) == 2


def test_a_cluster_refusing_connections_is_not_asked_again_however_long_the_deadline(slow_cluster):
    cluster, am = slow_cluster(refuse=True)
    with deadline(cluster.now + 600), pytest.raises(UpstreamError, match="ConnectionError; .*ConnectionError$"):
        am.agent_alerts("CMO")
    assert len(cluster.calls) == 2


# ------------------------------------------------------------------ 4. one receiver per data directory

def receiver_settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
                              "AUTOREM_ALERTMANAGER_URL": "", "AUTOREM_DATA_DIR": str(tmp_path), **env})


def test_a_second_receiver_on_the_same_data_directory_is_refused_naming_it_and_the_holders_pid(tmp_path,
                                                                                               make_receiver):
    first = make_receiver(settings=receiver_settings(tmp_path))
    with pytest.raises(DataDirError) as caught:
        make_receiver(settings=receiver_settings(tmp_path))
    assert str(caught.value) == (f"{tmp_path}: already in use by another receiver (pid {__import__('os').getpid()})"
                                 "; one receiver per data directory")
    make_receiver.close(first)
    make_receiver(settings=receiver_settings(tmp_path))  # released with the first: a restart gets it


def run_receiver(data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "AUTOREM_ALERTMANAGER_URL": "", "AUTOREM_WEBHOOK_TOKEN": "t" * 20,
           "AUTOREM_AGENT_TOKEN": "a" * 20}
    return subprocess.run([AUTONOMY, "receiver", "--port", str(free_port()), "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=timeout, env=env)


# ------------------------------------------------------------------ 7. start-up on a bad data directory

def corrupt_page(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE filler (x TEXT)")
    db.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
    db.commit()
    db.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3 + 100, 4096 * 3 + 900):  # the middle of a b-tree page
        data[offset] = 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, says", [
    (lambda d: (d / "incidents.sqlite3").write_bytes(b"this is not a database" * 100), "not an SQLite ledger"),
    (lambda d: corrupt_page(d / "incidents.sqlite3"), "fails its integrity check"),
    (lambda d: (d / "decision_lineage.jsonl").mkdir(), "cannot write the decision lineage"),
])
def test_a_bad_store_ends_the_start_with_one_line_and_exit_code_2(tmp_path, damage, says):
    damage(tmp_path)
    done = run_receiver(tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("autonomy receiver: ") and says in line and str(tmp_path) in line
    assert "Traceback" not in done.stderr


def test_a_read_only_data_directory_ends_the_start_with_one_line(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.decode().strip()}")
    try:
        done = run_receiver(mount)
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("autonomy receiver: ") and str(mount) in line and "Traceback" not in done.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ------------------------------------------------------------------ 5. clock skew

def future_signal(agent="CMO", years=70) -> dict:
    return {"agent": agent, "status": "healthy", "lastReport": "ok",
            "metrics": {"successRate": 0.99, "alignment": 0.99, "backlogAgeMinutes": 1, "costBurnRatePerHour": 0.1},
            "ts": iso(time.time() + years * 365 * 86400 if years else time.time() + 200)}


def test_a_signal_dated_in_the_future_is_refused_on_the_receiver_and_the_exporter(h, client, auth):
    h.build()
    for web, headers, path in ((h.web, {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, "/api/v1/signals"),
                               (client, auth, "/api/v1/signals")):
        reply = web.post(path, data=json.dumps(future_signal()), content_type="application/json", headers=headers)
        assert reply.status_code == 422
        [error] = reply.get_json()["errors"]
        assert error.startswith("ts: ") and "AUTOREM_MAX_CLOCK_SKEW_SECONDS=300" in error
        # Within the bound (a clock a little ahead) it is taken.
        assert web.post(path, data=json.dumps(future_signal(years=0)), content_type="application/json",
                        headers=headers).status_code == 200


# ------------------------------------------------------------------ 6. bounded everything

def test_incidents_are_listed_a_page_at_a_time_with_a_cursor(h):
    h.build()
    opened = [h.notify(f"Agent{n:02d}")["opened"][0] for n in range(7)]
    seen, cursor = [], None
    while True:
        reply = h.web.get("/api/v1/incidents", query_string={"limit": 3, **({"cursor": cursor} if cursor else {})})
        body = reply.get_json()
        seen += [i["id"] for i in body["incidents"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == opened[::-1]
    assert h.web.get("/api/v1/incidents", query_string={"limit": 1001}).status_code == 400
    assert h.web.get("/api/v1/incidents", query_string={"cursor": "drop table"}).status_code == 400
    assert len(h.web.get("/api/v1/incidents").get_json()["incidents"]) == 7  # default 100


def test_a_lineage_line_nested_beyond_the_depth_limit_is_skipped_and_reported_not_a_500(h):
    h.build()
    h.state.lineage.append({"event": "auto_remediation", "agent": "CMO", "attempt": 1})
    h.store.append_lineage({"ts": "2025-08-18T15:02:11Z", "agent": "CMO"},
                           '{"a":' * 100_000 + "1" + "}" * 100_000)  # as a hand-edited store could hold
    for path in ("/api/v1/lineage", "/lineage"):
        reply = h.web.get(path)
        assert reply.status_code == 200
    body = h.web.get("/api/v1/lineage").get_json()
    assert [e["attempt"] for e in body["entries"]] == [1] and len(body["skipped_ids"]) == 1


def test_new_agents_beyond_the_limit_get_429_and_nothing_is_stored(h):
    h.build({"AUTOREM_MAX_AGENTS": "2"})
    h.notify("CMO")
    h.notify("CRO")
    reply = h.web.post("/api/v1/alerts", data=json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "AgentTransientError", "agent": "COO",
                                         "autonomy_class": "TRANSIENT"}}]}),
        content_type="application/json", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
    assert reply.status_code == 429 and "AUTOREM_MAX_AGENTS=2" in reply.get_json()["error"]
    assert h.store.open_for("COO") is None
    assert h.metric("autonomy_webhook_requests_total", endpoint="alerts", code="429") == 1
    h.notify("CMO")  # an agent it already holds is still taken


def test_the_exporter_refuses_new_agents_beyond_its_limit_and_counts_them(tmp_path):
    from exporter.app import create_app as create_exporter

    app = create_exporter({"SETTINGS": Settings.from_env({"AUTOREM_MAX_AGENTS": "1"}),
                           "EXPORTER_TOKEN": Secret("AUTOREM_EXPORTER_TOKEN", "p" * 20)})
    web, headers = app.test_client(), {"Authorization": f"Bearer {'p' * 20}"}
    assert web.post("/api/v1/signals", json=future_signal("CMO", 0), headers=headers).status_code == 200
    reply = web.post("/api/v1/signals", json=[future_signal("CMO", 0), future_signal("CRO", 0)], headers=headers)
    assert reply.status_code == 429 and "CRO" in reply.get_json()["error"]
    text = web.get("/metrics").get_data(as_text=True)
    assert 'autonomy_exporter_signals_total{result="refused_agent_limit"} 2.0' in text
    assert 'agent="CRO"' not in text


def test_an_agent_whose_incident_closed_leaves_the_state_exposition(h):
    h.build()
    h.prom.add("CMO", "Marketing", status="error", errorCode="TIMEOUT")
    h.run(h.fire())
    assert 'agent="CMO"' in h.metrics_text()
    h.notify(status="resolved")
    assert 'autonomy_agent_state{agent="CMO"' not in h.metrics_text()


def test_a_healthy_heartbeat_on_the_direct_path_is_counted_not_stored(h):
    h.build()
    before = h.store.notification_count()
    for _ in range(3):
        h.post_signal({**future_signal("CMO", 0), "ts": iso(time.time())})
    assert h.store.notification_count() == before
    assert h.metric("autonomy_direct_signals_total", result="unchanged") == 3


def test_the_shipped_prometheus_config_bounds_every_scrape_of_the_layer():
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["autonomy-exporter"]["sample_limit"] >= 22 * 10_000
    assert jobs["autonomy-receiver"]["sample_limit"] >= 6 * 10_000


def test_the_services_run_with_bounded_connections_and_idle_timeouts():
    from autonomy.http_edge import SERVER_OPTIONS

    assert 0 < SERVER_OPTIONS["connection_limit"] < 1024  # select() and its descriptors
    assert SERVER_OPTIONS["channel_timeout"] <= 60


# ------------------------------------------------------------------ 8. the small ones

def test_the_layers_own_agent_name_never_opens_an_incident_and_fleet_is_never_an_action_target(h):
    h.build({"AUTOREM_MAX_ATTEMPTS": "1"})
    ignored = h.notify("autonomy-layer")
    assert ignored["opened"] == [] and "the layer's own agent name" in ignored["ignored"][0]
    h.prom.add("COO", "Operations")
    incident = h.run(h.fire("fleet", "TRANSIENT"))  # a transient alert that names the fleet: nobody to restart
    assert h.agents.calls == [] and incident.state == "escalated"
    [line] = h.lineage("auto_remediation")
    assert "is the layer's own name, not an agent" in line["steps"][0]["error"]


def test_every_html_answer_carries_a_strict_content_security_policy(h):
    h.build()
    reply = h.web.get("/lineage")
    assert reply.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script-src" not in reply.headers["Content-Security-Policy"]
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert h.web.get("/api/v1/incidents").headers["X-Content-Type-Options"] == "nosniff"


def test_the_lineage_page_links_to_older_entries(h):
    h.build()
    for n in range(5):
        h.state.lineage.append({"event": "auto_remediation", "agent": "CMO", "attempt": n})
    page = h.web.get("/lineage?agent=CMO&limit=2").get_data(as_text=True)
    assert "Older entries" in page and "cursor=" in page


def test_a_direct_path_alert_is_named_and_labelled_as_its_alert_rule_would_be():
    import yaml

    from webhook_receiver.signals_api import DIRECT_ALERTNAMES, direct_labels

    rules = {r["alert"]: r["labels"] for path in (Path(__file__).resolve().parent.parent / "alert_rules").glob(
        "*.rules.yml") for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "alert" in r}
    for alertname in DIRECT_ALERTNAMES.values():
        labels = direct_labels(alertname, "CMO", rules[alertname]["autonomy_class"])
        assert labels["severity"] == rules[alertname]["severity"], alertname


def test_buffered_sends_are_asked_for_only_while_waitress_knows_them(monkeypatch):
    from waitress.adjustments import Adjustments

    from autonomy.http_edge import create_waitress_server

    server = create_waitress_server(lambda environ, start: [], "127.0.0.1", 0, 1)
    assert server.adj.send_bytes == 18000
    server.close()
    monkeypatch.setattr(Adjustments, "_params", tuple(p for p in Adjustments._params if p[0] != "send_bytes"))
    server = create_waitress_server(lambda environ, start: [], "127.0.0.1", 0, 1)  # a waitress without it starts
    assert server.adj.send_bytes == 1
    server.close()
