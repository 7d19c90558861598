"""Failing safe, on the real Alertmanager and the receiver as a real process: silences on the direct path are
decided by Alertmanager itself (UI-style multi-label silences, RE2 regexes, negative matchers), and a second
receiver on the same data directory refuses to start."""
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from autonomy.settings import Secret, Settings
from devstack.local_stack import AlertmanagerProcess, ServedApp, free_port
from devstack.polling import wait_until
from devstack.stack_config import alertmanager_config
from tests.conftest import real_binary
from tests.engine_harness import iso
from tests.integration.receiver_process import ReceiverProcess
from tests.integration.small_agents import SmallAgents
from webhook_receiver.app import create_app, shutdown

pytestmark = pytest.mark.integration
AUTONOMY = str(Path(sys.executable).with_name("autonomy"))
AGENTS = {"CRO": "Revenue", "CMO": "Marketing", "Bot1": "Operations", "Alpha": "Content", "Err": "Operations",
          "Free": "Operations"}


def signal(agent: str, **changes) -> dict:
    doc = {"agent": agent, "domain": AGENTS[agent], "status": "healthy", "lastReport": "ok",
           "metrics": {"successRate": 0.99, "alignment": 0.99, "backlogAgeMinutes": 1, "costBurnRatePerHour": 0.1},
           "context": {}, "ts": iso(time.time())}
    for key, value in changes.items():
        (doc["context"] if key == "errorCode" else doc["metrics"] if key in doc["metrics"] else doc)[key] = value
    return doc


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """A receiver on the direct signal path whose silences come from a real Alertmanager, and small agents."""
    real_binary("alertmanager")
    work = tmp_path_factory.mktemp("direct-silences")
    token = work / "token"
    token.write_text("unused-webhook-token")
    agents = SmallAgents(AGENTS)
    with ServedApp(agents.app) as agents_server, AlertmanagerProcess(
            work / "alertmanager", alertmanager_config(f"http://127.0.0.1:{free_port()}/api/v1/alerts", token,
                                                       1 / 30)) as am:
        settings = Settings.from_env({
            "AUTO_REMEDIATE": "true", "AUTOREM_ALERTMANAGER_URL": am.url,
            "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}", "AUTOREM_ACTIONS_BASE_URL": agents_server.url,
            "AUTOREM_VERIFY_TIMEOUT_SECONDS": "1", "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.1",
            "AUTOREM_MAX_ATTEMPTS": "1", "AUTOREM_DATA_DIR": str(work / "receiver")})
        webhook = Secret("AUTOREM_WEBHOOK_TOKEN", secrets.token_urlsafe(24))
        app = create_app({"SETTINGS": settings, "WEBHOOK_TOKEN": webhook, "START_ENGINE": False,
                          "ENVIRON": {"AUTOREM_AGENT_TOKEN": agents.token}})
        try:
            yield app, am, agents, {"Authorization": f"Bearer {webhook.reveal()}"}
        finally:
            shutdown(app)


def silence(am, *matchers) -> str:
    now = datetime.now(timezone.utc)
    body = {"matchers": [{"name": n, "value": v, "isRegex": regex, "isEqual": equal} for n, v, regex, equal in matchers],
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "sre@example.invalid", "comment": "test"}
    reply = requests.post(am.url + "/api/v2/silences", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()["silenceID"]


def remediate(direct, doc) -> dict:
    app, _, _, headers = direct
    web = app.test_client()
    [incident_id] = web.post("/api/v1/signals", json=doc, headers=headers).get_json()["opened"]
    engine = app.extensions["autonomy_receiver"].engine
    engine.process(incident_id)
    return app.extensions["autonomy_receiver"].store.get(incident_id).as_dict()


def test_alertmanager_decides_silences_on_the_direct_path_as_it_does_for_its_own_alerts(direct):
    app, am, agents, _ = direct
    # What the Alertmanager UI creates from an alert: agent and alertname.
    ui = silence(am, ("agent", "CRO", False, True), ("alertname", "AgentTransientError", False, True))
    other_alert = silence(am, ("agent", "CMO", False, True), ("alertname", "AgentConfigError", False, True))
    posix_class = silence(am, ("agent", "[[:alpha:]]+1", True, True))  # RE2, which Python's re does not know
    unicode_class = silence(am, ("agent", r"\pL+", True, True), ("autonomy_class", "CAPACITY", False, True))
    negative = silence(am, ("agent", "Free", False, False), ("alertname", "AgentStatusError", False, True))

    held = {
        "CRO": (remediate(direct, signal("CRO", status="error", errorCode="TIMEOUT")), ui),
        "Bot1": (remediate(direct, signal("Bot1", status="error", errorCode="TIMEOUT")), posix_class),
        "Alpha": (remediate(direct, signal("Alpha", backlogAgeMinutes=41)), unicode_class),
        "Err": (remediate(direct, signal("Err", status="error")), negative),
    }
    for agent, (incident, silence_id) in held.items():
        assert incident["state"] == "skipped" and incident["state_reason"] == "silenced", (agent, incident)
        assert silence_id in incident["reason"], agent
        assert not [c for c in agents.call_log if c[0] == agent], agent

    # Silences that do not match are not honoured: a silence of another alertname, a negative matcher's exception.
    for agent, doc in (("CMO", signal("CMO", status="error", errorCode="TIMEOUT")), ("Free", signal("Free", status="error"))):
        incident = remediate(direct, doc)
        assert incident["state_reason"] != "silenced", (agent, incident)
        assert [c[1] for c in agents.call_log if c[0] == agent][:1] == ["restartAgent"], agent
    assert other_alert

    # The probes notify nobody and are resolved at once: nothing of them stays active in Alertmanager.
    def active_probes():
        alerts = requests.get(am.url + "/api/v2/alerts", params={"filter": 'autonomy_probe="true"'}, timeout=10)
        return [a for a in alerts.json() if a["status"]["state"] == "active"]
    wait_until(lambda: not active_probes(), 30, "the probes to be resolved")


def test_a_second_receiver_on_the_same_data_directory_refuses_to_start_naming_the_holder(tmp_path):
    env = {"AUTOREM_WEBHOOK_TOKEN": secrets.token_urlsafe(24), "AUTOREM_ALERTMANAGER_URL": "",
           "AUTOREM_AGENT_TOKEN": secrets.token_urlsafe(24),
           "AUTOREM_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}
    first = ReceiverProcess(tmp_path / "data", env, tmp_path / "first.log").start()
    try:
        second_env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOREM_", "AUTO_REMEDIATE"))}
        second_env.update(env)
        done = subprocess.run([AUTONOMY, "receiver", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
                              capture_output=True, text=True, timeout=60, env=second_env)
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line == (f"autonomy receiver: {tmp_path / 'data'}: already in use by another receiver "
                        f"(pid {first.process.pid}); one receiver per data directory")
        assert requests.get(first.url + "/healthz", timeout=10).status_code == 200  # the first one carries on
    finally:
        first.stop()
