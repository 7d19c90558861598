"""`autonomy demo` and `autonomy drill`: the fleet and the whole layer on loopback, the drills, the KPIs."""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence, TextIO

from .drills import DRILLS, DrillContext, DrillResult
from .fleet import Heartbeat, SimulatedFleet
from .layer_stack import LayerStack
from .local_stack import MissingBinary, ServedApp, require_binary
from .polling import wait_until

TIME_FACTOR = 1 / 30  # 15 s scrape/evaluation -> 0.5 s; every `for:`, group wait and receiver wait alike
DEMO_PRIORITY = "Executive,Revenue,Operations,Marketing,Content,Data"


def layer_env(fleet_url: str) -> dict[str, str]:
    """The demo's settings: the pack's defaults, the fleet's priority domains, escalations to the CEO agent."""
    return {"AUTO_REMEDIATE": "true", "AUTOREM_ESCALATION_URL": fleet_url + "/agents/CEO/escalations",
            "AUTOREM_PRIORITY": DEMO_PRIORITY}


def kpis(ctx: DrillContext) -> dict:
    """Auto-resolve ratio, MTTR per class, lineage coverage and escalations, from the receiver's own records."""
    incidents = ctx.stack.receiver_call("GET", "/api/v1/incidents").json()["incidents"]
    lines = ctx.lineage()
    resolved = [i for i in incidents if i["outcome"] == "auto_resolved"]
    escalated = [i for i in incidents if i["outcome"] == "escalated"]
    by_class: dict[str, list[float]] = {}
    for i in resolved:
        if i.get("recovered_at") and i.get("classification"):
            by_class.setdefault(i["classification"], []).append(i["recovered_at"] - i["opened_at"])
    expected = {(i["id"], n) for i in incidents for n in range(1, i["attempts"] + 1)}
    written = {(e.get("incident_id"), e.get("attempt")) for e in lines if e.get("event") == "auto_remediation"}
    handled = len(resolved) + len(escalated)
    return {
        "auto_resolve_ratio": round(len(resolved) / handled, 4) if handled else None,
        "mttr_s_by_class": {c: round(statistics.mean(v), 2) for c, v in sorted(by_class.items())},
        "lineage_coverage": round(len(expected & written) / len(expected), 4) if expected else 1.0,
        "escalations": len([e for e in lines if e.get("event") == "escalation"]),
    }


def summary_table(results: list[DrillResult]) -> str:
    rows = [("drill", "class", "playbook", "attempts", "outcome", "time to recover", "passed")]
    for r in results:
        rows.append((r.name, r.classification or "-", r.playbook or "-", str(r.attempts), r.outcome,
                     f"{r.mttr_s:.1f} s" if r.mttr_s is not None else "-", "yes" if r.passed else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


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
        with LayerStack(workdir, fleet_server.url, env=layer_env(fleet_server.url), time_factor=TIME_FACTOR) as stack:
            beat = Heartbeat(fleet, stack.push, interval=0.5).start()
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
                results = []
                for n, name in enumerate(names, start=1):
                    say(f"[{n}/{len(names)}] {name}")
                    started = time.monotonic()
                    try:
                        result = DRILLS[name](ctx)
                    except Exception as exc:  # a failed drill is reported; the others still run
                        result = DrillResult(name, False, None, None, 0, "skipped", None,
                                             f"{type(exc).__name__}: {exc}")
                    say(f"  -> {result.outcome}{' in %.1f s' % result.mttr_s if result.mttr_s else ''}: "
                        f"{result.detail} ({'passed' if result.passed else 'FAILED'}, "
                        f"{time.monotonic() - started:.1f} s)")
                    results.append(result)
                figures = kpis(ctx)
                lineage_file = stack.workdir / "receiver" / "decision_lineage.jsonl"
                say("\n" + summary_table(results))
                say(f"\nKPIs: auto-resolve {figures['auto_resolve_ratio']!r}, MTTR by class "
                    f"{figures['mttr_s_by_class']}, lineage coverage {figures['lineage_coverage']}, "
                    f"escalations {figures['escalations']}")
                say(f"lineage file: {lineage_file}")
                if keep_running:
                    say("\nthe stack stays up; Ctrl-C to stop it")
                    threading.Event().wait()
            except KeyboardInterrupt:
                say("\ninterrupted")
                raise
            finally:
                beat.stop()
                say("stopping every process the demo started ...")
    return results, figures


def run_demo(keep_running: bool = False, out: TextIO = sys.stdout) -> int:
    """What `make demo` runs: every drill with a progress display and a summary."""
    try:
        require_binary("prometheus")
        require_binary("alertmanager")
    except MissingBinary as exc:
        print(f"{exc}; running the drills through the direct signal path instead", file=out)
        from .direct_demo import run_direct
        return run_direct(out)
    try:
        results, _ = run_session(list(DRILLS), out, keep_running=keep_running)
    except KeyboardInterrupt:
        return 130
    return 0 if all(r.passed for r in results) else 1


def run_drill(names: Sequence[str], as_json: bool, out: TextIO = sys.stdout) -> int:
    """`autonomy drill`: exit 0 only if every selected drill passed; with --json the last line is the report."""
    selected = list(names) or list(DRILLS)
    progress = sys.stderr if as_json else out
    results, figures = run_session(selected, progress)
    passed = all(r.passed for r in results)
    if as_json:
        print(json.dumps({"passed": passed, "scenarios": [r.as_dict() for r in results], "kpis": figures}),
              file=out, flush=True)
    return 0 if passed else 1
