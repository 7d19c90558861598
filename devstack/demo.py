"""`autonomy demo` and `autonomy drill`: the fleet and the whole layer on loopback, the drills, the KPIs."""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Sequence, TextIO

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .checkout import PLAYBOOKS_FILE, REPO_ROOT
from .direct_demo import run_direct
from .drill_report import summary_table
from .drill_runner import run_each
from .drills import DRILLS, DrillContext, DrillResult
from .fleet import DEMO_PRIORITY, SimulatedFleet, fleet_heartbeat
from .layer_stack import LayerStack
from .local_stack import MissingBinary, ServedApp, require_binary
from .polling import wait_until

TIME_FACTOR = 1 / 30  # 15 s scrape/evaluation -> 0.5 s; every `for:`, group wait and receiver wait alike
# The example agent (examples/worker_agent/worker.yaml): its name, domain and port, routed by the demo's playbooks.
EXAMPLE_AGENT = ("Worker", "Operations", 18090)
# Where `autonomy demo --keep-running` tells agents how to reach the stack (the example agent reads it).
CONNECTION_FILE = REPO_ROOT / ".autonomy-demo" / "connection.json"


def demo_playbooks(workdir: Path) -> Path:
    """The repository's playbooks with the example agent's actions routed to its own port."""
    doc = yaml.safe_load(PLAYBOOKS_FILE.read_text())
    name, domain, port = EXAMPLE_AGENT
    doc.setdefault("agents", {})[name] = {"domain": domain, "baseUrl": f"http://127.0.0.1:{port}"}
    path = Path(workdir) / "playbooks.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_connection(stack: LayerStack, fleet: SimulatedFleet, path: Path = CONNECTION_FILE) -> Path:
    """The stack's push URL and the tokens an agent needs, readable by this user only."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_text(json.dumps({"exporterUrl": stack.exporter.url, "pushToken": stack.push_token.reveal(),
                                "agentToken": fleet.action_token.reveal(), "receiverUrl": stack.receiver.url},
                               indent=2) + "\n")
    return path


def layer_env(fleet_url: str, fleet: SimulatedFleet) -> dict[str, str]:
    """The demo's settings: the pack's defaults, the fleet's priority domains, escalations to the CEO agent, the
    token the fleet's action endpoints expect."""
    return {"AUTO_REMEDIATE": "true", "AUTOREM_ESCALATION_URL": fleet_url + "/agents/CEO/escalations",
            "AUTOREM_PRIORITY": DEMO_PRIORITY, "AUTOREM_AGENT_TOKEN": fleet.action_token.reveal()}


KPI_RULES = {"auto_resolve_ratio": "fleet:autonomy_auto_resolve:ratio7d",
             "mttr_s_by_class": "classification:autonomy_recovery_seconds:mean7d",
             "lineage_coverage": "fleet:autonomy_lineage_coverage:ratio7d",
             "escalations": "fleet:autonomy_escalations:increase7d",
             "skipped": "fleet:autonomy_incidents_skipped:increase7d"}


def kpis(ctx: DrillContext) -> dict:
    """The pack's KPIs from the receiver's own records (its ledger and its lineage counters), defined as the
    recording rules define them: each incident once, by how it really ended, MTTR from onset."""
    incidents = ctx.incidents()
    # Verified recoveries and escalations count when they happen; the other endings once the incident closed.
    ended = [i for i in incidents if i["outcome"] in ("auto_resolved", "escalated") or i["state"] == "closed"]
    count, handled, by_class = outcome_tally(ended)
    counters = receiver_counters(ctx)
    decisions, lines = counters.get("autonomy_decisions_total", 0), counters.get("autonomy_lineage_lines_total", 0)
    return {
        "auto_resolve_ratio": round(count["auto_resolved"] / handled, 4) if handled else None,
        "mttr_s_by_class": {c: round(statistics.mean(v), 2) for c, v in sorted(by_class.items())},
        "lineage_coverage": round(lines / decisions, 4) if decisions else None,
        "escalations": count["escalated"],
        "skipped": count["skipped"],
    }


