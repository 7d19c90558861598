"""Crashes and faults around the closed loop, with the receiver as a real process.

Every test runs `autonomy receiver` as a child process (from the venv's script, configured through the
AUTOREM_* environment) beside the real Prometheus and Alertmanager binaries, an exporter fed by small
agents, and an escalation inbox (tests/integration/receiver_process.py). The agents' action endpoints
block, hang or fail on cue, so each test knows where the receiver is in a playbook when it pulls the plug.
No sleeps: every wait is a deadline on an observable condition.
"""
import json
import signal
import subprocess
import threading

import pytest
import requests
import yaml

from devstack.checkout import PLAYBOOKS_FILE
from devstack.polling import wait_until
from tests.conftest import real_binary
from tests.integration.receiver_process import (
    AUTONOMY_SCRIPT,
    ProcessLayer,
    ReceiverProcess,
    ScriptedAgents,
    webhook_notification,
)

pytestmark = pytest.mark.integration
AGENTS = {"CEO": "Executive", "CRO": "Revenue", "CMO": "Marketing", "COO": "Operations", "Content": "Content"}
SETTLE = 90.0  # a ceiling for waits that take a second or two on an idle machine
FLOOD_LIMIT = 100  # webhooks posted at most while the receiver is killed
FLOOD_BEFORE_KILL = 20  # acknowledged webhooks before the kill


def _binaries() -> None:
    real_binary("prometheus")
    real_binary("alertmanager")


def _incident_in(rec: ReceiverProcess, agent: str, *states: str) -> dict | None:
    found = [i for i in rec.incidents(agent) if i["state"] in states]
    return found[0] if found else None


def _events(rec: ReceiverProcess, agent: str, event: str) -> list[dict]:
    return [e for e in rec.lineage(agent)["entries"] if e["event"] == event]


def _ready(rec: ReceiverProcess) -> tuple[int, dict]:
    reply = rec.call("GET", "/readyz")
    return reply.status_code, reply.json()


class WebhookFlood:
    """Posts Alertmanager notifications, one new agent each, one after another, until stopped or refused.

    `acked` keeps the body of every 200 answer: the receiver says it committed those to its ledger.
    """

    def __init__(self, rec: ReceiverProcess, limit: int = FLOOD_LIMIT):
        self.rec, self.limit = rec, limit
        self.acked: list[dict] = []
        self.other: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-flood", daemon=True)

    def _run(self) -> None:
        for n in range(self.limit):
            if self._stop.is_set():
                return
            try:
                reply = self.rec.call("POST", "/api/v1/alerts", json=webhook_notification(f"Flood{n:03d}"))
            except requests.RequestException as exc:  # the receiver is gone: nothing more can be acknowledged
                self.other.append(type(exc).__name__)
                return
            with self._lock:
                if reply.status_code == 200:
                    self.acked.append(reply.json())
                else:
                    self.other.append(f"HTTP {reply.status_code}")

    def start(self) -> "WebhookFlood":
        self._thread.start()
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


# ---------------------------------------------------------------------------------------------------------
# 4. The receiver is SIGKILLed in the middle of a playbook and started again on the same data directory.
# ---------------------------------------------------------------------------------------------------------

TORN_TEXT = b'{"ts":"2099-01-01T00:00:00.000Z","actor":"ChiefOfStaff","event":"auto_remediation","agent":"CM'


