"""The exporter embedded in one agent (exporter/embedded.py), and the shipped Prometheus examples for both modes."""
import copy
import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from werkzeug.test import Client

from devstack.checkout import PROMETHEUS_CONFIG, REPO_ROOT
from exporter.app import EXPOSITION_TYPE
from exporter.embedded import EmbeddedExporter
from tests.conftest import real_binary
from tests.signal_cases import MALFORMED, example
from tests.test_exporter_exposition import EXPECTED_CMO, FLEET

EXAMPLES = REPO_ROOT / "prometheus" / "examples"
NOW = datetime(2025, 8, 18, 15, 5, tzinfo=timezone.utc).timestamp()  # a little after the fleet's signals


def exporter(**options) -> EmbeddedExporter:
    return EmbeddedExporter(clock=lambda: NOW, **options)


def cmo(**changes) -> dict:
    return dict(copy.deepcopy(FLEET[1]), **changes)


def test_one_agent_is_exposed_exactly_as_the_shared_exporter_exposes_it(client, auth):
    embedded = exporter()
    assert embedded.observe(cmo()) is True
    assert embedded.metrics_text().decode() == EXPECTED_CMO
    client.post("/api/v1/signals", json=cmo(), headers=auth).get_data()
    shared = client.get("/metrics").get_data(as_text=True)
    assert shared.startswith(EXPECTED_CMO)  # then the shared exporter's own metrics


def test_before_its_first_signal_only_the_family_headers_are_exposed():
    text = exporter().metrics_text().decode()
    assert text and all(line.startswith("# ") for line in text.splitlines())
    assert text == "".join(line + "\n" for line in EXPECTED_CMO.splitlines() if line.startswith("# "))


def test_a_newer_signal_replaces_the_exposed_one_and_an_older_is_ignored():
    embedded = exporter()
    embedded.observe(cmo())
    newer = cmo(ts="2025-08-18T15:03:00Z", status="healthy")
    assert embedded.observe(newer) is True
    text = embedded.metrics_text().decode()
    assert 'autonomy_agent_status{agent="CMO",autonomy_agent_status="healthy"} 1.0' in text
    assert "autonomy_agent_last_signal_timestamp_seconds{agent=\"CMO\"} 1.75552938e+09" in text
    assert embedded.observe(cmo()) is False
    assert embedded.metrics_text().decode() == text


def refused_documents() -> list:
    """The malformed signals that are JSON objects: what an agent could hand to observe()."""
    cases = []
    for name, body, expected in MALFORMED:
        try:
            doc = json.loads(body)
        except ValueError:
            continue
        if isinstance(doc, dict) and not expected.startswith("(body)"):
            cases.append(pytest.param(doc, expected, id=name))
    return cases


@pytest.mark.parametrize("body, expected", refused_documents())
def test_a_signal_the_contract_refuses_is_a_value_error_naming_the_field(body, expected):
    embedded = exporter()
    with pytest.raises(ValueError) as caught:
        embedded.observe(body)
    assert expected in str(caught.value)
    assert "agent=" not in embedded.metrics_text().decode()


@pytest.mark.parametrize("value, expected", [
    ([example()], "(root): expected one signal object, got list"),
    ("{}", "(root): expected one signal object, got str"),
    (dict(example(), ts=datetime(2025, 8, 18, tzinfo=timezone.utc)), "ts: a datetime is not a JSON value"),
    (dict(example(), metrics=dict(example()["metrics"], successRate=float("nan"))),
     "metrics.successRate: nan is not a finite number"),
    (dict(example(), context={"dependencies": ["A", float("inf")]}), "context.dependencies[1]: inf is not a finite"),
    (dict(example(), context={1: "x"}), "context: key 1 is not a string"),
])
def test_what_is_no_json_signal_document_is_a_value_error_naming_where(value, expected):
    with pytest.raises(ValueError) as caught:
        exporter().observe(value)
    assert str(caught.value).startswith(expected)


