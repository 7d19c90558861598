"""`autonomy drill --target-config FILE`: the drills against a layer already running, its verdict as metrics."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence, TextIO

from webhook_receiver.upstreams import promql_alternatives

from .deployed_stack import DeployedStack, not_ready, unreachable
from .drill_metrics import DrillRun, write_metrics
from .drill_report import summary_table
from .drill_runner import run_each
from .drill_target import DrillTarget, TargetConfigError, load_target
from .drills import DRILLS, DrillContext, DrillResult
from .remote_fleet import FleetError, RemoteFleet

# Drills that cannot run against a deployment, with why; none today (each needs only the fleet's fault
# endpoints, the receiver's token and Alertmanager's API). Kept so a new one is refused in words, not by a hang.
NOT_REMOTE: dict[str, str] = {}


def refused(names: Sequence[str]) -> list[str]:
    """One line per drill that is unknown or cannot run against a deployment."""
    unknown = [n for n in names if n not in DRILLS]
    lines = [f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(DRILLS)}"] if unknown else []
    return lines + [f"{n} cannot run against a deployed layer: {NOT_REMOTE[n]}" for n in names if n in NOT_REMOTE]


def preflight(target: DrillTarget, stack: DeployedStack, fleet: RemoteFleet) -> list[str]:
    """Why the drills cannot start: a part that does not answer, or a layer that would not remediate."""
    try:
        return unreachable(target) or not_ready(stack, fleet.agents)
    except FleetError as exc:
        return [f"fleet_url: {exc}"]


def drill_target(stack: DeployedStack, fleet: RemoteFleet, names: Sequence[str],
                 say: Callable[[str], None]) -> list[tuple[DrillResult, float | None]]:
    """Run NAMES; after a failed drill every fault of the fleet is healed, so the next one starts clean."""
    ctx = DrillContext(stack, fleet, say)
    agents = fleet.agents
    ctx.until(lambda: stack.prometheus.query(
        f"count(autonomy_agent_info{{agent=~{promql_alternatives(agents)}}}) >= {len(agents)}"),
        "Prometheus to see every agent of the fleet")
    fleet.heal_all()
    ctx.settle(*agents)
    return run_each(ctx, names, say, after_failure=fleet.heal_all)


def run_target_drill(config: str | Path, names: Sequence[str] = (), as_json: bool = False,
                     metrics_file: str | Path | None = None, out: TextIO | None = None,
                     err: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Exit 0 only if every selected drill passed; 1 if one failed; 2 if the drills could not start (the target
    file, a drill, a part that does not answer: one line on ERR). With METRICS_FILE the verdict is written there
    as node_exporter textfile metrics, also when the drills could not start against the layer."""
    out, err = out or sys.stdout, err or sys.stderr
    metrics = Path(metrics_file) if metrics_file is not None else None
    if metrics is not None and (metrics.suffix != ".prom" or not metrics.parent.is_dir()):
        print(f"--metrics-file {metrics}: must be a *.prom file (the textfile collector reads no other) in an "
              "existing directory", file=err)
        return 2
    try:
        target = load_target(config, os.environ if environ is None else environ)
    except TargetConfigError as exc:
        print(exc, file=err)
        return 2
    selected = list(names) or list(target.drills) or list(DRILLS)
    problems = refused(selected)
    if problems:
        print("; ".join(problems), file=err)
        return 2
    progress = err if as_json else out
    say = lambda text: print(text, file=progress, flush=True)  # noqa: E731
    stack, fleet = DeployedStack(target), RemoteFleet(target.fleet_url)
    problems = preflight(target, stack, fleet)
    if problems:
        print(f"cannot drill the layer: {'; '.join(problems)}", file=err, flush=True)
        if metrics is not None:
            write_metrics(metrics, [DrillRun(n, False, None) for n in selected])
        if as_json:
            print(json.dumps({"passed": False, "error": "; ".join(problems), "scenarios": []}), file=out, flush=True)
        return 2
    say(f"drilling the layer at {target.receiver_url} with the fleet at {target.fleet_url} "
        f"(time factor {target.time_factor:g}) ...")
    try:
        done = drill_target(stack, fleet, selected, say)
    except Exception as exc:  # the fleet did not settle, or stopped answering: every drill counts as failed
        say(f"the layer did not settle before the drills: {type(exc).__name__}: {exc}")
        done = [(DrillResult(n, False, None, None, 0, "skipped", None, f"not run: {exc}"), None) for n in selected]
    results = [result for result, _ in done]
    passed = all(r.passed for r in results)
    say("\n" + summary_table(results))
    if metrics is not None:
        write_metrics(metrics, [DrillRun(r.name, r.passed, None if s is None else round(s, 3)) for r, s in done])
        say(f"metrics written to {metrics}")
    if as_json:
        print(json.dumps({"passed": passed, "scenarios": [r.as_dict() for r in results]}), file=out, flush=True)
    return 0 if passed else 1
