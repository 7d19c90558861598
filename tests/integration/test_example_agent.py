"""The example agent (examples/worker_agent/), unmodified, against the real layer: remediated for a TIMEOUT, and
escalated when the layer asks it for a primitive it does not implement."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from flask import Flask, jsonify

from devstack.demo import TIME_FACTOR
from devstack.fleet import DEMO_PRIORITY
from devstack.layer_stack import LayerStack
from devstack.local_stack import ServedApp, free_port
from devstack.polling import wait_until
from tests.conftest import real_binary
from tests.integration.receiver_process import EscalationInbox

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO / "examples" / "worker_agent"


class Upstream:
    """The worker's upstream, on cue: answers, hangs once past the worker's timeout, or answers stale data."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls, self.mode = 0, "ok"
        self.released = threading.Event()
        self.app = Flask("upstream")
        self.app.add_url_rule("/input", view_func=self.answer)

    def answer(self):
        with self.lock:
            self.calls += 1
            mode = self.mode
            if mode == "hang-once":
                self.mode = "ok"
        if mode == "hang-once":
            self.released.wait(5)  # past the worker's 1 s timeout; freed at the end of the test at the latest
        return jsonify({"value": 1, "stale": mode == "stale"})

    def set(self, mode: str) -> None:
        with self.lock:
            self.mode = mode


def incidents(stack) -> list[dict]:
    return stack.receiver_call("GET", "/api/v1/incidents", params={"agent": "Worker"}).json()["incidents"]


def lineage(stack) -> list[dict]:
    return stack.receiver_call("GET", "/api/v1/lineage", params={"agent": "Worker"}).json()["entries"]


def test_the_example_agent_is_remediated_for_a_timeout_and_escalated_for_an_unimplemented_primitive(tmp_path):
    real_binary("prometheus")
    real_binary("alertmanager")
    upstream, inbox = Upstream(), EscalationInbox()
    token, port = secrets.token_urlsafe(24), free_port()
    with ServedApp(upstream.app) as upstream_server, ServedApp(inbox.app) as inbox_server:
        env = {"AUTOREM_AGENT_TOKEN": token, "AUTOREM_ESCALATION_URL": inbox_server.url + "/escalations",
               "AUTOREM_PRIORITY": DEMO_PRIORITY}
        with LayerStack(tmp_path / "layer", f"http://127.0.0.1:{port}", env=env, time_factor=TIME_FACTOR) as stack:
            # The example's own config file, with this test's ports: the code runs as shipped.
            connection = tmp_path / "connection.json"
            connection.write_text(json.dumps({"exporterUrl": stack.exporter.url, "pushToken": stack.push_token.reveal(),
                                              "agentToken": token}))
            config = yaml.safe_load((EXAMPLE / "worker.yaml").read_text())
            config.update(listen={"host": "127.0.0.1", "port": port}, connection=str(connection), heartbeatSeconds=0.5)
            config["upstream"]["url"] = upstream_server.url + "/input"
            (tmp_path / "worker.yaml").write_text(yaml.safe_dump(config))
            log = (tmp_path / "worker.log").open("w")
            worker = subprocess.Popen([sys.executable, str(EXAMPLE / "worker.py"), str(tmp_path / "worker.yaml")],
                                      cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: stack.prometheus.query('autonomy_agent_info{agent="Worker"}'), 60,
                           "Prometheus to see the worker")
                wait_until(lambda: upstream.calls >= 60, 60, "the worker to have done 60 tasks")

                upstream.set("hang-once")
                wait_until(lambda: any(i["outcome"] == "auto_resolved" for i in incidents(stack)), 120,
                           "the worker's TIMEOUT to be remediated")
                [resolved] = [i for i in incidents(stack) if i["outcome"] == "auto_resolved"]
                assert (resolved["classification"], resolved["playbook"]) == ("TRANSIENT", "RestartAndRetryTransient")
                attempt = next(e for e in lineage(stack) if e["event"] == "auto_remediation" and e["ok"])
                assert [(s["action"], s["status"]) for s in attempt["steps"]] == [("restartAgent", 200),
                                                                               ("retryLastTask", 200)]
                assert all(s["idempotency_key"].startswith(resolved["id"] + ":") for s in attempt["steps"])
                wait_until(lambda: all(i["state"] == "closed" for i in incidents(stack)),
                           60, "the worker's incident to close")

                upstream.set("stale")
                wait_until(lambda: any(i["state"] == "escalated" for i in incidents(stack)), 120,
                           "the stale input to be escalated")
                [escalated] = [i for i in incidents(stack) if i["state"] == "escalated"]
                assert (escalated["classification"], escalated["reason"]) == ("DATA_DEP", "ActionNotImplemented")
                failed = next(e for e in lineage(stack) if e["event"] == "auto_remediation" and not e["ok"])
                assert failed["verification"]["reason"] == \
                    "step refreshCache failed: agent does not implement refreshCache"
                assert [p["reason"] for p in inbox.for_agent("Worker")] == ["ActionNotImplemented"]
                assert token not in json.dumps(lineage(stack))
            finally:
                upstream.released.set()
                worker.terminate()
                worker.wait(timeout=30)
                log.close()
