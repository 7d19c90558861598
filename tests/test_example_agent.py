"""The example agent and the demo agree: its name, domain and port are the ones the demo's playbooks route, and
the connection file the demo writes holds what the worker reads."""
import json
import stat
from pathlib import Path
from types import SimpleNamespace

import yaml

from autonomy.settings import Secret
from devstack.demo import EXAMPLE_AGENT, demo_playbooks, write_connection
from devstack.fleet import SimulatedFleet
from webhook_receiver.playbooks import load_playbooks

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "worker_agent"


def test_the_example_config_is_the_agent_the_demo_routes():
    config = yaml.safe_load((EXAMPLE / "worker.yaml").read_text())
    assert (config["name"], config["domain"], config["listen"]["port"]) == EXAMPLE_AGENT
    assert (EXAMPLE / config["connection"]).resolve() == (EXAMPLE.parent.parent / ".autonomy-demo" /
                                                          "connection.json").resolve()


def test_the_demo_playbooks_send_the_workers_actions_to_its_port(tmp_path):
    playbooks = load_playbooks(demo_playbooks(tmp_path), "http://127.0.0.1:1", env={"AUTOREM_AGENT_TOKEN": "t"})
    name, domain, port = EXAMPLE_AGENT
    assert playbooks.url_for("restartAgent", name) == f"http://127.0.0.1:{port}/agents/{name}/actions/restartAgent"
    assert playbooks.domain_of(name) == domain
    assert playbooks.url_for("restartAgent", "CMO").startswith("http://127.0.0.1:1/")


def test_the_connection_file_holds_what_the_worker_reads_for_this_user_only(tmp_path):
    fleet = SimulatedFleet()
    stack = SimpleNamespace(exporter=SimpleNamespace(url="http://127.0.0.1:9817"),
                            receiver=SimpleNamespace(url="http://127.0.0.1:9818"),
                            push_token=Secret("AUTOREM_EXPORTER_TOKEN", "push-t"))
    path = write_connection(stack, fleet, tmp_path / "demo" / "connection.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["exporterUrl"] == "http://127.0.0.1:9817" and doc["pushToken"] == "push-t"
    assert doc["agentToken"] == fleet.action_token.reveal()
    worker = (EXAMPLE / "worker.py").read_text()
    assert all(f'connection["{key}"]' in worker for key in ("exporterUrl", "pushToken", "agentToken"))