def outcome_tally(incidents: list[dict]) -> tuple[Counter, int, dict[str, list[float]]]:
    """The recording rules' definitions over INCIDENTS: each by its outcome, the handled ones (held incidents
    apart), and per class the seconds from onset to each verified recovery."""
    count = Counter(i.get("outcome") for i in incidents)
    handled = count["auto_resolved"] + count["escalated"] + count["self_resolved_after_failure"]
    by_class: dict[str, list[float]] = {}
    for i in incidents:
        if i.get("outcome") == "auto_resolved" and i.get("classification") and i.get("recovered_at"):
            by_class.setdefault(i["classification"], []).append(i["recovered_at"] - (i.get("onset_at") or i["opened_at"]))
    return count, handled, by_class


def receiver_counters(ctx: DrillContext) -> dict[str, float]:
    """The receiver's counters, summed over their labels."""
    text = ctx.stack.receiver_call("GET", "/metrics").text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def rule_kpis(ctx: DrillContext) -> dict:
    """The same KPIs as Prometheus's recording rules have them now."""
    def value(record: str):
        rows = ctx.stack.prometheus.query(record)
        return float(rows[0]["value"][1]) if rows else None
    mttr = {r["metric"]["classification"]: round(float(r["value"][1]), 2)
            for r in ctx.stack.prometheus.query(KPI_RULES["mttr_s_by_class"])}
    out = {key: value(record) for key, record in KPI_RULES.items() if key != "mttr_s_by_class"}
    out["auto_resolve_ratio"] = round(out["auto_resolve_ratio"], 4) if out["auto_resolve_ratio"] is not None else None
    out["lineage_coverage"] = round(out["lineage_coverage"], 4) if out["lineage_coverage"] is not None else None
    # increase() extrapolates counts by a fraction of a scrape interval over the session: whole numbers.
    for key in ("escalations", "skipped"):
        out[key] = round(out[key]) if out[key] is not None else 0
    out["mttr_s_by_class"] = dict(sorted(mttr.items()))
    return out


def kpis_agree(report: dict, rules: dict) -> bool:
    """Whether the rules' figures are the report's (ratios to 4 places, MTTR to 0.1 %, counts exactly)."""
    if set(report["mttr_s_by_class"]) != set(rules["mttr_s_by_class"]):
        return False
    for cls, mean in report["mttr_s_by_class"].items():
        if abs(rules["mttr_s_by_class"][cls] - mean) > max(0.01, 0.001 * mean):
            return False
    return all(report[k] == rules[k] for k in ("auto_resolve_ratio", "lineage_coverage", "escalations", "skipped"))


