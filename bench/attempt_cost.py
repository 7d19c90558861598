"""Benchmark: what one attempt reads of the fleet, at 100 and at 10,000 agents, against the real Prometheus
scraping the exporter (a steady fleet: 1 % faulty) and evaluating the repo's rules. The reads are the receiver's own calls in an attempt's
order (onset, view, conditions, the verifier's snapshot, and for a CAPACITY playbook the slot donor and the
spender to throttle, and the fleet's spend); `run()` returns their medians and the ratio of the two sizes."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from autonomy.settings import Settings
from autonomy.signal_contract import validate_signals
from bench.rule_eval import steady_fleet
from devstack.checkout import PLAYBOOKS_FILE
from devstack.local_stack import PrometheusProcess, ServedApp
from devstack.polling import wait_until
from devstack.rule_render import render_rules
from devstack.stack_config import prometheus_config
from exporter.app import create_app
from webhook_receiver.alert_conditions import RuleCatalog
from webhook_receiver.fleet_ranking import Role, lowest_ranked, tiers
from webhook_receiver.fleet_reader import PrometheusFleetReader
from webhook_receiver.fleet_snapshot import snapshot
from webhook_receiver.incident import AlertRef, Incident
from webhook_receiver.playbooks import load_playbooks
from webhook_receiver.upstreams import PrometheusApi

AGENT = "agent-0"  # one of the 1 % faulty in bench.rule_eval.steady_fleet, with TIMEOUT: AgentTransientError holds
ROUNDS = 15


def incident() -> Incident:
    labels = {"alertname": "AgentTransientError", "agent": AGENT, "autonomy_class": "TRANSIENT", "code": "TIMEOUT"}
    now = time.time()
    return Incident(id="bench", agent=AGENT, state="remediating", source="alertmanager", opened_at=now,
                    updated_at=now, alerts=(AlertRef("fp", "firing", labels, "2026-12-01T00:00:00Z"),))


def attempt_reads(reader: PrometheusFleetReader, settings: Settings, playbooks, capacity: bool) -> float:
    """Seconds for one attempt's reads, as the attempt loop and the verifier make them."""
    start = time.perf_counter()
    subject = incident()
    reader.onset(subject)
    reader.view(AGENT)
    reader.conditions(subject, [AGENT], ())
    if capacity:
        reader.fleet_spend()
        for role in Role:
            lowest_ranked(role, AGENT, tiers(settings.priority, playbooks), reader.candidates)
    waiting = snapshot(reader, [AGENT])
    waiting.view(AGENT)
    waiting.stale([AGENT], time.time() - 60)
    waiting.conditions(subject, [AGENT], ())
    return time.perf_counter() - start


def measure(agents: int, workdir: Path) -> dict:
    settings = Settings.from_env({})
    playbooks = load_playbooks(PLAYBOOKS_FILE)
    exporter = create_app({"SETTINGS": settings, "INSECURE": True})
    exporter.extensions["autonomy_exporter"].store.put_many(validate_signals(steady_fleet(agents)))
    rules = render_rules(settings, workdir / "rules")
    with ServedApp(exporter) as served:
        config = prometheus_config({"autonomy-exporter": [served.url.removeprefix("http://")]}, interval="5s",
                                   rule_files=rules)
        with PrometheusProcess(workdir / "prometheus", config) as prometheus:
            wait_until(lambda: prometheus.query("count(autonomy_agent_info) >= %d" % agents), 120,
                       f"Prometheus to scrape {agents} agents")
            api = PrometheusApi(prometheus.url)
            reader = PrometheusFleetReader(api, RuleCatalog(api), settings.agent_silent_seconds,
                                           settings.budget_cap_daily_usd)
            attempt_reads(reader, settings, playbooks, True)  # warm: the rule catalog, connections
            transient = [attempt_reads(reader, settings, playbooks, False) for _ in range(ROUNDS)]
            capacity = [attempt_reads(reader, settings, playbooks, True) for _ in range(ROUNDS)]
    return {"transient_ms": statistics.median(transient) * 1000, "capacity_ms": statistics.median(capacity) * 1000}


def run(sizes=(100, 10_000)) -> dict:
    small, large = sizes
    with tempfile.TemporaryDirectory(prefix="autonomy-bench-attempt-") as tmp:
        few = measure(small, Path(tmp) / "small")
        many = measure(large, Path(tmp) / "large")
    return {
        "attempt_reads_ms_100": round(few["transient_ms"], 1),
        "attempt_reads_ms_10k": round(many["transient_ms"], 1),
        "attempt_reads_capacity_ms_100": round(few["capacity_ms"], 1),
        "attempt_reads_capacity_ms_10k": round(many["capacity_ms"], 1),
        "attempt_cost_10k_over_100": round(max(many["transient_ms"] / few["transient_ms"],
                                               many["capacity_ms"] / few["capacity_ms"]), 2),
    }


if __name__ == "__main__":
    print(run())