def test_a_signal_dated_further_ahead_than_the_clock_skew_allows_is_refused_as_the_shared_exporter_refuses_it():
    ahead = datetime.fromtimestamp(NOW, timezone.utc) + timedelta(seconds=301)
    with pytest.raises(ValueError, match=r"^ts: .* is 301 s ahead of this receiver's clock, more than "
                                         r"AUTOREM_MAX_CLOCK_SKEW_SECONDS=300"):
        exporter().observe(cmo(ts=ahead.isoformat()))
    assert exporter(max_clock_skew_seconds=600).observe(cmo(ts=ahead.isoformat())) is True


def test_it_exposes_one_agent_the_first_observed_or_the_one_given():
    embedded = exporter()
    embedded.observe(cmo())
    with pytest.raises(ValueError, match=r"^agent: 'CRO' is not 'CMO', the one agent"):
        embedded.observe(copy.deepcopy(FLEET[0]))
    with pytest.raises(ValueError, match=r"^agent: 'CMO' is not 'Writer'"):
        exporter(agent="Writer").observe(cmo())
    with pytest.raises(ValueError, match=r"^agent: '\.\./CEO' is not an agent name"):
        EmbeddedExporter(agent="../CEO")


def test_the_signal_is_copied_so_the_caller_changing_its_dict_changes_nothing_exposed():
    embedded, signal = exporter(), cmo()
    embedded.observe(signal)
    signal["metrics"]["successRate"] = 0.01
    assert embedded.metrics_text().decode() == EXPECTED_CMO


def test_the_wsgi_app_serves_get_metrics_with_the_exporters_content_type():
    embedded = exporter()
    embedded.observe(cmo())
    web = Client(embedded.wsgi_app)
    reply = web.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == EXPOSITION_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert reply.get_data() == embedded.metrics_text()
    assert reply.headers["Content-Length"] == str(len(embedded.metrics_text()))
    head = web.head("/metrics")
    assert head.status_code == 200 and head.get_data() == b""
    assert Client(embedded).get("/metrics").get_data() == embedded.metrics_text()  # the exporter is the app too


def test_the_wsgi_app_answers_anything_else_with_a_json_error():
    web = Client(exporter().wsgi_app)
    wrong_path = web.get("/api/v1/signals")
    assert wrong_path.status_code == 404
    assert wrong_path.get_json() == {"error": "no such path '/api/v1/signals': this serves GET /metrics"}
    wrong_method = web.post("/metrics", data=b"{}")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, HEAD"
    assert wrong_method.get_json() == {"error": "method POST is not allowed on /metrics: use GET"}


def example_config(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


@pytest.mark.parametrize("name", ["push-mode.yml", "embedded-mode.yml"])
def test_promtool_accepts_the_shipped_example_config(name):
    done = subprocess.run([real_binary("promtool"), "check", "config", "--syntax-only", str(EXAMPLES / name)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_push_mode_example_scrapes_what_the_shipped_prometheus_config_scrapes():
    shipped = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert example_config("push-mode.yml") == shipped


def test_the_embedded_mode_example_gives_each_agent_its_own_labelled_target_outside_the_exporters_job():
    jobs = {job["job_name"]: job for job in example_config("embedded-mode.yml")["scrape_configs"]}
    agents = jobs["autonomy-agents"]
    assert agents["honor_labels"] is True
    assert all(len(group["targets"]) == 1 and group["labels"]["agent"] for group in agents["static_configs"])
    assert len({group["labels"]["agent"] for group in agents["static_configs"]}) >= 2
    assert "file_sd_configs:" in (EXAMPLES / "embedded-mode.yml").read_text()  # the variant, as a comment
    assert [t for job in jobs.values() if job["job_name"] == "autonomy-exporter"
            for group in job["static_configs"] for t in group["targets"]] == ["exporter:9817"]


def test_the_embedded_targets_sample_limit_holds_the_largest_signal():
    signal = example()
    signal["context"].update(dependencies=[f"Source{i}" for i in range(64)], openConflicts=1)
    signal.update(domain="Marketing", checks={"lastTaskSucceeded": True, "inputsValid": True, "configHealthy": True})
    embedded = EmbeddedExporter()
    embedded.observe(signal)
    samples = [line for line in embedded.metrics_text().decode().splitlines() if not line.startswith("#")]
    [agents] = [j for j in example_config("embedded-mode.yml")["scrape_configs"] if j["job_name"] == "autonomy-agents"]
    assert len(samples) == 88 <= agents["sample_limit"]