def settled_kpis(ctx: DrillContext, timeout: float = 60.0) -> tuple[dict, dict, bool]:
    """The report's KPIs and the rules' once these caught up with the last scrape (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        report, rules = kpis(ctx), rule_kpis(ctx)
        agree = kpis_agree(report, rules)
        if agree or time.monotonic() >= deadline:
            return report, rules, agree
        threading.Event().wait(0.5)


def run_session(names: Sequence[str], out: TextIO, keep_running: bool = False,
                workdir: Path | None = None) -> tuple[list[DrillResult], dict]:
    """Start everything, run the named drills with a progress display, stop everything (even on Ctrl-C)."""
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise ValueError(f"unknown drill(s) {', '.join(unknown)}; choose from {', '.join(DRILLS)}")
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    fleet = SimulatedFleet()
    with tempfile.TemporaryDirectory(prefix="autonomy-demo-") as tmp, ServedApp(fleet.app) as fleet_server:
        workdir = workdir or Path(tmp)
        say(f"starting the layer in {workdir} (time compressed x{1 / TIME_FACTOR:g}) ...")
        env = {**layer_env(fleet_server.url, fleet), "AUTOREM_PLAYBOOKS_FILE": str(demo_playbooks(workdir))}
        with LayerStack(workdir, fleet_server.url, env=env, time_factor=TIME_FACTOR) as stack:
            beat = fleet_heartbeat(fleet, stack.push_url, stack.push_token, interval=0.5).start()
            try:
                say(f"  fleet        {fleet_server.url}/fleet/state")
                say(f"  exporter     {stack.exporter.url}/metrics")
                say(f"  receiver     {stack.receiver.url}/api/v1/incidents   (log: {stack.receiver.url}/lineage)")
                say(f"  prometheus   {stack.prometheus.url}")
                say(f"  alertmanager {stack.alertmanager.url}")
                ctx = DrillContext(stack, fleet, say)
                wait_until(lambda: stack.prometheus.query(f"count(autonomy_agent_info) >= {len(fleet.agents)}"),
                           60, "Prometheus to see the whole fleet")
                ctx.settle(*fleet.agents)
                results = [result for result, _ in run_each(ctx, names, say)]
                figures, from_rules, agree = settled_kpis(ctx)
                figures = {**figures, "from_rules": from_rules, "agree_with_rules": agree,
                           "refused_actions": refused_actions(fleet)}
                lineage_file = stack.workdir / "receiver" / "decision_lineage.jsonl"
                say("\n" + summary_table(results))
                say(f"\nKPIs: auto-resolve {figures['auto_resolve_ratio']!r}, MTTR from onset by class "
                    f"{figures['mttr_s_by_class']}, lineage coverage {figures['lineage_coverage']}, "
                    f"escalations {figures['escalations']}, held {figures['skipped']}; the recording rules "
                    f"{'agree' if agree else 'DISAGREE: ' + json.dumps(from_rules)}")
                say(f"lineage file: {lineage_file}")
                if keep_running:
                    connection = write_connection(stack, fleet)
                    say(f"\nthe stack stays up; Ctrl-C to stop it. Agents connect with {connection}, e.g. the "
                        "example agent:\n  .venv/bin/python examples/worker_agent/worker.py "
                        "examples/worker_agent/worker.yaml")
                    try:
                        threading.Event().wait()
                    finally:
                        connection.unlink(missing_ok=True)
            except KeyboardInterrupt:
                say("\ninterrupted")
                raise
            finally:
                beat.stop()
                say("stopping every process the demo started ...")
    return results, figures


def refused_actions(fleet: SimulatedFleet) -> dict[str, int]:
    """The receiver's action calls the fleet's action server refused ("primitive status": count): a missing token,
    a body off the contract, a call it cannot route. None of them should happen."""
    with fleet.lock:
        return {f"{p} {status}": n for (p, status), n in sorted(fleet.answers.items())
                if status in (400, 401, 404, 405, 413, 422)}


def run_demo(keep_running: bool = False, out: TextIO = sys.stdout) -> int:
    """What `make demo` runs: every drill with a progress display and a summary."""
    try:
        require_binary("prometheus")
        require_binary("alertmanager")
    except MissingBinary as exc:
        print(f"{exc}; running the drills through the direct signal path instead", file=out)
        return run_direct(out)
    try:
        results, figures = run_session(list(DRILLS), out, keep_running=keep_running)
    except KeyboardInterrupt:
        return 130
    if figures["refused_actions"]:
        print(f"the fleet refused action calls of the receiver: {figures['refused_actions']}", file=out)
    return 0 if all(r.passed for r in results) and not figures["refused_actions"] else 1


def run_drill(names: Sequence[str], as_json: bool, out: TextIO = sys.stdout) -> int:
    """`autonomy drill`: exit 0 only if every selected drill passed; with --json the last line is the report."""
    selected = list(names) or list(DRILLS)
    progress = sys.stderr if as_json else out
    results, figures = run_session(selected, progress)
    refused = figures.pop("refused_actions")
    passed = all(r.passed for r in results) and not refused
    if refused:
        print(f"the fleet refused action calls of the receiver: {refused}", file=progress, flush=True)
    if as_json:
        print(json.dumps({"passed": passed, "scenarios": [r.as_dict() for r in results], "kpis": figures,
                          "refused_actions": refused}), file=out, flush=True)
    return 0 if passed else 1
