"""The demo without Prometheus and Alertmanager: the fleet reports straight to the receiver (the pack's direct path)."""
from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Callable, TextIO

import requests

from autonomy.settings import Secret, Settings
from webhook_receiver.app import create_app, shutdown

from .drill_report import summary_table
from .drills import WAIT, DrillResult
from .fleet import DEMO_PRIORITY, SimulatedFleet, fleet_heartbeat
from .local_stack import ServedApp
from .polling import wait_until

# (drill, agent to fault, fault, fixable, agent whose incident answers, expected class and playbook)
DIRECT_DRILLS = (
    ("transient-timeout", "CMO", "timeout", True, "CMO", "TRANSIENT", "RestartAndRetryTransient"),
    ("directive-overlap", "CMO", "overlap", True, "CMO", "CONFLICT", "ResolveInterAgentConflict"),
    ("missing-secret", "Content", "missing-secret", False, "Content", "CONFIG", "FixConfig"),
    ("backlog-surge", "COO", "backlog", True, "COO", "CAPACITY", "RebalanceCapacity"),
)
NEEDS_ALERTMANAGER = ("dependency-down", "budget-spike", "silenced", "kill-switch", "duplicate-delivery")


def run_direct(out: TextIO) -> int:
    """Run what the direct path can show; the drills that need Prometheus or Alertmanager are skipped."""
    say: Callable[[str], None] = lambda text: print(text, file=out, flush=True)  # noqa: E731
    fleet = SimulatedFleet()
    token = Secret("AUTOREM_WEBHOOK_TOKEN", secrets.token_urlsafe(24))
    results: list[DrillResult] = []
    with tempfile.TemporaryDirectory(prefix="autonomy-direct-") as tmp, ServedApp(fleet.app) as fleet_server:
        settings = Settings.from_env({
            "AUTO_REMEDIATE": "true", "AUTOREM_ATTEMPT_BACKOFF_SECONDS": "1", "AUTOREM_ALERTMANAGER_URL": "", "AUTOREM_ACTIONS_BASE_URL": fleet_server.url,
            "AUTOREM_ESCALATION_URL": fleet_server.url + "/agents/CEO/escalations", "AUTOREM_PRIORITY": DEMO_PRIORITY,
            "AUTOREM_VERIFY_TIMEOUT_SECONDS": "4", "AUTOREM_VERIFY_INTERVAL_SECONDS": "0.2",
            "AUTOREM_AGENT_SILENT_SECONDS": "10", "AUTOREM_DATA_DIR": str(Path(tmp) / "receiver")})
        app = create_app({"SETTINGS": settings, "WEBHOOK_TOKEN": token,
                          "ENVIRON": {"AUTOREM_AGENT_TOKEN": fleet.action_token.reveal()}})
        try:
            with ServedApp(app) as receiver:
                def incidents(agent: str) -> list[dict]:
                    return requests.get(receiver.url + "/api/v1/incidents", params={"agent": agent},
                                        timeout=10).json()["incidents"]

                beat = fleet_heartbeat(fleet, receiver.url, token, interval=0.5).start()
                say(f"receiver {receiver.url} (direct signal path); fleet {fleet_server.url}")
                try:
                    for name, agent, fault, fixable, answers, cls, playbook in DIRECT_DRILLS:
                        say(f"[{name}] {fault} on {agent}")
                        t0 = time.time()
                        fleet.inject(agent, fault, fixable)
                        incident = wait_until(lambda: next((i for i in incidents(answers) if i["opened_at"] >= t0
                                                            and i["outcome"] in ("auto_resolved", "escalated")),
                                                           None), WAIT, f"{answers}'s incident to end")
                        outcome = "resolved" if incident["outcome"] == "auto_resolved" else "escalated"
                        mttr = round(incident["recovered_at"] - t0, 2) if incident.get("recovered_at") else None
                        ok = (incident["classification"], incident["playbook"]) == (cls, playbook)
                        results.append(DrillResult(name, ok, incident["classification"], incident["playbook"],
                                                   incident["attempts"], outcome, mttr, "direct signal path"))
                        fleet.clear(agent)
                        wait_until(lambda: all(i["state"] == "closed" for i in incidents(answers)), WAIT,
                                   f"{answers} to settle")
                finally:
                    beat.stop()
        finally:
            shutdown(app)
    results += [DrillResult(n, True, None, None, 0, "skipped", None, "needs Prometheus and Alertmanager")
                for n in NEEDS_ALERTMANAGER]
    say("\n" + summary_table(results))
    return 0 if all(r.passed for r in results) else 1
