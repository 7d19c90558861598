import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomy_cli import main
from tests.signal_cases import EXAMPLE_PATH, MALFORMED

AUTONOMY = str(Path(sys.executable).with_name("autonomy"))


def test_help_lists_the_subcommands():
    out = subprocess.run([AUTONOMY, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("signal", "exporter", "demo"):
        assert command in out


def test_validate_accepts_the_packs_example_from_a_file():
    done = subprocess.run([AUTONOMY, "signal", "validate", str(EXAMPLE_PATH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "valid: 1 signal (CMO)"


def test_validate_reads_standard_input_and_prints_one_error_per_line():
    doc = json.loads(EXAMPLE_PATH.read_text())
    doc["metrics"]["successRate"] = 1.7
    doc["status"] = "sick"
    done = subprocess.run([AUTONOMY, "signal", "validate", "-"], input=json.dumps(doc), capture_output=True,
                          text=True)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "metrics.successRate: 1.7 is greater than the maximum of 1",
        "status: 'sick' is not one of healthy, degraded, error",
    ]
    assert done.stdout == ""


@pytest.mark.parametrize("body, expected", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_validate_rejects_each_malformed_signal_with_exit_1(tmp_path, capsys, body, expected):
    path = tmp_path / "signal.json"
    path.write_bytes(body)
    assert main(["signal", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert all(":" in line for line in err.splitlines())


def test_validate_names_a_file_it_cannot_read(capsys):
    assert main(["signal", "validate", "/nonexistent/signal.json"]) == 1
    assert "/nonexistent/signal.json: cannot read" in capsys.readouterr().err


def test_the_exporter_refuses_to_start_without_a_token(monkeypatch):
    monkeypatch.delenv("AUTOREM_EXPORTER_TOKEN", raising=False)
    monkeypatch.delenv("AUTOREM_EXPORTER_TOKEN_FILE", raising=False)
    done = subprocess.run([AUTONOMY, "exporter", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "AUTOREM_EXPORTER_TOKEN: not set" in done.stderr


def test_classify_prints_the_class_the_playbook_and_the_reasons(tmp_path):
    doc = json.loads(EXAMPLE_PATH.read_text())
    doc["context"] = {"errorCode": "TIMEOUT", "dependencies": ["MarketIntel"]}
    path = tmp_path / "signal.json"
    path.write_text(json.dumps(doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOREM_AGENT_TOKEN")}  # classifying sends nothing
    done = subprocess.run([AUTONOMY, "classify", str(path)], capture_output=True, text=True,
                          cwd=EXAMPLE_PATH.parent.parent, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["classification"] == "TRANSIENT"
    assert out["playbook"] == "RestartAndRetryTransient"
    assert out["reasons"][0] == "errorCode TIMEOUT"


def test_classify_prints_null_for_a_healthy_signal(tmp_path):
    doc = json.loads(EXAMPLE_PATH.read_text())
    doc["context"] = {}
    doc["metrics"].update(successRate=0.99, alignment=0.99)
    path = tmp_path / "signal.json"
    path.write_text(json.dumps(doc))
    done = subprocess.run([AUTONOMY, "classify", str(path)], capture_output=True, text=True,
                          cwd=EXAMPLE_PATH.parent.parent)
    assert json.loads(done.stdout) == {"classification": None, "playbook": None, "reasons": []}


def test_check_reports_the_playbooks_and_rules(monkeypatch):
    done = subprocess.run([AUTONOMY, "check"], capture_output=True, text=True, cwd=EXAMPLE_PATH.parent.parent)
    assert done.returncode == 0, done.stderr
    assert "playbooks: 6 playbooks" in done.stdout


def test_the_receiver_refuses_to_start_without_a_webhook_token(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTOREM_WEBHOOK_TOKEN", raising=False)
    monkeypatch.delenv("AUTOREM_WEBHOOK_TOKEN_FILE", raising=False)
    done = subprocess.run([AUTONOMY, "receiver", "--port", "0", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=EXAMPLE_PATH.parent.parent)
    assert done.returncode == 2
    assert "AUTOREM_WEBHOOK_TOKEN: not set" in done.stderr


def test_the_receiver_serves_with_a_production_server_and_answers_healthz_at_once(tmp_path):
    import requests

    from devstack.local_stack import free_port
    from devstack.polling import wait_until

    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text("a-token")
    env = {**__import__("os").environ, "AUTOREM_WEBHOOK_TOKEN_FILE": str(token_file),
           "AUTOREM_PROMETHEUS_URL": "http://127.0.0.1:9", "AUTOREM_ALERTMANAGER_URL": "http://127.0.0.1:9"}
    env.pop("AUTOREM_WEBHOOK_TOKEN", None)
    process = subprocess.Popen([AUTONOMY, "receiver", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                               env=env, cwd=EXAMPLE_PATH.parent.parent, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: requests.get(url + "/healthz", timeout=2).ok, 60, "the receiver to serve")
        assert requests.get(url + "/healthz", timeout=5).headers["Server"] == "autonomy"
        ready = requests.get(url + "/readyz", timeout=10)
        assert ready.status_code == 503 and set(ready.json()["missing"]) == {"prometheus", "alertmanager"}
        assert requests.post(url + "/api/v1/alerts", json={}, timeout=5).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "a-token" not in process.stdout.read()


@pytest.mark.parametrize("argv, message", [
    (["soak", "--agents", "5"], "--agents must be at least 6"),
    (["soak", "--days", "0"], "must be a positive number"),
    (["soak", "--time-factor", "nan"], "must be a positive number"),
    (["soak", "--days", "a week"], "not a number"),
])
def test_soak_refuses_a_bad_size_naming_the_option_before_starting_anything(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err
