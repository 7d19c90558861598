"""Agents that embed the exporter, scraped by the real Prometheus from the shipped example configs: one down
agent is silent alone, next to another embedded agent and one that pushes to the shared exporter."""
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from autonomy.settings import Settings
from devstack.checkout import REPO_ROOT
from devstack.local_stack import PrometheusProcess, ServedApp, free_port
from devstack.polling import wait_until
from devstack.rule_render import render_rules
from exporter.embedded import EmbeddedExporter
from tests.conftest import TOKEN, real_binary
from tests.integration.test_alert_rules_on_real_prometheus import signal

pytestmark = pytest.mark.integration
EXAMPLES = REPO_ROOT / "prometheus" / "examples"
TIME_FACTOR = 1 / 15  # 15 s scrapes and evaluations -> 1 s: silence 120 s -> 8 s, `for: 1m` -> 4 s
HEARTBEAT_SECONDS = 0.25


def example_config(name: str, addresses: dict, rule_files: list[Path], prometheus_port: int) -> str:
    """The shipped example NAME with only its targets (ADDRESSES: job -> address, or job -> agent -> address
    for the agents' job), Prometheus's own port, the rule file paths and the intervals (1 s) changed; no
    Alertmanager."""
    config = yaml.safe_load((EXAMPLES / name).read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(p) for p in rule_files]
    config.pop("alerting")
    addresses = dict(addresses, prometheus=f"127.0.0.1:{prometheus_port}")
    for job in config["scrape_configs"]:
        where = addresses[job["job_name"]]
        for group in job["static_configs"]:
            group["targets"] = [where[group["labels"]["agent"]] if isinstance(where, dict) else where]
    return yaml.safe_dump(config, sort_keys=False)


@contextmanager
def example_prometheus(workdir: Path, name: str, addresses: dict, rule_files: list[Path]):
    """The real Prometheus on the example NAME, on the port its own scrape job was given."""
    port = free_port()
    prometheus = PrometheusProcess(workdir, example_config(name, addresses, rule_files, port)).start(port=port)
    try:
        yield prometheus
    finally:
        prometheus.stop()