@pytest.fixture(scope="class")
def crash(tmp_path_factory):
    """CMO's TRANSIENT alert runs RestartAndRetryTransient; its restartAgent call blocks; meanwhile webhooks
    stream in; the receiver is SIGKILLed; a torn lineage line is appended by hand; the receiver starts again
    on the same port and data directory; once its re-attempt reaches restartAgent, the endpoint is released."""
    _binaries()
    agents = ScriptedAgents(AGENTS)
    release = agents.block("CMO", "restartAgent", calls=(1, 2))
    with ProcessLayer(tmp_path_factory.mktemp("crash"), agents) as layer:
        rec = layer.receiver
        seen: dict = {}
        agents.set("CMO", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
        agents.wait_entered("CMO", "restartAgent", 1)  # the receiver is inside the playbook now
        [incident] = rec.incidents("CMO")
        seen["incident_id"] = incident["id"]

        flood = WebhookFlood(rec).start()
        wait_until(lambda: flood.count() >= FLOOD_BEFORE_KILL, SETTLE, f"{FLOOD_BEFORE_KILL} acknowledged webhooks")
        seen["exit_code"] = rec.kill()
        flood.stop()
        seen["acked"] = list(flood.acked)
        seen["flood_other"] = list(flood.other)
        with rec.stopped_store() as store:  # what the store held at the kill, and every notification it stored
            seen["at_kill"] = store.get(incident["id"])
            seen["stored_at_kill"] = {n.id for n in store.notifications(limit=1_000_000)}

        raw = rec.lineage_path.read_bytes() if rec.lineage_path.exists() else b""
        seen["lineage_at_kill"] = raw
        with open(rec.lineage_path, "ab") as f:  # a write cut short: no closing brace, no newline
            f.write(TORN_TEXT)
        seen["torn_line"] = raw.count(b"\n") + 1

        rec.start()
        agents.wait_entered("CMO", "restartAgent", 2)  # the restarted receiver re-attempts the playbook
        release.set()
        wait_until(lambda: _incident_in(rec, "CMO", "closed"), SETTLE, "CMO's incident to be resolved and closed")
        yield layer, seen


class TestReceiverKilledMidPlaybook:
    def test_the_restarted_receiver_re_attempts_the_interrupted_incident_and_resolves_it(self, crash):
        layer, seen = crash
        rec, agents = layer.receiver, layer.agents
        assert seen["exit_code"] == -signal.SIGKILL
        # At the kill the ledger held the incident mid-attempt.
        at_kill = seen["at_kill"]
        assert (at_kill.state, at_kill.attempts, at_kill.classification, at_kill.playbook) == (
            "remediating", 1, "TRANSIENT", "RestartAndRetryTransient")

        [incident] = rec.incidents("CMO")  # the same incident; the restart opened no second one
        assert incident["id"] == seen["incident_id"]
        assert (incident["state"], incident["outcome"]) == ("closed", "auto_resolved")
        # The attempt the kill cut off never finished, so it is run again under its own number: it is not
        # counted twice, and the one playbook run is recorded once.
        assert incident["attempts"] == 1
        assert incident["playbooks_run"] == ["RestartAndRetryTransient"]
        [line] = _events(rec, "CMO", "auto_remediation")
        assert (line["attempt"], line["ok"], line["incident_id"]) == (1, True, incident["id"])
        assert [s["action"] for s in line["steps"]] == ["restartAgent", "retryLastTask"]
        assert line["verification"]["checks"] == {"lastTaskSucceeded": True}
        assert agents.entered[("CMO", "restartAgent")] == 2  # one cut off by the kill, one re-attempt
        assert agents.entered[("CMO", "retryLastTask")] == 1
        assert rec.call("GET", "/healthz").status_code == 200

    def test_every_webhook_acknowledged_before_the_kill_is_in_the_ledger(self, crash):
        layer, seen = crash
        rec = layer.receiver
        acked = seen["acked"]
        assert len(acked) >= FLOOD_BEFORE_KILL
        # No webhook was refused; at most the one in flight at the kill got no answer.
        assert not [o for o in seen["flood_other"] if o.startswith("HTTP")], seen["flood_other"]
        assert len(seen["flood_other"]) <= 1, seen["flood_other"]

        stored = seen["stored_at_kill"]
        missing_notifications = {r["notification"] for r in acked} - stored
        assert not missing_notifications, f"acknowledged but not stored: {sorted(missing_notifications)}"

        opened = [incident_id for r in acked for incident_id in r["opened"]]
        assert len(opened) == len(acked)  # each notification named a new agent
        listed = {i["id"]: i for i in rec.incidents()}
        assert not set(opened) - set(listed), "acknowledged incidents missing after the restart"
        # The restarted receiver also finished those still queued at the kill: none of their alerts fires
        # in Alertmanager, so each is closed at the gate.
        wait_until(lambda: all(i["state"] == "closed" for i in rec.incidents() if i["id"] in set(opened)), SETTLE,
                   "every acknowledged incident to be handled after the restart")

    def test_a_torn_last_lineage_line_is_skipped_reported_and_the_next_line_is_readable(self, crash):
        layer, seen = crash
        rec = layer.receiver
        torn = seen["torn_line"]
        # The file, then the store, then the file again: the receiver may still be writing (its sweeper).
        before = rec.lineage_path.read_bytes()
        read = rec.lineage()  # from the store, which never held the torn line: only its file did
        assert read["skipped_ids"] == []

        lines = rec.lineage_path.read_bytes().split(b"\n")
        assert lines[-1] == b""  # every line, the torn one included, is now ended
        lines = lines[:-1]
        assert lines[torn - 1] == TORN_TEXT  # repaired by ending it, never by rewriting it
        after = json.loads(lines[torn])  # the line written after the restart starts on a line of its own
        assert after in read["entries"]
        stored = [json.dumps(e, sort_keys=True) for e in read["entries"]]
        in_file = [json.dumps(json.loads(line), sort_keys=True) for n, line in enumerate(lines, 1) if n != torn]
        assert set(stored) <= set(in_file), "an entry in the store that its receiver's file lacks"
        # A line goes to the file first, then to the store: the kill may have fallen between the two for the
        # lines its workers were writing (a decision not acknowledged, made again after the restart). Every
        # line written since the restart is in the store.
        written_before = [json.dumps(json.loads(line), sort_keys=True) if n != torn else None
                          for n, line in enumerate(before.split(b"\n")[:-1], 1)]
        since_restart = set(written_before[torn:])

        def stored_now() -> set[str]:  # a line read from the file a moment before may be committing still
            return {json.dumps(e, sort_keys=True) for e in rec.lineage()["entries"]}
        wait_until(lambda: since_restart <= stored_now(), SETTLE, "every line since the restart in the store")
        file_only = set(written_before[:torn - 1]) - set(stored)
        assert len(file_only) <= 4, file_only  # at most one per worker (AUTOREM_WORKERS' default)
        assert "autonomy_lineage_torn_lines 1.0" in rec.call("GET", "/metrics").text

        cli = subprocess.run([str(AUTONOMY_SCRIPT), "lineage", "--data-dir", str(rec.data_dir)],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0
        assert f"{rec.lineage_path}:{torn}: torn or unreadable line skipped" in cli.stderr
        assert len(cli.stdout.splitlines()) == len(lines) - 1

    def test_the_lineage_and_the_ledger_stay_consistent_across_the_kill(self, crash):
        layer, seen = crash
        rec = layer.receiver
        raw = seen["lineage_at_kill"]
        # The kill tore nothing: each line the dead receiver wrote is whole.
        assert raw == b"" or raw.endswith(b"\n")
        assert all(isinstance(json.loads(line), dict) for line in raw.splitlines())

        incidents = {i["id"]: i for i in rec.incidents()}
        entries = rec.lineage()["entries"]
        assert entries
        assert not [e for e in entries if e.get("incident_id") not in incidents]
        runs: dict[str, list[int]] = {}
        for e in entries:
            if e["event"] == "auto_remediation":
                runs.setdefault(e["incident_id"], []).append(e["attempt"])
        for incident_id, attempts in runs.items():
            assert len(attempts) == len(set(attempts)), f"{incident_id}: an attempt recorded twice"
            assert max(attempts) <= incidents[incident_id]["attempts"]

    def test_every_attempt_the_ledger_counts_has_its_lineage_line_after_the_kill(self, crash):
        layer, seen = crash
        rec = layer.receiver
        incident = rec.incident(seen["incident_id"])
        # The KPI lineage_coverage's own definition (autonomy/demo.py): every attempt the ledger counts has
        # an auto_remediation line, the one the kill cut off included.
        expected = {(incident["id"], n) for n in range(1, incident["attempts"] + 1)}
        written = {(e.get("incident_id"), e.get("attempt")) for e in rec.lineage("CMO")["entries"]
                   if e["event"] == "auto_remediation"}
        assert expected <= written, f"attempts without a lineage line: {sorted(n for _, n in expected - written)}"


# ---------------------------------------------------------------------------------------------------------
# 5. Faults around the loop: an upstream down, action endpoints that hang or fail.
# ---------------------------------------------------------------------------------------------------------

def test_prometheus_down_during_verification_is_recorded_then_the_incident_escalates(tmp_path):
    """Prometheus stops while the playbook's last step is in flight, so each verification poll of the attempt
    meets it down. (The agent stays broken, so no resolution can reach Alertmanager first.)"""
    _binaries()
    agents = ScriptedAgents(AGENTS)
    agents.unfixable.add("CMO")
    release = agents.block("CMO", "retryLastTask", calls=(1,))
    env = {"AUTOREM_VERIFY_TIMEOUT_SECONDS": "2", "AUTOREM_MAX_ATTEMPTS": "2"}
    with ProcessLayer(tmp_path, agents, env) as layer:
        rec = layer.receiver
        agents.set("CMO", status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
        agents.wait_entered("CMO", "retryLastTask", 1)  # restartAgent ran; the last step is in flight
        layer.stop_prometheus()
        release.set()

        incident = wait_until(lambda: _incident_in(rec, "CMO", "escalated"), SETTLE, "CMO's incident to escalate")
        assert incident["attempts"] == 2 and incident["reason"] == "AutoRemediationFailed"
        attempts = _events(rec, "CMO", "auto_remediation")
        assert [(e["attempt"], e["ok"]) for e in attempts] == [(1, False), (2, False)]
        for e in attempts:
            assert [(s["action"], s["ok"]) for s in e["steps"]] == [("restartAgent", True), ("retryLastTask", True)]
            assert e["verification"]["reason"].startswith("prometheus unreachable: "), e["verification"]
            assert e["verification"]["polls"] >= 1
        [escalation] = _events(rec, "CMO", "escalation")
        assert escalation["reason"] == "AutoRemediationFailed"
        [payload] = wait_until(lambda: layer.inbox.for_agent("CMO"), SETTLE, "the escalation payload")
        assert payload["incidentId"] == incident["id"]
        assert payload["lastTwoAttempts"] == ["RestartAndRetryTransient", "RestartAndRetryTransient"]
        assert _events(rec, "CMO", "escalation_delivery") == []  # Alertmanager and the inbox were up

        assert rec.alive()
        assert rec.call("GET", "/healthz").status_code == 200
        status, ready = _ready(rec)
        assert status == 503 and ready["missing"] == ["prometheus"] and ready["checks"]["prometheus"] is False


def test_alertmanager_down_when_escalating_is_recorded_and_the_payload_still_arrives(tmp_path):
    """Content's secret is missing for good (checkSecrets answers 409). The second and last attempt passes
    its gates while Alertmanager is up; Alertmanager stops while that attempt's step is in flight."""
    _binaries()
    agents = ScriptedAgents(AGENTS)
    refused = ({"done": False, "missing": ["API_BASE"]}, 409)
    release = agents.block("Content", "checkSecrets", calls=(2,), answer=refused)
    with ProcessLayer(tmp_path, agents) as layer:
        rec = layer.receiver
        agents.set("Content", status="error", errorCode="CONFIG_MISSING", configHealthy=False)
        agents.wait_entered("Content", "checkSecrets", 2)
        layer.stop_alertmanager()
        release.set()

        [delivery] = wait_until(lambda: _events(rec, "Content", "escalation_delivery"), SETTLE,
                                "the failed delivery to be recorded")
        assert delivery["reason"].startswith("alertmanager unreachable: "), delivery
        assert "escalation endpoint" not in delivery["reason"]  # the payload itself was delivered
        # The ledger takes the delivery problem just after the lineage line.
        incident = wait_until(lambda: next((i for i in rec.incidents("Content") if "delivery:" in (i["reason"] or "")),
                                           None), SETTLE, "the delivery problem in the ledger")
        assert incident["id"] == delivery["incident_id"]
        assert (incident["state"], incident["attempts"]) == ("escalated", 2)
        assert incident["reason"].startswith("AutoRemediationFailed; delivery: alertmanager unreachable")

        attempts = _events(rec, "Content", "auto_remediation")
        assert [(e["attempt"], e["ok"]) for e in attempts] == [(1, False), (2, False)]
        for e in attempts:
            assert [(s["action"], s["status"], s["error"]) for s in e["steps"]] == [("checkSecrets", 409, "HTTP 409")]
            assert e["verification"]["reason"] == "step checkSecrets failed: HTTP 409"
        [escalation] = _events(rec, "Content", "escalation")
        assert escalation["reason"] == "AutoRemediationFailed"
        [payload] = layer.inbox.for_agent("Content")
        assert payload == escalation["payload"]
        assert payload["incidentId"] == incident["id"]
        assert payload["lineageRef"] == f"decision_lineage.jsonl#{escalation['ts']}"

        assert rec.alive()
        assert rec.call("GET", "/healthz").status_code == 200
        status, ready = _ready(rec)
        assert status == 503 and ready["missing"] == ["alertmanager"] and ready["checks"]["alertmanager"] is False


ACTION_TIMEOUT = 1  # seconds, actions.timeoutSeconds of the test's playbooks.yaml
STEP_TRIES = 3  # actions.retry.attempts


@pytest.fixture(scope="class")
def faulty_actions(tmp_path_factory):
    """A copy of playbooks.yaml with a short action timeout and quick retries; CMO's restartAgent hangs
    (far longer than the timeout) and COO's answers 500; both agents fail with TIMEOUT at once."""
    _binaries()
    workdir = tmp_path_factory.mktemp("faulty-actions")
    doc = yaml.safe_load(PLAYBOOKS_FILE.read_text())
    doc["actions"]["timeoutSeconds"] = ACTION_TIMEOUT
    doc["actions"]["retry"] = {"attempts": STEP_TRIES, "backoffSeconds": 0.1, "maxBackoffSeconds": 0.2, "jitter": 0}
    playbooks = workdir / "playbooks.yaml"
    playbooks.write_text(yaml.safe_dump(doc, sort_keys=False))
    agents = ScriptedAgents(AGENTS)
    agents.hang("CMO", "restartAgent")
    agents.fail("COO", "restartAgent", 500)
    env = {"AUTOREM_PLAYBOOKS_FILE": str(playbooks), "AUTOREM_MAX_ATTEMPTS": "2"}
    with ProcessLayer(workdir, agents, env) as layer:
        rec = layer.receiver
        for agent in ("CMO", "COO"):
            agents.set(agent, status="error", errorCode="TIMEOUT", lastTaskSucceeded=False)
        agents.wait_entered("CMO", "restartAgent", 1)
        # While a worker waits on the hung endpoint the receiver still answers.
        seen = {"healthz_during_hang": rec.call("GET", "/healthz").status_code,
                "webhook_during_hang": rec.call("POST", "/api/v1/alerts",
                                                json=webhook_notification("CMO")).status_code}
        yield layer, seen


class TestActionEndpointFaults:
    def _escalated_after_failed_steps(self, layer, agent: str, status, error: str) -> dict:
        rec, agents = layer.receiver, layer.agents
        incident = wait_until(lambda: _incident_in(rec, agent, "escalated"), SETTLE, f"{agent}'s escalation")
        assert (incident["attempts"], incident["reason"]) == (2, "AutoRemediationFailed")
        [escalation] = _events(rec, agent, "escalation")
        assert escalation["incident_id"] == incident["id"]
        attempts = _events(rec, agent, "auto_remediation")
        assert [(e["attempt"], e["ok"]) for e in attempts] == [(1, False), (2, False)]
        for e in attempts:
            [step] = e["steps"]  # the playbook stops at the failed step: retryLastTask never runs
            assert (step["action"], step["ok"], step["status"], step["attempts"], step["error"]) == (
                "restartAgent", False, status, STEP_TRIES, error)
            assert step["url"].endswith(f"/agents/{agent}/actions/restartAgent")
            assert e["verification"]["reason"] == f"step restartAgent failed: {error}"
        wait_until(lambda: agents.entered[(agent, "restartAgent")] >= 2 * STEP_TRIES, SETTLE,
                   f"every call to {agent}'s restartAgent to arrive")
        assert agents.entered[(agent, "restartAgent")] == 2 * STEP_TRIES  # tries per step x attempts
        assert agents.entered[(agent, "retryLastTask")] == 0
        [payload] = wait_until(lambda: layer.inbox.for_agent(agent), SETTLE, f"{agent}'s escalation payload")
        assert payload["incidentId"] == incident["id"]
        assert payload["lastTwoAttempts"] == ["RestartAndRetryTransient", "RestartAndRetryTransient"]
        assert rec.alive() and rec.call("GET", "/healthz").status_code == 200
        assert _ready(rec)[0] == 200
        return attempts

    def test_an_action_that_hangs_past_the_timeout_is_retried_then_escalated(self, faulty_actions):
        layer, seen = faulty_actions
        assert seen == {"healthz_during_hang": 200, "webhook_during_hang": 200}
        attempts = self._escalated_after_failed_steps(layer, "CMO", None, f"timed out after {ACTION_TIMEOUT}s")
        for e in attempts:
            assert e["steps"][0]["duration_s"] >= STEP_TRIES * ACTION_TIMEOUT

    def test_an_action_that_answers_500_is_retried_then_escalated(self, faulty_actions):
        layer, _ = faulty_actions
        self._escalated_after_failed_steps(layer, "COO", 500, "HTTP 500")
