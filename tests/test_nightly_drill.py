"""The nightly drill against a running layer: its target file, its metrics file, the fleet over HTTP, the checks
before drilling and the command's refusals."""
import json
import os
from pathlib import Path

import pytest
import requests
import yaml

from autonomy_cli import main
from devstack.deployed_stack import DeployedStack, TokenRefused, not_ready, unreachable
from devstack.drill_metrics import DrillRun, render, write_metrics
from devstack.drill_target import DrillTarget, TargetConfigError, load_target, parse_target
from devstack.drills import DRILLS, DrillContext
from devstack.fleet import SimulatedFleet
from devstack.local_stack import ServedApp
from devstack.remote_fleet import FleetError, RemoteFleet
from tests.receivers import WEBHOOK_TOKEN, closed_url

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "drill-target.yaml"
ENV = {"AUTOREM_WEBHOOK_TOKEN": "tok-from-env-31c9"}
GOOD = {"receiver_url": "http://receiver:9818/", "exporter_url": "http://exporter:9817",
        "prometheus_url": "https://prometheus.example:9090", "alertmanager_url": "http://alertmanager:9093",
        "fleet_url": "http://fleet:8080", "receiver_token_env": "AUTOREM_WEBHOOK_TOKEN"}


def problems(doc, environ=ENV) -> str:
    with pytest.raises(TargetConfigError) as caught:
        parse_target(doc, "target.yaml", environ)
    return str(caught.value)


# -- the target file ---------------------------------------------------------------------------------------------
def test_the_example_target_file_parses_with_its_token_from_the_environment():
    target = load_target(EXAMPLE, ENV)
    assert (target.receiver_url, target.alertmanager_urls, target.fleet_url) == (
        "http://127.0.0.1:9818", ("http://127.0.0.1:9093",), "http://127.0.0.1:8080")
    assert (target.max_attempts, target.slo_backlog_min, target.time_factor) == (2, 15.0, 1.0)
    assert target.drills == tuple(DRILLS)
    assert target.receiver_token.reveal() == ENV["AUTOREM_WEBHOOK_TOKEN"] and target.read_token is None
    assert ENV["AUTOREM_WEBHOOK_TOKEN"] not in repr(target) and "AUTOREM_WEBHOOK_TOKEN" in repr(target)


def test_a_json_target_with_tokens_from_files_and_defaults(tmp_path):
    (tmp_path / "webhook").write_text("tok-from-file-77\n")
    (tmp_path / "read").write_text("read-tok-88")
    doc = {**GOOD, "receiver_token_env": None, "receiver_token_file": str(tmp_path / "webhook"),
           "read_token_file": str(tmp_path / "read"), "alertmanager_url": None,
           "alertmanager_urls": ["http://am-0:9093", "http://am-1:9093/"]}
    path = tmp_path / "target.json"
    path.write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))
    target = load_target(path, {})
    assert target.receiver_url == "http://receiver:9818"  # the trailing slash dropped
    assert target.alertmanager_urls == ("http://am-0:9093", "http://am-1:9093")
    assert target.receiver_token.reveal() == "tok-from-file-77" and target.read_token.reveal() == "read-tok-88"
    assert (target.max_attempts, target.slo_backlog_min, target.time_factor, target.drills) == (2, 15.0, 1.0, ())
    assert [f for f, _ in target.endpoints()] == ["receiver_url", "exporter_url", "prometheus_url",
                                                  "alertmanager_urls[0]", "alertmanager_urls[1]", "fleet_url"]


def test_every_bad_field_is_named_in_one_message_and_no_secret_is_shown(tmp_path):
    doc = {"receiver_url": "ftp://receiver:9818", "prometheus_url": "http://", "alertmanager_urls": [],
           "fleet_url": "http://drill:s3cret-pass@fleet:8080", "exporter_url": "http://exporter:port",
           "receiver_token": "literal-tok-do-not-print", "read_token_env": "NOT_SET_ANYWHERE",
           "max_attempts": 0, "slo_backlog_min": "fifteen", "time_factor": 30, "drills": ["transient-timeout", "nope"],
           "recevier_url": "http://typo"}
    text = problems(doc)
    for expected in ("receiver_url: 'ftp://receiver:9818' is not an http(s) URL with a host",
                     "prometheus_url: 'http://' is not an http(s) URL with a host",
                     "alertmanager_urls: must be a non-empty list",
                     "fleet_url: must not carry credentials",
                     "exporter_url: 'http://exporter:port' has a port that is not a number",
                     "receiver_token: a token is not written in the target file",
                     "receiver_token_env or receiver_token_file: required",
                     "read_token_env: NOT_SET_ANYWHERE is not set in the environment",
                     "max_attempts: must be an integer >= 1, not 0",
                     "slo_backlog_min: must be a number >= 0, not 'fifteen'",
                     "time_factor: must be a number > 0 and <= 1, not 30",
                     "drills: unknown drill(s) nope; choose from transient-timeout",
                     "unknown field(s) recevier_url"):
        assert expected in text, (expected, text)
    assert text.startswith("target.yaml: not a usable drill target:")
    assert "literal-tok-do-not-print" not in text and "s3cret-pass" not in text