def silent_alerts(prometheus: PrometheusProcess) -> dict[str, str]:
    """AgentSilent's alerts by agent: their state (pending or firing)."""
    alerts = requests.get(prometheus.url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {a["labels"]["agent"]: a["state"] for a in alerts if a["labels"]["alertname"] == "AgentSilent"}


class Beating:
    """Each agent's fresh signal every HEARTBEAT_SECONDS, from a thread: observed by the embedded exporters,
    pushed to the shared one; an agent stops beating when stopped."""

    def __init__(self, embedded: dict[str, EmbeddedExporter], push_url: str, pushed: str):
        self.embedded, self.push_url, self.pushed = dict(embedded), push_url, pushed
        self.stopped: set[str] = set()
        self.errors: list[str] = []
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeats", daemon=True)

    def _beat(self) -> None:
        while not self._done.is_set():
            try:
                for agent, exporter in self.embedded.items():
                    if agent not in self.stopped:
                        exporter.observe(signal(agent))
                reply = requests.post(self.push_url, json=signal(self.pushed), timeout=10,
                                      headers={"Authorization": f"Bearer {TOKEN}"})
                reply.raise_for_status()
            except Exception as exc:  # reported by the test, which fails on it
                self.errors.append(repr(exc))
            self._done.wait(HEARTBEAT_SECONDS)

    def __enter__(self) -> "Beating":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.thread.join(timeout=10)


def test_one_stopped_embedded_agent_fires_agent_silent_for_itself_alone(exporter_app, tmp_path):
    real_binary("prometheus")
    rule_files = render_rules(Settings.from_env({}), tmp_path / "rules", time_factor=TIME_FACTOR)
    writer, editor = EmbeddedExporter(agent="Writer"), EmbeddedExporter(agent="Editor")
    with ServedApp(exporter_app) as shared, ServedApp(editor.wsgi_app) as editor_app:
        writer_app = ServedApp(writer.wsgi_app)  # stopped by the test, and at the end in any case
        addresses = {"autonomy-agents": {"Writer": writer_app.url[7:], "Editor": editor_app.url[7:]},
                     "autonomy-exporter": shared.url[7:], "autonomy-receiver": f"127.0.0.1:{free_port()}"}
        beating = Beating({"Writer": writer, "Editor": editor}, shared.url + "/api/v1/signals", pushed="CRO")
        with writer_app, beating, example_prometheus(tmp_path / "prometheus", "embedded-mode.yml", addresses,
                                       rule_files) as prometheus:
            # Every agent seen, each embedded one under its own name and its target's job, and remembered.
            for agent, job in (("Writer", "autonomy-agents"), ("Editor", "autonomy-agents"),
                               ("CRO", "autonomy-exporter")):
                wait_until(lambda: prometheus.query(
                    f'agent:autonomy_agent_last_signal_timestamp_seconds:max1h{{agent="{agent}",job="{job}"}}'),
                    60, f"{agent}'s last signal remembered from job {job}")
            [info] = prometheus.query('autonomy_agent_info{agent="Writer"}')
            assert info["metric"]["job"] == "autonomy-agents" and "exported_agent" not in info["metric"]
            assert silent_alerts(prometheus) == {}

            beating.stopped.add("Writer")
            writer_app.stop()
            wait_until(lambda: silent_alerts(prometheus).get("Writer") == "firing", 90,
                       "AgentSilent to fire for the stopped embedded agent")
            assert silent_alerts(prometheus) == {"Writer": "firing"}  # Editor and CRO: not even pending
            silent = prometheus.query("agent:autonomy_agent_last_signal_age_seconds:silent")
            assert [row["metric"]["agent"] for row in silent] == ["Writer"]
            assert prometheus.query('up{job="autonomy-agents",agent="Writer"} == 0')
            assert prometheus.query('up{job="autonomy-agents",agent="Editor"} == 1')
            assert prometheus.query('up{job="autonomy-exporter"} == 1')
            alerts = requests.get(prometheus.url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            exporter_alerts = {a["labels"]["alertname"] for a in alerts
                               if a["labels"]["alertname"].startswith("AutonomyExporter")}
            assert exporter_alerts == set(), f"the shared exporter is up and scraped: {exporter_alerts}"
        assert beating.errors == []


def test_the_push_mode_example_loads_and_scrapes_the_shared_exporter(exporter_app, tmp_path):
    real_binary("prometheus")
    rule_files = render_rules(Settings.from_env({}), tmp_path / "rules", time_factor=TIME_FACTOR)
    with ServedApp(exporter_app) as shared:
        addresses = {"autonomy-exporter": shared.url[7:], "autonomy-receiver": f"127.0.0.1:{free_port()}"}
        with Beating({}, shared.url + "/api/v1/signals", pushed="CRO") as beating, \
                example_prometheus(tmp_path / "prometheus", "push-mode.yml", addresses, rule_files) as prometheus:
            rows = wait_until(lambda: prometheus.query('autonomy_agent_info{agent="CRO"}'), 60,
                              "the pushed agent scraped from the shared exporter")
            assert rows[0]["metric"]["job"] == "autonomy-exporter"
            assert wait_until(lambda: prometheus.query('up{job="autonomy-exporter"} == 1'), 30, "the exporter up")
            assert wait_until(lambda: prometheus.query('up{job="prometheus"} == 1'), 30, "Prometheus scraping itself")
            groups = requests.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
            names = {rule["name"] for group in groups for rule in group["rules"]}
            assert {"AgentSilent", "AutonomyExporterDown",
                    "agent:autonomy_agent_last_signal_age_seconds:silent"} <= names
        assert beating.errors == []
