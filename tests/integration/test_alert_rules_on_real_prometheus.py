"""Every condition of the alert rules fires on the real Prometheus, fed by the exporter."""
import itertools
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests

from autonomy.settings import Settings
from devstack.local_stack import PrometheusProcess, ServedApp, free_port
from devstack.polling import wait_until
from devstack.rule_render import render_rules
from devstack.stack_config import prometheus_config
from tests.conftest import TOKEN, real_binary

pytestmark = pytest.mark.integration
TIME_FACTOR = 1 / 30  # 1 s evaluations: `for: 30s` becomes 1 s, `for: 2m` 4 s, silence 120 s -> 4 s


def signal(agent, *, status="healthy", success=0.99, alignment=0.99, backlog=1, cost=0.1, context=None, ts=None):
    return {"agent": agent, "status": status, "lastReport": "integration",
            "metrics": {"successRate": success, "alignment": alignment, "backlogAgeMinutes": backlog,
                        "costBurnRatePerHour": cost},
            "context": context or {}, "ts": (ts or datetime.now(timezone.utc)).isoformat()}


def fleet():
    """One agent per condition, each signal built to cause exactly its alerts."""
    return [
        signal("CMO", status="error", success=0.80,
               context={"errorCode": "TIMEOUT", "directiveId": "D-1", "conflictId": "C-1"}),
        signal("CRO", alignment=0.5, context={"directiveId": "D-1"}),
        signal("COO", backlog=41, context={"queueDepth": 9}),
        signal("Content", status="degraded", context={"errorCode": "STALE_DATA", "dependencies": ["MarketIntel"]}),
        signal("MarketIntel", status="error", context={"errorCode": "OTHER"}),
        signal("CEO", cost=2.0, context={"errorCode": "CONFIG_MISSING"}),
        signal("Healthy", context={"dependencies": ["CRO"], "directiveId": "D-2"}),
    ]


RECEIVER_METRICS = """\
# TYPE autonomy_remediation_enabled gauge
autonomy_remediation_enabled 0
# TYPE autonomy_agent_state gauge
autonomy_agent_state{{agent="CMO",autonomy_agent_state="escalated"}} 1
autonomy_agent_state{{agent="CRO",autonomy_agent_state="escalated"}} 1
# TYPE autonomy_agent_state_reason gauge
autonomy_agent_state_reason{{agent="CMO",reason="attempts_exhausted"}} 1
autonomy_agent_state_reason{{agent="CRO",reason="silenced"}} 1
# TYPE autonomy_escalations_total counter
autonomy_escalations_total{{reason="AutoRemediationFailed"}} {escalations}
"""
SCRAPES = itertools.count(1)


def fake_receiver_metrics(environ, start_response):
    # An escalation a scrape: AutonomyEscalationsRaised keeps firing while the 15-minute hold of
    # AutonomyIncidentHeld runs out.
    start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
    return [RECEIVER_METRICS.format(escalations=next(SCRAPES)).encode()]


EXPECTED = {
    ("AgentSuccessRatioBelowSLO", "CMO"), ("AgentAlignmentBelowSLO", "CRO"),
    ("AgentBacklogAgeAboveSLO", "COO"), ("AgentQueueDepthHigh", "COO"),
    ("AgentTransientError", "CMO"), ("AgentDataInputError", "Content"), ("AgentConfigError", "CEO"),
    ("AgentStatusError", "CMO"), ("AgentStatusError", "MarketIntel"), ("AgentDegraded", "Content"),
    ("AgentConflictReported", "CMO"),
    ("DirectiveClaimedByMultipleAgents", "CMO"), ("DirectiveClaimedByMultipleAgents", "CRO"),
    ("AgentDependencyFailing", "Content"), ("AgentSilent", "Ghost"),
    ("FleetBudgetProjectedOverCap", "fleet"),
    ("Watchdog", "autonomy-layer"), ("AutonomyReceiverDown", "autonomy-layer"),
    ("AutonomyRemediationDisabled", "autonomy-layer"),
    ("AutonomyEscalationOpen", "CMO"), ("AutonomyIncidentHeld", "CRO"), ("AutonomyEscalationsRaised", "autonomy-layer"),
}


def firing(prometheus):
    alerts = requests.get(prometheus.url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("agent")): a for a in alerts if a["state"] == "firing"}


def test_each_condition_fires_on_real_prometheus_for_the_signal_that_causes_it(exporter_app, tmp_path):
    real_binary("prometheus")
    settings = Settings.from_env({"AUTOREM_REMEDIATION_OFF_ALERT_SECONDS": "60"})
    rule_files = render_rules(settings, tmp_path / "rules", time_factor=TIME_FACTOR)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stop = threading.Event()

    with ServedApp(exporter_app) as exporter, ServedApp(fake_receiver_metrics) as receiver:
        url = exporter.url + "/api/v1/signals"
        old = datetime.now(timezone.utc) - timedelta(hours=1)
        assert requests.post(url, json=signal("Ghost", ts=old), headers=headers, timeout=10).ok

        def heartbeat():
            while not stop.is_set():
                requests.post(url, json=fleet(), headers=headers, timeout=10).raise_for_status()
                stop.wait(0.5)

        pusher = threading.Thread(target=heartbeat, daemon=True)
        pusher.start()
        dead = f"127.0.0.1:{free_port()}"
        targets = {"autonomy-exporter": [exporter.url[7:]], "autonomy-receiver": [receiver.url[7:], dead]}
        prometheus = PrometheusProcess(tmp_path / "prometheus",
                                       prometheus_config(targets, rule_files=rule_files)).start()
        try:
            def all_expected_firing():
                now = firing(prometheus)
                return now if EXPECTED <= set(now) else None

            seen = wait_until(all_expected_firing, 90, "every expected alert to fire")
            assert not set(seen) - EXPECTED, f"alerts nobody asked for: {sorted(set(seen) - EXPECTED)}"

            transient = seen[("AgentTransientError", "CMO")]
            assert transient["labels"]["code"] == "TIMEOUT"
            assert transient["labels"]["autonomy_class"] == "TRANSIENT"
            assert seen[("AgentDependencyFailing", "Content")]["labels"]["dependency"] == "MarketIntel"
            assert seen[("DirectiveClaimedByMultipleAgents", "CRO")]["labels"]["directive_id"] == "D-1"
            assert float(seen[("FleetBudgetProjectedOverCap", "fleet")]["value"]) > 25
            assert seen[("AutonomyReceiverDown", "autonomy-layer")]["labels"]["instance"] == dead
        finally:
            stop.set()
            pusher.join(timeout=10)
            prometheus.stop()

        # With the exporter down and no receiver scraped at all, the layer says so, and the agents it can
        # no longer see are not declared silent.
        alone = {"autonomy-exporter": [dead]}
        with PrometheusProcess(tmp_path / "prometheus-2", prometheus_config(alone, rule_files=rule_files)) as blind:
            layer = {("AutonomyReceiverNotScraped", "autonomy-layer"), ("AutonomyExporterDown", "autonomy-layer")}
            wait_until(lambda: layer <= set(firing(blind)), 60, "the exporter-down and not-scraped alerts")