def test_token_sources_are_checked(tmp_path):
    (tmp_path / "empty").write_text("\n")
    assert "receiver_token_env, receiver_token_file: give one of them, not both" in problems(
        {**GOOD, "receiver_token_file": "/x"})
    assert "receiver_token_env: must be the name of an environment variable" in problems(
        {**GOOD, "receiver_token_env": "not a name"})
    assert f"receiver_token_file: {tmp_path / 'empty'} is empty" in problems(
        {**GOOD, "receiver_token_env": None, "receiver_token_file": str(tmp_path / "empty")})
    assert f"receiver_token_file: {tmp_path / 'gone'}: cannot read (No such file or directory)" in problems(
        {**{k: v for k, v in GOOD.items() if k != "receiver_token_env"}, "receiver_token_file": str(tmp_path / "gone")})
    assert "alertmanager_url, alertmanager_urls: give one of them, not both" in problems(
        {**GOOD, "alertmanager_urls": ["http://am:9093"]})
    assert "alertmanager_url: required, an http(s) URL" in problems(
        {k: v for k, v in GOOD.items() if k != "alertmanager_url"})


def test_a_file_that_is_not_a_mapping_or_not_yaml_or_not_there_is_named(tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- receiver_url\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("receiver_url: [unclosed\nreceiver_token: literal-in-broken-file\n")
    with pytest.raises(TargetConfigError, match="must hold a mapping of fields"):
        load_target(listed, ENV)
    with pytest.raises(TargetConfigError, match=r"not YAML or JSON at line \d+") as caught:
        load_target(broken, ENV)
    assert "literal-in-broken-file" not in str(caught.value)
    with pytest.raises(TargetConfigError, match="cannot read"):
        load_target(tmp_path / "missing.yaml", ENV)


# -- the metrics file --------------------------------------------------------------------------------------------
PASSING_TEXT = """\
# HELP autonomy_drill_last_run_timestamp_seconds When the last drill run against the layer ended (Unix time).
# TYPE autonomy_drill_last_run_timestamp_seconds gauge
autonomy_drill_last_run_timestamp_seconds 1700000000.250
# HELP autonomy_drill_last_success_timestamp_seconds When a drill run last passed every drill it ran (Unix time; 0: never).
# TYPE autonomy_drill_last_success_timestamp_seconds gauge
autonomy_drill_last_success_timestamp_seconds 1700000000.250
# HELP autonomy_drill_passed Whether the drill passed (1) or failed (0) on the last run.
# TYPE autonomy_drill_passed gauge
autonomy_drill_passed{drill="transient-timeout"} 1
autonomy_drill_passed{drill="kill-switch"} 1
# HELP autonomy_drill_duration_seconds How long the drill took on the last run.
# TYPE autonomy_drill_duration_seconds gauge
autonomy_drill_duration_seconds{drill="transient-timeout"} 41.500
autonomy_drill_duration_seconds{drill="kill-switch"} 12.000
"""


def test_the_metrics_file_of_a_passing_run_is_exactly_this_text(tmp_path):
    path = tmp_path / "autonomy_drill.prom"
    runs = [DrillRun("kill-switch", True, 12.0), DrillRun("transient-timeout", True, 41.5)]  # table order wins
    assert write_metrics(path, runs, now=1700000000.25) == PASSING_TEXT
    assert path.read_text() == PASSING_TEXT
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["autonomy_drill.prom"]


def test_a_failed_run_keeps_the_last_success_of_the_previous_file(tmp_path):
    path = tmp_path / "autonomy_drill.prom"
    write_metrics(path, [DrillRun("kill-switch", True, 12.0)], now=1700000000.25)
    text = write_metrics(path, [DrillRun("kill-switch", False, 900.0), DrillRun("silenced", False, None)],
                         now=1700086400.0)
    assert "autonomy_drill_last_run_timestamp_seconds 1700086400.000\n" in text
    assert "autonomy_drill_last_success_timestamp_seconds 1700000000.250\n" in text
    assert 'autonomy_drill_passed{drill="silenced"} 0\nautonomy_drill_passed{drill="kill-switch"} 0\n' in text
    assert 'duration_seconds{drill="silenced"}' not in text  # it did not run
    # Without a previous file (or one that is not ours) a failed run records "never".
    other = tmp_path / "other.prom"
    other.write_text("something_else 1\n")
    assert "autonomy_drill_last_success_timestamp_seconds 0.000\n" in write_metrics(
        other, [DrillRun("silenced", False, 3.0)], now=5.0)


def test_the_file_is_replaced_atomically_and_a_failed_write_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "autonomy_drill.prom"
    write_metrics(path, [DrillRun("kill-switch", True, 12.0)], now=1700000000.25)
    before = path.read_text()
    inode = path.stat().st_ino

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_metrics(path, [DrillRun("kill-switch", False, 1.0)], now=1700000001.0)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["autonomy_drill.prom"]
    monkeypatch.undo()
    write_metrics(path, [DrillRun("kill-switch", False, 1.0)], now=1700000001.0)
    assert path.stat().st_ino != inode  # renamed over, never rewritten in place


def test_only_drills_of_the_table_become_label_values():
    with pytest.raises(ValueError, match="not drills of the DRILLS table: made-up"):
        render([DrillRun("made-up", True, 1.0)], 1.0, 1.0)


# -- the fleet over HTTP -----------------------------------------------------------------------------------------
@pytest.fixture
def served_fleet():
    fleet = SimulatedFleet()
    with ServedApp(fleet.app) as server:
        yield fleet, RemoteFleet(server.url)


def test_the_remote_fleet_does_what_the_in_process_fleet_does(served_fleet):
    fleet, remote = served_fleet
    assert sorted(remote.agents) == sorted(fleet.agents)
    remote.inject("CMO", "timeout")
    remote.inject("Content", "missing-secret", fixable=False)
    assert remote.snapshot() == fleet.snapshot()
    assert fleet.snapshot()["CMO"]["faults"] == {"timeout": True}
    assert fleet.snapshot()["Content"]["faults"] == {"missing-secret": False}
    fleet.act("CMO", "restartAgent", {"mode": "soft"}, 100.0)
    fleet.act("CMO", "retryLastTask", {}, 200.0)
    fleet.act("CRO", "restartAgent", {}, 300.0)
    assert remote.calls_for("CMO") == fleet.calls_for("CMO") == [("restartAgent", {"mode": "soft"}),
                                                                 ("retryLastTask", {})]
    assert remote.calls_for("CMO", 150.0) == [("retryLastTask", {})]
    fleet.escalations.append({"agent": "Content", "to": "CEO"})
    assert remote.escalations == [{"agent": "Content", "to": "CEO"}]
    remote.clear("Content", "missing-secret")
    assert fleet.snapshot()["Content"]["faults"] == {}
    remote.heal_all()
    assert all(not s["faults"] for s in fleet.snapshot().values())


def test_the_remote_fleet_names_what_the_fleet_refused(served_fleet):
    fleet, remote = served_fleet
    with pytest.raises(FleetError, match="POST /fleet/faults answered 422: agent: one of CEO"):
        remote.inject("Nobody", "timeout")
    with pytest.raises(FleetError, match="answered 422: fault: unknown fault 'melt'"):
        remote.inject("CMO", "melt")
    with pytest.raises(FleetError, match="answered 422: agent: one of"):
        remote.calls_for("Nobody")
    assert fleet.app.test_client().get("/fleet/calls?since=yesterday").get_json() == {
        "error": "since: a Unix time in seconds"}
    with pytest.raises(FleetError, match=r"no answer to GET /fleet/state \(ConnectionError\)"):
        RemoteFleet(closed_url()).snapshot()


# -- the layer before drilling -----------------------------------------------------------------------------------
def target_for(receiver_url: str, fleet_url: str, token: str = WEBHOOK_TOKEN, **extra) -> DrillTarget:
    return parse_target({"receiver_url": receiver_url, "exporter_url": closed_url(), "prometheus_url": closed_url(),
                         "alertmanager_url": closed_url(), "fleet_url": fleet_url,
                         "receiver_token_env": "DRILL_TOKEN", **extra}, "target.yaml", {"DRILL_TOKEN": token})


def test_each_part_that_does_not_answer_is_named(served_fleet, app):
    with ServedApp(app) as receiver:
        target = target_for(receiver.url, served_fleet[1].url)
        lines = unreachable(target, timeout=2)
    assert [line.split(" ", 1)[0] for line in lines] == ["exporter_url", "prometheus_url", "alertmanager_url"]
    assert all(line.endswith("does not answer (ConnectionError)") for line in lines)


def test_a_layer_that_would_not_remediate_is_refused_and_a_wrong_token_is_named(served_fleet, app):
    _, remote = served_fleet
    with ServedApp(app) as receiver:
        stack = DeployedStack(target_for(receiver.url, remote.url))
        assert not_ready(stack, remote.agents) == []
        stack.receiver_call("PUT", "/api/v1/remediation", json={"enabled": False, "reason": "maintenance"})
        [line] = not_ready(stack, remote.agents)
        assert "remediation is off (maintenance)" in line
        wrong = DeployedStack(target_for(receiver.url, remote.url, token="wrong-tok-123"))
        with pytest.raises(TokenRefused) as caught:
            wrong.receiver_call("PUT", "/api/v1/remediation", json={"enabled": True, "reason": "x"})
    assert "the receiver refused the token DRILL_TOKEN on PUT /api/v1/remediation (401)" in str(caught.value)
    assert "wrong-tok-123" not in str(caught.value)


def test_the_drills_wait_longer_and_poll_less_in_uncompressed_time(served_fleet, app):
    with ServedApp(app) as receiver:
        stack = DeployedStack(target_for(receiver.url, served_fleet[1].url))
    assert DrillContext(stack, served_fleet[1], print).wait == 900.0
    stack.time_factor = 1 / 30
    assert DrillContext(stack, served_fleet[1], print).wait == 90.0


# -- the command ---------------------------------------------------------------------------------------------------
def test_the_command_refuses_a_bad_target_file_in_one_message(tmp_path, capsys):
    bad = tmp_path / "target.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "receiver_url": "receiver:9818", "receiver_token_env": "UNSET_TOKEN_X"}))
    assert main(["drill", "--target-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "receiver_url: 'receiver:9818' is not an http(s) URL" in err and "UNSET_TOKEN_X is not set" in err


def test_the_command_refuses_metrics_without_a_target_an_unknown_drill_and_a_file_not_read(tmp_path, capsys,
                                                                                         monkeypatch):
    assert main(["drill", "--metrics-file", str(tmp_path / "x.prom")]) == 2
    assert "--metrics-file needs --target-config" in capsys.readouterr().err
    monkeypatch.setenv("AUTOREM_WEBHOOK_TOKEN", "tok")
    assert main(["drill", "--target-config", str(EXAMPLE), "--metrics-file", str(tmp_path / "x.txt")]) == 2
    assert "must be a *.prom file" in capsys.readouterr().err
    assert main(["drill", "--target-config", str(EXAMPLE), "--scenario", "nope"]) == 2
    assert "unknown scenario(s): nope" in capsys.readouterr().err


def test_an_unreachable_layer_stops_the_drill_in_one_line_and_is_recorded_as_failed(tmp_path, capsys, monkeypatch):
    target = tmp_path / "target.yaml"
    dead = closed_url()
    target.write_text(yaml.safe_dump({**GOOD, "receiver_url": dead, "exporter_url": dead, "prometheus_url": dead,
                                      "alertmanager_url": dead, "fleet_url": dead}))
    metrics = tmp_path / "autonomy_drill.prom"
    monkeypatch.setenv("AUTOREM_WEBHOOK_TOKEN", "tok")
    assert main(["drill", "--target-config", str(target), "--scenario", "kill-switch",
                 "--metrics-file", str(metrics), "--json"]) == 2
    out = capsys.readouterr()
    [line] = out.err.strip().splitlines()
    assert line.startswith(f"cannot drill the layer: receiver_url {dead} does not answer")
    assert json.loads(out.out.strip().splitlines()[-1])["passed"] is False
    assert 'autonomy_drill_passed{drill="kill-switch"} 0\n' in metrics.read_text()


def test_the_fleet_answers_calls_and_escalations_over_http():
    fleet = SimulatedFleet()
    web = fleet.app.test_client()
    fleet.act("COO", "restartAgent", {"mode": "soft"}, 10.0)
    fleet.act("CMO", "retryLastTask", {}, 20.0)
    assert web.get("/fleet/calls").get_json()["calls"] == [
        {"ts": 10.0, "agent": "COO", "action": "restartAgent", "body": {"mode": "soft"}},
        {"ts": 20.0, "agent": "CMO", "action": "retryLastTask", "body": {}}]
    assert [c["agent"] for c in web.get("/fleet/calls?agent=CMO&since=15").get_json()["calls"]] == ["CMO"]
    assert web.get("/fleet/calls?since=25").get_json()["calls"] == []
    web.post("/agents/CEO/escalations", json={"agent": "Content"})
    assert web.get("/fleet/escalations").get_json() == {"escalations": [{"agent": "Content"}]}
    assert requests.codes.ok == web.get("/fleet/state").status_code
