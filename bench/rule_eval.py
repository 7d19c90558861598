"""Benchmark: how long the real Prometheus takes to evaluate the layer's rules at 10,000 agents.

Figures (milliseconds, median over several evaluations after a warm-up one):

* ``rules_agents_eval_ms_10k``: the ``autonomy-agents`` group, with 10,000 agents' series scraped every 15 s
  from a realistic exposition (``bench.exporter_scrape.fleet``'s signals, so its label shapes: statuses, eight
  error codes, dependencies, directives, checks) in a steady state: 1 % of the agents as faulty as fleet()
  makes them (errors, degraded, backlog, queue, conflicts, pairs claiming one directive), 0.1 % silent for
  10 minutes, 50 agents the exporter dropped within the hour (backfilled only) that others depend on; all the
  others report at every scrape. The hour before the run is backfilled, so every range the rules read is
  full. ``run(storm=True)`` scrapes fleet() as it is instead: every agent under several alerts, where the
  cost is Prometheus expanding each alert's templates at each evaluation. ``..._by_group`` has the agents
  file's other groups (``autonomy-agents-memory``: the hour-long range, once a minute).
* ``kpis_eval_ms_10k_week``: the slowest of the KPI groups (kpis.rules.yml: the 7-day alignment chain's
  steps and the minutely group), with a week of data for 10,000 agents and the receiver's counters
  backfilled; ``kpis_eval_ms_10k_week_by_group`` has each group's median, and
  ``kpis_eval_ms_per_minute_10k_week`` what they cost together per minute at their production intervals.

How the week is backfilled (``promtool tsdb create-blocks-from openmetrics`` into the TSDB before Prometheus
starts): the receiver's counters the KPIs read, every 15 s for 7 days, and, of the alignment chain, the
per-agent aggregates themselves, written into the OpenMetrics input as the chain would have recorded them
(not `create-blocks-from rules`, which would need the week of raw samples first): the hourly averages for
7 days, the hourly 7-day averages and the 5-minute averages for the last two hours (the raw per-agent
samples only for the last hour: the chain never reads them further back). Prometheus compacts the
backfilled 2-hour blocks before anything is measured, as it would have over a real week.

How the groups run: the agents file's groups together, at their production intervals (``autonomy-agents``
every 15 s, with the groups that run beside it in production; the memory group, once a minute, included);
then each group that runs once a minute or more rarely (the memory, each KPI group) alone, every 5 s, so that
a few minutes hold several evaluations: what one evaluation reads and costs hardly depends on how often it
runs (the minutely carry of the 7-day average reads a few more points). The evaluation time is the one
/api/v1/rules reports as a group's `evaluationTime` (Prometheus sets it and
`prometheus_rule_group_last_duration_seconds` together), read from Prometheus' own /metrics: /api/v1/rules
lists every active alert, and polling it would load Prometheus between the evaluations being measured; it is
read once per phase for the slowest rules (``*_slowest_rules``). Everything runs on loopback in a temporary
directory, and Prometheus is stopped at the end. Four to five minutes on two cores.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

from autonomy.settings import Settings
from autonomy.signal_contract import validate_signals
from bench.exporter_scrape import fleet
from devstack.durations import parse_duration
from devstack.local_stack import PrometheusProcess, ServedApp, require_binary
from devstack.polling import wait_until
from devstack.rule_render import render_rules
from devstack.stack_config import prometheus_config
from exporter.signal_store import SignalStore

SCRAPE_S = 15
BLOCK_S = 7200  # promtool's block length
EVAL_S = 5
LAST_SIGNAL = "autonomy_agent_last_signal_timestamp_seconds"
ALIGNMENT = "autonomy_agent_alignment_ratio"
ALIGNMENT_5M = "agent:autonomy_agent_alignment_ratio:avg5m"
ALIGNMENT_1H = "agent:autonomy_agent_alignment_ratio:avg1h"
ALIGNMENT_7D_HOURLY = "agent:autonomy_agent_alignment_ratio:avg7d_hourly"
RECEIVER = 'instance="receiver:9818",job="autonomy-receiver"'
CLASSES = ("CAPACITY", "CONFIG", "CONFLICT", "DATA_DEP", "TRANSIENT")
OUTCOMES = ("auto_resolved", "escalated", "self_resolved", "self_resolved_after_failure", "skipped")
BUCKETS = ("5", "10", "30", "60", "120", "180", "300", "480", "600", "900", "1800", "3600", "7200", "+Inf")
EVENTS = ("auto_remediation", "escalation", "no_action", "refusal")
REASONS = ("attempts_exhausted", "config_missing", "high_risk_step", "needs_human", "remediation_failed",
           "unknown_class")
GROUP_METRIC = re.compile(r'^prometheus_rule_group_last_(duration_seconds|evaluation_timestamp_seconds)'
                          r'\{rule_group="[^;"]*;([^"]+)"\} (\S+)$', re.M)


FAULTY_EVERY = 200  # agents i and i+1 of every 200 keep fleet()'s faults: 1 % of the fleet, in pairs
SILENT_EVERY = 1000  # still exposed, last signal 10 minutes old: 0.1 %
GONE = 50  # dropped by the exporter within the last hour (in the backfill only), each one a dependency


def steady_fleet(n: int, storm: bool = False) -> list[dict]:
    """fleet(N)'s signals, label shapes and all (statuses, error codes, dependencies, directives, checks),
    in a steady state: 1 % of the agents as faulty as fleet() makes them (errors, degraded, backlog,
    queue, conflicts, each pair claiming one directive), the others healthy with directives of their own.
    STORM: fleet() as it is, every agent under at least one alert (its success ratio is below the SLO)."""
    docs = fleet(n)
    if storm:
        return docs
    for i, doc in enumerate(docs):
        if i % FAULTY_EVERY < 2:
            continue
        doc["status"] = "healthy"
        doc["metrics"].update(successRate=0.99, alignment=0.97, backlogAgeMinutes=i % 10)
        context = doc["context"]
        context.pop("errorCode", None)
        context.pop("conflictId", None)
        context.update(queueDepth=i % 5, directiveId=f"D-own-{i}")
        if i % FAULTY_EVERY == FAULTY_EVERY // 2 and i // FAULTY_EVERY < GONE:
            context["dependencies"] = [f"agent-gone-{i // FAULTY_EVERY}"]
    return docs


class HeartbeatingExposition:
    """WSGI app: the exporter's exposition of a fleet, each agent's last signal dated at the scrape (a fleet
    that keeps reporting; one agent in SILENT_EVERY stopped 10 minutes ago), without the cost of re-ingesting
    10,000 signals before every scrape."""

    def __init__(self, agents: int, storm: bool = False):
        store = SignalStore(expiry_seconds=3600, max_agents=agents)
        store.put_many(validate_signals(steady_fleet(agents, storm)))
        lines = store.render().splitlines(keepends=True)
        first = next(i for i, line in enumerate(lines) if line.startswith(LAST_SIGNAL + "{"))
        last = max(i for i, line in enumerate(lines) if line.startswith(LAST_SIGNAL + "{"))
        self.before = "".join(lines[:first]).encode()
        self.after = "".join(lines[last + 1:]).encode()
        self.silent_since = int(time.time()) - 600
        self.keys = []  # (series and a space, or None), (a fixed value line, or None)
        for line in lines[first:last + 1]:
            agent = int(line.split('agent="agent-', 1)[1].split('"', 1)[0])
            key = line.rsplit(" ", 1)[0] + " "
            self.keys.append(key + f"{self.silent_since}\n" if agent % SILENT_EVERY == SILENT_EVERY // 2 else key)

    def __call__(self, environ, start_response):
        now = f"{time.time():.3f}\n"
        body = b"".join((self.before, "".join(k if k[-1] == "\n" else k + now for k in self.keys).encode(),
                         self.after))
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def _receiver_series() -> dict[str, list[str]]:
    """The receiver's counter series the KPIs read, with its label sets: bounded, whatever the fleet's size
    (of the histogram's buckets only CONFLICT's are read; the other classes' are left out)."""
    by_class = [f'classification="{c}",{RECEIVER}' for c in CLASSES]
    return {
        "autonomy_incident_outcomes_total": [f'classification="{c}",outcome="{o}",{RECEIVER}'
                                             for c in CLASSES for o in OUTCOMES],
        "autonomy_recovery_seconds_bucket": [f'classification="CONFLICT",{RECEIVER},le="{le}"' for le in BUCKETS],
        "autonomy_recovery_seconds_sum": by_class,
        "autonomy_recovery_seconds_count": by_class,
        "autonomy_incident_cost_dollars_total": by_class,
        "autonomy_decisions_total": [f'event="{e}",{RECEIVER}' for e in EVENTS],
        "autonomy_lineage_lines_total": [f'event="{e}",{RECEIVER}' for e in EVENTS],
        "autonomy_escalations_total": [f'reason="{r}",{RECEIVER}' for r in REASONS],
    }


def _families(agents: int, exporter: str, end: int, silent_since: int, raw_week_step: int | None,
              counter_step: int) -> list[tuple[str, list[str], range, object]]:
    """What is backfilled: (name, label sets, sample times, value of time), every sample before END."""
    def scraped(names):
        return [f'agent="{a}",instance="{exporter}",job="autonomy-exporter"' for a in names]

    names = [f"agent-{i}" for i in range(agents)]
    silent = {f"agent-{i}" for i in range(SILENT_EVERY // 2, agents, SILENT_EVERY)}
    recorded = [f'agent="{a}"' for a in names]
    week = 7 * 86400
    hour_ago = range(end - 3600, end, SCRAPE_S)
    families = [(LAST_SIGNAL, scraped([a for a in names if a not in silent]), hour_ago, lambda t: t),
                (LAST_SIGNAL, scraped(sorted(silent)), range(end - 3600, end, SCRAPE_S),
                 lambda t: min(t, silent_since))]
    for cohort in range(5):  # dropped 10, 20, ... 50 minutes ago, an hour after their last signal
        dropped = end - 600 * (cohort + 1)
        gone = [f"agent-gone-{k}" for k in range(cohort, GONE, 5)]
        families.append((LAST_SIGNAL, scraped(gone), range(end - 3600, dropped, SCRAPE_S),
                         lambda t, d=dropped: d - 3600))
    families += [(ALIGNMENT, scraped(names), range(end - week, end, raw_week_step) if raw_week_step else hour_ago,
                  lambda t: 0.95),
                 (ALIGNMENT_1H, recorded, range(end // 3600 * 3600 - week, end, 3600), lambda t: 0.95),
                 (ALIGNMENT_7D_HOURLY, recorded, range(end // 3600 * 3600 - 7200, end, 3600), lambda t: 0.95),
                 (ALIGNMENT_5M, recorded, range(end // 300 * 300 - 7200, end, 300), lambda t: 0.95)]
    counters = range(end - week, end, counter_step)
    families += [(name, series, counters, lambda t: (t - end + week) // 600)
                 for name, series in _receiver_series().items()]
    return families


def write_backfill(directory: Path, agents: int, exporter: str, end: int, silent_since: int,
                   raw_week_step: int | None = None, counter_step: int = SCRAPE_S) -> int:
    """The OpenMetrics input of the backfill, one file per 2-hour block (promtool reads its whole input once
    per block it writes); the number of samples.

    RAW_WEEK_STEP (seconds) also writes a week of raw per-agent alignment at that spacing: what rules that
    average the raw samples over 7 days would read (the rules before the chain; measured by hand)."""
    families = _families(agents, exporter, end, silent_since, raw_week_step, counter_step)
    first = min(f[2].start for f in families) // BLOCK_S * BLOCK_S
    samples = 0
    for window in range(first, end, BLOCK_S):
        with (directory / f"{window}.om").open("w") as out:
            named = None
            for name, series, times, value in families:
                step = times.step
                start = max(times.start, times.start + -(-(window - times.start) // step) * step)
                inside = range(start, min(times.stop, window + BLOCK_S), step)
                if not inside:
                    continue
                if name != named:
                    out.write(f"# TYPE {name} gauge\n")
                    named = name
                keys = [f"{name}{{{labels}}} " for labels in series]
                for t in inside:  # time-major: each series in time order
                    suffix = f"{value(t)} {t}\n"
                    out.write("".join(key + suffix for key in keys))
                samples += len(keys) * len(inside)
            out.write("# EOF\n")
    return samples


def backfill(directory: Path, tsdb: Path) -> None:
    """promtool tsdb create-blocks-from openmetrics, for every file in DIRECTORY (two at a time)."""
    promtool = require_binary("promtool")

    def one(path: Path) -> None:
        done = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(path),
                               str(tsdb)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"promtool backfill of {path.name} failed:\n{done.stdout}{done.stderr}")
        path.unlink()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, sorted(directory.glob("*.om"))))


def self_metrics(prometheus: PrometheusProcess) -> str:
    return requests.get(prometheus.url + "/metrics", timeout=10).text


def group_evaluations(text: str) -> dict[str, tuple[float, float]]:
    """Group name -> (last evaluation's unix time, its duration in seconds), from Prometheus' /metrics."""
    seen: dict[str, dict[str, float]] = {}
    for kind, group, value in GROUP_METRIC.findall(text):
        seen.setdefault(group, {})[kind] = float(value)
    return {g: (v.get("evaluation_timestamp_seconds", 0.0), v.get("duration_seconds", 0.0)) for g, v in seen.items()}


def wait_for_compaction(prometheus: PrometheusProcess, timeout: float = 300) -> int:
    """Wait until Prometheus compacted the backfilled blocks (its first compaction runs a minute after it
    starts) and the number of blocks stopped changing; that number."""
    def metric(text: str, name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    history: list[float] = []

    def settled():
        text = self_metrics(prometheus)
        history.append(metric(text, "prometheus_tsdb_blocks_loaded"))
        done = metric(text, "prometheus_tsdb_compactions_total") > 0 and len(set(history[-3:])) == 1
        return int(history[-1]) if done and len(history) >= 3 else None

    return wait_until(settled, timeout, "the backfilled blocks to be compacted", interval=5)


def measure(prometheus: PrometheusProcess, groups: list[str], evaluations: int, timeout: float) -> dict[str, list[float]]:
    """Durations (ms) of the next EVALUATIONS evaluations of each group, after a warm-up one."""
    seen: dict[str, dict[float, float]] = {g: {} for g in groups}

    def enough():
        for group, (at, took) in group_evaluations(self_metrics(prometheus)).items():
            if group in seen and at > 0:
                seen[group][at] = took * 1000
        return all(len(s) >= evaluations + 1 for s in seen.values())

    wait_until(enough, timeout, f"{evaluations} evaluations of {', '.join(groups)}", interval=1)
    return {g: [ms for _, ms in sorted(s.items())][1:evaluations + 1] for g, s in seen.items()}


def slowest_rules(prometheus: PrometheusProcess, groups: list[str], top: int = 6) -> dict[str, float]:
    """The TOP slowest rules of GROUPS in their last evaluation, as group/rule -> ms."""
    data = requests.get(prometheus.url + "/api/v1/rules", timeout=60).json()["data"]["groups"]
    rules = [(f"{g['name']}/{r['name']}", r.get("evaluationTime", 0) * 1000)
             for g in data if g["name"] in groups for r in g["rules"]]
    return {name: round(ms, 1) for name, ms in sorted(rules, key=lambda r: -r[1])[:top]}


def _rule_groups(rules_dir: Path, texts: dict[str, str] | None) -> dict[str, list[dict]]:
    """The rule groups by file name: the rendered defaults, or TEXTS (file name -> rules)."""
    if texts is None:
        paths = render_rules(Settings.from_env({}), rules_dir / "rendered")
        texts = {p.name: p.read_text() for p in paths}
    return {name: yaml.safe_load(text)["groups"] for name, text in texts.items()}


def _interval(group: dict) -> float:
    return parse_duration(group.get("interval", f"{SCRAPE_S}s"))


def _config(exporter: str, rule_files: list[Path]) -> str:
    return prometheus_config({"autonomy-exporter": [exporter]}, interval=f"{SCRAPE_S}s", rule_files=rule_files)


def _phase(prometheus: PrometheusProcess, address: str, path: Path, groups: list[dict], evaluations: int,
           interval: float | None = None) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Load only GROUPS (at their own intervals, or every INTERVAL seconds), then the durations (ms) of the
    next EVALUATIONS evaluations of each evaluated more often than once a minute (or of all), and the slowest
    rules."""
    if interval:
        groups = [dict(g, interval=f"{interval:g}s") for g in groups]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    prometheus.config_path.write_text(_config(address, [path]))
    prometheus.reload()
    frequent = [g for g in groups if _interval(g) < 60] or groups  # the others run beside them, unmeasured
    longest = max(_interval(g) for g in frequent)
    timings = measure(prometheus, [g["name"] for g in frequent], evaluations,
                      120 + (evaluations + 2) * (longest + 20))
    return timings, slowest_rules(prometheus, [g["name"] for g in groups])


def _median(timings: list[float]) -> float:
    return round(statistics.median(timings), 1)


def run(agents: int = 10_000, evaluations: int = 4, rule_texts: dict[str, str] | None = None,
        raw_week_step: int | None = None, storm: bool = False) -> dict:
    """The figures; RULE_TEXTS (file name -> rules) replaces the rendered rules, e.g. an older version of
    them beside the current one (each file whose name holds `agents` and each group of those holding `kpis` is
    measured in a phase of its own); STORM scrapes fleet() as it is (every agent alerting).

    The agents file's groups are evaluated together, at their production intervals (`autonomy-agents` every
    15 s, as in production the groups beside it contend with it); then, each alone and every 5 s, the groups
    whose own interval is a minute or more (the memory of the last signals, each KPI group): their cost per
    evaluation does not depend on how often they run."""
    figures: dict = {"rule_eval_agents": agents}
    with tempfile.TemporaryDirectory(prefix="rule-eval-") as tmp:
        work = Path(tmp)
        files = _rule_groups(work, rule_texts)
        start = time.monotonic()
        exposition = HeartbeatingExposition(agents, storm)
        with ServedApp(exposition, threads=4) as exporter:
            address = exporter.url[len("http://"):]
            openmetrics = work / "backfill"
            openmetrics.mkdir()
            figures["rule_eval_backfilled_samples"] = write_backfill(
                openmetrics, agents, address, int(time.time()), exposition.silent_since, raw_week_step)
            backfill(openmetrics, work / "prometheus" / "tsdb")
            figures["rule_eval_setup_s"] = round(time.monotonic() - start, 1)
            rules = work / "phase.rules.yml"
            medians: dict[str, float] = {}
            slowest: dict[str, float] = {}
            with PrometheusProcess(work / "prometheus", _config(address, [])) as prometheus:
                figures["rule_eval_blocks_after_compaction"] = wait_for_compaction(prometheus)
                wait_until(lambda: prometheus.query(f"count(autonomy_agent_info) == {agents}"), 120,
                           "the whole fleet scraped")
                alone = []
                for name, groups in files.items():
                    if "agents" in name:
                        timings, rules_ms = _phase(prometheus, address, rules, groups, evaluations)
                        medians.update((g, _median(t)) for g, t in timings.items())
                        slowest.update(rules_ms)
                    alone += [g for g in groups if _interval(g) >= 60 or "kpis" in name]
                for group in alone:
                    timings, rules_ms = _phase(prometheus, address, rules, [group], evaluations, EVAL_S)
                    medians[group["name"]] = _median(timings[group["name"]])
                    slowest.update(rules_ms)
            intervals = {g["name"]: _interval(g) for groups in files.values() for g in groups}
            kpis = {g: ms for g, ms in medians.items() if g.startswith("autonomy-kpis")}
            figures.update({
                "rules_agents_eval_ms_10k": medians["autonomy-agents"],
                "rules_agents_memory_eval_ms_10k": medians.get("autonomy-agents-memory"),
                "kpis_eval_ms_10k_week": max(kpis.values()),
                "kpis_eval_ms_per_minute_10k_week": round(sum(ms * 60 / intervals[g] for g, ms in kpis.items()), 1),
                "rule_eval_ms_10k_by_group": medians,
                "rule_eval_slowest_rules_ms": dict(sorted(slowest.items(), key=lambda r: -r[1])[:12]),
            })
        figures["rule_eval_run_s"] = round(time.monotonic() - start, 1)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
